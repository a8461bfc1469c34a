//! Transactions (KIP-98 with KIP-890's first part) without I/O: the
//! coordinator's state machine for one transactional id, and the record
//! layout of `__transaction_state`.

pub mod records;
pub mod state;

/// The internal topic that holds the transaction coordinators' state.
pub const TXN_TOPIC: &str = "__transaction_state";

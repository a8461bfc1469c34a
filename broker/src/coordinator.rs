//! The group and transaction coordinators (DESIGN §6).
//!
//! Both keep their state in an internal compacted topic, written through
//! the log layer and rebuilt by the broker that takes a partition of it
//! over; `runtime.rs` does that once for both. `groups.rs` coordinates
//! consumer groups and committed offsets over `__consumer_offsets`, and
//! `txn.rs` transactions over `__transaction_state`; their rules live in
//! the core (`keel_broker_core::groups`, `::txn`), and this layer does the
//! locking, the appends and the waiting.
//!
//! Coordinators talk to other brokers through `Peers`, which the Kafka
//! edge implements: nothing here names a Kafka request.

pub mod groups;
pub mod peers;
pub mod runtime;
pub mod txn;

pub use groups::Groups;
pub use peers::Peers;
pub use txn::Txns;

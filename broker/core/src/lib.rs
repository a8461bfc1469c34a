//! `keel-broker-core`: the broker's rules, without I/O.
//!
//! Every decision the broker makes about records lives here as plain
//! functions of plain state: checking and rewriting record batches, assigning
//! offsets and deduplicating idempotent producers (`partition`,
//! `producers`), the hot cache of recent batches, incremental fetch sessions,
//! the consumer-group and transaction state machines with the record layouts
//! of their internal topics, and the reading of a Kafka request frame's
//! header. The broker crate calls these under its locks and does the side
//! effects (WAL appends, object reads, sockets, timers).
//!
//! This crate must never do I/O: it depends on no async runtime, opens no
//! file or socket and reads no clock except through `clock::now_ms`, which
//! callers use to pass the time in. Only `wire` names Kafka request types: it
//! is the pure part of the Kafka edge, here so that the fuzz targets build
//! against this crate alone.

pub mod batch;
pub mod cache;
pub mod clock;
pub mod fetch_session;
pub mod groups;
pub mod internal_topic;
pub mod partition;
pub mod producers;
pub mod records;
pub mod sasl;
pub mod stream_index;
pub mod txn;
pub mod wire;

//! `keel-broker`: the Kafka-protocol server. It keeps no durable state:
//! produced batches go to its WAL log (acknowledged once two zones fsynced
//! them), recent ones stay in a memory cache for fetches, history is
//! uploaded to and read from the object store, and the metadata (topics,
//! leaders, WAL logs) comes from the controller quorum.
//!
//! The crate is layered; each layer uses only those before it:
//!
//! 1. `config`, `metrics`, `error`: settings, counters, the one error type.
//! 2. `cluster`: the metadata image, the session, channels to WAL nodes.
//! 3. `storage`: uploads, object reads, compaction, retention.
//! 4. `log`: the partitions led here on this broker's WAL log.
//! 5. `coordinator`: consumer groups and transactions.
//! 6. `broker`: the parts assembled for the Kafka edge.
//! 7. `kafka`: the listener and one handler per Kafka API.
//! 8. `node`: starting and stopping all of it.
//!
//! The rules themselves (offsets, idempotence, groups, transactions) are
//! in `keel-broker-core`, without I/O. Nothing below `kafka` names a Kafka
//! request type.

pub mod broker;
pub mod cluster;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod kafka;
pub mod large_alloc;
pub mod log;
pub mod metrics;
pub mod node;
pub mod storage;

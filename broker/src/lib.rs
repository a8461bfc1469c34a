//! `keel-broker`: the Kafka-protocol server. It keeps no durable state:
//! produced batches go to its WAL log (acknowledged once two zones fsynced
//! them), recent ones stay in a memory cache for fetches, and the metadata
//! (topics, leaders, WAL logs) comes from the controller quorum.

pub mod api;
pub mod batch;
pub mod broker;
pub mod cache;
pub mod compactor;
pub mod config;
pub mod drain;
pub mod early_seal;
pub mod failover;
pub mod fetch_sessions;
pub mod groups;
pub mod key_compaction;
pub mod large_alloc;
pub mod leaders;
pub mod load_report;
pub mod log_owner;
pub mod metered_store;
pub mod metrics;
pub mod node;
pub mod object_reads;
pub mod partition;
pub mod peers;
pub mod producers;
pub mod retention;
pub mod server;
pub mod snapshots;
pub mod stream_index;
pub mod txn;
pub mod uploader;

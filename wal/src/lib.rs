//! `keel-wal`: the WAL node (DESIGN §3, §7). It appends entries for brokers'
//! WAL logs, fsyncs them, serves them back and trims them.
//!
//! Built so far: the per-log rules (`acceptor`), free of I/O; the journal
//! (`journal`), segment files with group commit and crash recovery; the store
//! thread that puts the two together (`store`); the gRPC service (`service`);
//! and the deterministic simulation that checks the rules together with the
//! writer and recovery cores of `keel-wal-client` (`tests/simulation.rs`).
//! The binary (`src/bin/keel-wal.rs`, with `node` and `config`) registers
//! with the controller and keeps its session. Not built yet: the WAL log
//! metadata in the controller (ensembles, trims, seals) and backpressure.
//!
//! It must never acknowledge an entry before it is fsynced, never accept an
//! append from an epoch older than one it has seen, and never serve a reader
//! past what is known committed.

pub mod acceptor;
pub mod config;
mod incarnation;
pub mod journal;
mod metrics;
pub mod node;
pub mod service;
pub mod store;
mod trimmer;

pub use metrics::Metrics;

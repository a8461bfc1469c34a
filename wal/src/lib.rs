//! `keel-wal`: the WAL node (DESIGN §3, §7). It appends entries for brokers'
//! WAL logs, fsyncs them, serves them back and trims them.
//!
//! The per-log rules (`acceptor`) are free of I/O. Around them: the journal
//! (`journal`), segment files with group commit and crash recovery; the store
//! thread that puts the two together, with a byte cap (`store`); the gRPC
//! service (`service`); and the node (`node`, `config`): registration and
//! session with the controller, and trimming from the trim points the
//! controller commits (`trimmer`). `tests/it/simulation.rs` checks the rules
//! together with the writer and recovery cores of `keel-wal-client`.
//!
//! It must never acknowledge an entry before it is fsynced, never accept an
//! append from an epoch older than one it has seen, and never serve a reader
//! past what is known committed.

pub mod acceptor;
pub mod config;
pub mod faults;
mod incarnation;
pub mod journal;
mod metrics;
pub mod node;
pub mod service;
pub mod store;
mod trimmer;

pub use metrics::Metrics;

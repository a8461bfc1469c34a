//! `keel-controller`: the Raft quorum that holds all of Keel's cluster
//! metadata (DESIGN §2). It owns the Raft log, the vote and the metadata state
//! machine (RocksDB), decides leadership and placement, keeps the sessions of
//! brokers and WAL nodes, and serves the metadata API and watch streams.
//!
//! It never touches record data, and nothing else writes metadata: every
//! change is a command committed through Raft and applied in order.

mod balancer;
pub mod config;
mod controller;
mod metadata_service;
mod metrics;
mod network;
mod node;
mod raft_service;
mod raft_types;
mod sessions;
mod store;

pub use controller::Controller;
pub use node::{shutdown, start};

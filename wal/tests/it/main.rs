//! keel-wal's integration tests: the deterministic simulation of the WAL
//! protocol, and the node's gRPC service over a real journal on disk.

mod node_service;
mod simulation;

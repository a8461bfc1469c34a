//! What a broker needs to write and recover WAL logs (DESIGN §3, §5, §7): the
//! entry format, the quorum writer's bookkeeping and the recovery decision.
//!
//! The cores (`entry`, `quorum`, `recovery`) are free of I/O, so the same code
//! runs in the brokers and in the deterministic simulation of `keel-wal`'s
//! tests. `writer` and `recover` are the gRPC transport around the quorum
//! writer and the recovery.

pub mod entry;
pub mod ids;
pub mod quorum;
pub mod recover;
pub mod recovery;
pub mod writer;

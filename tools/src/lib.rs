//! Keel's operator tools: `keelctl` (admin CLI and `keelctl dev`, the local
//! cluster), `keel-bench` (benchmarks) and the launcher of local processes that
//! both, and the multi-process tests, use.

pub mod bench;
pub mod keelctl;
pub mod launcher;

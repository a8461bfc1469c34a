//! Keel's operator tools: `keelctl` (admin CLI and `keelctl dev`, the local
//! cluster), `keel-bench` (benchmarks), and what both and the multi-process
//! tests use: the launcher of local processes and a small Kafka client.

pub mod bench;
pub mod chaos;
pub mod kafka;
pub mod keelctl;
pub mod launcher;
pub mod s3;

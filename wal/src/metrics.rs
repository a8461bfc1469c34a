//! The WAL node's Prometheus metrics.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Metrics of one WAL node, registered in the registry passed in.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Entries stored (new, not retransmissions).
    pub entries_appended: IntCounter,
    pub bytes_appended: IntCounter,
    /// Appends and fences refused, by error code.
    pub refused: IntCounterVec,
    /// Records per journal write (group commit).
    pub batch_records: Histogram,
    /// Time to write a batch and fdatasync it.
    pub sync_seconds: Histogram,
    /// Time to handle a batch of requests, from taking it to the last reply:
    /// checks, a segment roll or trim if one falls in it, write, fdatasync.
    pub batch_seconds: Histogram,
    pub journal_bytes: IntGauge,
}

impl Metrics {
    pub fn new(registry: &Registry) -> anyhow::Result<Metrics> {
        let seconds = vec![0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5];
        let metrics = Metrics {
            entries_appended: IntCounter::new(
                "keel_wal_entries_appended_total",
                "WAL entries stored (retransmissions excluded).",
            )?,
            bytes_appended: IntCounter::new("keel_wal_appended_bytes_total", "Bytes of WAL entries stored.")?,
            refused: IntCounterVec::new(
                Opts::new("keel_wal_refused_total", "Appends and fences refused, by error code."),
                &["code"],
            )?,
            batch_records: Histogram::with_opts(
                HistogramOpts::new("keel_wal_batch_records", "Records written per journal fdatasync (group commit).")
                    .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]),
            )?,
            sync_seconds: Histogram::with_opts(
                HistogramOpts::new("keel_wal_sync_seconds", "Time to write a batch to the journal and fdatasync it.")
                    .buckets(seconds.clone()),
            )?,
            batch_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "keel_wal_batch_seconds",
                    "Time to handle one batch of requests: checks, segment roll or trim, write, fdatasync, replies.",
                )
                .buckets(seconds),
            )?,
            journal_bytes: IntGauge::new("keel_wal_journal_bytes", "Bytes the journal's segment files take on disk.")?,
        };
        registry.register(Box::new(metrics.entries_appended.clone()))?;
        registry.register(Box::new(metrics.bytes_appended.clone()))?;
        registry.register(Box::new(metrics.refused.clone()))?;
        registry.register(Box::new(metrics.batch_records.clone()))?;
        registry.register(Box::new(metrics.sync_seconds.clone()))?;
        registry.register(Box::new(metrics.batch_seconds.clone()))?;
        registry.register(Box::new(metrics.journal_bytes.clone()))?;
        Ok(metrics)
    }
}

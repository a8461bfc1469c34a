//! `keel-bench recovery`: the memory and time a WAL log recovery takes for a
//! long tail (DESIGN §9: a recovery's memory must not grow with the tail).
//!
//! Three real WAL nodes on loopback; the bench writes `--tail-bytes` to one
//! log with nothing trimmed, one node killed half-way so that it lags by
//! half the tail, then stops writing as a crashed broker would, starts the
//! lagging node again and recovers the log at the next epoch: fence, read
//! every member, copy the missing half to the lagging one. It reports the
//! peak growth of its own resident memory during the recovery (from
//! `VmHWM`, reset just before it starts) and the recovery's time.

use std::time::Duration;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use keel_controller_client::StreamId;
use keel_wal_client::entry::Record;
use keel_wal_client::ids::{LogEpoch, Offset, Seq};
use keel_wal_client::writer::WalWriter;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, clap::Args)]
pub struct RecoveryBenchArgs {
    /// Bytes of the tail to recover.
    #[arg(long, default_value_t = 1 << 30)]
    pub tail_bytes: u64,
    /// Bytes per entry.
    #[arg(long, default_value_t = 64 << 10)]
    pub entry_bytes: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct RecoveryBenchReport {
    pub tail_bytes: u64,
    pub entry_bytes: usize,
    pub entries: u64,
    /// Entries the lagging member was missing and got from the recovery.
    pub repaired_entries: u64,
    pub recovery_seconds: f64,
    /// Resident memory before the recovery.
    pub rss_before_mib: f64,
    /// The peak resident memory during the recovery, less `rss_before_mib`.
    pub peak_rss_growth_mib: f64,
}

pub async fn run(args: RecoveryBenchArgs) -> anyhow::Result<RecoveryBenchReport> {
    anyhow::ensure!(args.entry_bytes > 100, "--entry-bytes must be over 100");
    let dir = tempfile::Builder::new().prefix("keel-bench-recovery").tempdir()?;
    let mut cluster = super::wal::start_wal_cluster(dir.path()).await?;
    let cancel = CancellationToken::new();
    let _stop_session = cancel.clone().drop_guard();
    let client = std::sync::Arc::new(cluster.client()?);
    let session_tasks = TaskTracker::new();
    let owner = super::wal::register_as_broker(client.clone(), &session_tasks, &cancel).await?;
    let targets = cluster.wal_targets().await?;
    let (log, epoch) = super::wal::open_log(&client, owner, &targets).await?;

    let count = (args.tail_bytes / args.entry_bytes as u64).max(2);
    let lagging = 2;
    let batch = Bytes::from(vec![0x5Au8; args.entry_bytes - 72]);
    let writer_tasks = TaskTracker::new();
    let writer_cancel = CancellationToken::new();
    let writer = WalWriter::start(log, epoch, targets.clone(), 2, Seq(0), &writer_tasks, writer_cancel.clone());
    eprintln!("writing {count} entries of {} B; WAL node {} is killed half-way", args.entry_bytes, lagging + 1);
    let mut pending = FuturesUnordered::new();
    for seq in 0..count {
        if seq == count / 2 {
            while let Some(result) = pending.next().await {
                let _: Seq = result?;
            }
            cluster.wal_nodes[lagging].kill9();
        }
        if pending.len() >= 64 {
            let _: Seq = pending.next().await.expect("appends are pending")?;
        }
        let record =
            Record { stream: StreamId(log.0), base_offset: Offset(seq as i64), record_count: 1, batch: batch.clone() };
        pending.push(writer.append(vec![record]));
    }
    while let Some(result) = pending.next().await {
        result?;
    }
    // The writer stops as a crashed broker's would; the lagging node comes back.
    writer_cancel.cancel();
    writer_tasks.close();
    writer_tasks.wait().await;
    drop(writer);
    cluster.start_wal(lagging)?;
    cluster.wait_for_wal_nodes(Duration::from_secs(60)).await?;

    std::fs::write("/proc/self/clear_refs", "5")?;
    let before = memory_kib("VmRSS")?;
    eprintln!("recovering {log} at the next epoch");
    let started = Instant::now();
    let recovered = keel_wal_client::recover::recover(log, LogEpoch(epoch.0 + 1), &targets, 2, Seq(0)).await?;
    let recovery_seconds = started.elapsed().as_secs_f64();
    let peak = memory_kib("VmHWM")?;
    anyhow::ensure!(
        recovered.sealed_seq == Seq(count),
        "the recovery sealed at {} but {count} entries were acknowledged",
        recovered.sealed_seq
    );
    cluster.stop_all(Duration::from_secs(5));
    Ok(RecoveryBenchReport {
        tail_bytes: count * args.entry_bytes as u64,
        entry_bytes: args.entry_bytes,
        entries: recovered.entries,
        repaired_entries: count - count / 2,
        recovery_seconds,
        rss_before_mib: before as f64 / 1024.0,
        peak_rss_growth_mib: peak.saturating_sub(before) as f64 / 1024.0,
    })
}

/// A `/proc/self/status` memory field, in KiB.
fn memory_kib(field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no {field} in /proc/self/status"))
}

impl std::fmt::Display for RecoveryBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "recovery of a {:.0} MiB tail ({} entries of {} B; {} copied to a lagging member): {:.1} s",
            self.tail_bytes as f64 / (1 << 20) as f64,
            self.entries,
            self.entry_bytes,
            self.repaired_entries,
            self.recovery_seconds
        )?;
        write!(
            f,
            "resident memory: {:.1} MiB before, peak growth during the recovery {:.1} MiB",
            self.rss_before_mib, self.peak_rss_growth_mib
        )
    }
}

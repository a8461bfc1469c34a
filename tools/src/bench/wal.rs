//! `keel-bench wal`: three real WAL nodes (zones a, b, c) on loopback behind
//! a `WalWriter`, measured in the same run against the physical floor: a
//! plain loop that appends the same bytes to a preallocated, zero-filled file
//! with one fdatasync per batch, no network.
//!
//! The three nodes share this machine's one disk, so disk efficiency is
//! 3 x acknowledged MB/s / floor MB/s. Latency is from the append call to the
//! entry being durable on the ack quorum.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use keel_controller_client::StreamId;
use keel_wal_client::entry::Record;
use keel_wal_client::ids::{LogEpoch, LogId, Offset, Seq};
use keel_wal_client::writer::{Target, WalWriter};
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{micros_histogram, LatencySummary};
use crate::launcher::{ClusterOptions, LocalCluster};

#[derive(Debug, clap::Args)]
pub struct WalBenchArgs {
    /// Entry sizes in bytes.
    #[arg(long, value_delimiter = ',', default_value = "1024,16384,262144")]
    pub sizes: Vec<usize>,
    /// Bytes written per size and per run.
    #[arg(long, default_value_t = 64 << 20)]
    pub bytes: u64,
    /// Appends in flight (and entries per fdatasync in the floor).
    #[arg(long, default_value_t = 64)]
    pub in_flight: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct Floor {
    pub mb_per_second: f64,
    pub fdatasync: LatencySummary,
}

#[derive(Debug, Serialize)]
pub struct WalRun {
    pub appends_per_second: f64,
    pub mb_per_second: f64,
    pub ack_latency: LatencySummary,
}

#[derive(Debug, Serialize)]
pub struct WalSizeReport {
    pub entry_bytes: usize,
    pub floor: Floor,
    pub max_rate: WalRun,
    pub half_rate: WalRun,
    /// 3 x acknowledged MB/s / floor MB/s.
    pub disk_efficiency: f64,
    /// Ack p99 at half the maximum rate / floor fdatasync p99.
    pub half_rate_p99_over_floor_fdatasync_p99: f64,
}

#[derive(Debug, Serialize)]
pub struct WalBenchReport {
    pub in_flight: usize,
    pub sizes: Vec<WalSizeReport>,
}

pub async fn run(args: WalBenchArgs) -> anyhow::Result<WalBenchReport> {
    let dir = tempfile::Builder::new().prefix("keel-bench-wal").tempdir()?;
    eprintln!("data and logs in {}", dir.path().display());
    let specs = LocalCluster::free_port_specs(dir.path(), 3)?;
    let options = ClusterOptions { cluster_id: "bench".into(), controller_args: vec![] };
    let mut cluster = LocalCluster::new(dir.path(), options, specs)?;
    cluster.start_all()?;
    cluster.wait_for_leader(Duration::from_secs(30)).await?;
    cluster.add_free_port_wal_nodes(3)?;
    cluster.start_all_wal()?;
    cluster.wait_for_wal_nodes(Duration::from_secs(60)).await?;
    let targets = cluster.wal_targets().await?;

    let mut sizes = Vec::new();
    for (index, entry_bytes) in args.sizes.iter().copied().enumerate() {
        let count = (args.bytes / entry_bytes as u64).max(args.in_flight as u64);
        eprintln!("{entry_bytes} B entries: floor");
        let floor = measure_floor(dir.path(), entry_bytes, count, args.in_flight)?;
        eprintln!("{entry_bytes} B entries: WAL at the maximum rate");
        let log = LogId(index as u64 * 2 + 1);
        let max_rate = measure_wal(&targets, log, entry_bytes, count, args.in_flight, None).await?;
        let half = max_rate.appends_per_second / 2.0;
        eprintln!("{entry_bytes} B entries: WAL at half the maximum rate ({half:.0} appends/s)");
        let half_rate = measure_wal(&targets, LogId(log.0 + 1), entry_bytes, count, args.in_flight, Some(half)).await?;
        sizes.push(WalSizeReport {
            entry_bytes,
            disk_efficiency: 3.0 * max_rate.mb_per_second / floor.mb_per_second,
            half_rate_p99_over_floor_fdatasync_p99: half_rate.ack_latency.p99_ms / floor.fdatasync.p99_ms,
            floor,
            max_rate,
            half_rate,
        });
    }
    cluster.stop_all(Duration::from_secs(5));
    Ok(WalBenchReport { in_flight: args.in_flight, sizes })
}

/// Fewest fdatasyncs a floor measurement takes, so its p99 means something.
const FLOOR_SYNCS_MIN: u64 = 256;

/// Appends entries of `entry_bytes` to a preallocated, zero-filled file of
/// `count` entries, with one fdatasync per `batch` entries: `count` entries,
/// or more (overwriting the file from its start again) until at least
/// `FLOOR_SYNCS_MIN` fdatasyncs were measured.
pub(super) fn measure_floor(dir: &Path, entry_bytes: usize, count: u64, batch: usize) -> anyhow::Result<Floor> {
    let path = dir.join("floor.dat");
    let size = entry_bytes as u64 * count;
    let mut file = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path)?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let chunk = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..chunk])?;
        left -= chunk as u64;
    }
    file.sync_all()?;
    let payload = vec![0xA5u8; entry_bytes];
    let writes = count.max(FLOOR_SYNCS_MIN * batch as u64);
    let mut fdatasync = micros_histogram();
    let started = std::time::Instant::now();
    let mut offset = 0;
    for written in 1..=writes {
        file.write_all_at(&payload, offset)?;
        offset = (offset + entry_bytes as u64) % size;
        if written % batch as u64 == 0 || written == writes {
            let sync_started = std::time::Instant::now();
            file.sync_data()?;
            fdatasync.record(sync_started.elapsed().as_micros().max(1) as u64)?;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    let bytes = writes * entry_bytes as u64;
    Ok(Floor { mb_per_second: bytes as f64 / elapsed / 1e6, fdatasync: LatencySummary::from_micros(&fdatasync) })
}

/// Appends `count` entries through a `WalWriter`, at most `in_flight` at once,
/// paced to `rate` appends per second when given.
async fn measure_wal(
    targets: &[Target],
    log: LogId,
    entry_bytes: usize,
    count: u64,
    in_flight: usize,
    rate: Option<f64>,
) -> anyhow::Result<WalRun> {
    let tasks = TaskTracker::new();
    let cancel = CancellationToken::new();
    let writer = WalWriter::start(log, LogEpoch(1), targets.to_vec(), 2, Seq(0), &tasks, cancel.clone());
    let batch = Bytes::from(vec![0xA5u8; entry_bytes.saturating_sub(72)]);
    let mut latency = micros_histogram();
    // Completions are driven while the loop waits (for its pace or for room),
    // so each latency is measured when its entry became durable.
    let mut pending = FuturesUnordered::new();
    let started = Instant::now();
    for seq in 0..count {
        let due = rate.map(|rate| started + Duration::from_secs_f64(seq as f64 / rate));
        loop {
            let room = pending.len() < in_flight;
            let on_time = due.is_none_or(|due| Instant::now() >= due);
            if room && on_time {
                break;
            }
            tokio::select! {
                Some((result, elapsed)) = pending.next(), if !pending.is_empty() => {
                    let _: Seq = result?;
                    latency.record(Duration::as_micros(&elapsed).max(1) as u64)?;
                }
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if room && !on_time => {}
            }
        }
        let record =
            Record { stream: StreamId(log.0), base_offset: Offset(seq as i64), record_count: 1, batch: batch.clone() };
        let sent = Instant::now();
        let append = writer.append(vec![record]);
        pending.push(async move { (append.await, sent.elapsed()) });
    }
    while let Some((result, elapsed)) = pending.next().await {
        result?;
        latency.record(elapsed.as_micros().max(1) as u64)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
    Ok(WalRun {
        appends_per_second: count as f64 / elapsed,
        mb_per_second: (count * entry_bytes as u64) as f64 / elapsed / 1e6,
        ack_latency: LatencySummary::from_micros(&latency),
    })
}

impl std::fmt::Display for WalBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "WAL: 3 nodes on loopback sharing one disk, {} appends in flight", self.in_flight)?;
        for size in &self.sizes {
            writeln!(f, "entry {} B", size.entry_bytes)?;
            writeln!(
                f,
                "  floor (one file, fdatasync per batch): {:.1} MB/s, fdatasync {}",
                size.floor.mb_per_second, size.floor.fdatasync
            )?;
            writeln!(
                f,
                "  WAL at max rate: {:.0} appends/s, {:.1} MB/s, ack {}",
                size.max_rate.appends_per_second, size.max_rate.mb_per_second, size.max_rate.ack_latency
            )?;
            writeln!(
                f,
                "  WAL at half rate: {:.0} appends/s, ack {}",
                size.half_rate.appends_per_second, size.half_rate.ack_latency
            )?;
            writeln!(
                f,
                "  disk efficiency 3 x WAL MB/s / floor MB/s = {:.2}; half-rate ack p99 / floor fdatasync p99 = {:.2}",
                size.disk_efficiency, size.half_rate_p99_over_floor_fdatasync_p99
            )?;
        }
        Ok(())
    }
}

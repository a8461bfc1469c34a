//! `keel-bench wal`: three real WAL nodes (zones a, b, c) on loopback behind
//! a `WalWriter`, measured in the same run against the physical floor: a
//! plain loop that appends the same bytes to a preallocated, zero-filled file
//! with one fdatasync per batch, no network; and a replicated floor, three
//! plain receivers behind loopback TCP that replicate with no protocol.
//!
//! The three nodes share this machine's one disk, so disk efficiency is
//! 3 x acknowledged MB/s / floor MB/s. Latency is from the append call to the
//! entry being durable on the ack quorum.
//!
//! The bench writes as a broker does, in steady state: it registers as a
//! broker, opens each log with the controller, and commits a trim point
//! every `--trim-bytes` (as each upload round would; nothing is uploaded, the
//! entries are no partition's records), so the WAL nodes trim and reuse their
//! segments. A warm-up run first gives every node its recycled segments.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use keel_controller_client::{Epoch, MetadataClient, NodeId, NodeKind, Outcome, Registration, SessionKeeper, StreamId};
use keel_proto::controller as pb;
use keel_wal_client::entry::Record;
use keel_wal_client::ids::{LogEpoch, LogId, Offset, Seq};
use keel_wal_client::writer::{Target, WalWriter};
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::floor::{measure_floor, measure_floors_at_once, measure_loopback, measure_replicated, Floor, ReplicatedRun};
use super::{micros_histogram, LatencySummary};
use crate::launcher::{ClusterOptions, LocalCluster};

#[derive(Debug, clap::Args)]
pub struct WalBenchArgs {
    /// Entry sizes in bytes.
    #[arg(long, value_delimiter = ',', default_value = "1024,16384,262144")]
    pub sizes: Vec<usize>,
    /// Bytes written per size and per run: enough for several segment rolls
    /// and trims per node, and for the start of a run (connections, TCP
    /// windows) not to weigh on it.
    #[arg(long, default_value_t = 1 << 30)]
    pub bytes: u64,
    /// Acknowledged bytes between two trim points, as one upload round.
    #[arg(long, default_value_t = 32 << 20)]
    pub trim_bytes: u64,
    /// Bytes written before measuring, so that every node has recycled
    /// segments, as in steady state.
    #[arg(long, default_value_t = 512 << 20)]
    pub warm_up_bytes: u64,
    /// Appends in flight (and entries per fdatasync in the floor).
    #[arg(long, default_value_t = 64, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub in_flight: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct WalRun {
    pub appends_per_second: f64,
    pub mb_per_second: f64,
    pub ack_latency: LatencySummary,
    /// The nodes' own batch write + fdatasync p99 during the run, as the
    /// upper bound of its `keel_wal_sync_seconds` bucket: what the disk cost
    /// them, apart from network and scheduling.
    pub node_sync_p99_ms_at_most: f64,
    /// The same for the nodes' whole batches (`keel_wal_batch_seconds`):
    /// checks, segment rolls and trims, write, fdatasync, replies.
    pub node_batch_p99_ms_at_most: f64,
    /// Batches of the nodes that took over 10 ms, summed over the nodes.
    pub node_batches_over_10ms: f64,
}

#[derive(Debug, Serialize)]
pub struct WalSizeReport {
    pub entry_bytes: usize,
    pub floor: Floor,
    /// Three floor loops at once, on three files: what three nodes sharing
    /// this disk could get at best. Context for the ratios, which the issue
    /// defines against the single floor.
    pub three_writer_floor: Floor,
    /// One thread sending the same bytes over three loopback TCP connections
    /// to three threads that discard them, no gRPC, no disk: the most MB/s
    /// (per connection) this machine's loopback carries three times over.
    pub loopback_mb_per_second: f64,
    /// Three receiver threads that append what arrives over loopback TCP to
    /// their own files, fdatasync and answer, behind three sender threads
    /// (one per connection) that count an entry acknowledged once two
    /// receivers hold it: plain replication with no framing, checksums,
    /// index or RPC layer, as a reference for what three nodes sharing this
    /// machine can get. Context for the ratios below.
    pub replicated_floor_max_rate: ReplicatedRun,
    /// The replicated floor paced to the WAL's half rate: its ack latency
    /// under the load the WAL's half-rate latency is measured at.
    pub replicated_floor_at_wal_half_rate: ReplicatedRun,
    /// 3 x replicated floor MB/s / floor MB/s.
    pub replicated_floor_disk_efficiency: f64,
    /// Replicated floor ack p99 at the WAL's half rate / floor fdatasync p99.
    pub replicated_floor_half_rate_p99_over_floor_fdatasync_p99: f64,
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
    let mut cluster = start_wal_cluster(dir.path()).await?;
    let cancel = CancellationToken::new();
    let _stop_session = cancel.clone().drop_guard();
    let client = Arc::new(cluster.client()?);
    let session_tasks = TaskTracker::new();
    let owner = register_as_broker(client.clone(), &session_tasks, &cancel).await?;
    let bench = Bench {
        client,
        owner,
        targets: cluster.wal_targets().await?,
        admins: cluster.wal_nodes.iter().map(|node| node.spec.admin).collect(),
        in_flight: args.in_flight,
        trim_bytes: args.trim_bytes,
    };

    let warm_up_entry = 256 << 10;
    eprintln!("warm-up: {} MiB so every WAL node has recycled segments", args.warm_up_bytes >> 20);
    bench.measure(warm_up_entry, args.warm_up_bytes / warm_up_entry as u64, None).await?;
    let mut sizes = Vec::new();
    for entry_bytes in args.sizes.iter().copied() {
        let count = (args.bytes / entry_bytes as u64).max(args.in_flight as u64);
        eprintln!("{entry_bytes} B entries: floor");
        let floor = measure_floor(dir.path(), entry_bytes, count, args.in_flight)?;
        eprintln!("{entry_bytes} B entries: three floor writers at once");
        let three_writer_floor = measure_floors_at_once(dir.path(), 3, entry_bytes, count, args.in_flight)?;
        eprintln!("{entry_bytes} B entries: three loopback connections, no disk");
        let loopback_mb_per_second = measure_loopback(3, entry_bytes, count)?;
        eprintln!("{entry_bytes} B entries: WAL at the maximum rate");
        let max_rate = bench.measure(entry_bytes, count, None).await?;
        let half = max_rate.appends_per_second / 2.0;
        eprintln!("{entry_bytes} B entries: WAL at half the maximum rate ({half:.0} appends/s)");
        let half_rate = bench.measure(entry_bytes, count, Some(half)).await?;
        // After the WAL, so that the WAL's runs start as they did before
        // this floor was added.
        eprintln!("{entry_bytes} B entries: replicated floor, three receivers at the maximum rate");
        let replicated_max = measure_replicated(dir.path(), entry_bytes, count, args.in_flight, None)?;
        eprintln!("{entry_bytes} B entries: replicated floor at the WAL's half rate ({half:.0} appends/s)");
        let replicated_half = measure_replicated(dir.path(), entry_bytes, count, args.in_flight, Some(half))?;
        sizes.push(WalSizeReport {
            entry_bytes,
            disk_efficiency: 3.0 * max_rate.mb_per_second / floor.mb_per_second,
            half_rate_p99_over_floor_fdatasync_p99: half_rate.ack_latency.p99_ms / floor.fdatasync.p99_ms,
            replicated_floor_disk_efficiency: 3.0 * replicated_max.mb_per_second / floor.mb_per_second,
            replicated_floor_half_rate_p99_over_floor_fdatasync_p99: replicated_half.ack_latency.p99_ms
                / floor.fdatasync.p99_ms,
            replicated_floor_max_rate: replicated_max,
            replicated_floor_at_wal_half_rate: replicated_half,
            floor,
            three_writer_floor,
            loopback_mb_per_second,
            max_rate,
            half_rate,
        });
    }
    cluster.stop_all(Duration::from_secs(5));
    Ok(WalBenchReport { in_flight: args.in_flight, sizes })
}

/// Three controllers and three WAL nodes (zones a, b, c) on loopback, data
/// and logs under `dir`.
pub(super) async fn start_wal_cluster(dir: &std::path::Path) -> anyhow::Result<LocalCluster> {
    eprintln!("data and logs in {}", dir.display());
    let specs = LocalCluster::free_port_specs(dir, 3)?;
    let options = ClusterOptions { cluster_id: "bench".into(), controller_args: vec![] };
    let mut cluster = LocalCluster::new(dir, options, specs)?;
    cluster.start_all()?;
    cluster.wait_for_leader(Duration::from_secs(30)).await?;
    cluster.add_free_port_wal_nodes(3)?;
    cluster.start_all_wal()?;
    cluster.wait_for_wal_nodes(Duration::from_secs(60)).await?;
    Ok(cluster)
}

/// Records a new log of `owner` on the nodes of `targets`, as a broker does
/// before its first append.
pub(super) async fn open_log(
    client: &MetadataClient,
    (owner, owner_epoch): (NodeId, Epoch),
    targets: &[Target],
) -> anyhow::Result<(LogId, LogEpoch)> {
    let ensemble = targets
        .iter()
        .map(|target| pb::EnsembleMember {
            node_id: target.member.node.0,
            zone: target.member.zone.clone(),
            incarnation: target.member.incarnation.clone(),
        })
        .collect();
    let request = pb::OpenLogRequest { owner: owner.0, owner_epoch: owner_epoch.0, ensemble, ack_quorum: 2 };
    match client.open_log(request).await? {
        (_, Outcome::LogOpened { log, epoch }) => Ok((log, epoch)),
        (_, other) => anyhow::bail!("OpenLog answered {other:?}"),
    }
}

/// Registers the bench as a broker, so that it may open logs and commit trim
/// points; the registration is kept alive until `cancel` fires.
pub(super) async fn register_as_broker(
    client: Arc<MetadataClient>,
    tasks: &TaskTracker,
    cancel: &CancellationToken,
) -> anyhow::Result<(NodeId, Epoch)> {
    let registration = Registration {
        kind: NodeKind::Broker,
        id: NodeId(1000),
        zone: "a".into(),
        internal_addr: "127.0.0.1:9".into(),
        kafka_listeners: vec![],
        incarnation: format!("keel-bench-{:016x}", rand::random::<u64>()),
    };
    let id = registration.id;
    let heartbeat = Duration::from_millis(250);
    let (keeper, mut session) = SessionKeeper::new(client, registration, heartbeat, heartbeat);
    tasks.spawn(keeper.run(cancel.clone()));
    let registered = tokio::time::timeout(Duration::from_secs(30), session.wait_for(Option::is_some)).await;
    let epoch = registered
        .map_err(|_| anyhow::anyhow!("the controller did not register the bench within 30 s"))??
        .as_ref()
        .expect("waited for a session")
        .epoch;
    Ok((id, epoch))
}

/// Writes WAL logs as a broker does.
struct Bench {
    client: Arc<MetadataClient>,
    owner: (NodeId, Epoch),
    targets: Vec<Target>,
    /// The nodes' metrics addresses.
    admins: Vec<std::net::SocketAddr>,
    in_flight: usize,
    trim_bytes: u64,
}

impl Bench {
    /// Appends `count` entries to a new log, at most `in_flight` at once,
    /// paced to `rate` appends per second when given, trimming as it goes.
    async fn measure(&self, entry_bytes: usize, count: u64, rate: Option<f64>) -> anyhow::Result<WalRun> {
        let (log, epoch) = open_log(&self.client, self.owner, &self.targets).await?;
        let tasks = TaskTracker::new();
        let cancel = CancellationToken::new();
        let writer = WalWriter::start(log, epoch, self.targets.clone(), 2, Seq(0), &tasks, cancel.clone());
        let entries_per_trim = (self.trim_bytes / entry_bytes as u64).max(1);
        let trimming = tasks.spawn(trim_as_uploads_do(
            self.client.clone(),
            self.owner,
            (log, epoch),
            writer.clone(),
            entries_per_trim,
            cancel.clone(),
        ));
        let before = self.node_buckets().await?;
        let run = append_paced(&writer, log, entry_bytes, count, self.in_flight, rate).await;
        cancel.cancel();
        tasks.close();
        tasks.wait().await;
        trimming.await??;
        let mut run = run?;
        let after = self.node_buckets().await?;
        let during = |name: &str| -> Vec<(f64, f64)> {
            after[name].iter().zip(&before[name]).map(|((le, after), (_, before))| (*le, after - before)).collect()
        };
        run.node_sync_p99_ms_at_most = bucket_quantile(&during("keel_wal_sync_seconds"), 0.99) * 1000.0;
        let batches = during("keel_wal_batch_seconds");
        run.node_batch_p99_ms_at_most = bucket_quantile(&batches, 0.99) * 1000.0;
        let total = batches.last().map_or(0.0, |(_, count)| *count);
        run.node_batches_over_10ms =
            total - batches.iter().find(|(le, _)| *le >= 0.01).map_or(total, |(_, count)| *count);
        Ok(run)
    }

    /// The nodes' sync and batch histograms, each summed over the nodes.
    async fn node_buckets(&self) -> anyhow::Result<std::collections::HashMap<&'static str, Vec<(f64, f64)>>> {
        let mut texts = Vec::new();
        for admin in &self.admins {
            texts.push(crate::launcher::http_get(*admin, "/metrics").await?.1);
        }
        Ok(["keel_wal_sync_seconds", "keel_wal_batch_seconds"]
            .into_iter()
            .map(|name| (name, summed_buckets(&texts, name)))
            .collect())
    }
}

/// The buckets of histogram `name` in Prometheus texts, summed: (upper bound, count).
fn summed_buckets(texts: &[String], name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut summed: Vec<(f64, f64)> = Vec::new();
    for text in texts {
        let buckets = text.lines().filter_map(|line| {
            let rest = line.strip_prefix(prefix.as_str())?;
            let (le, count) = rest.split_once("\"} ")?;
            Some((le.parse::<f64>().ok()?, count.trim().parse::<f64>().ok()?))
        });
        for (index, (le, count)) in buckets.enumerate() {
            match summed.get_mut(index) {
                Some(bucket) => bucket.1 += count,
                None => summed.push((le, count)),
            }
        }
    }
    summed
}

/// Commits a trim point each time `entries_per_trim` more entries are
/// acknowledged, as a broker's uploader does after each upload round, and
/// a last one for everything acknowledged when the run ends.
async fn trim_as_uploads_do(
    client: Arc<MetadataClient>,
    (broker, broker_epoch): (NodeId, Epoch),
    (log, epoch): (LogId, LogEpoch),
    writer: WalWriter,
    entries_per_trim: u64,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut trimmed = Seq(0);
    loop {
        let last = tokio::select! {
            _ = cancel.cancelled() => true,
            _ = tokio::time::sleep(Duration::from_millis(20)) => false,
        };
        let acked = writer.acked();
        // At the end everything acknowledged counts as uploaded, so the
        // run's segments go back to the nodes' recycled pools, as they do
        // in steady state, and the next run does not start with them held.
        let due = if last { acked > trimmed } else { acked.0 >= trimmed.0 + entries_per_trim };
        match (due, last) {
            (false, true) => return Ok(()),
            (false, false) => continue,
            (true, _) => {}
        }
        let request = pb::CommitUploadRequest {
            broker: broker.0,
            broker_epoch: broker_epoch.0,
            log: log.0,
            log_epoch: epoch.0,
            trim_seq: acked.0,
            objects: b"[]".to_vec(),
        };
        client.commit_upload(request).await.map_err(|error| anyhow::anyhow!("CommitUpload of {log}: {error}"))?;
        trimmed = acked;
        if last {
            return Ok(());
        }
    }
}

/// The upper bound of the cumulative bucket holding quantile `q`.
fn bucket_quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let total = buckets.last().map_or(0.0, |(_, count)| *count);
    buckets.iter().find(|(_, count)| *count >= q * total).map_or(f64::NAN, |(le, _)| *le)
}

/// Appends `count` entries through `writer`, at most `in_flight` at once,
/// paced to `rate` appends per second when given.
async fn append_paced(
    writer: &WalWriter,
    log: LogId,
    entry_bytes: usize,
    count: u64,
    in_flight: usize,
    rate: Option<f64>,
) -> anyhow::Result<WalRun> {
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
    Ok(WalRun {
        appends_per_second: count as f64 / elapsed,
        mb_per_second: (count * entry_bytes as u64) as f64 / elapsed / 1e6,
        ack_latency: LatencySummary::from_micros(&latency),
        node_sync_p99_ms_at_most: f64::NAN,
        node_batch_p99_ms_at_most: f64::NAN,
        node_batches_over_10ms: f64::NAN,
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
                "  three floor writers at once (context): {:.1} MB/s in all, fdatasync {}",
                size.three_writer_floor.mb_per_second, size.three_writer_floor.fdatasync
            )?;
            writeln!(
                f,
                "  one sender to three loopback connections, no gRPC, no disk (context): {:.1} MB/s each",
                size.loopback_mb_per_second
            )?;
            writeln!(
                f,
                "  replicated floor (three receivers, loopback TCP, fdatasync, ack from two; context): max {:.0} appends/s, {:.1} MB/s, ack {}; at the WAL's half rate {:.0} appends/s, ack {}",
                size.replicated_floor_max_rate.appends_per_second,
                size.replicated_floor_max_rate.mb_per_second,
                size.replicated_floor_max_rate.ack_latency,
                size.replicated_floor_at_wal_half_rate.appends_per_second,
                size.replicated_floor_at_wal_half_rate.ack_latency
            )?;
            writeln!(
                f,
                "  WAL at max rate: {:.0} appends/s, {:.1} MB/s, ack {}; node sync p99 <= {}ms, batch p99 <= {}ms, batches over 10 ms: {}",
                size.max_rate.appends_per_second,
                size.max_rate.mb_per_second,
                size.max_rate.ack_latency,
                size.max_rate.node_sync_p99_ms_at_most,
                size.max_rate.node_batch_p99_ms_at_most,
                size.max_rate.node_batches_over_10ms
            )?;
            writeln!(
                f,
                "  WAL at half rate: {:.0} appends/s, ack {}; node sync p99 <= {}ms, batch p99 <= {}ms, batches over 10 ms: {}",
                size.half_rate.appends_per_second,
                size.half_rate.ack_latency,
                size.half_rate.node_sync_p99_ms_at_most,
                size.half_rate.node_batch_p99_ms_at_most,
                size.half_rate.node_batches_over_10ms
            )?;
            writeln!(
                f,
                "  disk efficiency 3 x WAL MB/s / floor MB/s = {:.2}; half-rate ack p99 / floor fdatasync p99 = {:.2}",
                size.disk_efficiency, size.half_rate_p99_over_floor_fdatasync_p99
            )?;
            writeln!(
                f,
                "  the same ratios for the replicated floor (plain replication, no protocol): {:.2} and {:.2}",
                size.replicated_floor_disk_efficiency, size.replicated_floor_half_rate_p99_over_floor_fdatasync_p99
            )?;
        }
        Ok(())
    }
}

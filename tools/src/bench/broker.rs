//! `keel-bench broker`: Kafka produce and tail-consume through real brokers.
//!
//! By default it starts the local three-zone cluster (3 controllers, a WAL
//! node and a broker in each of zones a, b and c) on loopback; `--bootstrap`
//! points it at a running one instead. One idempotent producer per
//! partition keeps up to `--in-flight` produce requests outstanding (one
//! uncompressed batch each, as a client with `linger.ms` would send), first
//! as fast as the cluster acknowledges, then paced at half that rate (or
//! `--rate`) while a tail consumer per partition fetches from the leader.
//!
//! Publish latency is from sending the produce request to its answer; end to
//! end is from the producer's clock stamped in each value to the consumer
//! decoding it. In the same run it measures the disk's floor (the WAL
//! benchmark's: one preallocated file, one fdatasync per batch of entries the
//! size of one produce batch), because the three WAL nodes share this disk.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use futures::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use kafka_protocol::records::RecordBatchDecoder;
use serde::Serialize;
use tokio::time::Instant;

use super::floor::{measure_floor, Floor};
use super::{micros_histogram, LatencySummary};
use crate::kafka::{self, Connection, TopicLayout};
use crate::launcher::{metric_value, ClusterOptions, LocalCluster};

#[derive(Debug, clap::Args)]
pub struct BrokerBenchArgs {
    /// A running cluster's Kafka bootstrap address; without it the benchmark
    /// starts a local three-zone cluster in a temporary directory.
    #[arg(long)]
    pub bootstrap: Option<String>,
    /// Bytes per record value.
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Records per produce batch.
    #[arg(long, default_value_t = 16)]
    pub batch_records: usize,
    #[arg(long, default_value_t = 12)]
    pub partitions: i32,
    /// Produce requests in flight per partition (Kafka's idempotent limit is 5).
    #[arg(long, default_value_t = 5)]
    pub in_flight: usize,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Records per second of the paced phase; half the measured maximum when not given.
    #[arg(long)]
    pub rate: Option<f64>,
    /// -1 (all), 1 or 0.
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    pub acks: i16,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct ProduceRun {
    pub records_per_second: f64,
    /// Acknowledged record-value bytes.
    pub mb_per_second: f64,
    pub publish_latency: LatencySummary,
    /// Produce answers with an error code (each is retried by nothing: it is counted).
    pub errors: u64,
}

#[derive(Debug, Serialize)]
pub struct ConsumeRun {
    /// Record-value bytes consumed from the tail.
    pub mb_per_second: f64,
    pub end_to_end_latency: LatencySummary,
}

#[derive(Debug, Serialize)]
pub struct TierReport {
    pub objects_per_gib: f64,
    pub uploaded_mb: f64,
    pub wal_bytes_end_mb: f64,
    pub wal_bytes_max_mb: f64,
    pub catch_up_mb_per_second: f64,
    pub catch_up_mb: f64,
    pub hot_read_mb_per_second: f64,
    pub hot_read_mb: f64,
}

#[derive(Debug, Serialize)]
pub struct BrokerBenchReport {
    pub record_bytes: usize,
    pub batch_records: usize,
    pub partitions: i32,
    pub acks: i16,
    pub in_flight: usize,
    pub floor: Floor,
    pub max_rate: ProduceRun,
    pub paced_rate: ProduceRun,
    pub tail_consume: ConsumeRun,
    /// Highest resident set size seen per broker, in MB (local cluster only).
    pub broker_rss_mb: Vec<f64>,
    /// The S3 tier (local cluster only): objects uploaded per GiB uploaded,
    /// WAL journal bytes held on all nodes at the end of the paced phase (and
    /// the most seen), and catch-up reads from offset 0 (object store, cold
    /// object cache) against reads of the newest records (hot cache).
    pub tier: Option<TierReport>,
    /// 3 x produced MB/s at the maximum rate / floor MB/s (the WAL nodes share the disk).
    pub disk_efficiency: f64,
    /// Publish p99 at the paced rate / floor fdatasync p99.
    pub paced_p99_over_floor_fdatasync_p99: f64,
}

pub async fn run(args: BrokerBenchArgs) -> anyhow::Result<BrokerBenchReport> {
    anyhow::ensure!(args.record_bytes >= 8, "--record-bytes must be at least 8 (the value carries a timestamp)");
    anyhow::ensure!(args.partitions > 0 && args.batch_records > 0 && args.in_flight > 0, "counts must be positive");
    let dir = tempfile::Builder::new().prefix("keel-bench-broker").tempdir()?;
    let (bootstrap, cluster) = given_or_local(&args.bootstrap, dir.path()).await?;
    let result = measure(&args, &bootstrap, dir.path(), cluster.as_ref()).await;
    if let Some(mut cluster) = cluster {
        cluster.stop_all(Duration::from_secs(5));
    }
    result
}

/// The Kafka bootstrap of the cluster to measure: `given`, else a local
/// one started in `dir`, returned too so the caller stops it.
pub(super) async fn given_or_local(
    given: &Option<String>,
    dir: &std::path::Path,
) -> anyhow::Result<(String, Option<LocalCluster>)> {
    if let Some(bootstrap) = given {
        return Ok((bootstrap.clone(), None));
    }
    eprintln!("starting a local cluster; data and logs in {}", dir.display());
    let local = start_cluster(dir).await?;
    Ok((local.bootstrap(), Some(local)))
}

/// Three controllers, and a WAL node and a broker in each of zones a, b, c.
async fn start_cluster(dir: &std::path::Path) -> anyhow::Result<LocalCluster> {
    let specs = LocalCluster::free_port_specs(dir, 3)?;
    let options = ClusterOptions { cluster_id: "bench".into(), controller_args: vec![] };
    let mut cluster = LocalCluster::new(dir, options, specs)?;
    cluster.start_all()?;
    cluster.wait_for_leader(Duration::from_secs(30)).await?;
    cluster.add_free_port_wal_nodes(3)?;
    cluster.start_all_wal()?;
    cluster.wait_for_wal_nodes(Duration::from_secs(60)).await?;
    cluster.add_free_port_brokers(3, &[])?;
    cluster.start_all_brokers()?;
    cluster.wait_for_brokers(Duration::from_secs(60)).await?;
    Ok(cluster)
}

async fn measure(
    args: &BrokerBenchArgs,
    bootstrap: &str,
    dir: &std::path::Path,
    cluster: Option<&LocalCluster>,
) -> anyhow::Result<BrokerBenchReport> {
    let batch_bytes = args.record_bytes * args.batch_records;
    eprintln!("floor: {batch_bytes} B entries, {} per fdatasync", args.in_flight);
    let floor_count = ((256u64 << 20) / batch_bytes as u64).max(args.in_flight as u64);
    let floor = measure_floor(dir, batch_bytes, floor_count, args.in_flight)?;

    let first_broker = bootstrap.split(',').next().unwrap_or(bootstrap);
    let first = Connection::connect(first_broker).await?;
    let topic = format!("bench-{}", rand::random::<u32>());
    kafka::create_topic(&first, &topic, args.partitions).await?;
    let layout = wait_for_leaders(&first, &topic).await?;
    let mut connections: HashMap<i32, Arc<Connection>> = HashMap::new();
    for (broker, addr) in &layout.brokers {
        connections.insert(*broker, Arc::new(Connection::connect(addr).await?));
    }
    let mut producers = Vec::new();
    for (partition, leader) in layout.leaders.iter().enumerate() {
        let connection = connections.get(leader).context("a partition's leader is not among the brokers")?.clone();
        let (id, epoch) = kafka::init_producer_id(&connection).await?;
        producers.push(PartitionProducer { connection, partition: partition as i32, id, epoch, sequence: 0 });
    }

    let rss = RssSampler::start(
        cluster.map(|c| c.brokers.iter().filter_map(|b| b.pid()).collect()).unwrap_or_default(),
        cluster.map(|c| c.wal_nodes.iter().map(|w| w.spec.admin).collect()).unwrap_or_default(),
    );
    eprintln!("produce at the maximum rate for {} s", args.seconds);
    let (max_rate, producers) = produce_phase(args, &topic, producers, None).await?;
    let paced = args.rate.unwrap_or(max_rate.records_per_second / 2.0);
    eprintln!("produce paced at {paced:.0} records/s with tail consumers, for {} s", args.seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let mut consumers = start_consumers(&topic, &layout, &connections, stop.clone()).await?;
    let consume_started = Instant::now();
    let (paced_rate, _) = produce_phase(args, &topic, producers, Some(paced)).await?;
    // Let the consumers read what was acknowledged last.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut end_to_end = micros_histogram();
    let mut consumed = 0u64;
    while let Some(consumer) = consumers.join_next().await {
        let (bytes, histogram) = consumer??;
        consumed += bytes;
        end_to_end.add(histogram)?;
    }
    let consume_seconds = consume_started.elapsed().as_secs_f64();
    let (broker_rss_mb, wal_bytes_max, wal_bytes_end) = rss.stop().await;
    let tier = match cluster {
        Some(cluster) => {
            Some(measure_tier(cluster, &topic, &layout, &connections, wal_bytes_end, wal_bytes_max).await?)
        }
        None => None,
    };
    Ok(BrokerBenchReport {
        record_bytes: args.record_bytes,
        batch_records: args.batch_records,
        partitions: args.partitions,
        acks: args.acks,
        in_flight: args.in_flight,
        disk_efficiency: 3.0 * max_rate.mb_per_second / floor.mb_per_second,
        paced_p99_over_floor_fdatasync_p99: paced_rate.publish_latency.p99_ms / floor.fdatasync.p99_ms,
        floor,
        max_rate,
        paced_rate,
        tail_consume: ConsumeRun {
            mb_per_second: consumed as f64 / consume_seconds / 1e6,
            end_to_end_latency: LatencySummary::from_micros(&end_to_end),
        },
        broker_rss_mb,
        tier,
    })
}

/// Upload figures from the brokers' metrics, then catch-up and hot reads.
async fn measure_tier(
    cluster: &LocalCluster,
    topic: &str,
    layout: &TopicLayout,
    connections: &HashMap<i32, Arc<Connection>>,
    wal_bytes_end: u64,
    wal_bytes_max: u64,
) -> anyhow::Result<TierReport> {
    // Wait until the first half of every partition is in objects.
    let client = cluster.client()?;
    let mut ends = Vec::new();
    for (partition, leader) in layout.leaders.iter().enumerate() {
        let connection = connections.get(leader).context("a partition's leader is not among the brokers")?;
        let request = kafka::fetch_request(topic, partition as i32, 0, 0, 1);
        ends.push(kafka::fetch_result(&connection.send(kafka::FETCH_VERSION, &request).await?)?.1);
    }
    eprintln!("waiting for the uploads to cover the first half of every partition");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let image = client.read_image().await?;
        let found = image.topics.get(topic).context("the bench topic is gone")?;
        if found.partitions.iter().zip(&ends).all(|(p, end)| p.uploaded_end.0 >= end / 2) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "uploads did not cover half of the data in 120 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (mut uploads, mut uploaded) = (0.0, 0.0);
    for broker in &cluster.brokers {
        let (_, metrics) = crate::launcher::http_get(broker.spec.admin, "/metrics").await?;
        uploads += metric_value(&metrics, "keel_broker_uploads_total");
        uploaded += metric_value(&metrics, "keel_broker_upload_bytes_total");
    }
    eprintln!("catch-up read of the first half of every partition (object store)");
    let cold: Vec<(i32, i64, i64)> = ends.iter().enumerate().map(|(p, end)| (p as i32, 0, end / 2)).collect();
    let (cold_bytes, cold_seconds) = read_ranges(topic, layout, connections, &cold).await?;
    eprintln!("read of the newest eighth of every partition (hot cache)");
    let hot: Vec<(i32, i64, i64)> = ends.iter().enumerate().map(|(p, end)| (p as i32, end - end / 8, *end)).collect();
    let (hot_bytes, hot_seconds) = read_ranges(topic, layout, connections, &hot).await?;
    Ok(TierReport {
        objects_per_gib: uploads / (uploaded / f64::from(1u32 << 30)).max(f64::MIN_POSITIVE),
        uploaded_mb: uploaded / 1e6,
        wal_bytes_end_mb: wal_bytes_end as f64 / 1e6,
        wal_bytes_max_mb: wal_bytes_max as f64 / 1e6,
        catch_up_mb_per_second: cold_bytes as f64 / cold_seconds / 1e6,
        catch_up_mb: cold_bytes as f64 / 1e6,
        hot_read_mb_per_second: hot_bytes as f64 / hot_seconds / 1e6,
        hot_read_mb: hot_bytes as f64 / 1e6,
    })
}

/// Reads every (partition, from, to) range in parallel, one reader per
/// partition: record-batch bytes read and seconds taken.
async fn read_ranges(
    topic: &str,
    layout: &TopicLayout,
    connections: &HashMap<i32, Arc<Connection>>,
    ranges: &[(i32, i64, i64)],
) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let mut readers = tokio::task::JoinSet::new();
    for &(partition, from, to) in ranges {
        let leader = layout.leaders[partition as usize];
        let connection = connections.get(&leader).context("a partition's leader is not among the brokers")?.clone();
        let topic = topic.to_owned();
        readers.spawn(async move {
            let (mut offset, mut bytes) = (from, 0u64);
            while offset < to {
                let request = kafka::fetch_request(&topic, partition, offset, 100, 8 << 20);
                let (error, _, records) = kafka::fetch_result(&connection.send(kafka::FETCH_VERSION, &request).await?)?;
                anyhow::ensure!(error == 0, "fetch of partition {partition} at {offset}: error {error}");
                let batches = kafka::split_batches(&records);
                anyhow::ensure!(!batches.is_empty(), "fetch of partition {partition} at {offset} returned nothing");
                for (base, count, batch) in batches {
                    bytes += batch.len() as u64;
                    offset = base + i64::from(count);
                }
            }
            anyhow::Ok(bytes)
        });
    }
    let mut total = 0;
    while let Some(read) = readers.join_next().await {
        total += read??;
    }
    Ok((total, started.elapsed().as_secs_f64()))
}

/// Waits until every partition of `topic` has a leader.
pub(super) async fn wait_for_leaders(connection: &Connection, topic: &str) -> anyhow::Result<TopicLayout> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let layout = kafka::topic_layout(connection, topic).await?;
        if layout.leaders.iter().all(|leader| *leader >= 0) {
            return Ok(layout);
        }
        anyhow::ensure!(Instant::now() < deadline, "{topic} still has partitions without a leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One partition's producer, idempotent when it has an id (>= 0); its
/// sequence carries over phases.
pub(super) struct PartitionProducer {
    pub connection: Arc<Connection>,
    pub partition: i32,
    pub id: i64,
    pub epoch: i16,
    pub sequence: i32,
}

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_micros() as u64)
}

/// Runs every partition's producer for `args.seconds`, paced to `rate`
/// records per second in total when given.
pub(super) async fn produce_phase(
    args: &BrokerBenchArgs,
    topic: &str,
    producers: Vec<PartitionProducer>,
    rate: Option<f64>,
) -> anyhow::Result<(ProduceRun, Vec<PartitionProducer>)> {
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let batches_per_second = rate.map(|rate| rate / args.batch_records as f64 / producers.len() as f64);
    let count = producers.len();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, producer) in producers.into_iter().enumerate() {
        let topic = topic.to_owned();
        let (record_bytes, batch_records, in_flight, acks) =
            (args.record_bytes, args.batch_records, args.in_flight, args.acks);
        tasks.spawn(async move {
            let produced = produce_partition(
                producer,
                &topic,
                record_bytes,
                batch_records,
                in_flight,
                acks,
                batches_per_second,
                until,
            );
            (index, produced.await)
        });
    }
    let mut latency = micros_histogram();
    let (mut records, mut errors) = (0u64, 0u64);
    // Back in their order, for the next phase.
    let mut producers: Vec<Option<PartitionProducer>> = (0..count).map(|_| None).collect();
    while let Some(finished) = tasks.join_next().await {
        let (index, produced) = finished?;
        let (producer, acked, failed, histogram) = produced?;
        records += acked;
        errors += failed;
        latency.add(histogram)?;
        producers[index] = Some(producer);
    }
    let producers: Vec<PartitionProducer> = producers.into_iter().flatten().collect();
    let seconds = started.elapsed().as_secs_f64();
    let run = ProduceRun {
        records_per_second: records as f64 / seconds,
        mb_per_second: (records * args.record_bytes as u64) as f64 / seconds / 1e6,
        publish_latency: LatencySummary::from_micros(&latency),
        errors,
    };
    Ok((run, producers))
}

#[allow(clippy::too_many_arguments)]
async fn produce_partition(
    mut producer: PartitionProducer,
    topic: &str,
    record_bytes: usize,
    batch_records: usize,
    in_flight: usize,
    acks: i16,
    batches_per_second: Option<f64>,
    until: Instant,
) -> anyhow::Result<(PartitionProducer, u64, u64, Histogram<u64>)> {
    let mut latency = micros_histogram();
    let (mut acked, mut errors) = (0u64, 0u64);
    let mut pending = FuturesUnordered::new();
    let started = Instant::now();
    let mut sent = 0u64;
    let filler = vec![0x5Au8; record_bytes - 8];
    while Instant::now() < until {
        let due = batches_per_second.map(|rate| started + Duration::from_secs_f64(sent as f64 / rate));
        let room = pending.len() < in_flight;
        let on_time = due.is_none_or(|due| Instant::now() >= due);
        if !(room && on_time) {
            tokio::select! {
                Some(result) = pending.next(), if !pending.is_empty() => {
                    let (error, elapsed): (i16, Duration) = result?;
                    if error == 0 {
                        acked += batch_records as u64;
                        latency.record(elapsed.as_micros().max(1) as u64)?;
                    } else {
                        errors += 1;
                    }
                }
                _ = tokio::time::sleep_until(due.unwrap_or(until).min(until)), if room && !on_time => {}
            }
            continue;
        }
        let stamp = now_micros();
        let values: Vec<Bytes> = (0..batch_records)
            .map(|_| {
                let mut value = BytesMut::with_capacity(record_bytes);
                value.extend_from_slice(&stamp.to_be_bytes());
                value.extend_from_slice(&filler);
                value.freeze()
            })
            .collect();
        let idempotent = (producer.id >= 0).then_some((producer.id, producer.epoch, producer.sequence));
        let batch = kafka::batch(&values, (stamp / 1000) as i64, idempotent)?;
        producer.sequence = producer.sequence.wrapping_add(batch_records as i32);
        let request = kafka::produce_request(topic, producer.partition, acks, batch);
        let sent_at = Instant::now();
        sent += 1;
        if acks == 0 {
            producer.connection.send_without_answer(kafka::PRODUCE_VERSION, &request).await?;
            acked += batch_records as u64;
            continue;
        }
        let answer = producer.connection.submit(kafka::PRODUCE_VERSION, &request).await?;
        pending.push(async move {
            let answer = answer.wait().await?;
            let (error, _) = kafka::produce_result(&answer)?;
            anyhow::Ok((error, sent_at.elapsed()))
        });
    }
    while let Some(result) = pending.next().await {
        let (error, elapsed) = result?;
        if error == 0 {
            acked += batch_records as u64;
            latency.record(elapsed.as_micros().max(1) as u64)?;
        } else {
            errors += 1;
        }
    }
    Ok((producer, acked, errors, latency))
}

type ConsumerTasks = tokio::task::JoinSet<anyhow::Result<(u64, Histogram<u64>)>>;

/// One tail consumer per partition, from its current high watermark, until `stop`.
async fn start_consumers(
    topic: &str,
    layout: &TopicLayout,
    connections: &HashMap<i32, Arc<Connection>>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<ConsumerTasks> {
    let mut tasks = ConsumerTasks::new();
    for (partition, leader) in layout.leaders.iter().enumerate() {
        let connection = connections.get(leader).context("a partition's leader is not among the brokers")?.clone();
        let request = kafka::fetch_request(topic, partition as i32, 0, 0, 1);
        let (_, high_watermark, _) = kafka::fetch_result(&connection.send(kafka::FETCH_VERSION, &request).await?)?;
        let topic = topic.to_owned();
        let stop = stop.clone();
        tasks.spawn(async move { tail(&connection, &topic, partition as i32, high_watermark, &stop).await });
    }
    Ok(tasks)
}

async fn tail(
    connection: &Connection,
    topic: &str,
    partition: i32,
    mut offset: i64,
    stop: &AtomicBool,
) -> anyhow::Result<(u64, Histogram<u64>)> {
    let mut latency = micros_histogram();
    let mut bytes = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let request = kafka::fetch_request(topic, partition, offset, 100, 4 << 20);
        let (error, _, records) = kafka::fetch_result(&connection.send(kafka::FETCH_VERSION, &request).await?)?;
        anyhow::ensure!(error == 0, "fetch of partition {partition} at {offset}: error {error}");
        let received = now_micros();
        for (base, count, batch) in kafka::split_batches(&records) {
            let mut batch = Bytes::copy_from_slice(batch);
            let set = RecordBatchDecoder::decode(&mut batch).context("decode a fetched batch")?;
            for record in &set.records {
                let value = record.value.as_deref().unwrap_or_default();
                if let Some(stamp) = value.get(..8) {
                    let stamp = u64::from_be_bytes(stamp.try_into().expect("8 bytes"));
                    latency.record(received.saturating_sub(stamp).max(1))?;
                }
                bytes += value.len() as u64;
            }
            offset = base + i64::from(count);
        }
    }
    Ok((bytes, latency))
}

/// Samples the brokers' resident set size and the WAL nodes' journal bytes
/// every 200 ms, keeping each broker's highest RSS and the WAL total's
/// highest and last value.
struct RssSampler {
    highest: Arc<Mutex<(Vec<u64>, u64, u64)>>,
    stop: Arc<AtomicU64>,
    task: tokio::task::JoinSet<()>,
}

impl RssSampler {
    fn start(pids: Vec<u32>, wal_admins: Vec<std::net::SocketAddr>) -> RssSampler {
        let highest = Arc::new(Mutex::new((vec![0u64; pids.len()], 0, 0)));
        let stop = Arc::new(AtomicU64::new(0));
        let mut task = tokio::task::JoinSet::new();
        task.spawn({
            let highest = highest.clone();
            let stop = stop.clone();
            async move {
                while stop.load(Ordering::Relaxed) == 0 {
                    let mut wal = 0u64;
                    for admin in &wal_admins {
                        if let Ok((_, text)) = crate::launcher::http_get(*admin, "/metrics").await {
                            wal += metric_value(&text, "keel_wal_journal_bytes") as u64;
                        }
                    }
                    {
                        let mut seen = highest.lock().expect("rss lock");
                        for (index, pid) in pids.iter().enumerate() {
                            if let Some(rss) = rss_bytes(*pid) {
                                seen.0[index] = seen.0[index].max(rss);
                            }
                        }
                        seen.1 = seen.1.max(wal);
                        seen.2 = wal;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        });
        RssSampler { highest, stop, task }
    }

    /// Each broker's highest RSS in MB, and the WAL journals' highest and last total bytes.
    async fn stop(mut self) -> (Vec<f64>, u64, u64) {
        self.stop.store(1, Ordering::Relaxed);
        let _ = self.task.join_next().await;
        let highest = self.highest.lock().expect("rss lock");
        (highest.0.iter().map(|bytes| *bytes as f64 / 1e6).collect(), highest.1, highest.2)
    }
}

/// A process's resident set size from /proc.
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

impl std::fmt::Display for BrokerBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "brokers: {} B records, {} per batch, {} partitions, acks={}, {} produce requests in flight per partition",
            self.record_bytes, self.batch_records, self.partitions, self.acks, self.in_flight
        )?;
        writeln!(
            f,
            "  floor (one file, {} B entries, fdatasync per {}): {:.1} MB/s, fdatasync {}",
            self.record_bytes * self.batch_records,
            self.in_flight,
            self.floor.mb_per_second,
            self.floor.fdatasync
        )?;
        for (name, run) in [("max rate", &self.max_rate), ("paced rate", &self.paced_rate)] {
            writeln!(
                f,
                "  produce at {name}: {:.0} records/s, {:.1} MB/s, {} errors, publish {}",
                run.records_per_second, run.mb_per_second, run.errors, run.publish_latency
            )?;
        }
        writeln!(
            f,
            "  tail consume: {:.1} MB/s, end to end {}",
            self.tail_consume.mb_per_second, self.tail_consume.end_to_end_latency
        )?;
        if !self.broker_rss_mb.is_empty() {
            let rss: Vec<String> = self.broker_rss_mb.iter().map(|mb| format!("{mb:.0} MB")).collect();
            writeln!(f, "  broker RSS (highest): {}", rss.join(", "))?;
        }
        if let Some(tier) = &self.tier {
            writeln!(
                f,
                "  S3 tier: {:.1} objects per GiB uploaded ({:.0} MB uploaded); WAL journals hold {:.0} MB at the end of the paced phase (most {:.0} MB)",
                tier.objects_per_gib, tier.uploaded_mb, tier.wal_bytes_end_mb, tier.wal_bytes_max_mb
            )?;
            writeln!(
                f,
                "  catch-up read from the object store: {:.1} MB/s ({:.0} MB); newest records from the hot cache: {:.1} MB/s ({:.0} MB); ratio {:.2}",
                tier.catch_up_mb_per_second,
                tier.catch_up_mb,
                tier.hot_read_mb_per_second,
                tier.hot_read_mb,
                tier.catch_up_mb_per_second / tier.hot_read_mb_per_second
            )?;
        }
        writeln!(
            f,
            "  disk efficiency 3 x produce MB/s / floor MB/s = {:.2}; paced publish p99 / floor fdatasync p99 = {:.2}",
            self.disk_efficiency, self.paced_p99_over_floor_fdatasync_p99
        )
    }
}

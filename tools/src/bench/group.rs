//! `keel-bench group`: offset commit latency on a three-zone local cluster
//! (or `--bootstrap`): one member of an empty group commits an offset of one
//! partition after another, each commit waiting for the previous one's
//! answer, as a consumer committing synchronously after each batch does.
//! A commit is answered once its record in `__consumer_offsets` is durable
//! in two zones.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::{GroupId, OffsetCommitRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

use super::{micros_histogram, LatencySummary};
use crate::kafka::{self, Connection};

#[derive(Debug, clap::Args)]
pub struct GroupBenchArgs {
    /// A running cluster's Kafka bootstrap address; without it the benchmark
    /// starts a local one.
    #[arg(long)]
    pub bootstrap: Option<String>,
    /// Commits to time.
    #[arg(long, default_value_t = 2000)]
    pub commits: u32,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct GroupBenchReport {
    pub commits_per_second: f64,
    pub commit_latency: LatencySummary,
}

impl std::fmt::Display for GroupBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "offset commits, one at a time: {:.0}/s", self.commits_per_second)?;
        write!(f, "commit latency (request to durable answer): {}", self.commit_latency)
    }
}

const PARTITIONS: i32 = 12;

pub async fn run(args: GroupBenchArgs) -> anyhow::Result<GroupBenchReport> {
    anyhow::ensure!(args.commits > 0, "--commits must be positive");
    let dir = tempfile::Builder::new().prefix("keel-bench-group").tempdir()?;
    let (bootstrap, cluster) = super::broker::given_or_local(&args.bootstrap, dir.path()).await?;
    let result = measure(&args, &bootstrap).await;
    if let Some(mut cluster) = cluster {
        cluster.stop_all(Duration::from_secs(5));
    }
    result
}

async fn measure(args: &GroupBenchArgs, bootstrap: &str) -> anyhow::Result<GroupBenchReport> {
    let first = Connection::connect(bootstrap.split(',').next().unwrap_or(bootstrap)).await?;
    // A topic of this run's own, so a running cluster can be measured again.
    let topic = format!("bench-commits-{}", std::process::id());
    kafka::create_topic(&first, &topic, PARTITIONS).await?;
    let layout = kafka::ready_layout(bootstrap, &topic, Duration::from_secs(60)).await?;
    // Something to commit up to in every partition.
    for (partition, leader) in layout.leaders.iter().enumerate() {
        let connection = Connection::connect(&layout.brokers[leader]).await?;
        let values: Vec<Bytes> = (0..100).map(|i| Bytes::from(format!("r{i}"))).collect();
        let batch = kafka::batch(&values, 1_000, None)?;
        let request = kafka::produce_request(&topic, partition as i32, -1, batch);
        let answer = connection.send(kafka::PRODUCE_VERSION, &request).await?;
        anyhow::ensure!(kafka::produce_result(&answer)?.0 == 0, "produce to partition {partition} failed");
    }
    let group = format!("bench-{}", std::process::id());
    let (_, addr) = kafka::find_coordinator(&first, &group, Duration::from_secs(60)).await?;
    let coordinator = Connection::connect(&addr).await?;
    let mut histogram = micros_histogram();
    let started = Instant::now();
    for i in 0..args.commits {
        let partition = (i % PARTITIONS as u32) as i32;
        let offset = i64::from(1 + (i / PARTITIONS as u32) % 100);
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.clone())))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.clone())))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(partition)
                    .with_committed_offset(offset)])]);
        let sent = Instant::now();
        let answer = coordinator.send(8, &request).await?;
        histogram.record(sent.elapsed().as_micros().max(1) as u64)?;
        let error = answer.topics.first().and_then(|t| t.partitions.first()).map_or(-1, |p| p.error_code);
        anyhow::ensure!(error == 0, "commit {i} answered error {error}");
    }
    Ok(GroupBenchReport {
        commits_per_second: f64::from(args.commits) / started.elapsed().as_secs_f64(),
        commit_latency: LatencySummary::from_micros(&histogram),
    })
}

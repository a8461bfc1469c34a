//! `keel-bench txn`: what idempotence and transactions cost, on a
//! three-zone local cluster (or `--bootstrap`).
//!
//! - Produce throughput with idempotence off and on, in alternating phases
//!   of the same run (the machines are shared and noisy: the ratio is the
//!   figure), with the broker benchmark's producers (acks=all, 5 requests in
//!   flight per partition).
//! - Transactions of 1, 10 and 100 partitions, one after another, as a
//!   transactional producer runs them: AddPartitionsToTxn, one record per
//!   partition (one produce request per leader), EndTxn(commit). Reported:
//!   the commit (EndTxn's answer, once the prepared state is durable) and
//!   the whole transaction, which includes waiting for the previous one's
//!   markers (CONCURRENT_TRANSACTIONS until they are written).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, EndTxnRequest, InitProducerIdRequest, ProduceRequest, ProducerId, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

use super::broker::{produce_phase, wait_for_leaders, BrokerBenchArgs, PartitionProducer};
use super::{micros_histogram, LatencySummary};
use crate::kafka::{self, Connection};

#[derive(Debug, clap::Args)]
pub struct TxnBenchArgs {
    /// A running cluster's Kafka bootstrap address; without it the benchmark
    /// starts a local one.
    #[arg(long)]
    pub bootstrap: Option<String>,
    /// Seconds per throughput phase; phases alternate off/on `--rounds` times.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    #[arg(long, default_value_t = 2)]
    pub rounds: u32,
    /// Transactions to time per size (1, 10 and 100 partitions).
    #[arg(long, default_value_t = 200)]
    pub transactions: u32,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct TxnSize {
    pub partitions: usize,
    pub commit_latency: LatencySummary,
    pub transaction_latency: LatencySummary,
}

#[derive(Debug, Serialize)]
pub struct TxnBenchReport {
    pub plain_records_per_second: f64,
    pub idempotent_records_per_second: f64,
    /// Idempotent over plain throughput.
    pub idempotence_ratio: f64,
    pub transactions: Vec<TxnSize>,
}

impl std::fmt::Display for TxnBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "produce, acks=all: idempotence off {:.0} records/s, on {:.0} records/s (on/off = {:.2})",
            self.plain_records_per_second, self.idempotent_records_per_second, self.idempotence_ratio
        )?;
        for size in &self.transactions {
            writeln!(f, "transactions of {:>3} partitions: commit {}", size.partitions, size.commit_latency)?;
            writeln!(f, "                               whole  {}", size.transaction_latency)?;
        }
        Ok(())
    }
}

const THROUGHPUT_PARTITIONS: i32 = 12;
const TXN_PARTITIONS: i32 = 100;

pub async fn run(args: TxnBenchArgs) -> anyhow::Result<TxnBenchReport> {
    anyhow::ensure!(args.transactions > 0 && args.rounds > 0, "--transactions and --rounds must be positive");
    let dir = tempfile::Builder::new().prefix("keel-bench-txn").tempdir()?;
    let (bootstrap, cluster) = super::broker::given_or_local(&args.bootstrap, dir.path()).await?;
    let result = measure(&args, &bootstrap).await;
    if let Some(mut cluster) = cluster {
        cluster.stop_all(Duration::from_secs(5));
    }
    result
}

async fn measure(args: &TxnBenchArgs, bootstrap: &str) -> anyhow::Result<TxnBenchReport> {
    let first = Connection::connect(bootstrap.split(',').next().unwrap_or(bootstrap)).await?;
    let run_id = rand::random::<u32>();
    let (plain, idempotent) = throughput(args, &first, run_id).await?;
    let topic = format!("bench-txn-{run_id}");
    kafka::create_topic(&first, &topic, TXN_PARTITIONS).await?;
    let layout = wait_for_leaders(&first, &topic).await?;
    let mut connections = HashMap::new();
    for (broker, addr) in &layout.brokers {
        connections.insert(*broker, Connection::connect(addr).await?);
    }
    let id = format!("bench-txn-{run_id}");
    let (_, address) = kafka::find_transaction_coordinator(&first, &id, Duration::from_secs(60)).await?;
    let coordinator = Connection::connect(&address).await?;
    let (producer_id, epoch) = init(&coordinator, &id).await?;
    let mut sequences = vec![0i32; TXN_PARTITIONS as usize];
    let mut transactions = Vec::new();
    for size in [1usize, 10, 100] {
        eprintln!("{} transactions of {size} partitions", args.transactions);
        let (mut commit, mut whole) = (micros_histogram(), micros_histogram());
        for n in 0..args.transactions as usize {
            let partitions: Vec<i32> = (0..size).map(|i| ((n * size + i) % TXN_PARTITIONS as usize) as i32).collect();
            let started = Instant::now();
            add(&coordinator, &id, (producer_id, epoch), &topic, &partitions).await?;
            let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
            for &p in &partitions {
                by_leader.entry(layout.leaders[p as usize]).or_default().push(p);
            }
            let mut answers = Vec::new();
            for (leader, indexes) in by_leader {
                let mut data = Vec::new();
                for p in indexes {
                    let sequence = &mut sequences[p as usize];
                    let batch =
                        kafka::transactional_batch(&[Bytes::from_static(b"t")], 0, (producer_id, epoch, *sequence))?;
                    *sequence += 1;
                    data.push(PartitionProduceData::default().with_index(p).with_records(Some(batch)));
                }
                let request = ProduceRequest::default()
                    .with_transactional_id(Some(TransactionalId(text(&id))))
                    .with_acks(-1)
                    .with_timeout_ms(30_000)
                    .with_topic_data(vec![TopicProduceData::default()
                        .with_name(TopicName(text(&topic)))
                        .with_partition_data(data)]);
                answers.push(connections[&leader].submit(kafka::PRODUCE_VERSION, &request).await?);
            }
            for answer in answers {
                for partition in answer.wait().await?.responses.iter().flat_map(|t| &t.partition_responses) {
                    anyhow::ensure!(
                        partition.error_code == 0,
                        "transactional produce answered {}",
                        partition.error_code
                    );
                }
            }
            let committing = Instant::now();
            let request = EndTxnRequest::default()
                .with_transactional_id(TransactionalId(text(&id)))
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(epoch)
                .with_committed(true);
            let error = coordinator.send(3, &request).await?.error_code;
            anyhow::ensure!(error == 0, "EndTxn answered {error}");
            commit.record(committing.elapsed().as_micros().max(1) as u64)?;
            whole.record(started.elapsed().as_micros().max(1) as u64)?;
        }
        transactions.push(TxnSize {
            partitions: size,
            commit_latency: LatencySummary::from_micros(&commit),
            transaction_latency: LatencySummary::from_micros(&whole),
        });
    }
    Ok(TxnBenchReport {
        plain_records_per_second: plain,
        idempotent_records_per_second: idempotent,
        idempotence_ratio: idempotent / plain,
        transactions,
    })
}

/// Alternating produce phases with idempotence off and on: the mean
/// records/s of each.
async fn throughput(args: &TxnBenchArgs, first: &Connection, run_id: u32) -> anyhow::Result<(f64, f64)> {
    let topic = format!("bench-idempotence-{run_id}");
    kafka::create_topic(first, &topic, THROUGHPUT_PARTITIONS).await?;
    let layout = wait_for_leaders(first, &topic).await?;
    let mut connections = HashMap::new();
    for (broker, addr) in &layout.brokers {
        connections.insert(*broker, std::sync::Arc::new(Connection::connect(addr).await?));
    }
    let phase = BrokerBenchArgs {
        bootstrap: None,
        record_bytes: 1024,
        batch_records: 16,
        partitions: THROUGHPUT_PARTITIONS,
        in_flight: 5,
        seconds: args.seconds,
        rate: None,
        acks: -1,
        json: false,
    };
    let (mut plain, mut idempotent) = (0.0, 0.0);
    let mut producers: Vec<PartitionProducer> = Vec::new();
    for (partition, leader) in layout.leaders.iter().enumerate() {
        let connection = connections[leader].clone();
        let (id, epoch) = kafka::init_producer_id(&connection).await?;
        producers.push(PartitionProducer { connection, partition: partition as i32, id, epoch, sequence: 0 });
    }
    for round in 0..args.rounds {
        for on in [false, true] {
            eprintln!("round {}: idempotence {} for {} s", round + 1, if on { "on" } else { "off" }, args.seconds);
            // The same producers; off hides their ids, and their sequences
            // are put back to where the last "on" phase left them.
            let saved: Vec<(i64, i32)> = producers.iter().map(|p| (p.id, p.sequence)).collect();
            if !on {
                producers.iter_mut().for_each(|p| p.id = -1);
            }
            let (run, mut back) = produce_phase(&phase, &topic, producers, None).await?;
            anyhow::ensure!(run.errors == 0, "{} produce errors", run.errors);
            back.sort_by_key(|p| p.partition);
            for (producer, (id, sequence)) in back.iter_mut().zip(saved) {
                producer.id = id;
                if !on {
                    producer.sequence = sequence;
                }
            }
            producers = back;
            *(if on { &mut idempotent } else { &mut plain }) += run.records_per_second / f64::from(args.rounds);
        }
    }
    Ok((plain, idempotent))
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_owned())
}

async fn init(coordinator: &Connection, id: &str) -> anyhow::Result<(i64, i16)> {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(text(id))))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = coordinator.send(4, &request).await?;
        if answer.error_code == 0 {
            return Ok((answer.producer_id.0, answer.producer_epoch));
        }
        anyhow::ensure!(Instant::now() < deadline, "InitProducerId answered {}", answer.error_code);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// AddPartitionsToTxn, again while the previous transaction's markers are
/// being written (CONCURRENT_TRANSACTIONS), as clients do.
async fn add(
    coordinator: &Connection,
    id: &str,
    producer: (i64, i16),
    topic: &str,
    partitions: &[i32],
) -> anyhow::Result<()> {
    let request = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(text(id)))
        .with_v3_and_below_producer_id(ProducerId(producer.0))
        .with_v3_and_below_producer_epoch(producer.1)
        .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
            .with_name(TopicName(text(topic)))
            .with_partitions(partitions.to_vec())]);
    loop {
        let answer = coordinator.send(3, &request).await?;
        let errors: Vec<i16> = answer
            .results_by_topic_v3_and_below
            .iter()
            .flat_map(|t| &t.results_by_partition)
            .map(|p| p.partition_error_code)
            .filter(|code| *code != 0)
            .collect();
        match errors.first() {
            None => return Ok(()),
            Some(&code) if code == ResponseError::ConcurrentTransactions.code() => {
                tokio::time::sleep(Duration::from_micros(500)).await
            }
            Some(code) => anyhow::bail!("AddPartitionsToTxn answered {code}"),
        }
    }
}

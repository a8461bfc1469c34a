//! Transactions (issue 8, DESIGN §6) on 3 brokers: real confluent-kafka
//! producers and consumers (`clients/transactions.py`) for what applications
//! do, and the raw Kafka codec for requests a real client would never send.
//!
//! - commit visible, abort invisible to `read_committed` and visible to
//!   `read_uncommitted`; a zombie with the same `transactional.id` fenced; a
//!   transaction left open past its timeout aborted, and the last stable
//!   offset moving on;
//! - bad transactional requests answered with Kafka's error codes, storing
//!   nothing;
//! - a consume-transform-produce pipeline (`sendOffsetsToTransaction`) that
//!   writes exactly one output record per input record while the broker of its
//!   transaction coordinator and partition leaders are killed with SIGKILL.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, DescribeProducersRequest, EndTxnRequest, InitProducerIdRequest, ListTransactionsRequest,
    ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use keel_tests::TestCluster;
use keel_tools::kafka::{self, Connection};
use serde_json::Value;
use tracing::info;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/transactions.py")
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_owned())
}

/// Runs `transactions.py` to its end and returns its JSON line. If it
/// fails or outlives `timeout`, the panic shows what it printed, progress
/// on stderr included.
async fn run(args: &[&str], timeout: Duration) -> Value {
    use tokio::io::AsyncReadExt;
    let mut child = tokio::process::Command::new(keel_tools::launcher::python())
        .arg(script())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start transactions.py");
    // Both pipes are read while the script runs, so a full pipe never stalls it.
    let read_all = |mut pipe: Box<dyn tokio::io::AsyncRead + Send + Unpin>| {
        let mut reader = tokio::task::JoinSet::new();
        reader.spawn(async move {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text).await;
            text
        });
        async move { reader.join_next().await.expect("a reader").unwrap() }
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("piped")));
    let stderr = read_all(Box::new(child.stderr.take().expect("piped")));
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => Some(status.unwrap()),
        Err(_) => {
            let _ = child.kill().await;
            None
        }
    };
    let (stdout, stderr) = (stdout.await, stderr.await);
    match status {
        None => panic!("transactions.py {args:?} did not finish within {timeout:?}: {stdout}{stderr}"),
        Some(status) => assert!(status.success(), "transactions.py {args:?} failed: {stdout}{stderr}"),
    }
    serde_json::from_str(stdout.trim()).unwrap_or_else(|error| panic!("transactions.py printed {stdout:?}: {error}"))
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().expect("an array").iter().map(|v| v.as_str().expect("a string").to_owned()).collect()
}

async fn create_topics(test: &TestCluster, topics: &[(&str, i32)]) {
    let client = test.cluster.client().unwrap();
    for (name, partitions) in topics {
        let create = keel_controller_client::pb::CreateTopicRequest {
            name: (*name).into(),
            partitions: *partitions,
            ..Default::default()
        };
        client.create_topic(create).await.unwrap();
        kafka::ready_layout(&test.cluster.bootstrap(), name, Duration::from_secs(60)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn commits_are_visible_aborts_are_not_zombies_are_fenced_and_timeouts_abort() {
    let test = TestCluster::start_full().await.unwrap();
    create_topics(&test, &[("ledger", 3), ("zombies", 3), ("slow", 3)]).await;
    let bootstrap = test.cluster.bootstrap();
    let minute = Duration::from_secs(120);

    let seen = run(&["visibility", "--bootstrap", &bootstrap, "--topic", "ledger"], minute).await;
    let committed: BTreeSet<String> = strings(&seen["read_committed"]).into_iter().collect();
    let uncommitted: BTreeSet<String> = strings(&seen["read_uncommitted"]).into_iter().collect();
    let expected: BTreeSet<String> = (0..50).flat_map(|i| [format!("commit1-{i}"), format!("commit2-{i}")]).collect();
    assert_eq!(committed, expected, "read_committed sees both committed transactions and nothing aborted");
    assert_eq!(strings(&seen["read_committed"]).len(), 100, "each committed record once");
    let aborted: BTreeSet<String> = (0..50).map(|i| format!("abort-{i}")).collect();
    assert_eq!(uncommitted, expected.union(&aborted).cloned().collect(), "read_uncommitted sees the aborted ones too");

    let zombie = run(&["zombie", "--bootstrap", &bootstrap, "--topic", "zombies"], minute).await;
    assert_eq!(zombie["zombie_commit"], "_FENCED", "the old instance is fenced: {zombie}");
    assert_eq!(zombie["fatal"], true, "a fenced producer cannot go on");
    let committed: BTreeSet<String> = strings(&zombie["read_committed"]).into_iter().collect();
    assert_eq!(committed, (0..20).map(|i| format!("successor-{i}")).collect(), "only the new instance's records");

    let timed_out = run(&["timeout", "--bootstrap", &bootstrap, "--topic", "slow", "--wait", "6"], minute).await;
    assert_eq!(
        strings(&timed_out["before_timeout"]),
        Vec::<String>::new(),
        "the open transaction holds back read_committed readers, also from the records after it"
    );
    let after: BTreeSet<String> = strings(&timed_out["after_timeout"]).into_iter().collect();
    assert_eq!(after, (0..3).map(|i| format!("after-{i}")).collect(), "aborted at its timeout; the rest is stable");
    assert_eq!(timed_out["late_commit"], "_FENCED", "the timed-out producer was fenced by the abort");

    // The admin views: ListTransactions on every broker, DescribeProducers on a leader.
    let layout = kafka::ready_layout(&bootstrap, "ledger", Duration::from_secs(30)).await.unwrap();
    let mut states = BTreeMap::new();
    for addr in layout.brokers.values() {
        let connection = Connection::connect(addr).await.unwrap();
        let listed = connection.send(1, &ListTransactionsRequest::default().with_duration_filter(-1)).await.unwrap();
        assert_eq!(listed.error_code, 0);
        for state in listed.transaction_states {
            states.insert(state.transactional_id.0.to_string(), state.transaction_state.to_string());
        }
    }
    assert_eq!(states.get("visibility").map(String::as_str), Some("CompleteCommit"), "{states:?}");
    assert_eq!(states.get("zombie").map(String::as_str), Some("CompleteCommit"), "{states:?}");
    assert_eq!(states.get("forgetful").map(String::as_str), Some("CompleteAbort"), "{states:?}");
    let leader = Connection::connect(&layout.brokers[&layout.leaders[0]]).await.unwrap();
    let describe = DescribeProducersRequest::default().with_topics(vec![
        kafka_protocol::messages::describe_producers_request::TopicRequest::default()
            .with_name(TopicName(text("ledger")))
            .with_partition_indexes(vec![0]),
    ]);
    let producers = leader.send(0, &describe).await.unwrap();
    let partition = &producers.topics[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    assert_eq!(partition.active_producers.len(), 1, "the one transactional producer wrote partition 0");
    assert_eq!(partition.active_producers[0].current_txn_start_offset, -1, "no transaction is open");

    let admins: Vec<_> = test.cluster.brokers.iter().map(|b| b.spec.admin).collect();
    let outcomes = keel_tests::metric_sum(&admins, "keel_broker_transactions_total").await;
    assert!(outcomes >= 6.0, "commits, aborts and the timeout are counted: {outcomes}");
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

/// The answer of a one-transaction AddPartitionsToTxn v3, by (topic, partition).
async fn add_partitions(
    coordinator: &Connection,
    id: &str,
    producer: (i64, i16),
    partitions: &[(&str, i32)],
) -> BTreeMap<(String, i32), i16> {
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, index) in partitions {
        topics.entry(topic).or_default().push(*index);
    }
    let request = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(text(id)))
        .with_v3_and_below_producer_id(ProducerId(producer.0))
        .with_v3_and_below_producer_epoch(producer.1)
        .with_v3_and_below_topics(
            topics
                .into_iter()
                .map(|(t, p)| AddPartitionsToTxnTopic::default().with_name(TopicName(text(t))).with_partitions(p))
                .collect(),
        );
    let answer = coordinator.send(3, &request).await.unwrap();
    answer
        .results_by_topic_v3_and_below
        .iter()
        .flat_map(|t| {
            t.results_by_partition.iter().map(|p| ((t.name.0.to_string(), p.partition_index), p.partition_error_code))
        })
        .collect()
}

async fn init(coordinator: &Connection, id: &str, timeout_ms: i32) -> (i16, i64, i16) {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(text(id))))
        .with_transaction_timeout_ms(timeout_ms)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    // As a client does: wait while the coordinator loads its partition.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answer = coordinator.send(4, &request).await.unwrap();
        let loading = answer.error_code == ResponseError::CoordinatorLoadInProgress.code();
        if !loading || tokio::time::Instant::now() > deadline {
            return (answer.error_code, answer.producer_id.0, answer.producer_epoch);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn end(coordinator: &Connection, id: &str, producer: (i64, i16), commit: bool, version: i16) -> i16 {
    let request = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(text(id)))
        .with_producer_id(ProducerId(producer.0))
        .with_producer_epoch(producer.1)
        .with_committed(commit);
    coordinator.send(version, &request).await.unwrap().error_code
}

/// Produces one transactional batch to `partition` of "rules" on its leader:
/// (error code, high watermark after).
async fn produce(
    layout: &kafka::TopicLayout,
    id: Option<&str>,
    producer: (i64, i16, i32),
    partition: i32,
) -> (i16, i64) {
    let leader = Connection::connect(&layout.brokers[&layout.leaders[partition as usize]]).await.unwrap();
    let batch = kafka::transactional_batch(&[Bytes::from_static(b"x")], 0, producer).unwrap();
    let request = kafka::produce_request("rules", partition, -1, batch)
        .with_transactional_id(id.map(|id| TransactionalId(text(id))));
    let (error, _) = kafka::produce_result(&leader.send(kafka::PRODUCE_VERSION, &request).await.unwrap()).unwrap();
    let fetch = kafka::fetch_request("rules", partition, 0, 0, 1 << 20);
    let (_, high_watermark, _) =
        kafka::fetch_result(&leader.send(kafka::FETCH_VERSION, &fetch).await.unwrap()).unwrap();
    (error, high_watermark)
}

#[tokio::test(flavor = "multi_thread")]
async fn transactional_requests_that_break_the_rules_get_kafkas_errors() {
    let test = TestCluster::start_full().await.unwrap();
    create_topics(&test, &[("rules", 2)]).await;
    let bootstrap = test.cluster.bootstrap();
    let layout = kafka::ready_layout(&bootstrap, "rules", Duration::from_secs(30)).await.unwrap();
    let any = Connection::connect(&layout.brokers[&layout.leaders[0]]).await.unwrap();
    let (_, address) = kafka::find_transaction_coordinator(&any, "raw", Duration::from_secs(30)).await.unwrap();
    let coordinator = Connection::connect(&address).await.unwrap();
    let code = |error: ResponseError| error.code();

    assert_eq!(init(&coordinator, "raw", 0).await.0, code(ResponseError::InvalidTransactionTimeout));
    assert_eq!(init(&coordinator, "raw", 16 * 60_000).await.0, code(ResponseError::InvalidTransactionTimeout));
    let (error, producer_id, epoch) = init(&coordinator, "raw", 60_000).await;
    assert_eq!((error, epoch), (0, 0));
    assert_eq!(
        end(&coordinator, "raw", (producer_id, 0), true, 3).await,
        code(ResponseError::InvalidTxnState),
        "nothing to end"
    );

    // A transactional id never initialised; data before its partition is added.
    assert_eq!(produce(&layout, Some("never"), (424_242, 0, 0), 0).await, (code(ResponseError::InvalidTxnState), 0));
    assert_eq!(produce(&layout, Some("raw"), (producer_id, 0, 0), 0).await, (code(ResponseError::InvalidTxnState), 0));

    let added = add_partitions(&coordinator, "raw", (producer_id, 0), &[("rules", 0), ("nowhere", 0)]).await;
    assert_eq!(added[&("rules".to_owned(), 0)], code(ResponseError::OperationNotAttempted));
    assert_eq!(added[&("nowhere".to_owned(), 0)], code(ResponseError::UnknownTopicOrPartition));
    let added = add_partitions(&coordinator, "raw", (producer_id, 0), &[("rules", 0)]).await;
    assert_eq!(added[&("rules".to_owned(), 0)], 0);
    let fenced = add_partitions(&coordinator, "raw", (producer_id, 1), &[("rules", 0)]).await;
    assert_eq!(
        fenced[&("rules".to_owned(), 0)],
        code(ResponseError::ProducerFenced),
        "a future epoch is not this producer"
    );

    assert_eq!(produce(&layout, Some("raw"), (producer_id, 0, 0), 0).await, (0, 1), "added: accepted");
    assert_eq!(
        produce(&layout, Some("raw"), (producer_id, 0, 1), 1).await,
        (code(ResponseError::InvalidTxnState), 0),
        "partition 1 is not in the transaction"
    );

    // A new incarnation: the open transaction is aborted first (the client is
    // told to retry), then the epoch is bumped.
    let (error, _, _) = init(&coordinator, "raw", 60_000).await;
    assert_eq!(error, code(ResponseError::ConcurrentTransactions));
    let bumped = keel_tests::eventually(Duration::from_secs(20), "InitProducerId succeeds after the abort", || {
        let coordinator = &coordinator;
        async move {
            let (error, id, epoch) = init(coordinator, "raw", 60_000).await;
            (error == 0).then_some((id, epoch))
        }
    })
    .await;
    assert_eq!(bumped, (producer_id, 2), "aborted at epoch 1 (fencing epoch 0), then handed out at 2");
    assert_eq!(end(&coordinator, "raw", (producer_id, 0), true, 3).await, code(ResponseError::ProducerFenced));
    assert_eq!(end(&coordinator, "raw", (producer_id, 0), true, 1).await, code(ResponseError::InvalidProducerEpoch));
    assert_eq!(
        produce(&layout, Some("raw"), (producer_id, 0, 1), 0).await.0,
        code(ResponseError::InvalidProducerEpoch),
        "the fenced epoch cannot write either"
    );

    // The aborted record stays, for read_uncommitted readers only.
    let leader = Connection::connect(&layout.brokers[&layout.leaders[0]]).await.unwrap();
    let fetch = kafka::fetch_request("rules", 0, 0, 0, 1 << 20).with_isolation_level(1);
    let answer = leader.send(kafka::FETCH_VERSION, &fetch).await.unwrap();
    let partition = &answer.responses[0].partitions[0];
    assert_eq!((partition.high_watermark, partition.last_stable_offset), (2, 2), "the record and the abort marker");
    let aborted = partition.aborted_transactions.as_ref().expect("read_committed gets the aborted transactions");
    assert_eq!(aborted.len(), 1);
    assert_eq!((aborted[0].producer_id.0, aborted[0].first_offset), (producer_id, 0));

    // A marker from an older coordinator than the one that wrote the abort
    // (one cut off from the controller, say) is refused, and stores nothing.
    use kafka_protocol::messages::write_txn_markers_request::{WritableTxnMarker, WritableTxnMarkerTopic};
    let stale = WritableTxnMarker::default()
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(1)
        .with_transaction_result(true)
        .with_coordinator_epoch(-5)
        .with_topics(vec![WritableTxnMarkerTopic::default()
            .with_name(TopicName(text("rules")))
            .with_partition_indexes(vec![0])]);
    let request = kafka_protocol::messages::WriteTxnMarkersRequest::default().with_markers(vec![stale]);
    let answer = leader.send(1, &request).await.unwrap();
    let code = answer.markers[0].topics[0].partitions[0].error_code;
    assert_eq!(code, ResponseError::TransactionCoordinatorFenced.code());
    let answer = leader.send(kafka::FETCH_VERSION, &fetch).await.unwrap();
    assert_eq!(answer.responses[0].partitions[0].high_watermark, 2, "nothing was appended");
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

/// Kills: the broker of the pipeline's transaction coordinator, then the
/// leader of an output partition, in turn.
const KILLS: usize = 10;
const INPUT: usize = 6000;

#[tokio::test(flavor = "multi_thread")]
async fn an_exactly_once_pipeline_survives_kills_of_its_coordinator_and_partition_leaders() {
    let mut test = TestCluster::start_full().await.unwrap();
    create_topics(&test, &[("input", 6), ("output", 6)]).await;
    let bootstrap = test.cluster.bootstrap();
    let load = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/group_produce.py");
    let producer = tokio::process::Command::new(keel_tools::launcher::python())
        .arg(load)
        .args(["--bootstrap", &bootstrap, "--topic", "input", "--prefix", "v", "--count", &INPUT.to_string()])
        .args(["--rate", "100"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start group_produce.py");
    let mut pipeline = tokio::task::JoinSet::new();
    {
        let bootstrap = bootstrap.clone();
        pipeline.spawn(async move {
            let count = INPUT.to_string();
            let args = ["pipeline", "--bootstrap", &bootstrap, "--input", "input", "--output", "output"];
            let args =
                [&args[..], &["--group", "eos", "--txn-id", "eos-1", "--count", &count, "--deadline", "200"]].concat();
            run(&args, Duration::from_secs(220)).await
        });
    }

    for round in 0..KILLS {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let layout = kafka::ready_layout(&bootstrap, "output", Duration::from_secs(60)).await.unwrap();
        let victim = if round % 2 == 0 {
            let any = Connection::connect(&layout.brokers[&layout.leaders[0]]).await.unwrap();
            kafka::find_transaction_coordinator(&any, "eos-1", Duration::from_secs(60)).await.unwrap().0
        } else {
            layout.leaders[round % 6]
        };
        let index = test.cluster.brokers.iter().position(|b| b.spec.id as i32 == victim).expect("a known broker");
        let what = if round % 2 == 0 { "the transaction coordinator" } else { "an output partition's leader" };
        info!(round, victim, "kill -9 {what}, then start it again");
        test.restart_broker(index, "output").await.unwrap();
    }

    let output = tokio::time::timeout(Duration::from_secs(120), producer.wait_with_output())
        .await
        .expect("the input producer finished")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the input producer failed: {stdout}");
    let produced: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(produced["failed"], 0, "every input record acknowledged");
    let inputs: BTreeSet<String> =
        produced["acked"].as_array().unwrap().iter().map(|r| r[2].as_str().unwrap().to_owned()).collect();
    assert_eq!(inputs.len(), INPUT);

    let result = pipeline.join_next().await.expect("the pipeline").unwrap();
    eprintln!(
        "pipeline: {} input records processed through {KILLS} broker kills, {} transactions aborted and retried; errors {}",
        result["processed"], result["aborts"], result["errors"]
    );
    let read = run(&["read", "--bootstrap", &bootstrap, "--topic", "output"], Duration::from_secs(120)).await;
    let outputs = strings(&read["values"]);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for value in &outputs {
        *counts.entry(value.as_str()).or_default() += 1;
    }
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(duplicated.is_empty(), "no input produced two committed outputs: {duplicated:?}");
    let expected: BTreeSet<String> = inputs.iter().map(|v| format!("out-{v}")).collect();
    let found: BTreeSet<String> = outputs.iter().cloned().collect();
    let missing: Vec<_> = expected.difference(&found).take(5).collect();
    let extra: Vec<_> = found.difference(&expected).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "exactly one output per input: missing {missing:?}, extra {extra:?}"
    );
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

//! A broker keeps nothing on disk: killed with -9 and started again, it
//! registers anew and leads nothing at first; the WAL log it was writing is
//! an orphan, recovered, sealed and uploaded (DESIGN §5), and then its
//! partitions are led again from where that log ended, never reusing an
//! offset.

use std::time::Duration;

use keel_controller_client::WalLogState;
use keel_tests::TestCluster;
use keel_tools::kafka::{self, Connection};

use crate::broker_kcat::{consume_all, kcat};

fn records(from: usize, to: usize) -> String {
    (from..to).map(|i| format!("event-{i}\n")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_killed_and_restarted_serves_its_records_and_never_reuses_an_offset() {
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    test.start_wal_nodes(3).await.unwrap();
    test.start_brokers(1, &[]).await.unwrap();
    let bootstrap = test.cluster.bootstrap();
    let client = test.cluster.client().unwrap();
    let create =
        keel_controller_client::pb::CreateTopicRequest { name: "events".into(), partitions: 3, ..Default::default() };
    client.create_topic(create).await.unwrap();
    kcat(&["-b", &bootstrap, "-P", "-t", "events", "-X", "acks=all"], &records(0, 600)).await;

    test.restart_broker(0, "events").await.unwrap();

    let image = client.read_image().await.unwrap();
    let sealed: Vec<_> =
        image.wal_logs.values().filter(|log| matches!(log.state, WalLogState::Sealed { .. })).collect();
    assert_eq!(sealed.len(), 1, "the killed broker's log was recovered and sealed: {:?}", image.wal_logs);
    assert_eq!(
        sealed[0].trim_seq,
        match &sealed[0].state {
            WalLogState::Sealed { sealed_seq, .. } => *sealed_seq,
            _ => unreachable!(),
        },
        "and uploaded before its partitions were led again"
    );
    let before = consume_all(&bootstrap, "events").await;
    assert_eq!(before.len(), 600, "every acknowledged record survived the restart");

    kcat(&["-b", &bootstrap, "-P", "-t", "events", "-X", "acks=all"], &records(600, 900)).await;
    let after = consume_all(&bootstrap, "events").await;
    assert_eq!(after.len(), 900);
    for partition in 0..3 {
        let offsets: Vec<i64> = after.iter().filter(|(p, _, _)| *p == partition).map(|(_, o, _)| *o).collect();
        let dense: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(offsets, dense, "partition {partition}: offsets continue where the old log ended");
    }
    for record in &before {
        assert!(after.contains(record), "{record:?} is still at the same offset");
    }
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

/// DESIGN §5: producer state after a restart is rebuilt from the recovered
/// log, so a producer retrying batches the killed run had stored gets their
/// original offsets back instead of a second copy, and a gap is still refused.
#[tokio::test(flavor = "multi_thread")]
async fn an_idempotent_retry_across_a_broker_restart_is_answered_with_the_original_offset() {
    idempotent_retries_across_a_restart(false).await;
}

/// The same once the batches were uploaded and trimmed from the WAL: the
/// producer state comes from the snapshot uploaded with them.
#[tokio::test(flavor = "multi_thread")]
async fn an_idempotent_retry_of_uploaded_batches_is_answered_from_the_producer_snapshot() {
    idempotent_retries_across_a_restart(true).await;
}

async fn idempotent_retries_across_a_restart(uploaded: bool) {
    use bytes::Bytes;

    let mut test = TestCluster::start(3, &[]).await.unwrap();
    test.start_wal_nodes(3).await.unwrap();
    let interval = if uploaded { "100ms" } else { "1h" };
    test.start_brokers(1, &["--upload-interval", interval]).await.unwrap();
    let bootstrap = test.cluster.bootstrap();
    let connection = Connection::connect(&bootstrap).await.unwrap();
    kafka::create_topic(&connection, "ledger", 1).await.unwrap();
    let (producer_id, epoch) = kafka::init_producer_id(&connection).await.unwrap();
    let values = |from: usize, to: usize| (from..to).map(|i| Bytes::from(format!("entry-{i}"))).collect::<Vec<_>>();
    let first = kafka::batch(&values(0, 3), 1_000, Some((producer_id, epoch, 0))).unwrap();
    let second = kafka::batch(&values(3, 5), 1_001, Some((producer_id, epoch, 3))).unwrap();
    let produce = |batch: &Bytes| kafka::produce_request("ledger", 0, -1, batch.clone());
    for (batch, expected) in [(&first, 0), (&second, 3)] {
        let answer = connection.send(kafka::PRODUCE_VERSION, &produce(batch)).await.unwrap();
        assert_eq!(kafka::produce_result(&answer).unwrap(), (0, expected));
    }
    drop(connection);
    if uploaded {
        let client = test.cluster.client().unwrap();
        keel_tests::eventually(Duration::from_secs(30), "the batches uploaded and trimmed", || async {
            let image = client.read_image().await.ok()?;
            let done = image.topics["ledger"].partitions[0].uploaded_end.0 == 5
                && image.wal_logs.values().all(|log| log.trim_seq.0 >= 2);
            done.then_some(())
        })
        .await;
    }

    test.restart_broker(0, "ledger").await.unwrap();

    let connection = Connection::connect(&bootstrap).await.unwrap();
    for (batch, expected) in [(&second, 3), (&first, 0)] {
        let answer = connection.send(kafka::PRODUCE_VERSION, &produce(batch)).await.unwrap();
        assert_eq!(kafka::produce_result(&answer).unwrap(), (0, expected), "a retried batch keeps its offset");
    }
    let next = kafka::batch(&values(5, 6), 1_002, Some((producer_id, epoch, 5))).unwrap();
    let answer = connection.send(kafka::PRODUCE_VERSION, &produce(&next)).await.unwrap();
    assert_eq!(kafka::produce_result(&answer).unwrap(), (0, 5), "the next sequence follows the recovered ones");
    let gap = kafka::batch(&values(6, 7), 1_003, Some((producer_id, epoch, 9))).unwrap();
    let answer = connection.send(kafka::PRODUCE_VERSION, &produce(&gap)).await.unwrap();
    // Refused, and in the first seconds after the takeover retriably (a
    // batch before it may have been refused during the takeover; later a gap
    // is OUT_OF_ORDER_SEQUENCE_NUMBER: `partition::GAP_GRACE_MS`).
    let retriable = kafka_protocol::error::ResponseError::NotLeaderOrFollower.code();
    assert_eq!(kafka::produce_result(&answer).unwrap().0, retriable, "a gap is refused");

    // A fetch may stop at the end of one WAL log; read until the high watermark.
    let mut batches = Vec::new();
    let mut next_offset = 0;
    while next_offset < 6 {
        let request = kafka::fetch_request("ledger", 0, next_offset, 100, 1 << 20);
        let answer = connection.send(kafka::FETCH_VERSION, &request).await.unwrap();
        let (error, high_watermark, records) = kafka::fetch_result(&answer).unwrap();
        assert_eq!((error, high_watermark), (0, 6), "three batches, six records, no second copy");
        for (base, count, _) in kafka::split_batches(&records) {
            batches.push((base, count));
            next_offset = base + i64::from(count);
        }
    }
    assert_eq!(batches, vec![(0, 3), (3, 2), (5, 1)]);
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

/// A real idempotent producer (confluent-kafka, default retries) keeps
/// producing while the only broker is killed with SIGKILL and started again:
/// every record is acknowledged once and stored once (the script checks).
#[tokio::test(flavor = "multi_thread")]
async fn an_idempotent_client_producing_through_a_broker_kill_loses_and_duplicates_nothing() {
    use tokio::io::AsyncBufReadExt;

    let mut test = TestCluster::start(3, &[]).await.unwrap();
    test.start_wal_nodes(3).await.unwrap();
    // Uploads (and WAL trims) every 100 ms, so the kill also lands among them.
    test.start_brokers(1, &["--upload-interval", "100ms"]).await.unwrap();
    let bootstrap = test.cluster.bootstrap();
    let client = test.cluster.client().unwrap();
    let create =
        keel_controller_client::pb::CreateTopicRequest { name: "orders".into(), partitions: 4, ..Default::default() };
    client.create_topic(create).await.unwrap();
    let script = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("clients/producer_restart.py");
    let mut child = tokio::process::Command::new(keel_tools::launcher::python())
        .arg(&script)
        .arg(&bootstrap)
        .arg("orders")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut output = Vec::new();
    // Kill the broker once the producer is well under way.
    while let Some(line) = lines.next_line().await.unwrap() {
        output.push(line.clone());
        if line == "progress 1000" {
            break;
        }
    }
    test.cluster.brokers[0].kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    test.cluster.start_broker(0).unwrap();
    test.cluster.wait_for_brokers(Duration::from_secs(60)).await.unwrap();
    let rest = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            output.push(line);
        }
        child.wait_with_output().await.unwrap()
    };
    let finished = tokio::time::timeout(Duration::from_secs(240), rest).await.expect("the producer finished in 240 s");
    let stderr = String::from_utf8_lossy(&finished.stderr);
    assert!(finished.status.success(), "producer_restart.py failed:\n{}\n{stderr}", output.join("\n"));
    assert!(output.last().is_some_and(|line| line.starts_with("ok: 6000 records")), "{}", output.join("\n"));
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

//! Idempotent producers under forced retries (issue 8, DESIGN §6): a
//! confluent-kafka producer (acks=all, enable.idempotence) with a short
//! request timeout (librdkafka's `socket.timeout.ms`) writes while partition leaders are stopped with SIGSTOP
//! for longer than that timeout and then let go with SIGCONT. Its requests
//! time out and are sent again, and the stopped broker then finds both the
//! original and the retries queued: the retries must be recognised
//! (`keel_broker_produce_duplicates_total` moves) and every record stored
//! exactly once, in the order it was acknowledged, with no gap.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use kafka_protocol::records::RecordBatchDecoder;
use keel_tests::TestCluster;
use keel_tools::kafka::{self, Connection};
use tracing::info;

const TOPIC: &str = "payments";
const PARTITIONS: i32 = 6;
const RECORDS: usize = 3000;

#[tokio::test(flavor = "multi_thread")]
async fn retried_idempotent_batches_are_stored_exactly_once_when_a_leader_is_paused() {
    let test = TestCluster::start_full().await.unwrap();
    let create = keel_controller_client::pb::CreateTopicRequest {
        name: TOPIC.into(),
        partitions: PARTITIONS,
        ..Default::default()
    };
    test.cluster.client().unwrap().create_topic(create).await.unwrap();
    let bootstrap = test.cluster.bootstrap();
    kafka::ready_layout(&bootstrap, TOPIC, Duration::from_secs(60)).await.unwrap();

    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/group_produce.py");
    let producer = tokio::process::Command::new(keel_tools::launcher::python())
        .arg(script)
        .args(["--bootstrap", &bootstrap, "--topic", TOPIC, "--prefix", "pay", "--count", &RECORDS.to_string()])
        .args(["--rate", "250", "--config", "socket.timeout.ms=500", "--config", "retry.backoff.ms=50"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start group_produce.py");

    // Pause each broker in turn for 1.2 s: longer than the producer's request
    // timeout, shorter than the broker's session, so it stays the leader.
    for round in 0..3 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let index = round % test.cluster.brokers.len();
        info!(broker = test.cluster.brokers[index].spec.id, "SIGSTOP for 1.2 s");
        test.cluster.brokers[index].pause(true);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        test.cluster.brokers[index].pause(false);
    }

    let output = tokio::time::timeout(Duration::from_secs(120), producer.wait_with_output())
        .await
        .expect("the producer finished within 120 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the producer failed: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).expect("the producer's JSON line");
    assert_eq!(result["failed"], 0, "no delivery failed: {result}");
    let acked = result["acked"].as_array().expect("acked records");
    assert_eq!(acked.len(), RECORDS, "every record acknowledged");

    let admins: Vec<_> = test.cluster.brokers.iter().map(|b| b.spec.admin).collect();
    let duplicates = keel_tests::metric_total(&admins, "keel_broker_produce_duplicates_total").await;
    eprintln!("{duplicates} retried batches recognised as duplicates over 3 pauses");
    assert!(duplicates > 0.0, "the pauses made the producer retry batches the brokers already had");

    let mut expected: BTreeMap<i32, BTreeMap<i64, String>> = BTreeMap::new();
    for record in acked {
        let (partition, offset, value) =
            (record[0].as_i64().unwrap() as i32, record[1].as_i64().unwrap(), record[2].as_str().unwrap().to_owned());
        assert!(expected.entry(partition).or_default().insert(offset, value).is_none(), "one offset acked twice");
    }
    for partition in 0..PARTITIONS {
        let stored = read_partition(&bootstrap, partition).await;
        let wanted = expected.remove(&partition).unwrap_or_default();
        assert_eq!(
            stored.len(),
            wanted.len(),
            "partition {partition} holds each acknowledged record once, nothing else"
        );
        assert_eq!(stored, wanted, "partition {partition} holds every record at its acknowledged offset, without gaps");
        let sequence: Vec<usize> = stored.values().map(|v| v.trim_start_matches("pay-").parse().unwrap()).collect();
        assert!(sequence.windows(2).all(|w| w[0] < w[1]), "partition {partition} keeps the order records were sent");
    }
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

/// Every record of `partition` from offset 0 to its high watermark: offset -> value.
async fn read_partition(bootstrap: &str, partition: i32) -> BTreeMap<i64, String> {
    let layout = kafka::ready_layout(bootstrap, TOPIC, Duration::from_secs(60)).await.unwrap();
    let leader = Connection::connect(&layout.brokers[&layout.leaders[partition as usize]]).await.unwrap();
    let mut stored = BTreeMap::new();
    let mut offset = 0;
    loop {
        let request = kafka::fetch_request(TOPIC, partition, offset, 100, 1 << 20);
        let (error, high_watermark, mut records) =
            kafka::fetch_result(&leader.send(kafka::FETCH_VERSION, &request).await.unwrap()).unwrap();
        assert_eq!(error, 0, "fetch of partition {partition} at {offset}");
        if offset >= high_watermark {
            return stored;
        }
        for set in RecordBatchDecoder::decode_all(&mut records).unwrap() {
            for record in set.records {
                let value = String::from_utf8(record.value.unwrap().to_vec()).unwrap();
                assert!(stored.insert(record.offset, value).is_none(), "offset {} read twice", record.offset);
                offset = offset.max(record.offset + 1);
            }
        }
    }
}

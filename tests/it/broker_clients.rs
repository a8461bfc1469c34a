//! Real Kafka clients against a real three-zone cluster, each driven by a
//! script in `tests/clients/` that says what it checks and exits non-zero on
//! the first mismatch:
//! - `roundtrip.py`: confluent-kafka (librdkafka): admin calls and their
//!   error codes, an idempotent producer, an oversized message, watermarks;
//! - `codecs.py`: confluent-kafka with each codec (none, gzip, snappy, lz4,
//!   zstd), keys, headers and timestamps byte for byte, ListOffsets by time;
//! - `kafka_python_roundtrip.py`: kafka-python (its own protocol code, and
//!   incremental fetch sessions), the same round trip with every codec;
//! - `kafka_python_group.py`: kafka-python consumer groups (its own, older
//!   versions of JoinGroup, SyncGroup, OffsetCommit, OffsetFetch);
//! - `commits_and_operations.py`: confluent-kafka: commits of any offset,
//!   their metadata and leader epoch, a connection's order, the commit on
//!   close, authorized operations (issue 24);
//! - `topic_admin.py`: confluent-kafka: replication factors, manual
//!   assignments and validate_only in CreateTopics and CreatePartitions;
//! - `kafkajs/roundtrip.js`: kafkajs (none, gzip, snappy, lz4);
//! - `kafkajs/group.js`: kafkajs consumer groups.
//!
//! `scripts/setup` installs the clients. `KEEL_CLIENT_RECORDS` raises the
//! record count (the opt-in 100 000 run).

use std::path::PathBuf;
use std::time::Duration;

use keel_tests::TestCluster;

/// Runs `program script BOOTSTRAP` against a fresh cluster and returns its
/// standard output; fails the test with both outputs if it fails.
async fn run_client(program: impl AsRef<std::ffi::OsStr>, script: &str) -> String {
    let test = TestCluster::start_full().await.unwrap();
    let clients = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo")).join("clients");
    let run = tokio::process::Command::new(program)
        .arg(clients.join(script))
        .arg(test.cluster.bootstrap())
        .current_dir(&clients)
        .kill_on_drop(true)
        .output();
    let output =
        tokio::time::timeout(Duration::from_secs(300), run).await.expect("finished in 300 s").expect("the client ran");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
    stdout
}

/// The records each client script writes unless `KEEL_CLIENT_RECORDS` says otherwise.
fn records() -> String {
    std::env::var("KEEL_CLIENT_RECORDS").unwrap_or_else(|_| "20000".into())
}

#[tokio::test(flavor = "multi_thread")]
async fn confluent_kafka_admin_produce_and_consume_round_trip() {
    let stdout = run_client(keel_tools::launcher::python(), "roundtrip.py").await;
    assert!(stdout.contains("ok: 20000 records"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn confluent_kafka_commits_any_offset_in_order_and_sees_its_authorized_operations() {
    let stdout = run_client(keel_tools::launcher::python(), "commits_and_operations.py").await;
    for line in [
        "ok: commits beyond the end and on an empty partition, with metadata and leader epoch",
        "ok: 50 asynchronous commits each seen by the committed() right after it",
        "ok: the commit on close() is in place when close() returns",
        "ok: authorized operations of a topic, the cluster and a group",
    ] {
        assert!(stdout.contains(line), "{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn confluent_kafka_creates_topics_with_replication_factors_assignments_and_validate_only() {
    let stdout = run_client(keel_tools::launcher::python(), "topic_admin.py").await;
    for line in [
        "ok: replication factors 3 and -1 and a manual assignment",
        "ok: bad assignments refused with INVALID_REPLICA_ASSIGNMENT",
        "ok: validate_only checks and creates nothing",
        "ok: CreatePartitions with an assignment, and its refusals",
    ] {
        assert!(stdout.contains(line), "{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn confluent_kafka_round_trips_every_codec_and_finds_records_by_time() {
    let stdout = run_client(keel_tools::launcher::python(), "codecs.py").await;
    assert!(
        stdout.contains(&format!("ok: {} records round-tripped with none, gzip, snappy, lz4, zstd", records())),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_python_round_trips_every_codec_and_finds_records_by_time() {
    let stdout = run_client(keel_tools::launcher::python(), "kafka_python_roundtrip.py").await;
    assert!(stdout.contains(&format!("ok: {} records with none, gzip, snappy, lz4, zstd", records())), "{stdout}");
}

/// kafka-python's own (older) versions of the group APIs: two members
/// share a topic, commit, leave, and the offsets are at the ends.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_python_consumer_groups_share_a_topic_and_commit() {
    let stdout = run_client(keel_tools::launcher::python(), "kafka_python_group.py").await;
    assert!(stdout.contains("ok: 600 records, 2 members, offsets at the ends"), "{stdout}");
}

/// kafkajs's own versions of the group APIs: two members share a topic,
/// auto-commit, leave, and the offsets are at the ends.
#[tokio::test(flavor = "multi_thread")]
async fn kafkajs_consumer_groups_share_a_topic_and_commit() {
    let stdout = run_client("node", "kafkajs/group.js").await;
    assert!(stdout.contains("ok: 600 records, 2 members, offsets at the ends"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kafkajs_round_trips_its_codecs_and_finds_records_by_time() {
    let stdout = run_client("node", "kafkajs/roundtrip.js").await;
    assert!(stdout.contains(&format!("ok: {} records with none, gzip, snappy, lz4", records())), "{stdout}");
}

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
//! - `kafka_python_configs.py`: kafka-python: Kafka's standard topic
//!   configs, DescribeConfigs' types, sources and synonyms, the legacy
//!   AlterConfigs API, a broker's configs;
//! - `config_lists.py`: confluent-kafka: APPEND and SUBTRACT on list configs,
//!   and a keyless record refused by a compacted topic (KIP-467);
//! - `kafka_python_partition_admin.py`: kafka-python: DescribeLogDirs,
//!   ElectLeaders, partition reassignments and DescribeTopicPartitions;
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
async fn kafka_python_sets_describes_and_alters_every_kafka_topic_config() {
    let stdout = run_client(keel_tools::launcher::python(), "kafka_python_configs.py").await;
    for line in [
        "ok: a topic created with Kafka's standard configs",
        "ok: unknown names and bad values refused with INVALID_CONFIG",
        "topic configs described with their types, sources and synonyms",
        "ok: the legacy AlterConfigs API",
        "ok: a broker's configs",
    ] {
        assert!(stdout.contains(line), "{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn confluent_kafka_appends_to_list_configs_and_a_compacted_topic_refuses_keyless_records() {
    let stdout = run_client(keel_tools::launcher::python(), "config_lists.py").await;
    assert!(stdout.contains("ok: APPEND and SUBTRACT on cleanup.policy"), "{stdout}");
    assert!(stdout.contains("ok: APPEND on a config that is not a list is INVALID_CONFIG"), "{stdout}");
    assert!(stdout.contains("ok: a compacted topic refuses a keyless record with INVALID_RECORD"), "{stdout}");
}

/// CreateTopics v7 answers the new topic's configs, and DescribeConfigs v4
/// with documentation asked for gives every topic config its type and a
/// line of documentation (none of Keel's client scripts asks for either).
#[tokio::test(flavor = "multi_thread")]
async fn describe_configs_documents_every_topic_config() {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
    use kafka_protocol::protocol::StrBytes;

    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, TopicName};

    let test = TestCluster::start_full().await.unwrap();
    let bootstrap = test.cluster.bootstrap();
    let connection = keel_tools::kafka::Connection::connect(bootstrap.split(',').next().unwrap()).await.unwrap();
    // CreateTopics answers the new topic's configs from v5, as Kafka does.
    let create = CreateTopicsRequest::default().with_timeout_ms(30_000).with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("documented")))
        .with_num_partitions(1)
        .with_replication_factor(3)
        .with_configs(vec![CreatableTopicConfig::default()
            .with_name(StrBytes::from_static_str("retention.ms"))
            .with_value(Some(StrBytes::from_static_str("3600000")))])]);
    let created: CreateTopicsResponse = connection.send(7, &create).await.unwrap();
    let result = &created.topics[0];
    assert_eq!(result.error_code, 0, "{result:?}");
    let configs = result.configs.as_ref().expect("configs from v5");
    assert!(configs.len() >= 30, "{configs:?}");
    let retention = configs.iter().find(|c| c.name.as_str() == "retention.ms").unwrap();
    assert_eq!((retention.value.as_deref(), retention.config_source), (Some("3600000"), 1));
    let default = configs.iter().find(|c| c.name.as_str() == "retention.bytes").unwrap();
    assert_eq!((default.value.as_deref(), default.config_source), (Some("-1"), 5));
    let request = DescribeConfigsRequest::default().with_include_documentation(true).with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("documented"))
            .with_configuration_keys(None),
    ]);
    let answer: DescribeConfigsResponse = connection.send(4, &request).await.unwrap();
    let configs = &answer.results[0].configs;
    assert!(configs.len() >= 30, "{configs:?}");
    for config in configs {
        assert!(config.config_type > 0, "{config:?}");
        assert!(config.documentation.as_ref().is_some_and(|doc| doc.len() > 10), "{config:?}");
    }
    let unasked = DescribeConfigsRequest::default().with_resources(request.resources.clone());
    let answer: DescribeConfigsResponse = connection.send(4, &unasked).await.unwrap();
    assert!(answer.results[0].configs.iter().all(|c| c.documentation.is_none()), "documentation only when asked");
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_python_describes_log_dirs_elects_leaders_and_reassigns_partitions() {
    let stdout = run_client(keel_tools::launcher::python(), "kafka_python_partition_admin.py").await;
    for line in [
        "ok: DescribeLogDirs shows each partition's bytes",
        "ok: ElectLeaders answers ELECTION_NOT_NEEDED",
        "ok: partition reassignments complete at once, and their errors",
        "ok: DescribeTopicPartitions in pages, sorted, with leaders",
    ] {
        assert!(stdout.contains(line), "{stdout}");
    }
}

/// OffsetForLeaderEpoch (KIP-320), which clients send after a leader change
/// to look for truncation: the current epoch and every earlier one end at
/// the high watermark (Keel never truncates), a later epoch is undefined,
/// a current epoch the leader has not reached gets UNKNOWN_LEADER_EPOCH,
/// and a broker that does not lead the partition NOT_LEADER_OR_FOLLOWER.
#[tokio::test(flavor = "multi_thread")]
async fn offset_for_leader_epoch_never_reports_a_truncation() {
    use bytes::Bytes;
    use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
    use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use keel_tools::kafka::{self, Connection};

    let test = TestCluster::start_full().await.unwrap();
    let bootstrap = test.cluster.bootstrap();
    let first = Connection::connect(bootstrap.split(',').next().unwrap()).await.unwrap();
    kafka::create_topic(&first, "epochs", 1).await.unwrap();
    let layout = kafka::ready_layout(&bootstrap, "epochs", Duration::from_secs(60)).await.unwrap();
    let leader = Connection::connect(&layout.brokers[&layout.leaders[0]]).await.unwrap();
    for i in 0..5 {
        let batch = kafka::batch(&[Bytes::from(format!("record-{i}"))], 1_000, None).unwrap();
        let answer =
            leader.send(kafka::PRODUCE_VERSION, &kafka::produce_request("epochs", 0, -1, batch)).await.unwrap();
        assert_eq!(kafka::produce_result(&answer).unwrap().0, 0);
    }
    let ask = |current: i32, epoch: i32| {
        OffsetForLeaderEpochRequest::default().with_replica_id(kafka_protocol::messages::BrokerId(-1)).with_topics(
            vec![OffsetForLeaderTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("epochs")))
                .with_partitions(vec![OffsetForLeaderPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(current)
                    .with_leader_epoch(epoch)])],
        )
    };
    let answer = |response: OffsetForLeaderEpochResponse| {
        let p = &response.topics[0].partitions[0];
        (p.error_code, p.leader_epoch, p.end_offset)
    };
    let current: OffsetForLeaderEpochResponse = leader.send(4, &ask(-1, 0)).await.unwrap();
    assert_eq!(answer(current), (0, 0, 5), "epoch 0 ends at the high watermark");
    let later: OffsetForLeaderEpochResponse = leader.send(4, &ask(0, 3)).await.unwrap();
    assert_eq!(answer(later), (0, -1, -1), "an epoch not reached yet is undefined");
    let future: OffsetForLeaderEpochResponse = leader.send(4, &ask(7, 0)).await.unwrap();
    assert_eq!(answer(future).0, 75, "a current epoch the leader has not reached: UNKNOWN_LEADER_EPOCH");
    let other = layout.brokers.keys().find(|id| **id != layout.leaders[0]).unwrap();
    let follower = Connection::connect(&layout.brokers[other]).await.unwrap();
    let elsewhere: OffsetForLeaderEpochResponse = follower.send(4, &ask(-1, 0)).await.unwrap();
    assert_eq!(answer(elsewhere).0, 6, "a broker that does not lead it: NOT_LEADER_OR_FOLLOWER");
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

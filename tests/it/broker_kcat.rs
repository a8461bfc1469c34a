//! Kafka clients against real brokers: kcat (librdkafka) produces through
//! three brokers and the WAL quorum, and consumes everything back in order.

use std::collections::BTreeMap;
use std::time::Duration;

use keel_tests::TestCluster;

/// Runs kcat with `args`, feeding it `input`; fails on a non-zero exit.
pub(crate) async fn kcat(args: &[&str], input: &str) -> String {
    let output = kcat_output(args, input).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "kcat {args:?} failed: {stderr}");
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// Runs kcat with `args`, feeding it `input`, and returns how it ended.
pub(crate) async fn kcat_output(args: &[impl AsRef<std::ffi::OsStr>], input: &str) -> std::process::Output {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("kcat")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kcat is installed (scripts/setup installs it)");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input.as_bytes()).await.expect("write to kcat");
    drop(stdin);
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("kcat finished within 60s")
        .expect("kcat ran")
}

/// `(partition, offset, value)` of every record of `topic`, read from the
/// start with kcat, sorted.
pub(crate) async fn consume_all(bootstrap: &str, topic: &str) -> Vec<(u32, i64, String)> {
    let out = kcat(&["-b", bootstrap, "-C", "-t", topic, "-e", "-q", "-f", "%p %o %s\\n"], "").await;
    let mut records: Vec<(u32, i64, String)> = out
        .lines()
        .map(|line| {
            let mut fields = line.splitn(3, ' ');
            let partition = fields.next().unwrap().parse().unwrap();
            let offset = fields.next().unwrap().parse().unwrap();
            (partition, offset, fields.next().unwrap().to_string())
        })
        .collect();
    records.sort();
    records
}

#[tokio::test(flavor = "multi_thread")]
async fn kcat_produces_through_the_wal_and_consumes_every_record_in_order() {
    let mut test = TestCluster::start_full().await.unwrap();
    let bootstrap = test.cluster.bootstrap();
    let client = test.cluster.client().unwrap();
    let create =
        keel_controller_client::pb::CreateTopicRequest { name: "orders".into(), partitions: 6, ..Default::default() };
    client.create_topic(create).await.unwrap();

    let values: Vec<String> = (0..3000).map(|i| format!("order-{i}")).collect();
    // Keyed, so the records spread over the partitions by key hash; keyless
    // ones may all stick to one partition (librdkafka's sticky partitioner).
    let input: String = values.iter().enumerate().map(|(i, value)| format!("k{i}:{value}\n")).collect();
    let produce =
        ["-b", &bootstrap, "-P", "-t", "orders", "-K", ":", "-X", "enable.idempotence=true", "-X", "acks=all"];
    kcat(&produce, &input).await;

    let mut by_partition: BTreeMap<u32, Vec<(i64, String)>> = BTreeMap::new();
    for (partition, offset, value) in consume_all(&bootstrap, "orders").await {
        by_partition.entry(partition).or_default().push((offset, value));
    }
    let mut seen: Vec<String> = Vec::new();
    for (partition, records) in &by_partition {
        let offsets: Vec<i64> = records.iter().map(|(offset, _)| *offset).collect();
        let expected: Vec<i64> = (0..records.len() as i64).collect();
        assert_eq!(offsets, expected, "partition {partition}: offsets are dense from 0");
        seen.extend(records.iter().map(|(_, value)| value.clone()));
    }
    assert!(by_partition.len() > 1, "the records were spread over partitions: {:?}", by_partition.keys());
    seen.sort();
    let mut expected = values.clone();
    expected.sort();
    assert_eq!(seen.len(), expected.len(), "every record exactly once");
    assert_eq!(seen, expected);

    // Bytes that are not a Kafka request close that connection only: an
    // unknown API key, a frame over the size limit, a truncated header, and a
    // Metadata v1 request claiming 2^31-1 topics in 4 bytes (which would make
    // the codec ask for ~150 GiB up front; see broker/src/large_alloc.rs).
    let broker = test.cluster.brokers[0].spec.kafka;
    let huge_array = b"\x00\x00\x00\x0e\x00\x03\x00\x01\x00\x00\x00\x01\xff\xff\x7f\xff\xff\xff";
    for garbage in [
        &b"\x00\x00\x00\x04\xff\xff\x00\x00"[..],
        &b"\x7f\xff\xff\xff"[..],
        &b"\x00\x00\x00\x02\x00"[..],
        &huge_array[..],
    ] {
        assert!(closed_after(broker, garbage).await, "the broker closed the connection after {garbage:?}");
    }
    assert!(test.cluster.brokers[0].is_running(), "the broker survived the garbage");
    let listing = kcat(&["-b", &broker.to_string(), "-L", "-t", "orders"], "").await;
    assert!(listing.contains("6 partitions"), "the broker still answers: {listing}");
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

/// Sends `bytes` and reports whether the broker then closed the connection
/// (rather than answering or hanging).
async fn closed_after(addr: std::net::SocketAddr, bytes: &[u8]) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let _ = stream.shutdown().await;
    let mut rest = Vec::new();
    matches!(tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await, Ok(Ok(0)))
}

/// A topic created while no broker is live has no leaders; the controller
/// gives its partitions to the first broker that registers, and it serves them.
#[tokio::test(flavor = "multi_thread")]
async fn partitions_created_before_any_broker_get_a_leader_once_one_registers() {
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    test.start_wal_nodes(3).await.unwrap();
    let client = test.cluster.client().unwrap();
    let create =
        keel_controller_client::pb::CreateTopicRequest { name: "early".into(), partitions: 2, ..Default::default() };
    client.create_topic(create).await.unwrap();
    let image = client.read_image().await.unwrap();
    assert!(image.topics["early"].partitions.iter().all(|p| p.leader.is_none()), "no broker was live to lead them");

    test.start_brokers(1, &[]).await.unwrap();
    let bootstrap = test.cluster.bootstrap();
    kcat(&["-b", &bootstrap, "-P", "-t", "early", "-K", ":", "-X", "acks=all"], "a:1\nb:2\nc:3\nd:4\n").await;
    let records = consume_all(&bootstrap, "early").await;
    assert_eq!(records.len(), 4);
    let image = client.read_image().await.unwrap();
    for partition in &image.topics["early"].partitions {
        assert_eq!((partition.leader.map(|l| l.0), partition.leader_epoch.0), (Some(1), 1));
    }
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

/// Issue 21: the listener took any number of connections. Past
/// `connections_max`, a new one is closed as it arrives (and counted), and
/// once one closes there is room again.
#[tokio::test(flavor = "multi_thread")]
async fn connections_past_the_cap_are_closed_and_room_returns() {
    let mut test = TestCluster::start(1, &[]).await.unwrap();
    test.start_wal_nodes(3).await.unwrap();
    test.start_brokers(1, &["--connections-max", "3"]).await.unwrap();
    let broker = test.cluster.brokers[0].spec.kafka;
    let mut open = Vec::new();
    for _ in 0..3 {
        let connection = keel_tools::kafka::Connection::connect(&broker.to_string()).await.unwrap();
        assert!(connection_answers(&connection).await, "connections up to the cap are served");
        open.push(connection);
    }
    let mut extra = tokio::net::TcpStream::connect(broker).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read(&mut extra, &mut byte)).await;
    assert!(matches!(read, Ok(Ok(0))), "a fourth connection is closed at once: {read:?}");
    let admin = test.cluster.brokers[0].spec.admin;
    let (_, metrics) = keel_tools::launcher::http_get(admin, "/metrics").await.unwrap();
    assert!(keel_tools::launcher::metric_value(&metrics, "keel_broker_connections_refused_total") >= 1.0);

    drop(open.pop());
    keel_tests::eventually(Duration::from_secs(10), "room for a connection again", || async {
        let connection = keel_tools::kafka::Connection::connect(&broker.to_string()).await.ok()?;
        connection_answers(&connection).await.then_some(())
    })
    .await;
}

/// Whether the broker answers a Metadata request on `connection`.
async fn connection_answers(connection: &keel_tools::kafka::Connection) -> bool {
    let request = kafka_protocol::messages::MetadataRequest::default();
    tokio::time::timeout(Duration::from_secs(5), connection.send(9, &request)).await.is_ok_and(|answer| answer.is_ok())
}

/// Issue 24: auto-created topics followed no setting. A broker with
/// `--auto-create-topics false` answers a client's metadata request for a
/// missing topic with UNKNOWN_TOPIC_OR_PARTITION and creates nothing; one
/// with `--default-partitions 3` creates it with three partitions (Kafka's
/// auto.create.topics.enable and num.partitions).
#[tokio::test(flavor = "multi_thread")]
async fn auto_creation_follows_the_brokers_settings() {
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    test.start_wal_nodes(3).await.unwrap();
    // The broker that refuses first, alone: librdkafka may send its metadata
    // requests to any broker it knows.
    test.start_brokers(1, &["--auto-create-topics=false"]).await.unwrap();
    let off = test.cluster.brokers[0].spec.kafka.to_string();
    let client = test.cluster.client().unwrap();

    // A producer's metadata request allows auto-creation; this broker does not.
    let refused = kcat_output(&["-b", &off, "-P", "-t", "mistyped", "-X", "message.timeout.ms=3000"], "lost\n").await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    // librdkafka waits for the topic to appear until the message times out.
    assert!(stderr.contains("Delivery failed"), "the produce to a missing topic failed: {stderr}");
    assert!(!client.read_image().await.unwrap().topics.contains_key("mistyped"), "nothing was created");

    test.start_brokers(1, &["--default-partitions=3"]).await.unwrap();
    let on = test.cluster.brokers[1].spec.kafka.to_string();
    kcat(&["-b", &on, "-P", "-t", "fresh", "-X", "acks=all"], "first\n").await;
    let image = client.read_image().await.unwrap();
    assert_eq!(image.topics["fresh"].partitions.len(), 3, "created with default_partitions");
    let records = consume_all(&on, "fresh").await;
    assert_eq!(records.iter().map(|(_, _, v)| v.as_str()).collect::<Vec<_>>(), ["first"]);
}

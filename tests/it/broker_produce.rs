//! Produce rules seen from a client: a connection's requests are handled in
//! order (pipelined produces are appended in the order sent, which idempotent
//! producers with several requests in flight rely on: a reordering would be
//! refused as OUT_OF_ORDER_SEQUENCE_NUMBER, or store records out of order),
//! and CreateTime timestamps must fall in the topic's window.

use bytes::Bytes;
use keel_tests::TestCluster;
use keel_tools::kafka::{self, Connection};

#[tokio::test(flavor = "multi_thread")]
async fn produces_pipelined_on_one_connection_are_appended_in_the_order_sent() {
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    test.start_wal_nodes(3).await.unwrap();
    test.start_brokers(1, &[]).await.unwrap();
    let connection = Connection::connect(&test.cluster.bootstrap()).await.unwrap();
    kafka::create_topic(&connection, "orders", 1).await.unwrap();
    let (producer_id, epoch) = kafka::init_producer_id(&connection).await.unwrap();

    let mut answers = Vec::new();
    for i in 0..200 {
        let idempotent = Some((producer_id, epoch, i * 2));
        let values = [Bytes::from(format!("order-{i}-a")), Bytes::from(format!("order-{i}-b"))];
        let batch = kafka::batch(&values, 1_000 + i64::from(i), idempotent).unwrap();
        let request = kafka::produce_request("orders", 0, -1, batch);
        answers.push(connection.submit(kafka::PRODUCE_VERSION, &request).await.unwrap());
    }
    for (i, answer) in answers.into_iter().enumerate() {
        let result = kafka::produce_result(&answer.wait().await.unwrap()).unwrap();
        assert_eq!(result, (0, i as i64 * 2), "request {i} is appended after the {i} sent before it");
    }
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

#[tokio::test(flavor = "multi_thread")]
async fn timestamps_outside_the_topics_window_are_refused_with_invalid_timestamp() {
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    test.start_wal_nodes(3).await.unwrap();
    test.start_brokers(1, &[]).await.unwrap();
    let configs = [("message.timestamp.before.max.ms", "3600000"), ("message.timestamp.after.max.ms", "60000")];
    let create = keel_controller_client::pb::CreateTopicRequest {
        name: "clocks".into(),
        partitions: 1,
        configs: configs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    };
    test.cluster.client().unwrap().create_topic(create).await.unwrap();
    let connection = Connection::connect(&test.cluster.bootstrap()).await.unwrap();
    // The topic was created through the controller: wait until the broker's metadata has it.
    keel_tests::eventually(std::time::Duration::from_secs(10), "the broker knows the topic", || async {
        kafka::topic_layout(&connection, "clocks").await.ok()
    })
    .await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let produce_at = |timestamp: i64| {
        let batch = kafka::batch(&[Bytes::from_static(b"tick")], timestamp, None).unwrap();
        kafka::produce_request("clocks", 0, -1, batch)
    };
    let invalid = kafka_protocol::error::ResponseError::InvalidTimestamp.code();
    for (timestamp, what) in [(now - 2 * 3_600_000, "two hours ago"), (now + 600_000, "ten minutes ahead")] {
        let answer = connection.send(kafka::PRODUCE_VERSION, &produce_at(timestamp)).await.unwrap();
        assert_eq!(kafka::produce_result(&answer).unwrap().0, invalid, "{what}");
    }
    let answer = connection.send(kafka::PRODUCE_VERSION, &produce_at(now)).await.unwrap();
    assert_eq!(kafka::produce_result(&answer).unwrap(), (0, 0), "now is inside the window; nothing refused was stored");
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

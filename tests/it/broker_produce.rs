//! Produce rules seen from a client: a connection's requests are handled in
//! order (pipelined produces are appended in the order sent, which idempotent
//! producers with several requests in flight rely on: a reordering would be
//! refused as OUT_OF_ORDER_SEQUENCE_NUMBER, or store records out of order),
//! CreateTime timestamps must fall in the topic's window, and a batch larger
//! than the cluster stores is refused without harm to what follows.

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

/// Issue 21: one record larger than a WAL entry holds, to a topic whose
/// max.message.bytes allows it, used to kill the broker's WAL writer, and
/// every later produce to that broker timed out. It is refused with
/// MESSAGE_TOO_LARGE; a small record right after succeeds; and a request
/// whose batches together exceed one entry is split over several.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_over_what_the_wal_stores_is_refused_and_the_broker_writes_on() {
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    test.start_wal_nodes(3).await.unwrap();
    test.start_brokers(1, &[]).await.unwrap();
    let create = keel_controller_client::pb::CreateTopicRequest {
        name: "big".into(),
        partitions: 3,
        configs: [("max.message.bytes".to_string(), "40000000".to_string())].into(),
        ..Default::default()
    };
    test.cluster.client().unwrap().create_topic(create).await.unwrap();
    let connection = Connection::connect(&test.cluster.bootstrap()).await.unwrap();
    keel_tests::eventually(std::time::Duration::from_secs(10), "the broker knows the topic", || async {
        kafka::topic_layout(&connection, "big").await.ok()
    })
    .await;
    let value = |mib: usize, fill: u8| Bytes::from(vec![fill; mib << 20]);

    let huge = kafka::batch(&[value(17, b'x')], 1_000, None).unwrap();
    let answer = connection.send(kafka::PRODUCE_VERSION, &kafka::produce_request("big", 0, -1, huge)).await.unwrap();
    let too_large = kafka_protocol::error::ResponseError::MessageTooLarge.code();
    assert_eq!(kafka::produce_result(&answer).unwrap().0, too_large, "17 MiB is over the 16 MiB a WAL entry carries");

    let small = kafka::batch(&[Bytes::from_static(b"small")], 1_000, None).unwrap();
    let answer = connection.send(kafka::PRODUCE_VERSION, &kafka::produce_request("big", 0, -1, small)).await.unwrap();
    assert_eq!(kafka::produce_result(&answer).unwrap(), (0, 0), "the broker writes on; nothing refused was stored");

    // Three 12 MiB batches in one request: more than one entry holds.
    let mut request = kafka::produce_request("big", 0, -1, kafka::batch(&[value(12, b'a')], 1_000, None).unwrap());
    let partitions = &mut request.topic_data[0].partition_data;
    for (index, fill) in [(1, b'b'), (2, b'c')] {
        let mut data = partitions[0].clone();
        data.index = index;
        data.records = Some(kafka::batch(&[value(12, fill)], 1_000, None).unwrap());
        partitions.push(data);
    }
    let answer = connection.send(kafka::PRODUCE_VERSION, &request).await.unwrap();
    let results: Vec<(i32, i16, i64)> =
        answer.responses[0].partition_responses.iter().map(|p| (p.index, p.error_code, p.base_offset)).collect();
    assert_eq!(results, vec![(0, 0, 1), (1, 0, 0), (2, 0, 0)], "every batch of the split request is stored");
    for (partition, offset, fill) in [(0, 1, b'a'), (2, 0, b'c')] {
        let fetch = kafka::fetch_request("big", partition, offset, 0, 20 << 20);
        let (error, _, records) =
            kafka::fetch_result(&connection.send(kafka::FETCH_VERSION, &fetch).await.unwrap()).unwrap();
        assert_eq!(error, 0);
        let batches = kafka::split_batches(&records);
        assert_eq!(batches.first().map(|(base, _, _)| *base), Some(offset), "partition {partition}");
        let stored = batches[0].2;
        let filled = stored.iter().filter(|byte| **byte == fill).count();
        assert!(filled >= 12 << 20, "partition {partition} holds its 12 MiB record");
    }
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

//! Kafka handles a connection's requests in order: produces pipelined on one
//! connection are appended in the order they were sent, which idempotent
//! producers with several requests in flight rely on (a reordering would be
//! refused as OUT_OF_ORDER_SEQUENCE_NUMBER, or store records out of order).

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

//! `DeleteRecords` moves a partition's start offset forward through the
//! controller: readers see nothing below it (ListOffsets earliest, Fetch
//! OFFSET_OUT_OF_RANGE), bad offsets get Kafka's errors, and the start offset
//! survives a broker restart because it is metadata, not broker state.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, DeleteRecordsRequest, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use keel_tests::TestCluster;
use keel_tools::kafka::{self, Connection};

fn topic_name() -> TopicName {
    TopicName(StrBytes::from_static_str("audit"))
}

/// (error code, low watermark) of deleting partition 0's records below `offset`.
async fn delete_records(connection: &Connection, offset: i64) -> (i16, i64) {
    let request =
        DeleteRecordsRequest::default().with_timeout_ms(10_000).with_topics(vec![DeleteRecordsTopic::default()
            .with_name(topic_name())
            .with_partitions(vec![DeleteRecordsPartition::default().with_partition_index(0).with_offset(offset)])]);
    let answer = connection.send(2, &request).await.unwrap();
    let partition = &answer.topics[0].partitions[0];
    (partition.error_code, partition.low_watermark)
}

/// Partition 0's earliest offset by ListOffsets.
async fn earliest(connection: &Connection) -> i64 {
    let request =
        ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name())
            .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-2)])]);
    let answer = connection.send(7, &request).await.unwrap();
    let partition = &answer.topics[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    partition.offset
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_records_moves_the_start_offset_for_every_reader_and_survives_a_restart() {
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    test.start_wal_nodes(3).await.unwrap();
    test.start_brokers(1, &[]).await.unwrap();
    let bootstrap = test.cluster.bootstrap();
    let connection = Connection::connect(&bootstrap).await.unwrap();
    kafka::create_topic(&connection, "audit", 1).await.unwrap();
    let values: Vec<Bytes> = (0..10).map(|i| Bytes::from(format!("event-{i}"))).collect();
    let batch = kafka::batch(&values, 1_000, None).unwrap();
    let answer = connection.send(kafka::PRODUCE_VERSION, &kafka::produce_request("audit", 0, -1, batch)).await.unwrap();
    assert_eq!(kafka::produce_result(&answer).unwrap(), (0, 0));

    let out_of_range = ResponseError::OffsetOutOfRange.code();
    assert_eq!(delete_records(&connection, 11).await.0, out_of_range, "past the high watermark");
    assert_eq!(delete_records(&connection, -7).await.0, out_of_range, "a negative offset other than -1");
    assert_eq!(delete_records(&connection, 4).await, (0, 4));
    assert_eq!(delete_records(&connection, 2).await, (0, 4), "the start offset never goes back");
    assert_eq!(earliest(&connection).await, 4);
    let fetch = connection.send(kafka::FETCH_VERSION, &kafka::fetch_request("audit", 0, 2, 0, 1 << 20)).await;
    assert_eq!(kafka::fetch_result(&fetch.unwrap()).unwrap().0, out_of_range, "below the start offset");
    let fetch = connection.send(kafka::FETCH_VERSION, &kafka::fetch_request("audit", 0, 4, 0, 1 << 20)).await;
    let (error, high_watermark, records) = kafka::fetch_result(&fetch.unwrap()).unwrap();
    assert_eq!((error, high_watermark), (0, 10));
    assert!(!records.is_empty(), "records from the start offset on are served");
    drop(connection);

    test.restart_broker(0, "audit").await.unwrap();
    let connection = Connection::connect(&bootstrap).await.unwrap();
    assert_eq!(earliest(&connection).await, 4, "the start offset is metadata and survives the restart");
    assert_eq!(delete_records(&connection, -1).await, (0, 10), "-1 deletes up to the high watermark");
    assert_eq!(earliest(&connection).await, 10);
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

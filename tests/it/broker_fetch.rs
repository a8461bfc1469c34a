//! Incremental fetch sessions (KIP-227) on a real broker: a full fetch at
//! epoch 0 opens a session, an incremental fetch names only what changed and
//! is answered with only the partitions that have news, and a wrong epoch or
//! unknown session gets the error the clients expect.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use keel_tests::TestCluster;
use keel_tools::kafka::{self, Connection};

fn fetch(session_id: i32, epoch: i32, partitions: &[(i32, i64)]) -> FetchRequest {
    let topics = if partitions.is_empty() {
        vec![]
    } else {
        vec![FetchTopic::default().with_topic(TopicName(StrBytes::from_static_str("metrics"))).with_partitions(
            partitions
                .iter()
                .map(|(p, offset)| {
                    FetchPartition::default()
                        .with_partition(*p)
                        .with_fetch_offset(*offset)
                        .with_partition_max_bytes(1 << 20)
                })
                .collect(),
        )]
    };
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_session_id(session_id)
        .with_session_epoch(epoch)
        .with_topics(topics)
}

/// (partition, high watermark, record bytes) of every partition answered.
fn answered(response: &FetchResponse) -> Vec<(i32, i64, usize)> {
    response
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| (p.partition_index, p.high_watermark, p.records.as_ref().map_or(0, Bytes::len)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_incremental_fetch_answers_only_partitions_with_news() {
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    test.start_wal_nodes(3).await.unwrap();
    test.start_brokers(1, &[]).await.unwrap();
    let connection = Connection::connect(&test.cluster.bootstrap()).await.unwrap();
    kafka::create_topic(&connection, "metrics", 3).await.unwrap();
    let produce = |partition: i32, value: &str| {
        let batch = kafka::batch(&[Bytes::from(value.to_owned())], 1_000, None).unwrap();
        kafka::produce_request("metrics", partition, -1, batch)
    };
    let answer = connection.send(kafka::PRODUCE_VERSION, &produce(0, "cpu=1")).await.unwrap();
    assert_eq!(kafka::produce_result(&answer).unwrap(), (0, 0));

    let full = connection.send(kafka::FETCH_VERSION, &fetch(0, 0, &[(0, 0), (1, 0), (2, 0)])).await.unwrap();
    assert_eq!(full.error_code, 0);
    assert_ne!(full.session_id, 0, "a full fetch at epoch 0 opens a session");
    let session = full.session_id;
    let got = answered(&full);
    assert_eq!(got.iter().map(|(p, hw, _)| (*p, *hw)).collect::<Vec<_>>(), vec![(0, 1), (1, 0), (2, 0)]);
    assert!(got[0].2 > 0, "partition 0's record is in the full answer");

    // Nothing new: the consumer moved partition 0 on, nothing else changed.
    let quiet = connection.send(kafka::FETCH_VERSION, &fetch(session, 1, &[(0, 1)])).await.unwrap();
    assert_eq!((quiet.error_code, quiet.session_id), (0, session));
    assert_eq!(answered(&quiet), vec![], "no partition has news");

    // A record on partition 2 only: the session still fetches it, unnamed.
    let answer = connection.send(kafka::PRODUCE_VERSION, &produce(2, "cpu=2")).await.unwrap();
    assert_eq!(kafka::produce_result(&answer).unwrap(), (0, 0));
    let news = connection.send(kafka::FETCH_VERSION, &fetch(session, 2, &[])).await.unwrap();
    let got = answered(&news);
    assert_eq!(got.len(), 1, "only partition 2 has news: {got:?}");
    assert_eq!((got[0].0, got[0].1), (2, 1));
    assert!(got[0].2 > 0);

    let stale = connection.send(kafka::FETCH_VERSION, &fetch(session, 2, &[])).await.unwrap();
    assert_eq!(stale.error_code, ResponseError::InvalidFetchSessionEpoch.code());
    let unknown = connection.send(kafka::FETCH_VERSION, &fetch(session.wrapping_add(1), 1, &[])).await.unwrap();
    assert_eq!(unknown.error_code, ResponseError::FetchSessionIdNotFound.code());
    let closed = connection.send(kafka::FETCH_VERSION, &fetch(session, -1, &[(0, 0)])).await.unwrap();
    assert_eq!((closed.error_code, closed.session_id), (0, 0), "epoch -1 closes the session");
    let gone = connection.send(kafka::FETCH_VERSION, &fetch(session, 3, &[])).await.unwrap();
    assert_eq!(gone.error_code, ResponseError::FetchSessionIdNotFound.code());
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

//! A broker keeps nothing on disk: killed with -9 and started again, it
//! recovers and seals the WAL log it was writing (DESIGN §5), serves what
//! that log held, and continues each partition at the next offset, never
//! reusing one.

use std::time::Duration;

use keel_controller_client::WalLogState;
use keel_tests::TestCluster;

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

    test.cluster.brokers[0].kill9();
    test.cluster.start_broker(0).unwrap();
    test.cluster.wait_for_brokers(Duration::from_secs(60)).await.unwrap();

    let image = client.read_image().await.unwrap();
    let sealed: Vec<_> =
        image.wal_logs.values().filter(|log| matches!(log.state, WalLogState::Sealed { .. })).collect();
    assert_eq!(sealed.len(), 1, "the killed broker's log was recovered and sealed: {:?}", image.wal_logs);
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

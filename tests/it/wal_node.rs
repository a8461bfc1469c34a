//! Real `keel-wal` processes next to a controller quorum: they register in
//! their zones, keep what they acknowledged through kill -9, are fenced when
//! silent, and come back as a new incarnation when their disk is wiped.

use std::time::Duration;

use bytes::Bytes;
use keel_controller_client::{NodeKind, StreamId};
use keel_proto::wal as pb;
use keel_tests::{eventually, TestCluster, PEER_UNREACHABLE};
use keel_wal_client::entry::{Entry, EntryHeader, Record};
use keel_wal_client::ids::{LogEpoch, LogId, Offset, Seq};
use tracing::info;

const ENTRIES: u64 = 20_000;

fn entry(seq: u64) -> Bytes {
    let header = EntryHeader { log: LogId(7), epoch: LogEpoch(1), seq: Seq(seq), acked: Seq(seq - 1) };
    let record = Record {
        stream: StreamId(1),
        base_offset: Offset(seq as i64),
        record_count: 1,
        batch: Bytes::from(vec![(seq % 251) as u8; 100]),
    };
    Entry::build(header, vec![record]).unwrap().bytes
}

async fn wal_client(addr: std::net::SocketAddr) -> pb::wal_client::WalClient<keel_proto::auth::Channel> {
    keel_tests::wal_client(addr).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_nodes_register_keep_what_they_acknowledged_and_come_back() {
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    let epochs = test.start_wal_nodes(3).await.unwrap();
    let status = test.cluster.client().unwrap().cluster_status().await.unwrap();
    let zones: Vec<&str> = status.nodes.iter().map(|node| node.zone.as_str()).collect();
    assert_eq!(zones, ["a", "b", "c"], "{status:?}");

    info!(ENTRIES, "kill -9 a WAL node in the middle of pipelined appends");
    let addr = test.cluster.wal_nodes[0].spec.grpc;
    let incarnation = wal_client(addr).await.status(pb::StatusRequest {}).await.unwrap().into_inner().incarnation;
    let requests =
        tokio_stream::iter((1..=ENTRIES).map(|seq| pb::AppendRequest { epoch: 1, entries: vec![entry(seq)] }));
    let mut replies = wal_client(addr).await.append(requests).await.unwrap().into_inner();
    let mut acknowledged = 0;
    while let Ok(Some(reply)) = replies.message().await {
        assert_eq!((reply.code, reply.seq), (pb::ErrorCode::Ok as i32, acknowledged + 1), "{reply:?}");
        acknowledged += 1;
        if acknowledged == ENTRIES / 4 {
            test.cluster.wal_nodes[0].kill9();
        }
    }
    assert!((ENTRIES / 4..ENTRIES).contains(&acknowledged), "{acknowledged} acknowledged");

    info!(acknowledged, "restart it: every acknowledged entry is back, byte for byte");
    test.cluster.start_wal(0).unwrap();
    let mut wal = keel_tests::wal_client_when_up(addr).await;
    let status = wal.status(pb::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.incarnation, incarnation, "a restart keeps the incarnation");
    assert!(status.logs[0].last_seq >= acknowledged, "{status:?}");
    let fenced = wal.fence(pb::FenceRequest { log: 7, epoch: 2 }).await.unwrap().into_inner();
    assert_eq!(fenced.code, pb::ErrorCode::Ok as i32);
    let mut next = 1;
    while next <= acknowledged {
        let read = pb::ReadRequest { log: 7, from_seq: next, max_bytes: 1 << 20, recovery_epoch: 2, sealed_seq: 0 };
        let read = wal.read(read).await.unwrap().into_inner();
        assert_eq!(read.code, pb::ErrorCode::Ok as i32, "{}", read.message);
        for bytes in read.entries {
            assert_eq!(bytes, entry(next), "entry {next}");
            next += 1;
        }
    }
    let (state, epoch) = eventually(Duration::from_secs(30), "it registers again", || async {
        test.node_state(NodeKind::Wal, 1).await.filter(|(state, epoch)| state == "active" && *epoch > epochs[0])
    })
    .await;
    info!(state, epoch, "registered again with a new epoch");

    info!("a WAL node that stays down is fenced by the controller");
    test.cluster.wal_nodes[1].kill9();
    eventually(Duration::from_secs(15), "node 2 is fenced", || async {
        (test.node_state(NodeKind::Wal, 2).await?.0 == "fenced").then_some(())
    })
    .await;

    info!("a WAL node with a wiped disk comes back as a new incarnation");
    test.cluster.wal_nodes[2].kill9();
    std::fs::remove_dir_all(&test.cluster.wal_nodes[2].spec.data_dir).unwrap();
    test.cluster.start_wal(2).unwrap();
    let wiped_addr = test.cluster.wal_nodes[2].spec.grpc;
    let status = eventually(Duration::from_secs(30), "the wiped node answers", || async {
        let mut client = keel_tests::wal_client(wiped_addr).await.ok()?;
        Some(client.status(pb::StatusRequest {}).await.ok()?.into_inner())
    })
    .await;
    assert_ne!(status.incarnation, incarnation);
    assert!(status.logs.is_empty());
    eventually(Duration::from_secs(30), "the wiped node registers again", || async {
        test.node_state(NodeKind::Wal, 3)
            .await
            .filter(|(state, epoch)| state == "active" && *epoch > epochs[2])
            .map(|_| ())
    })
    .await;

    test.assert_clean_logs(&[PEER_UNREACHABLE, &["failed to heartbeat", "session lost, registering again"]].concat());
}

//! The WAL writer against three real WAL nodes: a node killed mid-load costs
//! the writer nothing, every acknowledged entry is on the survivors, and the
//! node catches up when it returns.

use std::time::Duration;

use bytes::Bytes;
use futures::stream::{FuturesOrdered, StreamExt};
use futures::FutureExt;
use std::sync::Arc;

use keel_controller_client::{pb as controller_pb, ClientError, MetaError, Outcome, StreamId, WalLogState};
use keel_proto::wal as pb;
use keel_tests::{eventually, TestCluster, PEER_UNREACHABLE};
use keel_wal_client::entry::{Entry, Record};
use keel_wal_client::ids::{LogEpoch, LogId, Offset, Seq};
use keel_wal_client::writer::{Target, WalWriter};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

const ENTRIES: u64 = 100_000;
const IN_FLIGHT: usize = 512;
const LOG: LogId = LogId(11);

fn payload(seq: u64) -> Bytes {
    Bytes::from(format!("record {seq:08}"))
}

fn record(seq: u64) -> Vec<Record> {
    vec![Record { stream: StreamId(1), base_offset: Offset(seq as i64 - 1), record_count: 1, batch: payload(seq) }]
}

async fn wal_client(addr: std::net::SocketAddr) -> Option<pb::wal_client::WalClient<keel_proto::auth::Channel>> {
    keel_tests::wal_client(addr).await.ok()
}

async fn targets(test: &TestCluster) -> Vec<Target> {
    test.cluster.wal_targets().await.unwrap()
}

async fn last_seq(addr: std::net::SocketAddr) -> Option<u64> {
    let status = wal_client(addr).await?.status(pb::StatusRequest {}).await.ok()?.into_inner();
    status.logs.iter().find(|log| log.log == LOG.0).map(|log| log.last_seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_rides_out_a_dead_wal_node_and_loses_nothing() {
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    test.start_wal_nodes(3).await.unwrap();
    let targets = targets(&test).await;
    let tasks = TaskTracker::new();
    let cancel = CancellationToken::new();
    let writer = WalWriter::start(LOG, LogEpoch(1), targets, 2, Seq(0), &tasks, cancel.clone());

    info!(ENTRIES, "append with {IN_FLIGHT} in flight; kill -9 a WAL node at 30%");
    let mut in_flight = FuturesOrdered::new();
    let mut acknowledged = 0;
    let mut next_expected = 1;
    for seq in 1..=ENTRIES + IN_FLIGHT as u64 {
        if seq <= ENTRIES {
            in_flight.push_back(writer.append(record(seq)));
        }
        if in_flight.len() >= IN_FLIGHT || seq > ENTRIES {
            let Some(result) = in_flight.next().await else { break };
            assert_eq!(result, Ok(Seq(next_expected)), "the writer must see no error");
            next_expected += 1;
            acknowledged += 1;
            if acknowledged == ENTRIES * 3 / 10 {
                test.cluster.wal_nodes[0].kill9();
            }
        }
    }
    assert_eq!(acknowledged, ENTRIES);
    assert_eq!(writer.acked(), Seq(ENTRIES));

    info!("the killed node returns and is sent everything it missed");
    test.cluster.start_wal(0).unwrap();
    for seq in ENTRIES + 1..=ENTRIES + 10 {
        assert_eq!(writer.append(record(seq)).await, Ok(Seq(seq)));
    }
    let total = ENTRIES + 10;
    let restarted = test.cluster.wal_nodes[0].spec.grpc;
    eventually(Duration::from_secs(60), "the restarted node holds every entry", || async {
        (last_seq(restarted).await? == total).then_some(())
    })
    .await;

    info!("every node holds every entry, byte for byte");
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
    for node in &test.cluster.wal_nodes {
        let mut wal = wal_client(node.spec.grpc).await.unwrap();
        let fenced = wal.fence(pb::FenceRequest { log: LOG.0, epoch: 2 }).await.unwrap().into_inner();
        assert_eq!((fenced.code, fenced.last_seq), (pb::ErrorCode::Ok as i32, total), "node {}", node.spec.id);
        let mut next = 1;
        while next <= total {
            let read =
                pb::ReadRequest { log: LOG.0, from_seq: next, max_bytes: 1 << 20, recovery_epoch: 2, sealed_seq: 0 };
            let read = wal.read(read).await.unwrap().into_inner();
            assert_eq!(read.code, pb::ErrorCode::Ok as i32, "{}", read.message);
            for bytes in read.entries {
                let entry = Entry::decode(bytes).unwrap();
                assert_eq!(entry.header.seq, Seq(next));
                assert_eq!(entry.records[0].batch, payload(next), "node {} entry {next}", node.spec.id);
                next += 1;
            }
        }
    }

    test.assert_clean_logs(&[PEER_UNREACHABLE, &["failed to heartbeat", "session lost, registering again"]].concat());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recoverer_fences_the_writer_and_keeps_everything_it_acknowledged() {
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    test.start_wal_nodes(3).await.unwrap();
    let tasks = TaskTracker::new();
    let cancel = CancellationToken::new();
    let controller = Arc::new(test.cluster.client().unwrap());

    info!("broker A records its WAL log with the controller before the first append");
    let session_a = cancel.child_token();
    let broker_a = keel_tests::register_broker(&controller, 1, &tasks, &session_a).await;
    let broker_b = keel_tests::register_broker(&controller, 2, &tasks, &cancel).await;
    // No ensemble given: the controller picks one node per zone.
    let open = controller_pb::OpenLogRequest { owner: 1, owner_epoch: broker_a.0, ensemble: vec![], ack_quorum: 0 };
    let Ok((_, Outcome::LogOpened { log: log_b, epoch })) = controller.open_log(open).await else {
        panic!("OpenLog failed")
    };
    assert_eq!(epoch, LogEpoch(1));
    let chosen = controller.read_image().await.unwrap().wal_logs[&log_b].clone();
    assert_eq!((chosen.ensemble.len(), chosen.ack_quorum), (3, 2), "three zones: one node in each");
    let targets: Vec<Target> = chosen
        .ensemble
        .iter()
        .map(|member| {
            let node =
                test.cluster.wal_nodes.iter().find(|node| node.spec.id == member.node.0).expect("a known WAL node");
            Target {
                member: keel_wal_client::quorum::Member {
                    node: member.node,
                    zone: member.zone.clone(),
                    incarnation: member.incarnation.clone(),
                },
                addr: node.spec.grpc.to_string(),
            }
        })
        .collect();
    let writer = WalWriter::start(log_b, LogEpoch(1), targets.clone(), 2, Seq(0), &tasks, cancel.clone());

    info!("writer A appends at epoch 1; recoverer B fences at epoch 2 while A keeps going");
    let mut in_flight = FuturesOrdered::new();
    let mut recovering = tokio::task::JoinSet::new();
    let mut recovery = None;
    let mut fenced = 0;
    let mut acknowledged = 0;
    for seq in 1..=20_000u64 {
        in_flight.push_back(writer.append(record(seq)));
        if in_flight.len() < 256 {
            continue;
        }
        match in_flight.next().await.expect("in flight") {
            Ok(_) => acknowledged += 1,
            Err(error) => {
                assert!(error.to_string().contains("fenced"), "{error}");
                fenced += 1;
            }
        }
        if acknowledged == 1000 && recovery.is_none() {
            let targets = targets.clone();
            let controller = controller.clone();
            let (tasks, cancel, session_a) = (tasks.clone(), cancel.clone(), session_a.clone());
            recovery = Some(recovering.spawn(async move {
                // Broker A restarts: its new registration orphans the log A still writes.
                session_a.cancel();
                keel_tests::register_broker(&controller, 1, &tasks, &cancel).await;
                // The controller-driven step: RecoverLog (compare-and-set of the epoch), then the recovery itself.
                let request = controller_pb::RecoverLogRequest {
                    log: log_b.0,
                    epoch: 2,
                    recoverer: 2,
                    recoverer_epoch: broker_b.0,
                };
                controller.recover_log(request).await.expect("RecoverLog");
                keel_wal_client::recover::recover(log_b, LogEpoch(2), &targets, 2, Seq(0)).await
            }));
        }
        if fenced > 0 && recovery.as_ref().is_some_and(|task| task.is_finished()) {
            break;
        }
    }
    assert!(recovery.is_some(), "recovery started");
    let recovered = recovering.join_next().await.expect("the recovery").unwrap().unwrap();
    while let Some(result) = in_flight.next().await {
        fenced += u64::from(result.is_err());
    }
    let acked = writer.acked();
    info!(%acked, sealed = %recovered.sealed_seq, fenced, "recovered");
    assert!(fenced > 0, "writer A must have been refused");
    assert!(acked <= recovered.sealed_seq, "A had {acked} acknowledged, beyond the sealed {}", recovered.sealed_seq);
    assert_eq!(recovered.stream_ends.get(&StreamId(1)), Some(&Offset(recovered.sealed_seq.0 as i64)));
    let late = writer.append(record(recovered.sealed_seq.0 + 1_000_000)).await;
    assert!(late.is_err(), "a fenced writer gets nothing acknowledged: {late:?}");

    info!("a recoverer at an older epoch than B's learns at once that it was overtaken");
    let stale = keel_wal_client::recover::recover(log_b, LogEpoch(1), &targets, 2, Seq(0)).await;
    assert!(matches!(stale, Err(keel_wal_client::recover::RecoverError::Overtaken(_))), "{stale:?}");

    info!("B seals the log with the controller; it is never recovered again");
    let seal = controller_pb::SealLogRequest {
        log: log_b.0,
        epoch: 2,
        sealed_seq: recovered.sealed_seq.0,
        stream_ends: recovered.stream_ends.iter().map(|(stream, end)| (stream.0, end.0)).collect(),
        sender: 2,
        sender_epoch: broker_b.0,
    };
    controller.seal_log(seal).await.unwrap();
    let sealed = controller.read_image().await.unwrap().wal_logs[&log_b].clone();
    assert!(
        matches!(&sealed.state, WalLogState::Sealed { sealed_seq, .. } if *sealed_seq == recovered.sealed_seq),
        "{sealed:?}"
    );
    let again = controller_pb::RecoverLogRequest { log: log_b.0, epoch: 3, recoverer: 2, recoverer_epoch: broker_b.0 };
    assert!(matches!(controller.recover_log(again).await, Err(ClientError::Meta(MetaError::LogSealed { .. }))));

    info!("every entry up to the sealed seq is on at least two nodes, as A built it");
    let mut holders = vec![0; recovered.sealed_seq.0 as usize + 1];
    for node in &test.cluster.wal_nodes {
        let mut wal = wal_client(node.spec.grpc).await.unwrap();
        let mut next = 1;
        while next <= recovered.sealed_seq.0 {
            let read =
                pb::ReadRequest { log: log_b.0, from_seq: next, max_bytes: 1 << 20, recovery_epoch: 2, sealed_seq: 0 };
            let read = wal.read(read).await.unwrap().into_inner();
            assert_eq!(read.code, pb::ErrorCode::Ok as i32, "{}", read.message);
            if read.entries.is_empty() {
                break;
            }
            for bytes in read.entries {
                let entry = Entry::decode(bytes).unwrap();
                if entry.header.seq.0 <= recovered.sealed_seq.0 {
                    assert_eq!(entry.records[0].batch, payload(entry.header.seq.0));
                    holders[entry.header.seq.0 as usize] += 1;
                }
                next += 1;
            }
        }
    }
    assert!(holders[1..].iter().all(|count| *count >= 2), "an entry up to the sealed seq is on fewer than two nodes");
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
    test.assert_clean_logs(&[PEER_UNREACHABLE, &["failed to heartbeat", "WAL log fenced"]].concat());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wal_node_with_a_wiped_disk_does_not_count_in_a_recovery() {
    const LOG_W: LogId = LogId(21);
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    test.start_wal_nodes(3).await.unwrap();
    let targets = targets(&test).await;
    let tasks = TaskTracker::new();
    let cancel = CancellationToken::new();
    let writer = WalWriter::start(LOG_W, LogEpoch(1), targets.clone(), 2, Seq(0), &tasks, cancel.clone());
    for seq in 1..=200 {
        assert_eq!(writer.append(record(seq)).await, Ok(Seq(seq)));
    }
    cancel.cancel();
    tasks.close();
    tasks.wait().await;

    info!("node 1 comes back with a wiped disk and node 3 is down: one valid member is not enough");
    test.cluster.wal_nodes[0].kill9();
    std::fs::remove_dir_all(&test.cluster.wal_nodes[0].spec.data_dir).unwrap();
    test.cluster.start_wal(0).unwrap();
    let wiped = test.cluster.wal_nodes[0].spec.grpc;
    eventually(Duration::from_secs(30), "the wiped node answers", || async { wal_client(wiped).await.map(|_| ()) })
        .await;

    info!("a writer of the old ensemble sees the wiped node as gone, and writes on with the other two");
    let tasks = TaskTracker::new();
    let cancel = CancellationToken::new();
    let writer = WalWriter::start(LogId(22), LogEpoch(1), targets.clone(), 2, Seq(0), &tasks, cancel.clone());
    let mut health = writer.health();
    // Map the guard away at once: a held watch guard would block the writer's next health update.
    let degraded = tokio::time::timeout(
        Duration::from_secs(30),
        health.wait_for(|h| *h == keel_wal_client::quorum::Health::Degraded).map(|guard| guard.map(|_| ())),
    )
    .await;
    assert!(matches!(degraded, Ok(Ok(()))), "the wiped member must count as lost");
    assert_eq!(writer.append(record(1)).await, Ok(Seq(1)));
    cancel.cancel();
    tasks.close();
    tasks.wait().await;

    test.cluster.wal_nodes[2].kill9();
    let refused = keel_wal_client::recover::recover(LOG_W, LogEpoch(2), &targets, 2, Seq(0)).await;
    assert!(
        matches!(refused, Err(keel_wal_client::recover::RecoverError::NotEnoughFenced { fenced: 1, needed: 2 })),
        "an empty new incarnation must not stand in for the member it replaced: {refused:?}"
    );

    info!("with node 3 back, the two valid members recover everything");
    test.cluster.start_wal(2).unwrap();
    let back = test.cluster.wal_nodes[2].spec.grpc;
    eventually(Duration::from_secs(30), "node 3 answers", || async { wal_client(back).await.map(|_| ()) }).await;
    let recovered = keel_wal_client::recover::recover(LOG_W, LogEpoch(3), &targets, 2, Seq(0)).await.unwrap();
    assert_eq!(recovered.sealed_seq, Seq(200));

    test.assert_clean_logs(&[PEER_UNREACHABLE, &["failed to heartbeat", "session lost, registering again"]].concat());
}

//! A real `keel-wal` process reuses the segments a committed trim point
//! freed, and a kill -9 while it writes over their old contents loses
//! nothing it acknowledged and brings back nothing of their old lives. A
//! kill -9 while it zero-fills a new segment loses nothing either.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel_controller_client::{NodeId, Outcome, StreamId};
use keel_proto::controller as cpb;
use keel_proto::wal as pb;
use keel_tests::{eventually, TestCluster};
use keel_wal_client::entry::{Entry, EntryHeader, Record, ENTRY_BYTES_MAX};
use keel_wal_client::ids::{LogEpoch, LogId, Offset, Seq};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

/// The smallest segment a node takes: the largest entry and a header.
const SEGMENT_BYTES: usize = ENTRY_BYTES_MAX + (1 << 20);
const ENTRY_BYTES: usize = 256 << 10;
/// Entries that fill about three segments.
const PHASE_ENTRIES: u64 = (3 * SEGMENT_BYTES / ENTRY_BYTES) as u64;

fn entry(log: LogId, epoch: LogEpoch, seq: u64) -> Bytes {
    let header = EntryHeader { log, epoch, seq: Seq(seq), acked: Seq(seq - 1) };
    let record = Record {
        stream: StreamId(1),
        base_offset: Offset(seq as i64),
        record_count: 1,
        batch: Bytes::from(vec![(seq % 251) as u8; ENTRY_BYTES]),
    };
    Entry::build(header, vec![record]).unwrap().bytes
}

fn recycled_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("journal"))
        .map(|files| {
            files.filter(|f| f.as_ref().is_ok_and(|f| f.file_name().to_string_lossy().starts_with("free-"))).count()
        })
        .unwrap_or(0)
}

/// Appends entries `seqs` to one node on one stream; kills the node once
/// `kill_after` are acknowledged, if given. Returns how many were acknowledged.
async fn append(
    test: &mut TestCluster,
    (log, epoch): (LogId, LogEpoch),
    seqs: std::ops::RangeInclusive<u64>,
    kill_after: Option<u64>,
) -> u64 {
    let addr = test.cluster.wal_nodes[0].spec.grpc;
    let first = *seqs.start();
    let requests = seqs.map(move |seq| pb::AppendRequest { epoch: epoch.0, entries: vec![entry(log, epoch, seq)] });
    let mut wal = keel_tests::wal_client(addr).await.unwrap();
    let mut replies = wal.append(tokio_stream::iter(requests)).await.unwrap().into_inner();
    let mut acknowledged = 0;
    while let Ok(Some(reply)) = replies.message().await {
        assert_eq!((reply.code, reply.seq), (pb::ErrorCode::Ok as i32, first + acknowledged), "{reply:?}");
        acknowledged += 1;
        if Some(acknowledged) == kill_after {
            test.cluster.wal_nodes[0].kill9();
        }
    }
    acknowledged
}

/// Fences `log` at the epoch after `epoch`, as a recovery does, and reads
/// it from its first entry held through at least `through`.
async fn fence_and_read(
    wal: &mut pb::wal_client::WalClient<keel_proto::auth::Channel>,
    (log, epoch): (LogId, LogEpoch),
    through: u64,
) -> Vec<Bytes> {
    let recovery_epoch = epoch.0 + 1;
    let fenced = wal.fence(pb::FenceRequest { log: log.0, epoch: recovery_epoch }).await.unwrap().into_inner();
    assert_eq!(fenced.code, pb::ErrorCode::Ok as i32, "{}", fenced.message);
    let mut entries: Vec<Bytes> = Vec::new();
    let mut from_seq = 1;
    while from_seq <= through {
        let read = pb::ReadRequest { log: log.0, from_seq, max_bytes: 1 << 20, recovery_epoch, sealed_seq: 0 };
        let read = wal.read(read).await.unwrap().into_inner();
        assert_eq!(read.code, pb::ErrorCode::Ok as i32, "{log}: {}", read.message);
        let last = read.entries.last().unwrap_or_else(|| panic!("{log}: entry {from_seq} is missing"));
        from_seq = Entry::decode(last.clone()).unwrap().header.seq.0 + 1;
        entries.extend(read.entries);
    }
    entries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wal_node_killed_while_reusing_trimmed_segments_keeps_what_it_acknowledged() {
    let mut test = TestCluster::start(1, &[]).await.unwrap();
    test.cluster.add_free_port_wal_nodes(3).unwrap();
    for node in &mut test.cluster.wal_nodes {
        node.spec.args = vec!["--segment-bytes".into(), SEGMENT_BYTES.to_string()];
    }
    test.cluster.start_all_wal().unwrap();
    test.cluster.wait_for_wal_nodes(Duration::from_secs(60)).await.unwrap();
    let data_dir = test.cluster.wal_nodes[0].spec.data_dir.clone();

    // A broker's registration, to open the log and commit its trim point.
    let client = Arc::new(test.cluster.client().unwrap());
    let (tasks, cancel) = (TaskTracker::new(), CancellationToken::new());
    let _stop = cancel.clone().drop_guard();
    let broker_epoch = keel_tests::register_broker(&client, 1, &tasks, &cancel).await;
    let opened = client
        .open_log(cpb::OpenLogRequest { owner: 1, owner_epoch: broker_epoch.0, ensemble: vec![], ack_quorum: 0 })
        .await
        .unwrap();
    let Outcome::LogOpened { log, epoch } = opened.1 else { panic!("OpenLog answered {:?}", opened.1) };
    let image = client.read_image().await.unwrap();
    assert!(
        image.wal_logs[&log].ensemble.iter().any(|member| member.node == NodeId(1)),
        "the log is on node 1: {:?}",
        image.wal_logs[&log]
    );

    info!(PHASE_ENTRIES, "fill about three segments, then commit a trim point past all of it");
    let acknowledged = append(&mut test, (log, epoch), 1..=PHASE_ENTRIES, None).await;
    assert_eq!(acknowledged, PHASE_ENTRIES);
    let trim = cpb::CommitUploadRequest {
        broker: 1,
        broker_epoch: broker_epoch.0,
        log: log.0,
        log_epoch: epoch.0,
        trim_seq: PHASE_ENTRIES,
        objects: b"[]".to_vec(),
    };
    client.commit_upload(trim).await.unwrap();
    let freed = eventually(Duration::from_secs(30), "the node keeps its trimmed segments for reuse", || async {
        let freed = recycled_files(&data_dir);
        (freed >= 2).then_some(freed)
    })
    .await;

    info!(freed, "write over the recycled segments and kill -9 the node in the middle");
    let last = 2 * PHASE_ENTRIES;
    let acknowledged = append(&mut test, (log, epoch), PHASE_ENTRIES + 1..=last, Some(PHASE_ENTRIES / 2)).await;
    assert!((PHASE_ENTRIES / 2..PHASE_ENTRIES).contains(&acknowledged), "{acknowledged} acknowledged");
    let acknowledged = PHASE_ENTRIES + acknowledged;
    assert!(recycled_files(&data_dir) < freed, "the node wrote into its recycled segments");

    info!(acknowledged, "restart it: everything it acknowledged since the trim is back, and nothing older");
    test.cluster.start_wal(0).unwrap();
    let addr = test.cluster.wal_nodes[0].spec.grpc;
    let mut wal = keel_tests::wal_client_when_up(addr).await;
    let status = wal.status(pb::StatusRequest {}).await.unwrap().into_inner();
    let held = status.logs.iter().find(|held| held.log == log.0).expect("the log is held");
    assert!(held.last_seq >= acknowledged, "{status:?}");
    assert_eq!(held.trim_seq, PHASE_ENTRIES, "{status:?}");
    let entries = fence_and_read(&mut wal, (log, epoch), acknowledged).await;
    let first = Entry::decode(entries[0].clone()).unwrap().header.seq;
    assert_eq!(first, Seq(PHASE_ENTRIES + 1), "reads start after the trim");
    for (bytes, seq) in entries.iter().zip(first.0..) {
        assert!(*bytes == entry(log, epoch, seq), "entry {seq} reads back byte for byte");
    }
    test.assert_clean_logs(&[]);
}

/// A file of a segment being zero-filled (`*.kseg.new`) in `dir`'s journal.
fn filling(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("journal"))
        .map(|files| files.flatten().any(|f| f.file_name().to_string_lossy().ends_with(".kseg.new")))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wal_node_killed_while_it_zero_fills_a_segment_keeps_what_it_acknowledged() {
    let mut test = TestCluster::start(1, &[]).await.unwrap();
    test.cluster.add_free_port_wal_nodes(1).unwrap();
    // No recycled segments: every new segment is zero-filled first.
    test.cluster.wal_nodes[0].spec.args =
        ["--segment-bytes", &SEGMENT_BYTES.to_string(), "--recycled-segments", "0"].map(String::from).to_vec();
    test.cluster.start_all_wal().unwrap();
    test.cluster.wait_for_wal_nodes(Duration::from_secs(60)).await.unwrap();
    let data_dir = test.cluster.wal_nodes[0].spec.data_dir.clone();
    let addr = test.cluster.wal_nodes[0].spec.grpc;
    let epoch = LogEpoch(1);

    // Each round writes its own log and kills the node as soon as it sees a
    // segment being filled; a round counts if the file is still unfinished
    // once the node is dead.
    let mut written: Vec<(LogId, u64)> = Vec::new();
    let mut killed_mid_fill = false;
    for round in 1..=5u64 {
        let log = LogId(round);
        let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut appending = tokio::task::JoinSet::new();
        let append_task = {
            let acked = acked.clone();
            appending.spawn(async move {
                let requests = (1..=4 * PHASE_ENTRIES)
                    .map(move |seq| pb::AppendRequest { epoch: epoch.0, entries: vec![entry(log, epoch, seq)] });
                let mut wal = keel_tests::wal_client(addr).await.unwrap();
                let mut replies = wal.append(tokio_stream::iter(requests)).await.unwrap().into_inner();
                while let Ok(Some(reply)) = replies.message().await {
                    let next = acked.load(std::sync::atomic::Ordering::SeqCst) + 1;
                    assert_eq!((reply.code, reply.seq), (pb::ErrorCode::Ok as i32, next), "{reply:?}");
                    acked.store(next, std::sync::atomic::Ordering::SeqCst);
                }
            })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        // Past the first segment, so the node has rolled over into a filled one.
        while !(acked.load(std::sync::atomic::Ordering::SeqCst) > PHASE_ENTRIES / 2 && filling(&data_dir)) {
            assert!(tokio::time::Instant::now() < deadline, "round {round}: the node never filled a segment");
            assert!(!append_task.is_finished(), "round {round}: every append was acknowledged before a fill was seen");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        test.cluster.wal_nodes[0].kill9();
        killed_mid_fill = filling(&data_dir);
        appending.join_next().await.expect("the appender").unwrap();
        let acked = acked.load(std::sync::atomic::Ordering::SeqCst);
        info!(round, acked, killed_mid_fill, "killed -9 while appending");
        written.push((log, acked));

        test.cluster.start_wal(0).unwrap();
        let mut wal = keel_tests::wal_client_when_up(addr).await;
        let status = wal.status(pb::StatusRequest {}).await.unwrap().into_inner();
        for (log, acked) in &written {
            let held = status.logs.iter().find(|held| held.log == log.0).expect("the log is held");
            assert!(held.last_seq >= *acked, "{log}: {acked} acknowledged: {status:?}");
        }
        if killed_mid_fill {
            break;
        }
    }
    assert!(killed_mid_fill, "no kill landed while a segment was being zero-filled");

    info!("every entry acknowledged in every round reads back byte for byte");
    let mut wal = keel_tests::wal_client_when_up(addr).await;
    for (log, acked) in written {
        let entries = fence_and_read(&mut wal, (log, epoch), acked).await;
        for (bytes, seq) in entries.iter().zip(1..) {
            assert!(*bytes == entry(log, epoch, seq), "{log}: entry {seq} reads back byte for byte");
        }
    }
    test.assert_clean_logs(&[]);
}

//! A WAL node's gRPC service over a real journal on disk, on loopback:
//! pipelined appends acknowledged in order, reads bounded by what is
//! committed, fencing, bad input, and a restart from the journal.

use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use keel_controller_client::StreamId;
use keel_proto::wal as pb;
use keel_wal::journal::{Journal, JournalOptions};
use keel_wal::service::WalService;
use keel_wal_client::entry::{Entry, EntryHeader, Record};
use keel_wal_client::ids::{LogEpoch, LogId, Offset, Seq};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

struct Node {
    addr: SocketAddr,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

async fn start_node(dir: &Path) -> Node {
    start_capped_node(dir, None).await
}

async fn start_capped_node(dir: &Path, journal_bytes_max: Option<u64>) -> Node {
    let options = JournalOptions {
        dir: dir.to_path_buf(),
        segment_bytes: 1 << 20,
        journal_bytes_max,
        recycled_segments_max: 4,
        faults: None,
    };
    let (journal, _) = Journal::open(options).unwrap();
    let metrics = keel_wal::Metrics::new(&prometheus::Registry::new()).unwrap();
    let (store, _thread) = keel_wal::store::start(journal, 1024, metrics, CancellationToken::new()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let service = WalService::new(store, "test".into(), tasks.clone(), cancel.clone());
    let server = tonic::transport::Server::builder()
        .add_service(pb::wal_server::WalServer::new(service))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), cancel.clone().cancelled_owned());
    tasks.spawn(async move { server.await.unwrap() });
    Node { addr, cancel, tasks }
}

async fn stop_node(node: Node) {
    node.cancel.cancel();
    node.tasks.close();
    node.tasks.wait().await;
}

fn entry(seq: u64, acked: u64) -> Bytes {
    let header = EntryHeader { log: LogId(1), epoch: LogEpoch(1), seq: Seq(seq), acked: Seq(acked) };
    let record = Record {
        stream: StreamId(3),
        base_offset: Offset(seq as i64),
        record_count: 1,
        batch: Bytes::from(format!("record {seq}")),
    };
    Entry::build(header, vec![record]).unwrap().bytes
}

async fn client(addr: SocketAddr) -> pb::wal_client::WalClient<tonic::transport::Channel> {
    pb::wal_client::WalClient::connect(format!("http://{addr}")).await.unwrap()
}

/// Sends `requests` on one append stream and returns the replies.
async fn append_all(addr: SocketAddr, requests: Vec<pb::AppendRequest>) -> Vec<pb::AppendReply> {
    let count = requests.len();
    let mut replies = client(addr).await.append(tokio_stream::iter(requests)).await.unwrap().into_inner();
    let mut received = Vec::new();
    while received.len() < count {
        received.push(replies.message().await.unwrap().expect("a reply per request"));
    }
    received
}

fn code(reply_code: i32) -> pb::ErrorCode {
    pb::ErrorCode::try_from(reply_code).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_acknowledges_in_order_fences_and_restarts_from_its_journal() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path()).await;

    // 1000 pipelined appends; the writer had acknowledged up to seq - 1 when sending each.
    let requests = (1..=1000).map(|seq| pb::AppendRequest { epoch: 1, entries: vec![entry(seq, seq - 1)] }).collect();
    let replies = append_all(node.addr, requests).await;
    for (index, reply) in replies.iter().enumerate() {
        assert_eq!((code(reply.code), reply.log, reply.seq), (pb::ErrorCode::Ok, 1, index as u64 + 1), "{reply:?}");
    }

    // A reader is served only what the writer had acknowledged: up to 999.
    let mut wal = client(node.addr).await;
    let read = wal
        .read(pb::ReadRequest { log: 1, from_seq: 990, max_bytes: 1 << 20, recovery_epoch: 0, sealed_seq: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.readable_end, 999);
    assert_eq!(read.entries.len(), 10);
    assert_eq!(read.entries[9], entry(999, 998));

    // Fence at epoch 2: the old writer is refused, the recoverer is served everything and may append.
    let fenced = wal.fence(pb::FenceRequest { log: 1, epoch: 2 }).await.unwrap().into_inner();
    assert_eq!((code(fenced.code), fenced.last_seq), (pb::ErrorCode::Ok, 1000));
    let stale = wal.fence(pb::FenceRequest { log: 1, epoch: 1 }).await.unwrap().into_inner();
    assert_eq!(code(stale.code), pb::ErrorCode::StaleEpoch);
    let replies = append_all(
        node.addr,
        vec![
            pb::AppendRequest { epoch: 1, entries: vec![entry(1001, 1000)] },
            pb::AppendRequest { epoch: 2, entries: vec![entry(1001, 1000)] },
            pb::AppendRequest { epoch: 2, entries: vec![entry(1001, 1000)] },
            pb::AppendRequest { epoch: 2, entries: vec![entry(1005, 1000)] },
            pb::AppendRequest { epoch: 2, entries: vec![Bytes::from_static(b"not an entry")] },
        ],
    )
    .await;
    let codes: Vec<pb::ErrorCode> = replies.iter().map(|reply| code(reply.code)).collect();
    use pb::ErrorCode::{BadEntry, Fenced, Gap, Ok};
    assert_eq!(codes, vec![Fenced, Ok, Ok, Gap, BadEntry], "{replies:?}");
    assert_eq!((replies[0].epoch, replies[3].last_seq), (2, 1001));
    let recovery = wal
        .read(pb::ReadRequest { log: 1, from_seq: 995, max_bytes: 1 << 20, recovery_epoch: 2, sealed_seq: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((recovery.readable_end, recovery.entries.len()), (1001, 7));

    // Restart from the journal: entries, the fence and the writer's acknowledged seq are back.
    stop_node(node).await;
    let node = start_node(dir.path()).await;
    let mut wal = client(node.addr).await;
    let status = wal.status(pb::StatusRequest {}).await.unwrap().into_inner();
    let log = &status.logs[0];
    assert_eq!((log.log, log.epoch, log.last_seq, log.writer_acked), (1, 2, 1001, 1000));
    let replies = append_all(node.addr, vec![pb::AppendRequest { epoch: 1, entries: vec![entry(1002, 1001)] }]).await;
    assert_eq!(code(replies[0].code), pb::ErrorCode::Fenced, "the fence survives a restart");
    let read = wal
        .read(pb::ReadRequest { log: 1, from_seq: 1, max_bytes: 0, recovery_epoch: 0, sealed_seq: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.entries, vec![entry(1, 0).to_vec()], "max_bytes 0 still returns one entry");
    let unknown = wal
        .read(pb::ReadRequest { log: 9, from_seq: 1, max_bytes: 1, recovery_epoch: 0, sealed_seq: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(unknown.code), pb::ErrorCode::UnknownLog);
    stop_node(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_of_many_entries_gets_one_reply_and_stops_at_the_first_refusal() {
    use pb::ErrorCode::{BadEntry, Gap, Ok};
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path()).await;
    let replies = append_all(
        node.addr,
        vec![
            pb::AppendRequest { epoch: 1, entries: (1..=5).map(|seq| entry(seq, seq - 1)).collect() },
            // 6 is taken, 8 leaves a gap, 7 after it is not tried.
            pb::AppendRequest { epoch: 1, entries: vec![entry(6, 5), entry(8, 5), entry(7, 5)] },
            pb::AppendRequest { epoch: 1, entries: vec![] },
        ],
    )
    .await;
    let got: Vec<_> = replies.iter().map(|reply| (code(reply.code), reply.seq, reply.durable_seq)).collect();
    assert_eq!(got, vec![(Ok, 5, 5), (Gap, 8, 6), (BadEntry, 0, 0)], "{replies:?}");
    let mut wal = client(node.addr).await;
    let status = wal.status(pb::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.logs[0].last_seq, 6, "{status:?}");
    stop_node(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_journal_refuses_appends_retriably_and_keeps_what_it_has() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_capped_node(dir.path(), Some(1 << 20)).await;
    let requests = (1..=20_000).map(|seq| pb::AppendRequest { epoch: 1, entries: vec![entry(seq, seq - 1)] }).collect();
    let replies = append_all(node.addr, requests).await;
    let stored = replies.iter().take_while(|reply| code(reply.code) == pb::ErrorCode::Ok).count() as u64;
    assert!(stored > 1000 && stored < 20_000, "{stored} stored before the cap");
    let refused = &replies[stored as usize];
    assert_eq!(code(refused.code), pb::ErrorCode::Unavailable, "{refused:?}");
    assert!(refused.message.contains("cap"), "a clear reason: {}", refused.message);

    let mut wal = client(node.addr).await;
    let read = wal
        .read(pb::ReadRequest { log: 1, from_seq: stored - 1, max_bytes: 1 << 20, recovery_epoch: 0, sealed_seq: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.entries, vec![entry(stored - 1, stored - 2).to_vec()], "what was stored is intact");
    stop_node(node).await;

    let node = start_capped_node(dir.path(), Some(4 << 20)).await;
    let next = vec![pb::AppendRequest { epoch: 1, entries: vec![entry(stored + 1, stored)] }];
    assert_eq!(code(append_all(node.addr, next).await[0].code), pb::ErrorCode::Ok, "with room again, appends resume");
    stop_node(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_read_up_to_what_is_committed_and_malformed_records_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path()).await;
    let requests = (1..=10).map(|seq| pb::AppendRequest { epoch: 1, entries: vec![entry(seq, seq - 1)] }).collect();
    assert!(append_all(node.addr, requests).await.iter().all(|reply| code(reply.code) == pb::ErrorCode::Ok));

    let mut wal = client(node.addr).await;
    let read = wal
        .read_stream(pb::ReadStreamRequest { log: 1, stream: 3, from_offset: 4, max_bytes: 1 << 20, sealed_seq: 0 })
        .await
        .unwrap()
        .into_inner();
    let offsets: Vec<i64> = read.batches.iter().map(|batch| batch.base_offset).collect();
    assert_eq!(offsets, vec![4, 5, 6, 7, 8, 9], "entry 10 is not known to be committed yet");
    assert_eq!(read.readable_end_seq, 9);
    assert_eq!(read.batches[0].batch, b"record 4".to_vec());
    // A reader of a sealed log is bounded by the sealed seq the controller
    // recorded, not by the writer's acknowledgements.
    let sealed = wal
        .read_stream(pb::ReadStreamRequest { log: 1, stream: 3, from_offset: 9, max_bytes: 1 << 20, sealed_seq: 10 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sealed.batches.iter().map(|b| b.base_offset).collect::<Vec<_>>(), vec![9, 10]);
    assert_eq!(sealed.readable_end_seq, 10);

    // A well-checksummed entry whose record count runs past its end.
    let mut forged = entry(11, 10).to_vec();
    forged[48..52].copy_from_slice(&5u32.to_be_bytes());
    let crc = crc32c::crc32c(&forged[12..]);
    forged[8..12].copy_from_slice(&crc.to_be_bytes());
    let replies = append_all(node.addr, vec![pb::AppendRequest { epoch: 1, entries: vec![forged.into()] }]).await;
    assert_eq!(code(replies[0].code), pb::ErrorCode::BadEntry, "{replies:?}");
    let replies = append_all(node.addr, vec![pb::AppendRequest { epoch: 1, entries: vec![entry(11, 10)] }]).await;
    assert_eq!(code(replies[0].code), pb::ErrorCode::Ok, "the node keeps working");
    stop_node(node).await;
}

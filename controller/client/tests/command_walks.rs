//! Walks through the metadata rules with commands built from the current
//! image, as brokers and the controller build them (mostly valid, some
//! stale or off by one), so that the deep states are reached: WAL logs
//! opened, recovered, sealed, uploaded and forgotten; partitions assigned,
//! closed, moved; objects committed, deleted and purged. After every step:
//!
//! - `check` predicts `apply`, and a refused command changes nothing;
//! - no partition is led by a fenced or unknown broker;
//! - `AssignLeader` applies only when the handover is ready;
//! - uploaded ends and start offsets only grow;
//! - a stream's ranges in the object index never overlap, and those with
//!   readable records follow one another from its start offset to its
//!   uploaded end: no object that holds readable records leaves the index.
//!
//! How many commands of each kind applied is counted over the whole run and
//! asserted, so that no property holds only because nothing was tried.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use keel_controller_client::{
    Command, EnsembleMember, Epoch, Image, LeaderEpoch, LogEpoch, NodeId, NodeKind, NodeState, ObjectId, ObjectRange,
    ObjectRecord, Offset, Seq, StreamId, TopicId, Version, WalLogState,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const KINDS: [&str; 17] = [
    "register_broker",
    "register_wal",
    "fence",
    "create_topic",
    "delete_topic",
    "open_log",
    "recover_log",
    "seal_log",
    "reserve_objects",
    "commit_upload",
    "assign_leader",
    "close_partition",
    "move_partition",
    "advance_start_offset",
    "delete_objects",
    "purge_objects",
    "forget_logs",
];

static APPLIED: [AtomicU64; KINDS.len()] = [const { AtomicU64::new(0) }; KINDS.len()];
/// Uploads that committed objects (not only a trim point).
static UPLOADED_OBJECTS: AtomicU64 = AtomicU64::new(0);

/// One step: the kind of command, numbers to choose its arguments with, and
/// whether to spoil it (a stale epoch, an offset one off).
#[derive(Clone, Debug)]
struct Step {
    kind: usize,
    pick: u64,
    amount: u64,
    spoil: bool,
}

fn step() -> impl Strategy<Value = Step> {
    (0..KINDS.len(), any::<u64>(), 0u64..12, proptest::bool::weighted(0.15))
        .prop_map(|(kind, pick, amount, spoil)| Step { kind, pick, amount, spoil })
}

/// The `pick`-th of `items` (wrapping), if there are any.
fn choose<T: Clone>(items: &[T], pick: u64) -> Option<T> {
    (!items.is_empty()).then(|| items[(pick % items.len() as u64) as usize].clone())
}

fn active(image: &Image, kind: NodeKind) -> Vec<(NodeId, Epoch)> {
    let nodes = if kind == NodeKind::Broker { &image.brokers } else { &image.wal_nodes };
    nodes.values().filter(|n| n.state == NodeState::Active).map(|n| (n.id, n.epoch)).collect()
}

/// Every partition: topic id, index, record.
fn partitions(image: &Image) -> Vec<(TopicId, u32, keel_controller_client::Partition)> {
    image
        .topics
        .values()
        .flat_map(|t| t.partitions.iter().enumerate().map(move |(i, p)| (t.id, i as u32, p.clone())))
        .collect()
}

fn off_by(spoil: bool) -> u64 {
    u64::from(spoil)
}

/// Builds the command of `step` from `image`; `None` when the image offers
/// nothing to build it from.
fn build(image: &Image, step: &Step, now_ms: i64) -> Option<Command> {
    let Step { pick, amount, spoil, .. } = *step;
    let zone = |id: u32| ["a", "b", "c"][(id as usize) % 3].to_owned();
    let brokers = active(image, NodeKind::Broker);
    Some(match KINDS[step.kind] {
        "register_broker" | "register_wal" => {
            let kind = if KINDS[step.kind] == "register_broker" { NodeKind::Broker } else { NodeKind::Wal };
            let id = (pick % 4) as u32;
            Command::RegisterNode {
                kind,
                id: NodeId(id),
                zone: zone(id),
                internal_addr: "127.0.0.1:1".into(),
                kafka_listeners: vec![],
                incarnation: format!("i{id}"),
            }
        }
        "fence" => {
            let all: Vec<_> = image.brokers.values().chain(image.wal_nodes.values()).collect();
            let node = choose(&all, pick)?;
            Command::FenceNode { kind: node.kind, id: node.id, epoch: Epoch(node.epoch.0 - off_by(spoil)) }
        }
        "create_topic" => {
            let count = 1 + (amount % 3) as usize;
            // Spoiled: proposed from an image in which a broker fenced since was still active.
            let known: Vec<(NodeId, Epoch)> = image.brokers.values().map(|b| (b.id, b.epoch)).collect();
            let from = if spoil { &known } else { &brokers };
            let leaders = (0..count).map(|i| choose(from, pick + i as u64).map(|(id, _)| id)).collect();
            Command::CreateTopic {
                id: TopicId(uuid::Uuid::from_u128(u128::from(pick))),
                name: format!("t{}", pick % 3),
                configs: BTreeMap::new(),
                owner: String::new(),
                description: String::new(),
                leaders,
            }
        }
        "delete_topic" => Command::DeleteTopic { name: format!("t{}", pick % 3) },
        "open_log" => {
            let (owner, epoch) = choose(&brokers, pick)?;
            let mut ensemble: BTreeMap<String, EnsembleMember> = BTreeMap::new();
            for node in image.wal_nodes.values().filter(|n| n.state == NodeState::Active) {
                ensemble.entry(node.zone.clone()).or_insert(EnsembleMember {
                    node: node.id,
                    zone: node.zone.clone(),
                    incarnation: node.incarnation.clone(),
                });
            }
            Command::OpenLog {
                owner,
                owner_epoch: Epoch(epoch.0 - off_by(spoil)),
                ensemble: ensemble.into_values().collect(),
                ack_quorum: 2,
            }
        }
        "recover_log" => {
            let logs: Vec<_> = image.wal_logs.values().filter(|l| image.orphaned(l)).collect();
            let log = choose(&logs, pick)?;
            let (recoverer, recoverer_epoch) = choose(&brokers, amount)?;
            let epoch = LogEpoch(log.epoch.0 + 1 + off_by(spoil));
            Command::RecoverLog { log: log.id, epoch, recoverer, recoverer_epoch }
        }
        "seal_log" => {
            let logs: Vec<_> =
                image.wal_logs.values().filter(|l| matches!(l.state, WalLogState::Recovering { .. })).collect();
            let log = choose(&logs, pick)?;
            let WalLogState::Recovering { recoverer } = log.state else { unreachable!() };
            let sender_epoch = image.brokers.get(&recoverer)?.epoch;
            // The owner's partitions reach a little past their uploaded ends.
            let stream_ends = partitions(image)
                .into_iter()
                .filter(|(_, _, p)| p.leader == Some(log.owner) || p.previous_leader == Some(log.owner))
                .map(|(_, _, p)| (p.stream_id, Offset(p.uploaded_end.0 + (amount % 4) as i64)))
                .collect();
            Command::SealLog {
                log: log.id,
                epoch: LogEpoch(log.epoch.0 - off_by(spoil)),
                sealed_seq: Seq(log.trim_seq.0 + amount % 5),
                stream_ends,
                sender: recoverer,
                sender_epoch,
            }
        }
        "reserve_objects" => {
            let (broker, broker_epoch) = choose(&brokers, pick)?;
            Command::ReserveObjects { broker, broker_epoch, count: 2, deadline_ms: now_ms + 5_000 }
        }
        "commit_upload" => {
            // The owner uploads its own log; a sealed orphan's, whoever recovered it.
            let logs: Vec<_> = image.wal_logs.values().collect();
            let log = choose(&logs, pick)?;
            let (broker, broker_epoch) = match &log.state {
                WalLogState::Sealed { .. } if image.orphaned(log) => choose(&brokers, amount)?,
                _ => (log.owner, log.owner_epoch),
            };
            let mine: Vec<ObjectId> = image
                .reservations
                .iter()
                .filter(|(_, r)| r.broker == broker && r.deadline_ms > now_ms)
                .map(|(id, _)| *id)
                .collect();
            let ranges: Vec<ObjectRange> = partitions(image)
                .into_iter()
                .filter(|(_, _, p)| p.leader == Some(log.owner) || p.previous_leader == Some(log.owner))
                .take(1 + (amount % 2) as usize)
                .map(|(_, _, p)| {
                    let start = Offset(p.uploaded_end.0 + off_by(spoil) as i64);
                    range(p.stream_id, start, Offset(start.0 + 1 + (amount % 5) as i64))
                })
                .collect();
            let objects = match choose(&mine, pick) {
                Some(id) if !ranges.is_empty() => vec![ObjectRecord { id, key: format!("o{}", id.0), size: 1, ranges }],
                _ => vec![],
            };
            let limit = match &log.state {
                WalLogState::Sealed { sealed_seq, .. } => sealed_seq.0,
                _ => u64::MAX,
            };
            Command::CommitUpload {
                broker,
                broker_epoch,
                log: log.id,
                log_epoch: log.epoch,
                trim_seq: Seq((log.trim_seq.0 + amount % 3).min(limit)),
                objects,
                now_ms,
            }
        }
        "assign_leader" => {
            let leaderless: Vec<_> = partitions(image).into_iter().filter(|(_, _, p)| p.leader.is_none()).collect();
            let (topic, partition, record) = choose(&leaderless, pick)?;
            let (leader, _) = choose(&brokers, amount)?;
            let leader_epoch = LeaderEpoch(record.leader_epoch.0 + 1 + off_by(spoil) as i32);
            Command::AssignLeader { topic, partition, leader, leader_epoch }
        }
        "close_partition" => {
            let led: Vec<_> = partitions(image).into_iter().filter(|(_, _, p)| p.leader.is_some()).collect();
            let (topic, partition, record) = choose(&led, pick)?;
            let sender = record.leader?;
            Command::ClosePartition {
                topic,
                partition,
                leader_epoch: record.leader_epoch,
                end_offset: Offset(record.uploaded_end.0 + off_by(spoil) as i64),
                sender,
                sender_epoch: image.brokers.get(&sender)?.epoch,
            }
        }
        "move_partition" => {
            let led: Vec<_> = partitions(image).into_iter().filter(|(_, _, p)| p.leader.is_some()).collect();
            let (topic, partition, record) = choose(&led, pick)?;
            let (to, _) = choose(&brokers, amount)?;
            Command::MovePartition { topic, partition, leader_epoch: record.leader_epoch, to }
        }
        "advance_start_offset" => {
            let led: Vec<_> = partitions(image).into_iter().filter(|(_, _, p)| p.leader.is_some()).collect();
            let (topic, partition, record) = choose(&led, pick)?;
            let sender = record.leader?;
            // A leader moves the start up to its high watermark: here, around the uploaded end.
            // (Often all that is uploaded, as retention of a short `retention.ms` does.)
            let start_offset = match amount % 2 {
                0 => record.uploaded_end.max(record.start_offset),
                _ => Offset((record.start_offset.0 + (amount % 4) as i64).min(record.uploaded_end.0 + 1)),
            };
            Command::AdvanceStartOffset {
                topic,
                partition,
                leader_epoch: LeaderEpoch(record.leader_epoch.0 - off_by(spoil) as i32),
                start_offset,
                sender,
                sender_epoch: image.brokers.get(&sender)?.epoch,
            }
        }
        "delete_objects" => {
            let (sender, sender_epoch) = choose(&brokers, pick)?;
            let candidates: Vec<ObjectId> = image
                .objects
                .values()
                .filter(|object| spoil || image.object_unreferenced(object))
                .map(|object| object.id)
                .collect();
            Command::DeleteObjects { objects: vec![choose(&candidates, amount)?], now_ms, sender, sender_epoch }
        }
        "purge_objects" => {
            let (sender, sender_epoch) = choose(&brokers, pick)?;
            let deleted: Vec<ObjectId> = image.deleted_objects.keys().copied().collect();
            let reservations: Vec<ObjectId> =
                image.reservations.iter().filter(|(_, r)| r.deadline_ms <= now_ms).map(|(id, _)| *id).collect();
            if deleted.is_empty() && reservations.is_empty() {
                return None;
            }
            Command::PurgeObjects {
                deleted,
                reservations,
                grace_ms: if spoil { i64::MAX / 2 } else { 0 },
                now_ms,
                sender,
                sender_epoch,
            }
        }
        "forget_logs" => {
            let (sender, sender_epoch) = choose(&brokers, pick)?;
            let logs = image
                .wal_logs
                .values()
                .filter(|l| {
                    spoil || matches!(&l.state, WalLogState::Sealed { sealed_seq, .. } if l.trim_seq >= *sealed_seq)
                })
                .map(|l| l.id)
                .collect::<Vec<_>>();
            if logs.is_empty() {
                return None;
            }
            Command::ForgetLogs { logs, sender, sender_epoch }
        }
        other => unreachable!("kind {other}"),
    })
}

fn range(stream: StreamId, start: Offset, end: Offset) -> ObjectRange {
    ObjectRange { stream, start, end, pos: 0, len: 1, min_ts: 0, max_ts: 0, snapshot_pos: 0, snapshot_len: 0 }
}

fn assert_invariants(before: &Image, after: &Image, command: &Command, applied: bool) {
    for (topic, index, partition) in partitions(after) {
        if let Some(leader) = partition.leader {
            let state = after.brokers.get(&leader).map(|b| b.state);
            assert_eq!(state, Some(NodeState::Active), "{topic} {index} led by broker {leader} in state {state:?}");
        }
        if let Some((_, _, old)) = before.partition_of_stream(partition.stream_id) {
            assert!(partition.uploaded_end >= old.uploaded_end, "{}: uploaded end went back", partition.stream_id);
            assert!(partition.start_offset >= old.start_offset, "{}: start offset went back", partition.stream_id);
        }
        // The stream's ranges never overlap, and those that hold readable
        // records (past the start offset) follow one another from the start
        // offset to the uploaded end: no object with readable records leaves
        // the index.
        let mut ranges: Vec<&ObjectRange> =
            after.objects.values().flat_map(|o| &o.ranges).filter(|r| r.stream == partition.stream_id).collect();
        ranges.sort_by_key(|r| r.start);
        for pair in ranges.windows(2) {
            assert!(pair[0].end <= pair[1].start, "{}: ranges overlap", partition.stream_id);
        }
        let readable: Vec<&&ObjectRange> = ranges.iter().filter(|r| r.end > partition.start_offset).collect();
        if partition.start_offset < partition.uploaded_end {
            let (first, last) = (readable.first().expect("readable ranges"), readable.last().expect("readable ranges"));
            assert!(
                first.start <= partition.start_offset,
                "{}: readable records lost their object",
                partition.stream_id
            );
            assert_eq!(last.end, partition.uploaded_end, "{}: the ranges reach the uploaded end", partition.stream_id);
            for pair in readable.windows(2) {
                assert_eq!(pair[0].end, pair[1].start, "{}: a gap in readable ranges", partition.stream_id);
            }
        }
    }
    if let (true, Command::AssignLeader { topic, partition, .. }) = (applied, command) {
        let record = before.topic_by_id(*topic).map(|t| t.partitions[*partition as usize].clone()).unwrap();
        assert!(before.handover_ready(&record), "AssignLeader applied before the handover was ready");
    }
    for (id, old) in &before.wal_logs {
        match after.wal_logs.get(id) {
            Some(new) => assert!(new.trim_seq >= old.trim_seq && new.epoch >= old.epoch, "{id} went back"),
            None => assert!(
                matches!(&old.state, WalLogState::Sealed { sealed_seq, .. } if old.trim_seq >= *sealed_seq),
                "{id} forgotten before it was done"
            ),
        }
    }
}

fn walk(steps: &[Step]) -> Result<(), TestCaseError> {
    let mut image = Image::default();
    for (index, step) in steps.iter().enumerate() {
        let version = Version(index as u64 + 1);
        let now_ms = index as i64 * 100;
        let Some(command) = build(&image, step, now_ms) else { continue };
        let predicted = image.check(&command);
        let before = image.clone();
        let result = image.apply(version, &command);
        prop_assert_eq!(predicted.is_ok(), result.is_ok(), "check and apply disagree on {:?}", command);
        if result.is_err() {
            prop_assert_eq!(&Image { version, ..before.clone() }, &image, "a refused command changed the image");
        } else {
            APPLIED[step.kind].fetch_add(1, Ordering::Relaxed);
            if matches!(&command, Command::CommitUpload { objects, .. } if !objects.is_empty()) {
                UPLOADED_OBJECTS.fetch_add(1, Ordering::Relaxed);
            }
        }
        assert_invariants(&before, &image, &command, result.is_ok());
    }
    Ok(())
}

#[test]
fn walks_through_every_command_keep_the_invariants() {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let mut runner = TestRunner::new(Config { cases, ..Config::default() });
    runner
        .run(&proptest::collection::vec(step(), 50..300), |steps| walk(&steps))
        .unwrap_or_else(|error| panic!("{error}"));
    let applied: BTreeMap<&str, u64> =
        KINDS.iter().zip(&APPLIED).map(|(kind, count)| (*kind, count.load(Ordering::Relaxed))).collect();
    eprintln!("commands applied over {cases} walks: {applied:?}");
    let uploads = UPLOADED_OBJECTS.load(Ordering::Relaxed);
    eprintln!("uploads that committed objects: {uploads}");
    for (kind, count) in &applied {
        assert!(*count >= cases as u64 / 20, "only {count} {kind} applied in {cases} walks: {applied:?}");
    }
    assert!(uploads >= cases as u64 / 20, "only {uploads} uploads committed objects");
}

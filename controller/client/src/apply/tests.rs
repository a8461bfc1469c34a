use std::collections::BTreeMap;

use uuid::Uuid;

use super::*;
use crate::ids::{Seq, TopicId};
use crate::image::ObjectRange;

fn register(image: &mut Image, version: u64, kind: NodeKind, id: u32) -> Epoch {
    register_in(image, version, kind, id, "a")
}

fn register_in(image: &mut Image, version: u64, kind: NodeKind, id: u32, zone: &str) -> Epoch {
    let command = Command::RegisterNode {
        kind,
        id: NodeId(id),
        zone: zone.into(),
        internal_addr: "127.0.0.1:1".into(),
        kafka_listeners: vec![],
        incarnation: "i".into(),
    };
    match image.apply(Version(version), &command) {
        Ok(Outcome::Registered { epoch }) => epoch,
        other => panic!("register failed: {other:?}"),
    }
}

fn create_topic(name: &str, partitions: usize) -> Command {
    Command::CreateTopic {
        id: TopicId(Uuid::new_v4()),
        name: name.into(),
        configs: BTreeMap::new(),
        owner: String::new(),
        description: String::new(),
        leaders: vec![None; partitions],
    }
}

#[test]
fn every_registration_gets_a_new_larger_epoch() {
    let mut image = Image::default();
    let first = register(&mut image, 1, NodeKind::Broker, 7);
    let second = register(&mut image, 5, NodeKind::Broker, 7);
    assert!(second > first);
    assert_eq!(image.brokers[&NodeId(7)].epoch, second);
    assert_eq!(image.brokers[&NodeId(7)].state, NodeState::Active);
}

#[test]
fn a_fence_for_an_old_epoch_does_not_touch_a_new_registration() {
    let mut image = Image::default();
    let old = register(&mut image, 1, NodeKind::Wal, 1);
    let new = register(&mut image, 2, NodeKind::Wal, 1);
    let outcome = image.apply(Version(3), &Command::FenceNode { kind: NodeKind::Wal, id: NodeId(1), epoch: old });
    assert_eq!(outcome, Ok(Outcome::Fenced { applied: false }));
    assert_eq!(image.check_active(NodeKind::Wal, NodeId(1), new), Ok(()));

    let outcome = image.apply(Version(4), &Command::FenceNode { kind: NodeKind::Wal, id: NodeId(1), epoch: new });
    assert_eq!(outcome, Ok(Outcome::Fenced { applied: true }));
    assert_eq!(
        image.check_active(NodeKind::Wal, NodeId(1), new),
        Err(MetaError::Fenced { kind: NodeKind::Wal, node: NodeId(1), epoch: new })
    );
    assert!(matches!(image.check_active(NodeKind::Wal, NodeId(1), old), Err(MetaError::StaleEpoch { .. })));
}

#[test]
fn a_refused_command_changes_nothing_but_the_version() {
    let mut image = Image::default();
    image.apply(Version(1), &create_topic("orders", 3)).unwrap();
    let before = image.clone();

    let duplicate = image.apply(Version(2), &create_topic("orders", 1));
    assert_eq!(duplicate, Err(MetaError::TopicAlreadyExists { name: "orders".into() }));
    let colliding = image.apply(Version(3), &create_topic("orders", 1));
    assert!(colliding.is_err());
    let bad_config = Command::AlterConfigs {
        name: "orders".into(),
        set: BTreeMap::from([("retention.ms".into(), "1000".into()), ("nope".into(), "1".into())]),
        delete: vec![],
    };
    assert_eq!(image.apply(Version(4), &bad_config), Err(MetaError::UnknownConfig { key: "nope".into() }));

    assert_eq!(Image { version: before.version, ..image.clone() }, before);
    assert_eq!(image.version, Version(4));
}

#[test]
fn a_delta_that_does_not_follow_the_image_changes_nothing() {
    let mut image = Image::default();
    image.apply(Version(5), &create_topic("a", 1)).unwrap();
    let before = image.clone();
    let result = image.apply(Version(5), &create_topic("b", 1));
    assert_eq!(result, Err(MetaError::VersionNotAfter { version: Version(5), current: Version(5) }));
    assert_eq!(image, before);
}

#[test]
fn names_that_differ_only_in_dot_and_underscore_collide() {
    let mut image = Image::default();
    image.apply(Version(1), &create_topic("a.b", 1)).unwrap();
    assert!(matches!(image.apply(Version(2), &create_topic("a_b", 1)), Err(MetaError::InvalidTopicName { .. })));
}

#[test]
fn internal_topics_are_never_grown_or_deleted() {
    let mut image = Image::default();
    image.apply(Version(1), &create_topic("__consumer_offsets", 12)).unwrap();
    let grow = Command::CreatePartitions { name: "__consumer_offsets".into(), leaders: vec![None] };
    assert!(matches!(image.apply(Version(2), &grow), Err(MetaError::InvalidRequest { .. })));
    let delete = Command::DeleteTopic { name: "__consumer_offsets".into() };
    assert!(matches!(image.apply(Version(3), &delete), Err(MetaError::InvalidRequest { .. })));
    assert_eq!(image.topics["__consumer_offsets"].partitions.len(), 12);
}

#[test]
fn stream_ids_are_never_reused() {
    let mut image = Image::default();
    image.apply(Version(1), &create_topic("a", 2)).unwrap();
    image.apply(Version(2), &Command::DeleteTopic { name: "a".into() }).unwrap();
    image.apply(Version(3), &create_topic("a", 1)).unwrap();
    image.apply(Version(4), &Command::CreatePartitions { name: "a".into(), leaders: vec![None] }).unwrap();
    let streams: Vec<StreamId> = image.topics["a"].partitions.iter().map(|p| p.stream_id).collect();
    assert_eq!(streams, vec![StreamId(2), StreamId(3)]);
}

#[test]
fn producer_id_blocks_go_only_to_active_brokers_and_never_overlap() {
    let mut image = Image::default();
    let epoch = register(&mut image, 1, NodeKind::Broker, 1);
    let allocate = |epoch| Command::AllocateProducerIds { broker: NodeId(1), broker_epoch: epoch };
    let first = image.apply(Version(2), &allocate(epoch)).unwrap();
    let second = image.apply(Version(3), &allocate(epoch)).unwrap();
    assert_eq!(first, Outcome::ProducerIds { first: ProducerId(0), count: PRODUCER_ID_BLOCK_SIZE });
    assert_eq!(second, Outcome::ProducerIds { first: ProducerId(1000), count: PRODUCER_ID_BLOCK_SIZE });
    assert!(matches!(image.apply(Version(4), &allocate(Epoch(99))), Err(MetaError::StaleEpoch { .. })));
}

#[test]
fn leaders_are_placed_on_the_least_loaded_active_broker() {
    let mut image = Image::default();
    assert_eq!(image.place_leaders(2), vec![None, None]);
    register(&mut image, 1, NodeKind::Broker, 1);
    register(&mut image, 2, NodeKind::Broker, 2);
    let leaders = image.place_leaders(3);
    assert_eq!(leaders, vec![Some(NodeId(1)), Some(NodeId(2)), Some(NodeId(1))]);
    image
        .apply(
            Version(3),
            &Command::CreateTopic {
                id: TopicId(Uuid::new_v4()),
                name: "t".into(),
                configs: BTreeMap::new(),
                owner: String::new(),
                description: String::new(),
                leaders,
            },
        )
        .unwrap();
    assert_eq!(image.place_leaders(1), vec![Some(NodeId(2))]);
}

fn register_wal(image: &mut Image, version: u64, id: u32, zone: &str) {
    let command = Command::RegisterNode {
        kind: NodeKind::Wal,
        id: NodeId(id),
        zone: zone.into(),
        internal_addr: "127.0.0.1:2".into(),
        kafka_listeners: vec![],
        incarnation: format!("inc-{id}"),
    };
    image.apply(Version(version), &command).unwrap();
}

/// WAL nodes 1, 2 and 3 in zones a, b and c, registered at `version` and the two after.
fn register_wal_zones(image: &mut Image, version: u64) {
    for (offset, (id, zone)) in [(1, "a"), (2, "b"), (3, "c")].into_iter().enumerate() {
        register_wal(image, version + offset as u64, id, zone);
    }
}

fn ensemble() -> Vec<EnsembleMember> {
    [(1, "a"), (2, "b"), (3, "c")]
        .iter()
        .map(|(id, zone)| EnsembleMember {
            node: NodeId(*id),
            zone: zone.to_string(),
            incarnation: format!("inc-{id}"),
        })
        .collect()
}

/// Issue 21: a one-member ensemble with an ack quorum of 1 was accepted.
#[test]
fn an_ensemble_needs_an_ack_quorum_of_two_zones() {
    let mut image = Image::default();
    let owner = register(&mut image, 1, NodeKind::Broker, 1);
    register_wal_zones(&mut image, 3);
    let open = |ensemble: Vec<EnsembleMember>, ack_quorum| Command::OpenLog {
        owner: NodeId(1),
        owner_epoch: owner,
        ensemble,
        ack_quorum,
    };
    let alone = image.apply(Version(6), &open(ensemble()[..1].to_vec(), 1));
    assert!(matches!(alone, Err(MetaError::InvalidRequest { .. })), "{alone:?}");
    let one_of_three = image.apply(Version(7), &open(ensemble(), 1));
    assert!(matches!(one_of_three, Err(MetaError::InvalidRequest { .. })), "{one_of_three:?}");
    assert!(image.apply(Version(8), &open(ensemble()[..2].to_vec(), 2)).is_ok(), "two zones, ack quorum 2");
}

#[test]
fn a_wal_log_is_opened_recovered_once_per_epoch_and_sealed_for_good() {
    let mut image = Image::default();
    let owner = register(&mut image, 1, NodeKind::Broker, 1);
    let recoverer = register(&mut image, 2, NodeKind::Broker, 2);
    register_wal_zones(&mut image, 3);
    let open = Command::OpenLog { owner: NodeId(1), owner_epoch: owner, ensemble: ensemble(), ack_quorum: 2 };
    assert_eq!(image.apply(Version(6), &open), Ok(Outcome::LogOpened { log: LogId(1), epoch: LogEpoch(1) }));
    assert_eq!(image.apply(Version(7), &open), Ok(Outcome::LogOpened { log: LogId(2), epoch: LogEpoch(1) }));

    let recover = |epoch| Command::RecoverLog {
        log: LogId(1),
        epoch: LogEpoch(epoch),
        recoverer: NodeId(2),
        recoverer_epoch: recoverer,
    };
    assert!(
        matches!(image.apply(Version(8), &recover(2)), Err(MetaError::LogStillWritten { .. })),
        "a log whose owner still writes it is not recovered"
    );
    let owner_again = register(&mut image, 9, NodeKind::Broker, 1);
    assert!(
        matches!(image.apply(Version(10), &recover(3)), Err(MetaError::LogEpochMismatch { .. })),
        "epochs cannot be skipped"
    );
    assert_eq!(image.apply(Version(11), &recover(2)), Ok(Outcome::LogRecovering { log: LogId(1), epoch: LogEpoch(2) }));
    assert!(
        matches!(image.apply(Version(12), &recover(2)), Err(MetaError::LogEpochMismatch { .. })),
        "a second recoverer at the same epoch loses"
    );

    let seal = |sender, sender_epoch, epoch| Command::SealLog {
        log: LogId(1),
        epoch: LogEpoch(epoch),
        sealed_seq: Seq(40),
        stream_ends: vec![(StreamId(3), crate::ids::Offset(77))],
        sender: NodeId(sender),
        sender_epoch,
    };
    assert!(
        matches!(image.apply(Version(13), &seal(1, owner_again, 2)), Err(MetaError::InvalidRequest { .. })),
        "the old owner cannot seal it now"
    );
    assert!(matches!(image.apply(Version(14), &seal(2, recoverer, 1)), Err(MetaError::LogEpochMismatch { .. })));
    assert_eq!(
        image.apply(Version(15), &seal(2, recoverer, 2)),
        Ok(Outcome::LogSealed { log: LogId(1), sealed_seq: Seq(40) })
    );
    assert_eq!(
        image.apply(Version(16), &recover(3)),
        Err(MetaError::LogSealed { log: LogId(1) }),
        "a sealed log is never recovered again"
    );
    assert_eq!(image.apply(Version(17), &seal(2, recoverer, 2)), Err(MetaError::LogSealed { log: LogId(1) }));
}

/// DESIGN §5: a fenced broker's partitions wait, leaderless, until its logs
/// are sealed and their part of each stream uploaded; then they go to a
/// broker of its zone first.
#[test]
fn a_fenced_brokers_partitions_move_only_after_its_logs_are_sealed_and_uploaded() {
    let mut image = Image::default();
    let dead = register_in(&mut image, 1, NodeKind::Broker, 1, "a");
    let other_zone = register_in(&mut image, 2, NodeKind::Broker, 2, "b");
    register_in(&mut image, 3, NodeKind::Broker, 3, "a");
    register_wal_zones(&mut image, 4);
    let mut topic = create_topic("orders", 1);
    if let Command::CreateTopic { leaders, .. } = &mut topic {
        leaders[0] = Some(NodeId(1));
    }
    image.apply(Version(7), &topic).unwrap();
    let open = Command::OpenLog { owner: NodeId(1), owner_epoch: dead, ensemble: ensemble(), ack_quorum: 2 };
    image.apply(Version(8), &open).unwrap();
    let stream = image.topics["orders"].partitions[0].stream_id;
    let topic_id = image.topics["orders"].id;
    let assign = |leader: u32| Command::AssignLeader {
        topic: topic_id,
        partition: 0,
        leader: NodeId(leader),
        leader_epoch: LeaderEpoch(1),
    };
    assert!(image.check(&assign(2)).is_err(), "a led partition is not assigned");

    image.apply(Version(9), &Command::FenceNode { kind: NodeKind::Broker, id: NodeId(1), epoch: dead }).unwrap();
    let partition = &image.topics["orders"].partitions[0];
    assert_eq!((partition.leader, partition.previous_leader), (None, Some(NodeId(1))));
    assert!(image.leaderless_assignments().is_empty(), "its log is not sealed yet");
    assert!(image.check(&assign(2)).is_err());
    // Brokers show clients the leader it will get meanwhile (Metadata).
    let planned = |image: &Image| -> Vec<(u32, NodeId)> {
        image.planned_leaders().into_iter().map(|(_, index, _, leader)| (index, leader)).collect()
    };
    assert_eq!(planned(&image), vec![(0, NodeId(3))], "planned while its log is not sealed");

    let recover =
        Command::RecoverLog { log: LogId(1), epoch: LogEpoch(2), recoverer: NodeId(2), recoverer_epoch: other_zone };
    image.apply(Version(10), &recover).unwrap();
    let seal = Command::SealLog {
        log: LogId(1),
        epoch: LogEpoch(2),
        sealed_seq: Seq(5),
        stream_ends: vec![(stream, crate::ids::Offset(30))],
        sender: NodeId(2),
        sender_epoch: other_zone,
    };
    image.apply(Version(11), &seal).unwrap();
    assert!(image.leaderless_assignments().is_empty(), "sealed, but offsets 0..30 are not uploaded");

    let reserve = Command::ReserveObjects { broker: NodeId(2), broker_epoch: other_zone, count: 1, deadline_ms: 1000 };
    image.apply(Version(12), &reserve).unwrap();
    let range = ObjectRange {
        stream,
        start: crate::ids::Offset(0),
        end: crate::ids::Offset(30),
        pos: 0,
        len: 10,
        min_ts: 0,
        max_ts: 0,
        snapshot_pos: 0,
        snapshot_len: 0,
    };
    let commit = Command::CommitUpload {
        broker: NodeId(2),
        broker_epoch: other_zone,
        log: LogId(1),
        log_epoch: LogEpoch(2),
        trim_seq: Seq(5),
        objects: vec![ObjectRecord { id: ObjectId(1), key: "k".into(), size: 10, ranges: vec![range] }],
        now_ms: 0,
    };
    image.apply(Version(13), &commit).expect("the recoverer uploads an orphaned sealed log");

    assert_eq!(planned(&image), vec![(0, NodeId(3))], "the plan held through recovery, seal and upload");
    let assignments = image.leaderless_assignments();
    assert_eq!(assignments, vec![assign(3)], "same zone as the previous leader first, as planned");
    image.apply(Version(14), &assign(3)).unwrap();
    assert_eq!(image.topics["orders"].partitions[0].leader, Some(NodeId(3)));
}

#[test]
fn an_ensemble_must_be_active_nodes_in_distinct_zones() {
    let mut image = Image::default();
    let owner = register(&mut image, 1, NodeKind::Broker, 1);
    register_wal(&mut image, 2, 1, "a");
    register_wal(&mut image, 3, 2, "a");
    let open = |ensemble, ack_quorum| Command::OpenLog { owner: NodeId(1), owner_epoch: owner, ensemble, ack_quorum };
    let same_zone = vec![
        EnsembleMember { node: NodeId(1), zone: "a".into(), incarnation: "inc-1".into() },
        EnsembleMember { node: NodeId(2), zone: "a".into(), incarnation: "inc-2".into() },
    ];
    assert!(matches!(image.check(&open(same_zone, 2)), Err(MetaError::InvalidRequest { .. })));
    let old_incarnation = vec![
        EnsembleMember { node: NodeId(1), zone: "a".into(), incarnation: "gone".into() },
        EnsembleMember { node: NodeId(9), zone: "b".into(), incarnation: "x".into() },
    ];
    assert!(matches!(image.check(&open(old_incarnation, 2)), Err(MetaError::InvalidRequest { .. })));
    let unknown = vec![
        EnsembleMember { node: NodeId(1), zone: "a".into(), incarnation: "inc-1".into() },
        EnsembleMember { node: NodeId(9), zone: "b".into(), incarnation: "x".into() },
    ];
    assert!(matches!(image.check(&open(unknown, 2)), Err(MetaError::UnknownNode { .. })));
    assert!(matches!(image.check(&open(vec![], 0)), Err(MetaError::InvalidRequest { .. })));
}

#[test]
fn ensembles_take_one_node_per_zone_and_spread_the_load() {
    let mut image = Image::default();
    assert_eq!(image.choose_ensemble(), Err(MetaError::NoEnsemble { zones: 0 }));
    register_wal(&mut image, 1, 1, "a");
    assert_eq!(image.choose_ensemble(), Err(MetaError::NoEnsemble { zones: 1 }));
    register_wal(&mut image, 2, 2, "b");
    let (two_zones, ack_quorum) = image.choose_ensemble().unwrap();
    assert_eq!((two_zones.len(), ack_quorum), (2, 2), "two live zones: one node in each, both must ack");
    register_wal(&mut image, 3, 3, "c");
    register_wal(&mut image, 4, 4, "a");
    let (three_zones, ack_quorum) = image.choose_ensemble().unwrap();
    let nodes: Vec<u32> = three_zones.iter().map(|m| m.node.0).collect();
    assert_eq!((nodes, ack_quorum), (vec![1, 2, 3], 2));

    let owner = register(&mut image, 5, NodeKind::Broker, 9);
    image
        .apply(
            Version(6),
            &Command::OpenLog { owner: NodeId(9), owner_epoch: owner, ensemble: three_zones, ack_quorum: 2 },
        )
        .unwrap();
    let (next, _) = image.choose_ensemble().unwrap();
    assert!(next.iter().any(|m| m.node == NodeId(4)), "zone a's idle node 4 is taken over node 1, which holds a log");
    image.check(&Command::OpenLog { owner: NodeId(9), owner_epoch: owner, ensemble: next, ack_quorum: 2 }).unwrap();
}

#[test]
fn only_the_partition_leader_at_its_epoch_moves_the_start_offset_and_only_forward() {
    let mut image = Image::default();
    let leader = register(&mut image, 1, NodeKind::Broker, 1);
    let other = register(&mut image, 2, NodeKind::Broker, 2);
    let id = TopicId(Uuid::new_v4());
    let create = Command::CreateTopic {
        id,
        name: "audit".into(),
        configs: BTreeMap::new(),
        owner: String::new(),
        description: String::new(),
        leaders: vec![Some(NodeId(1))],
    };
    image.apply(Version(3), &create).unwrap();
    let advance = |sender: u32, sender_epoch: Epoch, leader_epoch: i32, start: i64| Command::AdvanceStartOffset {
        topic: id,
        partition: 0,
        leader_epoch: LeaderEpoch(leader_epoch),
        start_offset: Offset(start),
        sender: NodeId(sender),
        sender_epoch,
    };
    assert!(matches!(image.check(&advance(2, other, 0, 5)), Err(MetaError::NotPartitionLeader { .. })));
    assert!(matches!(image.check(&advance(1, leader, 1, 5)), Err(MetaError::NotPartitionLeader { .. })));
    assert!(matches!(image.check(&advance(1, leader, 0, -1)), Err(MetaError::InvalidRequest { .. })));
    assert_eq!(
        image.apply(Version(4), &advance(1, leader, 0, 5)),
        Ok(Outcome::StartOffset { start_offset: Offset(5) })
    );
    assert_eq!(
        image.apply(Version(5), &advance(1, leader, 0, 3)),
        Ok(Outcome::StartOffset { start_offset: Offset(5) })
    );
    assert_eq!(image.topics["audit"].partitions[0].start_offset, Offset(5));
}

#[test]
fn leaderless_partitions_are_assigned_once_to_an_active_broker() {
    let mut image = Image::default();
    image.apply(Version(1), &create_topic("early", 2)).unwrap();
    assert!(image.leaderless_assignments().is_empty(), "no broker is active");
    register(&mut image, 2, NodeKind::Broker, 4);
    let assignments = image.leaderless_assignments();
    assert_eq!(assignments.len(), 2);
    let Command::AssignLeader { topic, partition, .. } = assignments[0].clone() else { panic!("{assignments:?}") };
    let wrong_epoch = Command::AssignLeader { topic, partition, leader: NodeId(4), leader_epoch: LeaderEpoch(5) };
    assert!(matches!(image.check(&wrong_epoch), Err(MetaError::InvalidRequest { .. })));
    for (version, command) in assignments.iter().enumerate() {
        let outcome = image.apply(Version(3 + version as u64), command);
        assert_eq!(outcome, Ok(Outcome::LeaderAssigned { leader: NodeId(4), leader_epoch: LeaderEpoch(1) }));
    }
    assert!(image.leaderless_assignments().is_empty());
    assert!(image.check(&assignments[0]).is_err(), "a led partition is not reassigned by this command");
}

/// DESIGN §5: a partition moves on purpose only when its leader closes it at
/// its uploaded end; a draining broker gets no new partitions.
#[test]
fn a_leader_closes_a_partition_only_at_its_uploaded_end_and_a_draining_broker_gets_none() {
    let mut image = Image::default();
    let first = register(&mut image, 1, NodeKind::Broker, 1);
    register(&mut image, 2, NodeKind::Broker, 2);
    let mut topic = create_topic("orders", 1);
    if let Command::CreateTopic { leaders, .. } = &mut topic {
        leaders[0] = Some(NodeId(1));
    }
    image.apply(Version(3), &topic).unwrap();
    let topic_id = image.topics["orders"].id;
    let close = |end: i64, leader_epoch: i32| Command::ClosePartition {
        topic: topic_id,
        partition: 0,
        leader_epoch: LeaderEpoch(leader_epoch),
        end_offset: crate::ids::Offset(end),
        sender: NodeId(1),
        sender_epoch: first,
    };
    assert!(
        matches!(image.check(&close(10, 0)), Err(MetaError::InvalidRequest { .. })),
        "offsets 0..10 are not uploaded"
    );
    assert!(matches!(image.check(&close(0, 3)), Err(MetaError::NotPartitionLeader { .. })), "a stale leader epoch");

    image.apply(Version(4), &Command::DrainBroker { id: NodeId(1), epoch: first }).unwrap();
    assert!(image.brokers[&NodeId(1)].draining);
    assert_eq!(image.apply(Version(5), &close(0, 0)), Ok(Outcome::PartitionClosed));
    let partition = &image.topics["orders"].partitions[0];
    assert_eq!((partition.leader, partition.previous_leader), (None, Some(NodeId(1))));
    let assignments = image.leaderless_assignments();
    assert!(
        matches!(assignments.as_slice(), [Command::AssignLeader { leader: NodeId(2), .. }]),
        "the draining broker gets nothing back: {assignments:?}"
    );
    let again = register(&mut image, 6, NodeKind::Broker, 1);
    assert!(again > first && !image.brokers[&NodeId(1)].draining, "a new registration ends the drain");
}

/// A broker uploads its log only under the registration that opened it: once
/// it registered again the log is an orphan, committed to only after it is
/// recovered and sealed (by anyone, the owner included).
#[test]
fn an_orphaned_log_is_committed_to_only_once_sealed() {
    let mut image = Image::default();
    let first = register(&mut image, 1, NodeKind::Broker, 1);
    register_wal_zones(&mut image, 2);
    let open = Command::OpenLog { owner: NodeId(1), owner_epoch: first, ensemble: ensemble(), ack_quorum: 2 };
    image.apply(Version(5), &open).unwrap();
    let again = register(&mut image, 6, NodeKind::Broker, 1);
    let reserve = Command::ReserveObjects { broker: NodeId(1), broker_epoch: again, count: 1, deadline_ms: 1000 };
    image.apply(Version(7), &reserve).unwrap();
    let commit = |log_epoch| Command::CommitUpload {
        broker: NodeId(1),
        broker_epoch: again,
        log: LogId(1),
        log_epoch: LogEpoch(log_epoch),
        trim_seq: Seq(0),
        objects: vec![],
        now_ms: 0,
    };
    assert!(
        matches!(image.check(&commit(1)), Err(MetaError::InvalidRequest { .. })),
        "the previous registration's open log is not this registration's to upload"
    );
    let recover =
        Command::RecoverLog { log: LogId(1), epoch: LogEpoch(2), recoverer: NodeId(1), recoverer_epoch: again };
    image.apply(Version(8), &recover).unwrap();
    let seal = Command::SealLog {
        log: LogId(1),
        epoch: LogEpoch(2),
        sealed_seq: Seq(0),
        stream_ends: vec![],
        sender: NodeId(1),
        sender_epoch: again,
    };
    image.apply(Version(9), &seal).unwrap();
    assert_eq!(image.check(&commit(2)), Ok(()), "sealed, the orphan is uploaded by its recoverer");
}

/// A topic deleted while an object of its batches was being built: the
/// commit still applies (the range is garbage, collected with the object),
/// but a range of a stream that never existed is refused.
#[test]
fn an_upload_racing_a_topic_deletion_commits_and_a_made_up_stream_is_refused() {
    let mut image = Image::default();
    let broker = register(&mut image, 1, NodeKind::Broker, 1);
    register_wal_zones(&mut image, 2);
    image.apply(Version(5), &create_topic("gone", 1)).unwrap();
    let stream = image.topics["gone"].partitions[0].stream_id;
    let open = Command::OpenLog { owner: NodeId(1), owner_epoch: broker, ensemble: ensemble(), ack_quorum: 2 };
    image.apply(Version(6), &open).unwrap();
    image.apply(Version(7), &Command::DeleteTopic { name: "gone".into() }).unwrap();
    let reserve = Command::ReserveObjects { broker: NodeId(1), broker_epoch: broker, count: 1, deadline_ms: 1000 };
    image.apply(Version(8), &reserve).unwrap();
    let commit = |stream| Command::CommitUpload {
        broker: NodeId(1),
        broker_epoch: broker,
        log: LogId(1),
        log_epoch: LogEpoch(1),
        trim_seq: Seq(3),
        objects: vec![ObjectRecord {
            id: ObjectId(1),
            key: "k".into(),
            size: 10,
            ranges: vec![ObjectRange {
                stream,
                start: crate::ids::Offset(0),
                end: crate::ids::Offset(5),
                pos: 0,
                len: 10,
                min_ts: 0,
                max_ts: 0,
                snapshot_pos: 0,
                snapshot_len: 0,
            }],
        }],
        now_ms: 0,
    };
    assert!(matches!(image.check(&commit(StreamId(99))), Err(MetaError::InvalidRequest { .. })));
    image.apply(Version(9), &commit(stream)).expect("the deleted topic's range is accepted");
    assert_eq!(image.wal_logs[&LogId(1)].trim_seq, Seq(3));
    assert!(image.object_unreferenced(&image.objects[&ObjectId(1)]), "and is garbage at once");
}

/// Issue 21: WAL logs stayed in the metadata for ever. A log is forgotten
/// once it is sealed and uploaded to its sealed seq, and not before.
#[test]
fn a_wal_log_is_forgotten_only_once_sealed_and_uploaded() {
    let mut image = Image::default();
    let first = register(&mut image, 1, NodeKind::Broker, 1);
    register_wal_zones(&mut image, 2);
    let open = Command::OpenLog { owner: NodeId(1), owner_epoch: first, ensemble: ensemble(), ack_quorum: 2 };
    image.apply(Version(5), &open).unwrap();
    image.apply(Version(6), &open).unwrap();
    let again = register(&mut image, 7, NodeKind::Broker, 1);
    let forget = |logs: Vec<u64>, sender_epoch| Command::ForgetLogs {
        logs: logs.into_iter().map(LogId).collect(),
        sender: NodeId(1),
        sender_epoch,
    };
    assert!(matches!(image.check(&forget(vec![1], again)), Err(MetaError::InvalidRequest { .. })), "open");
    assert!(matches!(image.check(&forget(vec![9], again)), Err(MetaError::UnknownLog { .. })));
    assert!(matches!(image.check(&forget(vec![1], first)), Err(MetaError::StaleEpoch { .. })), "an old registration");

    let recover =
        Command::RecoverLog { log: LogId(1), epoch: LogEpoch(2), recoverer: NodeId(1), recoverer_epoch: again };
    image.apply(Version(8), &recover).unwrap();
    let seal = Command::SealLog {
        log: LogId(1),
        epoch: LogEpoch(2),
        sealed_seq: Seq(3),
        stream_ends: vec![],
        sender: NodeId(1),
        sender_epoch: again,
    };
    image.apply(Version(9), &seal).unwrap();
    assert!(
        matches!(image.check(&forget(vec![1], again)), Err(MetaError::InvalidRequest { .. })),
        "sealed at 3 but uploaded to 0"
    );
    let upload = Command::CommitUpload {
        broker: NodeId(1),
        broker_epoch: again,
        log: LogId(1),
        log_epoch: LogEpoch(2),
        trim_seq: Seq(3),
        objects: vec![],
        now_ms: 0,
    };
    image.apply(Version(10), &upload).unwrap();
    assert!(
        matches!(image.check(&forget(vec![1, 2], again)), Err(MetaError::InvalidRequest { .. })),
        "one log that is not done refuses the whole command"
    );
    assert_eq!(image.apply(Version(11), &forget(vec![1], again)), Ok(Outcome::LogsForgotten { count: 1 }));
    assert!(!image.wal_logs.contains_key(&LogId(1)));
    assert!(image.wal_logs.contains_key(&LogId(2)), "the other log stays");
    assert_eq!(image.last_log_id, LogId(2), "log ids are never reused");
    assert!(matches!(image.check(&forget(vec![1], again)), Err(MetaError::UnknownLog { .. })));
}

/// Found by the command walks (issue 21): a topic proposed from an image in
/// which a broker fenced since was still active gave it partitions, so a
/// fenced broker led them. They start leaderless instead.
#[test]
fn a_new_partition_never_goes_to_a_fenced_or_draining_broker() {
    let mut image = Image::default();
    let fenced = register(&mut image, 1, NodeKind::Broker, 1);
    let draining = register(&mut image, 2, NodeKind::Broker, 2);
    register(&mut image, 3, NodeKind::Broker, 3);
    image.apply(Version(4), &Command::FenceNode { kind: NodeKind::Broker, id: NodeId(1), epoch: fenced }).unwrap();
    image.apply(Version(5), &Command::DrainBroker { id: NodeId(2), epoch: draining }).unwrap();
    let create = Command::CreateTopic {
        id: TopicId(uuid::Uuid::from_u128(7)),
        name: "orders".into(),
        configs: Default::default(),
        owner: String::new(),
        description: String::new(),
        leaders: vec![Some(NodeId(1)), Some(NodeId(2)), Some(NodeId(3))],
    };
    image.apply(Version(6), &create).unwrap();
    let leaders: Vec<Option<NodeId>> = image.topics["orders"].partitions.iter().map(|p| p.leader).collect();
    assert_eq!(leaders, [None, None, Some(NodeId(3))]);
}

#[test]
fn scram_credentials_are_set_replaced_and_removed_and_bad_ones_refused() {
    use crate::image::{ScramCredential, ScramMechanism};
    let credential = |user: &str, mechanism: ScramMechanism, iterations: u32| ScramCredential {
        user: user.into(),
        mechanism,
        salt: vec![1; 16],
        stored_key: vec![2; mechanism.key_len()],
        server_key: vec![3; mechanism.key_len()],
        iterations,
    };
    let mut image = Image::default();
    let set = Command::AlterScramCredentials {
        upsert: vec![
            credential("alice", ScramMechanism::Sha512, 4096),
            credential("alice", ScramMechanism::Sha256, 8192),
        ],
        delete: vec![],
    };
    assert_eq!(image.apply(Version(1), &set), Ok(Outcome::ScramCredentialsAltered));
    assert_eq!(image.scram_credentials["alice"].len(), 2);
    let replace = Command::AlterScramCredentials {
        upsert: vec![credential("alice", ScramMechanism::Sha512, 16384)],
        delete: vec![("alice".into(), ScramMechanism::Sha256), ("nobody".into(), ScramMechanism::Sha256)],
    };
    assert_eq!(image.apply(Version(2), &replace), Ok(Outcome::ScramCredentialsAltered));
    let alice = &image.scram_credentials["alice"];
    assert_eq!((alice.len(), alice[&ScramMechanism::Sha512].iterations), (1, 16384));
    let remove =
        Command::AlterScramCredentials { upsert: vec![], delete: vec![("alice".into(), ScramMechanism::Sha512)] };
    image.apply(Version(3), &remove).unwrap();
    assert!(image.scram_credentials.is_empty(), "a user without credentials is gone");

    let mut short = credential("bob", ScramMechanism::Sha256, 4096);
    short.stored_key.pop();
    for (version, bad) in (4..).zip([
        credential("bob", ScramMechanism::Sha256, 4095),
        credential("bob", ScramMechanism::Sha256, 16385),
        credential("", ScramMechanism::Sha256, 4096),
        short,
    ]) {
        let command = Command::AlterScramCredentials { upsert: vec![bad.clone()], delete: vec![] };
        let refused = image.apply(Version(version), &command);
        assert!(matches!(refused, Err(MetaError::InvalidScramCredential { .. })), "{bad:?}: {refused:?}");
    }
    assert!(image.scram_credentials.is_empty());
}

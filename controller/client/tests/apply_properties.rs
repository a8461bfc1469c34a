//! Properties of the metadata rules under arbitrary command sequences: apply
//! never panics, `check` predicts `apply`, a refused command changes nothing
//! but the version, the image's invariants hold after every step, and commands
//! and images survive their JSON encoding (the form they take on the wire).

use std::collections::{BTreeMap, BTreeSet};

use keel_controller_client::{
    Command, EnsembleMember, Epoch, Image, LogEpoch, LogId, NodeId, NodeKind, NodeState, Seq, TopicId, Version, WalLog,
    WalLogState,
};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    // A small alphabet, so that duplicates and '.'/'_' collisions happen often,
    // plus names that break the rules.
    prop_oneof![
        8 => "[ab][._]?[ab]?".prop_map(|s| s),
        1 => Just(String::new()),
        1 => Just("..".to_owned()),
        1 => Just("bad name".to_owned()),
        1 => Just("x".repeat(250)),
    ]
}

fn configs() -> impl Strategy<Value = BTreeMap<String, String>> {
    let key = prop_oneof![Just("retention.ms"), Just("cleanup.policy"), Just("max.message.bytes"), Just("nope")];
    let value = prop_oneof![Just("-1"), Just("1000"), Just("compact"), Just("delete,compact"), Just("x"), Just("-7")];
    proptest::collection::btree_map(key.prop_map(str::to_owned), value.prop_map(str::to_owned), 0..3)
}

fn kind() -> impl Strategy<Value = NodeKind> {
    prop_oneof![Just(NodeKind::Broker), Just(NodeKind::Wal)]
}

fn leaders() -> impl Strategy<Value = Vec<Option<NodeId>>> {
    proptest::collection::vec(proptest::option::of((0u32..4).prop_map(NodeId)), 0..5)
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (kind(), 0u32..4, prop_oneof![Just("a"), Just("b"), Just("")]).prop_map(|(kind, id, zone)| {
            Command::RegisterNode {
                kind,
                id: NodeId(id),
                zone: zone.into(),
                internal_addr: "127.0.0.1:1".into(),
                kafka_listeners: vec![],
                incarnation: "i".into(),
            }
        }),
        (kind(), 0u32..4, 0u64..40).prop_map(|(kind, id, epoch)| Command::FenceNode {
            kind,
            id: NodeId(id),
            epoch: Epoch(epoch)
        }),
        (name(), configs(), leaders()).prop_map(|(name, configs, leaders)| Command::CreateTopic {
            id: TopicId(uuid::Uuid::from_u128(name.len() as u128)),
            name,
            configs,
            owner: String::new(),
            description: String::new(),
            leaders,
        }),
        name().prop_map(|name| Command::DeleteTopic { name }),
        (name(), leaders()).prop_map(|(name, leaders)| Command::CreatePartitions { name, leaders }),
        (
            name(),
            configs(),
            proptest::collection::vec(prop_oneof![Just("retention.ms".to_owned()), Just("nope".to_owned())], 0..2)
        )
            .prop_map(|(name, set, delete)| Command::AlterConfigs { name, set, delete }),
        (0u32..4, 0u64..40)
            .prop_map(|(id, epoch)| Command::AllocateProducerIds { broker: NodeId(id), broker_epoch: Epoch(epoch) }),
        (0u32..4, 0u64..40, proptest::collection::vec((0u32..4, prop_oneof![Just("a"), Just("b")]), 0..3), 0u32..3)
            .prop_map(|(owner, epoch, members, ack_quorum)| Command::OpenLog {
                owner: NodeId(owner),
                owner_epoch: Epoch(epoch),
                ensemble: members
                    .into_iter()
                    .map(|(node, zone)| EnsembleMember {
                        node: NodeId(node),
                        zone: zone.into(),
                        incarnation: "i".into()
                    })
                    .collect(),
                ack_quorum,
            }),
        (1u64..4, 1u64..5, 0u32..4, 0u64..40).prop_map(|(log, epoch, recoverer, recoverer_epoch)| {
            Command::RecoverLog {
                log: LogId(log),
                epoch: LogEpoch(epoch),
                recoverer: NodeId(recoverer),
                recoverer_epoch: Epoch(recoverer_epoch),
            }
        }),
        (1u64..4, 1u64..5, 0u64..9, 0u32..4, 0u64..40).prop_map(|(log, epoch, sealed, sender, sender_epoch)| {
            Command::SealLog {
                log: LogId(log),
                epoch: LogEpoch(epoch),
                sealed_seq: Seq(sealed),
                stream_ends: vec![(
                    keel_controller_client::StreamId(sealed),
                    keel_controller_client::Offset(sealed as i64 * 10),
                )],
                sender: NodeId(sender),
                sender_epoch: Epoch(sender_epoch),
            }
        }),
        (0u32..4, 0u64..40, 1u64..4, 1u64..5, 0u64..9).prop_map(|(broker, broker_epoch, log, log_epoch, trim)| {
            Command::CommitUpload {
                broker: NodeId(broker),
                broker_epoch: Epoch(broker_epoch),
                log: LogId(log),
                log_epoch: LogEpoch(log_epoch),
                trim_seq: Seq(trim),
                objects: vec![],
                now_ms: 0,
            }
        }),
        (proptest::collection::vec(1u64..4, 0..3), 0u32..4, 0u64..40).prop_map(|(logs, sender, sender_epoch)| {
            Command::ForgetLogs {
                logs: logs.into_iter().map(LogId).collect(),
                sender: NodeId(sender),
                sender_epoch: Epoch(sender_epoch),
            }
        }),
    ]
}

fn assert_invariants(image: &Image) {
    let mut streams = BTreeSet::new();
    for (name, topic) in &image.topics {
        assert_eq!(&topic.name, name);
        assert!(keel_controller_client::topic_rules::validate_topic_name(name).is_ok(), "{name:?}");
        assert!(!topic.partitions.is_empty());
        for partition in &topic.partitions {
            assert!(partition.stream_id < image.next_stream_id, "stream ids come from the counter");
            assert!(streams.insert(partition.stream_id), "stream {} used twice", partition.stream_id);
        }
        for (key, value) in &topic.configs {
            assert!(keel_controller_client::topic_rules::validate_topic_config(key, value).is_ok(), "{key}={value}");
        }
    }
    for node in image.brokers.values().chain(image.wal_nodes.values()) {
        assert!(node.epoch.0 <= image.version.0, "an epoch is the version of a registration");
        assert!(matches!(node.state, NodeState::Active | NodeState::Fenced));
    }
    assert_eq!(image.next_producer_id.0 % 1000, 0);
    for (id, log) in &image.wal_logs {
        assert_eq!(&log.id, id);
        assert!(log.id <= image.last_log_id);
        assert!(log.epoch.0 >= 1);
        let zones: BTreeSet<&str> = log.ensemble.iter().map(|m| m.zone.as_str()).collect();
        assert_eq!(zones.len(), log.ensemble.len(), "one ensemble member per zone");
    }
}

/// Sealed logs never change again but for their trim point, trim points and
/// log epochs only move forward, and a log is forgotten only once it is
/// sealed and trimmed to its sealed seq.
fn assert_logs_only_move_forward(before: &Image, after: &Image) {
    for (id, old) in &before.wal_logs {
        let Some(new) = after.wal_logs.get(id) else {
            let done = matches!(&old.state, WalLogState::Sealed { sealed_seq, .. } if old.trim_seq >= *sealed_seq);
            assert!(done, "{id} was forgotten before it was sealed and uploaded: {old:?}");
            continue;
        };
        assert!(new.epoch >= old.epoch, "{id}: epoch went back");
        assert!(new.trim_seq >= old.trim_seq, "{id}: trim point went back");
        if matches!(old.state, WalLogState::Sealed { .. }) {
            assert_eq!(WalLog { trim_seq: old.trim_seq, ..new.clone() }, *old, "{id}: a sealed log changed");
        }
    }
}

proptest! {
    #[test]
    fn commands_apply_by_the_rules(commands in proptest::collection::vec(command(), 1..60)) {
        let mut image = Image::default();
        for (index, command) in commands.iter().enumerate() {
            let version = Version(index as u64 + 1);
            let predicted = image.check(command);
            let before = image.clone();
            let result = image.apply(version, command);
            prop_assert_eq!(predicted.is_ok(), result.is_ok(), "check and apply disagree on {:?}", command);
            if result.is_err() {
                prop_assert_eq!(&Image { version, ..before.clone() }, &image);
            }
            assert_invariants(&image);
            assert_logs_only_move_forward(&before, &image);

            let encoded = serde_json::to_vec(command).unwrap();
            prop_assert_eq!(&serde_json::from_slice::<Command>(&encoded).unwrap(), command);
        }
        let encoded = serde_json::to_vec(&image).unwrap();
        prop_assert_eq!(serde_json::from_slice::<Image>(&encoded).unwrap(), image);
    }
}

//! The metadata image: every entity of DESIGN §2 that exists so far, as one
//! value that commands change in order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{
    Epoch, LeaderEpoch, LogEpoch, LogId, NodeId, NodeKind, ObjectId, Offset, ProducerId, Seq, StreamId, TopicId,
    Version,
};

/// The whole cluster metadata at one version.
///
/// The controller's state machine holds one; every watcher (brokers, WAL
/// nodes, keelctl) keeps its own copy by applying the same deltas.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Image {
    /// The Raft log index of the last applied command (0 before the first).
    pub version: Version,
    pub brokers: BTreeMap<NodeId, NodeRecord>,
    pub wal_nodes: BTreeMap<NodeId, NodeRecord>,
    /// Topics by name; names are unique.
    pub topics: BTreeMap<String, Topic>,
    /// The stream id the next partition gets. Stream ids are never reused.
    pub next_stream_id: StreamId,
    /// The first producer id of the next block handed out.
    pub next_producer_id: ProducerId,
    /// Every WAL log, recorded before its first append (`OpenLog`).
    pub wal_logs: BTreeMap<LogId, WalLog>,
    /// The id of the last WAL log opened (0 before the first). Log ids are never reused.
    pub last_log_id: LogId,
    /// Object ids reserved for uploads not committed yet (`ReserveObjects`).
    #[serde(default)]
    pub reservations: BTreeMap<ObjectId, Reservation>,
    /// Committed objects: the index of what the object store holds (`CommitUpload`).
    #[serde(default)]
    pub objects: BTreeMap<ObjectId, ObjectRecord>,
    /// The last object id reserved (0 before the first).
    #[serde(default)]
    pub last_object_id: ObjectId,
    /// Objects no longer in the index (`DeleteObjects`), with when they left
    /// it; their bytes are deleted from the store after a grace period, for
    /// readers that found them just before.
    #[serde(default)]
    pub deleted_objects: BTreeMap<ObjectId, DeletedObject>,
    /// SCRAM credentials by user, then mechanism (KIP-554).
    #[serde(default)]
    pub scram_credentials: BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>,
}

/// A SCRAM mechanism (RFC 7677, RFC 5802), as Kafka names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ScramMechanism {
    #[serde(rename = "SCRAM-SHA-256")]
    Sha256,
    #[serde(rename = "SCRAM-SHA-512")]
    Sha512,
}

impl ScramMechanism {
    /// Kafka's name, as in SaslHandshake.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism Kafka calls `name`.
    pub fn from_name(name: &str) -> Option<ScramMechanism> {
        [ScramMechanism::Sha256, ScramMechanism::Sha512].into_iter().find(|m| m.name() == name)
    }

    /// The hash's output length: the length of the stored and server keys.
    pub fn key_len(self) -> usize {
        match self {
            ScramMechanism::Sha256 => 32,
            ScramMechanism::Sha512 => 64,
        }
    }

    /// Kafka's number in Describe/AlterUserScramCredentials.
    pub fn kafka_type(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    pub fn from_kafka_type(value: i8) -> Option<ScramMechanism> {
        match value {
            1 => Some(ScramMechanism::Sha256),
            2 => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }
}

/// Fewest and most PBKDF2 iterations a SCRAM credential may have (Kafka's bounds).
pub const SCRAM_ITERATIONS: std::ops::RangeInclusive<u32> = 4096..=16384;

/// One user's SCRAM credential for one mechanism: what the server needs
/// to check a client's proof, from which the password cannot be recovered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    pub user: String,
    pub mechanism: ScramMechanism,
    pub salt: Vec<u8>,
    /// H(HMAC(SaltedPassword, "Client Key")).
    pub stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: Vec<u8>,
    pub iterations: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedObject {
    pub key: String,
    pub deleted_at_ms: i64,
}

/// An object id a broker may upload under until `deadline_ms` (the
/// controller leader's wall clock when it reserved it, plus the time to live).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub broker: NodeId,
    pub deadline_ms: i64,
}

/// A committed object (DESIGN §2): its key, size and the stream ranges in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub id: ObjectId,
    pub key: String,
    pub size: u64,
    pub ranges: Vec<ObjectRange>,
}

/// Where offsets `start..end` of one stream lie in an object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRange {
    pub stream: StreamId,
    pub start: Offset,
    pub end: Offset,
    /// The range's record batches: bytes `pos..pos + len` of the object.
    pub pos: u64,
    pub len: u64,
    pub min_ts: i64,
    pub max_ts: i64,
    /// The producer-state snapshot as of `end` (empty: none).
    pub snapshot_pos: u64,
    pub snapshot_len: u64,
}

/// A broker's WAL log (DESIGN §2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalLog {
    pub id: LogId,
    /// The broker that writes it, and the registration it opened it under.
    pub owner: NodeId,
    pub owner_epoch: Epoch,
    /// 1 when opened; each `RecoverLog` adds one.
    pub epoch: LogEpoch,
    /// The WAL nodes it is written to, one per zone.
    pub ensemble: Vec<EnsembleMember>,
    /// How many members must fsync an entry for it to be acknowledged.
    pub ack_quorum: u32,
    pub state: WalLogState,
    /// Entries up to here are uploaded and may be trimmed.
    pub trim_seq: Seq,
}

/// A WAL node of a log's ensemble, as it was when the log was opened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnsembleMember {
    pub node: NodeId,
    pub zone: String,
    /// A node that comes back with another incarnation counts as lost for this log.
    pub incarnation: String,
}

/// Where a WAL log is in its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum WalLogState {
    /// Its owner writes it.
    Open,
    /// `recoverer` is recovering it at the log's current epoch.
    Recovering { recoverer: NodeId },
    /// Closed for good at `sealed_seq`; never recovered again.
    /// `stream_ends` is a list for the same reason as in `Command::SealLog`.
    Sealed { sealed_seq: Seq, stream_ends: Vec<(StreamId, Offset)> },
}

/// A registered broker or WAL node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub kind: NodeKind,
    pub id: NodeId,
    pub zone: String,
    pub internal_addr: String,
    /// Kafka listeners as `NAME://host:port` (brokers only), the one
    /// brokers use among themselves first (`inter_broker_address`). A bare
    /// `host:port` (registered before listeners had names) is `PLAINTEXT`.
    pub kafka_listeners: Vec<String>,
    /// The id the node wrote when its data directory was created.
    pub incarnation: String,
    /// The epoch of its latest registration.
    pub epoch: Epoch,
    pub state: NodeState,
    /// A draining broker gets no new partitions and hands its own over.
    #[serde(default)]
    pub draining: bool,
}

impl NodeRecord {
    /// The host:port of this broker's Kafka listener `name`, if it has one.
    pub fn kafka_address(&self, name: &str) -> Option<&str> {
        self.kafka_listeners.iter().map(|entry| split_listener(entry)).find(|(n, _)| *n == name).map(|(_, a)| a)
    }

    /// The host:port other brokers reach this one at over Kafka.
    pub fn inter_broker_address(&self) -> Option<&str> {
        self.kafka_listeners.first().map(|entry| split_listener(entry).1)
    }
}

/// `NAME://host:port` as (name, host:port); a bare host:port is `PLAINTEXT`.
pub fn split_listener(entry: &str) -> (&str, &str) {
    entry.split_once("://").unwrap_or(("PLAINTEXT", entry))
}

/// Whether a node's current registration may act.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    Active,
    /// Its session expired; it must register again (new epoch) before acting.
    Fenced,
}

/// A Kafka topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    pub id: TopicId,
    pub name: String,
    /// Configs Kafka defines for topics (`topic_configs`); absent keys take their default.
    pub configs: BTreeMap<String, String>,
    pub owner: String,
    pub description: String,
    /// Indexed by partition number.
    pub partitions: Vec<Partition>,
}

/// One partition of a topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    /// The broker that leads it, if any broker was live to take it.
    pub leader: Option<NodeId>,
    pub leader_epoch: LeaderEpoch,
    pub stream_id: StreamId,
    /// Kafka's log start offset: readers see nothing below it.
    #[serde(default)]
    pub start_offset: Offset,
    /// Offsets below this are in committed objects (`CommitUpload`).
    #[serde(default)]
    pub uploaded_end: Offset,
    /// While it has no leader: the broker that led it last, whose earlier
    /// logs must be sealed and uploaded before another broker takes it
    /// (DESIGN §5).
    #[serde(default)]
    pub previous_leader: Option<NodeId>,
    /// The balancer's choice of next leader: the leader closes the
    /// partition, then it is assigned there.
    #[serde(default)]
    pub moving_to: Option<NodeId>,
}

impl Image {
    /// The partition whose log is `stream`, with its topic.
    pub fn partition_of_stream(&self, stream: StreamId) -> Option<(&Topic, u32, &Partition)> {
        self.topics.values().find_map(|topic| {
            let index = topic.partitions.iter().position(|p| p.stream_id == stream)?;
            Some((topic, index as u32, &topic.partitions[index]))
        })
    }

    pub(crate) fn partition_of_stream_mut(&mut self, stream: StreamId) -> Option<&mut Partition> {
        self.topics.values_mut().find_map(|topic| topic.partitions.iter_mut().find(|p| p.stream_id == stream))
    }

    /// Whether nothing readable is left in `object`: each of its ranges ends at
    /// or below its partition's start offset, or its topic is gone.
    pub fn object_unreferenced(&self, object: &ObjectRecord) -> bool {
        object.ranges.iter().all(|range| match self.partition_of_stream(range.stream) {
            Some((_, _, partition)) => range.end <= partition.start_offset,
            None => true,
        })
    }

    /// The committed ranges of `stream` that reach past `offset`, in offset
    /// order, each with its object.
    pub fn object_ranges_from(&self, stream: StreamId, offset: Offset) -> Vec<(&ObjectRecord, &ObjectRange)> {
        let mut ranges: Vec<(&ObjectRecord, &ObjectRange)> = self
            .objects
            .values()
            .flat_map(|object| object.ranges.iter().map(move |range| (object, range)))
            .filter(|(_, range)| range.stream == stream && range.end > offset)
            .collect();
        ranges.sort_by_key(|(_, range)| range.start);
        ranges
    }
}

impl Topic {
    /// A config's effective value: the topic's own, else Kafka's default.
    pub fn config(&self, key: &str) -> Option<&str> {
        self.configs.get(key).map(String::as_str).or_else(|| crate::topic_rules::topic_config_default(key))
    }
}

impl Image {
    /// The registered nodes of one kind.
    pub fn nodes(&self, kind: NodeKind) -> &BTreeMap<NodeId, NodeRecord> {
        match kind {
            NodeKind::Broker => &self.brokers,
            NodeKind::Wal => &self.wal_nodes,
        }
    }

    pub(crate) fn nodes_mut(&mut self, kind: NodeKind) -> &mut BTreeMap<NodeId, NodeRecord> {
        match kind {
            NodeKind::Broker => &mut self.brokers,
            NodeKind::Wal => &mut self.wal_nodes,
        }
    }

    /// A topic by its id (names are the map's keys).
    pub fn topic_by_id(&self, id: TopicId) -> Option<&Topic> {
        self.topics.values().find(|topic| topic.id == id)
    }

    /// Every partition, with its topic and index.
    pub fn partitions(&self) -> impl Iterator<Item = (&Topic, u32, &Partition)> {
        self.topics.values().flat_map(|topic| {
            topic.partitions.iter().enumerate().map(move |(index, partition)| (topic, index as u32, partition))
        })
    }

    /// The partitions `broker` leads, with their topic and index.
    pub fn led_by(&self, broker: NodeId) -> impl Iterator<Item = (&Topic, u32, &Partition)> {
        self.partitions().filter(move |(_, _, partition)| partition.leader == Some(broker))
    }

    /// Active brokers that take partitions (not draining), with the number of partitions each leads.
    pub fn broker_load(&self) -> BTreeMap<NodeId, usize> {
        let mut load: BTreeMap<NodeId, usize> = self
            .brokers
            .values()
            .filter(|broker| broker.state == NodeState::Active && !broker.draining)
            .map(|broker| (broker.id, 0))
            .collect();
        for partition in self.topics.values().flat_map(|topic| &topic.partitions) {
            if let Some(count) = partition.leader.and_then(|leader| load.get_mut(&leader)) {
                *count += 1;
            }
        }
        load
    }

    /// The leader each partition without one will get: an active broker in
    /// the previous leader's zone if there is one, else any, the one leading
    /// the fewest partitions (counting the partitions planned before it;
    /// lowest id on ties), or the target of a move. A pure function of the
    /// image, so every broker plans what the controller will assign, and
    /// the plan of a partition holds while others are assigned (each
    /// assignment adds to the load what the plan had counted). Stops at the
    /// first partition no broker can take (none is active).
    pub fn planned_leaders(&self) -> Vec<(&Topic, u32, &Partition, NodeId)> {
        let mut load = self.broker_load();
        let mut planned = Vec::new();
        for (topic, index, partition) in self.partitions().filter(|(_, _, p)| p.leader.is_none()) {
            let zone = partition.previous_leader.and_then(|id| self.brokers.get(&id)).map(|b| b.zone.as_str());
            let in_zone = |id: &NodeId| zone.is_none_or(|zone| self.brokers[id].zone == zone);
            let pick = |same_zone: bool| {
                load.iter()
                    .filter(|(id, _)| !same_zone || in_zone(id))
                    .min_by_key(|(id, count)| (**count, **id))
                    .map(|(id, _)| *id)
            };
            let chosen = partition.moving_to.filter(|target| load.contains_key(target));
            let Some(leader) = chosen.or_else(|| pick(true)).or_else(|| pick(false)) else { break };
            *load.get_mut(&leader).expect("picked from the map") += 1;
            planned.push((topic, index, partition, leader));
        }
        planned
    }

    /// The planned leaders (`planned_leaders`) of the partitions that may be
    /// handed over now (`handover_ready`), as commands.
    pub fn leaderless_assignments(&self) -> Vec<crate::command::Command> {
        self.planned_leaders()
            .into_iter()
            .filter(|(_, _, partition, _)| self.handover_ready(partition))
            .map(|(topic, index, partition, leader)| crate::command::Command::AssignLeader {
                topic: topic.id,
                partition: index,
                leader,
                leader_epoch: LeaderEpoch(partition.leader_epoch.0 + 1),
            })
            .collect()
    }

    /// Whether a WAL log's writer is gone: its owner was fenced or registered
    /// again since it opened the log. Only such a log may be recovered by
    /// anyone, and its data uploaded by another broker.
    pub fn orphaned(&self, log: &WalLog) -> bool {
        self.brokers
            .get(&log.owner)
            .is_none_or(|owner| owner.epoch != log.owner_epoch || owner.state == NodeState::Fenced)
    }

    /// Whether a leaderless partition may get a new leader (DESIGN §5): every
    /// orphaned log of its previous leader is sealed and its part of the
    /// stream uploaded, so the new leader starts at the stream's true end.
    pub fn handover_ready(&self, partition: &Partition) -> bool {
        let Some(previous) = partition.previous_leader else { return true };
        self.wal_logs.values().filter(|log| log.owner == previous && self.orphaned(log)).all(|log| match &log.state {
            WalLogState::Sealed { stream_ends, .. } => stream_ends
                .iter()
                .filter(|(stream, _)| *stream == partition.stream_id)
                .all(|(_, end)| partition.uploaded_end >= *end),
            WalLogState::Open | WalLogState::Recovering { .. } => false,
        })
    }

    /// Takes every partition from `broker` (fenced, or registered again),
    /// remembering it as their previous leader.
    pub(crate) fn release_partitions(&mut self, broker: NodeId) {
        for partition in self.topics.values_mut().flat_map(|topic| topic.partitions.iter_mut()) {
            if partition.leader == Some(broker) {
                partition.leader = None;
                partition.previous_leader = Some(broker);
            }
        }
    }

    /// Picks leaders for `count` new partitions: each goes to the active broker
    /// that leads the fewest partitions, lowest id first on ties. `None` when no
    /// broker is active; the partitions wait for one.
    pub fn place_leaders(&self, count: usize) -> Vec<Option<NodeId>> {
        let mut load = self.broker_load();
        (0..count)
            .map(|_| {
                let (&broker, _) = load.iter().min_by_key(|(id, count)| (**count, **id))?;
                *load.get_mut(&broker).expect("broker was just found in the map") += 1;
                Some(broker)
            })
            .collect()
    }
}

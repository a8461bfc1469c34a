//! Commands: the only way metadata changes. Each one is a Raft log entry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{Epoch, NodeId, NodeKind, ProducerId, TopicId};

/// A change to the metadata image.
///
/// Commands carry every choice made by the proposer (topic ids, partition
/// leaders), so applying one is deterministic on every replica and watcher.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Registers a broker or WAL node and gives it a new epoch (the version
    /// at which this command applies).
    RegisterNode {
        kind: NodeKind,
        id: NodeId,
        zone: String,
        internal_addr: String,
        kafka_listeners: Vec<String>,
        incarnation: String,
    },
    /// Fences a node whose session expired. Applies only if `epoch` is still
    /// the node's current one, so a late fence never hits a fresh registration.
    FenceNode {
        kind: NodeKind,
        id: NodeId,
        epoch: Epoch,
    },
    CreateTopic {
        id: TopicId,
        name: String,
        configs: BTreeMap<String, String>,
        owner: String,
        description: String,
        /// One entry per partition: the broker chosen to lead it.
        leaders: Vec<Option<NodeId>>,
    },
    DeleteTopic {
        name: String,
    },
    /// Grows a topic to `leaders.len()` more partitions.
    CreatePartitions {
        name: String,
        leaders: Vec<Option<NodeId>>,
    },
    AlterConfigs {
        name: String,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    },
    /// Hands a block of producer ids to an active broker.
    AllocateProducerIds {
        broker: NodeId,
        broker_epoch: Epoch,
    },
}

/// What an applied command produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outcome {
    Registered { epoch: Epoch },
    Fenced { applied: bool },
    TopicCreated { id: TopicId },
    TopicDeleted { id: TopicId },
    PartitionsCreated { count: usize },
    ConfigsAltered,
    ProducerIds { first: ProducerId, count: u32 },
}

/// The number of producer ids in one block, as Kafka's controller hands out.
pub const PRODUCER_ID_BLOCK_SIZE: u32 = 1000;

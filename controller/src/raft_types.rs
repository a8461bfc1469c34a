//! The openraft type configuration of the controller quorum.

use std::fmt;
use std::io::Cursor;

use keel_controller_client::{Command, ControllerId, MetaError, Outcome, Version};
use serde::{Deserialize, Serialize};

/// A controller's Raft id. It is random and changes with every incarnation
/// (every fresh data directory), so a controller that lost its disk can never
/// be mistaken for the voter it used to be; `ControllerId` is the stable,
/// configured name.
pub(crate) type RaftId = u64;

/// What the membership records for each controller.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ControllerNode {
    pub(crate) controller_id: ControllerId,
    /// The gRPC address (Raft and Metadata services).
    pub(crate) addr: String,
}

impl fmt::Display for ControllerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.controller_id, self.addr)
    }
}

/// The state machine's answer to one log entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Applied {
    pub(crate) version: Version,
    /// `None` for entries that carry no command (blank and membership entries).
    pub(crate) result: Option<Result<Outcome, MetaError>>,
}

openraft::declare_raft_types!(
    /// Types of the controller's Raft group.
    pub(crate) TypeConfig:
        D = Command,
        R = Applied,
        NodeId = RaftId,
        Node = ControllerNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub(crate) type Raft = openraft::Raft<TypeConfig>;
pub(crate) type LogId = openraft::LogId<RaftId>;
pub(crate) type Entry = openraft::Entry<TypeConfig>;
pub(crate) type StorageError = openraft::StorageError<RaftId>;
pub(crate) type StoredMembership = openraft::StoredMembership<RaftId, ControllerNode>;
pub(crate) type SnapshotMeta = openraft::SnapshotMeta<RaftId, ControllerNode>;

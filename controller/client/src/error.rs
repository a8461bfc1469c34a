//! Typed metadata errors, shared by the controller (which produces them) and
//! clients (which branch on them). They cross gRPC as JSON in the status details.

use serde::{Deserialize, Serialize};

use crate::ids::{ControllerId, Epoch, LeaderEpoch, LogEpoch, LogId, NodeId, NodeKind, Version};

/// Why the controller refused a metadata request. A refused request changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum MetaError {
    #[error("topic {name:?} already exists")]
    TopicAlreadyExists { name: String },
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName { name: String, reason: String },
    #[error("unknown topic {name:?}")]
    UnknownTopic { name: String },
    #[error("invalid partition count {count}: {reason}")]
    InvalidPartitions { count: i64, reason: String },
    #[error("unknown topic config {key:?}")]
    UnknownConfig { key: String },
    #[error("invalid SCRAM credential: {reason}")]
    InvalidScramCredential { reason: String },
    #[error("invalid value {value:?} for topic config {key:?}: {reason}")]
    InvalidConfig { key: String, value: String, reason: String },
    #[error("{kind} {node} is not registered")]
    UnknownNode { kind: NodeKind, node: NodeId },
    #[error("{kind} {node} epoch {epoch} is stale (current epoch {current})")]
    StaleEpoch { kind: NodeKind, node: NodeId, epoch: Epoch, current: Epoch },
    #[error("{kind} {node} epoch {epoch} is fenced; it must register again")]
    Fenced { kind: NodeKind, node: NodeId, epoch: Epoch },
    #[error("invalid request: {reason}")]
    InvalidRequest { reason: String },
    #[error("unknown WAL log {log}")]
    UnknownLog { log: LogId },
    #[error("WAL log {log} is at epoch {current}; {epoch} does not follow it")]
    LogEpochMismatch { log: LogId, epoch: LogEpoch, current: LogEpoch },
    #[error("WAL log {log} is sealed")]
    LogSealed { log: LogId },
    /// RecoverLog of a log whose owner is still registered under the epoch
    /// that opened it: the recoverer's image was stale.
    #[error("WAL log {log}'s owner {owner} still writes it")]
    LogStillWritten { log: LogId, owner: NodeId },
    #[error("no ensemble can be formed: active WAL nodes in {zones} zone(s), at least 2 are needed")]
    NoEnsemble { zones: usize },
    #[error("controller {controller} is not a member of the quorum")]
    UnknownController { controller: ControllerId },
    #[error("membership change refused: {reason}")]
    MembershipRefused { reason: String },
    #[error("metadata version {version} does not follow the image's version {current}")]
    VersionNotAfter { version: Version, current: Version },
    #[error("broker {broker} does not lead partition {partition} of {topic:?} at leader epoch {leader_epoch}")]
    NotPartitionLeader { topic: String, partition: u32, broker: NodeId, leader_epoch: LeaderEpoch },
    #[error("no controller leader is known right now")]
    NoLeader,
    #[error("controller internal error: {reason}")]
    Internal { reason: String },
}

impl MetaError {
    /// Whether the same request may succeed if sent again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            MetaError::NoLeader | MetaError::Internal { .. } | MetaError::NoEnsemble { .. } => true,
            MetaError::TopicAlreadyExists { .. }
            | MetaError::InvalidTopicName { .. }
            | MetaError::UnknownTopic { .. }
            | MetaError::InvalidPartitions { .. }
            | MetaError::UnknownConfig { .. }
            | MetaError::InvalidConfig { .. }
            | MetaError::InvalidScramCredential { .. }
            | MetaError::UnknownNode { .. }
            | MetaError::StaleEpoch { .. }
            | MetaError::Fenced { .. }
            | MetaError::InvalidRequest { .. }
            | MetaError::UnknownController { .. }
            | MetaError::MembershipRefused { .. }
            | MetaError::VersionNotAfter { .. }
            | MetaError::UnknownLog { .. }
            | MetaError::LogEpochMismatch { .. }
            | MetaError::LogSealed { .. }
            | MetaError::LogStillWritten { .. }
            | MetaError::NotPartitionLeader { .. } => false,
        }
    }

    /// The gRPC status code this error travels under.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            MetaError::TopicAlreadyExists { .. } => tonic::Code::AlreadyExists,
            MetaError::InvalidTopicName { .. }
            | MetaError::InvalidPartitions { .. }
            | MetaError::UnknownConfig { .. }
            | MetaError::InvalidConfig { .. }
            | MetaError::InvalidScramCredential { .. }
            | MetaError::InvalidRequest { .. } => tonic::Code::InvalidArgument,
            MetaError::UnknownTopic { .. }
            | MetaError::UnknownNode { .. }
            | MetaError::UnknownController { .. }
            | MetaError::UnknownLog { .. } => tonic::Code::NotFound,
            MetaError::StaleEpoch { .. }
            | MetaError::Fenced { .. }
            | MetaError::MembershipRefused { .. }
            | MetaError::VersionNotAfter { .. }
            | MetaError::LogEpochMismatch { .. }
            | MetaError::LogSealed { .. }
            | MetaError::LogStillWritten { .. }
            | MetaError::NotPartitionLeader { .. } => tonic::Code::FailedPrecondition,
            MetaError::NoLeader | MetaError::NoEnsemble { .. } => tonic::Code::Unavailable,
            MetaError::Internal { .. } => tonic::Code::Internal,
        }
    }

    /// Encodes the error as a gRPC status carrying the typed error in its details.
    pub fn to_status(&self) -> tonic::Status {
        let details = serde_json::to_vec(self).expect("MetaError serializes to JSON");
        tonic::Status::with_details(self.grpc_code(), self.to_string(), details.into())
    }

    /// Decodes the typed error a controller put in a status, if there is one.
    pub fn from_status(status: &tonic::Status) -> Option<MetaError> {
        serde_json::from_slice(status.details()).ok()
    }
}

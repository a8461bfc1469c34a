//! The broker's own failures, as one type with one mapping to Kafka.
//!
//! Every layer below the Kafka edge reports what went wrong as a
//! `BrokerError`; the edge turns it into the Kafka error code a client
//! understands (`kafka_error`), sends only what is safe to show a client
//! (`client_message`: internal detail such as addresses, keys and
//! controller messages goes to the log instead).

use kafka_protocol::error::ResponseError;
use keel_controller_client::{ClientError, LogId, MetaError, Offset, StreamId};
use keel_objects::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// This broker's WAL log was fenced: another broker recovered it.
    #[error("WAL log {log} was fenced by a recovery")]
    Fenced { log: LogId },
    /// No member of a WAL log answered, or none held what was asked.
    #[error("no WAL member of {log} could serve it: {reason}")]
    WalUnavailable { log: LogId, reason: String },
    /// Batches that do not fit in a WAL entry; nothing of them is stored.
    #[error("the batches do not fit in a WAL entry: {0}")]
    EntryTooLarge(keel_wal_client::entry::EntryError),
    /// A write whose fate is unknown: it may still become durable.
    #[error("the WAL did not acknowledge the write in time")]
    WalTimeout,
    /// The object store has no object under a key the metadata names.
    #[error("object {key} is missing from the object store")]
    ObjectMissing { key: String },
    /// Bytes from the object store that fail their checks; never served.
    #[error("object {key} is damaged: {reason}")]
    ObjectDamaged { key: String, reason: String },
    #[error(transparent)]
    ObjectStore(StoreError),
    /// Neither the objects nor a WAL log this broker knows of hold the offset.
    #[error("no object or WAL log holds offset {offset} of stream {stream}")]
    NotStored { stream: StreamId, offset: Offset },
    /// Stored bytes (a WAL entry, a batch) that fail their checks.
    #[error("stored data is damaged: {reason}")]
    Damaged { reason: String },
    /// More un-uploaded bytes in the WAL than the cap (DESIGN §3.4).
    #[error("{backlog} bytes in the WAL are not uploaded yet (cap {cap}): the object store is down or slow; retry")]
    BacklogFull { backlog: u64, cap: u64 },
    /// The controllers refused a change or could not be reached.
    #[error(transparent)]
    Metadata(#[from] ClientError),
    /// The metadata does not show what this broker needs (yet).
    #[error("the metadata does not show {what} yet")]
    MetadataBehind { what: String },
    /// This broker's lease with the controllers does not hold now.
    #[error("this broker has no live session with the controllers")]
    NoSession,
}

impl From<StoreError> for BrokerError {
    fn from(error: StoreError) -> BrokerError {
        match error {
            StoreError::NotFound { key } => BrokerError::ObjectMissing { key },
            other => BrokerError::ObjectStore(other),
        }
    }
}

impl BrokerError {
    /// The Kafka error a client gets for it.
    pub fn kafka_error(&self) -> ResponseError {
        match self {
            BrokerError::Fenced { .. } => ResponseError::NotLeaderOrFollower,
            BrokerError::WalTimeout => ResponseError::RequestTimedOut,
            BrokerError::EntryTooLarge(_) => ResponseError::MessageTooLarge,
            BrokerError::WalUnavailable { .. }
            | BrokerError::ObjectMissing { .. }
            | BrokerError::ObjectDamaged { .. }
            | BrokerError::ObjectStore(_)
            | BrokerError::NotStored { .. }
            | BrokerError::Damaged { .. }
            | BrokerError::BacklogFull { .. } => ResponseError::KafkaStorageError,
            BrokerError::Metadata(error) => metadata_error(error),
            BrokerError::MetadataBehind { .. } => ResponseError::RequestTimedOut,
            BrokerError::NoSession => ResponseError::NotLeaderOrFollower,
        }
    }

    /// What a client may be told: the reason when it is the client's to
    /// act on, `None` when it is internal (logged instead).
    pub fn client_message(&self) -> Option<String> {
        match self {
            BrokerError::BacklogFull { .. } => Some(self.to_string()),
            BrokerError::Metadata(ClientError::Meta(error)) if is_clients_to_fix(error) => Some(error.to_string()),
            BrokerError::Fenced { .. }
            | BrokerError::WalUnavailable { .. }
            | BrokerError::WalTimeout
            | BrokerError::EntryTooLarge(_)
            | BrokerError::ObjectMissing { .. }
            | BrokerError::ObjectDamaged { .. }
            | BrokerError::ObjectStore(_)
            | BrokerError::NotStored { .. }
            | BrokerError::Damaged { .. }
            | BrokerError::Metadata(_)
            | BrokerError::MetadataBehind { .. }
            | BrokerError::NoSession => None,
        }
    }
}

/// The Kafka error for a controller's refusal or its absence.
fn metadata_error(error: &ClientError) -> ResponseError {
    match error {
        ClientError::Meta(meta) => match meta {
            MetaError::TopicAlreadyExists { .. } => ResponseError::TopicAlreadyExists,
            MetaError::InvalidTopicName { .. } => ResponseError::InvalidTopicException,
            MetaError::UnknownTopic { .. } => ResponseError::UnknownTopicOrPartition,
            MetaError::InvalidPartitions { .. } => ResponseError::InvalidPartitions,
            MetaError::UnknownConfig { .. } | MetaError::InvalidConfig { .. } => ResponseError::InvalidConfig,
            MetaError::InvalidRequest { .. } => ResponseError::InvalidRequest,
            MetaError::InvalidScramCredential { .. } => ResponseError::UnacceptableCredential,
            MetaError::NoLeader | MetaError::Internal { .. } => ResponseError::NotController,
            MetaError::NotPartitionLeader { .. } | MetaError::StaleEpoch { .. } | MetaError::Fenced { .. } => {
                ResponseError::NotLeaderOrFollower
            }
            MetaError::UnknownNode { .. }
            | MetaError::UnknownController { .. }
            | MetaError::MembershipRefused { .. }
            | MetaError::VersionNotAfter { .. }
            | MetaError::UnknownLog { .. }
            | MetaError::LogEpochMismatch { .. }
            | MetaError::LogSealed { .. }
            | MetaError::LogStillWritten { .. }
            | MetaError::NoEnsemble { .. } => ResponseError::UnknownServerError,
        },
        ClientError::Unavailable { .. } => ResponseError::RequestTimedOut,
        ClientError::Refused(_) | ClientError::Decode(_) => ResponseError::UnknownServerError,
    }
}

/// Refusals that describe the client's own request (a name, a count, a
/// config), which it is told verbatim.
fn is_clients_to_fix(error: &MetaError) -> bool {
    matches!(
        error,
        MetaError::TopicAlreadyExists { .. }
            | MetaError::InvalidTopicName { .. }
            | MetaError::UnknownTopic { .. }
            | MetaError::InvalidPartitions { .. }
            | MetaError::UnknownConfig { .. }
            | MetaError::InvalidConfig { .. }
            | MetaError::InvalidRequest { .. }
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn internal_detail_never_reaches_a_client_but_its_own_mistakes_do() {
        let unavailable = BrokerError::Metadata(ClientError::Unavailable {
            waited: Duration::from_secs(15),
            last: "127.0.0.1:9190: connection refused".into(),
            heard: false,
        });
        assert_eq!(unavailable.kafka_error(), ResponseError::RequestTimedOut);
        assert_eq!(unavailable.client_message(), None, "controller addresses stay in the log");

        let name = BrokerError::Metadata(ClientError::Meta(MetaError::InvalidTopicName {
            name: "a b".into(),
            reason: "illegal character ' '".into(),
        }));
        assert_eq!(name.kafka_error(), ResponseError::InvalidTopicException);
        assert!(name.client_message().is_some_and(|message| message.contains("illegal character")));

        let damaged = BrokerError::ObjectDamaged { key: "00/keel/1.obj".into(), reason: "bad CRC".into() };
        assert_eq!(damaged.kafka_error(), ResponseError::KafkaStorageError);
        assert_eq!(damaged.client_message(), None);

        let missing = BrokerError::from(StoreError::NotFound { key: "k".into() });
        assert!(matches!(missing, BrokerError::ObjectMissing { .. }));
    }

    #[test]
    fn a_write_of_unknown_fate_is_a_timeout_and_a_fence_moves_the_client_on() {
        assert_eq!(BrokerError::WalTimeout.kafka_error(), ResponseError::RequestTimedOut);
        assert_eq!(BrokerError::Fenced { log: LogId(3) }.kafka_error(), ResponseError::NotLeaderOrFollower);
        let backlog = BrokerError::BacklogFull { backlog: 10, cap: 5 };
        assert_eq!(backlog.kafka_error(), ResponseError::KafkaStorageError);
        assert!(backlog.client_message().is_some(), "the producer should know why it is pushed back");
    }
}

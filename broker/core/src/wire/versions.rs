//! `ApiVersions`: exactly the APIs and versions this broker implements,
//! each range as wide as the wire codec (Kafka 4's message specs) allows.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Message;

/// Implemented APIs with their (min, max) versions.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, ProduceRequest::VERSIONS.min, ProduceRequest::VERSIONS.max),
    (ApiKey::Fetch, FetchRequest::VERSIONS.min, FetchRequest::VERSIONS.max),
    (ApiKey::ListOffsets, ListOffsetsRequest::VERSIONS.min, ListOffsetsRequest::VERSIONS.max),
    (ApiKey::Metadata, MetadataRequest::VERSIONS.min, MetadataRequest::VERSIONS.max),
    (
        ApiKey::DescribeTopicPartitions,
        DescribeTopicPartitionsRequest::VERSIONS.min,
        DescribeTopicPartitionsRequest::VERSIONS.max,
    ),
    (ApiKey::ApiVersions, ApiVersionsRequest::VERSIONS.min, ApiVersionsRequest::VERSIONS.max),
    // Advertised from v0, as librdkafka looks for it; v0 itself (SASL's
    // tokens unframed after the handshake) is refused by `sasl`: clients
    // since Kafka 1.0 use v1, whose tokens come in SaslAuthenticate.
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, SaslAuthenticateRequest::VERSIONS.min, SaslAuthenticateRequest::VERSIONS.max),
    (
        ApiKey::DescribeUserScramCredentials,
        DescribeUserScramCredentialsRequest::VERSIONS.min,
        DescribeUserScramCredentialsRequest::VERSIONS.max,
    ),
    (
        ApiKey::AlterUserScramCredentials,
        AlterUserScramCredentialsRequest::VERSIONS.min,
        AlterUserScramCredentialsRequest::VERSIONS.max,
    ),
    (ApiKey::CreateTopics, CreateTopicsRequest::VERSIONS.min, CreateTopicsRequest::VERSIONS.max),
    (ApiKey::DeleteTopics, DeleteTopicsRequest::VERSIONS.min, DeleteTopicsRequest::VERSIONS.max),
    (ApiKey::InitProducerId, InitProducerIdRequest::VERSIONS.min, InitProducerIdRequest::VERSIONS.max),
    (ApiKey::DescribeConfigs, DescribeConfigsRequest::VERSIONS.min, DescribeConfigsRequest::VERSIONS.max),
    (ApiKey::AlterConfigs, AlterConfigsRequest::VERSIONS.min, AlterConfigsRequest::VERSIONS.max),
    (ApiKey::DescribeLogDirs, DescribeLogDirsRequest::VERSIONS.min, DescribeLogDirsRequest::VERSIONS.max),
    (ApiKey::ElectLeaders, ElectLeadersRequest::VERSIONS.min, ElectLeadersRequest::VERSIONS.max),
    (
        ApiKey::AlterPartitionReassignments,
        AlterPartitionReassignmentsRequest::VERSIONS.min,
        AlterPartitionReassignmentsRequest::VERSIONS.max,
    ),
    (
        ApiKey::ListPartitionReassignments,
        ListPartitionReassignmentsRequest::VERSIONS.min,
        ListPartitionReassignmentsRequest::VERSIONS.max,
    ),
    (
        ApiKey::OffsetForLeaderEpoch,
        OffsetForLeaderEpochRequest::VERSIONS.min,
        OffsetForLeaderEpochRequest::VERSIONS.max,
    ),
    (ApiKey::CreatePartitions, CreatePartitionsRequest::VERSIONS.min, CreatePartitionsRequest::VERSIONS.max),
    (
        ApiKey::IncrementalAlterConfigs,
        IncrementalAlterConfigsRequest::VERSIONS.min,
        IncrementalAlterConfigsRequest::VERSIONS.max,
    ),
    (ApiKey::DescribeCluster, DescribeClusterRequest::VERSIONS.min, DescribeClusterRequest::VERSIONS.max),
    (ApiKey::DeleteRecords, DeleteRecordsRequest::VERSIONS.min, DeleteRecordsRequest::VERSIONS.max),
    (ApiKey::FindCoordinator, FindCoordinatorRequest::VERSIONS.min, FindCoordinatorRequest::VERSIONS.max),
    (ApiKey::JoinGroup, JoinGroupRequest::VERSIONS.min, JoinGroupRequest::VERSIONS.max),
    (ApiKey::SyncGroup, SyncGroupRequest::VERSIONS.min, SyncGroupRequest::VERSIONS.max),
    (ApiKey::Heartbeat, HeartbeatRequest::VERSIONS.min, HeartbeatRequest::VERSIONS.max),
    (ApiKey::LeaveGroup, LeaveGroupRequest::VERSIONS.min, LeaveGroupRequest::VERSIONS.max),
    (ApiKey::OffsetCommit, OffsetCommitRequest::VERSIONS.min, OffsetCommitRequest::VERSIONS.max),
    (ApiKey::OffsetFetch, OffsetFetchRequest::VERSIONS.min, OffsetFetchRequest::VERSIONS.max),
    (ApiKey::OffsetDelete, OffsetDeleteRequest::VERSIONS.min, OffsetDeleteRequest::VERSIONS.max),
    (ApiKey::DescribeGroups, DescribeGroupsRequest::VERSIONS.min, DescribeGroupsRequest::VERSIONS.max),
    (ApiKey::ListGroups, ListGroupsRequest::VERSIONS.min, ListGroupsRequest::VERSIONS.max),
    (ApiKey::DeleteGroups, DeleteGroupsRequest::VERSIONS.min, DeleteGroupsRequest::VERSIONS.max),
    (
        ApiKey::ConsumerGroupDescribe,
        ConsumerGroupDescribeRequest::VERSIONS.min,
        ConsumerGroupDescribeRequest::VERSIONS.max,
    ),
    (
        ApiKey::ConsumerGroupHeartbeat,
        ConsumerGroupHeartbeatRequest::VERSIONS.min,
        ConsumerGroupHeartbeatRequest::VERSIONS.max,
    ),
    // Transactions as before KIP-890's second part (transaction version 2,
    // which bumps the epoch per transaction): EndTxn v5, AddPartitionsToTxn
    // v5 and TxnOffsetCommit v5 belong to it and are not offered. v4 of
    // AddPartitionsToTxn is the partition leaders' check (KIP-890 part 1).
    (ApiKey::AddPartitionsToTxn, AddPartitionsToTxnRequest::VERSIONS.min, 4),
    (ApiKey::AddOffsetsToTxn, AddOffsetsToTxnRequest::VERSIONS.min, 4),
    (ApiKey::EndTxn, EndTxnRequest::VERSIONS.min, 4),
    (ApiKey::TxnOffsetCommit, TxnOffsetCommitRequest::VERSIONS.min, 4),
    (ApiKey::WriteTxnMarkers, WriteTxnMarkersRequest::VERSIONS.min, WriteTxnMarkersRequest::VERSIONS.max),
    (
        ApiKey::DescribeTransactions,
        DescribeTransactionsRequest::VERSIONS.min,
        DescribeTransactionsRequest::VERSIONS.max,
    ),
    (ApiKey::ListTransactions, ListTransactionsRequest::VERSIONS.min, ListTransactionsRequest::VERSIONS.max),
    (ApiKey::DescribeProducers, DescribeProducersRequest::VERSIONS.min, DescribeProducersRequest::VERSIONS.max),
];

/// The (min, max) versions of `api` this broker speaks, if it speaks it.
pub fn supported(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED.iter().find(|(key, _, _)| *key == api).map(|(_, min, max)| (*min, *max))
}

fn api_keys() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|(key, min, max)| {
            ApiVersion::default().with_api_key(*key as i16).with_min_version(*min).with_max_version(*max)
        })
        .collect()
}

/// The answer to an `ApiVersions` request.
pub fn answer() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(api_keys())
}

/// The answer to an `ApiVersions` at a version this broker does not speak.
pub fn unsupported() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_error_code(ResponseError::UnsupportedVersion.code()).with_api_keys(api_keys())
}

//! One Kafka request from its frame to its answer: the version check
//! against what `ApiVersions` advertises, the part that must follow the
//! connection's order (`admit`), then the handler (`handle`), which runs
//! alongside later requests of the connection.

use std::sync::Arc;

use bytes::BytesMut;
use kafka_protocol::messages::ApiKey;
use keel_broker_core::wire::{decode, encode, versions, Request, Unreadable};

use super::server::Connection;
use super::{admin, groups, txn, Client};
use crate::broker::Broker;

/// A request past its version check, ready to run alongside later ones.
#[derive(Debug)]
pub enum Admitted {
    /// Answered already (an `ApiVersions` at a version this broker lacks).
    Answered(BytesMut),
    /// A produce whose batches are appended; it waits for the WAL.
    Produce {
        correlation: i32,
        version: i16,
        started: std::time::Instant,
        produce: super::produce::Admitted,
    },
    Other(Request),
}

/// The part of a request that must follow the connection's order, run by the
/// connection's reader as each request arrives: the version check, and for a
/// Produce the appending of its batches, so produces pipelined on one
/// connection get offsets in the order they were sent (Kafka handles a
/// connection's requests in order). `handle` then runs it concurrently.
pub async fn admit(broker: &Arc<Broker>, request: Request) -> Result<Admitted, Unreadable> {
    let Request { api, version, header, body } = request;
    let Some((min, max)) = versions::supported(api) else {
        return Err(Unreadable::UnsupportedVersion { api, version, min: 0, max: -1 });
    };
    if version < min || version > max {
        if api == ApiKey::ApiVersions {
            // KIP-511: answer at v0 with the error and the supported ranges,
            // so the client can pick a version it speaks.
            return Ok(Admitted::Answered(encode(api, 0, header.correlation_id, &versions::unsupported())?));
        }
        return Err(Unreadable::UnsupportedVersion { api, version, min, max });
    }
    if matches!(api, ApiKey::OffsetCommit | ApiKey::OffsetFetch) {
        // Kafka handles a connection's requests one at a time: an OffsetFetch
        // sent right after an OffsetCommit on the same connection sees that
        // commit (librdkafka's `committed()` after an asynchronous commit).
        // Answered here, in the connection's order; a commit waits only for
        // its own WAL acknowledgement.
        let started = std::time::Instant::now();
        let correlation = header.correlation_id;
        let answer = if api == ApiKey::OffsetCommit {
            let response = groups::offset_commit::handle(broker, decode(api, version, body)?, version).await;
            encode(api, version, correlation, &response)?
        } else {
            let response = groups::offset_fetch::handle(broker, decode(api, version, body)?, version).await;
            encode(api, version, correlation, &response)?
        };
        count_request(broker, api, version, started);
        return Ok(Admitted::Answered(answer));
    }
    if api == ApiKey::Produce {
        let started = std::time::Instant::now();
        let request = decode(api, version, body)?;
        // A transaction's first batch in a partition waits for its
        // coordinator's word (KIP-890); later requests of the connection wait
        // behind it, as their order must hold.
        let produce = super::produce::admit(broker, request, version).await;
        return Ok(Admitted::Produce { correlation: header.correlation_id, version, started, produce });
    }
    Ok(Admitted::Other(Request { api, version, header, body }))
}

/// Answers one admitted request that came on `connection`. `Ok(None)` means
/// no answer is sent (`acks=0`).
pub async fn handle(
    broker: &Arc<Broker>,
    admitted: Admitted,
    connection: &Connection,
) -> Result<Option<BytesMut>, Unreadable> {
    let peer = connection.peer;
    let request = match admitted {
        Admitted::Answered(frame) => return Ok(Some(frame)),
        Admitted::Produce { correlation, version, started, produce } => {
            let api = ApiKey::Produce;
            let answer = match super::produce::finish(broker, produce).await {
                Some(response) => encode(api, version, correlation, &response)?,
                None => return Ok(None),
            };
            count_request(broker, api, version, started);
            return Ok(Some(answer));
        }
        Admitted::Other(request) => request,
    };
    let Request { api, version, header, body } = request;
    let started = std::time::Instant::now();
    let correlation = header.correlation_id;
    // Every handler has the form `handle(broker, request, version) -> response`,
    // those whose answer names brokers' addresses `handle(broker, request,
    // version, listener)`. (OffsetCommit and OffsetFetch are answered in `admit`.)
    macro_rules! answer {
        ($handler:path) => {
            encode(api, version, correlation, &$handler(broker, decode(api, version, body)?, version).await)?
        };
        ($handler:path, listener) => {
            encode(
                api,
                version,
                correlation,
                &$handler(broker, decode(api, version, body)?, version, &connection.listener).await,
            )?
        };
    }
    let answer = match api {
        ApiKey::ApiVersions => encode(api, version, correlation, &versions::answer())?,
        ApiKey::Metadata => answer!(super::metadata::handle, listener),
        ApiKey::Fetch => answer!(super::fetch::handle),
        ApiKey::ListOffsets => answer!(super::list_offsets::handle),
        ApiKey::InitProducerId => answer!(super::init_producer_id::handle),
        ApiKey::DeleteRecords => answer!(super::delete_records::handle),
        ApiKey::CreateTopics => answer!(admin::create_topics::handle),
        ApiKey::DeleteTopics => answer!(admin::delete_topics::handle),
        ApiKey::CreatePartitions => answer!(admin::create_partitions::handle),
        ApiKey::DescribeConfigs => answer!(admin::describe_configs::handle),
        ApiKey::IncrementalAlterConfigs => answer!(admin::incremental_alter_configs::handle),
        ApiKey::AlterConfigs => answer!(admin::alter_configs::handle),
        ApiKey::DescribeLogDirs => answer!(admin::describe_log_dirs::handle),
        ApiKey::ElectLeaders => answer!(admin::elect_leaders::handle),
        ApiKey::AlterPartitionReassignments => answer!(admin::partition_reassignments::alter),
        ApiKey::ListPartitionReassignments => answer!(admin::partition_reassignments::list),
        ApiKey::OffsetForLeaderEpoch => answer!(super::offset_for_leader_epoch::handle),
        ApiKey::DescribeTopicPartitions => answer!(super::describe_topic_partitions::handle),
        ApiKey::DescribeCluster => answer!(admin::describe_cluster::handle, listener),
        ApiKey::FindCoordinator => answer!(groups::find_coordinator::handle, listener),
        ApiKey::JoinGroup => {
            let client = Client::of(&header, peer);
            let request = decode(api, version, body)?;
            encode(api, version, correlation, &groups::join_group::handle(broker, request, version, &client).await)?
        }
        ApiKey::SyncGroup => answer!(groups::sync_group::handle),
        ApiKey::Heartbeat => answer!(groups::heartbeat::handle),
        ApiKey::LeaveGroup => answer!(groups::leave_group::handle),
        ApiKey::ConsumerGroupHeartbeat => {
            let client = Client::of(&header, peer);
            let request = decode(api, version, body)?;
            let response = groups::consumer_group_heartbeat::handle(broker, request, version, &client).await;
            encode(api, version, correlation, &response)?
        }
        ApiKey::ConsumerGroupDescribe => answer!(groups::consumer_group_describe::handle),
        ApiKey::OffsetDelete => answer!(groups::offset_delete::handle),
        ApiKey::DescribeGroups => answer!(groups::describe_groups::handle),
        ApiKey::ListGroups => answer!(groups::list_groups::handle),
        ApiKey::DeleteGroups => answer!(groups::delete_groups::handle),
        ApiKey::TxnOffsetCommit => answer!(groups::txn_offset_commit::handle),
        ApiKey::AddPartitionsToTxn => answer!(txn::add_partitions_to_txn::handle),
        ApiKey::AddOffsetsToTxn => answer!(txn::add_offsets_to_txn::handle),
        ApiKey::EndTxn => answer!(txn::end_txn::handle),
        ApiKey::WriteTxnMarkers => answer!(txn::write_txn_markers::handle),
        ApiKey::DescribeTransactions => answer!(txn::describe_transactions::handle),
        ApiKey::ListTransactions => answer!(txn::list_transactions::handle),
        ApiKey::DescribeProducers => answer!(txn::describe_producers::handle),
        ApiKey::DescribeUserScramCredentials => answer!(admin::scram_credentials::describe),
        ApiKey::AlterUserScramCredentials => answer!(admin::scram_credentials::alter),
        // On a SASL listener the connection answers these before anything
        // else (`sasl`); here the listener has no SASL.
        ApiKey::SaslHandshake => encode(
            api,
            version,
            correlation,
            &kafka_protocol::messages::SaslHandshakeResponse::default()
                .with_error_code(kafka_protocol::error::ResponseError::IllegalSaslState.code()),
        )?,
        ApiKey::SaslAuthenticate => encode(
            api,
            version,
            correlation,
            &kafka_protocol::messages::SaslAuthenticateResponse::default()
                .with_error_code(kafka_protocol::error::ResponseError::IllegalSaslState.code())
                .with_error_message(Some("this listener has no SASL".into())),
        )?,
        other => return Err(Unreadable::UnsupportedVersion { api: other, version, min: 0, max: -1 }),
    };
    count_request(broker, api, version, started);
    Ok(Some(answer))
}

fn count_request(broker: &Broker, api: ApiKey, version: i16, started: std::time::Instant) {
    let name = format!("{api:?}");
    let metrics = &broker.cluster.metrics;
    metrics.requests.with_label_values(&[&name, &version.to_string()]).inc();
    metrics.request_seconds.with_label_values(&[&name]).observe(started.elapsed().as_secs_f64());
}

//! Kafka requests: decoding the header, checking the version against what
//! `ApiVersions` advertises, dispatching to the handler, and encoding the
//! answer. The wire codec is the `kafka-protocol` crate's.

mod admin;
mod delete_records;
mod fetch;
mod groups;
mod metadata;
mod offsets;
mod produce;
mod producer_id;
mod txn;
mod versions;

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};

use crate::broker::Broker;

pub use versions::SUPPORTED;

/// Why a connection is closed instead of answered, as Kafka does for
/// requests it cannot read.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("{api:?} v{version} is not supported (supported: v{min}-v{max})")]
    UnsupportedVersion { api: ApiKey, version: i16, min: i16, max: i16 },
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed { api: ApiKey, version: i16, reason: String },
    #[error("request shorter than its header")]
    Short,
    /// A broker bug: an answer that this version of the API cannot carry.
    #[error("BUG: the answer to {api:?} v{version} cannot be encoded: {reason}")]
    Encode { api: ApiKey, version: i16, reason: String },
}

/// A decoded request header and the rest of the frame.
#[derive(Debug)]
pub struct Request {
    pub api: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: Bytes,
}

/// Reads a request frame's header.
pub fn parse(mut frame: Bytes) -> Result<Request, Unreadable> {
    if frame.len() < 4 {
        return Err(Unreadable::Short);
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api = ApiKey::try_from(key).map_err(|_| Unreadable::UnknownApi(key))?;
    let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
        .map_err(|error| Unreadable::Malformed { api, version, reason: error.to_string() })?;
    Ok(Request { api, version, header, body: frame })
}

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
        produce: produce::Admitted,
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
    if api == ApiKey::Produce {
        let started = std::time::Instant::now();
        let request = decode(api, version, body)?;
        // A transaction's first batch in a partition waits for its
        // coordinator's word (KIP-890); later requests of the connection wait
        // behind it, as their order must hold.
        let verified = crate::txn::verify_produce(broker, &request).await;
        let produce = produce::admit(broker, request, version, false, &verified);
        return Ok(Admitted::Produce { correlation: header.correlation_id, version, started, produce });
    }
    Ok(Admitted::Other(Request { api, version, header, body }))
}

/// Answers one admitted request from `peer`. `Ok(None)` means no answer is sent (`acks=0`).
pub async fn handle(
    broker: &Arc<Broker>,
    admitted: Admitted,
    peer: std::net::SocketAddr,
) -> Result<Option<BytesMut>, Unreadable> {
    let request = match admitted {
        Admitted::Answered(frame) => return Ok(Some(frame)),
        Admitted::Produce { correlation, version, started, produce } => {
            let api = ApiKey::Produce;
            let answer = match produce::finish(broker, produce).await {
                Some(response) => encode(api, version, correlation, &response)?,
                None => return Ok(None),
            };
            count_request(broker, api, started);
            return Ok(Some(answer));
        }
        Admitted::Other(request) => request,
    };
    let Request { api, version, header, body } = request;
    let started = std::time::Instant::now();
    let correlation = header.correlation_id;
    let answer = match api {
        ApiKey::ApiVersions => encode(api, version, correlation, &versions::handle())?,
        ApiKey::Metadata => {
            let response = metadata::handle(broker, decode(api, version, body)?, version).await;
            encode(api, version, correlation, &response)?
        }
        ApiKey::Fetch => {
            encode(api, version, correlation, &fetch::handle(broker, decode(api, version, body)?, version).await)?
        }
        ApiKey::ListOffsets => {
            encode(api, version, correlation, &offsets::handle(broker, decode(api, version, body)?, version).await)?
        }
        ApiKey::InitProducerId => {
            encode(api, version, correlation, &producer_id::handle(broker, decode(api, version, body)?, version).await)?
        }
        ApiKey::CreateTopics => encode(
            api,
            version,
            correlation,
            &admin::create_topics(broker, decode(api, version, body)?, version).await,
        )?,
        ApiKey::DeleteTopics => encode(
            api,
            version,
            correlation,
            &admin::delete_topics(broker, decode(api, version, body)?, version).await,
        )?,
        ApiKey::CreatePartitions => {
            encode(api, version, correlation, &admin::create_partitions(broker, decode(api, version, body)?).await)?
        }
        ApiKey::DescribeConfigs => {
            encode(api, version, correlation, &admin::describe_configs(broker, decode(api, version, body)?))?
        }
        ApiKey::IncrementalAlterConfigs => encode(
            api,
            version,
            correlation,
            &admin::incremental_alter_configs(broker, decode(api, version, body)?).await,
        )?,
        ApiKey::DeleteRecords => {
            encode(api, version, correlation, &delete_records::handle(broker, decode(api, version, body)?).await)?
        }
        ApiKey::DescribeCluster => {
            encode(api, version, correlation, &admin::describe_cluster(broker, decode(api, version, body)?))?
        }
        ApiKey::FindCoordinator => encode(
            api,
            version,
            correlation,
            &groups::find_coordinator(broker, decode(api, version, body)?, version).await,
        )?,
        ApiKey::JoinGroup => {
            let client = groups::Client::of(&header, peer);
            let request = decode(api, version, body)?;
            encode(api, version, correlation, &groups::join_group(broker, request, version, &client).await)?
        }
        ApiKey::SyncGroup => {
            encode(api, version, correlation, &groups::sync_group(broker, decode(api, version, body)?, version).await)?
        }
        ApiKey::Heartbeat => {
            encode(api, version, correlation, &groups::heartbeat(broker, decode(api, version, body)?))?
        }
        ApiKey::LeaveGroup => {
            encode(api, version, correlation, &groups::leave_group(broker, decode(api, version, body)?, version))?
        }
        ApiKey::ConsumerGroupHeartbeat => {
            let client = groups::Client::of(&header, peer);
            let request = decode(api, version, body)?;
            encode(api, version, correlation, &groups::consumer_group_heartbeat(broker, request, &client).await)?
        }
        ApiKey::ConsumerGroupDescribe => {
            encode(api, version, correlation, &groups::consumer_group_describe(broker, decode(api, version, body)?))?
        }
        ApiKey::OffsetCommit => encode(
            api,
            version,
            correlation,
            &groups::offset_commit(broker, decode(api, version, body)?, version).await,
        )?,
        ApiKey::OffsetFetch => {
            encode(api, version, correlation, &groups::offset_fetch(broker, decode(api, version, body)?, version))?
        }
        ApiKey::OffsetDelete => {
            encode(api, version, correlation, &groups::offset_delete(broker, decode(api, version, body)?).await)?
        }
        ApiKey::DescribeGroups => {
            encode(api, version, correlation, &groups::describe_groups(broker, decode(api, version, body)?, version))?
        }
        ApiKey::ListGroups => {
            encode(api, version, correlation, &groups::list_groups(broker, decode(api, version, body)?, version))?
        }
        ApiKey::DeleteGroups => {
            encode(api, version, correlation, &groups::delete_groups(broker, decode(api, version, body)?).await)?
        }
        ApiKey::TxnOffsetCommit => encode(
            api,
            version,
            correlation,
            &groups::txn_offset_commit(broker, decode(api, version, body)?, version).await,
        )?,
        ApiKey::AddPartitionsToTxn => encode(
            api,
            version,
            correlation,
            &txn::add_partitions_to_txn(broker, decode(api, version, body)?, version).await,
        )?,
        ApiKey::AddOffsetsToTxn => encode(
            api,
            version,
            correlation,
            &txn::add_offsets_to_txn(broker, decode(api, version, body)?, version).await,
        )?,
        ApiKey::EndTxn => {
            encode(api, version, correlation, &txn::end_txn(broker, decode(api, version, body)?, version).await)?
        }
        ApiKey::WriteTxnMarkers => {
            encode(api, version, correlation, &txn::write_txn_markers(broker, decode(api, version, body)?).await)?
        }
        ApiKey::DescribeTransactions => {
            encode(api, version, correlation, &txn::describe_transactions(broker, decode(api, version, body)?))?
        }
        ApiKey::ListTransactions => {
            encode(api, version, correlation, &txn::list_transactions(broker, decode(api, version, body)?, version))?
        }
        ApiKey::DescribeProducers => {
            encode(api, version, correlation, &txn::describe_producers(broker, decode(api, version, body)?))?
        }
        other => return Err(Unreadable::UnsupportedVersion { api: other, version, min: 0, max: -1 }),
    };
    count_request(broker, api, started);
    Ok(Some(answer))
}

/// A record batch the broker itself appended (the group coordinator writing
/// `__consumer_offsets`): its offsets are assigned and its WAL entry queued.
#[derive(Debug)]
pub(crate) struct InternalAppend(produce::Admitted);

const INTERNAL_PRODUCE_VERSION: i16 = 9;

/// Appends one record batch to a partition as the broker itself, through
/// the same path and checks as a client's produce with acks=all. It takes
/// its place in the log now, so appends made in some order (under a lock)
/// are in the log in that order; `finish_internal` waits until it is durable.
pub(crate) fn append_internal(broker: &Arc<Broker>, topic: &str, partition: i32, batch: Bytes) -> InternalAppend {
    append_internal_as(broker, topic, partition, batch, None)
}

/// `append_internal` of the first batch of a transaction at the partition,
/// with the token of its verification (`txn::begin_verification`).
pub(crate) fn append_internal_as(
    broker: &Arc<Broker>,
    topic: &str,
    partition: i32,
    batch: Bytes,
    token: Option<u64>,
) -> InternalAppend {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName};
    let request = ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(TopicName(kafka_protocol::protocol::StrBytes::from_string(topic.to_owned())))
            .with_partition_data(vec![PartitionProduceData::default().with_index(partition).with_records(Some(batch))]),
    ]);
    let mut verified = crate::txn::Verified::default();
    if let Some(token) = token {
        verified.ok.insert((topic.to_owned(), partition), token);
    }
    InternalAppend(produce::admit(broker, request, INTERNAL_PRODUCE_VERSION, true, &verified))
}

/// Waits for an internal append; `None` once it is durable, else the error.
pub(crate) async fn finish_internal(
    broker: &Arc<Broker>,
    appended: InternalAppend,
) -> Option<kafka_protocol::error::ResponseError> {
    let response = produce::finish(broker, appended.0).await?;
    let code = response.responses.first()?.partition_responses.first()?.error_code;
    (code != 0).then(|| {
        kafka_protocol::error::ResponseError::try_from_code(code)
            .unwrap_or(kafka_protocol::error::ResponseError::UnknownServerError)
    })
}

fn count_request(broker: &Broker, api: ApiKey, started: std::time::Instant) {
    let name = format!("{api:?}");
    broker.metrics.requests.with_label_values(&[&name]).inc();
    broker.metrics.request_seconds.with_label_values(&[&name]).observe(started.elapsed().as_secs_f64());
}

fn decode<T: Decodable>(api: ApiKey, version: i16, mut body: Bytes) -> Result<T, Unreadable> {
    T::decode(&mut body, version).map_err(|error| Unreadable::Malformed { api, version, reason: error.to_string() })
}

/// A response frame: length, header, body.
fn encode<T: Encodable + HeaderVersion>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &T,
) -> Result<BytesMut, Unreadable> {
    let failed = |error: anyhow::Error| Unreadable::Encode { api, version, reason: error.to_string() };
    let mut out = BytesMut::with_capacity(64);
    out.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut out, T::header_version(version))
        .map_err(failed)?;
    response.encode(&mut out, version).map_err(failed)?;
    let length = (out.len() - 4) as i32;
    out[0..4].copy_from_slice(&length.to_be_bytes());
    Ok(out)
}

/// The topic a Produce or Fetch names: by id from v13 on (the id is nil
/// before), by name before.
pub(crate) fn find_topic<'a>(
    image: &'a keel_controller_client::Image,
    name: &str,
    id: uuid::Uuid,
) -> Option<&'a keel_controller_client::Topic> {
    if id.is_nil() {
        image.topics.get(name)
    } else {
        image.topic_by_id(keel_controller_client::TopicId(id))
    }
}

/// Counts a partition-level error for the metrics.
pub(crate) fn count_error(broker: &Broker, api: &str, error: kafka_protocol::error::ResponseError) {
    broker.metrics.errors.with_label_values(&[api, &format!("{error:?}")]).inc();
}

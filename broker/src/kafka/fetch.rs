//! `Fetch`: from the hot cache, else from the WAL log holding the offset,
//! never past the high watermark (for `read_committed`, the last stable
//! offset, with the aborted transactions the client must skip). Long-polls
//! until `min_bytes` are ready or `max_wait_ms` passes, waking whenever a
//! high watermark moves.
//!
//! Fetch sessions (KIP-227, `keel_broker_core::fetch_session`): a full
//! fetch at epoch 0 opens one; an incremental fetch reads every partition of
//! its session and answers only those with news.
//!
//! PERFORMANCE-CRITICAL PATH: no INFO logs, no blocking calls.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchTopic, ForgottenTopic};
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, LeaderIdAndEpoch, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId, TopicName};
use keel_broker_core::fetch_session::{Answered, Context, Forgotten, TopicKey, WantedPartition, WantedTopic};
use keel_broker_core::partition::range_of;
use keel_controller_client::{Offset, Topic};

use crate::broker::Broker;

/// The topics a fetch asks for, in the fetch sessions' terms.
fn wanted(topics: &[FetchTopic]) -> Vec<WantedTopic> {
    topics
        .iter()
        .map(|topic| WantedTopic {
            key: TopicKey { name: topic.topic.0.to_string(), id: topic.topic_id },
            partitions: topic
                .partitions
                .iter()
                .map(|p| WantedPartition {
                    partition: p.partition,
                    fetch_offset: Offset(p.fetch_offset),
                    current_leader_epoch: p.current_leader_epoch,
                    partition_max_bytes: p.partition_max_bytes,
                })
                .collect(),
        })
        .collect()
}

fn forgotten(topics: &[ForgottenTopic]) -> Vec<Forgotten> {
    topics
        .iter()
        .map(|topic| Forgotten {
            key: TopicKey { name: topic.topic.0.to_string(), id: topic.topic_id },
            partitions: topic.partitions.clone(),
        })
        .collect()
}

pub(super) async fn handle(broker: &Arc<Broker>, request: FetchRequest, version: i16) -> FetchResponse {
    let sessions = &broker.fetch_sessions;
    let (asked, forgot) = (wanted(&request.topics), forgotten(&request.forgotten_topics_data));
    let begun = sessions.begin(request.session_id, request.session_epoch, &asked, &forgot);
    let (context, topics) = match begun {
        Ok(begun) => begun,
        Err(error) => {
            broker.count_error("Fetch", error);
            return FetchResponse::default().with_error_code(error.code());
        }
    };
    let wait = Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0));
    let deadline = tokio::time::Instant::now() + wait;
    let mut watermarks = broker.partitions.watermarks.subscribe();
    let read_committed = request.isolation_level == 1;
    let mut responses = loop {
        watermarks.borrow_and_update();
        let (responses, bytes, errors) = read_once(broker, &topics, request.max_bytes, version, read_committed).await;
        let expired = tokio::time::Instant::now() >= deadline;
        if bytes >= i64::from(request.min_bytes) || errors || expired {
            break responses;
        }
        // Woken by a high watermark, or at the deadline for one last read.
        let _ = tokio::time::timeout_at(deadline, watermarks.changed()).await;
    };
    if context != Context::Sessionless {
        let answered: Vec<(TopicKey, i32, Answered)> = responses
            .iter()
            .flat_map(|topic| {
                let key = TopicKey { name: topic.topic.0.to_string(), id: topic.topic_id };
                topic.partitions.iter().map(move |p| {
                    let bytes = p.records.as_ref().map_or(0, Bytes::len);
                    let answer = Answered {
                        bytes,
                        high_watermark: Offset(p.high_watermark),
                        log_start: Offset(p.log_start_offset),
                        error: p.error_code != 0,
                    };
                    (key.clone(), p.partition_index, answer)
                })
            })
            .collect();
        let mut include = sessions.finish(&context, &answered).into_iter();
        for topic in &mut responses {
            topic.partitions.retain(|_| include.next().unwrap_or(true));
        }
        responses.retain(|topic| !topic.partitions.is_empty());
    }
    let response = FetchResponse::default().with_responses(responses);
    if version >= 7 {
        response.with_session_id(context.id())
    } else {
        response
    }
}

/// One pass over the partitions to read: the responses, the record bytes
/// found, and whether any partition had an error.
async fn read_once(
    broker: &Arc<Broker>,
    topics: &[WantedTopic],
    max_bytes: i32,
    version: i16,
    read_committed: bool,
) -> (Vec<FetchableTopicResponse>, i64, bool) {
    let image = broker.cluster.image();
    let mut budget = i64::from(max_bytes.max(0));
    let mut total = 0i64;
    let mut errors = false;
    let mut responses = Vec::with_capacity(topics.len());
    for topic_request in topics {
        let topic = super::find_topic(&image, &topic_request.key.name, topic_request.key.id);
        let mut partitions = Vec::with_capacity(topic_request.partitions.len());
        for wanted in &topic_request.partitions {
            let empty = PartitionData::default().with_partition_index(wanted.partition).with_high_watermark(-1);
            let answer = match topic {
                None => {
                    let error = if version >= 13 {
                        ResponseError::UnknownTopicId
                    } else {
                        ResponseError::UnknownTopicOrPartition
                    };
                    Err(error)
                }
                Some(topic) => read_partition(broker, topic, wanted, budget, total == 0, version, read_committed).await,
            };
            let answer = match answer {
                Ok((data, bytes)) => {
                    total += bytes;
                    budget -= bytes;
                    if let Some(topic) = topic {
                        broker.cluster.metrics.bytes_out.with_label_values(&[&topic.name]).inc_by(bytes as u64);
                        if let Some(partition) = topic.partitions.get(wanted.partition as usize) {
                            broker.partitions.traffic.count(partition.stream_id, 0, bytes as u64);
                        }
                    }
                    data.with_partition_index(wanted.partition)
                }
                Err(error) => {
                    errors = true;
                    broker.count_error("Fetch", error);
                    let mut answer = empty.with_error_code(error.code());
                    if let (ResponseError::NotLeaderOrFollower, Some(topic), 12..) = (error, topic, version) {
                        let (leader, epoch) = super::metadata::current_leader(&image, topic, wanted.partition);
                        answer = answer.with_current_leader(
                            LeaderIdAndEpoch::default().with_leader_id(BrokerId(leader)).with_leader_epoch(epoch),
                        );
                    }
                    answer
                }
            };
            partitions.push(answer);
        }
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(TopicName(super::text(topic_request.key.name.clone())))
                .with_topic_id(topic_request.key.id)
                .with_partitions(partitions),
        );
    }
    (responses, total, errors)
}

/// Reads one partition from `fetch_offset` up to its high watermark (for
/// `read_committed`, its last stable offset, with the aborted transactions
/// among what is returned), within `budget` bytes (or one batch if
/// `first`, as Kafka always returns progress).
async fn read_partition(
    broker: &Arc<Broker>,
    topic: &Topic,
    wanted: &WantedPartition,
    budget: i64,
    first: bool,
    version: i16,
    read_committed: bool,
) -> Result<(PartitionData, i64), ResponseError> {
    let view = broker.partitions.read_view(topic, wanted.partition, wanted.current_leader_epoch)?;
    let (high_watermark, log_start) = (view.high_watermark, view.log_start);
    let offset = wanted.fetch_offset;
    if offset < log_start || offset > high_watermark {
        // The consumer resets its position (auto.offset.reset) on this answer.
        tracing::info!(
            topic = %topic.name,
            partition = wanted.partition,
            %offset,
            %log_start,
            %high_watermark,
            leader_epoch = view.leader_epoch.0,
            "fetch out of range"
        );
        return Err(ResponseError::OffsetOutOfRange);
    }
    let end = if read_committed { view.last_stable } else { high_watermark };
    let data = PartitionData::default()
        .with_high_watermark(high_watermark.0)
        .with_last_stable_offset(if version >= 4 { view.last_stable.0 } else { -1 })
        .with_log_start_offset(if version >= 5 { log_start.0 } else { -1 })
        .with_preferred_read_replica(BrokerId(-1));
    let limit = i64::from(wanted.partition_max_bytes.max(0)).min(budget.max(0));
    if offset >= end || (limit == 0 && !first) {
        let aborted = (read_committed && version >= 4).then(Vec::new);
        return Ok((data.with_records(Some(Bytes::new())).with_aborted_transactions(aborted), 0));
    }
    let batches = broker
        .partitions
        .read_batches(view.stream, range_of(&view.ranges, offset), offset, end, limit.max(1) as usize)
        .await
        .map_err(|error| {
            tracing::warn!(topic = %topic.name, partition = wanted.partition, %offset, "WAL read failed: {error}");
            ResponseError::KafkaStorageError
        })?;
    let size: usize = batches.iter().map(Bytes::len).sum();
    let mut records = BytesMut::with_capacity(size);
    for batch in &batches {
        records.extend_from_slice(batch);
    }
    let mut data = data.with_records(Some(records.freeze()));
    if read_committed && version >= 4 {
        let last = batches.last().map_or(offset, |b| keel_broker_core::batch::end_offset(b));
        let aborted = broker
            .partitions
            .aborted_between(view.stream, offset, last)
            .into_iter()
            .map(|txn| {
                AbortedTransaction::default()
                    .with_producer_id(ProducerId(txn.producer_id.0))
                    .with_first_offset(txn.first_offset.0)
            })
            .collect();
        data = data.with_aborted_transactions(Some(aborted));
    }
    Ok((data, size as i64))
}

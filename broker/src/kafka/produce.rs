//! `Produce`: each partition's batch goes to the log (`log::append`), all in
//! one WAL entry, and the answer waits for the WAL quorum (DESIGN §3).
//! `acks=0` gets no answer; `acks=1` waits for the same quorum as `acks=all`.
//!
//! PERFORMANCE-CRITICAL PATH: no INFO logs, no blocking calls.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{LeaderIdAndEpoch, PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse};
use keel_broker_core::groups::is_internal;
use keel_broker_core::partition::{Refusal, Writer};
use keel_controller_client::Image;

use crate::broker::Broker;
use crate::coordinator::txn::Verified;
use crate::log::append::{Answer, Appended, PartitionBatch};

/// A produce whose batches are appended (offsets assigned, the WAL entry
/// queued), waiting for its answer.
#[derive(Debug)]
pub struct Admitted {
    request: ProduceRequest,
    version: i16,
    image: Arc<Image>,
    /// Per partition in request order: refused by the request's own checks,
    /// or the index of its batch in `appended`.
    partitions: Vec<Result<usize, Refusal>>,
    appended: Appended,
}

/// Checks the request and appends every partition's batch, without
/// waiting for the WAL: called in the connection's request order, so
/// pipelined produces of one connection get their offsets in the order
/// they were sent, as in Kafka. A transaction's first batch in a partition
/// waits for its coordinator's word first (KIP-890).
pub async fn admit(broker: &Arc<Broker>, request: ProduceRequest, version: i16) -> Admitted {
    let verified = verify(broker, &request).await;
    let image = broker.cluster.image();
    let acks_valid = matches!(request.acks, -1..=1);
    let mut partitions = Vec::new();
    let mut batches = Vec::new();
    for topic_data in &request.topic_data {
        let topic = super::find_topic(&image, &topic_data.name.0, topic_data.topic_id);
        for partition in &topic_data.partition_data {
            let topic = match topic {
                Some(topic) if partition.index >= 0 && (partition.index as usize) < topic.partitions.len() => topic,
                _ => {
                    partitions.push(Err(Refusal::new(ResponseError::UnknownTopicOrPartition)));
                    continue;
                }
            };
            if is_internal(&topic.name) {
                let message = format!("{} is written by the brokers only", topic.name);
                partitions.push(Err(Refusal::with_message(ResponseError::InvalidTopicException, message)));
                continue;
            }
            if !acks_valid {
                partitions.push(Err(Refusal::new(ResponseError::InvalidRequiredAcks)));
                continue;
            }
            batches.push(PartitionBatch {
                topic: &topic.name,
                partition: partition.index,
                records: partition.records.as_ref(),
                verification: verified.of(&topic.name, partition.index),
            });
            partitions.push(Ok(batches.len() - 1));
        }
    }
    let appended = broker.partitions.append(&batches, Writer::Client);
    drop(batches);
    Admitted { request, version, image, partitions, appended }
}

/// The transactional batches' verification with their coordinator.
async fn verify(broker: &Broker, request: &ProduceRequest) -> Verified {
    let Some(id) = request.transactional_id.as_ref() else { return Verified::default() };
    let image = broker.cluster.image();
    let mut batches = Vec::new();
    for topic_data in &request.topic_data {
        let Some(topic) = super::find_topic(&image, &topic_data.name.0, topic_data.topic_id) else { continue };
        for partition in &topic_data.partition_data {
            if let Some(bytes) = &partition.records {
                batches.push((topic.name.as_str(), partition.index, bytes));
            }
        }
    }
    broker.txns.verify_batches(&id.0, &batches).await
}

/// Waits for the WAL quorum (and for the originals of duplicates), then answers.
pub async fn finish(broker: &Arc<Broker>, admitted: Admitted) -> Option<ProduceResponse> {
    let Admitted { request, version, image, partitions, appended } = admitted;
    let timeout = Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0));
    let answers: Vec<Answer> = broker.partitions.settle(appended, timeout).await;
    let mut partitions = partitions.into_iter();
    let mut responses = Vec::with_capacity(request.topic_data.len());
    for topic_data in &request.topic_data {
        let topic = super::find_topic(&image, &topic_data.name.0, topic_data.topic_id);
        let mut response =
            TopicProduceResponse::default().with_name(topic_data.name.clone()).with_topic_id(topic_data.topic_id);
        for partition in &topic_data.partition_data {
            let index = partition.index;
            let answer = match partitions.next().expect("one per partition") {
                Err(refusal) => Err(refusal),
                Ok(batch) => answers[batch].clone(),
            };
            let mut result =
                PartitionProduceResponse::default().with_index(index).with_base_offset(-1).with_log_append_time_ms(-1);
            match answer {
                Ok((base, append_time)) => {
                    result = result.with_base_offset(base.0).with_log_append_time_ms(append_time.unwrap_or(-1));
                }
                Err(Refusal { error, message }) => {
                    broker.count_error("Produce", error);
                    result = result.with_error_code(error.code());
                    if version >= 8 {
                        result = result.with_error_message(message.map(super::text));
                    }
                    if let (ResponseError::NotLeaderOrFollower, Some(topic), 10..) = (error, topic, version) {
                        let (leader, epoch) = super::metadata::current_leader(&image, topic, index);
                        result = result.with_current_leader(
                            LeaderIdAndEpoch::default().with_leader_id(BrokerId(leader)).with_leader_epoch(epoch),
                        );
                    }
                }
            }
            response.partition_responses.push(result);
        }
        responses.push(response);
    }
    (request.acks != 0).then(|| ProduceResponse::default().with_responses(responses))
}

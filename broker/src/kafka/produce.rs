//! `Produce`: each partition's batch goes to the log (`log::append`), all in
//! one WAL entry, and the answer waits for the WAL quorum (DESIGN §3).
//! `acks=0` gets no answer; `acks=1` waits for the same quorum as `acks=all`.
//!
//! PERFORMANCE-CRITICAL PATH: no INFO logs, no blocking calls.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse};
use keel_broker_core::groups::is_internal;
use keel_broker_core::partition::{Refusal, Writer};
use keel_controller_client::Image;

use crate::broker::Broker;
use crate::coordinator::txn::Verified;
use crate::log::append::{Answer, Appended, PartitionBatch};
use crate::log::partitions::Leadership;

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
    await_planned(broker, &request).await;
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

/// The longest produces are held, in all, for a partition taken over here:
/// well over a failover (p99 about 1 s as the cluster sees it). A failover
/// that takes longer (the object store down, no quorum) must not hold the
/// other partitions of this broker's requests for longer: after this the
/// partitions are refused at once, as any partition not led here.
const PLANNED_WAIT: Duration = Duration::from_secs(2);

/// Holds a produce with partitions this broker is taking over until it
/// leads them with their state loaded, another broker is assigned or
/// planned instead, the request's timeout passes, or `PLANNED_WAIT` passes
/// since the first produce was held for them; the append then serves or
/// refuses them as any partition. A partition is taken over while it has no
/// leader and is planned to be led here (`metadata::Leaders`: clients are
/// pointed here during a failover), and while it is assigned here with its
/// producers' state still loading.
///
/// Refusing instead would break idempotent producers: librdkafka pipelines
/// a partition's batches, and when the first is refused (NOT_LEADER) but the
/// next arrives once the state is loaded, that one is out of sequence. The
/// producer then bumps its epoch and numbers anew every batch it has not
/// had an answer for, including batches of other partitions that may have
/// been stored already (a timed-out request), which are then stored twice.
///
/// Called in the connection's request order, so a connection's produces
/// keep their order. Costs one look at the leadership while every partition
/// is led (the planned leaders are worked out only for a leaderless one).
async fn await_planned(broker: &Broker, request: &ProduceRequest) {
    let me = broker.cluster.config.node_id;
    // Whether partition `index` of `name` is being taken over here, by `image`.
    let taken_over = |image: &Image, leadership: &Leadership, name: &str, index: u32, planned: &mut Option<Vec<_>>| {
        let Some(partition) = image.topics.get(name).and_then(|t| t.partitions.get(index as usize)) else {
            return false;
        };
        match partition.leader {
            Some(_) => leadership.loading(me, partition),
            None => planned
                .get_or_insert_with(|| {
                    image
                        .planned_leaders()
                        .iter()
                        .filter(|(_, _, _, leader)| *leader == me)
                        .map(|(t, i, _, _)| (t.name.clone(), *i))
                        .collect()
                })
                .iter()
                .any(|(t, i): &(String, u32)| t == name && *i == index),
        }
    };
    let image = broker.cluster.image();
    let requested: Vec<(String, u32)> = request
        .topic_data
        .iter()
        .flat_map(|topic_data| {
            let topic = super::find_topic(&image, &topic_data.name.0, topic_data.topic_id);
            topic_data
                .partition_data
                .iter()
                .filter_map(move |p| Some((topic?.name.clone(), u32::try_from(p.index).ok()?)))
        })
        .collect();
    let held: Vec<(String, u32)> = {
        let leadership = broker.partitions.leadership();
        let mut planned = None;
        requested
            .into_iter()
            .filter(|(name, index)| taken_over(&image, &leadership, name, *index, &mut planned))
            .collect()
    };
    if held.is_empty() {
        return;
    }
    let now = tokio::time::Instant::now();
    let timeout = Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0));
    let mut deadline = now + timeout;
    if let Ok(mut since) = broker.partitions.planned_since.lock() {
        for (name, index) in &held {
            let Some(partition) = image.topics.get(name).and_then(|t| t.partitions.get(*index as usize)) else {
                continue;
            };
            deadline = deadline.min(*since.entry(partition.stream_id).or_insert(now) + PLANNED_WAIT);
        }
    }
    let mut images = broker.cluster.images.clone();
    let mut leading = broker.partitions.leading.subscribe();
    loop {
        let image = broker.cluster.image();
        let waiting = {
            let leadership = broker.partitions.leadership();
            let mut planned = None;
            held.iter().any(|(name, index)| taken_over(&image, &leadership, name, *index, &mut planned))
        };
        if !waiting {
            return;
        }
        tokio::select! {
            _ = images.changed() => {}
            _ = leading.changed() => {}
            _ = tokio::time::sleep_until(deadline) => return,
        }
    }
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
                Err(Refusal { error, message, record_errors }) => {
                    broker.count_error("Produce", error);
                    result = result.with_error_code(error.code());
                    if version >= 8 {
                        let record_errors = record_errors.into_iter().map(|(index, why)| {
                            BatchIndexAndErrorMessage::default()
                                .with_batch_index(index)
                                .with_batch_index_error_message(Some(super::text(why)))
                        });
                        result = result
                            .with_error_message(message.map(super::text))
                            .with_record_errors(record_errors.collect());
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

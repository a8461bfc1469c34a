//! The two ends of a transaction's markers, and KIP-890's check between
//! partition leaders and coordinators.
//!
//! - `send`: the coordinator asks each partition's leader (this broker or
//!   another, over the Kafka protocol) to write a prepared transaction's
//!   marker.
//! - `write`: a leader writes markers (`WriteTxnMarkers`) as control
//!   batches through the produce path and answers once they are durable; a
//!   marker in `__consumer_offsets` also ends the transaction's offsets.
//! - `verify`: a leader asks the coordinator whether a producer added a
//!   partition to its open transaction (`AddPartitionsToTxn` v4,
//!   `verify_only`), before taking the transaction's first batch there.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::{AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction};
use kafka_protocol::messages::write_txn_markers_request::{WritableTxnMarker, WritableTxnMarkerTopic};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, ProducerId, TopicName, TransactionalId,
    WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::StrBytes;
use keel_controller_client::Image;

use super::state::{Status, Txn};
use crate::batch::{marker_batch, Marker};
use crate::broker::Broker;
use crate::groups::{now_ms, OFFSETS_TOPIC};

const WRITE_TXN_MARKERS_VERSION: i16 = 1;

/// Marker errors that no retry can fix (Kafka's marker handler drops these
/// partitions too).
const GIVE_UP: [i16; 3] = [
    ResponseError::InvalidProducerEpoch.code(),
    ResponseError::ProducerFenced.code(),
    ResponseError::UnknownTopicOrPartition.code(),
];

/// A newer coordinator wrote this producer's markers: this one is stale
/// and stops (its completed state could not be written anyway).
const FENCED: i16 = ResponseError::TransactionCoordinatorFenced.code();
const ADD_PARTITIONS_VERIFY_VERSION: i16 = 4;

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_owned()))
}

/// Has the leaders of `partitions` write `txn`'s marker; returns the
/// partitions whose marker is not durable yet (a partition of a deleted
/// topic needs none), or `Fenced` when a newer coordinator wrote there.
pub async fn send(
    broker: &Arc<Broker>,
    txn: &Txn,
    coordinator_epoch: i32,
    partitions: BTreeSet<(String, i32)>,
) -> Result<BTreeSet<(String, i32)>, Fenced> {
    let image = broker.image();
    let commit = txn.status == Status::PrepareCommit;
    let mut left = BTreeSet::new();
    let mut by_leader: BTreeMap<u32, Vec<(String, i32)>> = BTreeMap::new();
    for (topic, index) in partitions {
        let Some(record) = image.topics.get(&topic).and_then(|t| t.partitions.get(index as usize)) else { continue };
        match record.leader {
            Some(leader) => by_leader.entry(leader.0).or_default().push((topic, index)),
            None => {
                left.insert((topic, index));
            }
        }
    }
    let sends = by_leader.into_iter().map(|(leader, partitions)| {
        let image = &image;
        async move {
            let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for (topic, index) in &partitions {
                topics.entry(topic).or_default().push(*index);
            }
            let marker = WritableTxnMarker::default()
                .with_producer_id(ProducerId(txn.producer_id))
                .with_producer_epoch(txn.epoch)
                .with_transaction_result(commit)
                .with_coordinator_epoch(coordinator_epoch)
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(t, indexes)| WritableTxnMarkerTopic::default().with_name(name(t)).with_partition_indexes(indexes))
                        .collect(),
                );
            let request = WriteTxnMarkersRequest::default().with_markers(vec![marker]);
            let answered = if leader == broker.config.node_id.0 {
                Ok(write(broker, request).await)
            } else {
                let address = image
                    .brokers
                    .get(&keel_controller_client::NodeId(leader))
                    .and_then(|node| node.kafka_listeners.first().cloned());
                match address {
                    Some(address) => {
                        broker.peers.call(&address, ApiKey::WriteTxnMarkers, WRITE_TXN_MARKERS_VERSION, &request).await
                    }
                    None => Err(anyhow::anyhow!("broker {leader} has no Kafka listener in the metadata")),
                }
            };
            let mut failed: Vec<(String, i32)> = Vec::new();
            let mut fenced = false;
            match answered {
                Ok(response) => {
                    let mut done = HashSet::new();
                    for topic in response.markers.iter().flat_map(|m| &m.topics) {
                        for partition in &topic.partitions {
                            let key = (topic.name.0.to_string(), partition.partition_index);
                            if partition.error_code == 0 {
                                done.insert(key);
                            } else if partition.error_code == FENCED {
                                fenced = true;
                            } else if GIVE_UP.contains(&partition.error_code) {
                                // The partition knows the producer at a newer epoch (its
                                // transaction there ended), or the topic is gone: retrying
                                // cannot help, and would hold the transaction for ever.
                                tracing::warn!(leader, topic = %key.0, partition = key.1, code = partition.error_code, "a marker was refused for good; the partition is done");
                                done.insert(key);
                            } else {
                                tracing::debug!(leader, topic = %key.0, partition = key.1, code = partition.error_code, "marker not written");
                            }
                        }
                    }
                    failed.extend(partitions.into_iter().filter(|p| !done.contains(p)));
                }
                Err(error) => {
                    tracing::debug!(leader, "cannot send markers: {error:#}");
                    failed.extend(partitions);
                }
            }
            (failed, fenced)
        }
    });
    let mut fenced = false;
    for (failed, refused) in futures::future::join_all(sends).await {
        left.extend(failed);
        fenced |= refused;
    }
    if fenced {
        return Err(Fenced);
    }
    Ok(left)
}

/// A partition leader saw this producer's markers from a newer coordinator.
#[derive(Debug)]
pub struct Fenced;

/// `WriteTxnMarkers` at a partition leader: each marker is appended to
/// each of its partitions now, in request order, and answered once durable.
pub async fn write(broker: &Arc<Broker>, request: WriteTxnMarkersRequest) -> WriteTxnMarkersResponse {
    let now = now_ms();
    let mut pending = Vec::new();
    for marker in &request.markers {
        let kind = if marker.transaction_result { Marker::Commit } else { Marker::Abort };
        for topic in &marker.topics {
            for &index in &topic.partition_indexes {
                let batch =
                    marker_batch(marker.producer_id.0, marker.producer_epoch, kind, marker.coordinator_epoch, now);
                let appended = crate::api::append_internal(broker, &topic.name.0, index, batch);
                pending.push((marker.producer_id.0, kind, topic.name.clone(), index, appended));
            }
        }
    }
    let mut results: BTreeMap<i64, BTreeMap<TopicName, Vec<WritableTxnMarkerPartitionResult>>> = BTreeMap::new();
    for (producer_id, kind, topic, index, appended) in pending {
        let error = crate::api::finish_internal(broker, appended).await;
        if error.is_none() && topic.0.as_str() == OFFSETS_TOPIC {
            broker.groups.txn_ended(index, producer_id, kind == Marker::Commit);
        }
        if let Some(error) = error {
            crate::api::count_error(broker, "WriteTxnMarkers", error);
        }
        let result = WritableTxnMarkerPartitionResult::default()
            .with_partition_index(index)
            .with_error_code(error.map_or(0, |e| e.code()));
        results.entry(producer_id).or_default().entry(topic).or_default().push(result);
    }
    let markers = results
        .into_iter()
        .map(|(producer_id, topics)| {
            WritableTxnMarkerResult::default().with_producer_id(ProducerId(producer_id)).with_topics(
                topics
                    .into_iter()
                    .map(|(name, partitions)| {
                        WritableTxnMarkerTopicResult::default().with_name(name).with_partitions(partitions)
                    })
                    .collect(),
            )
        })
        .collect();
    WriteTxnMarkersResponse::default().with_markers(markers)
}

/// Why the coordinator did not confirm a verification.
#[derive(Debug)]
pub enum Unverified {
    /// The coordinator is moving or loading: retriable.
    Unreachable(HashSet<(String, i32)>),
    /// It could not be asked.
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Unverified {
    fn from(error: anyhow::Error) -> Unverified {
        Unverified::Failed(error)
    }
}

/// The partitions of `wanted` that producer (id, epoch) of transactional id
/// `id` added to its open transaction, as its coordinator says.
pub async fn verify(
    broker: &Arc<Broker>,
    image: &Image,
    id: &str,
    producer_id: i64,
    epoch: i16,
    wanted: &[(String, i32)],
) -> Result<HashSet<(String, i32)>, Unverified> {
    let partition =
        super::TxnCoordinator::partition_of(image, id).ok_or_else(|| anyhow::anyhow!("no {}", super::TXN_TOPIC))?;
    let leader = image.topics[super::TXN_TOPIC].partitions[partition as usize].leader;
    if leader == Some(broker.config.node_id) {
        let current = broker.txns.current(broker, id).map_err(|error| anyhow::anyhow!("{error:?}"))?;
        let ok = wanted.iter().filter(|p| super::state::verify(current.as_ref(), producer_id, epoch, p).is_ok());
        return Ok(ok.cloned().collect());
    }
    let address = leader
        .and_then(|leader| image.brokers.get(&leader))
        .and_then(|node| node.kafka_listeners.first().cloned())
        .ok_or_else(|| anyhow::anyhow!("{} partition {partition} has no leader", super::TXN_TOPIC))?;
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, index) in wanted {
        topics.entry(topic).or_default().push(*index);
    }
    let transaction = AddPartitionsToTxnTransaction::default()
        .with_transactional_id(TransactionalId(StrBytes::from_string(id.to_owned())))
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
        .with_verify_only(true)
        .with_topics(
            topics
                .into_iter()
                .map(|(t, p)| AddPartitionsToTxnTopic::default().with_name(name(t)).with_partitions(p))
                .collect(),
        );
    let request = AddPartitionsToTxnRequest::default().with_transactions(vec![transaction]);
    let response: AddPartitionsToTxnResponse =
        broker.peers.call(&address, ApiKey::AddPartitionsToTxn, ADD_PARTITIONS_VERIFY_VERSION, &request).await?;
    if response.error_code != 0 {
        return Err(anyhow::anyhow!("the coordinator answered error {}", response.error_code).into());
    }
    let retriable = [
        ResponseError::NotCoordinator,
        ResponseError::CoordinatorLoadInProgress,
        ResponseError::CoordinatorNotAvailable,
        ResponseError::ConcurrentTransactions,
    ]
    .map(|e| e.code());
    let (mut ok, mut unreachable) = (HashSet::new(), HashSet::new());
    for result in response.results_by_transaction {
        for topic in result.topic_results {
            for partition in topic.results_by_partition {
                let key = (topic.name.0.to_string(), partition.partition_index);
                if partition.partition_error_code == 0 {
                    ok.insert(key);
                } else if retriable.contains(&partition.partition_error_code) {
                    unreachable.insert(key);
                }
            }
        }
    }
    if !unreachable.is_empty() {
        return Err(Unverified::Unreachable(unreachable));
    }
    Ok(ok)
}

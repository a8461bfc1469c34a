//! The two ends of a transaction's markers, and KIP-890's check between
//! partition leaders and coordinators.
//!
//! - `send`: the coordinator has each partition's leader (this broker, or
//!   another through `Peers`) write a prepared transaction's marker.
//! - `write`: a leader writes markers as control batches through the log
//!   and answers once they are durable; a marker in `__consumer_offsets`
//!   also ends the transaction's offsets there.
//! - `verify`: a leader asks the coordinator whether a producer added a
//!   partition to its open transaction, before taking the transaction's
//!   first batch there.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use keel_broker_core::batch::{marker_batch, Marker as MarkerKind};
use keel_broker_core::groups::OFFSETS_TOPIC;
use keel_broker_core::partition::Verification;
use keel_broker_core::txn::state::{self, Status, Txn};
use keel_broker_core::txn::TXN_TOPIC;
use keel_controller_client::{Image, NodeId, ProducerId};

use super::Txns;
use crate::coordinator::groups::Groups;
use crate::coordinator::peers::{Marker, PartitionResults, Verify};
use crate::log::Partitions;

/// Marker errors that no retry can fix (Kafka's marker handler drops these
/// partitions too): the partition knows the producer at a newer epoch (its
/// transaction there ended), or the topic is gone.
const GIVE_UP: [ResponseError; 3] =
    [ResponseError::InvalidProducerEpoch, ResponseError::ProducerFenced, ResponseError::UnknownTopicOrPartition];

/// A partition leader saw this producer's markers from a newer coordinator.
#[derive(Debug)]
pub struct Fenced;

/// Has the leaders of `partitions` write `txn`'s marker; returns the
/// partitions whose marker is not durable yet (a partition of a deleted
/// topic needs none), or `Fenced` when a newer coordinator wrote there.
pub async fn send(
    txns: &Txns,
    txn: &Txn,
    coordinator_epoch: i32,
    partitions: BTreeSet<(String, i32)>,
) -> Result<BTreeSet<(String, i32)>, Fenced> {
    let cluster = txns.runtime.cluster();
    let image = cluster.image();
    let mut left = BTreeSet::new();
    let mut by_leader: BTreeMap<NodeId, Vec<(String, i32)>> = BTreeMap::new();
    for (topic, index) in partitions {
        let Some(record) = image.topics.get(&topic).and_then(|t| t.partitions.get(index as usize)) else { continue };
        match record.leader {
            Some(leader) => by_leader.entry(leader).or_default().push((topic, index)),
            None => {
                left.insert((topic, index));
            }
        }
    }
    let sends = by_leader.into_iter().map(|(leader, partitions)| {
        let image = &image;
        async move {
            let marker = Marker {
                producer_id: ProducerId(txn.producer_id),
                producer_epoch: txn.epoch,
                commit: txn.status == Status::PrepareCommit,
                coordinator_epoch,
                partitions: partitions.clone(),
            };
            let answered = if leader == cluster.config.node_id {
                Ok(write(txns.runtime.partitions(), &txns.groups, std::slice::from_ref(&marker)).await)
            } else {
                match image.brokers.get(&leader).and_then(|node| node.inter_broker_address()) {
                    Some(address) => txns.peers.write_marker(address, &marker).await,
                    None => Err(anyhow::anyhow!("broker {leader} has no Kafka listener in the metadata")),
                }
            };
            let mut failed: Vec<(String, i32)> = Vec::new();
            let mut fenced = false;
            match answered {
                Ok(results) => {
                    let mut done = HashSet::new();
                    for (key, result) in results {
                        match result {
                            Ok(()) => {
                                done.insert(key);
                            }
                            Err(ResponseError::TransactionCoordinatorFenced) => fenced = true,
                            Err(error) if GIVE_UP.contains(&error) => {
                                tracing::warn!(%leader, topic = %key.0, partition = key.1, ?error, "a marker was refused for good; the partition is done");
                                done.insert(key);
                            }
                            Err(error) => {
                                tracing::debug!(%leader, topic = %key.0, partition = key.1, ?error, "marker not written")
                            }
                        }
                    }
                    failed.extend(partitions.into_iter().filter(|p| !done.contains(p)));
                }
                Err(error) => {
                    tracing::debug!(%leader, "cannot send markers: {error:#}");
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

/// Writes markers at this broker, their partitions' leader: each marker is
/// appended to each of its partitions now, in order, and answered once
/// durable. Results come per marker, in order.
pub async fn write(partitions: &Arc<Partitions>, groups: &Groups, markers: &[Marker]) -> PartitionResults {
    let now = keel_broker_core::clock::now_ms();
    let mut pending = Vec::new();
    for marker in markers {
        let kind = if marker.commit { MarkerKind::Commit } else { MarkerKind::Abort };
        for (topic, index) in &marker.partitions {
            let batch = marker_batch(marker.producer_id, marker.producer_epoch, kind, marker.coordinator_epoch, now);
            let ticket = partitions.append_internal(topic, *index, batch, Verification::NotAsked);
            pending.push((marker, (topic.clone(), *index), ticket));
        }
    }
    let mut results = Vec::with_capacity(pending.len());
    for (marker, (topic, index), ticket) in pending {
        let written = ticket.durable().await;
        if written.is_ok() && topic == OFFSETS_TOPIC {
            groups.txn_ended(index, marker.producer_id, marker.commit);
        }
        if let Err(error) = written {
            partitions.cluster.metrics.errors.with_label_values(&["WriteTxnMarkers", &format!("{error:?}")]).inc();
        }
        results.push(((topic, index), written));
    }
    results
}

/// Why the coordinator did not confirm a verification.
#[derive(Debug)]
pub enum Unverified {
    /// The coordinator is moving or loading: retriable.
    Unreachable(HashSet<(String, i32)>),
    /// It could not be asked.
    Failed(anyhow::Error),
}

/// The partitions of `wanted` that producer (id, epoch) of transactional id
/// `id` added to its open transaction, as its coordinator says.
pub async fn verify(
    txns: &Txns,
    image: &Image,
    id: &str,
    producer: (ProducerId, i16),
    wanted: &[(String, i32)],
) -> Result<HashSet<(String, i32)>, Unverified> {
    let failed = |reason: String| Unverified::Failed(anyhow::anyhow!(reason));
    let partition = txns.runtime.partition_of(image, id).ok_or_else(|| failed(format!("no {TXN_TOPIC}")))?;
    let leader = image.topics[TXN_TOPIC].partitions[partition as usize].leader;
    if leader == Some(txns.runtime.cluster().config.node_id) {
        let current = txns.current(id).map_err(|error| failed(format!("{error:?}")))?;
        let ok = wanted.iter().filter(|p| state::verify(current.as_ref(), producer.0 .0, producer.1, p).is_ok());
        return Ok(ok.cloned().collect());
    }
    let address = leader
        .and_then(|leader| image.brokers.get(&leader))
        .and_then(|node| node.inter_broker_address().map(str::to_owned))
        .ok_or_else(|| failed(format!("{TXN_TOPIC} partition {partition} has no leader")))?;
    let question = Verify {
        transactional_id: id.to_owned(),
        producer_id: producer.0,
        producer_epoch: producer.1,
        partitions: wanted.to_vec(),
    };
    let results = txns.peers.verify(&address, &question).await.map_err(Unverified::Failed)?;
    let retriable = [
        ResponseError::NotCoordinator,
        ResponseError::CoordinatorLoadInProgress,
        ResponseError::CoordinatorNotAvailable,
        ResponseError::ConcurrentTransactions,
    ];
    let (mut ok, mut unreachable) = (HashSet::new(), HashSet::new());
    for (key, result) in results {
        match result {
            Ok(()) => {
                ok.insert(key);
            }
            Err(error) if retriable.contains(&error) => {
                unreachable.insert(key);
            }
            Err(_) => {}
        }
    }
    if !unreachable.is_empty() {
        return Err(Unverified::Unreachable(unreachable));
    }
    Ok(ok)
}

//! What the coordinators ask of other brokers, in Keel's words: the end
//! offsets of partitions they lead (an offset commit beyond a partition's
//! end is refused; group lag), a transaction's markers written by a
//! partition's leader, and a transaction coordinator's word on a partition
//! (KIP-890). The Kafka edge implements `Peers` over the Kafka protocol.

use std::collections::HashMap;

use async_trait::async_trait;
use kafka_protocol::error::ResponseError;
use keel_controller_client::{Offset, ProducerId};

use crate::log::Partitions;

/// A transaction's end, to be written as a marker to each of `partitions`
/// by their leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    pub producer_id: ProducerId,
    pub producer_epoch: i16,
    pub commit: bool,
    pub coordinator_epoch: i32,
    pub partitions: Vec<(String, i32)>,
}

/// A question to a transaction's coordinator: are `partitions` in producer
/// (id, epoch)'s open transaction of `transactional_id`?
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verify {
    pub transactional_id: String,
    pub producer_id: ProducerId,
    pub producer_epoch: i16,
    pub partitions: Vec<(String, i32)>,
}

/// Per partition, what the other broker answered.
pub type PartitionResults = Vec<((String, i32), Result<(), ResponseError>)>;

#[async_trait]
pub trait Peers: Send + Sync + std::fmt::Debug {
    /// The high watermarks of `partitions`, which the broker at `addr` leads;
    /// partitions it cannot answer for are left out.
    async fn end_offsets(
        &self,
        addr: &str,
        partitions: &[(String, i32)],
    ) -> anyhow::Result<HashMap<(String, i32), Offset>>;

    /// Has the broker at `addr` write `marker` to the partitions it leads.
    async fn write_marker(&self, addr: &str, marker: &Marker) -> anyhow::Result<PartitionResults>;

    /// Asks the transaction coordinator at `addr`.
    async fn verify(&self, addr: &str, verify: &Verify) -> anyhow::Result<PartitionResults>;
}

/// The high watermarks of `wanted` (topic, index) that this broker or the
/// others can tell now; a partition whose leader does not answer is left out.
pub async fn end_offsets(
    partitions: &Partitions,
    peers: &dyn Peers,
    wanted: &[(String, i32)],
) -> HashMap<(String, i32), Offset> {
    let cluster = &partitions.cluster;
    let image = cluster.image();
    let mut ends = HashMap::new();
    let mut remote: HashMap<String, Vec<(String, i32)>> = HashMap::new();
    for (name, index) in wanted {
        let Some(topic) = image.topics.get(name) else { continue };
        if cluster.led(topic, *index).is_some() {
            if let Ok(view) = partitions.read_view(topic, *index, -1) {
                ends.insert((name.clone(), *index), view.high_watermark);
            }
            continue;
        }
        let leader = topic.partitions.get(*index as usize).and_then(|p| p.leader);
        let Some(node) = leader.and_then(|id| image.brokers.get(&id)) else { continue };
        if let Some(addr) = node.inter_broker_address() {
            remote.entry(addr.to_owned()).or_default().push((name.clone(), *index));
        }
    }
    for (addr, asked) in remote {
        match peers.end_offsets(&addr, &asked).await {
            Ok(found) => ends.extend(found),
            Err(error) => tracing::debug!(%addr, "cannot ask a broker for end offsets: {error:#}"),
        }
    }
    ends
}

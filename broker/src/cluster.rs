//! What a broker knows of the cluster and how it reaches the rest of it:
//! its config and metrics, the metadata image it follows, its own session
//! with the controllers, the metadata client for the changes it proposes,
//! and channels to the WAL nodes (`cluster/wal.rs`).
//!
//! Every other layer of the broker starts from here; nothing here knows of
//! partitions led, objects or coordinators.

pub mod wal;

use std::sync::Arc;
use std::time::Duration;

use keel_controller_client::follower::wait_for_version;
use keel_controller_client::{
    pb, Epoch, Image, LeaderEpoch, MetadataClient, Outcome, Renewal, SessionState, StreamId, Topic, Version,
};
use tokio::sync::watch;

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::metrics::Metrics;

/// How long to wait for this broker's metadata to show a change it committed.
pub const METADATA_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Cluster {
    pub config: BrokerConfig,
    pub client: Arc<MetadataClient>,
    pub images: watch::Receiver<Arc<Image>>,
    pub session: watch::Receiver<Option<SessionState>>,
    /// Gives the registration up for a new one (`Renewal`).
    pub renewal: Renewal,
    pub metrics: Metrics,
    pub wal: wal::WalNodes,
    /// The block of producer ids the controller handed this broker: (next, end).
    producer_ids: tokio::sync::Mutex<(i64, i64)>,
}

impl Cluster {
    pub fn new(
        config: BrokerConfig,
        client: Arc<MetadataClient>,
        images: watch::Receiver<Arc<Image>>,
        session: watch::Receiver<Option<SessionState>>,
        renewal: Renewal,
        metrics: Metrics,
    ) -> Cluster {
        Cluster {
            wal: wal::WalNodes::new(config.zone.clone()),
            config,
            client,
            images,
            session,
            renewal,
            metrics,
            producer_ids: tokio::sync::Mutex::new((0, 0)),
        }
    }

    pub fn image(&self) -> Arc<Image> {
        self.images.borrow().clone()
    }

    /// This broker's registration epoch while its lease holds.
    pub fn live_epoch(&self) -> Option<Epoch> {
        self.session.borrow().filter(|state| state.is_live()).map(|state| state.epoch)
    }

    /// Waits until this broker's metadata is at `version` at least, at most
    /// `METADATA_WAIT`.
    pub async fn seen(&self, version: Version) -> Result<Arc<Image>, BrokerError> {
        let mut images = self.images.clone();
        wait_for_version(&mut images, version, METADATA_WAIT)
            .await
            .map_err(|_| BrokerError::MetadataBehind { what: format!("version {version}") })
    }

    /// The partition `index` of `topic` if this broker leads it, with its leader epoch.
    pub fn led(&self, topic: &Topic, index: i32) -> Option<(StreamId, LeaderEpoch)> {
        let partition = topic.partitions.get(usize::try_from(index).ok()?)?;
        (partition.leader == Some(self.config.node_id)).then_some((partition.stream_id, partition.leader_epoch))
    }

    /// The partitions of topic `name` this broker leads, with their leader
    /// epochs (the coordinators follow their internal topics with it).
    pub fn led_partitions(&self, name: &str) -> std::collections::HashMap<i32, LeaderEpoch> {
        let image = self.image();
        let Some(topic) = image.topics.get(name) else { return Default::default() };
        (0..topic.partitions.len() as i32).filter_map(|p| self.led(topic, p).map(|(_, epoch)| (p, epoch))).collect()
    }

    /// Commits a new start offset for partition `index` of `topic`, which
    /// this broker leads at `leader_epoch` (DeleteRecords, retention).
    pub async fn advance_start_offset(
        &self,
        topic: &Topic,
        index: i32,
        leader_epoch: LeaderEpoch,
        start_offset: i64,
        epoch: Epoch,
    ) -> Result<(Version, Outcome), keel_controller_client::ClientError> {
        let request = pb::AdvanceStartOffsetRequest {
            topic_id: topic.id.0.to_string(),
            partition: index as u32,
            leader_epoch: leader_epoch.0,
            start_offset,
            sender: self.config.node_id.0,
            sender_epoch: epoch.0,
        };
        self.client.advance_start_offset(request).await
    }

    /// The next producer id, from a block the controller hands this broker.
    pub async fn next_producer_id(&self) -> Result<i64, BrokerError> {
        let mut block = self.producer_ids.lock().await;
        if block.0 >= block.1 {
            let epoch = self.live_epoch().ok_or(BrokerError::NoSession)?;
            let request = pb::AllocateProducerIdsRequest { broker_id: self.config.node_id.0, broker_epoch: epoch.0 };
            match self.client.allocate_producer_ids(request).await? {
                (_, Outcome::ProducerIds { first, count }) => *block = (first.0, first.0 + i64::from(count)),
                (_, other) => {
                    tracing::error!(?other, "AllocateProducerIds answered with an unexpected outcome");
                    return Err(BrokerError::MetadataBehind { what: "a producer id block".into() });
                }
            }
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }
}

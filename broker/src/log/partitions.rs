//! What this broker leads now, under one registration, and how readers see it.
//!
//! `Leadership` (the log this broker writes and the state of every
//! partition it leads) changes only under its lock. Offsets are assigned
//! and the WAL entry is enqueued under that lock, so within a partition
//! offsets follow WAL seq order; the high watermark moves only when the
//! entry's acknowledgement arrives, and readers never read past it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use kafka_protocol::error::ResponseError;
use keel_broker_core::batch::BatchHeader;
use keel_broker_core::cache::BatchCache;
use keel_broker_core::partition::{LogRange, PartitionState};
use keel_broker_core::producers::{AbortedTxn, Producers};
use keel_controller_client::{LeaderEpoch, LogId, NodeId, Offset, Partition, ProducerId, StreamId, Topic};
use tokio::sync::{watch, Notify};
use tokio_util::task::TaskTracker;

use super::load_report::Traffic;
use super::owner::Owned;
use crate::cluster::Cluster;
use crate::storage::uploader::{Writing, WritingLog};
use crate::storage::Storage;

/// Everything this broker leads, under one registration.
#[derive(Debug, Default)]
pub struct Leadership {
    /// The WAL log this broker writes; `None` while it takes over.
    pub owned: Option<Owned>,
    pub partitions: HashMap<StreamId, PartitionState>,
}

impl Leadership {
    /// Whether `partition`, assigned to broker `me`, is still being taken
    /// over here: its state is not loaded at its leader epoch yet (a
    /// partition with nothing uploaded needs none: `partition` makes it).
    pub fn loading(&self, me: NodeId, partition: &Partition) -> bool {
        partition.leader == Some(me)
            && partition.uploaded_end.0 > 0
            && self.partitions.get(&partition.stream_id).is_none_or(|s| s.leader_epoch != partition.leader_epoch)
    }

    /// The state of a partition this broker leads at `leader_epoch`, once
    /// `leaders` has set it up; the log start follows the metadata's start
    /// offset (DeleteRecords, retention) up. A partition with nothing
    /// uploaded has no history anywhere (a handover waits for the upload), so
    /// its state is made here at once: a new topic takes writes without
    /// waiting for `leaders`.
    pub fn partition(
        &mut self,
        stream: StreamId,
        leader_epoch: LeaderEpoch,
        record: &keel_controller_client::Partition,
    ) -> Option<&mut PartitionState> {
        self.owned.as_ref()?;
        if record.uploaded_end.0 == 0 && !self.partitions.contains_key(&stream) {
            self.lead(stream, leader_epoch, Offset(0), Producers::default());
        }
        let state = self.partitions.get_mut(&stream).filter(|state| state.leader_epoch == leader_epoch)?;
        state.follow_start(record.start_offset);
        Some(state)
    }

    /// Starts leading a partition at `leader_epoch` from `end`, its uploaded
    /// end, on the log this broker writes; false while it writes none.
    pub fn lead(&mut self, stream: StreamId, leader_epoch: LeaderEpoch, end: Offset, producers: Producers) -> bool {
        let Some(owned) = self.owned.as_ref() else { return false };
        let now = keel_broker_core::clock::now_ms();
        self.partitions.insert(stream, PartitionState::new(leader_epoch, end, producers, owned.log, now));
        true
    }
}

/// A partition this broker leads, as a reader (fetch, list offsets) sees it now.
#[derive(Clone, Debug)]
pub struct ReadView {
    pub stream: StreamId,
    pub leader_epoch: LeaderEpoch,
    pub high_watermark: Offset,
    /// Below the first offset of any open transaction, at most the high
    /// watermark: what `read_committed` consumers may read.
    pub last_stable: Offset,
    pub log_start: Offset,
    pub ranges: Vec<LogRange>,
}

/// Verifications begun for one producer's transactional batches (KIP-890).
#[derive(Debug)]
pub struct Verifications {
    /// (producer id, epoch).
    pub producer: (ProducerId, i16),
    /// Per partition (topic, index), the token of the verification begun there.
    pub begun: Vec<((String, i32), u64)>,
}

#[derive(Debug)]
pub struct Partitions {
    pub cluster: Arc<Cluster>,
    pub storage: Arc<Storage>,
    leadership: Mutex<Leadership>,
    /// Recent batches of the partitions led here.
    pub cache: BatchCache,
    /// Bumped whenever a high watermark moves; long-polling fetches wait on it.
    pub watermarks: watch::Sender<u64>,
    /// Bumped whenever `leaders` starts leading partitions; produces held
    /// for a partition planned here wait on it.
    pub leading: watch::Sender<u64>,
    /// When produces were first held for each leaderless partition planned
    /// here (`kafka::produce`): a failover holds them for a bounded time in
    /// all, not per request. Forgotten once the partition has a leader.
    pub planned_since: Mutex<HashMap<StreamId, tokio::time::Instant>>,
    /// Wakes the log keeper when the log was fenced under it.
    pub(super) log_lost: Notify,
    /// Wakes `leaders` when a new log is owned (partitions can be led again).
    pub leaders_changed: Notify,
    /// Bytes in and out per partition, for the balancer's load reports.
    pub traffic: Traffic,
    /// Work that outlives a request (an acknowledgement that comes after
    /// its produce timed out) runs here.
    pub(super) tasks: TaskTracker,
}

impl Partitions {
    pub fn new(cluster: Arc<Cluster>, storage: Arc<Storage>, tasks: TaskTracker) -> Partitions {
        Partitions {
            cache: BatchCache::new(cluster.config.cache_bytes as usize),
            cluster,
            storage,
            leadership: Mutex::default(),
            watermarks: watch::channel(0).0,
            leading: watch::channel(0).0,
            planned_since: Mutex::default(),
            log_lost: Notify::new(),
            leaders_changed: Notify::new(),
            traffic: Traffic::default(),
            tasks,
        }
    }

    pub fn leadership(&self) -> MutexGuard<'_, Leadership> {
        self.leadership.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether this broker may act for its partitions now: its lease holds
    /// and it writes a log under that registration.
    pub fn writable(&self, leadership: &Leadership) -> bool {
        let epoch = self.cluster.live_epoch();
        leadership.owned.as_ref().is_some_and(|owned| Some(owned.session_epoch) == epoch)
    }

    /// Partition `index` of `topic` for a reader that knows leader epoch
    /// `current_leader_epoch` (-1: any), with Kafka's error when this broker
    /// cannot serve it.
    pub fn read_view(&self, topic: &Topic, index: i32, current_leader_epoch: i32) -> Result<ReadView, ResponseError> {
        if index < 0 || index as usize >= topic.partitions.len() {
            return Err(ResponseError::UnknownTopicOrPartition);
        }
        let (stream, leader_epoch) = self.cluster.led(topic, index).ok_or(ResponseError::NotLeaderOrFollower)?;
        if current_leader_epoch >= 0 && current_leader_epoch != leader_epoch.0 {
            return Err(if current_leader_epoch < leader_epoch.0 {
                ResponseError::FencedLeaderEpoch
            } else {
                ResponseError::UnknownLeaderEpoch
            });
        }
        let mut leadership = self.leadership();
        if !self.writable(&leadership) {
            return Err(ResponseError::NotLeaderOrFollower);
        }
        let record = &topic.partitions[index as usize];
        let state = leadership.partition(stream, leader_epoch, record).ok_or(ResponseError::NotLeaderOrFollower)?;
        Ok(ReadView {
            stream,
            leader_epoch,
            high_watermark: state.high_watermark,
            last_stable: state.last_stable(),
            log_start: state.log_start,
            ranges: state.ranges.clone(),
        })
    }

    /// The aborted transactions with data in `[from, to)` of a partition
    /// this broker leads.
    pub fn aborted_between(&self, stream: StreamId, from: Offset, to: Offset) -> Vec<AbortedTxn> {
        self.leadership()
            .partitions
            .get(&stream)
            .map(|state| state.producers.aborted_between(from, to))
            .unwrap_or_default()
    }

    /// Called when an append found the log fenced: the broker stops writing
    /// it, drops what was not acknowledged, and takes over again.
    pub fn on_log_fenced(&self) {
        if let Some(log) = self.stop_leading() {
            tracing::warn!(%log, "the WAL log was fenced; taking over again");
        }
        self.log_lost.notify_one();
    }

    /// Stops writing the current log and forgets every partition's state and
    /// cached batches; returns the log that was stopped.
    pub(super) fn stop_leading(&self) -> Option<LogId> {
        let mut leadership = self.leadership();
        for stream in leadership.partitions.keys() {
            self.cache.forget(*stream);
        }
        leadership.partitions.clear();
        let owned = leadership.owned.take()?;
        owned.cancel.cancel();
        Some(owned.log)
    }

    /// Starts a verification of producer (id, epoch)'s transaction at
    /// partition `index` of `topic`, which this broker leads (KIP-890's
    /// guard, `Producers::check`): the token its first batch must carry.
    pub fn begin_verification(&self, topic: &str, index: i32, producer: (ProducerId, i16)) -> Option<u64> {
        let image = self.cluster.image();
        let (stream, _) = self.cluster.led(image.topics.get(topic)?, index)?;
        let mut leadership = self.leadership();
        Some(leadership.partitions.get_mut(&stream)?.producers.begin_verification(producer.0, producer.1))
    }

    /// KIP-890 at a partition leader, for the transactional batches of one
    /// produce request (topic, partition, header): the first producer among
    /// them, and for each of its batches whose partition this broker leads
    /// and where it has no transaction open yet, a verification begun there
    /// with its token. Batches of any other producer get none (and are refused).
    pub fn begin_verifications(&self, batches: &[(&str, i32, BatchHeader)]) -> Option<Verifications> {
        let image = self.cluster.image();
        let mut producer: Option<(ProducerId, i16)> = None;
        let mut begun = Vec::new();
        let mut leadership = self.leadership();
        for (topic, index, header) in batches.iter().filter(|(_, _, header)| header.is_transactional()) {
            let Some(topic) = image.topics.get(*topic) else { continue };
            let Some(record) = topic.partitions.get(usize::try_from(*index).unwrap_or(usize::MAX)) else { continue };
            let this = (header.producer_id, header.producer_epoch);
            if *producer.get_or_insert(this) != this {
                continue;
            }
            let Some(state) = leadership.partitions.get_mut(&record.stream_id) else { continue };
            if !state.producers.in_transaction(this.0, this.1) {
                let token = state.producers.begin_verification(this.0, this.1);
                begun.push(((topic.name.clone(), *index), token));
            }
        }
        producer.map(|producer| Verifications { producer, begun })
    }

    /// Announces that some high watermark moved.
    pub fn watermarks_moved(&self) {
        self.watermarks.send_modify(|generation| *generation += 1);
    }
}

impl WritingLog for Partitions {
    fn writing(&self) -> Option<Writing> {
        let leadership = self.leadership();
        let owned = leadership.owned.as_ref()?;
        Some(Writing {
            log: owned.log,
            session_epoch: owned.session_epoch,
            acked: owned.writer.acked_in(owned.log),
            sealing: owned.sealing,
        })
    }
}

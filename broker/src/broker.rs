//! The running broker's shared state, and the task that keeps it writing a
//! WAL log under its current registration.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use keel_controller_client::{pb, Epoch, Image, LeaderEpoch, MetadataClient, Outcome, SessionState, StreamId, Topic};
use keel_objects::ObjectStore;
use keel_proto::wal as wal_pb;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::BatchCache;
use crate::config::BrokerConfig;
use crate::fetch_sessions::FetchSessions;
use crate::log_owner::LogRange;
use crate::metrics::Metrics;
use crate::object_reads::ObjectCache;
use crate::partition::Leadership;
use crate::stream_index::IndexCache;

/// How long one WAL read may take before the next member is tried.
const WAL_READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Broker {
    pub config: BrokerConfig,
    pub client: Arc<MetadataClient>,
    pub images: watch::Receiver<Arc<Image>>,
    pub session: watch::Receiver<Option<SessionState>>,
    pub cache: BatchCache,
    /// Where uploaded history lives, and the cache of ranges read from it.
    pub objects: Arc<dyn ObjectStore>,
    pub object_cache: Arc<ObjectCache>,
    /// The image arranged for reads, per metadata version.
    pub stream_index: IndexCache,
    pub fetch_sessions: FetchSessions,
    /// Batch bytes appended to the current WAL log and not uploaded yet;
    /// produces are refused (retriably) while it is over the cap.
    pub wal_backlog: std::sync::atomic::AtomicU64,
    leadership: Mutex<Leadership>,
    /// Bumped whenever a high watermark moves; long-polling fetches wait on it.
    pub watermarks: watch::Sender<u64>,
    /// Wakes the log keeper when the log was fenced under it.
    log_lost: Notify,
    /// Wakes `leaders` when a new log is owned (partitions can be led again).
    pub leaders_changed: Notify,
    /// Has the uploader upload at once (a partition is being closed).
    pub upload_now: Notify,
    /// Bytes in and out per partition, for the balancer's load reports.
    pub traffic: crate::load_report::Traffic,
    /// The consumer groups this broker coordinates.
    pub groups: crate::groups::Coordinator,
    /// The transactional ids this broker coordinates.
    pub txns: crate::txn::TxnCoordinator,
    /// Connections to other brokers (end offsets for offset commits).
    pub peers: crate::peers::Peers,
    producer_ids: tokio::sync::Mutex<(i64, i64)>,
    wal_channels: Mutex<HashMap<String, tonic::transport::Channel>>,
    pub metrics: Metrics,
}

/// A partition this broker leads, as a reader (fetch, list offsets) sees it now.
#[derive(Clone, Debug)]
pub struct ReadView {
    pub stream: StreamId,
    pub leader_epoch: LeaderEpoch,
    pub high_watermark: i64,
    /// Below the first offset of any open transaction, at most the high
    /// watermark: what `read_committed` consumers may read.
    pub last_stable: i64,
    pub log_start: i64,
    pub ranges: Vec<LogRange>,
}

impl Broker {
    pub fn new(
        config: BrokerConfig,
        client: Arc<MetadataClient>,
        images: watch::Receiver<Arc<Image>>,
        session: watch::Receiver<Option<SessionState>>,
        objects: Arc<dyn ObjectStore>,
        metrics: Metrics,
    ) -> Broker {
        let groups = crate::groups::Coordinator::new(crate::groups::Settings {
            initial_delay: config.group_initial_rebalance_delay,
            consumer_session_timeout: config.group_consumer_session_timeout,
            consumer_heartbeat_interval: config.group_consumer_heartbeat_interval,
            offsets_partitions: config.offsets_topic_partitions,
            offsets_retention: config.offsets_retention,
        });
        let txns = crate::txn::TxnCoordinator::new(crate::txn::Settings {
            partitions: config.transaction_state_partitions,
            id_expiration: config.transactional_id_expiration,
        });
        Broker {
            cache: BatchCache::new(config.cache_bytes as usize),
            objects,
            object_cache: Arc::new(ObjectCache::new(config.object_cache_bytes as usize)),
            stream_index: IndexCache::default(),
            fetch_sessions: FetchSessions::default(),
            wal_backlog: std::sync::atomic::AtomicU64::new(0),
            config,
            client,
            images,
            session,
            leadership: Mutex::default(),
            watermarks: watch::channel(0).0,
            log_lost: Notify::new(),
            leaders_changed: Notify::new(),
            upload_now: Notify::new(),
            traffic: crate::load_report::Traffic::default(),
            groups,
            txns,
            peers: crate::peers::Peers::default(),
            producer_ids: tokio::sync::Mutex::new((0, 0)),
            wal_channels: Mutex::default(),
            metrics,
        }
    }

    pub fn image(&self) -> Arc<Image> {
        self.images.borrow().clone()
    }

    /// This broker's registration epoch while its lease holds.
    pub fn live_epoch(&self) -> Option<Epoch> {
        self.session.borrow().filter(|state| state.is_live()).map(|state| state.epoch)
    }

    pub fn leadership(&self) -> MutexGuard<'_, Leadership> {
        self.leadership.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether this broker may act for its partitions now: its lease holds
    /// and it writes a log under that registration.
    pub fn writable(&self, leadership: &Leadership) -> bool {
        let epoch = self.live_epoch();
        leadership.owned.as_ref().is_some_and(|owned| Some(owned.session_epoch) == epoch)
    }

    /// The partition `index` of `topic` if this broker leads it, with its leader epoch.
    /// The partitions of topic `name` this broker leads, with their leader
    /// epochs (the coordinators follow their internal topics with it).
    pub fn led_partitions(&self, name: &str) -> std::collections::HashMap<i32, LeaderEpoch> {
        let image = self.image();
        let Some(topic) = image.topics.get(name) else { return Default::default() };
        (0..topic.partitions.len() as i32).filter_map(|p| self.led(topic, p).map(|(_, epoch)| (p, epoch))).collect()
    }

    pub fn led(&self, topic: &Topic, index: i32) -> Option<(StreamId, LeaderEpoch)> {
        let partition = topic.partitions.get(usize::try_from(index).ok()?)?;
        (partition.leader == Some(self.config.node_id)).then_some((partition.stream_id, partition.leader_epoch))
    }

    /// Partition `index` of `topic` for a reader that knows leader epoch
    /// `current_leader_epoch` (-1: any), with Kafka's error when this broker
    /// cannot serve it.
    pub fn read_view(&self, topic: &Topic, index: i32, current_leader_epoch: i32) -> Result<ReadView, ResponseError> {
        if index < 0 || index as usize >= topic.partitions.len() {
            return Err(ResponseError::UnknownTopicOrPartition);
        }
        let (stream, leader_epoch) = self.led(topic, index).ok_or(ResponseError::NotLeaderOrFollower)?;
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
        let last_stable =
            state.producers.first_unstable().map_or(state.high_watermark, |first| first.min(state.high_watermark));
        Ok(ReadView {
            stream,
            leader_epoch,
            high_watermark: state.high_watermark,
            last_stable,
            log_start: state.log_start,
            ranges: state.ranges.clone(),
        })
    }

    /// The aborted transactions with data in `[from, to)` of a partition
    /// this broker leads.
    pub fn aborted_between(&self, stream: StreamId, from: i64, to: i64) -> Vec<crate::producers::AbortedTxn> {
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
    fn stop_leading(&self) -> Option<keel_controller_client::LogId> {
        let mut leadership = self.leadership();
        for stream in leadership.partitions.keys() {
            self.cache.forget(*stream);
        }
        leadership.partitions.clear();
        let owned = leadership.owned.take()?;
        owned.cancel.cancel();
        Some(owned.log)
    }

    /// Announces that some high watermark moved.
    pub fn watermarks_moved(&self) {
        self.watermarks.send_modify(|generation| *generation += 1);
    }

    /// Keeps a log open under the current registration: at every new epoch
    /// (and after a fence) it opens a new one.
    pub async fn keep_log(self: Arc<Self>, tasks: TaskTracker, cancel: CancellationToken) {
        let mut session = self.session.clone();
        let mut images = self.images.clone();
        loop {
            let epoch = tokio::select! {
                _ = cancel.cancelled() => return,
                state = session.wait_for(|state| state.is_some_and(|s| s.is_live())) => match state {
                    Ok(state) => state.expect("waited for Some").epoch,
                    Err(_) => return,
                },
            };
            let current = self.leadership().owned.as_ref().map(|owned| owned.session_epoch);
            if current == Some(epoch) {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = session.changed() => {}
                    _ = self.log_lost.notified() => {}
                }
                continue;
            }
            self.stop_leading();
            let started = std::time::Instant::now();
            let node = self.config.node_id;
            let taken = crate::log_owner::take_over(&self.client, &mut images, node, epoch, &tasks, &cancel);
            match taken.await {
                Ok(owned) => {
                    self.metrics.takeover_seconds.observe(started.elapsed().as_secs_f64());
                    self.leadership().owned = Some(owned);
                    self.wal_backlog.store(0, std::sync::atomic::Ordering::Relaxed);
                    self.leaders_changed.notify_one();
                }
                Err(error) => {
                    tracing::warn!(%epoch, "take-over failed, retrying: {error:#}");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    /// Reads a partition's batches from `from` out of the WAL log `range`
    /// names, asking the members in this broker's zone first.
    pub async fn read_wal(
        &self,
        stream: StreamId,
        range: LogRange,
        from: i64,
        max_bytes: usize,
    ) -> Result<Vec<wal_pb::StreamBatch>, String> {
        let image = self.image();
        let log = image.wal_logs.get(&range.log).ok_or_else(|| format!("{} is not in the metadata", range.log))?;
        let mut members = crate::log_owner::targets(&image, log).map_err(|e| e.to_string())?;
        members.sort_by_key(|target| target.member.zone != self.config.zone);
        let request = wal_pb::ReadStreamRequest {
            log: range.log.0,
            stream: stream.0,
            from_offset: from,
            max_bytes: max_bytes as u64,
            sealed_seq: range.sealed_seq.0,
        };
        let mut last_error = String::from("no members");
        for target in members {
            let channel = self.wal_channel(&target.addr)?;
            let mut wal = wal_pb::wal_client::WalClient::new(channel)
                .max_decoding_message_size(keel_wal_client::entry::ENTRY_BYTES_MAX + max_bytes);
            match tokio::time::timeout(WAL_READ_TIMEOUT, wal.read_stream(request)).await {
                Ok(Ok(reply)) => {
                    let reply = reply.into_inner();
                    if reply.code == wal_pb::ErrorCode::Ok as i32 {
                        return Ok(reply.batches);
                    }
                    last_error = reply.message;
                }
                Ok(Err(status)) => last_error = status.to_string(),
                Err(_) => last_error = format!("no answer within {WAL_READ_TIMEOUT:?}"),
            }
        }
        Err(last_error)
    }

    /// A partition's batches from the one holding `offset`, ending at or
    /// before `until`, within `limit` bytes (at least one batch): from the
    /// cache, else from objects below the partition's uploaded end, else
    /// from the WAL log `range` names.
    pub async fn read_batches(
        &self,
        stream: StreamId,
        range: Option<LogRange>,
        offset: i64,
        until: i64,
        limit: usize,
    ) -> Result<Vec<bytes::Bytes>, String> {
        if let Some(cached) = self.cache.read(stream, offset, until, limit) {
            return Ok(cached.into_iter().map(|c| c.batch).collect());
        }
        match self.read_uploaded(stream, offset, until, limit).await {
            Ok(Some(batches)) => return Ok(batches),
            Ok(None) => {}
            // A damaged or unreadable object: the WAL may still hold a copy
            // (not trimmed yet); if not, the read fails, never serving bad bytes.
            Err(error) => match range {
                Some(range) => match self.read_wal(stream, range, offset, limit).await {
                    Ok(read) if !read.is_empty() => return Ok(within(read, until, limit)),
                    _ => return Err(error),
                },
                None => return Err(error),
            },
        }
        let range = range.ok_or_else(|| format!("no WAL log holds offset {offset}"))?;
        let read = match self.read_wal(stream, range, offset, limit).await {
            Ok(read) => read,
            // The WAL may have been trimmed after an upload this image did not show yet.
            Err(error) => match self.read_uploaded(stream, offset, until, limit).await? {
                Some(batches) => return Ok(batches),
                None => return Err(error),
            },
        };
        Ok(within(read, until, limit))
    }

    /// The batches from `offset` if it lies below the partition's uploaded end;
    /// an error if the object store cannot give them intact.
    async fn read_uploaded(
        &self,
        stream: StreamId,
        offset: i64,
        until: i64,
        limit: usize,
    ) -> Result<Option<Vec<bytes::Bytes>>, String> {
        // A missing object may have been replaced or deleted under a stale
        // image (DESIGN §3): read the metadata again and retry once.
        for attempt in 0..2 {
            let index = self.stream_index.get(&self.image());
            let Some(facts) = index.stream(stream).filter(|facts| offset < facts.uploaded_end) else {
                return Ok(None);
            };
            let until = until.min(facts.uploaded_end);
            let ranges = facts.ranges_from(offset);
            let read = crate::object_reads::read(&self.objects, &self.object_cache, ranges, offset, until, limit);
            match read.await {
                Ok(batches) => {
                    self.metrics.object_read_bytes.inc_by(batches.iter().map(|b| b.len() as u64).sum());
                    return Ok(Some(batches));
                }
                Err(crate::object_reads::ReadError::NotFound(key)) if attempt == 0 => {
                    tracing::info!(key, "an object is missing; reading the metadata again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => {
                    self.metrics.object_read_failures.inc();
                    tracing::error!(%stream, offset, "cold read failed: {error}");
                    return Err(error.to_string());
                }
            }
        }
        unreachable!("the second attempt returns")
    }

    /// A channel to the WAL node at `addr` (its calls carry the cluster token).
    pub(crate) fn wal_channel(&self, addr: &str) -> Result<keel_proto::auth::Channel, String> {
        let mut channels = self.wal_channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(channel) = channels.get(addr) {
            return Ok(keel_proto::auth::channel(channel.clone()));
        }
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(keel_proto::auth::channel(channel))
    }

    /// Commits a new start offset for partition `index` of `topic`, which
    /// this broker leads at `leader_epoch` (DeleteRecords, retention).
    pub async fn advance_start_offset(
        &self,
        topic: &Topic,
        index: i32,
        leader_epoch: LeaderEpoch,
        start_offset: i64,
        epoch: keel_controller_client::Epoch,
    ) -> Result<(keel_controller_client::Version, Outcome), keel_controller_client::ClientError> {
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
    pub async fn next_producer_id(&self) -> anyhow::Result<i64> {
        let mut block = self.producer_ids.lock().await;
        if block.0 >= block.1 {
            let epoch = self.live_epoch().ok_or_else(|| anyhow::anyhow!("this broker has no live session"))?;
            let request = pb::AllocateProducerIdsRequest { broker_id: self.config.node_id.0, broker_epoch: epoch.0 };
            match self.client.allocate_producer_ids(request).await? {
                (_, Outcome::ProducerIds { first, count }) => *block = (first.0, first.0 + i64::from(count)),
                (_, other) => anyhow::bail!("AllocateProducerIds answered {other:?}"),
            }
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }
}

/// WAL batches that end at or before `until`, within `limit` bytes (at least one).
fn within(read: Vec<wal_pb::StreamBatch>, until: i64, limit: usize) -> Vec<bytes::Bytes> {
    let mut bytes = 0usize;
    read.into_iter()
        .filter(|batch| batch.base_offset + i64::from(batch.record_count) <= until)
        .take_while(|batch| {
            let take = bytes == 0 || bytes + batch.batch.len() <= limit;
            bytes += batch.batch.len();
            take
        })
        .map(|batch| batch.batch)
        .collect()
}

//! What every coordinator of an internal compacted topic does, once.
//!
//! A coordinator's state lives in one internal topic (`__consumer_offsets`,
//! `__transaction_state`), partitioned by key (Kafka's hash rule): the
//! broker leading partition P coordinates P's keys. The runtime follows
//! which partitions this broker leads (by leader epoch), loads each newly
//! led one by reading it from its start and replaying it (requests for its
//! keys get COORDINATOR_LOAD_IN_PROGRESS until then), drops the state of
//! partitions no longer led at that epoch, calls the coordinator's tick,
//! appends its records through the log, and runs its background work as
//! tracked tasks under its cancellation token.
//!
//! A coordinator provides its state machine (`Machine`): the state of one
//! partition, how records replay into it, and what happens on load and on
//! each tick.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use keel_broker_core::internal_topic::{self, Item, ReplayError};
use keel_broker_core::partition::{range_of, Verification};
use keel_controller_client::{Image, LeaderEpoch, Offset, ProducerId};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::Cluster;
use crate::error::BrokerError;
use crate::log::append::AppendTicket;
use crate::log::Partitions;

/// Pause after a partition could not be read.
const LOAD_RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Bytes read per step while loading a partition.
const LOAD_READ_BYTES: usize = 1 << 20;

/// A coordinator's state machine, run by `run`.
pub trait Machine: Send + Sync + 'static {
    /// The state of one partition of the internal topic.
    type State: Default + Send + 'static;
    /// The internal topic.
    const TOPIC: &'static str;
    /// How often `tick` runs.
    const TICK: Duration;

    fn runtime(&self) -> &Runtime<Self::State>;

    /// The state a partition's records (in offset order) make. Runs without
    /// the shards' lock: a large partition does not hold up the others.
    fn replay(&self, items: &[Item]) -> Self::State;

    /// `replayed`, with what reached the partition while it was being read
    /// (`loading`) folded in. Runs under the lock.
    fn merge(&self, replayed: Self::State, loading: Self::State) -> Self::State;

    /// A partition is loaded: work it implies (a transaction to finish).
    fn loaded(self: &Arc<Self>, partition: i32, state: &Self::State);

    /// Moves the loaded partitions on as time passes.
    fn tick(self: &Arc<Self>);
}

/// One partition of the internal topic that this broker leads.
#[derive(Debug)]
pub struct Shard<S> {
    pub leader_epoch: LeaderEpoch,
    /// Replayed; requests for its keys are served.
    pub loaded: bool,
    pub state: S,
}

#[derive(Debug)]
pub struct Runtime<S> {
    topic: &'static str,
    partitions: Arc<Partitions>,
    shards: Mutex<HashMap<i32, Shard<S>>>,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

/// The shard of the partition a request's key lives in, locked and loaded.
#[derive(Debug)]
pub struct Locked<'a, S> {
    guard: MutexGuard<'a, HashMap<i32, Shard<S>>>,
    pub partition: i32,
}

impl<S> Locked<'_, S> {
    pub fn state(&mut self) -> &mut S {
        &mut self.guard.get_mut(&self.partition).expect("checked when locked").state
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.guard[&self.partition].leader_epoch
    }
}

/// Why a partition could not be loaded (yet).
#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error("the topic is gone")]
    NoTopic,
    #[error("the partition is not readable here: {0:?}")]
    View(ResponseError),
    #[error(transparent)]
    Read(#[from] BrokerError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error("nothing read at offset {0}")]
    Empty(Offset),
}

impl<S> Runtime<S> {
    pub fn new(
        topic: &'static str,
        partitions: Arc<Partitions>,
        tasks: TaskTracker,
        cancel: CancellationToken,
    ) -> Runtime<S> {
        Runtime { topic, partitions, shards: Mutex::default(), tasks, cancel }
    }

    pub fn cluster(&self) -> &Cluster {
        &self.partitions.cluster
    }

    pub fn partitions(&self) -> &Arc<Partitions> {
        &self.partitions
    }

    pub fn shards(&self) -> MutexGuard<'_, HashMap<i32, Shard<S>>> {
        self.shards.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The partition of the internal topic that holds `key`, if the topic exists.
    pub fn partition_of(&self, image: &Image, key: &str) -> Option<i32> {
        let topic = image.topics.get(self.topic)?;
        Some(keel_broker_core::groups::partition_for(key, topic.partitions.len()))
    }

    /// The partition of `key` and its leader epoch, with Kafka's error when
    /// this broker is not (or not yet) its coordinator.
    pub fn locate(&self, key: &str) -> Result<(i32, LeaderEpoch), ResponseError> {
        let image = self.cluster().image();
        let partition = self.partition_of(&image, key).ok_or(ResponseError::CoordinatorNotAvailable)?;
        let (_, leader_epoch) =
            self.cluster().led(&image.topics[self.topic], partition).ok_or(ResponseError::NotCoordinator)?;
        match self.shards().get(&partition) {
            Some(shard) if shard.leader_epoch == leader_epoch && shard.loaded => Ok((partition, leader_epoch)),
            // Not loaded yet at this leader epoch (`follow` is about to start or is loading).
            _ => Err(ResponseError::CoordinatorLoadInProgress),
        }
    }

    /// Locks the shard of `key`'s partition, with Kafka's error when this
    /// broker is not (or not yet) its coordinator.
    pub fn lock(&self, key: &str) -> Result<Locked<'_, S>, ResponseError> {
        let image = self.cluster().image();
        let partition = self.partition_of(&image, key).ok_or(ResponseError::CoordinatorNotAvailable)?;
        let (_, leader_epoch) =
            self.cluster().led(&image.topics[self.topic], partition).ok_or(ResponseError::NotCoordinator)?;
        let guard = self.shards();
        match guard.get(&partition) {
            Some(shard) if shard.leader_epoch == leader_epoch && shard.loaded => Ok(Locked { guard, partition }),
            _ => Err(ResponseError::CoordinatorLoadInProgress),
        }
    }

    /// The broker leading `key`'s partition: its coordinator. The internal
    /// topic is created on first use (compacted, with `partitions`
    /// partitions, described as `description`). The error comes with a
    /// message for the client.
    pub async fn coordinator_of(
        &self,
        key: &str,
        partitions: i32,
        description: &str,
    ) -> Result<keel_controller_client::NodeRecord, (ResponseError, String)> {
        if key.is_empty() {
            return Err((ResponseError::InvalidRequest, "the coordinator key is empty".into()));
        }
        let topic = self.topic;
        let mut image = self.cluster().image();
        if !image.topics.contains_key(topic) {
            image = self.create_topic(partitions, description).await?;
        }
        let partition = self.partition_of(&image, key).expect("the topic exists");
        let record = &image.topics[topic].partitions[partition as usize];
        let not_available =
            || (ResponseError::CoordinatorNotAvailable, format!("{topic} partition {partition} has no leader yet"));
        let node = record.leader.and_then(|id| image.brokers.get(&id)).ok_or_else(not_available)?;
        if node.state != keel_controller_client::NodeState::Active {
            return Err(not_available());
        }
        Ok(node.clone())
    }

    /// Creates the compacted internal topic, waiting until the metadata shows it.
    async fn create_topic(&self, partitions: i32, description: &str) -> Result<Arc<Image>, (ResponseError, String)> {
        let topic = self.topic;
        let request = keel_controller_client::pb::CreateTopicRequest {
            name: topic.to_owned(),
            partitions,
            configs: [("cleanup.policy".to_owned(), "compact".to_owned())].into(),
            owner: "keel".into(),
            description: description.into(),
        };
        use keel_controller_client::{ClientError, MetaError};
        match self.cluster().client.create_topic(request).await {
            Ok(_) | Err(ClientError::Meta(MetaError::TopicAlreadyExists { .. })) => {
                tracing::info!(topic, "created an internal topic");
            }
            Err(error) => {
                tracing::warn!(topic, "cannot create an internal topic: {error}");
                return Err((ResponseError::CoordinatorNotAvailable, format!("cannot create {topic} yet")));
            }
        }
        let mut images = self.cluster().images.clone();
        let shown = images.wait_for(|image| image.topics.contains_key(topic));
        let shown = match tokio::time::timeout(Duration::from_secs(5), shown).await {
            Ok(Ok(image)) => Some(image.clone()),
            _ => None,
        };
        shown.ok_or_else(|| (ResponseError::CoordinatorNotAvailable, format!("{topic} is not in the metadata yet")))
    }

    /// Locks the shard of `partition` if it is still led at `leader_epoch`
    /// (loaded or not): for work that began under that leadership.
    pub fn lock_at(&self, partition: i32, leader_epoch: LeaderEpoch) -> Option<Locked<'_, S>> {
        let guard = self.shards();
        guard.get(&partition).filter(|shard| shard.leader_epoch == leader_epoch)?;
        Some(Locked { guard, partition })
    }

    /// Appends keyed records (a value of `None` is a tombstone) to
    /// `partition` now, as producer (id, epoch)'s transaction when given.
    /// Called under the shard's lock, the log holds changes in the order
    /// they were made; `written` waits for the ticket outside it.
    pub fn append(
        &self,
        partition: i32,
        records: Vec<(Bytes, Option<Bytes>)>,
        producer: Option<(ProducerId, i16)>,
        verification: Verification,
    ) -> AppendTicket {
        let batch = keel_broker_core::batch::keyed_batch(records, producer, keel_broker_core::clock::now_ms());
        self.partitions.append_internal(self.topic, partition, batch, verification)
    }

    /// Waits until an append is durable, with the error a coordinator's
    /// client expects when it could not be written (the producer's own
    /// refusals, such as a fenced epoch, pass through).
    pub async fn written(&self, ticket: AppendTicket, partition: i32) -> Result<(), ResponseError> {
        match ticket.durable().await {
            Ok(()) => Ok(()),
            Err(error @ (ResponseError::InvalidProducerEpoch | ResponseError::InvalidTxnState)) => Err(error),
            // Find the coordinator again and retry.
            Err(ResponseError::NotLeaderOrFollower | ResponseError::UnknownTopicOrPartition) => {
                Err(ResponseError::NotCoordinator)
            }
            Err(error) => {
                tracing::warn!(topic = self.topic, partition, "writing a coordinator's records failed: {error:?}");
                Err(ResponseError::CoordinatorNotAvailable)
            }
        }
    }

    /// Runs `work` as a task of this coordinator, stopped with it.
    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = work => {}
            }
        });
    }

    /// Every record and transaction marker of `partition`, from its start to
    /// its high watermark.
    async fn read(&self, partition: i32) -> Result<Vec<Item>, LoadError> {
        let image = self.cluster().image();
        let topic = image.topics.get(self.topic).ok_or(LoadError::NoTopic)?;
        let view = self.partitions.read_view(topic, partition, -1).map_err(LoadError::View)?;
        let mut offset = view.log_start;
        let mut items = Vec::new();
        while offset < view.high_watermark {
            let range = range_of(&view.ranges, offset);
            let batches =
                self.partitions.read_batches(view.stream, range, offset, view.high_watermark, LOAD_READ_BYTES).await?;
            if batches.is_empty() {
                return Err(LoadError::Empty(offset));
            }
            for batch in batches {
                offset = offset.max(internal_topic::items(&batch, offset, &mut items)?);
            }
        }
        Ok(items)
    }
}

/// Follows which partitions of the machine's topic this broker leads, loads
/// them, and ticks, until the runtime's token is cancelled.
pub async fn run<M: Machine>(machine: Arc<M>) {
    let runtime = machine.runtime();
    let mut images = runtime.cluster().images.clone();
    let mut last_tick = Instant::now();
    loop {
        follow(&machine);
        if last_tick.elapsed() >= M::TICK {
            last_tick = Instant::now();
            machine.tick();
        }
        tokio::select! {
            _ = runtime.cancel.cancelled() => return,
            _ = images.changed() => {}
            _ = tokio::time::sleep(M::TICK) => {}
        }
    }
}

/// Drops the shards of partitions no longer led here at their leader epoch
/// (waiting requests end with NOT_COORDINATOR), and starts loading newly
/// led ones.
fn follow<M: Machine>(machine: &Arc<M>) {
    let runtime = machine.runtime();
    let led = runtime.cluster().led_partitions(M::TOPIC);
    let mut shards = runtime.shards();
    shards.retain(|partition, shard| {
        let keep = led.get(partition) == Some(&shard.leader_epoch);
        if !keep {
            tracing::info!(topic = M::TOPIC, partition, "no longer the coordinator of the partition");
        }
        keep
    });
    for (partition, leader_epoch) in led {
        if shards.contains_key(&partition) {
            continue;
        }
        shards.insert(partition, Shard { leader_epoch, loaded: false, state: M::State::default() });
        runtime.spawn(load(machine.clone(), partition, leader_epoch));
    }
}

/// Reads a partition from its start to its high watermark and replays it;
/// retried until it succeeds or the partition is no longer led here at
/// that leader epoch.
async fn load<M: Machine>(machine: Arc<M>, partition: i32, leader_epoch: LeaderEpoch) {
    let runtime = machine.runtime();
    let started = Instant::now();
    loop {
        if runtime.lock_at(partition, leader_epoch).is_none() {
            return;
        }
        let items = match runtime.read(partition).await {
            Ok(items) => items,
            Err(error) => {
                tracing::info!(topic = M::TOPIC, partition, "cannot load the partition yet: {error}");
                tokio::time::sleep(LOAD_RETRY_PAUSE).await;
                continue;
            }
        };
        let replayed = machine.replay(&items);
        let Some(mut locked) = runtime.lock_at(partition, leader_epoch) else { return };
        let loading = std::mem::take(locked.state());
        *locked.state() = machine.merge(replayed, loading);
        let shard = locked.guard.get_mut(&partition).expect("locked above");
        shard.loaded = true;
        tracing::info!(
            topic = M::TOPIC,
            partition,
            records = items.len(),
            seconds = started.elapsed().as_secs_f64(),
            "loaded a coordinator partition"
        );
        machine.loaded(partition, &shard.state);
        return;
    }
}

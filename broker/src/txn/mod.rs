//! The transaction coordinator (DESIGN §6), as Kafka's: a transactional id
//! belongs to partition `abs(hashCode(id)) % N` of the internal compacted
//! topic `__transaction_state`, and the broker leading that partition
//! coordinates it. Each change of a transaction's state is a record
//! appended there through the ordinary produce path and applied once it is
//! durable; a broker that starts leading a partition replays it (until
//! then COORDINATOR_LOAD_IN_PROGRESS) and finishes the transactions it finds
//! prepared.
//!
//! Ending a transaction: the prepared state (PrepareCommit/PrepareAbort) is
//! made durable and the client answered; then a marker (a control batch) is
//! written to every partition of the transaction by its leader
//! (`WriteTxnMarkers`, to this broker or another), retried until each is
//! durable; then the completed state is written. Partition leaders refuse a
//! transaction's first batch until its coordinator confirms that the
//! partition was added (KIP-890, `verify_produce`). Open transactions past
//! their timeout are aborted at a bumped epoch, which fences their producer.
//!
//! `state.rs` holds the rules, `records.rs` the topic's layout, and
//! `markers.rs` the markers' writing on both sides.

pub mod markers;
pub mod records;
pub mod state;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ProduceRequest;
use keel_controller_client::{Image, LeaderEpoch};
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::groups::{now_ms, read_log, Item};
use state::{Status, Txn};

pub const TXN_TOPIC: &str = "__transaction_state";

/// How often open transactions are checked against their timeout and idle
/// ids against their expiration.
const TICK: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct Settings {
    /// Partitions of `__transaction_state` when a broker creates it.
    pub partitions: i32,
    /// Kafka's `transactional.id.expiration.ms`: an id with no transaction
    /// for this long is forgotten.
    pub id_expiration: Duration,
}

/// The transactions of one partition of `__transaction_state` led here.
#[derive(Debug)]
struct Shard {
    leader_epoch: LeaderEpoch,
    loaded: bool,
    txns: HashMap<String, Txn>,
    /// Ids whose next state is being written: other requests for them get
    /// CONCURRENT_TRANSACTIONS meanwhile.
    pending: HashSet<String>,
}

#[derive(Debug)]
pub struct TxnCoordinator {
    pub settings: Settings,
    shards: Mutex<HashMap<i32, Shard>>,
}

impl TxnCoordinator {
    pub fn new(settings: Settings) -> TxnCoordinator {
        TxnCoordinator { settings, shards: Mutex::default() }
    }

    fn shards(&self) -> MutexGuard<'_, HashMap<i32, Shard>> {
        self.shards.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The partition of `__transaction_state` that holds `id`, if the topic exists.
    pub fn partition_of(image: &Image, id: &str) -> Option<i32> {
        let topic = image.topics.get(TXN_TOPIC)?;
        Some(crate::groups::partition_for(id, topic.partitions.len()))
    }

    /// The partition of `id` and its leader epoch, with Kafka's error when
    /// this broker is not (or not yet) its coordinator.
    fn locate(&self, broker: &Broker, id: &str) -> Result<(i32, LeaderEpoch), ResponseError> {
        if id.is_empty() {
            return Err(ResponseError::InvalidRequest);
        }
        let image = broker.image();
        let partition = Self::partition_of(&image, id).ok_or(ResponseError::CoordinatorNotAvailable)?;
        let (_, leader_epoch) = broker.led(&image.topics[TXN_TOPIC], partition).ok_or(ResponseError::NotCoordinator)?;
        match self.shards().get(&partition) {
            Some(shard) if shard.leader_epoch == leader_epoch && shard.loaded => Ok((partition, leader_epoch)),
            _ => Err(ResponseError::CoordinatorLoadInProgress),
        }
    }

    /// `id`'s current state, if it has one.
    pub fn current(&self, broker: &Broker, id: &str) -> Result<Option<Txn>, ResponseError> {
        let (partition, _) = self.locate(broker, id)?;
        Ok(self.shards().get(&partition).and_then(|shard| shard.txns.get(id)).cloned())
    }

    /// Every transactional id coordinated here, with its state.
    pub fn list(&self) -> Vec<(String, Txn)> {
        let shards = self.shards();
        let mut listed: Vec<(String, Txn)> = shards
            .values()
            .filter(|shard| shard.loaded)
            .flat_map(|shard| shard.txns.iter().map(|(id, txn)| (id.clone(), txn.clone())))
            .collect();
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        listed
    }
}

/// Moves `id` to the state `decide` picks from its current one (`None`:
/// nothing to write) and returns the state after: the new one once its
/// record is durable, or the current one.
pub async fn transition(
    broker: &Arc<Broker>,
    id: &str,
    decide: impl FnOnce(Option<&Txn>) -> Result<Option<Txn>, ResponseError>,
) -> Result<Option<Txn>, ResponseError> {
    let coordinator = &broker.txns;
    let (partition, leader_epoch) = coordinator.locate(broker, id)?;
    let (next, appended) = {
        let mut shards = coordinator.shards();
        let shard = shards
            .get_mut(&partition)
            .filter(|shard| shard.leader_epoch == leader_epoch)
            .ok_or(ResponseError::NotCoordinator)?;
        if shard.pending.contains(id) {
            return Err(ResponseError::ConcurrentTransactions);
        }
        let current = shard.txns.get(id);
        let Some(next) = decide(current)? else { return Ok(current.cloned()) };
        shard.pending.insert(id.to_owned());
        let record = (records::encode_key(id), Some(records::encode_value(&next)));
        let batch = crate::batch::keyed_batch(vec![record], None, now_ms());
        (next, crate::api::append_internal(broker, TXN_TOPIC, partition, batch))
    };
    let written = crate::api::finish_internal(broker, appended).await;
    let mut shards = coordinator.shards();
    let shard = shards
        .get_mut(&partition)
        .filter(|shard| shard.leader_epoch == leader_epoch)
        .ok_or(ResponseError::NotCoordinator)?;
    shard.pending.remove(id);
    match written {
        None => {
            shard.txns.insert(id.to_owned(), next.clone());
            Ok(Some(next))
        }
        Some(ResponseError::NotLeaderOrFollower | ResponseError::UnknownTopicOrPartition) => {
            Err(ResponseError::NotCoordinator)
        }
        Some(error) => {
            tracing::warn!(transactional_id = id, partition, "writing to {TXN_TOPIC} failed: {error:?}");
            Err(ResponseError::CoordinatorNotAvailable)
        }
    }
}

/// Writes the markers of a prepared transaction, then its completed state.
/// Stops when this broker is no longer its coordinator: the next one
/// replays the prepared state and finishes it.
pub async fn finish(broker: Arc<Broker>, id: String, prepared: Txn) {
    let started = Instant::now();
    let commit = prepared.status == Status::PrepareCommit;
    let mut left = prepared.partitions.clone();
    let mut backoff = Duration::from_millis(20);
    loop {
        let Ok((_, leader_epoch)) = broker.txns.locate(&broker, &id) else { return };
        left = match markers::send(&broker, &prepared, leader_epoch.0, left).await {
            Ok(left) => left,
            Err(markers::Fenced) => {
                tracing::warn!(transactional_id = %id, "a newer coordinator wrote this producer's markers; this one stops");
                return;
            }
        };
        if left.is_empty() {
            break;
        }
        tracing::debug!(transactional_id = %id, left = left.len(), "markers not written yet; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
    loop {
        let done = transition(&broker, &id, |current| {
            let same = current.is_some_and(|c| {
                c.producer_id == prepared.producer_id && c.epoch == prepared.epoch && c.status == prepared.status
            });
            Ok(same.then(|| state::complete(&prepared, now_ms())))
        })
        .await;
        match done {
            Ok(_) => break,
            Err(ResponseError::NotCoordinator | ResponseError::CoordinatorLoadInProgress) => return,
            Err(error) => {
                tracing::debug!(transactional_id = %id, "cannot complete the transaction yet: {error:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let outcome = if commit { "commit" } else { "abort" };
    broker.metrics.transactions.with_label_values(&[outcome]).inc();
    broker.metrics.transaction_markers_seconds.observe(started.elapsed().as_secs_f64());
    tracing::debug!(transactional_id = %id, outcome, partitions = prepared.partitions.len(), "transaction completed");
}

/// Aborts `id`'s open transaction at a bumped epoch (a timeout, or a new
/// incarnation of its producer), then writes its markers.
pub async fn abort_and_fence(broker: &Arc<Broker>, id: &str, reason: &'static str) -> Result<(), ResponseError> {
    // Checked again under the lock: the transaction may have ended (and
    // another begun) since the tick saw it.
    let aborted = transition(broker, id, |current| match current {
        Some(txn) if state::timed_out(txn, now_ms()) => Ok(Some(state::abort_bumped(txn, now_ms()))),
        _ => Ok(None),
    })
    .await?;
    if let Some(txn) = aborted.filter(|txn| txn.status == Status::PrepareAbort) {
        tracing::info!(
            transactional_id = id,
            producer_id = txn.producer_id,
            epoch = txn.epoch,
            "aborting the open transaction: {reason}"
        );
        tokio::spawn(finish(broker.clone(), id.to_owned(), txn));
    }
    Ok(())
}

/// What a transaction's coordinator said of a produce's partitions (KIP-890).
#[derive(Debug, Default)]
pub struct Verified {
    /// In the producer's open transaction: the token of the verification
    /// begun at the partition (`Producers::begin_verification`).
    pub ok: HashMap<(String, i32), u64>,
    /// The coordinator could not be asked (moving, loading, unreachable):
    /// the produce is refused retriably.
    pub unreachable: HashSet<(String, i32)>,
}

/// KIP-890 at a partition leader: the partitions of a transactional
/// produce whose producer has no transaction open there yet, as the
/// transaction's coordinator confirms them. The others are refused in
/// `admit`.
pub async fn verify_produce(broker: &Arc<Broker>, request: &ProduceRequest) -> Verified {
    let Some(id) = request.transactional_id.as_ref().map(|id| id.0.to_string()) else { return Verified::default() };
    let image = broker.image();
    let mut producer: Option<(i64, i16)> = None;
    let mut wanted = Vec::new();
    let mut tokens = HashMap::new();
    {
        let mut leadership = broker.leadership();
        for topic_data in &request.topic_data {
            let Some(topic) = crate::api::find_topic(&image, &topic_data.name.0, topic_data.topic_id) else { continue };
            for partition in &topic_data.partition_data {
                let Some(bytes) = &partition.records else { continue };
                let Ok(header) = crate::batch::stored_header(bytes) else { continue };
                let Some(record) = topic.partitions.get(usize::try_from(partition.index).unwrap_or(usize::MAX)) else {
                    continue;
                };
                if !header.is_transactional() {
                    continue;
                }
                // One producer per request: the batches of any other are
                // not verified (and refused).
                let this = (header.producer_id, header.producer_epoch);
                if *producer.get_or_insert(this) != this {
                    continue;
                }
                let Some(state) = leadership.partitions.get_mut(&record.stream_id) else { continue };
                if !state.producers.in_transaction(this.0, this.1) {
                    let token = state.producers.begin_verification(this.0, this.1);
                    tokens.insert((topic.name.clone(), partition.index), token);
                    wanted.push((topic.name.clone(), partition.index));
                }
            }
        }
    }
    let Some((producer_id, epoch)) = producer.filter(|_| !wanted.is_empty()) else { return Verified::default() };
    match markers::verify(broker, &image, &id, producer_id, epoch, &wanted).await {
        Ok(confirmed) => Verified {
            ok: confirmed.into_iter().filter_map(|key| tokens.get(&key).map(|token| (key, *token))).collect(),
            unreachable: HashSet::new(),
        },
        Err(markers::Unverified::Unreachable(keys)) => Verified { ok: HashMap::new(), unreachable: keys },
        Err(markers::Unverified::Failed(error)) => {
            tracing::debug!(transactional_id = %id, "could not verify a transaction with its coordinator: {error:#}");
            Verified { ok: HashMap::new(), unreachable: wanted.into_iter().collect() }
        }
    }
}

/// Starts a verification of producer (id, epoch)'s transaction at a
/// partition this broker leads (KIP-890's guard, `Producers::check`).
pub fn begin_verification(broker: &Broker, topic: &str, partition: i32, producer: (i64, i16)) -> Option<u64> {
    let image = broker.image();
    let (stream, _) = broker.led(image.topics.get(topic)?, partition)?;
    let mut leadership = broker.leadership();
    Some(leadership.partitions.get_mut(&stream)?.producers.begin_verification(producer.0, producer.1))
}

/// Follows which partitions of `__transaction_state` this broker leads,
/// loads them, and aborts transactions past their timeout.
pub async fn run(broker: Arc<Broker>, cancel: CancellationToken) {
    let mut images = broker.images.clone();
    let mut last_tick = Instant::now();
    loop {
        follow(&broker);
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            tick(&broker);
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = images.changed() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

fn follow(broker: &Arc<Broker>) {
    let led = broker.led_partitions(TXN_TOPIC);
    let mut shards = broker.txns.shards();
    shards.retain(|partition, shard| {
        let keep = led.get(partition) == Some(&shard.leader_epoch);
        if !keep {
            tracing::info!(partition, "no longer the coordinator of the transactions of {TXN_TOPIC} partition");
        }
        keep
    });
    for (partition, leader_epoch) in led {
        if shards.contains_key(&partition) {
            continue;
        }
        let shard = Shard { leader_epoch, loaded: false, txns: HashMap::new(), pending: HashSet::new() };
        shards.insert(partition, shard);
        let broker = broker.clone();
        tokio::spawn(async move { load(broker, partition, leader_epoch).await });
    }
}

/// Replays a partition of `__transaction_state`, then finishes the
/// transactions found prepared (their markers may not all be written).
async fn load(broker: Arc<Broker>, partition: i32, leader_epoch: LeaderEpoch) {
    let started = Instant::now();
    loop {
        let current = || broker.txns.shards().get(&partition).is_some_and(|s| s.leader_epoch == leader_epoch);
        if !current() {
            return;
        }
        let items = match read_log(&broker, TXN_TOPIC, partition).await {
            Ok(items) => items,
            Err(error) => {
                tracing::info!(partition, "cannot load the transactions yet: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut txns = HashMap::new();
        for item in &items {
            let Item::Record { key, value, .. } = item else { continue };
            let id = match records::decode_key(key) {
                Ok(id) => id,
                Err(error) => {
                    tracing::warn!(partition, "skipping a record of {TXN_TOPIC} with an unreadable key: {error}");
                    continue;
                }
            };
            match value.as_deref().map(records::decode_value) {
                None => {
                    txns.remove(&id);
                }
                Some(Ok(txn)) => {
                    txns.insert(id, txn);
                }
                Some(Err(error)) => tracing::warn!(transactional_id = %id, "skipping an unreadable record: {error}"),
            }
        }
        let prepared: Vec<(String, Txn)> = txns
            .iter()
            .filter(|(_, txn)| txn.status.is_prepared())
            .map(|(id, txn)| (id.clone(), txn.clone()))
            .collect();
        {
            let mut shards = broker.txns.shards();
            let Some(shard) = shards.get_mut(&partition).filter(|s| s.leader_epoch == leader_epoch) else { return };
            shard.txns = txns;
            shard.loaded = true;
            tracing::info!(
                partition,
                records = items.len(),
                transactional_ids = shard.txns.len(),
                prepared = prepared.len(),
                seconds = started.elapsed().as_secs_f64(),
                "loaded the transactions of {TXN_TOPIC} partition"
            );
        }
        for (id, txn) in prepared {
            tokio::spawn(finish(broker.clone(), id, txn));
        }
        return;
    }
}

/// Aborts open transactions past their timeout and forgets ids idle past
/// `transactional.id.expiration.ms`.
fn tick(broker: &Arc<Broker>) {
    let now = now_ms();
    let expiration = broker.txns.settings.id_expiration.as_millis() as i64;
    let mut timed_out = Vec::new();
    let mut expired = Vec::new();
    {
        let shards = broker.txns.shards();
        for (partition, shard) in shards.iter().filter(|(_, shard)| shard.loaded) {
            for (id, txn) in shard.txns.iter().filter(|(id, _)| !shard.pending.contains(*id)) {
                if state::timed_out(txn, now) {
                    timed_out.push(id.clone());
                } else if !matches!(txn.status, Status::Ongoing | Status::PrepareCommit | Status::PrepareAbort)
                    && now.saturating_sub(txn.update_ms) > expiration
                {
                    expired.push((*partition, shard.leader_epoch, id.clone()));
                }
            }
        }
    }
    for id in timed_out {
        let broker = broker.clone();
        broker.metrics.transactions.with_label_values(&["timed_out"]).inc();
        tokio::spawn(async move {
            if let Err(error) = abort_and_fence(&broker, &id, "it ran past its timeout").await {
                tracing::debug!(transactional_id = %id, "cannot abort the timed-out transaction yet: {error:?}");
            }
        });
    }
    for (partition, leader_epoch, id) in expired {
        forget(broker, partition, leader_epoch, id, expiration);
    }
}

/// Writes a tombstone for an expired transactional id and forgets it.
fn forget(broker: &Arc<Broker>, partition: i32, leader_epoch: LeaderEpoch, id: String, expiration: i64) {
    let appended = {
        let mut shards = broker.txns.shards();
        let Some(shard) = shards.get_mut(&partition).filter(|s| s.leader_epoch == leader_epoch) else { return };
        // Checked again under the lock: a request may have used the id since.
        let idle = shard.txns.get(&id).is_some_and(|txn| {
            !matches!(txn.status, Status::Ongoing | Status::PrepareCommit | Status::PrepareAbort)
                && now_ms().saturating_sub(txn.update_ms) > expiration
        });
        if !idle || shard.pending.contains(&id) {
            return;
        }
        shard.pending.insert(id.clone());
        let batch = crate::batch::keyed_batch(vec![(records::encode_key(&id), None)], None, now_ms());
        crate::api::append_internal(broker, TXN_TOPIC, partition, batch)
    };
    let broker = broker.clone();
    tokio::spawn(async move {
        let written = crate::api::finish_internal(&broker, appended).await;
        let mut shards = broker.txns.shards();
        let Some(shard) = shards.get_mut(&partition).filter(|s| s.leader_epoch == leader_epoch) else { return };
        shard.pending.remove(&id);
        if written.is_none() {
            shard.txns.remove(&id);
            tracing::info!(transactional_id = %id, "forgot a transactional id idle past its expiration");
        }
    });
}

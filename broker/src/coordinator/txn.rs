//! The transaction coordinator (DESIGN §6), as Kafka's: a transactional id
//! belongs to partition `abs(hashCode(id)) % N` of the internal compacted
//! topic `__transaction_state`, and the broker leading that partition
//! coordinates it. Each change of a transaction's state is a record
//! appended there and applied once it is durable (`transition`; other
//! requests for the id get CONCURRENT_TRANSACTIONS meanwhile); a broker that
//! takes a partition over replays it and finishes the transactions it
//! finds prepared.
//!
//! Ending a transaction: the prepared state (PrepareCommit/PrepareAbort) is
//! made durable and the client answered; then a marker is written to every
//! partition of the transaction by its leader (`markers.rs`), retried until
//! each is durable; then the completed state is written (`finish`).
//! Partition leaders refuse a transaction's first batch until its
//! coordinator confirms that the partition was added (KIP-890,
//! `verify_batches`). Open transactions past their timeout are aborted at a
//! bumped epoch, which fences their producer.
//!
//! The rules are the core's (`keel_broker_core::txn::state`).

pub mod markers;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use keel_broker_core::clock::now_ms;
use keel_broker_core::internal_topic::Item;
use keel_broker_core::partition::Verification;
use keel_broker_core::txn::state::{self, Status, Txn};
use keel_broker_core::txn::{records, TXN_TOPIC};
use keel_controller_client::ProducerId;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::groups::Groups;
use super::peers::Peers;
use super::runtime::{Machine, Runtime};
use crate::log::partitions::Verifications;
use crate::log::Partitions;

#[derive(Clone, Debug)]
pub struct Settings {
    /// Partitions of `__transaction_state` when a broker creates it.
    pub partitions: i32,
    /// Kafka's `transactional.id.expiration.ms`: an id with no transaction
    /// for this long is forgotten.
    pub id_expiration: Duration,
}

/// The transactions of one partition of `__transaction_state` led here.
#[derive(Debug, Default)]
pub struct TxnShard {
    txns: HashMap<String, Txn>,
    /// Ids whose next state is being written: other requests for them get
    /// CONCURRENT_TRANSACTIONS meanwhile.
    pending: HashSet<String>,
}

#[derive(Debug)]
pub struct Txns {
    runtime: Runtime<TxnShard>,
    pub settings: Settings,
    /// A marker in `__consumer_offsets` also ends the transaction's offsets there.
    groups: Arc<Groups>,
    peers: Arc<dyn Peers>,
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

impl Verified {
    /// What the coordinator said of `partition` of `topic`.
    pub fn of(&self, topic: &str, partition: i32) -> Verification {
        let key = (topic.to_owned(), partition);
        if self.unreachable.contains(&key) {
            return Verification::Unreachable;
        }
        self.ok.get(&key).map_or(Verification::NotAsked, |token| Verification::Confirmed(*token))
    }
}

impl Machine for Txns {
    type State = TxnShard;
    const TOPIC: &'static str = TXN_TOPIC;
    /// How often open transactions are checked against their timeout and
    /// idle ids against their expiration.
    const TICK: Duration = Duration::from_secs(1);

    fn runtime(&self) -> &Runtime<TxnShard> {
        &self.runtime
    }

    fn merge(&self, replayed: TxnShard, _loading: TxnShard) -> TxnShard {
        replayed
    }

    fn replay(&self, items: &[Item]) -> TxnShard {
        let mut txns = HashMap::new();
        for item in items {
            let Item::Record { key, value, .. } = item else { continue };
            let id = match records::decode_key(key) {
                Ok(id) => id,
                Err(error) => {
                    tracing::warn!("skipping a record of {TXN_TOPIC} with an unreadable key: {error}");
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
        TxnShard { txns, pending: HashSet::new() }
    }

    /// Finishes the transactions found prepared (their markers may not all
    /// be written).
    fn loaded(self: &Arc<Self>, partition: i32, state: &TxnShard) {
        let prepared = state.txns.iter().filter(|(_, txn)| txn.status.is_prepared());
        let mut count = 0;
        for (id, txn) in prepared {
            count += 1;
            self.start_finish(id.clone(), txn.clone());
        }
        tracing::debug!(partition, transactional_ids = state.txns.len(), prepared = count, "transactions loaded");
    }

    /// Aborts open transactions past their timeout and forgets ids idle past
    /// `transactional.id.expiration.ms`.
    fn tick(self: &Arc<Self>) {
        let now = now_ms();
        let expiration = self.settings.id_expiration.as_millis() as i64;
        let mut timed_out = Vec::new();
        let mut expired = Vec::new();
        {
            let shards = self.runtime.shards();
            for (partition, shard) in shards.iter().filter(|(_, shard)| shard.loaded) {
                let state = &shard.state;
                for (id, txn) in state.txns.iter().filter(|(id, _)| !state.pending.contains(*id)) {
                    if state::timed_out(txn, now) {
                        timed_out.push(id.clone());
                    } else if idle(txn, now, expiration) {
                        expired.push((*partition, shard.leader_epoch, id.clone()));
                    }
                }
            }
        }
        for id in timed_out {
            self.runtime.cluster().metrics.transactions.with_label_values(&["timed_out"]).inc();
            let txns = self.clone();
            self.runtime.spawn(async move {
                if let Err(error) = txns.abort_and_fence(&id, "it ran past its timeout").await {
                    tracing::debug!(transactional_id = %id, "cannot abort the timed-out transaction yet: {error:?}");
                }
            });
        }
        for (partition, leader_epoch, id) in expired {
            self.forget(partition, leader_epoch, id, expiration);
        }
    }
}

/// An id with no transaction open or ending, unused for `expiration` ms.
fn idle(txn: &Txn, now: i64, expiration: i64) -> bool {
    !matches!(txn.status, Status::Ongoing | Status::PrepareCommit | Status::PrepareAbort)
        && now.saturating_sub(txn.update_ms) > expiration
}

impl Txns {
    pub fn new(
        settings: Settings,
        partitions: Arc<Partitions>,
        groups: Arc<Groups>,
        peers: Arc<dyn Peers>,
        tasks: TaskTracker,
        cancel: CancellationToken,
    ) -> Txns {
        Txns { runtime: Runtime::new(TXN_TOPIC, partitions, tasks, cancel), settings, groups, peers }
    }

    pub fn runtime(&self) -> &Runtime<TxnShard> {
        &self.runtime
    }

    /// The partition of `id` and its leader epoch, with Kafka's error when
    /// this broker is not (or not yet) its coordinator.
    fn locate(&self, id: &str) -> Result<(i32, keel_controller_client::LeaderEpoch), ResponseError> {
        if id.is_empty() {
            return Err(ResponseError::InvalidRequest);
        }
        self.runtime.locate(id)
    }

    /// `id`'s current state, if it has one.
    pub fn current(&self, id: &str) -> Result<Option<Txn>, ResponseError> {
        let (partition, _) = self.locate(id)?;
        Ok(self.runtime.shards().get(&partition).and_then(|shard| shard.state.txns.get(id)).cloned())
    }

    /// Every transactional id coordinated here, with its state, sorted.
    pub fn list(&self) -> Vec<(String, Txn)> {
        let shards = self.runtime.shards();
        let mut listed: Vec<(String, Txn)> = shards
            .values()
            .filter(|shard| shard.loaded)
            .flat_map(|shard| shard.state.txns.iter().map(|(id, txn)| (id.clone(), txn.clone())))
            .collect();
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        listed
    }

    /// Moves `id` to the state `decide` picks from its current one (`None`:
    /// nothing to write) and returns the state after: the new one once its
    /// record is durable, or the current one.
    pub async fn transition(
        &self,
        id: &str,
        decide: impl FnOnce(Option<&Txn>) -> Result<Option<Txn>, ResponseError>,
    ) -> Result<Option<Txn>, ResponseError> {
        let (partition, leader_epoch) = self.locate(id)?;
        let (next, ticket) = {
            let mut locked = self.runtime.lock_at(partition, leader_epoch).ok_or(ResponseError::NotCoordinator)?;
            let shard = locked.state();
            if shard.pending.contains(id) {
                return Err(ResponseError::ConcurrentTransactions);
            }
            let current = shard.txns.get(id);
            let Some(next) = decide(current)? else { return Ok(current.cloned()) };
            shard.pending.insert(id.to_owned());
            let record = (records::encode_key(id), Some(records::encode_value(&next)));
            (next, self.runtime.append(partition, vec![record], None, Verification::NotAsked))
        };
        let written = self.runtime.written(ticket, partition).await;
        let mut locked = self.runtime.lock_at(partition, leader_epoch).ok_or(ResponseError::NotCoordinator)?;
        let shard = locked.state();
        shard.pending.remove(id);
        written?;
        shard.txns.insert(id.to_owned(), next.clone());
        Ok(Some(next))
    }

    /// Writes the markers of a prepared transaction, then its completed
    /// state, in a task of this coordinator.
    pub fn start_finish(self: &Arc<Self>, id: String, prepared: Txn) {
        self.runtime.spawn(self.clone().finish(id, prepared));
    }

    /// Writes the markers of a prepared transaction, then its completed state.
    /// Stops when this broker is no longer its coordinator: the next one
    /// replays the prepared state and finishes it.
    async fn finish(self: Arc<Self>, id: String, prepared: Txn) {
        let started = Instant::now();
        let commit = prepared.status == Status::PrepareCommit;
        let mut left = prepared.partitions.clone();
        let mut backoff = Duration::from_millis(20);
        loop {
            let Ok((_, leader_epoch)) = self.locate(&id) else { return };
            left = match markers::send(&self, &prepared, leader_epoch.0, left).await {
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
            let done = self
                .transition(&id, |current| {
                    let same = current.is_some_and(|c| {
                        c.producer_id == prepared.producer_id
                            && c.epoch == prepared.epoch
                            && c.status == prepared.status
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
        let metrics = &self.runtime.cluster().metrics;
        let outcome = if commit { "commit" } else { "abort" };
        metrics.transactions.with_label_values(&[outcome]).inc();
        metrics.transaction_markers_seconds.observe(started.elapsed().as_secs_f64());
        tracing::debug!(transactional_id = %id, outcome, partitions = prepared.partitions.len(), "transaction completed");
    }

    /// Aborts `id`'s open transaction at a bumped epoch (a timeout, or a new
    /// incarnation of its producer), then writes its markers.
    pub async fn abort_and_fence(self: &Arc<Self>, id: &str, reason: &'static str) -> Result<(), ResponseError> {
        // Checked again under the lock: the transaction may have ended (and
        // another begun) since the tick saw it.
        let aborted = self
            .transition(id, |current| match current {
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
            self.start_finish(id.to_owned(), txn);
        }
        Ok(())
    }

    /// KIP-890 at a partition leader: for a transactional produce's batches
    /// (topic, partition, records), those whose producer has no transaction
    /// open at their partition yet, as the transaction's coordinator
    /// confirms them. The others are refused when admitted.
    pub async fn verify_batches(&self, transactional_id: &str, batches: &[(&str, i32, &Bytes)]) -> Verified {
        let headers: Vec<(&str, i32, keel_broker_core::batch::BatchHeader)> = batches
            .iter()
            .filter_map(|(topic, partition, bytes)| {
                Some((*topic, *partition, keel_broker_core::batch::stored_header(bytes).ok()?))
            })
            .collect();
        let partitions = self.runtime.partitions();
        let Some(Verifications { producer, begun }) = partitions.begin_verifications(&headers) else {
            return Verified::default();
        };
        if begun.is_empty() {
            return Verified::default();
        }
        let tokens: HashMap<(String, i32), u64> = begun.into_iter().collect();
        let wanted: Vec<(String, i32)> = tokens.keys().cloned().collect();
        let image = self.runtime.cluster().image();
        match markers::verify(self, &image, transactional_id, producer, &wanted).await {
            Ok(confirmed) => Verified {
                ok: confirmed.into_iter().filter_map(|key| tokens.get(&key).map(|token| (key, *token))).collect(),
                unreachable: HashSet::new(),
            },
            Err(markers::Unverified::Unreachable(keys)) => Verified { ok: HashMap::new(), unreachable: keys },
            Err(markers::Unverified::Failed(error)) => {
                tracing::debug!(transactional_id, "could not verify a transaction with its coordinator: {error:#}");
                Verified { ok: HashMap::new(), unreachable: wanted.into_iter().collect() }
            }
        }
    }

    /// KIP-890 for offsets committed in a transaction: the group's partition
    /// `partition` of `__consumer_offsets` must be in producer (id, epoch)'s
    /// transaction (AddOffsetsToTxn), and no marker may land between this
    /// check and the write, which carries the returned token.
    pub async fn verify_offsets(
        &self,
        transactional_id: &str,
        producer: (ProducerId, i16),
        partition: i32,
    ) -> Result<u64, ResponseError> {
        let offsets_topic = keel_broker_core::groups::OFFSETS_TOPIC;
        let wanted = [(offsets_topic.to_owned(), partition)];
        let token = self.runtime.partitions().begin_verification(offsets_topic, partition, producer);
        let image = self.runtime.cluster().image();
        match (token, markers::verify(self, &image, transactional_id, producer, &wanted).await) {
            (None, _) => Err(ResponseError::NotCoordinator),
            (Some(token), Ok(confirmed)) if confirmed.contains(&wanted[0]) => Ok(token),
            (_, Ok(_)) => Err(ResponseError::InvalidTxnState),
            (_, Err(markers::Unverified::Unreachable(_))) => Err(ResponseError::CoordinatorNotAvailable),
            (_, Err(markers::Unverified::Failed(error))) => {
                tracing::debug!(transactional_id, "cannot verify a transactional offset commit: {error:#}");
                Err(ResponseError::CoordinatorNotAvailable)
            }
        }
    }

    /// Writes a tombstone for an expired transactional id and forgets it.
    fn forget(
        self: &Arc<Self>,
        partition: i32,
        leader_epoch: keel_controller_client::LeaderEpoch,
        id: String,
        expiration: i64,
    ) {
        let ticket = {
            let Some(mut locked) = self.runtime.lock_at(partition, leader_epoch) else { return };
            let shard = locked.state();
            // Checked again under the lock: a request may have used the id since.
            let still_idle = shard.txns.get(&id).is_some_and(|txn| idle(txn, now_ms(), expiration));
            if !still_idle || shard.pending.contains(&id) {
                return;
            }
            shard.pending.insert(id.clone());
            self.runtime.append(partition, vec![(records::encode_key(&id), None)], None, Verification::NotAsked)
        };
        let txns = self.clone();
        self.runtime.spawn(async move {
            let written = txns.runtime.written(ticket, partition).await;
            let Some(mut locked) = txns.runtime.lock_at(partition, leader_epoch) else { return };
            let shard = locked.state();
            shard.pending.remove(&id);
            if written.is_ok() {
                shard.txns.remove(&id);
                tracing::info!(transactional_id = %id, "forgot a transactional id idle past its expiration");
            }
        });
    }
}

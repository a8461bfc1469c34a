//! The group coordinator (DESIGN §6): consumer groups and their committed
//! offsets, kept in the internal compacted topic `__consumer_offsets`.
//!
//! A group belongs to partition `abs(hashCode(group)) % N` of that topic,
//! and the broker leading that partition is its coordinator. Every change
//! that must survive (a committed offset, a classic group's members and
//! assignment after a rebalance, a deletion) is a record appended to the
//! partition and answered only once it is durable; a broker that takes the
//! partition over replays it (`runtime.rs`).
//!
//! The rules are the core's (`keel_broker_core::groups`). This file holds
//! the groups per led partition, delivers the answers of parked classic
//! requests, writes what changed and moves groups on every 100 ms;
//! `membership.rs` (classic JoinGroup, SyncGroup, Heartbeat, LeaveGroup),
//! `consumer_protocol.rs` (KIP-848), `offsets.rs` (commits, fetches,
//! deletions) and `lag.rs` hold the operations.

pub mod consumer_protocol;
pub mod lag;
pub mod membership;
pub mod offsets;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use keel_broker_core::groups::classic::{Answer, ClassicGroup};
use keel_broker_core::groups::{self as rules, Entry, Group, Kind, Settings, OFFSETS_TOPIC};
use keel_broker_core::internal_topic::Item;
use keel_broker_core::partition::Verification;
use keel_controller_client::ProducerId;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::peers::Peers;
use super::runtime::{Locked, Machine, Runtime};
use crate::log::Partitions;

/// The groups of one partition of `__consumer_offsets` this broker leads.
#[derive(Debug, Default)]
pub struct GroupShard {
    pub groups: HashMap<String, Group>,
    /// Classic requests parked in their group, by (group, member, join or
    /// sync), waiting for the group to answer them.
    waiters: HashMap<(String, String, bool), oneshot::Sender<Answer>>,
    /// Transaction markers made durable while the shard loads (producer,
    /// commit): applied after the replay, which may have read the log
    /// before them.
    ended_while_loading: Vec<(ProducerId, bool)>,
}

impl GroupShard {
    /// The group, made (classic, empty) if it does not exist.
    pub fn group_or_new(&mut self, id: &str, settings: &Settings) -> &mut Group {
        self.groups.entry(id.to_owned()).or_insert_with(|| Group::classic(id, settings))
    }

    /// Parks a request of `member` of group `id` until the group answers it.
    fn park(&mut self, id: &str, member: &str, join: bool) -> oneshot::Receiver<Answer> {
        let (sender, receiver) = oneshot::channel();
        // A newer request of the same member replaces the older, which then
        // ends with NOT_COORDINATOR (its sender is dropped), as before.
        self.waiters.insert((id.to_owned(), member.to_owned(), join), sender);
        receiver
    }

    /// Hands the answers group `id` gave out to the requests waiting for them.
    fn deliver(&mut self, id: &str) {
        let Some(Group { kind: Kind::Classic(classic), .. }) = self.groups.get_mut(id) else { return };
        for (member, answer) in classic.take_answers() {
            let join = matches!(answer, Answer::Join(_));
            if let Some(waiter) = self.waiters.remove(&(id.to_owned(), member, join)) {
                let _ = waiter.send(answer);
            }
        }
    }
}

/// Records appended to `__consumer_offsets`, on their way to being durable.
#[derive(Debug)]
pub struct Written {
    ticket: crate::log::append::AppendTicket,
    partition: i32,
}

#[derive(Debug)]
pub struct Groups {
    runtime: Runtime<GroupShard>,
    pub settings: Settings,
    peers: Arc<dyn Peers>,
}

impl Machine for Groups {
    type State = GroupShard;
    const TOPIC: &'static str = OFFSETS_TOPIC;
    /// How often groups are moved on (expired sessions, ended join phases).
    const TICK: Duration = Duration::from_millis(100);

    fn runtime(&self) -> &Runtime<GroupShard> {
        &self.runtime
    }

    fn replay(&self, items: &[Item]) -> GroupShard {
        GroupShard { groups: rules::replay(items, &self.settings, Instant::now()), ..GroupShard::default() }
    }

    fn merge(&self, mut replayed: GroupShard, loading: GroupShard) -> GroupShard {
        for (producer, commit) in loading.ended_while_loading {
            rules::end_txn_offsets(&mut replayed.groups, producer, commit);
        }
        replayed
    }

    fn loaded(self: &Arc<Self>, partition: i32, state: &GroupShard) {
        self.runtime.cluster().metrics.group_loads.inc();
        tracing::debug!(partition, groups = state.groups.len(), "groups loaded");
    }

    /// Moves every loaded group on (sessions, join and sync phases), expires
    /// the offsets of groups empty for the retention period, then writes what
    /// changed.
    fn tick(self: &Arc<Self>) {
        let now = Instant::now();
        let now_ms = keel_broker_core::clock::now_ms();
        let retention = self.settings.offsets_retention;
        let image = self.runtime.cluster().image();
        let mut expired = Vec::new();
        let mut shards = self.runtime.shards();
        for (partition, shard) in shards.iter_mut().filter(|(_, shard)| shard.loaded) {
            let shard_state = &mut shard.state;
            let mut tombstones = Vec::new();
            shard_state.groups.retain(|id, group| {
                match &mut group.kind {
                    Kind::Classic(classic) => classic.tick(now),
                    Kind::Consumer(consumer) => {
                        consumer.tick(now);
                    }
                }
                rules::forget_deleted_topics(id, group, &image, &mut tombstones);
                let keep = rules::expire_offsets(id, group, now, now_ms, retention, &mut tombstones);
                if !keep {
                    tracing::info!(group = %id, "the group was empty for {retention:?} and has no offsets left; deleting it");
                }
                keep
            });
            let ids: Vec<String> = shard_state.groups.keys().cloned().collect();
            for id in ids {
                shard_state.deliver(&id);
            }
            // Requests whose connection is gone, and those of groups deleted
            // just now (they end with NOT_COORDINATOR, their sender dropped).
            let groups = &shard_state.groups;
            shard_state.waiters.retain(|(id, _, _), waiter| !waiter.is_closed() && groups.contains_key(id));
            if !tombstones.is_empty() {
                expired.push((*partition, self.runtime.append(*partition, tombstones, None, Verification::NotAsked)));
            }
            self.persist_dirty_in(*partition, shard.leader_epoch, &mut shard.state);
        }
        drop(shards);
        for (partition, ticket) in expired {
            // Forgotten in memory already; should the write fail, a later
            // coordinator replays them and expires them again.
            let groups = self.clone();
            self.runtime.spawn(async move {
                if let Err(error) = groups.runtime.written(ticket, partition).await {
                    tracing::info!(partition, "could not write expired offsets' tombstones yet: {error:?}");
                }
            });
        }
    }
}

impl Groups {
    pub fn new(
        settings: Settings,
        partitions: Arc<Partitions>,
        peers: Arc<dyn Peers>,
        tasks: TaskTracker,
        cancel: CancellationToken,
    ) -> Groups {
        Groups { runtime: Runtime::new(OFFSETS_TOPIC, partitions, tasks, cancel), settings, peers }
    }

    pub fn runtime(&self) -> &Runtime<GroupShard> {
        &self.runtime
    }

    /// The partition of `__consumer_offsets` that holds `group`, if the topic exists.
    pub fn partition_of(&self, image: &keel_controller_client::Image, group: &str) -> Option<i32> {
        self.runtime.partition_of(image, group)
    }

    /// Locks the groups of `group`'s partition, with Kafka's error when this
    /// broker is not (or not yet) their coordinator.
    pub fn lock(&self, group: &str) -> Result<Locked<'_, GroupShard>, ResponseError> {
        if group.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        self.runtime.lock(group)
    }

    /// Runs `read` on group `id` under its lock (`None`: no such group).
    pub fn with_group<R>(&self, id: &str, read: impl FnOnce(Option<&Group>) -> R) -> Result<R, ResponseError> {
        let mut locked = self.lock(id)?;
        Ok(read(locked.state().groups.get(id)))
    }

    /// Every loaded group this broker coordinates, as (id, state, protocol
    /// type, is consumer protocol), sorted.
    pub fn list(&self) -> Vec<(String, &'static str, String, bool)> {
        let shards = self.runtime.shards();
        let mut listed = Vec::new();
        for shard in shards.values().filter(|shard| shard.loaded) {
            for (id, group) in &shard.state.groups {
                let (protocol_type, consumer) = match &group.kind {
                    Kind::Classic(classic) => (classic.protocol_type.clone().unwrap_or_default(), false),
                    Kind::Consumer(_) => ("consumer".to_owned(), true),
                };
                listed.push((id.clone(), group.state(), protocol_type, consumer));
            }
        }
        listed.sort();
        listed
    }

    /// Appends records for groups of `partition` now (called under the
    /// shard's lock, so the log holds changes in the order they were made).
    fn append(&self, partition: i32, records: Vec<Entry>) -> Written {
        Written { ticket: self.runtime.append(partition, records, None, Verification::NotAsked), partition }
    }

    /// Waits until appended records are durable.
    async fn written(&self, written: Written) -> Result<(), ResponseError> {
        self.runtime.written(written.ticket, written.partition).await
    }

    /// Appends records for `group` under its lock and waits until they are durable.
    async fn append_locked(&self, group: &str, records: Vec<Entry>) -> Result<(), ResponseError> {
        let written = {
            let locked = self.lock(group)?;
            self.append(locked.partition, records)
        };
        self.written(written).await
    }

    /// Writes every group of `id`'s partition whose record is out of date; a
    /// classic rebalance's assignment is handed to the members once its
    /// record is durable.
    fn persist_dirty(self: &Arc<Self>, locked: &mut Locked<'_, GroupShard>) {
        let (partition, leader_epoch) = (locked.partition, locked.leader_epoch());
        self.persist_dirty_in(partition, leader_epoch, locked.state());
    }

    /// Appends the record of every group of a shard changed since it was
    /// last written; waits for each in a task of its own.
    fn persist_dirty_in(
        self: &Arc<Self>,
        partition: i32,
        leader_epoch: keel_controller_client::LeaderEpoch,
        shard: &mut GroupShard,
    ) {
        let now_ms = keel_broker_core::clock::now_ms();
        for (id, group) in shard.groups.iter_mut() {
            let Some((entry, persisting)) = group.dirty_record(id, now_ms) else { continue };
            let written = self.append(partition, vec![entry]);
            let (groups, id) = (self.clone(), id.clone());
            self.runtime.spawn(async move {
                let result = groups.written(written).await;
                let Some(mut locked) = groups.runtime.lock_at(partition, leader_epoch) else { return };
                let shard = locked.state();
                let Some(group) = shard.groups.get_mut(&id) else { return };
                group.written(persisting, result, Instant::now());
                shard.deliver(&id);
            });
        }
    }

    /// A transaction's marker is durable in `partition` of `__consumer_offsets`.
    pub fn txn_ended(&self, partition: i32, producer: ProducerId, commit: bool) {
        let mut shards = self.runtime.shards();
        match shards.get_mut(&partition) {
            Some(shard) if shard.loaded => rules::end_txn_offsets(&mut shard.state.groups, producer, commit),
            Some(shard) => shard.state.ended_while_loading.push((producer, commit)),
            // Not followed yet: its load starts later and reads the marker.
            None => {}
        }
    }
}

/// A classic group to join or act in, made from an empty group of either kind.
fn classic_of<'a>(group: &'a mut Group, id: &str, settings: &Settings) -> Result<&'a mut ClassicGroup, ResponseError> {
    if let Kind::Consumer(consumer) = &group.kind {
        if !consumer.members.is_empty() {
            return Err(ResponseError::InconsistentGroupProtocol);
        }
        group.kind = Kind::Classic(ClassicGroup::new(id, settings.initial_delay));
    }
    match &mut group.kind {
        Kind::Classic(classic) => Ok(classic),
        Kind::Consumer(_) => unreachable!("converted above"),
    }
}

//! The group coordinator (DESIGN §6): consumer groups and their committed
//! offsets, kept in the internal compacted topic `__consumer_offsets`.
//!
//! A group belongs to partition `abs(hashCode(group)) % N` of that topic
//! (Kafka's rule), and the broker leading that partition is its
//! coordinator. Every change that must survive — a committed offset, a
//! classic group's members and assignment after a rebalance, a deletion —
//! is a record appended to the partition through the ordinary produce path
//! (WAL quorum, then S3), and answered only once it is durable. When a
//! broker starts leading a partition of the topic (a failover, a move), it
//! reads the partition from its start and replays it; until then requests
//! for its groups get COORDINATOR_LOAD_IN_PROGRESS (retriable).
//!
//! `classic.rs` and `consumer.rs` are the groups' I/O-free state machines;
//! this file holds them per partition, loads them, writes their records
//! and moves them on as time passes.

pub mod classic;
pub mod consumer;
pub mod records;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::records::RecordBatchDecoder;
use keel_controller_client::{Image, LeaderEpoch};
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use classic::ClassicGroup;
use consumer::ConsumerGroup;
use records::{Key, OffsetValue};

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// A record to append to `__consumer_offsets`: key, and value or `None` (a tombstone).
pub type Entry = (Bytes, Option<Bytes>);

/// Topics only the broker itself writes.
pub fn is_internal(topic: &str) -> bool {
    keel_controller_client::topic_rules::is_internal_topic(topic)
}

/// Kafka's `offset.metadata.max.bytes`.
pub const METADATA_BYTES_MAX: usize = 4096;

/// How often groups are moved on (expired sessions, ended join phases).
const TICK: Duration = Duration::from_millis(100);

/// Kafka's partition of `__consumer_offsets` for a group: the absolute
/// value of Java's `String.hashCode` modulo the partition count.
pub fn partition_for(group: &str, partitions: usize) -> i32 {
    let hash = group.encode_utf16().fold(0i32, |hash, unit| hash.wrapping_mul(31).wrapping_add(i32::from(unit)));
    ((hash & 0x7fff_ffff) as usize % partitions.max(1)) as i32
}

/// The settings groups run with.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `group.initial.rebalance.delay.ms`: an empty group's first rebalance
    /// waits this long for more members.
    pub initial_delay: Duration,
    /// `group.consumer.session.timeout.ms` and `heartbeat.interval.ms` (KIP-848).
    pub consumer_session_timeout: Duration,
    pub consumer_heartbeat_interval: Duration,
    /// Partitions of `__consumer_offsets` when a broker creates it.
    pub offsets_partitions: i32,
    /// `offsets.retention.minutes`: a group empty this long loses the
    /// offsets committed before that, and then is deleted.
    pub offsets_retention: Duration,
}

#[derive(Debug)]
pub enum Kind {
    Classic(ClassicGroup),
    Consumer(ConsumerGroup),
}

/// One open transaction's offsets in a group: (topic, partition) ->
/// (offset, its place among the group's commits).
pub type PendingOffsets = BTreeMap<(String, i32), (OffsetValue, u64)>;

#[derive(Debug)]
pub struct Group {
    pub kind: Kind,
    /// Committed offsets by (topic, partition).
    pub offsets: BTreeMap<(String, i32), OffsetValue>,
    /// Since when the group has had no members (as seen by this coordinator).
    pub empty_since: Option<Instant>,
    /// Offset commits appended so far, and per partition the last one
    /// applied: a commit is applied only if no later one was already.
    pub commits_appended: u64,
    commits_applied: HashMap<(String, i32), u64>,
    /// Offsets committed in transactions still open, by producer id, with
    /// their place among the group's commits: they become the group's
    /// offsets when the commit marker is written, unless a plain commit
    /// came after them (Kafka's rule: the later one in the log wins).
    pub pending_txn: HashMap<i64, PendingOffsets>,
}

impl Group {
    fn new(kind: Kind) -> Group {
        Group {
            kind,
            offsets: BTreeMap::new(),
            empty_since: None,
            commits_appended: 0,
            commits_applied: HashMap::new(),
            pending_txn: HashMap::new(),
        }
    }

    /// A plain commit appended as number `sequence` overrides the offsets
    /// of open transactions appended before it.
    fn supersede_pending(&mut self, key: &(String, i32), sequence: u64) {
        for offsets in self.pending_txn.values_mut() {
            if offsets.get(key).is_some_and(|(_, appended)| *appended < sequence) {
                offsets.remove(key);
            }
        }
    }

    /// Whether an open transaction holds an offset for the partition
    /// (OffsetFetch with `require_stable` then answers UNSTABLE_OFFSET_COMMIT).
    pub fn has_pending(&self, key: &(String, i32)) -> bool {
        self.pending_txn.values().any(|offsets| offsets.contains_key(key))
    }

    /// A commit appended as number `sequence` is durable: it becomes the
    /// partition's committed offset unless a later commit already did.
    pub fn commit_durable(&mut self, key: (String, i32), value: OffsetValue, sequence: u64) {
        self.supersede_pending(&key, sequence);
        let applied = self.commits_applied.entry(key.clone()).or_default();
        if *applied < sequence {
            *applied = sequence;
            self.offsets.insert(key, value);
        }
    }

    /// The group's record, if it changed since it was last written, and the
    /// classic generation whose assignment waits for it.
    pub fn dirty_record(&mut self, id: &str) -> Option<(Entry, Option<i32>)> {
        match &mut self.kind {
            Kind::Classic(classic) if classic.dirty => {
                classic.dirty = false;
                let key = records::encode_key(&Key::Group { group: id.to_owned() });
                Some(((key, Some(records::encode_group(&classic.value(now_ms())))), classic.persisting()))
            }
            Kind::Consumer(consumer) if consumer.dirty => {
                consumer.dirty = false;
                let key = records::encode_key(&Key::ConsumerGroup { group: id.to_owned() });
                Some(((key, Some(records::encode_consumer_group(&consumer.value()))), None))
            }
            _ => None,
        }
    }

    /// The log took (or refused) the group's record.
    pub fn written(&mut self, persisting: Option<i32>, result: Result<(), ResponseError>) {
        match &mut self.kind {
            Kind::Classic(classic) => {
                if let Some(generation) = persisting {
                    classic.persisted(generation, result, Instant::now());
                }
                if result.is_err() {
                    classic.dirty = true; // written again at the next tick
                }
            }
            Kind::Consumer(consumer) => {
                if result.is_err() {
                    consumer.dirty = true;
                }
            }
        }
    }

    /// Kafka's state name.
    pub fn state(&self) -> &'static str {
        match &self.kind {
            Kind::Classic(group) => group.state.name(),
            Kind::Consumer(group) => group.state(),
        }
    }

    /// No members: offsets may be reset or deleted, the group deleted.
    pub fn is_empty(&self) -> bool {
        match &self.kind {
            Kind::Classic(group) => group.is_empty(),
            Kind::Consumer(group) => group.members.is_empty(),
        }
    }
}

/// Records appended to `__consumer_offsets`, on their way to being durable.
#[derive(Debug)]
pub struct Appended {
    broker: Arc<Broker>,
    partition: i32,
    appended: Option<crate::api::InternalAppend>,
}

impl Appended {
    /// Waits until the records are durable, with the error a group client
    /// expects when they could not be written.
    pub async fn durable(self) -> Result<(), ResponseError> {
        self.durable_or(|error| error).await
    }

    /// `durable`, with a producer's refusal (a transactional write from a
    /// fenced epoch) mapped by `fenced`.
    pub async fn durable_or(self, fenced: impl Fn(ResponseError) -> ResponseError) -> Result<(), ResponseError> {
        let Some(appended) = self.appended else { return Err(ResponseError::UnknownServerError) };
        match crate::api::finish_internal(&self.broker, appended).await {
            None => Ok(()),
            Some(error @ (ResponseError::InvalidProducerEpoch | ResponseError::InvalidTxnState)) => Err(fenced(error)),
            // Find the coordinator again and retry.
            Some(ResponseError::NotLeaderOrFollower | ResponseError::UnknownTopicOrPartition) => {
                Err(ResponseError::NotCoordinator)
            }
            Some(error) => {
                tracing::warn!(partition = self.partition, "writing to {OFFSETS_TOPIC} failed: {error:?}");
                Err(ResponseError::CoordinatorNotAvailable)
            }
        }
    }
}

/// The groups of one partition of `__consumer_offsets` this broker leads.
#[derive(Debug)]
struct Shard {
    leader_epoch: LeaderEpoch,
    loaded: bool,
    groups: HashMap<String, Group>,
    /// Transaction markers made durable while the shard loads (producer,
    /// commit): applied after the replay, which may have read the log
    /// before them.
    ended_while_loading: Vec<(i64, bool)>,
}

#[derive(Debug)]
pub struct Coordinator {
    pub settings: Settings,
    shards: Mutex<HashMap<i32, Shard>>,
}

/// The groups of the partition a request's group lives in, locked.
#[derive(Debug)]
pub struct Locked<'a> {
    guard: MutexGuard<'a, HashMap<i32, Shard>>,
    pub partition: i32,
}

impl Locked<'_> {
    pub fn groups(&mut self) -> &mut HashMap<String, Group> {
        &mut self.guard.get_mut(&self.partition).expect("checked when locked").groups
    }

    /// The group, made (classic, empty) if it does not exist.
    pub fn group_or_new(&mut self, id: &str, settings: &Settings) -> &mut Group {
        self.groups()
            .entry(id.to_owned())
            .or_insert_with(|| Group::new(Kind::Classic(ClassicGroup::new(id, settings.initial_delay))))
    }
}

impl Coordinator {
    pub fn new(settings: Settings) -> Coordinator {
        Coordinator { settings, shards: Mutex::default() }
    }

    fn shards(&self) -> MutexGuard<'_, HashMap<i32, Shard>> {
        self.shards.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The partition of `__consumer_offsets` that holds `group`, if the topic exists.
    pub fn partition_of(image: &Image, group: &str) -> Option<i32> {
        let topic = image.topics.get(OFFSETS_TOPIC)?;
        Some(partition_for(group, topic.partitions.len()))
    }

    /// Locks the groups of `group`'s partition, with Kafka's error when this
    /// broker is not (or not yet) their coordinator.
    pub fn lock(&self, broker: &Broker, group: &str) -> Result<Locked<'_>, ResponseError> {
        if group.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        let image = broker.image();
        let partition = Self::partition_of(&image, group).ok_or(ResponseError::CoordinatorNotAvailable)?;
        let topic = &image.topics[OFFSETS_TOPIC];
        let (_, leader_epoch) = broker.led(topic, partition).ok_or(ResponseError::NotCoordinator)?;
        let guard = self.shards();
        match guard.get(&partition) {
            Some(shard) if shard.leader_epoch == leader_epoch && shard.loaded => Ok(Locked { guard, partition }),
            // Not loaded yet at this leader epoch (`follow` is about to start or is loading).
            _ => Err(ResponseError::CoordinatorLoadInProgress),
        }
    }

    /// Every loaded group this broker coordinates, as (id, state, protocol type, is consumer protocol).
    pub fn list(&self) -> Vec<(String, &'static str, String, bool)> {
        let shards = self.shards();
        let mut listed = Vec::new();
        for shard in shards.values().filter(|shard| shard.loaded) {
            for (id, group) in &shard.groups {
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

    /// Appends records (key, value or tombstone) to partition `partition` of
    /// `__consumer_offsets` now: called under the groups' lock, so the log
    /// holds changes in the order they were made. `Appended::durable` waits
    /// for the WAL quorum.
    pub fn append(broker: &Arc<Broker>, partition: i32, records: Vec<Entry>) -> Appended {
        Self::append_as(broker, partition, records, None)
    }

    /// `append`, as producer (id, epoch)'s transaction when given, with the
    /// token of its verification at the partition: offsets committed in a
    /// transaction (TxnOffsetCommit).
    pub fn append_as(
        broker: &Arc<Broker>,
        partition: i32,
        records: Vec<Entry>,
        producer: Option<(i64, i16, u64)>,
    ) -> Appended {
        let batch = crate::batch::keyed_batch(records, producer.map(|(id, epoch, _)| (id, epoch)), now_ms());
        let token = producer.map(|(_, _, token)| token);
        let appended = crate::api::append_internal_as(broker, OFFSETS_TOPIC, partition, batch, token);
        Appended { broker: broker.clone(), partition, appended: Some(appended) }
    }

    /// Writes every group whose record is out of date; a classic
    /// rebalance's assignment is handed to the members once its record is
    /// durable.
    pub fn persist_dirty(broker: &Arc<Broker>) {
        let mut shards = broker.groups.shards();
        persist_dirty_in(broker, &mut shards);
    }

    /// Applies the records of a partition of `__consumer_offsets`, in
    /// offset order, to `groups`.
    fn replay(&self, groups: &mut HashMap<String, Group>, key: &[u8], value: Option<&[u8]>, now: Instant) {
        let key = match records::decode_key(key) {
            Ok(key) => key,
            Err(error) => {
                tracing::warn!("skipping a record of {OFFSETS_TOPIC} with an unreadable key: {error}");
                return;
            }
        };
        let id = key.group().to_owned();
        match (key, value) {
            (Key::Offset { topic, partition, .. }, Some(value)) => match records::decode_offset(value) {
                Ok(offset) => {
                    let group = groups.entry(id.clone()).or_insert_with(|| {
                        Group::new(Kind::Classic(ClassicGroup::new(&id, self.settings.initial_delay)))
                    });
                    // Later in the log than any open transaction's offset for it.
                    group.supersede_pending(&(topic.clone(), partition), u64::MAX);
                    group.offsets.insert((topic, partition), offset);
                }
                Err(error) => tracing::warn!(group = %id, "skipping an unreadable offset record: {error}"),
            },
            (Key::Offset { topic, partition, .. }, None) => {
                if let Some(group) = groups.get_mut(&id) {
                    group.offsets.remove(&(topic, partition));
                }
            }
            (Key::Group { .. }, Some(value)) => match records::decode_group(value) {
                Ok(value) => {
                    let restored = ClassicGroup::restore(&id, &value, self.settings.initial_delay, now);
                    let placeholder = || Group::new(Kind::Classic(ClassicGroup::new(&id, Duration::ZERO)));
                    groups.entry(id.clone()).or_insert_with(placeholder).kind = Kind::Classic(restored);
                }
                Err(error) => tracing::warn!(group = %id, "skipping an unreadable group record: {error}"),
            },
            (Key::ConsumerGroup { .. }, Some(value)) => match records::decode_consumer_group(value) {
                Ok(value) => {
                    let timeout = self.settings.consumer_session_timeout;
                    let restored = ConsumerGroup::restore(&id, &value, timeout, now);
                    let placeholder = || Group::new(Kind::Classic(ClassicGroup::new(&id, Duration::ZERO)));
                    groups.entry(id.clone()).or_insert_with(placeholder).kind = Kind::Consumer(restored);
                }
                Err(error) => tracing::warn!(group = %id, "skipping an unreadable consumer group record: {error}"),
            },
            (Key::Group { .. } | Key::ConsumerGroup { .. }, None) => {
                if let Some(group) = groups.get_mut(&id) {
                    group.kind = Kind::Classic(ClassicGroup::new(&id, self.settings.initial_delay));
                    if group.offsets.is_empty() {
                        groups.remove(&id);
                    }
                }
            }
        }
    }
}

/// An offset committed in producer `producer`'s transaction, replayed.
fn replay_txn_offset(
    groups: &mut HashMap<String, Group>,
    producer: i64,
    key: &[u8],
    value: &[u8],
    settings: &Settings,
) {
    let (Ok(Key::Offset { group, topic, partition }), Ok(offset)) =
        (records::decode_key(key), records::decode_offset(value))
    else {
        tracing::warn!("skipping an unreadable transactional offset record of {OFFSETS_TOPIC}");
        return;
    };
    let entry = groups
        .entry(group.clone())
        .or_insert_with(|| Group::new(Kind::Classic(ClassicGroup::new(&group, settings.initial_delay))));
    entry.pending_txn.entry(producer).or_default().insert((topic, partition), (offset, 0));
}

/// A transaction's marker in a partition of `__consumer_offsets`: its
/// offsets become the groups' committed offsets, or are dropped.
fn end_txn_offsets(groups: &mut HashMap<String, Group>, producer: i64, commit: bool) {
    for group in groups.values_mut() {
        if let Some(offsets) = group.pending_txn.remove(&producer) {
            if commit {
                for (key, (value, sequence)) in offsets {
                    let applied = group.commits_applied.entry(key.clone()).or_default();
                    *applied = (*applied).max(sequence);
                    group.offsets.insert(key, value);
                }
            }
        }
    }
}

impl Coordinator {
    /// Offsets committed in producer `producer`'s transaction are durable
    /// in `partition`: they wait there for the transaction's end.
    pub fn txn_offsets_written(
        &self,
        partition: i32,
        producer: i64,
        group: &str,
        offsets: Vec<((String, i32), OffsetValue)>,
        sequence: u64,
    ) {
        let mut shards = self.shards();
        let Some(shard) = shards.get_mut(&partition).filter(|shard| shard.loaded) else { return };
        let initial_delay = self.settings.initial_delay;
        let entry = shard
            .groups
            .entry(group.to_owned())
            .or_insert_with(|| Group::new(Kind::Classic(ClassicGroup::new(group, initial_delay))));
        let pending = entry.pending_txn.entry(producer).or_default();
        pending.extend(offsets.into_iter().map(|(key, value)| (key, (value, sequence))));
    }

    /// A transaction's marker is durable in `partition` of `__consumer_offsets`.
    pub fn txn_ended(&self, partition: i32, producer: i64, commit: bool) {
        let mut shards = self.shards();
        match shards.get_mut(&partition) {
            Some(shard) if shard.loaded => end_txn_offsets(&mut shard.groups, producer, commit),
            Some(shard) => shard.ended_while_loading.push((producer, commit)),
            // Not followed yet: its load starts later and reads the marker.
            None => {}
        }
    }
}

/// How often the lag of the groups this broker coordinates is measured.
const LAG_INTERVAL: Duration = Duration::from_secs(10);

/// Every `LAG_INTERVAL`, sets `keel_broker_group_lag` for each committed
/// offset of the groups this broker coordinates: the partition's end (asked
/// of its leader) minus the committed offset. Series of groups no longer
/// coordinated here disappear.
pub async fn report_lag(broker: Arc<Broker>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(LAG_INTERVAL) => {}
        }
        let committed: Vec<(String, String, i32, i64)> = {
            let shards = broker.groups.shards();
            shards
                .values()
                .filter(|shard| shard.loaded)
                .flat_map(|shard| {
                    shard.groups.iter().flat_map(|(id, group)| {
                        group
                            .offsets
                            .iter()
                            .map(move |((topic, p), value)| (id.clone(), topic.clone(), *p, value.offset))
                    })
                })
                .collect()
        };
        let mut partitions: Vec<(String, i32)> = committed.iter().map(|(_, t, p, _)| (t.clone(), *p)).collect();
        partitions.sort();
        partitions.dedup();
        let ends = crate::peers::end_offsets(&broker, &partitions).await;
        broker.metrics.group_lag.reset();
        for (group, topic, partition, offset) in committed {
            if let Some(end) = ends.get(&(topic.clone(), partition)) {
                let lag = (end - offset).max(0);
                broker.metrics.group_lag.with_label_values(&[&group, &topic, &partition.to_string()]).set(lag);
            }
        }
    }
}

/// Follows which partitions of `__consumer_offsets` this broker leads,
/// loads their groups, and moves the groups on every `TICK`.
pub async fn run(broker: Arc<Broker>, cancel: CancellationToken) {
    let mut images = broker.images.clone();
    loop {
        follow(&broker);
        tick(&broker);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = images.changed() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

/// Drops the groups of partitions no longer led here (their parked joins
/// and syncs end with NOT_COORDINATOR), and starts loading newly led ones.
fn follow(broker: &Arc<Broker>) {
    let led = broker.led_partitions(OFFSETS_TOPIC);
    let mut shards = broker.groups.shards();
    shards.retain(|partition, shard| {
        let keep = led.get(partition) == Some(&shard.leader_epoch);
        if !keep {
            tracing::info!(partition, "no longer the coordinator of the groups of {OFFSETS_TOPIC} partition");
        }
        keep
    });
    for (partition, leader_epoch) in led {
        if shards.contains_key(&partition) {
            continue;
        }
        shards.insert(
            partition,
            Shard { leader_epoch, loaded: false, groups: HashMap::new(), ended_while_loading: Vec::new() },
        );
        let broker = broker.clone();
        tokio::spawn(async move { load(broker, partition, leader_epoch).await });
    }
}

/// Reads a partition of `__consumer_offsets` from its start to its high
/// watermark and replays it; retried until it succeeds or the partition
/// is no longer led here at that epoch.
async fn load(broker: Arc<Broker>, partition: i32, leader_epoch: LeaderEpoch) {
    let started = Instant::now();
    loop {
        let current = || broker.groups.shards().get(&partition).is_some_and(|s| s.leader_epoch == leader_epoch);
        if !current() {
            return;
        }
        match read_log(&broker, OFFSETS_TOPIC, partition).await {
            Ok(items) => {
                let now = Instant::now();
                let mut groups = HashMap::new();
                let count = items.len();
                for item in &items {
                    match item {
                        Item::Record { key, value, producer: None } => {
                            broker.groups.replay(&mut groups, key, value.as_deref(), now)
                        }
                        Item::Record { key, value: Some(value), producer: Some(producer) } => {
                            replay_txn_offset(&mut groups, *producer, key, value, &broker.groups.settings)
                        }
                        Item::Record { value: None, .. } => {}
                        Item::Marker { producer, commit } => end_txn_offsets(&mut groups, *producer, *commit),
                    }
                }
                let mut shards = broker.groups.shards();
                let Some(shard) = shards.get_mut(&partition).filter(|s| s.leader_epoch == leader_epoch) else {
                    return;
                };
                shard.groups = groups;
                for (producer, commit) in std::mem::take(&mut shard.ended_while_loading) {
                    end_txn_offsets(&mut shard.groups, producer, commit);
                }
                shard.loaded = true;
                broker.metrics.group_loads.inc();
                tracing::info!(
                    partition,
                    records = count,
                    groups = shard.groups.len(),
                    seconds = started.elapsed().as_secs_f64(),
                    "loaded the groups of {OFFSETS_TOPIC} partition"
                );
                return;
            }
            Err(error) => {
                tracing::info!(partition, "cannot load the groups yet: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// What a partition of an internal topic holds, in offset order.
#[derive(Debug)]
pub enum Item {
    /// A record; `producer` is set for a transaction's record (offsets
    /// committed in a transaction).
    Record { key: Bytes, value: Option<Bytes>, producer: Option<i64> },
    /// A transaction's end.
    Marker { producer: i64, commit: bool },
}

/// Every record and transaction marker of a partition of an internal topic
/// (`__consumer_offsets`, `__transaction_state`) this broker leads, from its
/// start to its high watermark.
pub async fn read_log(broker: &Broker, topic_name: &str, partition: i32) -> Result<Vec<Item>, String> {
    let image = broker.image();
    let topic = image.topics.get(topic_name).ok_or("the topic is gone")?;
    let view = broker.read_view(topic, partition, -1).map_err(|error| format!("{error:?}"))?;
    let mut offset = view.log_start;
    let mut items = Vec::new();
    while offset < view.high_watermark {
        let range = crate::partition::range_of(&view.ranges, offset);
        let batches = broker.read_batches(view.stream, range, offset, view.high_watermark, 1 << 20).await?;
        if batches.is_empty() {
            return Err(format!("nothing read at offset {offset}"));
        }
        for batch in batches {
            let header = crate::batch::stored_header(&batch).map_err(|e| e.to_string())?;
            let end = crate::batch::base_offset(&batch) + i64::from(header.last_offset_delta) + 1;
            if header.is_control() {
                if let Some((marker, _)) = crate::batch::marker(&batch) {
                    let commit = marker == crate::batch::Marker::Commit;
                    items.push(Item::Marker { producer: header.producer_id, commit });
                }
                offset = offset.max(end);
                continue;
            }
            let producer = header.is_transactional().then_some(header.producer_id);
            let mut bytes = batch.clone();
            let set = RecordBatchDecoder::decode(&mut bytes).map_err(|e| format!("a batch at {offset}: {e}"))?;
            for record in set.records.into_iter().filter(|r| r.offset >= offset && !r.control) {
                if let Some(key) = record.key {
                    items.push(Item::Record { key, value: record.value, producer });
                }
            }
            offset = offset.max(end);
        }
    }
    Ok(items)
}

/// Appends the record of every group changed since it was last written,
/// under the groups' lock; waits for each in a task of its own.
fn persist_dirty_in(broker: &Arc<Broker>, shards: &mut HashMap<i32, Shard>) {
    for (partition, shard) in shards.iter_mut().filter(|(_, shard)| shard.loaded) {
        for (id, group) in shard.groups.iter_mut() {
            let Some((entry, persisting)) = group.dirty_record(id) else { continue };
            let appended = Coordinator::append(broker, *partition, vec![entry]);
            let (broker, partition, leader_epoch, id) = (broker.clone(), *partition, shard.leader_epoch, id.clone());
            tokio::spawn(async move {
                let result = appended.durable().await;
                let mut shards = broker.groups.shards();
                let Some(shard) = shards.get_mut(&partition).filter(|s| s.leader_epoch == leader_epoch) else {
                    return;
                };
                let Some(group) = shard.groups.get_mut(&id) else { return };
                group.written(persisting, result);
            });
        }
    }
}

/// Moves every loaded group on (sessions, join and sync phases), expires
/// the offsets of groups empty for the retention period, then writes what
/// changed.
fn tick(broker: &Arc<Broker>) {
    let now = Instant::now();
    let retention = broker.groups.settings.offsets_retention;
    let image = broker.image();
    let mut expired = Vec::new();
    let mut shards = broker.groups.shards();
    {
        for (partition, shard) in shards.iter_mut().filter(|(_, shard)| shard.loaded) {
            let mut tombstones = Vec::new();
            shard.groups.retain(|id, group| {
                match &mut group.kind {
                    Kind::Classic(classic) => classic.tick(now),
                    Kind::Consumer(consumer) => {
                        consumer.tick(now);
                    }
                }
                forget_deleted_topics(id, group, &image, &mut tombstones);
                let keep = expire_offsets(id, group, now, retention, &mut tombstones);
                if !keep {
                    tracing::info!(group = %id, "the group was empty for {retention:?} and has no offsets left; deleting it");
                }
                keep
            });
            if !tombstones.is_empty() {
                expired.push((*partition, Coordinator::append(broker, *partition, tombstones)));
            }
        }
    }
    persist_dirty_in(broker, &mut shards);
    drop(shards);
    for (partition, appended) in expired {
        // Forgotten in memory already; should the write fail, a later
        // coordinator replays them and expires them again.
        tokio::spawn(async move {
            if let Err(error) = appended.durable().await {
                tracing::info!(partition, "could not write expired offsets' tombstones yet: {error:?}");
            }
        });
    }
}

/// Drops a group's offsets of topics that no longer exist (Kafka deletes
/// them with the topic), so a topic created again under the same name
/// starts without them.
fn forget_deleted_topics(id: &str, group: &mut Group, image: &Image, tombstones: &mut Vec<Entry>) {
    let gone: Vec<(String, i32)> =
        group.offsets.keys().filter(|(topic, _)| !image.topics.contains_key(topic)).cloned().collect();
    for (topic, partition) in gone {
        group.offsets.remove(&(topic.clone(), partition));
        tombstones.push((records::encode_key(&Key::Offset { group: id.to_owned(), topic, partition }), None));
    }
}

/// Kafka's offset retention (KIP-211): once a group has been empty for
/// `retention`, its offsets committed before then are deleted, and the
/// group with them when none is left. Returns whether the group stays.
fn expire_offsets(id: &str, group: &mut Group, now: Instant, retention: Duration, tombstones: &mut Vec<Entry>) -> bool {
    if !group.is_empty() {
        group.empty_since = None;
        return true;
    }
    let since = *group.empty_since.get_or_insert(now);
    if now.duration_since(since) < retention {
        return true;
    }
    let horizon = now_ms() - retention.as_millis() as i64;
    let old: Vec<(String, i32)> = group
        .offsets
        .iter()
        .filter(|(_, value)| value.commit_timestamp <= horizon)
        .map(|(key, _)| key.clone())
        .collect();
    for (topic, partition) in old {
        group.offsets.remove(&(topic.clone(), partition));
        let key = Key::Offset { group: id.to_owned(), topic, partition };
        tombstones.push((records::encode_key(&key), None));
    }
    if group.offsets.is_empty() {
        tombstones.extend(group_tombstones(id));
        return false;
    }
    true
}

/// Tombstones for a group's own records (either kind), deleting it.
pub fn group_tombstones(id: &str) -> [Entry; 2] {
    [
        (records::encode_key(&Key::Group { group: id.to_owned() }), None),
        (records::encode_key(&Key::ConsumerGroup { group: id.to_owned() }), None),
    ]
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_groups_offsets_expire_after_the_retention_and_then_the_group() {
        let retention = Duration::from_secs(60);
        let now = Instant::now();
        let mut group = Group::new(Kind::Classic(ClassicGroup::new("g", Duration::ZERO)));
        let committed =
            |at: i64| OffsetValue { offset: 5, leader_epoch: -1, metadata: String::new(), commit_timestamp: at };
        group.offsets.insert(("t".into(), 0), committed(now_ms() - 120_000));
        group.offsets.insert(("t".into(), 1), committed(now_ms()));
        let mut tombstones = Vec::new();
        assert!(expire_offsets("g", &mut group, now, retention, &mut tombstones));
        assert!(tombstones.is_empty(), "the group just became empty");
        assert!(expire_offsets("g", &mut group, now + Duration::from_secs(61), retention, &mut tombstones));
        assert_eq!(tombstones.len(), 1, "only the offset committed before the horizon");
        assert_eq!(group.offsets.len(), 1);
        group.offsets.get_mut(&("t".into(), 1)).unwrap().commit_timestamp -= 120_000;
        assert!(!expire_offsets("g", &mut group, now + Duration::from_secs(62), retention, &mut tombstones));
        assert_eq!(tombstones.len(), 4, "the last offset, then the group itself");
        assert_eq!(records::decode_key(&tombstones[2].0), Ok(Key::Group { group: "g".into() }));
    }

    /// Kafka's rule: a transaction's offset applies at its commit marker
    /// unless a plain commit of the partition came after it in the log.
    #[test]
    fn a_plain_commit_after_a_transactional_one_wins_at_the_marker() {
        let mut groups = HashMap::new();
        let value = |offset| OffsetValue { offset, leader_epoch: -1, metadata: String::new(), commit_timestamp: 0 };
        let mut group = Group::new(Kind::Classic(ClassicGroup::new("g", Duration::ZERO)));
        group.pending_txn.entry(7).or_default().insert(("t".into(), 0), (value(10), 1));
        group.pending_txn.entry(7).or_default().insert(("t".into(), 1), (value(10), 1));
        group.commit_durable(("t".into(), 0), value(20), 2);
        groups.insert("g".to_owned(), group);
        end_txn_offsets(&mut groups, 7, true);
        let group = &groups["g"];
        assert_eq!(group.offsets[&("t".into(), 0)].offset, 20, "the later plain commit stays");
        assert_eq!(group.offsets[&("t".into(), 1)].offset, 10, "the transaction's offset applies");
        let mut group = Group::new(Kind::Classic(ClassicGroup::new("g", Duration::ZERO)));
        group.commits_appended = 3;
        group.pending_txn.entry(7).or_default().insert(("t".into(), 0), (value(30), 3));
        groups.insert("g".to_owned(), group);
        end_txn_offsets(&mut groups, 7, true);
        groups.get_mut("g").unwrap().commit_durable(("t".into(), 0), value(5), 2);
        assert_eq!(
            groups["g"].offsets[&("t".into(), 0)].offset,
            30,
            "an earlier plain commit landing late does not win"
        );
    }

    #[test]
    fn offsets_of_deleted_topics_are_forgotten() {
        let mut group = Group::new(Kind::Classic(ClassicGroup::new("g", Duration::ZERO)));
        let committed = OffsetValue { offset: 1, leader_epoch: -1, metadata: String::new(), commit_timestamp: 0 };
        group.offsets.insert(("gone".into(), 0), committed.clone());
        group.offsets.insert(("kept".into(), 0), committed);
        let mut image = Image::default();
        let topic = keel_controller_client::Topic {
            id: keel_controller_client::TopicId(uuid::Uuid::nil()),
            name: "kept".into(),
            configs: BTreeMap::new(),
            owner: String::new(),
            description: String::new(),
            partitions: Vec::new(),
        };
        image.topics.insert("kept".into(), topic);
        let mut tombstones = Vec::new();
        forget_deleted_topics("g", &mut group, &image, &mut tombstones);
        assert_eq!(group.offsets.keys().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), ["kept"]);
        assert_eq!(tombstones.len(), 1);
    }

    /// Kafka's own assignment of groups to partitions (Java's hashCode).
    #[test]
    fn groups_map_to_partitions_as_in_kafka() {
        // "test-group".hashCode() == 627_841_412 in Java; "é" is one UTF-16 unit, 233.
        assert_eq!(partition_for("test-group", 50), 627_841_412 % 50);
        assert_eq!(partition_for("é", 50), 233 % 50);
        assert_eq!(partition_for("", 50), 0);
        assert!((0..12).contains(&partition_for("billing", 12)));
    }
}

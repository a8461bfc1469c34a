//! Consumer groups and their committed offsets (DESIGN §6), without I/O.
//!
//! A group belongs to partition `abs(hashCode(group)) % N` of the internal
//! compacted topic `__consumer_offsets` (Kafka's rule). `classic.rs` and
//! `consumer.rs` are the two protocols' state machines; `records.rs` is the
//! topic's record layout; this file holds what a group is beside its
//! protocol (committed offsets, offsets waiting for a transaction's end,
//! retention) and how a partition's records replay into groups.

pub mod classic;
pub mod consumer;
pub mod records;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_controller_client::{Image, ProducerId};

use crate::internal_topic::Item;
use classic::ClassicGroup;
use consumer::ConsumerGroup;
use records::{Key, OffsetValue};

/// The internal topic that holds committed offsets and group state.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// A record to append to `__consumer_offsets`: key, and value or `None` (a tombstone).
pub type Entry = (Bytes, Option<Bytes>);

/// Topics only the broker itself writes.
pub fn is_internal(topic: &str) -> bool {
    keel_controller_client::topic_rules::is_internal_topic(topic)
}

/// Kafka's `offset.metadata.max.bytes`.
pub const METADATA_BYTES_MAX: usize = 4096;

/// Kafka's partition of an internal topic for a group or transactional id:
/// the absolute value of Java's `String.hashCode` modulo the partition count.
pub fn partition_for(key: &str, partitions: usize) -> i32 {
    let hash = key.encode_utf16().fold(0i32, |hash, unit| hash.wrapping_mul(31).wrapping_add(i32::from(unit)));
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
    pub pending_txn: HashMap<ProducerId, PendingOffsets>,
}

impl Group {
    pub fn new(kind: Kind) -> Group {
        Group {
            kind,
            offsets: BTreeMap::new(),
            empty_since: None,
            commits_appended: 0,
            commits_applied: HashMap::new(),
            pending_txn: HashMap::new(),
        }
    }

    /// A new, empty classic group (the kind every group starts as).
    pub fn classic(id: &str, settings: &Settings) -> Group {
        Group::new(Kind::Classic(ClassicGroup::new(id, settings.initial_delay)))
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

    /// Offsets committed in producer `producer`'s transaction as number
    /// `sequence` are durable: they wait for the transaction's end.
    pub fn txn_offsets_written(
        &mut self,
        producer: ProducerId,
        offsets: Vec<((String, i32), OffsetValue)>,
        sequence: u64,
    ) {
        let pending = self.pending_txn.entry(producer).or_default();
        pending.extend(offsets.into_iter().map(|(key, value)| (key, (value, sequence))));
    }

    /// The group's record, if it changed since it was last written, and the
    /// classic generation whose assignment waits for it.
    pub fn dirty_record(&mut self, id: &str, now_ms: i64) -> Option<(Entry, Option<i32>)> {
        match &mut self.kind {
            Kind::Classic(classic) if classic.dirty => {
                classic.dirty = false;
                let key = records::encode_key(&Key::Group { group: id.to_owned() });
                Some(((key, Some(records::encode_group(&classic.value(now_ms)))), classic.persisting()))
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
    pub fn written(
        &mut self,
        persisting: Option<i32>,
        result: Result<(), kafka_protocol::error::ResponseError>,
        now: Instant,
    ) {
        match &mut self.kind {
            Kind::Classic(classic) => {
                if let Some(generation) = persisting {
                    classic.persisted(generation, result, now);
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

    /// Tombstones for every committed offset and for the group's own records.
    pub fn tombstones(&self, id: &str) -> Vec<Entry> {
        let mut tombstones: Vec<Entry> = self
            .offsets
            .keys()
            .map(|(topic, partition)| {
                let key = Key::Offset { group: id.to_owned(), topic: topic.clone(), partition: *partition };
                (records::encode_key(&key), None)
            })
            .collect();
        tombstones.extend(group_tombstones(id));
        tombstones
    }
}

/// The groups of one partition of `__consumer_offsets`, replayed from its
/// records in offset order (the partition is compacted by key, so the
/// latest value of each key is the state).
pub fn replay(items: &[Item], settings: &Settings, now: Instant) -> HashMap<String, Group> {
    let mut groups = HashMap::new();
    for item in items {
        match item {
            Item::Record { key, value, producer: None } => {
                replay_record(&mut groups, key, value.as_deref(), settings, now)
            }
            Item::Record { key, value: Some(value), producer: Some(producer) } => {
                replay_txn_offset(&mut groups, *producer, key, value, settings)
            }
            Item::Record { value: None, .. } => {}
            Item::Marker { producer, commit } => end_txn_offsets(&mut groups, *producer, *commit),
        }
    }
    groups
}

/// Applies one record of `__consumer_offsets` to `groups`.
fn replay_record(
    groups: &mut HashMap<String, Group>,
    key: &[u8],
    value: Option<&[u8]>,
    settings: &Settings,
    now: Instant,
) {
    let key = match records::decode_key(key) {
        Ok(key) => key,
        Err(error) => {
            tracing::warn!("skipping a record of {OFFSETS_TOPIC} with an unreadable key: {error}");
            return;
        }
    };
    let id = key.group().to_owned();
    let placeholder = || Group::new(Kind::Classic(ClassicGroup::new(&id, Duration::ZERO)));
    match (key, value) {
        (Key::Offset { topic, partition, .. }, Some(value)) => match records::decode_offset(value) {
            Ok(offset) => {
                let group = groups.entry(id.clone()).or_insert_with(|| Group::classic(&id, settings));
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
                let restored = ClassicGroup::restore(&id, &value, settings.initial_delay, now);
                groups.entry(id.clone()).or_insert_with(placeholder).kind = Kind::Classic(restored);
            }
            Err(error) => tracing::warn!(group = %id, "skipping an unreadable group record: {error}"),
        },
        (Key::ConsumerGroup { .. }, Some(value)) => match records::decode_consumer_group(value) {
            Ok(value) => {
                let restored = ConsumerGroup::restore(&id, &value, settings.consumer_session_timeout, now);
                groups.entry(id.clone()).or_insert_with(placeholder).kind = Kind::Consumer(restored);
            }
            Err(error) => tracing::warn!(group = %id, "skipping an unreadable consumer group record: {error}"),
        },
        (Key::Group { .. } | Key::ConsumerGroup { .. }, None) => {
            if let Some(group) = groups.get_mut(&id) {
                group.kind = Kind::Classic(ClassicGroup::new(&id, settings.initial_delay));
                if group.offsets.is_empty() {
                    groups.remove(&id);
                }
            }
        }
    }
}

/// An offset committed in producer `producer`'s transaction, replayed.
fn replay_txn_offset(
    groups: &mut HashMap<String, Group>,
    producer: ProducerId,
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
    let entry = groups.entry(group.clone()).or_insert_with(|| Group::classic(&group, settings));
    entry.pending_txn.entry(producer).or_default().insert((topic, partition), (offset, 0));
}

/// A transaction's marker in a partition of `__consumer_offsets`: its
/// offsets become the groups' committed offsets, or are dropped.
pub fn end_txn_offsets(groups: &mut HashMap<String, Group>, producer: ProducerId, commit: bool) {
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

/// Drops a group's offsets of topics that no longer exist (Kafka deletes
/// them with the topic), so a topic created again under the same name
/// starts without them.
pub fn forget_deleted_topics(id: &str, group: &mut Group, image: &Image, tombstones: &mut Vec<Entry>) {
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
pub fn expire_offsets(
    id: &str,
    group: &mut Group,
    now: Instant,
    now_ms: i64,
    retention: Duration,
    tombstones: &mut Vec<Entry>,
) -> bool {
    if !group.is_empty() {
        group.empty_since = None;
        return true;
    }
    let since = *group.empty_since.get_or_insert(now);
    if now.duration_since(since) < retention {
        return true;
    }
    let horizon = now_ms - retention.as_millis() as i64;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(offset: i64, at: i64) -> OffsetValue {
        OffsetValue { offset, leader_epoch: -1, metadata: String::new(), commit_timestamp: at }
    }

    #[test]
    fn an_empty_groups_offsets_expire_after_the_retention_and_then_the_group() {
        let retention = Duration::from_secs(60);
        let now = Instant::now();
        let now_ms = 1_000_000;
        let mut group = Group::new(Kind::Classic(ClassicGroup::new("g", Duration::ZERO)));
        group.offsets.insert(("t".into(), 0), committed(5, now_ms - 120_000));
        group.offsets.insert(("t".into(), 1), committed(5, now_ms));
        let mut tombstones = Vec::new();
        assert!(expire_offsets("g", &mut group, now, now_ms, retention, &mut tombstones));
        assert!(tombstones.is_empty(), "the group just became empty");
        let later = now + Duration::from_secs(61);
        assert!(expire_offsets("g", &mut group, later, now_ms, retention, &mut tombstones));
        assert_eq!(tombstones.len(), 1, "only the offset committed before the horizon");
        assert_eq!(group.offsets.len(), 1);
        group.offsets.get_mut(&("t".into(), 1)).unwrap().commit_timestamp -= 120_000;
        let later = now + Duration::from_secs(62);
        assert!(!expire_offsets("g", &mut group, later, now_ms, retention, &mut tombstones));
        assert_eq!(tombstones.len(), 4, "the last offset, then the group itself");
        assert_eq!(records::decode_key(&tombstones[2].0), Ok(Key::Group { group: "g".into() }));
    }

    /// Kafka's rule: a transaction's offset applies at its commit marker
    /// unless a plain commit of the partition came after it in the log.
    #[test]
    fn a_plain_commit_after_a_transactional_one_wins_at_the_marker() {
        let mut groups = HashMap::new();
        let value = |offset| committed(offset, 0);
        let mut group = Group::new(Kind::Classic(ClassicGroup::new("g", Duration::ZERO)));
        group.txn_offsets_written(ProducerId(7), vec![(("t".into(), 0), value(10)), (("t".into(), 1), value(10))], 1);
        group.commit_durable(("t".into(), 0), value(20), 2);
        groups.insert("g".to_owned(), group);
        end_txn_offsets(&mut groups, ProducerId(7), true);
        let group = &groups["g"];
        assert_eq!(group.offsets[&("t".into(), 0)].offset, 20, "the later plain commit stays");
        assert_eq!(group.offsets[&("t".into(), 1)].offset, 10, "the transaction's offset applies");
        let mut group = Group::new(Kind::Classic(ClassicGroup::new("g", Duration::ZERO)));
        group.commits_appended = 3;
        group.txn_offsets_written(ProducerId(7), vec![(("t".into(), 0), value(30))], 3);
        groups.insert("g".to_owned(), group);
        end_txn_offsets(&mut groups, ProducerId(7), true);
        groups.get_mut("g").unwrap().commit_durable(("t".into(), 0), value(5), 2);
        assert_eq!(
            groups["g"].offsets[&("t".into(), 0)].offset,
            30,
            "an earlier plain commit landing late does not win"
        );
    }

    #[test]
    fn an_aborted_transactions_offsets_are_dropped() {
        let mut groups = HashMap::new();
        let mut group = Group::new(Kind::Classic(ClassicGroup::new("g", Duration::ZERO)));
        group.txn_offsets_written(ProducerId(7), vec![(("t".into(), 0), committed(10, 0))], 1);
        assert!(group.has_pending(&("t".into(), 0)));
        groups.insert("g".to_owned(), group);
        end_txn_offsets(&mut groups, ProducerId(7), false);
        assert!(groups["g"].offsets.is_empty());
        assert!(!groups["g"].has_pending(&("t".into(), 0)));
    }

    #[test]
    fn offsets_of_deleted_topics_are_forgotten() {
        let mut group = Group::new(Kind::Classic(ClassicGroup::new("g", Duration::ZERO)));
        group.offsets.insert(("gone".into(), 0), committed(1, 0));
        group.offsets.insert(("kept".into(), 0), committed(1, 0));
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

    /// Replaying a partition rebuilds exactly what its records say: the
    /// latest offset per key, tombstones delete, a committed transaction's
    /// offsets apply and an aborted one's do not.
    #[test]
    fn a_partition_replays_into_its_groups() {
        let settings = Settings {
            initial_delay: Duration::ZERO,
            consumer_session_timeout: Duration::from_secs(45),
            consumer_heartbeat_interval: Duration::from_secs(5),
            offsets_partitions: 1,
            offsets_retention: Duration::from_secs(60),
        };
        let offset_key = |group: &str, partition| {
            records::encode_key(&Key::Offset { group: group.into(), topic: "t".into(), partition })
        };
        let offset = |value| Some(records::encode_offset(&committed(value, 0)));
        let record = |key, value, producer| Item::Record { key, value, producer };
        let items = vec![
            record(offset_key("a", 0), offset(1), None),
            record(offset_key("a", 0), offset(2), None),
            record(offset_key("a", 1), offset(3), None),
            record(offset_key("a", 1), None, None),
            record(offset_key("b", 0), offset(9), Some(ProducerId(7))),
            record(offset_key("c", 0), offset(9), Some(ProducerId(8))),
            Item::Marker { producer: ProducerId(7), commit: true },
            Item::Marker { producer: ProducerId(8), commit: false },
        ];
        let groups = replay(&items, &settings, Instant::now());
        let offsets = |id: &str| groups[id].offsets.iter().map(|((_, p), v)| (*p, v.offset)).collect::<Vec<_>>();
        assert_eq!(offsets("a"), [(0, 2)]);
        assert_eq!(offsets("b"), [(0, 9)], "the committed transaction's offset");
        assert!(offsets("c").is_empty(), "the aborted transaction's offset");
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

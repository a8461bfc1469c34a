//! The records of `__consumer_offsets`, in Kafka's own layout so that the
//! topic reads the same as a Kafka cluster's:
//!
//! ```text
//! key   = version: i16, then
//!         version 0 or 1 (offset commit): group: string, topic: string, partition: i32
//!         version 2      (group metadata): group: string
//! value = null (a tombstone: the offset or the group is deleted), or
//!         offset commit v3: version: i16 = 3, offset: i64, leader_epoch: i32,
//!                           metadata: string, commit_timestamp: i64
//!         group metadata v3: version: i16 = 3, protocol_type: string, generation: i32,
//!                           protocol: nullable string, leader: nullable string,
//!                           current_state_timestamp: i64,
//!                           members: i32 count, then per member: member_id: string,
//!                           group_instance_id: nullable string, client_id: string,
//!                           client_host: string, rebalance_timeout: i32,
//!                           session_timeout: i32, subscription: bytes, assignment: bytes
//! string = i16 length (-1: null) + UTF-8; bytes = i32 length + bytes
//! ```
//!
//! Keel's own record, for KIP-848 consumer groups (whose state Kafka spreads
//! over several record types):
//!
//! ```text
//! key   = version: i16 = 1000, group: string
//! value = version: i16 = 0, group_epoch: i32, target_epoch: i32,
//!         members: i32 count, then per member: member_id: string,
//!           instance_id: nullable string, client_id: string, client_host: string,
//!           subscribed: i32 count + strings, regex: nullable string,
//!           epoch: i32, previous_epoch: i32,
//!           rebalance_timeout: i32, assignor: nullable string,
//!           assigned: partitions, revoking: partitions
//!         target: i32 count, then per member: member_id: string, partitions
//!         target_topics: i32 count, then per topic: name: string, id: 16 bytes, partitions: i32
//! partitions = i32 count, then per partition: topic id: 16 bytes, index: i32
//! ```
//!
//! The topic is compacted by key, so the latest value of each key is the
//! state; the coordinator replays it in offset order when it takes a
//! partition over.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// What a key names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    Offset { group: String, topic: String, partition: i32 },
    Group { group: String },
    ConsumerGroup { group: String },
}

/// The key version of Keel's consumer-group record.
const CONSUMER_GROUP_KEY: i16 = 1000;

impl Key {
    pub fn group(&self) -> &str {
        match self {
            Key::Offset { group, .. } | Key::Group { group } | Key::ConsumerGroup { group } => group,
        }
    }
}

/// A partition: topic id and index.
pub type PartitionId = (uuid::Uuid, i32);

/// A KIP-848 consumer group: epochs, members with their assignment, and
/// the target assignment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsumerGroupValue {
    pub epoch: i32,
    pub target_epoch: i32,
    pub members: Vec<ConsumerMemberValue>,
    pub target: Vec<(String, Vec<PartitionId>)>,
    pub target_topics: Vec<(String, uuid::Uuid, i32)>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsumerMemberValue {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed: Vec<String>,
    pub regex: Option<String>,
    pub epoch: i32,
    pub previous_epoch: i32,
    pub rebalance_timeout_ms: i32,
    pub assignor: Option<String>,
    pub assigned: Vec<PartitionId>,
    pub revoking: Vec<PartitionId>,
}

/// A committed offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

/// A classic group as of its last completed rebalance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub current_state_timestamp: i64,
    pub members: Vec<MemberValue>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// Why a record of the topic could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("the record ends early")]
    Short,
    #[error("a string is not UTF-8")]
    NotUtf8,
    #[error("unknown key version {0}")]
    KeyVersion(i16),
    #[error("unknown value version {0}")]
    ValueVersion(i16),
    #[error("negative length {0}")]
    Length(i32),
}

pub fn encode_key(key: &Key) -> Bytes {
    let mut out = BytesMut::new();
    match key {
        Key::Offset { group, topic, partition } => {
            out.put_i16(1);
            put_string(&mut out, group);
            put_string(&mut out, topic);
            out.put_i32(*partition);
        }
        Key::Group { group } => {
            out.put_i16(2);
            put_string(&mut out, group);
        }
        Key::ConsumerGroup { group } => {
            out.put_i16(CONSUMER_GROUP_KEY);
            put_string(&mut out, group);
        }
    }
    out.freeze()
}

pub fn decode_key(mut bytes: &[u8]) -> Result<Key, RecordError> {
    let buf = &mut bytes;
    match get_i16(buf)? {
        0 | 1 => Ok(Key::Offset { group: get_string(buf)?, topic: get_string(buf)?, partition: get_i32(buf)? }),
        2 => Ok(Key::Group { group: get_string(buf)? }),
        CONSUMER_GROUP_KEY => Ok(Key::ConsumerGroup { group: get_string(buf)? }),
        version => Err(RecordError::KeyVersion(version)),
    }
}

pub fn encode_offset(value: &OffsetValue) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(3);
    out.put_i64(value.offset);
    out.put_i32(value.leader_epoch);
    put_string(&mut out, &value.metadata);
    out.put_i64(value.commit_timestamp);
    out.freeze()
}

/// Reads an offset commit value of any version Kafka wrote (0 to 3).
pub fn decode_offset(mut bytes: &[u8]) -> Result<OffsetValue, RecordError> {
    let buf = &mut bytes;
    let version = get_i16(buf)?;
    if !(0..=3).contains(&version) {
        return Err(RecordError::ValueVersion(version));
    }
    let offset = get_i64(buf)?;
    let leader_epoch = if version >= 3 { get_i32(buf)? } else { -1 };
    let metadata = get_string(buf)?;
    let commit_timestamp = get_i64(buf)?;
    if version == 1 {
        get_i64(buf)?; // the expire timestamp, which retention no longer uses
    }
    Ok(OffsetValue { offset, leader_epoch, metadata, commit_timestamp })
}

pub fn encode_group(value: &GroupValue) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(3);
    put_string(&mut out, &value.protocol_type);
    out.put_i32(value.generation);
    put_nullable(&mut out, value.protocol.as_deref());
    put_nullable(&mut out, value.leader.as_deref());
    out.put_i64(value.current_state_timestamp);
    out.put_i32(value.members.len() as i32);
    for member in &value.members {
        put_string(&mut out, &member.member_id);
        put_nullable(&mut out, member.group_instance_id.as_deref());
        put_string(&mut out, &member.client_id);
        put_string(&mut out, &member.client_host);
        out.put_i32(member.rebalance_timeout_ms);
        out.put_i32(member.session_timeout_ms);
        put_bytes(&mut out, &member.subscription);
        put_bytes(&mut out, &member.assignment);
    }
    out.freeze()
}

/// Reads a group metadata value of any version Kafka wrote (0 to 4).
pub fn decode_group(mut bytes: &[u8]) -> Result<GroupValue, RecordError> {
    let buf = &mut bytes;
    let version = get_i16(buf)?;
    if !(0..=4).contains(&version) {
        return Err(RecordError::ValueVersion(version));
    }
    let protocol_type = get_string(buf)?;
    let generation = get_i32(buf)?;
    let protocol = get_nullable(buf)?;
    let leader = get_nullable(buf)?;
    let current_state_timestamp = if version >= 2 { get_i64(buf)? } else { -1 };
    let count = get_i32(buf)?;
    if count < 0 {
        return Err(RecordError::Length(count));
    }
    let mut members = Vec::new();
    for _ in 0..count {
        let member_id = get_string(buf)?;
        let group_instance_id = if version >= 3 { get_nullable(buf)? } else { None };
        let client_id = get_string(buf)?;
        let client_host = get_string(buf)?;
        let rebalance_timeout_ms = if version >= 1 { get_i32(buf)? } else { 0 };
        let session_timeout_ms = get_i32(buf)?;
        let subscription = get_bytes(buf)?;
        let assignment = get_bytes(buf)?;
        members.push(MemberValue {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    Ok(GroupValue { protocol_type, generation, protocol, leader, current_state_timestamp, members })
}

pub fn encode_consumer_group(value: &ConsumerGroupValue) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(0);
    out.put_i32(value.epoch);
    out.put_i32(value.target_epoch);
    out.put_i32(value.members.len() as i32);
    for member in &value.members {
        put_string(&mut out, &member.member_id);
        put_nullable(&mut out, member.instance_id.as_deref());
        put_string(&mut out, &member.client_id);
        put_string(&mut out, &member.client_host);
        out.put_i32(member.subscribed.len() as i32);
        for topic in &member.subscribed {
            put_string(&mut out, topic);
        }
        put_nullable(&mut out, member.regex.as_deref());
        out.put_i32(member.epoch);
        out.put_i32(member.previous_epoch);
        out.put_i32(member.rebalance_timeout_ms);
        put_nullable(&mut out, member.assignor.as_deref());
        put_partitions(&mut out, &member.assigned);
        put_partitions(&mut out, &member.revoking);
    }
    out.put_i32(value.target.len() as i32);
    for (member, partitions) in &value.target {
        put_string(&mut out, member);
        put_partitions(&mut out, partitions);
    }
    out.put_i32(value.target_topics.len() as i32);
    for (name, id, partitions) in &value.target_topics {
        put_string(&mut out, name);
        out.put_slice(id.as_bytes());
        out.put_i32(*partitions);
    }
    out.freeze()
}

pub fn decode_consumer_group(mut bytes: &[u8]) -> Result<ConsumerGroupValue, RecordError> {
    let buf = &mut bytes;
    let version = get_i16(buf)?;
    if version != 0 {
        return Err(RecordError::ValueVersion(version));
    }
    let epoch = get_i32(buf)?;
    let target_epoch = get_i32(buf)?;
    let mut members = Vec::new();
    for _ in 0..get_count(buf, 4)? {
        let member_id = get_string(buf)?;
        let instance_id = get_nullable(buf)?;
        let client_id = get_string(buf)?;
        let client_host = get_string(buf)?;
        let mut subscribed = Vec::new();
        for _ in 0..get_count(buf, 2)? {
            subscribed.push(get_string(buf)?);
        }
        members.push(ConsumerMemberValue {
            member_id,
            instance_id,
            client_id,
            client_host,
            subscribed,
            regex: get_nullable(buf)?,
            epoch: get_i32(buf)?,
            previous_epoch: get_i32(buf)?,
            rebalance_timeout_ms: get_i32(buf)?,
            assignor: get_nullable(buf)?,
            assigned: get_partitions(buf)?,
            revoking: get_partitions(buf)?,
        });
    }
    let mut target = Vec::new();
    for _ in 0..get_count(buf, 6)? {
        target.push((get_string(buf)?, get_partitions(buf)?));
    }
    let mut target_topics = Vec::new();
    for _ in 0..get_count(buf, 22)? {
        let name = get_string(buf)?;
        let id = get_uuid(buf)?;
        target_topics.push((name, id, get_i32(buf)?));
    }
    Ok(ConsumerGroupValue { epoch, target_epoch, members, target, target_topics })
}

fn put_partitions(out: &mut BytesMut, partitions: &[PartitionId]) {
    out.put_i32(partitions.len() as i32);
    for (topic, index) in partitions {
        out.put_slice(topic.as_bytes());
        out.put_i32(*index);
    }
}

fn get_partitions(buf: &mut &[u8]) -> Result<Vec<PartitionId>, RecordError> {
    let count = get_count(buf, 20)?;
    let mut partitions = Vec::with_capacity(count);
    for _ in 0..count {
        partitions.push((get_uuid(buf)?, get_i32(buf)?));
    }
    Ok(partitions)
}

/// A count of items at least `item_bytes` long each: never more than the
/// bytes left could hold, so garbage cannot make a huge allocation.
pub(crate) fn get_count(buf: &mut &[u8], item_bytes: usize) -> Result<usize, RecordError> {
    let count = get_i32(buf)?;
    if count < 0 {
        return Err(RecordError::Length(count));
    }
    if count as usize > buf.remaining() / item_bytes {
        return Err(RecordError::Short);
    }
    Ok(count as usize)
}

fn get_uuid(buf: &mut &[u8]) -> Result<uuid::Uuid, RecordError> {
    if buf.remaining() < 16 {
        return Err(RecordError::Short);
    }
    let mut id = [0u8; 16];
    buf.copy_to_slice(&mut id);
    Ok(uuid::Uuid::from_bytes(id))
}

pub(crate) fn put_string(out: &mut BytesMut, value: &str) {
    out.put_i16(value.len() as i16);
    out.put_slice(value.as_bytes());
}

pub(crate) fn put_nullable(out: &mut BytesMut, value: Option<&str>) {
    match value {
        Some(value) => put_string(out, value),
        None => out.put_i16(-1),
    }
}

fn put_bytes(out: &mut BytesMut, value: &[u8]) {
    out.put_i32(value.len() as i32);
    out.put_slice(value);
}

pub(crate) fn get_i16(buf: &mut &[u8]) -> Result<i16, RecordError> {
    (buf.remaining() >= 2).then(|| buf.get_i16()).ok_or(RecordError::Short)
}

pub(crate) fn get_i32(buf: &mut &[u8]) -> Result<i32, RecordError> {
    (buf.remaining() >= 4).then(|| buf.get_i32()).ok_or(RecordError::Short)
}

pub(crate) fn get_i64(buf: &mut &[u8]) -> Result<i64, RecordError> {
    (buf.remaining() >= 8).then(|| buf.get_i64()).ok_or(RecordError::Short)
}

pub(crate) fn get_nullable(buf: &mut &[u8]) -> Result<Option<String>, RecordError> {
    let length = get_i16(buf)?;
    if length < 0 {
        return Ok(None);
    }
    let length = length as usize;
    if buf.remaining() < length {
        return Err(RecordError::Short);
    }
    let text = std::str::from_utf8(&buf[..length]).map_err(|_| RecordError::NotUtf8)?.to_owned();
    buf.advance(length);
    Ok(Some(text))
}

pub(crate) fn get_string(buf: &mut &[u8]) -> Result<String, RecordError> {
    Ok(get_nullable(buf)?.unwrap_or_default())
}

fn get_bytes(buf: &mut &[u8]) -> Result<Bytes, RecordError> {
    let length = get_i32(buf)?;
    if length < 0 {
        return Ok(Bytes::new());
    }
    let length = length as usize;
    if buf.remaining() < length {
        return Err(RecordError::Short);
    }
    let bytes = Bytes::copy_from_slice(&buf[..length]);
    buf.advance(length);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_and_values_round_trip() {
        let key = Key::Offset { group: "billing".into(), topic: "orders".into(), partition: 7 };
        assert_eq!(decode_key(&encode_key(&key)).unwrap(), key);
        let key = Key::Group { group: "billing".into() };
        assert_eq!(decode_key(&encode_key(&key)).unwrap(), key);
        let offset = OffsetValue { offset: 42, leader_epoch: 3, metadata: "m".into(), commit_timestamp: 1_700 };
        assert_eq!(decode_offset(&encode_offset(&offset)).unwrap(), offset);
        let group = GroupValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("a-1".into()),
            current_state_timestamp: 9,
            members: vec![MemberValue {
                member_id: "a-1".into(),
                group_instance_id: Some("a".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        assert_eq!(decode_group(&encode_group(&group)).unwrap(), group);
        let key = Key::ConsumerGroup { group: "billing".into() };
        assert_eq!(decode_key(&encode_key(&key)).unwrap(), key);
        let topic = uuid::Uuid::from_u128(9);
        let consumer = ConsumerGroupValue {
            epoch: 4,
            target_epoch: 4,
            members: vec![ConsumerMemberValue {
                member_id: "m".into(),
                instance_id: None,
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                subscribed: vec!["orders".into()],
                regex: Some("orders\\..*".into()),
                epoch: 4,
                previous_epoch: 3,
                rebalance_timeout_ms: 300_000,
                assignor: Some("uniform".into()),
                assigned: vec![(topic, 0), (topic, 1)],
                revoking: vec![(topic, 2)],
            }],
            target: vec![("m".into(), vec![(topic, 0), (topic, 1)])],
            target_topics: vec![("orders".into(), topic, 3)],
        };
        assert_eq!(decode_consumer_group(&encode_consumer_group(&consumer)).unwrap(), consumer);
    }

    #[test]
    fn a_short_or_unknown_record_is_an_error() {
        assert_eq!(decode_key(&[0, 9]), Err(RecordError::KeyVersion(9)));
        assert_eq!(decode_key(&[0, 1, 0, 5, b'a']), Err(RecordError::Short));
        assert_eq!(decode_offset(&[0, 7]), Err(RecordError::ValueVersion(7)));
        assert_eq!(
            decode_group(&[
                0, 3, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff
            ]),
            Err(RecordError::Length(-1))
        );
    }

    proptest! {
        /// Whatever the bytes, the decoders answer without panicking.
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_key(&bytes);
            let _ = decode_offset(&bytes);
            let _ = decode_group(&bytes);
            let _ = decode_consumer_group(&bytes);
        }
    }
}

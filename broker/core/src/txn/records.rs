//! The records of `__transaction_state`, in Kafka's layout (version 0), so
//! the topic reads the same as a Kafka cluster's:
//!
//! ```text
//! key   = version: i16 = 0, transactional_id: string
//! value = null (the id expired), or
//!         version: i16 = 0, producer_id: i64, producer_epoch: i16,
//!         timeout_ms: i32, status: i8,
//!         partitions: i32 count (-1: none), then per topic:
//!           topic: string, i32 count + partition: i32 each,
//!         last_update_ms: i64, start_ms: i64
//! string = i16 length + UTF-8
//! ```

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};

use super::state::{Status, Txn};
use crate::groups::records::{get_count, get_i16, get_i32, get_i64, get_string, put_string, RecordError};

pub fn encode_key(transactional_id: &str) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(0);
    put_string(&mut out, transactional_id);
    out.freeze()
}

pub fn decode_key(mut bytes: &[u8]) -> Result<String, RecordError> {
    let buf = &mut bytes;
    match get_i16(buf)? {
        0 => get_string(buf),
        version => Err(RecordError::KeyVersion(version)),
    }
}

pub fn encode_value(txn: &Txn) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(0);
    out.put_i64(txn.producer_id);
    out.put_i16(txn.epoch);
    out.put_i32(txn.timeout_ms);
    out.put_i8(txn.status as i8);
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, index) in &txn.partitions {
        by_topic.entry(topic).or_default().push(*index);
    }
    out.put_i32(by_topic.len() as i32);
    for (topic, indexes) in by_topic {
        put_string(&mut out, topic);
        out.put_i32(indexes.len() as i32);
        for index in indexes {
            out.put_i32(index);
        }
    }
    out.put_i64(txn.update_ms);
    out.put_i64(txn.start_ms);
    out.freeze()
}

pub fn decode_value(mut bytes: &[u8]) -> Result<Txn, RecordError> {
    let buf = &mut bytes;
    let version = get_i16(buf)?;
    if version != 0 {
        return Err(RecordError::ValueVersion(version));
    }
    let producer_id = get_i64(buf)?;
    let epoch = get_i16(buf)?;
    let timeout_ms = get_i32(buf)?;
    let status_id = get_i8(buf)?;
    let status = Status::from_id(status_id).ok_or(RecordError::ValueVersion(i16::from(status_id)))?;
    let mut partitions = BTreeSet::new();
    let topics = get_i32(buf)?;
    for _ in 0..topics.max(0) {
        let topic = get_string(buf)?;
        let count = get_count(buf, 4)?;
        for _ in 0..count {
            partitions.insert((topic.clone(), get_i32(buf)?));
        }
    }
    let update_ms = get_i64(buf)?;
    let start_ms = get_i64(buf)?;
    Ok(Txn { producer_id, epoch, last_epoch: -1, timeout_ms, status, partitions, start_ms, update_ms })
}

fn get_i8(buf: &mut &[u8]) -> Result<i8, RecordError> {
    let (&first, rest) = buf.split_first().ok_or(RecordError::Short)?;
    *buf = rest;
    Ok(first as i8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_an_error() {
        let txn = Txn {
            producer_id: 42,
            epoch: 3,
            last_epoch: -1,
            timeout_ms: 60_000,
            status: Status::Ongoing,
            partitions: [("a".to_owned(), 0), ("a".to_owned(), 2), ("b".to_owned(), 1)].into(),
            start_ms: 100,
            update_ms: 200,
        };
        let value = encode_value(&txn);
        assert_eq!(decode_value(&value), Ok(txn));
        assert_eq!(decode_key(&encode_key("billing-1")), Ok("billing-1".to_owned()));
        for cut in 0..value.len() {
            assert!(decode_value(&value[..cut]).is_err(), "cut at {cut}");
        }
        let mut unknown = value.to_vec();
        unknown[16] = 99; // the status byte
        assert!(decode_value(&unknown).is_err());
    }
}

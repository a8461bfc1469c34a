//! Kafka record batches (magic 2) as the broker handles them: checked once
//! when produced, stored and served as they came, and rewritten in place only
//! where Kafka rewrites them (DESIGN §7). The one reader of the records inside
//! is a timestamp lookup (`first_record_at`), which decompresses a copy.
//!
//! ```text
//! offset  size  field
//!      0     8  baseOffset            \ outside the CRC: the broker
//!      8     4  batchLength            | sets baseOffset and
//!     12     4  partitionLeaderEpoch  / partitionLeaderEpoch
//!     16     1  magic (2)
//!     17     4  crc (CRC32C of bytes 21..end)
//!     21     2  attributes (bits 0-2 codec, 3 LogAppendTime, 4 transactional, 5 control)
//!     23     4  lastOffsetDelta
//!     27     8  baseTimestamp
//!     35     8  maxTimestamp
//!     43     8  producerId
//!     51     2  producerEpoch
//!     53     4  baseSequence
//!     57     4  recordCount
//!     61     …  records (compressed or not)
//! ```

use kafka_protocol::error::ResponseError;
use keel_controller_client::{Offset, ProducerId};

/// Bytes before the records.
pub const HEADER_BYTES: usize = 61;
const CRC_START: usize = 21;
const ATTR_LOG_APPEND_TIME: i16 = 1 << 3;
const ATTR_TRANSACTIONAL: i16 = 1 << 4;
const ATTR_CONTROL: i16 = 1 << 5;

/// The header fields the broker reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: ProducerId,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

/// Why a produced batch is refused, with the Kafka error it maps to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("a partition's records must be exactly one record batch of {HEADER_BYTES}+ bytes; got {0} bytes")]
    Size(usize),
    #[error("batchLength says {said} bytes follow, but {actual} do")]
    Length { said: i64, actual: usize },
    #[error("only magic 2 record batches are accepted, not magic {0}")]
    Magic(i8),
    #[error("the batch's CRC32C does not match its bytes")]
    Crc,
    #[error("recordCount {count} and lastOffsetDelta {delta} disagree")]
    Count { count: i32, delta: i32 },
    /// More records than the batch's bytes can hold, even decompressed at
    /// the codec's highest ratio: readers would be told to expect them.
    #[error("recordCount {count} is more than {bytes} bytes of records can hold")]
    Overcounted { count: i32, bytes: usize },
    #[error("producers may not write control batches")]
    Control,
    /// The records inside (decompressed) cannot be decoded.
    #[error("the batch's records cannot be decoded: {0}")]
    Records(String),
}

impl BatchError {
    pub fn kafka_error(&self) -> ResponseError {
        match self {
            BatchError::Crc
            | BatchError::Length { .. }
            | BatchError::Size(_)
            | BatchError::Records(_)
            | BatchError::Overcounted { .. } => ResponseError::CorruptMessage,
            BatchError::Magic(_) => ResponseError::UnsupportedForMessageFormat,
            BatchError::Count { .. } | BatchError::Control => ResponseError::InvalidRecord,
        }
    }
}

fn i16_at(bytes: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(bytes[at..at + 2].try_into().expect("two bytes"))
}
fn i32_at(bytes: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
}
fn i64_at(bytes: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
}

/// Checks that `bytes` is exactly one well-formed magic-2 batch that a
/// producer may write, and reads its header.
pub fn check(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = stored_header(bytes)?;
    if header.record_count <= 0 || header.last_offset_delta != header.record_count - 1 {
        return Err(BatchError::Count { count: header.record_count, delta: header.last_offset_delta });
    }
    if header.attributes & ATTR_CONTROL != 0 {
        return Err(BatchError::Control);
    }
    let bytes = bytes.len() - HEADER_BYTES;
    if header.record_count as u64 * RECORD_BYTES_MIN > bytes as u64 * expansion_max(header.attributes) {
        return Err(BatchError::Overcounted { count: header.record_count, bytes });
    }
    Ok(header)
}

/// The fewest bytes one record takes, uncompressed: its length, attributes,
/// timestamp and offset deltas, key and value lengths (null key, empty
/// value) and header count, one varint byte each.
const RECORD_BYTES_MIN: u64 = 7;

/// How many times larger the records of a batch can be than its compressed
/// bytes, at most, by codec (the attributes' low bits): deflate's longest
/// match gives about 1032, LZ4's lengths add 255 per extra byte, a Snappy
/// copy of 64 bytes takes 3, and a Zstandard block holds at most 128 KiB
/// for at least 4 bytes. Bounds, so that no valid batch is refused.
fn expansion_max(attributes: i16) -> u64 {
    match attributes & 0b111 {
        0 => 1,
        1 => 1032,
        2 => 32,
        3 => 256,
        _ => 32_768,
    }
}

/// The header of one intact stored batch (see `check_stored`), whatever it holds.
pub fn stored_header(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    check_stored(bytes)?;
    Ok(BatchHeader {
        attributes: i16_at(bytes, 21),
        last_offset_delta: i32_at(bytes, 23),
        base_timestamp: i64_at(bytes, 27),
        max_timestamp: i64_at(bytes, 35),
        producer_id: ProducerId(i64_at(bytes, 43)),
        producer_epoch: i16_at(bytes, 51),
        base_sequence: i32_at(bytes, 53),
        record_count: i32_at(bytes, 57),
    })
}

/// Checks that `bytes` is exactly one intact magic-2 batch (its length, magic
/// and CRC32C): what a reader of stored bytes (an object, a WAL entry) checks
/// before serving them.
pub fn check_stored(bytes: &[u8]) -> Result<(), BatchError> {
    if bytes.len() < HEADER_BYTES {
        return Err(BatchError::Size(bytes.len()));
    }
    let said = i64::from(i32_at(bytes, 8));
    if said + 12 != bytes.len() as i64 {
        return Err(BatchError::Length { said, actual: bytes.len() - 12 });
    }
    let magic = bytes[16] as i8;
    if magic != 2 {
        return Err(BatchError::Magic(magic));
    }
    if crc32c::crc32c(&bytes[CRC_START..]) != i32_at(bytes, 17) as u32 {
        return Err(BatchError::Crc);
    }
    Ok(())
}

impl BatchHeader {
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    /// Whether the producer is idempotent (it has a producer id).
    pub fn is_idempotent(&self) -> bool {
        self.producer_id.0 >= 0
    }

    /// The sequence of the batch's last record; sequences wrap at i32::MAX.
    pub fn last_sequence(&self) -> i32 {
        wrapping_add_sequence(self.base_sequence, self.last_offset_delta)
    }
}

/// `sequence + delta` as Kafka computes it: past i32::MAX it continues from 0.
pub fn wrapping_add_sequence(sequence: i32, delta: i32) -> i32 {
    let sum = i64::from(sequence) + i64::from(delta);
    (sum % (i64::from(i32::MAX) + 1)) as i32
}

/// Sets the fields outside the CRC: the offset of the first record and the
/// leader epoch it was appended under.
pub fn assign(bytes: &mut [u8], base_offset: Offset, leader_epoch: i32) {
    bytes[0..8].copy_from_slice(&base_offset.0.to_be_bytes());
    bytes[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Stamps a topic with `message.timestamp.type=LogAppendTime`: the batch's
/// timestamp type and max timestamp change, so the CRC is computed again.
pub fn set_log_append_time(bytes: &mut [u8], now_ms: i64) {
    let attributes = i16_at(bytes, 21) | ATTR_LOG_APPEND_TIME;
    bytes[21..23].copy_from_slice(&attributes.to_be_bytes());
    bytes[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[CRC_START..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// The offset of the first record of a stored batch.
pub fn base_offset(bytes: &[u8]) -> Offset {
    Offset(i64_at(bytes, 0))
}

/// The offset after the last record of a stored batch.
pub fn end_offset(bytes: &[u8]) -> Offset {
    base_offset(bytes) + i64::from(record_count(bytes))
}

/// The number of records in a stored batch.
pub fn record_count(bytes: &[u8]) -> i32 {
    i32_at(bytes, 57)
}

/// The max timestamp of a stored batch.
pub fn max_timestamp(bytes: &[u8]) -> i64 {
    i64_at(bytes, 35)
}

/// The first record at or after offset `from` of a stored batch whose
/// timestamp is at least `timestamp` (or, for `None`, equals the batch's max
/// timestamp): its (timestamp, offset). Reads a decompressed copy, bounded
/// (`records::decode`); the stored bytes stay as they are.
pub fn first_record_at(
    bytes: &[u8],
    from: Offset,
    timestamp: Option<i64>,
) -> Result<Option<(i64, Offset)>, BatchError> {
    let max = max_timestamp(bytes);
    let wanted = timestamp.unwrap_or(max);
    if i16_at(bytes, 21) & ATTR_LOG_APPEND_TIME != 0 {
        // Every record carries the append time, the batch's max timestamp.
        return Ok((max >= wanted).then(|| (max, base_offset(bytes).max(from))));
    }
    let set = crate::records::decode(bytes)?;
    let found = set.records.iter().filter(|record| record.offset >= from.0).find(|record| match timestamp {
        Some(_) => record.timestamp >= wanted,
        None => record.timestamp == wanted,
    });
    Ok(found.map(|record| (record.timestamp, Offset(record.offset))))
}

/// What a control batch marks: the end of a transaction (Kafka's control
/// record types 0 and 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    Abort,
    Commit,
}

impl BatchHeader {
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }
}

/// The transaction marker a stored control batch holds, and the epoch of
/// the coordinator that wrote it: the type in its first record's key
/// (version i16, type i16), the epoch in its value (version i16, epoch
/// i32; -1 when the value is missing). `None` for a data batch, an unknown
/// control type or a record that cannot be read (control batches are
/// written uncompressed, by brokers only).
pub fn marker(bytes: &[u8]) -> Option<(Marker, i32)> {
    if bytes.len() < HEADER_BYTES || i16_at(bytes, 21) & (ATTR_CONTROL | 0b111) != ATTR_CONTROL {
        return None;
    }
    let mut rest = &bytes[HEADER_BYTES..];
    let _length = read_varint(&mut rest)?;
    let (_attributes, tail) = rest.split_first()?;
    rest = tail;
    let _timestamp_delta = read_varint(&mut rest)?;
    let _offset_delta = read_varint(&mut rest)?;
    let key_length = usize::try_from(read_varint(&mut rest)?).ok()?;
    if key_length < 4 || rest.len() < key_length {
        return None;
    }
    let kind = match i16_at(rest, 2) {
        0 => Marker::Abort,
        1 => Marker::Commit,
        _ => return None,
    };
    rest = &rest[key_length..];
    let epoch = match read_varint(&mut rest) {
        Some(6..) if rest.len() >= 6 => i32_at(rest, 2),
        _ => -1,
    };
    Some((kind, epoch))
}

/// Reads one zigzag varint (at most 10 bytes) and moves past it.
fn read_varint(bytes: &mut &[u8]) -> Option<i64> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *bytes = &bytes[i + 1..];
            return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    None
}

/// A transaction marker as Kafka writes it: one control record in a
/// transactional batch of the producer, key (version 0, type) and value
/// `EndTxnMarker` (version 0, the coordinator's epoch).
pub fn marker_batch(
    producer_id: ProducerId,
    producer_epoch: i16,
    marker: Marker,
    coordinator_epoch: i32,
    now_ms: i64,
) -> bytes::Bytes {
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
    let kind: i16 = match marker {
        Marker::Abort => 0,
        Marker::Commit => 1,
    };
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&kind.to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let record = Record {
        transactional: true,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: producer_id.0,
        producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: now_ms,
        key: Some(key.into()),
        value: Some(value.into()),
        headers: Default::default(),
    };
    let mut batch = bytes::BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut batch, [&record], &options).expect("an uncompressed control batch always encodes");
    batch.freeze()
}

/// An uncompressed batch of keyed records (a value of `None` is a
/// tombstone) as the broker itself writes them to an internal topic; as
/// producer (id, epoch)'s transaction when given (with no sequence: the
/// coordinator's own writes are not deduplicated).
pub fn keyed_batch(
    records: Vec<(bytes::Bytes, Option<bytes::Bytes>)>,
    producer: Option<(ProducerId, i16)>,
    now_ms: i64,
) -> bytes::Bytes {
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
    let (producer_id, producer_epoch) = producer.map_or((-1, -1), |(id, epoch)| (id.0, epoch));
    let records: Vec<Record> = records
        .into_iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: producer.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The codec wants offset - sequence equal across a batch; a
            // batch without a sequence then has base sequence -1.
            sequence: (i as i32).wrapping_sub(1),
            timestamp: now_ms,
            key: Some(key),
            value,
            headers: Default::default(),
        })
        .collect();
    let mut batch = bytes::BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut batch, &records, &options).expect("an uncompressed batch always encodes");
    batch.freeze()
}

/// Splits stored bytes (a stream range of an object) into their batches,
/// checking each (length, magic, CRC32C).
pub fn split(data: &bytes::Bytes) -> Result<Vec<bytes::Bytes>, SplitError> {
    let mut batches = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        let rest = &data[at..];
        if rest.len() < HEADER_BYTES {
            return Err(SplitError::Stray { at, bytes: rest.len() });
        }
        let length = i32::from_be_bytes(rest[8..12].try_into().expect("4 bytes"));
        let total = usize::try_from(length).ok().and_then(|l| l.checked_add(12)).filter(|t| *t <= rest.len());
        let total = total.ok_or(SplitError::Length { at, length })?;
        check_stored(&rest[..total]).map_err(|error| SplitError::Batch { at, error })?;
        batches.push(data.slice(at..at + total));
        at += total;
    }
    Ok(batches)
}

/// Why a stream range read from an object is not a run of intact batches.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("{bytes} stray bytes at {at}")]
    Stray { at: usize, bytes: usize },
    #[error("batch at {at} claims {length} bytes")]
    Length { at: usize, length: i32 },
    #[error("batch at {at}: {error}")]
    Batch { at: usize, error: BatchError },
}

/// Builds an uncompressed batch of records with the given values, for tests.
#[cfg(test)]
pub(crate) fn build(values: &[&[u8]], producer: (i64, i16, i32), timestamp: i64) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, value: i64) {
        let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
        while zigzag >= 0x80 {
            out.push((zigzag as u8) | 0x80);
            zigzag >>= 7;
        }
        out.push(zigzag as u8);
    }
    let mut records = Vec::new();
    for (delta, value) in values.iter().enumerate() {
        let mut body = vec![0u8]; // attributes
        varint(&mut body, 0); // timestamp delta
        varint(&mut body, delta as i64);
        varint(&mut body, -1); // no key
        varint(&mut body, value.len() as i64);
        body.extend_from_slice(value);
        varint(&mut body, 0); // no headers
        varint(&mut records, body.len() as i64);
        records.extend_from_slice(&body);
    }
    let count = values.len() as i32;
    let mut batch = Vec::new();
    batch.extend_from_slice(&0i64.to_be_bytes());
    batch.extend_from_slice(&((HEADER_BYTES - 12 + records.len()) as i32).to_be_bytes());
    batch.extend_from_slice(&(-1i32).to_be_bytes());
    batch.push(2);
    batch.extend_from_slice(&0u32.to_be_bytes());
    batch.extend_from_slice(&0i16.to_be_bytes());
    batch.extend_from_slice(&(count - 1).to_be_bytes());
    batch.extend_from_slice(&timestamp.to_be_bytes());
    batch.extend_from_slice(&timestamp.to_be_bytes());
    batch.extend_from_slice(&producer.0.to_be_bytes());
    batch.extend_from_slice(&producer.1.to_be_bytes());
    batch.extend_from_slice(&producer.2.to_be_bytes());
    batch.extend_from_slice(&count.to_be_bytes());
    batch.extend_from_slice(&records);
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_well_formed_batch_is_read_and_every_damage_is_refused() {
        let batch = build(&[b"a", b"bb", b"ccc"], (7, 1, 40), 1_000);
        let header = check(&batch).unwrap();
        assert_eq!((header.record_count, header.producer_id, header.base_sequence), (3, ProducerId(7), 40));
        assert_eq!(header.last_sequence(), 42);

        assert_eq!(check(&batch[..HEADER_BYTES - 1]), Err(BatchError::Size(HEADER_BYTES - 1)));
        assert!(matches!(check(&batch[..batch.len() - 1]), Err(BatchError::Length { .. })));
        let mut two = batch.clone();
        two.extend_from_slice(&batch);
        assert!(matches!(check(&two), Err(BatchError::Length { .. })), "two batches in one partition");
        let mut magic = batch.clone();
        magic[16] = 1;
        assert_eq!(check(&magic), Err(BatchError::Magic(1)));
        let mut flipped = batch.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(check(&flipped), Err(BatchError::Crc));
    }

    /// Issue 21: a 70-byte batch could claim 2^31 records, and readers were
    /// told to expect them.
    #[test]
    fn a_batch_claiming_more_records_than_its_bytes_hold_is_refused() {
        let claim = |batch: &mut Vec<u8>, count: i32| {
            batch[23..27].copy_from_slice(&(count - 1).to_be_bytes());
            batch[57..61].copy_from_slice(&count.to_be_bytes());
            let crc = crc32c::crc32c(&batch[CRC_START..]);
            batch[17..21].copy_from_slice(&crc.to_be_bytes());
        };
        let mut batch = build(&[b"a"], (-1, -1, -1), 1_000);
        let records = batch.len() - HEADER_BYTES;
        claim(&mut batch, i32::MAX);
        assert_eq!(check(&batch), Err(BatchError::Overcounted { count: i32::MAX, bytes: records }));
        assert_eq!(check(&batch).unwrap_err().kafka_error(), ResponseError::CorruptMessage);
        // As many minimal records as the bytes could hold is not refused here
        // (the records are not decoded on produce).
        claim(&mut batch, (records / RECORD_BYTES_MIN as usize) as i32);
        assert!(check(&batch).is_ok());
        // Compressed, the bound is the codec's highest ratio.
        batch[21..23].copy_from_slice(&4i16.to_be_bytes());
        claim(&mut batch, (records * 32_768 / RECORD_BYTES_MIN as usize) as i32 + 1);
        assert!(matches!(check(&batch), Err(BatchError::Overcounted { .. })));
    }

    #[test]
    fn assigning_offsets_keeps_the_crc_and_log_append_time_recomputes_it() {
        let mut batch = build(&[b"x"], (-1, -1, -1), 5);
        assign(&mut batch, Offset(1234), 7);
        assert_eq!(base_offset(&batch), Offset(1234));
        check(&batch).expect("baseOffset and leader epoch are outside the CRC");
        set_log_append_time(&mut batch, 99);
        let header = check(&batch).expect("the CRC was recomputed");
        assert_eq!((header.max_timestamp, header.attributes & ATTR_LOG_APPEND_TIME), (99, ATTR_LOG_APPEND_TIME));
    }

    #[test]
    fn markers_are_written_and_read_back_as_kafka_lays_them_out() {
        let commit = marker_batch(ProducerId(7), 3, Marker::Commit, 11, 1_000);
        let header = stored_header(&commit).unwrap();
        assert!(header.is_control() && header.is_transactional());
        assert_eq!((header.producer_id, header.producer_epoch, header.record_count), (ProducerId(7), 3, 1));
        assert_eq!(marker(&commit), Some((Marker::Commit, 11)));
        assert_eq!(marker(&marker_batch(ProducerId(7), 3, Marker::Abort, 0, 0)), Some((Marker::Abort, 0)));
        assert_eq!(check(&commit), Err(BatchError::Control), "producers may not write them");
        assert_eq!(marker(&build(&[b"x"], (7, 3, 0), 0)), None, "a data batch");
        for cut in 0..commit.len() {
            let _ = marker(&commit[..cut]);
        }
    }

    #[test]
    fn sequences_wrap_past_the_largest_i32() {
        assert_eq!(wrapping_add_sequence(i32::MAX, 1), 0);
        assert_eq!(wrapping_add_sequence(i32::MAX - 1, 3), 1);
    }

    #[test]
    fn a_time_lookup_finds_the_record_from_the_start_offset_on() {
        let mut batch = build(&[b"a", b"b", b"c"], (-1, -1, -1), 50);
        assign(&mut batch, Offset(10), 0);
        assert_eq!(first_record_at(&batch, Offset(0), Some(40)), Ok(Some((50, Offset(10)))));
        assert_eq!(
            first_record_at(&batch, Offset(11), Some(40)),
            Ok(Some((50, Offset(11)))),
            "records below the start are deleted"
        );
        assert_eq!(first_record_at(&batch, Offset(13), Some(40)), Ok(None));
        assert_eq!(first_record_at(&batch, Offset(0), Some(51)), Ok(None));
        assert_eq!(
            first_record_at(&batch, Offset(0), None),
            Ok(Some((50, Offset(10)))),
            "the first record with the max timestamp"
        );
        set_log_append_time(&mut batch, 99);
        assert_eq!(first_record_at(&batch, Offset(12), Some(60)), Ok(Some((99, Offset(12)))));
    }
}

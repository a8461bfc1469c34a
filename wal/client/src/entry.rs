//! The WAL entry: the unit a writer appends, a WAL node fsyncs and journals,
//! and a reader gets back, byte for byte.
//!
//! ```text
//!  0       4    5      8        12       16      24       32      40       48
//!  +-------+----+------+--------+--------+-------+--------+-------+--------+---------
//!  | magic | v1 | zero | crc32c | length | log   | epoch  | seq   | acked  | records
//!  +-------+----+------+--------+--------+-------+--------+-------+--------+---------
//!  records: count u32, then per record:
//!           stream u64 | base_offset i64 | record_count u32 | batch_len u32 | batch
//! ```
//!
//! All integers are big-endian. `length` is the whole entry's length, header
//! included. The CRC32C covers every byte after the crc field (from `length`
//! to the end), so a torn or corrupted entry is detected before it is used.
//! `acked` is the writer's last acknowledged seq when it sent the entry, which
//! tells any reader of any node how far the log is committed.
//! The bytes of an entry never change after the writer builds it: the same
//! (log, seq) holds the same bytes on every node, also after a recovery copies it.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use keel_controller_client::StreamId;

use crate::ids::{LogEpoch, LogId, Offset, Seq};

/// "KWAL".
pub const ENTRY_MAGIC: u32 = 0x4B57_414C;
pub const ENTRY_VERSION: u8 = 1;
pub const ENTRY_HEADER_BYTES: usize = 48;
const RECORD_HEADER_BYTES: usize = 24;

/// The largest record batch an entry carries: Kafka's largest message plus room.
pub const BATCH_BYTES_MAX: usize = 16 << 20;
/// The largest entry, header and framing included.
pub const ENTRY_BYTES_MAX: usize = 32 << 20;
const _: () = assert!(ENTRY_BYTES_MAX >= ENTRY_HEADER_BYTES + 4 + RECORD_HEADER_BYTES + BATCH_BYTES_MAX);

/// The fixed fields of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryHeader {
    pub log: LogId,
    /// The epoch of the writer that built the entry.
    pub epoch: LogEpoch,
    pub seq: Seq,
    /// The writer's last acknowledged seq when it sent this entry.
    pub acked: Seq,
}

/// One partition's record batch inside an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub stream: StreamId,
    pub base_offset: Offset,
    pub record_count: u32,
    /// A Kafka record batch, exactly as stored; never decompressed.
    pub batch: Bytes,
}

/// A decoded entry. `bytes` is the exact encoding it was decoded from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub header: EntryHeader,
    pub records: Vec<Record>,
    pub bytes: Bytes,
}

/// Why bytes are not a valid entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("entry is truncated: {have} bytes of {need}")]
    Truncated { have: usize, need: usize },
    #[error("bad entry magic {found:#010x}")]
    BadMagic { found: u32 },
    #[error("unsupported entry version {found}")]
    UnsupportedVersion { found: u8 },
    #[error("reserved entry header bytes are not zero")]
    ReservedNotZero,
    #[error("bad entry length {length}")]
    BadLength { length: usize },
    #[error("entry checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch { stored: u32, computed: u32 },
    #[error("malformed records: {reason}")]
    BadRecords { reason: &'static str },
    /// What a writer asked to put in one entry does not fit: a batch over
    /// `BATCH_BYTES_MAX`, or records over `ENTRY_BYTES_MAX` together
    /// (`pack` splits those over several entries).
    #[error("an entry of {length} bytes, or a batch in it, is over the limit ({ENTRY_BYTES_MAX} bytes an entry, {BATCH_BYTES_MAX} a batch)")]
    TooLarge { length: usize },
}

impl EntryError {
    /// Whether more bytes could make the prefix valid (a torn tail, not corruption).
    pub fn is_truncation(&self) -> bool {
        matches!(self, EntryError::Truncated { .. })
    }
}

impl Entry {
    /// Builds and encodes an entry; refuses records that do not fit in one.
    pub fn build(header: EntryHeader, records: Vec<Record>) -> Result<Entry, EntryError> {
        let length = ENTRY_HEADER_BYTES + 4 + records.iter().map(record_bytes).sum::<usize>();
        if length > ENTRY_BYTES_MAX || records.iter().any(|record| record.batch.len() > BATCH_BYTES_MAX) {
            return Err(EntryError::TooLarge { length });
        }
        let mut buf = BytesMut::with_capacity(length);
        buf.put_u32(ENTRY_MAGIC);
        buf.put_u8(ENTRY_VERSION);
        buf.put_bytes(0, 3);
        buf.put_u32(0); // crc, filled in below
        buf.put_u32(length as u32);
        buf.put_u64(header.log.0);
        buf.put_u64(header.epoch.0);
        buf.put_u64(header.seq.0);
        buf.put_u64(header.acked.0);
        buf.put_u32(records.len() as u32);
        for record in &records {
            buf.put_u64(record.stream.0);
            buf.put_i64(record.base_offset.0);
            buf.put_u32(record.record_count);
            buf.put_u32(record.batch.len() as u32);
            buf.put_slice(&record.batch);
        }
        debug_assert_eq!(buf.len(), length);
        let crc = crc32c::crc32c(&buf[12..]);
        buf[8..12].copy_from_slice(&crc.to_be_bytes());
        Ok(Entry { header, records, bytes: buf.freeze() })
    }

    /// Decodes one whole entry; `bytes` must hold exactly one.
    pub fn decode(bytes: Bytes) -> Result<Entry, EntryError> {
        let (header, length) = decode_header(&bytes)?;
        if length != bytes.len() {
            return Err(EntryError::BadLength { length });
        }
        let records = decode_records(bytes.slice(ENTRY_HEADER_BYTES..))?;
        Ok(Entry { header, records, bytes })
    }

    /// The stream end offsets this entry reaches (base offset + record count per record).
    pub fn stream_ends(&self) -> impl Iterator<Item = (StreamId, Offset)> + '_ {
        self.records.iter().map(|record| (record.stream, Offset(record.base_offset.0 + i64::from(record.record_count))))
    }
}

/// The bytes one record takes in an entry.
fn record_bytes(record: &Record) -> usize {
    RECORD_HEADER_BYTES + record.batch.len()
}

/// Splits `records`, in order, over as few entries as hold them. A record
/// whose batch is over `BATCH_BYTES_MAX` still gets an entry of its own,
/// which `Entry::build` refuses: callers check batch sizes first.
pub fn pack(records: Vec<Record>) -> Vec<Vec<Record>> {
    const BODY_BYTES_MAX: usize = ENTRY_BYTES_MAX - ENTRY_HEADER_BYTES - 4;
    let mut entries: Vec<Vec<Record>> = Vec::new();
    let mut bytes = 0;
    for record in records {
        let size = record_bytes(&record);
        match entries.last_mut() {
            Some(entry) if bytes + size <= BODY_BYTES_MAX => entry.push(record),
            _ => {
                bytes = 0;
                entries.push(vec![record]);
            }
        }
        bytes += size;
    }
    entries
}

/// Checks the header and checksum of the entry at the start of `bytes` (which
/// may hold more after it) and returns the header and the entry's length.
/// A prefix too short to hold the whole entry is `Truncated`.
pub fn decode_header(bytes: &[u8]) -> Result<(EntryHeader, usize), EntryError> {
    if bytes.len() < ENTRY_HEADER_BYTES {
        return Err(EntryError::Truncated { have: bytes.len(), need: ENTRY_HEADER_BYTES });
    }
    let mut buf = bytes;
    let magic = buf.get_u32();
    if magic != ENTRY_MAGIC {
        return Err(EntryError::BadMagic { found: magic });
    }
    let version = buf.get_u8();
    if version != ENTRY_VERSION {
        return Err(EntryError::UnsupportedVersion { found: version });
    }
    // The reserved bytes sit before the checksummed range, so they are checked here.
    if buf[..3] != [0, 0, 0] {
        return Err(EntryError::ReservedNotZero);
    }
    buf.advance(3);
    let stored = buf.get_u32();
    let length = buf.get_u32() as usize;
    if !(ENTRY_HEADER_BYTES + 4..=ENTRY_BYTES_MAX).contains(&length) {
        return Err(EntryError::BadLength { length });
    }
    if bytes.len() < length {
        return Err(EntryError::Truncated { have: bytes.len(), need: length });
    }
    let computed = crc32c::crc32c(&bytes[12..length]);
    if computed != stored {
        return Err(EntryError::ChecksumMismatch { stored, computed });
    }
    let header = EntryHeader {
        log: LogId(buf.get_u64()),
        epoch: LogEpoch(buf.get_u64()),
        seq: Seq(buf.get_u64()),
        acked: Seq(buf.get_u64()),
    };
    Ok((header, length))
}

/// The (stream, base offset, record count) of each record of a valid entry,
/// read from the record headers without copying the batches.
pub fn record_spans(entry: &[u8]) -> Result<Vec<RecordSpan>, EntryError> {
    check_prefix(entry).map(|(_, spans, _)| spans)
}

/// A record's stream, base offset and record count.
pub type RecordSpan = (StreamId, Offset, u32);

/// An entry whose header, checksum, length and record bounds were checked
/// once, with what the check read. It is built where untrusted bytes arrive;
/// code after that uses its fields instead of parsing the bytes again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedEntry {
    pub header: EntryHeader,
    pub spans: Vec<RecordSpan>,
    pub bytes: Bytes,
}

impl CheckedEntry {
    /// Checks `bytes`, which must hold exactly one entry.
    pub fn check(bytes: Bytes) -> Result<CheckedEntry, EntryError> {
        let (header, spans, length) = check_prefix(&bytes)?;
        if length != bytes.len() {
            return Err(EntryError::BadLength { length });
        }
        Ok(CheckedEntry { header, spans, bytes })
    }
}

/// Checks the entry at the start of `bytes` (which may hold more after it):
/// header, checksum and record bounds. Returns the header, the record spans
/// and the entry's length.
pub fn check_prefix(bytes: &[u8]) -> Result<(EntryHeader, Vec<RecordSpan>, usize), EntryError> {
    let (header, length) = decode_header(bytes)?;
    let spans = spans_of(&bytes[ENTRY_HEADER_BYTES..length])?;
    Ok((header, spans, length))
}

/// Walks the records of an entry's body, checking every rule once: each
/// record within the body, offsets that cannot overflow, nothing after the
/// last record. Returns each record's span and where its batch lies in `body`.
fn walk_records(body: &[u8]) -> Result<Vec<(RecordSpan, std::ops::Range<usize>)>, EntryError> {
    let bad = |reason| EntryError::BadRecords { reason };
    let mut rest = body;
    if rest.len() < 4 {
        return Err(bad("no record count"));
    }
    let count = rest.get_u32() as usize;
    // Each record needs at least its header, so a huge count cannot allocate much.
    if count > rest.len() / RECORD_HEADER_BYTES {
        return Err(bad("record count larger than the entry"));
    }
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        if rest.len() < RECORD_HEADER_BYTES {
            return Err(bad("record header runs past the entry"));
        }
        let stream = StreamId(rest.get_u64());
        let base_offset = Offset(rest.get_i64());
        let record_count = rest.get_u32();
        let batch_len = rest.get_u32() as usize;
        if batch_len > rest.len() || batch_len > BATCH_BYTES_MAX {
            return Err(bad("batch runs past the entry"));
        }
        if base_offset.0 < 0 || base_offset.0.checked_add(i64::from(record_count)).is_none() {
            return Err(bad("offset out of range"));
        }
        let start = body.len() - rest.len();
        rest.advance(batch_len);
        records.push(((stream, base_offset, record_count), start..start + batch_len));
    }
    if !rest.is_empty() {
        return Err(bad("bytes after the last record"));
    }
    Ok(records)
}

fn spans_of(body: &[u8]) -> Result<Vec<RecordSpan>, EntryError> {
    Ok(walk_records(body)?.into_iter().map(|(span, _)| span).collect())
}

fn decode_records(body: Bytes) -> Result<Vec<Record>, EntryError> {
    Ok(walk_records(&body)?
        .into_iter()
        .map(|((stream, base_offset, record_count), batch)| Record {
            stream,
            base_offset,
            record_count,
            batch: body.slice(batch),
        })
        .collect())
}

#[cfg(test)]
mod tests;

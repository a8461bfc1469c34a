//! The multi-stream object (DESIGN §7): the record batches of many streams
//! (partitions), sorted by stream then offset, an index block saying where
//! each stream's range lies, and a checksummed footer. Readers normally take
//! the index from the metadata (the controller's object index holds the same
//! entries) and fetch one range with a ranged GET; the index block and footer
//! make an object readable on its own (compaction, inspection, repair).
//!
//! ```text
//! data    each range in (stream, start) order: its record batches exactly as
//!         stored, then its producer-state snapshot (opaque bytes), if any
//! index   magic "KIDX" | count u32 | count x entry (72 bytes, big-endian):
//!         stream u64 | start i64 | end i64 | pos u64 | len u64 |
//!         min_ts i64 | max_ts i64 | snapshot_pos u64 | snapshot_len u64
//! footer  index_pos u64 | index_len u32 | crc32c(index) u32 | magic "KEELOBJ1"
//! ```
//!
//! `pos`/`len` cover the range's batches only; `end` is one past its last offset.

use bytes::{BufMut, Bytes, BytesMut};

const INDEX_MAGIC: &[u8; 4] = b"KIDX";
const FOOTER_MAGIC: &[u8; 8] = b"KEELOBJ1";
/// Bytes of the footer at the end of every object.
pub const FOOTER_BYTES: usize = 24;
const ENTRY_BYTES: usize = 72;

/// Where one stream's range lies in an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeIndex {
    pub stream: u64,
    pub start: i64,
    pub end: i64,
    pub pos: u64,
    pub len: u64,
    pub min_ts: i64,
    pub max_ts: i64,
    pub snapshot_pos: u64,
    pub snapshot_len: u64,
}

/// Why bytes are not a valid object footer or index.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("object is {0} bytes, shorter than its footer")]
    Short(usize),
    #[error("bad footer magic")]
    FooterMagic,
    #[error("index block ({pos}, {len}) lies outside the object of {size} bytes")]
    IndexOutside { pos: u64, len: u64, size: u64 },
    #[error("index block checksum mismatch")]
    IndexCrc,
    #[error("bad index block: {0}")]
    Index(String),
}

/// Builds an object: add ranges in (stream, start) order, then finish.
#[derive(Debug, Default)]
pub struct ObjectBuilder {
    data: BytesMut,
    ranges: Vec<RangeIndex>,
}

impl ObjectBuilder {
    /// Adds one stream's range: `batches` hold offsets `start..end` in order.
    pub fn add_range(
        &mut self,
        stream: u64,
        start: i64,
        end: i64,
        (min_ts, max_ts): (i64, i64),
        batches: &[Bytes],
        snapshot: &[u8],
    ) {
        debug_assert!(
            self.ranges.last().is_none_or(|last| (last.stream, last.start) < (stream, start)),
            "ranges are added in (stream, start) order"
        );
        let pos = self.data.len() as u64;
        for batch in batches {
            self.data.extend_from_slice(batch);
        }
        let len = self.data.len() as u64 - pos;
        let snapshot_pos = self.data.len() as u64;
        self.data.extend_from_slice(snapshot);
        self.ranges.push(RangeIndex {
            stream,
            start,
            end,
            pos,
            len,
            min_ts,
            max_ts,
            snapshot_pos,
            snapshot_len: snapshot.len() as u64,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The object's bytes and its index entries.
    pub fn finish(self) -> (Bytes, Vec<RangeIndex>) {
        let ObjectBuilder { mut data, ranges } = self;
        let index_pos = data.len() as u64;
        let mut index = BytesMut::with_capacity(8 + ranges.len() * ENTRY_BYTES);
        index.extend_from_slice(INDEX_MAGIC);
        index.put_u32(ranges.len() as u32);
        for range in &ranges {
            index.put_u64(range.stream);
            index.put_i64(range.start);
            index.put_i64(range.end);
            index.put_u64(range.pos);
            index.put_u64(range.len);
            index.put_i64(range.min_ts);
            index.put_i64(range.max_ts);
            index.put_u64(range.snapshot_pos);
            index.put_u64(range.snapshot_len);
        }
        data.extend_from_slice(&index);
        data.put_u64(index_pos);
        data.put_u32(index.len() as u32);
        data.put_u32(crc32c::crc32c(&index));
        data.extend_from_slice(FOOTER_MAGIC);
        (data.freeze(), ranges)
    }
}

/// Reads the footer (the last `FOOTER_BYTES` of an object of `size` bytes):
/// the index block's position, length and checksum.
pub fn decode_footer(footer: &[u8], size: u64) -> Result<(u64, u64, u32), FormatError> {
    if footer.len() != FOOTER_BYTES || size < FOOTER_BYTES as u64 {
        return Err(FormatError::Short(footer.len().min(size as usize)));
    }
    if &footer[16..24] != FOOTER_MAGIC {
        return Err(FormatError::FooterMagic);
    }
    let pos = u64::from_be_bytes(footer[0..8].try_into().expect("8 bytes"));
    let len = u64::from(u32::from_be_bytes(footer[8..12].try_into().expect("4 bytes")));
    let crc = u32::from_be_bytes(footer[12..16].try_into().expect("4 bytes"));
    let body = size - FOOTER_BYTES as u64;
    if pos.checked_add(len).is_none_or(|end| end != body) {
        return Err(FormatError::IndexOutside { pos, len, size });
    }
    Ok((pos, len, crc))
}

/// Reads an index block whose checksum is `crc`; every range must lie within
/// the object's data (`data_len` bytes).
pub fn decode_index(index: &[u8], crc: u32, data_len: u64) -> Result<Vec<RangeIndex>, FormatError> {
    if crc32c::crc32c(index) != crc {
        return Err(FormatError::IndexCrc);
    }
    if index.len() < 8 || &index[0..4] != INDEX_MAGIC {
        return Err(FormatError::Index("bad magic".into()));
    }
    let count = u32::from_be_bytes(index[4..8].try_into().expect("4 bytes")) as usize;
    let entries = &index[8..];
    if entries.len() != count.saturating_mul(ENTRY_BYTES) {
        return Err(FormatError::Index(format!("{count} entries in {} bytes", entries.len())));
    }
    let mut ranges = Vec::with_capacity(count);
    for entry in entries.chunks_exact(ENTRY_BYTES) {
        let u = |at: usize| u64::from_be_bytes(entry[at..at + 8].try_into().expect("8 bytes"));
        let range = RangeIndex {
            stream: u(0),
            start: u(8) as i64,
            end: u(16) as i64,
            pos: u(24),
            len: u(32),
            min_ts: u(40) as i64,
            max_ts: u(48) as i64,
            snapshot_pos: u(56),
            snapshot_len: u(64),
        };
        let inside = |pos: u64, len: u64| pos.checked_add(len).is_some_and(|end| end <= data_len);
        if range.end <= range.start || !inside(range.pos, range.len) || !inside(range.snapshot_pos, range.snapshot_len)
        {
            return Err(FormatError::Index(format!("range {range:?} is empty or outside the data")));
        }
        ranges.push(range);
    }
    Ok(ranges)
}

/// Reads a whole object's index through its footer.
pub fn read_index(object: &[u8]) -> Result<Vec<RangeIndex>, FormatError> {
    let size = object.len() as u64;
    if object.len() < FOOTER_BYTES {
        return Err(FormatError::Short(object.len()));
    }
    let (pos, len, crc) = decode_footer(&object[object.len() - FOOTER_BYTES..], size)?;
    decode_index(&object[pos as usize..(pos + len) as usize], crc, pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_lists_its_ranges_and_each_range_reads_back_exactly() {
        let mut builder = ObjectBuilder::default();
        let a = [Bytes::from_static(b"batch-a0"), Bytes::from_static(b"batch-a1")];
        let b = [Bytes::from_static(b"batch-b0")];
        builder.add_range(1, 0, 7, (10, 20), &a, b"snapshot");
        builder.add_range(2, 40, 41, (30, 30), &b, b"");
        let (object, ranges) = builder.finish();
        assert_eq!(read_index(&object).unwrap(), ranges);
        let first = ranges[0];
        assert_eq!(&object[first.pos as usize..(first.pos + first.len) as usize], b"batch-a0batch-a1");
        assert_eq!(&object[first.snapshot_pos as usize..][..first.snapshot_len as usize], b"snapshot");
        assert_eq!((ranges[1].start, ranges[1].end, ranges[1].len), (40, 41, 8));
    }

    #[test]
    fn damage_to_the_footer_or_index_is_detected() {
        let mut builder = ObjectBuilder::default();
        builder.add_range(1, 0, 1, (0, 0), &[Bytes::from_static(b"x")], b"");
        let (object, _) = builder.finish();
        for at in 0..object.len() {
            let mut damaged = object.to_vec();
            damaged[at] ^= 0x40;
            // Damage to the data itself is caught by each batch's own CRC.
            if at == 0 {
                continue;
            }
            assert!(read_index(&damaged).is_err(), "a flipped bit at {at} of the index or footer is found");
        }
        assert_eq!(read_index(&object[..10]), Err(FormatError::Short(10)));
    }
}

//! Opening the journal: read every segment in order, rebuild the index, and
//! cut off a torn tail left by a crash.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use keel_wal_client::entry::{check_prefix, EntryError};
use keel_wal_client::ids::{LogEpoch, LogId, Seq};

use super::{
    frame_crc, io_error, segment_path, sync_dir, JournalError, JournalOptions, Location, LogContents, Segment,
    FRAME_BYTES, FRAME_BYTES_UNBATCHED, FRAME_MAGIC, LOG_STATE_MAGIC, LOG_STATE_RECORD_BYTES, SEGMENT_HEADER_BYTES,
    SEGMENT_MAGIC, SEGMENT_VERSION, SEGMENT_VERSION_UNBATCHED, SEGMENT_VERSION_UNFRAMED,
};
use crate::journal::ENTRY_MAGIC;

pub(super) struct Scanned {
    pub(super) segments: Vec<Segment>,
    /// Trimmed segment files kept for reuse.
    pub(super) recycled: Vec<std::path::PathBuf>,
    pub(super) write_offset: u64,
    pub(super) logs: BTreeMap<LogId, LogContents>,
    pub(super) entries: u64,
    pub(super) torn_bytes: u64,
}

fn u32_at(buf: &[u8], pos: usize) -> u32 {
    u32::from_be_bytes(buf[pos..pos + 4].try_into().expect("four bytes"))
}

fn u64_at(buf: &[u8], pos: usize) -> u64 {
    u64::from_be_bytes(buf[pos..pos + 8].try_into().expect("eight bytes"))
}

pub(super) fn scan(options: &JournalOptions) -> Result<Scanned, JournalError> {
    let mut numbers = Vec::new();
    let mut recycled = Vec::new();
    for dirent in std::fs::read_dir(&options.dir).map_err(io_error(&options.dir))? {
        let path = dirent.map_err(io_error(&options.dir))?.path();
        let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default().to_owned();
        if name.ends_with(".kseg.new") || name.starts_with("spare-") {
            // A segment being created, or prepared ahead, when the node stopped.
            std::fs::remove_file(&path).map_err(io_error(&path))?;
        } else if name.starts_with("free-") && name.ends_with(".kseg") {
            let len = std::fs::metadata(&path).map_err(io_error(&path))?.len();
            if len == options.segment_bytes && recycled.len() < options.recycled_segments_max {
                recycled.push(path);
            } else {
                std::fs::remove_file(&path).map_err(io_error(&path))?;
            }
        } else if let Some(number) = name.strip_prefix("segment-").and_then(|rest| rest.strip_suffix(".kseg")) {
            let number = number.parse::<u64>().map_err(|_| JournalError::Corrupt {
                path: path.clone(),
                offset: 0,
                reason: "unexpected segment file name".into(),
            })?;
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    let mut scanned = Scanned {
        segments: vec![],
        recycled,
        write_offset: SEGMENT_HEADER_BYTES,
        logs: BTreeMap::new(),
        entries: 0,
        torn_bytes: 0,
    };
    let count = numbers.len();
    for (position, number) in numbers.into_iter().enumerate() {
        let last = position + 1 == count;
        scan_segment(options, number, last, &mut scanned)?;
    }
    // Trim points come from log-state records, which may follow the entries.
    for contents in scanned.logs.values_mut() {
        contents.forget_trimmed();
    }
    sync_dir(&options.dir)?;
    Ok(scanned)
}

/// Where a record of the segment starts, and its frame when it has one.
#[derive(Clone, Copy)]
enum Layout {
    /// Version 1: records follow each other, and the data ends at zeros.
    Unframed,
    /// Version 2 and 3: each record has a frame checked against the
    /// segment's salt; in version 3 (`batched`) the frame also names where
    /// the record's batch starts.
    Framed { salt: u64, batched: bool },
}

/// A record that checks, found after the end of a segment's data.
struct Stray {
    /// Where the batch of its frame starts (version 3).
    batch: Option<u64>,
    /// Where it ends.
    end: usize,
}

impl Layout {
    /// Where the record framed at `pos` starts, and its batch, if the frame
    /// is one of this segment's (always, for unframed segments).
    fn record_at(self, buf: &[u8], pos: usize) -> Option<(usize, Option<u64>)> {
        match self {
            Layout::Unframed => Some((pos, None)),
            Layout::Framed { salt, batched } => {
                let record = pos + self.frame_bytes();
                if record + 12 > buf.len() || u32_at(buf, pos) != FRAME_MAGIC {
                    return None;
                }
                let batch = batched.then(|| u64_at(buf, pos + 8));
                (u32_at(buf, pos + 4) == frame_crc(salt, batch, &buf[record..record + 12])).then_some((record, batch))
            }
        }
    }

    fn frame_bytes(self) -> usize {
        match self {
            Layout::Unframed => 0,
            Layout::Framed { batched: true, .. } => FRAME_BYTES,
            Layout::Framed { batched: false, .. } => FRAME_BYTES_UNBATCHED,
        }
    }
}

/// A record that checks, at `at`: its length.
fn valid_record(buf: &[u8], at: usize) -> Option<usize> {
    match u32_at(buf, at) {
        ENTRY_MAGIC => check_prefix(&buf[at..]).ok().map(|(_, _, len)| len),
        LOG_STATE_MAGIC => (at + LOG_STATE_RECORD_BYTES <= buf.len()
            && crc32c::crc32c(&buf[at + 8..at + LOG_STATE_RECORD_BYTES]) == u32_at(buf, at + 4))
        .then_some(LOG_STATE_RECORD_BYTES),
        _ => None,
    }
}

/// The valid records of this segment that start after `pos`. Only the
/// places where a frame's magic (or, unframed, a record's) appears are
/// checked, found with a vectorised search: the rest of a segment can be
/// tens of MiB.
fn valid_records_after(buf: &[u8], pos: usize, layout: Layout) -> Vec<Stray> {
    let Some(after) = buf.get(pos + 1..) else { return Vec::new() };
    let magics: &[u32] = match layout {
        Layout::Framed { .. } => &[FRAME_MAGIC],
        Layout::Unframed => &[ENTRY_MAGIC, LOG_STATE_MAGIC],
    };
    let mut found: Vec<Stray> = magics
        .iter()
        .flat_map(|magic| {
            let needle = magic.to_be_bytes();
            memchr::memmem::find_iter(after, &needle).map(|found| pos + 1 + found).collect::<Vec<_>>()
        })
        .filter_map(|at| {
            let (record, batch) = layout.record_at(buf, at)?;
            let len = (record + 4 <= buf.len()).then(|| valid_record(buf, record)).flatten()?;
            Some(Stray { batch, end: record + len })
        })
        .collect();
    found.sort_by_key(|stray| stray.end);
    found
}

fn scan_segment(options: &JournalOptions, number: u64, last: bool, scanned: &mut Scanned) -> Result<(), JournalError> {
    let path = segment_path(&options.dir, number);
    let corrupt =
        |offset: u64, reason: &str| JournalError::Corrupt { path: path.clone(), offset, reason: reason.to_owned() };
    let file = OpenOptions::new().read(true).write(true).open(&path).map_err(io_error(&path))?;
    let len = file.metadata().map_err(io_error(&path))?.len();
    if len != options.segment_bytes {
        return Err(corrupt(0, &format!("segment is {len} bytes, segment_bytes is {}", options.segment_bytes)));
    }
    let mut buf = vec![0; len as usize];
    file.read_exact_at(&mut buf, 0).map_err(io_error(&path))?;
    if u32_at(&buf, 0) != SEGMENT_MAGIC {
        return Err(corrupt(0, "bad segment header"));
    }
    let (layout, header_bytes) = match buf[4] {
        SEGMENT_VERSION => (Layout::Framed { salt: u64_at(&buf, 16), batched: true }, 24),
        SEGMENT_VERSION_UNBATCHED => (Layout::Framed { salt: u64_at(&buf, 16), batched: false }, 24),
        SEGMENT_VERSION_UNFRAMED => (Layout::Unframed, 16),
        version => return Err(corrupt(0, &format!("unsupported segment version {version}"))),
    };
    let header_crc = crc32c::crc32c(&buf[..header_bytes]);
    if u64_at(&buf, 8) != number || u32_at(&buf, header_bytes) != header_crc {
        return Err(corrupt(0, "bad segment header"));
    }
    let (salt, batched) = match layout {
        Layout::Framed { salt, batched } => (Some(salt), batched),
        Layout::Unframed => (None, false),
    };
    let mut segment = Segment {
        number,
        salt,
        batched,
        path: path.clone(),
        file,
        last_seqs: BTreeMap::new(),
        states: Default::default(),
    };
    let mut pos = SEGMENT_HEADER_BYTES as usize;
    // A record of this segment that does not check: a torn write, or damage.
    let mut damaged = false;
    while pos + layout.frame_bytes() + 4 <= buf.len() {
        // No frame of this segment (zeros, or an older life's bytes): the end.
        let Some((at, _)) = layout.record_at(&buf, pos) else { break };
        match u32_at(&buf, at) {
            0 if matches!(layout, Layout::Unframed) => break,
            ENTRY_MAGIC => match check_prefix(&buf[at..]) {
                Ok((header, spans, entry_len)) => {
                    let contents = scanned.logs.entry(header.log).or_default();
                    if contents.last_seq().is_some_and(|held| header.seq != held.next()) {
                        return Err(corrupt(at as u64, &format!("{} entry {} out of order", header.log, header.seq)));
                    }
                    let location = Location { segment: number, offset: at as u64, len: entry_len as u32 };
                    contents.index(&header, location, &spans);
                    segment.last_seqs.insert(header.log, header.seq);
                    scanned.entries += 1;
                    pos = at + entry_len;
                }
                // A checksummed entry with bad records was written that way: not a torn write.
                Err(EntryError::BadRecords { .. }) => return Err(corrupt(at as u64, "entry records are malformed")),
                Err(_) => {
                    damaged = true;
                    break;
                }
            },
            LOG_STATE_MAGIC if at + LOG_STATE_RECORD_BYTES <= buf.len() => {
                let body = &buf[at + 8..at + LOG_STATE_RECORD_BYTES];
                if crc32c::crc32c(body) != u32_at(&buf, at + 4) {
                    damaged = true;
                    break;
                }
                let log = LogId(u64_at(body, 0));
                scanned.logs.entry(log).or_default().restore_state(LogEpoch(u64_at(body, 8)), Seq(u64_at(body, 16)));
                segment.states.insert(log);
                pos = at + LOG_STATE_RECORD_BYTES;
            }
            _ => {
                damaged = true;
                break;
            }
        }
    }
    // A torn write only ever hits the end of the journal: damage in an older
    // segment means acknowledged data is damaged, and cutting it off would
    // lose it silently. So does a valid record after the end of the data,
    // unless its frame says its batch starts at or before that end: then the
    // damage and the record are the same last batch, never made durable.
    let strays = valid_records_after(&buf, pos, layout);
    let torn_batch =
        last && !strays.is_empty() && strays.iter().all(|stray| stray.batch.is_some_and(|batch| batch <= pos as u64));
    if (damaged && !last) || (!strays.is_empty() && !torn_batch) {
        return Err(corrupt(pos as u64, "damaged record before the end of the journal"));
    }
    if last {
        let torn = match layout {
            // Everything after the data must be zero: a torn write may have
            // left a partial record, or stray sectors further on.
            Layout::Unframed => pos.min(buf.len())..buf.len(),
            // The rest of the last batch goes, up to its last valid record.
            Layout::Framed { .. } if torn_batch => pos..strays.last().map_or(pos, |stray| stray.end),
            // Zeroing the torn record's frame ends the data before it.
            Layout::Framed { .. } if damaged => pos..pos + layout.frame_bytes(),
            Layout::Framed { .. } => pos..pos,
        };
        if let Some(first_nonzero) = buf[torn.clone()].iter().position(|byte| *byte != 0) {
            let zeros = vec![0; torn.len() - first_nonzero];
            let from = (torn.start + first_nonzero) as u64;
            segment.file.write_all_at(&zeros, from).map_err(io_error(&path))?;
            segment.file.sync_data().map_err(io_error(&path))?;
            scanned.torn_bytes += zeros.len() as u64;
        }
        scanned.write_offset = pos as u64;
    }
    scanned.segments.push(segment);
    Ok(())
}

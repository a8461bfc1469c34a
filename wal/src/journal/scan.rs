//! Opening the journal: read every segment in order, rebuild the index, and
//! cut off a torn tail left by a crash.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use keel_wal_client::entry::{check_prefix, EntryError};
use keel_wal_client::ids::{LogEpoch, LogId, Seq};

use super::{
    frame_crc, io_error, segment_path, sync_dir, JournalError, JournalOptions, Location, LogContents, Segment,
    FRAME_BYTES, FRAME_MAGIC, LOG_STATE_MAGIC, LOG_STATE_RECORD_BYTES, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC,
    SEGMENT_VERSION, SEGMENT_VERSION_UNFRAMED,
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
    /// Version 2: each record has a frame checked against the segment's salt.
    Framed { salt: u64 },
}

impl Layout {
    /// Where the record framed at `pos` starts, if the frame is one of this
    /// segment's (always, for unframed segments).
    fn record_at(self, buf: &[u8], pos: usize) -> Option<usize> {
        match self {
            Layout::Unframed => Some(pos),
            Layout::Framed { salt } => {
                let record = pos + FRAME_BYTES;
                let ours = record + 12 <= buf.len()
                    && u32_at(buf, pos) == FRAME_MAGIC
                    && u32_at(buf, pos + 4) == frame_crc(salt, &buf[record..record + 12]);
                ours.then_some(record)
            }
        }
    }

    fn frame_bytes(self) -> usize {
        match self {
            Layout::Unframed => 0,
            Layout::Framed { .. } => FRAME_BYTES,
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

/// Whether a valid record of this segment starts after `pos`. Only the
/// places where a frame's magic (or, unframed, a record's) appears are
/// checked, found with a vectorised search: the rest of a segment can be
/// tens of MiB.
fn valid_record_after(buf: &[u8], pos: usize, layout: Layout) -> bool {
    let Some(after) = buf.get(pos + 1..) else { return false };
    let magics: &[u32] = match layout {
        Layout::Framed { .. } => &[FRAME_MAGIC],
        Layout::Unframed => &[ENTRY_MAGIC, LOG_STATE_MAGIC],
    };
    magics.iter().any(|magic| {
        memchr::memmem::find_iter(after, &magic.to_be_bytes()).map(|found| pos + 1 + found).any(|at| {
            layout
                .record_at(buf, at)
                .is_some_and(|record| record + 4 <= buf.len() && valid_record(buf, record).is_some())
        })
    })
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
        SEGMENT_VERSION => (Layout::Framed { salt: u64_at(&buf, 16) }, 24),
        SEGMENT_VERSION_UNFRAMED => (Layout::Unframed, 16),
        version => return Err(corrupt(0, &format!("unsupported segment version {version}"))),
    };
    let header_crc = crc32c::crc32c(&buf[..header_bytes]);
    if u64_at(&buf, 8) != number || u32_at(&buf, header_bytes) != header_crc {
        return Err(corrupt(0, "bad segment header"));
    }
    let salt = match layout {
        Layout::Framed { salt } => Some(salt),
        Layout::Unframed => None,
    };
    let mut segment =
        Segment { number, salt, path: path.clone(), file, last_seqs: BTreeMap::new(), states: Default::default() };
    let mut pos = SEGMENT_HEADER_BYTES as usize;
    // A record of this segment that does not check: a torn write, or damage.
    let mut damaged = false;
    while pos + layout.frame_bytes() + 4 <= buf.len() {
        // No frame of this segment (zeros, or an older life's bytes): the end.
        let Some(at) = layout.record_at(&buf, pos) else { break };
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
    // segment, or a valid record after the end of the data, means
    // acknowledged data is damaged, and cutting it off would lose it silently.
    if (damaged && !last) || valid_record_after(&buf, pos, layout) {
        return Err(corrupt(pos as u64, "damaged record before the end of the journal"));
    }
    if last {
        let torn = match layout {
            // Everything after the data must be zero: a torn write may have
            // left a partial record, or stray sectors further on.
            Layout::Unframed => pos.min(buf.len())..buf.len(),
            // Zeroing the torn record's frame ends the data before it.
            Layout::Framed { .. } if damaged => pos..pos + FRAME_BYTES,
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

//! The WAL node's journal: one multiplexed journal for all logs, in segment
//! files, written with group commit (many records, one write and one
//! fdatasync per batch).
//!
//! ```text
//! segment-0000000000000007.kseg   (preallocated to segment_bytes)
//! +---------------------+-------+--------+-------+--------+-----+----------------------------+
//! | segment header (32) | frame | record | frame | record | ... | zeros, or an older life's  |
//! +---------------------+-------+--------+-------+--------+-----+----------------------------+
//! header: magic "KSEG" | version 3 | zero x3 | number u64 | salt u64 | crc32c u32 (of the 24 bytes before) | zero x4
//! frame:  magic "KREC" | crc32c u32 of (salt u64, batch u64, the record's first 12 bytes) | batch u64
//!         (batch: the segment offset where the record's batch starts)
//! record: a WAL entry (magic "KWAL", its own length and CRC32C), or
//!         a log state: magic "KLOG" | crc32c u32 (of the rest) | log u64 | fence epoch u64 | trimmed-through seq u64
//! ```
//!
//! Segments are preallocated and zero-filled when created, so appending never
//! changes a file's size or extents and an fdatasync costs what the data
//! costs. A segment whose entries are all trimmed is not deleted but recycled
//! (up to `recycled_segments_max` of them): it becomes the next segment, with
//! a new number, so a journal in steady state writes each byte once and never
//! zero-fills. A record never spans segments.
//!
//! The frame ties a record to its segment: the salt is drawn at random for
//! each segment, and a record's first 12 bytes hold its own checksum, so a
//! frame from the segment's previous life, or one whose record a torn write
//! left unwritten, fails its check. The data of a segment ends at the first
//! position whose frame does not check. (Random, so that no producer can
//! plant bytes in its records that would pass as a later life's frame.)
//!
//! On open, every segment is scanned and each log's entries and newest fence
//! are restored. A record that is cut short, fails its checksum or is
//! missing at the end of the journal is a torn write from a crash: it was
//! never acknowledged (acknowledgements follow the fdatasync), so it is cut
//! off and the journal continues from there. A power loss in the middle of a
//! batch may keep later records of the batch and lose earlier ones (the disk
//! writes the batch's pages in any order until the fdatasync returns): valid
//! records after the damage whose frames name a batch that starts at or
//! before it are that batch's unacknowledged tail, and are cut off too. A
//! valid record of a later batch after damage means damage to acknowledged
//! data (a batch is written only once the one before is durable): that is
//! corruption, and the journal refuses to open. Version-1 segments (no
//! frames) and version-2 ones (frames without the batch) are still read,
//! with damage followed by any valid record taken as corruption; new
//! segments are version 3.
//!
//! A log-state record is written when a log is fenced, and written again to
//! the active segment for every log of a segment about to be deleted (once
//! every entry in it is trimmed). So a fence is never lost, and a log whose
//! entries were all trimmed still knows how far it went after a restart.
//! Entries never take the last `log_state_reserve` bytes of a segment: a
//! journal at its cap (or on a full disk) still has room for the log states
//! a trim must write before it can delete anything, so a trim frees it
//! rather than wedging it.

mod scan;
mod spare;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::{BufMut, Bytes, BytesMut};
use keel_controller_client::StreamId;
pub(crate) use keel_wal_client::entry::ENTRY_MAGIC;
use keel_wal_client::entry::{decode_header, CheckedEntry, Entry, EntryHeader, RecordSpan};
use keel_wal_client::ids::{LogEpoch, LogId, Offset, Seq};

pub const SEGMENT_MAGIC: u32 = 0x4B53_4547; // "KSEG"
pub const LOG_STATE_MAGIC: u32 = 0x4B4C_4F47; // "KLOG"
pub const FRAME_MAGIC: u32 = 0x4B52_4543; // "KREC"
pub const SEGMENT_HEADER_BYTES: u64 = 32;
pub const FRAME_BYTES: usize = 16;
/// A version-2 frame: no batch.
pub const FRAME_BYTES_UNBATCHED: usize = 8;
pub const LOG_STATE_RECORD_BYTES: usize = 32;
const SEGMENT_VERSION: u8 = 3;
/// Segments whose frames do not name their batch.
const SEGMENT_VERSION_UNBATCHED: u8 = 2;
/// Segments without frames, written before segments were recycled.
const SEGMENT_VERSION_UNFRAMED: u8 = 1;

/// Journal settings, passed explicitly.
#[derive(Clone, Debug)]
pub struct JournalOptions {
    pub dir: PathBuf,
    /// Size of every segment file. Must hold the largest entry.
    pub segment_bytes: u64,
    /// The most bytes the segment files may take; `None` for no cap. A write
    /// that would need a segment beyond it is refused (`Full`), retriably.
    pub journal_bytes_max: Option<u64>,
    /// Trimmed segments kept to be reused as new ones; beyond this many they
    /// are deleted, so disk use falls after a large trim.
    pub recycled_segments_max: usize,
    /// Faults a chaos run may inject (`crate::faults`); `None` in production.
    pub faults: Option<std::sync::Arc<crate::faults::DiskFaults>>,
}

/// Why the journal failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal I/O failed on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("journal is corrupt in {path} at offset {offset}: {reason}")]
    Corrupt { path: PathBuf, offset: u64, reason: String },
    #[error("a record of {bytes} bytes does not fit in a segment of {segment_bytes} bytes")]
    RecordTooLarge { bytes: usize, segment_bytes: u64 },
    #[error("{log} has no entry {seq} in the journal")]
    NotFound { log: LogId, seq: Seq },
    #[error("the journal is at its cap of {cap} bytes; it takes writes again once entries are trimmed")]
    Full { cap: u64 },
    #[error("no room for a new journal segment in {path}: {source}")]
    NoSpace { path: PathBuf, source: std::io::Error },
}

impl JournalError {
    /// Whether the write may succeed later without anything being repaired:
    /// nothing was written, there was only no room for it.
    pub fn is_retryable(&self) -> bool {
        matches!(self, JournalError::Full { .. } | JournalError::NoSpace { .. })
    }
}

/// One record to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalRecord {
    /// A checked WAL entry, stored byte for byte.
    Entry(CheckedEntry),
    /// The log's newest fence and how far it is trimmed.
    LogState { log: LogId, epoch: LogEpoch, trimmed: Seq },
}

/// Where an entry lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Location {
    segment: u64,
    offset: u64,
    len: u32,
}

/// What the journal holds for one log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogContents {
    /// Entries in seq order, from `first_seq`.
    locations: std::collections::VecDeque<(Seq, Location)>,
    /// Per stream, the offset ranges its records cover, in order: (base
    /// offset, end offset, seq of the entry holding them).
    streams: BTreeMap<StreamId, std::collections::VecDeque<(Offset, Offset, Seq)>>,
    /// The newest fence recorded for the log.
    pub fence: Option<LogEpoch>,
    /// Entries up to here may go (restored from log-state records).
    pub trim_seq: Seq,
    /// The highest "acked" carried by an entry of the log.
    pub writer_acked: Seq,
    /// The epoch of the newest entry (the writer's, from its header).
    pub last_entry_epoch: LogEpoch,
}

impl LogContents {
    /// Indexes a checked entry (its header and record spans) at `location`.
    fn index(&mut self, header: &EntryHeader, location: Location, spans: &[RecordSpan]) {
        if let Some(last) = self.last_seq() {
            assert_eq!(header.seq, last.next(), "{}: journal entries must be appended in seq order", header.log);
        }
        self.locations.push_back((header.seq, location));
        self.writer_acked = self.writer_acked.max(header.acked.min(header.seq));
        self.last_entry_epoch = header.epoch;
        for &(stream, base, count) in spans {
            let end = Offset(base.0 + i64::from(count));
            self.streams.entry(stream).or_default().push_back((base, end, header.seq));
        }
    }

    /// Forgets entries up to the trim point.
    fn forget_trimmed(&mut self) {
        let trim = self.trim_seq;
        while self.locations.front().is_some_and(|(held, _)| *held <= trim) {
            self.locations.pop_front();
        }
        for ranges in self.streams.values_mut() {
            while ranges.front().is_some_and(|(_, _, seq)| *seq <= trim) {
                ranges.pop_front();
            }
        }
        self.streams.retain(|_, ranges| !ranges.is_empty());
    }

    /// Restores a log-state record: the newest fence and trim win. A trim
    /// past the last entry held (a replica that skipped ahead) makes the
    /// next entry follow the trim point.
    fn restore_state(&mut self, epoch: LogEpoch, trimmed: Seq) {
        self.fence = Some(self.fence.map_or(epoch, |fence| fence.max(epoch)));
        self.trim_seq = self.trim_seq.max(trimmed);
        self.forget_trimmed();
    }

    /// The first seq still held, if any.
    pub fn first_seq(&self) -> Option<Seq> {
        self.locations.front().map(|(seq, _)| *seq)
    }

    /// The last seq held, if any.
    pub fn last_seq(&self) -> Option<Seq> {
        self.locations.back().map(|(seq, _)| *seq)
    }

    /// How far the log went: its last entry, or its trim point once every
    /// entry is trimmed.
    pub fn end_seq(&self) -> Seq {
        self.last_seq().unwrap_or(self.trim_seq).max(self.trim_seq)
    }
}

/// A segment file of the journal.
#[derive(Debug)]
struct Segment {
    number: u64,
    /// The salt of its frames; `None` for an unframed (version 1) segment.
    salt: Option<u64>,
    /// Its frames name their batch (version 3): records of it are written here.
    batched: bool,
    path: PathBuf,
    file: File,
    /// Per log, the last seq this segment holds.
    last_seqs: BTreeMap<LogId, Seq>,
    /// Logs with a log-state record in this segment.
    states: std::collections::BTreeSet<LogId>,
}

/// The open journal.
#[derive(Debug)]
pub struct Journal {
    options: JournalOptions,
    /// Oldest first; the last one is the active segment.
    segments: Vec<Segment>,
    /// Prepares the next segment's file while this one fills (when there is
    /// no recycled one to take).
    spares: spare::SparePreparer,
    /// Trimmed segment files waiting to be reused, named `free-*.kseg`.
    recycled: Vec<PathBuf>,
    /// Where the next record goes in the active segment.
    write_offset: u64,
    /// Frames and records of the active segment not written to the file yet,
    /// with their offsets, in order: `sync` writes them with one call.
    pending: Vec<(u64, Bytes)>,
    logs: BTreeMap<LogId, LogContents>,
}

/// What opening the journal found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub segments: usize,
    pub entries: u64,
    /// Bytes of a torn tail that were zeroed.
    pub torn_bytes: u64,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io { path: path.to_path_buf(), source }
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("segment-{number:016}.kseg"))
}

fn spare_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("spare-{number:016}.kseg"))
}

fn recycled_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("free-{number:016}.kseg"))
}

impl Journal {
    /// Opens the journal in `options.dir`, creating it if needed, and restores every log.
    pub fn open(options: JournalOptions) -> Result<(Journal, OpenReport), JournalError> {
        assert!(
            options.segment_bytes >= SEGMENT_HEADER_BYTES + LOG_STATE_RECORD_BYTES as u64 * 2,
            "segment_bytes too small to hold anything"
        );
        std::fs::create_dir_all(&options.dir).map_err(io_error(&options.dir))?;
        let scanned = scan::scan(&options)?;
        let spares = spare::SparePreparer::start(options.segment_bytes).map_err(io_error(&options.dir))?;
        let mut journal = Journal {
            options,
            segments: scanned.segments,
            spares,
            recycled: scanned.recycled,
            write_offset: scanned.write_offset,
            pending: Vec::new(),
            logs: scanned.logs,
        };
        match journal.segments.last() {
            None => journal.start_segment(0)?,
            // Written before frames named their batch: new records go to a new segment.
            Some(active) if !active.batched => journal.start_segment(active.number + 1)?,
            Some(active) if journal.recycled.is_empty() => {
                journal.spares.prepare(spare_path(&journal.options.dir, active.number + 1))
            }
            Some(_) => {}
        }
        let report =
            OpenReport { segments: journal.segments.len(), entries: scanned.entries, torn_bytes: scanned.torn_bytes };
        Ok((journal, report))
    }

    /// What the journal holds for each log.
    pub fn logs(&self) -> &BTreeMap<LogId, LogContents> {
        &self.logs
    }

    /// Writes `records` in order and makes them durable with one fdatasync per
    /// segment touched. Entries must already be validated by the node's rules.
    pub fn append(&mut self, records: &[JournalRecord]) -> Result<(), JournalError> {
        for record in records {
            self.write(record)?;
        }
        self.sync()
    }

    /// Adds one record to the batch being written; it reaches the file and
    /// becomes durable at the next `sync`. If the active segment is full it is
    /// synced and the next one started first; when that is not possible (the
    /// cap, or no disk space) nothing is written and the error is retryable.
    pub fn write(&mut self, record: &JournalRecord) -> Result<(), JournalError> {
        let bytes = match record {
            JournalRecord::Entry(entry) => entry.bytes.clone(),
            JournalRecord::LogState { log, epoch, trimmed } => encode_log_state(*log, *epoch, *trimmed),
        };
        let framed = (FRAME_BYTES + bytes.len()) as u64;
        let reserve = match record {
            JournalRecord::Entry(_) => log_state_reserve(self.options.segment_bytes),
            JournalRecord::LogState { .. } => 0,
        };
        if framed + reserve > self.options.segment_bytes - SEGMENT_HEADER_BYTES {
            return Err(JournalError::RecordTooLarge { bytes: bytes.len(), segment_bytes: self.options.segment_bytes });
        }
        if self.write_offset + framed + reserve > self.options.segment_bytes {
            if let Some(cap) = self.options.journal_bytes_max {
                if self.recycled.is_empty() && self.disk_bytes() + self.options.segment_bytes > cap {
                    return Err(JournalError::Full { cap });
                }
            }
            // Older segments are durable before a newer one holds anything,
            // so damage can only ever be at the end of the journal.
            self.sync()?;
            let next = self.active().number + 1;
            self.start_segment(next)?;
        }
        let (number, salt) = (self.active().number, self.active().salt.expect("the active segment is framed"));
        let offset = self.write_offset + FRAME_BYTES as u64;
        // The batch is what is written between two fdatasyncs.
        let batch = self.pending.first().map_or(self.write_offset, |(start, _)| *start);
        self.pending.push((self.write_offset, encode_frame(salt, batch, &bytes)));
        self.pending.push((offset, bytes.clone()));
        self.write_offset += framed;
        match record {
            JournalRecord::Entry(entry) => {
                let location = Location { segment: number, offset, len: bytes.len() as u32 };
                self.index_entry(&entry.header, location, &entry.spans);
            }
            JournalRecord::LogState { log, epoch, trimmed } => self.index_log_state(*log, *epoch, *trimmed),
        }
        Ok(())
    }

    /// Writes the batch to the active segment and makes every record written
    /// so far durable with one fdatasync.
    pub fn sync(&mut self) -> Result<(), JournalError> {
        let pending = std::mem::take(&mut self.pending);
        let Some((start, _)) = pending.first() else { return Ok(()) };
        let active = self.segments.last().expect("a journal always has an active segment");
        let pieces: Vec<&[u8]> = pending.iter().map(|(_, bytes)| bytes.as_ref()).collect();
        if let Some(faults) = &self.options.faults {
            faults.maybe_cut_power(&active.file, &pieces, *start);
        }
        write_all_vectored_at(&active.file, &pieces, *start).map_err(io_error(&active.path))?;
        if let Some(faults) = &self.options.faults {
            faults.before_sync();
        }
        active.file.sync_data().map_err(io_error(&active.path))
    }

    /// Reads entry `seq` of `log`, checking its checksum again.
    pub fn read(&self, log: LogId, seq: Seq) -> Result<Bytes, JournalError> {
        let not_found = || JournalError::NotFound { log, seq };
        let contents = self.logs.get(&log).ok_or_else(not_found)?;
        let first = contents.first_seq().ok_or_else(not_found)?;
        let index = seq.0.checked_sub(first.0).ok_or_else(not_found)? as usize;
        let (held, location) = *contents.locations.get(index).ok_or_else(not_found)?;
        assert_eq!(held, seq, "journal index out of order for {log}");
        if location.segment == self.active().number {
            if let Some((_, bytes)) = self.pending.iter().find(|(offset, _)| *offset == location.offset) {
                return Ok(bytes.clone());
            }
        }
        let segment = self.segments.iter().find(|s| s.number == location.segment).expect("indexed segments exist");
        let mut buf = vec![0; location.len as usize];
        segment.file.read_exact_at(&mut buf, location.offset).map_err(io_error(&segment.path))?;
        match decode_header(&buf) {
            Ok((header, _)) if header.log == log && header.seq == seq => Ok(Bytes::from(buf)),
            Ok(_) | Err(_) => Err(JournalError::Corrupt {
                path: segment.path.clone(),
                offset: location.offset,
                reason: format!("entry {seq} of {log} no longer reads back"),
            }),
        }
    }

    /// The batches of `stream` in `log` from `from` on, in entries up to
    /// `end_seq`, up to about `max_bytes` (at least one batch): each as (base
    /// offset, record count, batch). Records are never copied apart from the
    /// entry they arrived in.
    pub fn read_stream(
        &self,
        log: LogId,
        stream: StreamId,
        from: Offset,
        end_seq: Seq,
        max_bytes: u64,
    ) -> Result<Vec<(Offset, u32, Bytes)>, JournalError> {
        let Some(ranges) = self.logs.get(&log).and_then(|contents| contents.streams.get(&stream)) else {
            return Ok(vec![]);
        };
        let mut batches = Vec::new();
        let mut bytes = 0u64;
        for (_, _, seq) in ranges.iter().filter(|(_, end, seq)| *end > from && *seq <= end_seq) {
            if !batches.is_empty() && bytes >= max_bytes {
                break;
            }
            let entry = Entry::decode(self.read(log, *seq)?).map_err(|error| JournalError::Corrupt {
                path: self.options.dir.clone(),
                offset: 0,
                reason: format!("entry {seq} of {log}: {error}"),
            })?;
            for record in entry.records.into_iter().filter(|record| record.stream == stream) {
                if Offset(record.base_offset.0 + i64::from(record.record_count)) > from {
                    bytes += record.batch.len() as u64;
                    batches.push((record.base_offset, record.record_count, record.batch));
                }
            }
        }
        Ok(batches)
    }

    /// Lets entries of `log` up to `seq` go, and deletes every segment that
    /// then holds nothing needed (fences in it are written again first).
    pub fn trim(&mut self, log: LogId, seq: Seq) -> Result<(), JournalError> {
        if let Some(contents) = self.logs.get_mut(&log) {
            contents.trim_seq = contents.trim_seq.max(seq);
            contents.forget_trimmed();
        }
        self.delete_trimmed_segments()
    }

    /// Bytes the journal's segment files take on disk, recycled ones included.
    pub fn disk_bytes(&self) -> u64 {
        (self.segments.len() + self.recycled.len()) as u64 * self.options.segment_bytes
    }

    fn active(&self) -> &Segment {
        self.segments.last().expect("a journal always has an active segment")
    }

    fn index_entry(&mut self, header: &EntryHeader, location: Location, spans: &[RecordSpan]) {
        self.logs.entry(header.log).or_default().index(header, location, spans);
        let segment = self.segments.iter_mut().find(|s| s.number == location.segment).expect("the segment exists");
        segment.last_seqs.insert(header.log, header.seq);
    }

    fn index_log_state(&mut self, log: LogId, epoch: LogEpoch, trimmed: Seq) {
        self.logs.entry(log).or_default().restore_state(epoch, trimmed);
        let active = self.segments.last_mut().expect("a journal always has an active segment");
        active.states.insert(log);
    }

    /// Makes segment `number` the active one: a recycled segment if there is
    /// one, else a spare prepared ahead, else a new zero-filled file. Its
    /// header is written and made durable before the file takes the segment's
    /// name, so a segment file always has a valid header.
    fn start_segment(&mut self, number: u64) -> Result<(), JournalError> {
        let path = segment_path(&self.options.dir, number);
        let salt = rand::random::<u64>();
        let header = encode_segment_header(number, salt);
        let no_space = |source| JournalError::NoSpace { path: path.clone(), source };
        let file = if let Some(reused) = self.recycled.pop().or_else(|| self.spares.take()) {
            let file = OpenOptions::new().read(true).write(true).open(&reused).map_err(io_error(&reused))?;
            file.write_all_at(&header, 0).map_err(io_error(&reused))?;
            file.sync_data().map_err(io_error(&reused))?;
            std::fs::rename(&reused, &path).map_err(io_error(&reused))?;
            file
        } else {
            // Appends wait for this. Past a journal's first segments it means
            // trims lag behind writes by more than the recycled segments
            // kept, or the spare thread could not keep up.
            tracing::info!(segment = number, "no recycled or spare segment ready: zero-filling a new one");
            spare::create_zeroed(&path, self.options.segment_bytes, &header).map_err(no_space)?
        };
        sync_dir(&self.options.dir)?;
        if self.recycled.is_empty() {
            self.spares.prepare(spare_path(&self.options.dir, number + 1));
        }
        self.segments.push(Segment {
            number,
            salt: Some(salt),
            batched: true,
            path,
            file,
            last_seqs: BTreeMap::new(),
            states: Default::default(),
        });
        self.write_offset = SEGMENT_HEADER_BYTES;
        Ok(())
    }

    /// Deletes (or recycles) the segments whose entries are all trimmed,
    /// after writing again the state of every log they speak of. Without
    /// room for those states nothing is deleted, retriably.
    pub fn delete_trimmed_segments(&mut self) -> Result<(), JournalError> {
        let active = self.active().number;
        let deletable: Vec<u64> = self
            .segments
            .iter()
            .filter(|segment| segment.number != active)
            .filter(|segment| {
                segment
                    .last_seqs
                    .iter()
                    .all(|(log, last)| self.logs.get(log).is_none_or(|contents| contents.trim_seq >= *last))
            })
            .map(|segment| segment.number)
            .collect();
        if deletable.is_empty() {
            return Ok(());
        }
        // Write again the state of every log the deleted segments speak of, so
        // its fence and how far it went outlive them.
        let carried: Vec<JournalRecord> = self
            .segments
            .iter()
            .filter(|segment| deletable.contains(&segment.number))
            .flat_map(|segment| segment.states.iter().chain(segment.last_seqs.keys()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter_map(|log| {
                let contents = self.logs.get(log)?;
                let epoch = contents.fence.unwrap_or(contents.last_entry_epoch);
                Some(JournalRecord::LogState { log: *log, epoch, trimmed: contents.trim_seq })
            })
            .collect();
        if !carried.is_empty() {
            self.append(&carried)?;
        }
        for number in deletable {
            let position = self.segments.iter().position(|segment| segment.number == number).expect("listed above");
            if self.segments[position].number == self.active().number {
                continue;
            }
            let segment = self.segments.remove(position);
            if self.recycled.len() < self.options.recycled_segments_max {
                let free = recycled_path(&self.options.dir, segment.number);
                std::fs::rename(&segment.path, &free).map_err(io_error(&segment.path))?;
                self.recycled.push(free);
            } else {
                std::fs::remove_file(&segment.path).map_err(io_error(&segment.path))?;
            }
        }
        sync_dir(&self.options.dir)
    }
}

/// The bytes at the end of each segment that only log-state records may
/// use: room for about a hundred of them (a sixteenth of a small segment).
pub fn log_state_reserve(segment_bytes: u64) -> u64 {
    (segment_bytes / 16).min(4096)
}

/// The frame before a record of the batch starting at `batch` in a segment
/// with `salt` (see the module comment).
fn encode_frame(salt: u64, batch: u64, record: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(FRAME_BYTES);
    buf.put_u32(FRAME_MAGIC);
    buf.put_u32(frame_crc(salt, Some(batch), record));
    buf.put_u64(batch);
    buf.freeze()
}

/// The frame checksum: the segment's salt, the record's batch (version 3)
/// and the record's first 12 bytes, which hold the record's own checksum.
fn frame_crc(salt: u64, batch: Option<u64>, record: &[u8]) -> u32 {
    let mut crc = crc32c::crc32c(&salt.to_be_bytes());
    if let Some(batch) = batch {
        crc = crc32c::crc32c_append(crc, &batch.to_be_bytes());
    }
    crc32c::crc32c_append(crc, &record[..record.len().min(12)])
}

/// Writes every piece, in order, from `offset` on, with as few system calls
/// as the kernel allows.
fn write_all_vectored_at(file: &File, pieces: &[&[u8]], mut offset: u64) -> std::io::Result<()> {
    use std::io::IoSlice;
    let mut slices: Vec<IoSlice<'_>> = pieces.iter().map(|piece| IoSlice::new(piece)).collect();
    let mut slices = &mut slices[..];
    // The kernel takes at most IOV_MAX (1024) slices per call.
    const IOV_MAX: usize = 1024;
    while !slices.is_empty() {
        let chunk = slices.len().min(IOV_MAX);
        let written = nix::sys::uio::pwritev(file, &slices[..chunk], offset as i64)?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        offset += written as u64;
        IoSlice::advance_slices(&mut slices, written);
    }
    Ok(())
}

fn encode_segment_header(number: u64, salt: u64) -> Bytes {
    let mut buf = BytesMut::with_capacity(SEGMENT_HEADER_BYTES as usize);
    buf.put_u32(SEGMENT_MAGIC);
    buf.put_u8(SEGMENT_VERSION);
    buf.put_bytes(0, 3);
    buf.put_u64(number);
    buf.put_u64(salt);
    let crc = crc32c::crc32c(&buf);
    buf.put_u32(crc);
    buf.put_bytes(0, SEGMENT_HEADER_BYTES as usize - buf.len());
    buf.freeze()
}

fn encode_log_state(log: LogId, epoch: LogEpoch, trimmed: Seq) -> Bytes {
    let mut body = BytesMut::with_capacity(24);
    body.put_u64(log.0);
    body.put_u64(epoch.0);
    body.put_u64(trimmed.0);
    let mut buf = BytesMut::with_capacity(LOG_STATE_RECORD_BYTES);
    buf.put_u32(LOG_STATE_MAGIC);
    buf.put_u32(crc32c::crc32c(&body));
    buf.put_slice(&body);
    buf.freeze()
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))
}

#[cfg(test)]
mod tests;

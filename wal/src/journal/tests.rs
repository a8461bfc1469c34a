use std::os::unix::fs::FileExt;

use keel_controller_client::StreamId;
use keel_wal_client::entry::{Entry, EntryHeader, Record};
use keel_wal_client::ids::Offset;

use super::*;

const SEGMENT: u64 = 16 << 10;

fn options(dir: &Path) -> JournalOptions {
    JournalOptions {
        dir: dir.to_path_buf(),
        segment_bytes: SEGMENT,
        journal_bytes_max: None,
        recycled_segments_max: 0,
        faults: None,
    }
}

fn entry(log: u64, seq: u64, size: usize) -> Bytes {
    let header = EntryHeader { log: LogId(log), epoch: LogEpoch(1), seq: Seq(seq), acked: Seq(seq - 1) };
    let record = Record {
        stream: StreamId(log),
        base_offset: Offset(seq as i64),
        record_count: 1,
        batch: Bytes::from(vec![seq as u8; size]),
    };
    Entry::build(header, vec![record]).unwrap().bytes
}

fn append_entries(journal: &mut Journal, log: u64, seqs: std::ops::RangeInclusive<u64>, size: usize) -> Vec<Bytes> {
    let entries: Vec<Bytes> = seqs.map(|seq| entry(log, seq, size)).collect();
    let records: Vec<JournalRecord> = entries.iter().cloned().map(checked).collect();
    journal.append(&records).unwrap();
    entries
}

fn checked(bytes: Bytes) -> JournalRecord {
    JournalRecord::Entry(keel_wal_client::entry::CheckedEntry::check(bytes).unwrap())
}

fn last_segment_path(dir: &Path) -> PathBuf {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|d| d.unwrap().path())
        .filter(|path| path.file_name().unwrap().to_string_lossy().starts_with("segment-"))
        .collect();
    paths.sort();
    paths.pop().unwrap()
}

/// What a crash in the middle of writing `record` at `tail` of the last
/// segment (the first record of a new batch) leaves: its frame and the
/// first half of it.
fn write_torn(dir: &Path, salt: u64, tail: u64, record: &[u8]) {
    let mut written = encode_frame(salt, tail, record).to_vec();
    written.extend_from_slice(&record[..record.len() / 2]);
    let file = OpenOptions::new().write(true).open(last_segment_path(dir)).unwrap();
    file.write_all_at(&written, tail).unwrap();
}

#[test]
fn entries_and_fences_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(options(dir.path())).unwrap();
    let first = append_entries(&mut journal, 1, 1..=5, 100);
    let second = append_entries(&mut journal, 2, 1..=3, 100);
    journal.append(&[JournalRecord::LogState { log: LogId(2), epoch: LogEpoch(4), trimmed: Seq(0) }]).unwrap();
    drop(journal);

    let (journal, report) = Journal::open(options(dir.path())).unwrap();
    assert_eq!(report.entries, 8);
    assert_eq!(report.torn_bytes, 0);
    for (seq, bytes) in first.iter().enumerate() {
        assert_eq!(&journal.read(LogId(1), Seq(seq as u64 + 1)).unwrap(), bytes);
    }
    assert_eq!(&journal.read(LogId(2), Seq(3)).unwrap(), &second[2]);
    assert_eq!(journal.logs()[&LogId(2)].fence, Some(LogEpoch(4)));
    assert_eq!(journal.logs()[&LogId(1)].writer_acked, Seq(4));
    assert!(matches!(journal.read(LogId(1), Seq(6)), Err(JournalError::NotFound { .. })));
}

#[test]
fn records_roll_over_into_new_preallocated_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(options(dir.path())).unwrap();
    let entries = append_entries(&mut journal, 1, 1..=40, 1000);
    assert!(journal.disk_bytes() >= 3 * SEGMENT, "40 KB of entries need several 16 KiB segments");
    for path in std::fs::read_dir(dir.path()).unwrap() {
        let path = path.unwrap();
        if !path.file_name().to_string_lossy().ends_with(".new") {
            assert_eq!(path.metadata().unwrap().len(), SEGMENT, "segments are preallocated to full size");
        }
    }
    drop(journal);
    let (journal, report) = Journal::open(options(dir.path())).unwrap();
    assert_eq!(report.entries, 40);
    assert_eq!(journal.read(LogId(1), Seq(40)).unwrap(), entries[39]);
}

#[test]
fn a_torn_tail_is_zeroed_and_writing_continues() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(options(dir.path())).unwrap();
    append_entries(&mut journal, 1, 1..=3, 200);
    let tail = journal.write_offset;

    // A crash in the middle of writing entry 4: its frame and half of it reached the disk.
    let salt = journal.active().salt.unwrap();
    drop(journal);
    write_torn(dir.path(), salt, tail, &entry(1, 4, 200));

    let (mut journal, report) = Journal::open(options(dir.path())).unwrap();
    assert_eq!(report.entries, 3);
    assert!(report.torn_bytes > 0);
    assert_eq!(journal.logs()[&LogId(1)].last_seq(), Some(Seq(3)));
    append_entries(&mut journal, 1, 4..=5, 200);
    drop(journal);
    let (journal, report) = Journal::open(options(dir.path())).unwrap();
    assert_eq!((report.entries, report.torn_bytes), (5, 0));
    assert_eq!(journal.read(LogId(1), Seq(4)).unwrap(), entry(1, 4, 200));
}

#[test]
fn damage_followed_by_a_later_batch_is_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(options(dir.path())).unwrap();
    append_entries(&mut journal, 1, 1..=3, 200);
    append_entries(&mut journal, 1, 4..=4, 200);
    drop(journal);
    let file = OpenOptions::new().write(true).open(last_segment_path(dir.path())).unwrap();
    // Flip a byte inside entry 1's batch: entry 4, a later batch, followed it to disk.
    file.write_all_at(&[0xFF], SEGMENT_HEADER_BYTES + 100).unwrap();
    drop(file);
    let error = Journal::open(options(dir.path())).unwrap_err();
    assert!(matches!(error, JournalError::Corrupt { .. }), "{error}");
}

/// Issue 21: a power loss inside the last batch can keep a later record of
/// it and lose an earlier one. The node refused to start; it cuts the
/// batch's unacknowledged tail off instead.
#[test]
fn a_power_loss_inside_the_last_batch_cuts_its_tail_off() {
    for damage in ["lost", "torn"] {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(options(dir.path())).unwrap();
        append_entries(&mut journal, 1, 1..=3, 200);
        let batch = journal.write_offset;
        append_entries(&mut journal, 1, 4..=6, 200);
        drop(journal);
        // Entry 5 (frame and record) never reached the disk, or only its
        // first half did; entries 4 and 6 did.
        let framed = (FRAME_BYTES + entry(1, 5, 200).len()) as u64;
        let fifth = batch + framed;
        let file = OpenOptions::new().write(true).open(last_segment_path(dir.path())).unwrap();
        match damage {
            "lost" => file.write_all_at(&vec![0; framed as usize], fifth).unwrap(),
            _ => file.write_all_at(&vec![0; framed as usize / 2], fifth + framed / 2).unwrap(),
        }
        drop(file);

        let (mut journal, report) = Journal::open(options(dir.path())).unwrap();
        assert_eq!(report.entries, 4, "{damage}: entries 1-4 kept, 5 and 6 cut off");
        assert!(report.torn_bytes > 0, "{damage}");
        assert_eq!(journal.logs()[&LogId(1)].last_seq(), Some(Seq(4)));
        append_entries(&mut journal, 1, 5..=6, 200);
        drop(journal);
        let (journal, report) = Journal::open(options(dir.path())).unwrap();
        assert_eq!((report.entries, report.torn_bytes), (6, 0), "{damage}");
        assert_eq!(journal.read(LogId(1), Seq(6)).unwrap(), entry(1, 6, 200));
    }
}

#[test]
fn trimming_deletes_whole_segments_and_keeps_fences() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(options(dir.path())).unwrap();
    journal.append(&[JournalRecord::LogState { log: LogId(1), epoch: LogEpoch(2), trimmed: Seq(0) }]).unwrap();
    append_entries(&mut journal, 1, 1..=40, 1000);
    append_entries(&mut journal, 2, 1..=2, 1000);
    let before = journal.disk_bytes();

    journal.trim(LogId(1), Seq(20)).unwrap();
    let after = journal.disk_bytes();
    assert!(after < before, "trim must free segments: {before} -> {after}");
    assert!(matches!(journal.read(LogId(1), Seq(20)), Err(JournalError::NotFound { .. })));
    assert_eq!(journal.read(LogId(1), Seq(21)).unwrap(), entry(1, 21, 1000));

    journal.trim(LogId(1), Seq(40)).unwrap();
    journal.trim(LogId(2), Seq(2)).unwrap();
    assert_eq!(journal.disk_bytes(), SEGMENT, "only the active segment is left");
    drop(journal);

    let (journal, _) = Journal::open(options(dir.path())).unwrap();
    assert_eq!(
        journal.logs()[&LogId(1)].fence,
        Some(LogEpoch(2)),
        "the fence outlives the segment it was first written in"
    );
}

#[test]
fn a_record_larger_than_a_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(options(dir.path())).unwrap();
    let error = journal.append(&[checked(entry(1, 1, SEGMENT as usize))]).unwrap_err();
    assert!(matches!(error, JournalError::RecordTooLarge { .. }), "{error}");
    append_entries(&mut journal, 1, 1..=1, 10);
}

#[test]
fn a_journal_at_its_cap_refuses_retriably_and_takes_writes_again_after_a_trim() {
    let dir = tempfile::tempdir().unwrap();
    let capped = JournalOptions { journal_bytes_max: Some(3 * SEGMENT), ..options(dir.path()) };
    let (mut journal, _) = Journal::open(capped.clone()).unwrap();
    let mut seq = 0;
    let error = loop {
        seq += 1;
        match journal.write(&checked(entry(1, seq, 1000))) {
            Ok(()) => {}
            Err(error) => break error,
        }
        assert!(seq < 1000, "the cap must stop the writes");
    };
    assert!(matches!(error, JournalError::Full { .. }) && error.is_retryable(), "{error}");
    journal.sync().unwrap();
    assert_eq!(journal.logs()[&LogId(1)].last_seq(), Some(Seq(seq - 1)), "the refused entry was not written");
    assert!(journal.disk_bytes() <= 3 * SEGMENT);
    assert_eq!(journal.read(LogId(1), Seq(seq - 1)).unwrap(), entry(1, seq - 1, 1000));

    journal.trim(LogId(1), Seq(seq / 2)).unwrap();
    journal.append(&[checked(entry(1, seq, 1000))]).unwrap();
    drop(journal);
    let (journal, report) = Journal::open(capped).unwrap();
    assert_eq!(report.torn_bytes, 0);
    assert_eq!(journal.read(LogId(1), Seq(seq)).unwrap(), entry(1, seq, 1000));
}

fn two_stream_entry(seq: u64) -> Bytes {
    let header = EntryHeader { log: LogId(5), epoch: LogEpoch(1), seq: Seq(seq), acked: Seq(seq - 1) };
    let records = vec![
        Record {
            stream: StreamId(1),
            base_offset: Offset((seq as i64 - 1) * 2),
            record_count: 2,
            batch: Bytes::from(format!("s1-{seq}")),
        },
        Record {
            stream: StreamId(2),
            base_offset: Offset(seq as i64 - 1),
            record_count: 1,
            batch: Bytes::from(format!("s2-{seq}")),
        },
    ];
    Entry::build(header, records).unwrap().bytes
}

#[test]
fn a_stream_is_read_from_an_offset_across_entries_reopens_and_trims() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(options(dir.path())).unwrap();
    let records: Vec<JournalRecord> = (1..=10).map(|seq| checked(two_stream_entry(seq))).collect();
    journal.append(&records).unwrap();
    let read = |journal: &Journal, from: i64, end_seq: u64| -> Vec<i64> {
        journal
            .read_stream(LogId(5), StreamId(1), Offset(from), Seq(end_seq), 1 << 20)
            .unwrap()
            .iter()
            .map(|(base, _, _)| base.0)
            .collect()
    };
    assert_eq!(read(&journal, 7, 10), vec![6, 8, 10, 12, 14, 16, 18], "from the batch holding offset 7");
    assert_eq!(read(&journal, 7, 5), vec![6, 8], "never past the end seq given");
    let batches = journal.read_stream(LogId(5), StreamId(2), Offset(3), Seq(10), 1).unwrap();
    assert_eq!(batches.len(), 1, "max_bytes stops after the first batch");
    assert_eq!(batches[0], (Offset(3), 1, Bytes::from("s2-4")));
    drop(journal);

    let (mut journal, _) = Journal::open(options(dir.path())).unwrap();
    assert_eq!(read(&journal, 7, 10), vec![6, 8, 10, 12, 14, 16, 18], "the index is rebuilt on open");
    journal.trim(LogId(5), Seq(5)).unwrap();
    assert_eq!(read(&journal, 0, 10), vec![10, 12, 14, 16, 18], "trimmed entries are gone from the index");
    assert!(journal.read_stream(LogId(5), StreamId(9), Offset(0), Seq(10), 1).unwrap().is_empty());
}

fn file_names(dir: &Path, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(prefix))
        .collect();
    names.sort();
    names
}

#[test]
fn trimmed_segments_are_reused_and_their_old_records_never_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let recycling = JournalOptions { recycled_segments_max: 2, ..options(dir.path()) };
    let (mut journal, _) = Journal::open(recycling.clone()).unwrap();
    append_entries(&mut journal, 1, 1..=60, 1000);
    let segments = file_names(dir.path(), "segment-").len();
    assert!(segments >= 4, "60 KB of entries fill several 16 KiB segments");
    let before = journal.disk_bytes();

    journal.trim(LogId(1), Seq(60)).unwrap();
    assert_eq!(file_names(dir.path(), "free-").len(), 2, "two trimmed segments are kept for reuse");
    assert_eq!(file_names(dir.path(), "segment-"), vec![file_names(dir.path(), "segment-").pop().unwrap()]);
    assert_eq!(journal.disk_bytes(), 3 * SEGMENT, "the rest are deleted: {before} -> {}", journal.disk_bytes());
    drop(journal);
    // Log 1's last entries are still in the active segment, trimmed.
    let (mut journal, report) = Journal::open(recycling.clone()).unwrap();
    let still_there = report.entries;

    // The next segments are the recycled files, full of log 1's old records;
    // log 2's entries fill the first and end early in the second.
    let entries = append_entries(&mut journal, 2, 1..=30, 1000);
    assert!(file_names(dir.path(), "free-").is_empty(), "both recycled segments were taken");
    drop(journal);

    let (mut journal, report) = Journal::open(recycling.clone()).unwrap();
    assert_eq!(
        (report.entries, report.torn_bytes),
        (still_there + 30, 0),
        "no record of the segments' old lives is read"
    );
    assert_eq!(journal.logs()[&LogId(1)].first_seq(), None);
    assert_eq!(journal.logs()[&LogId(1)].end_seq(), Seq(60));
    assert_eq!(journal.read(LogId(2), Seq(30)).unwrap(), entries[29]);
    append_entries(&mut journal, 2, 31..=32, 1000);
    drop(journal);
    let (journal, report) = Journal::open(recycling).unwrap();
    assert_eq!(report.entries, still_there + 32);
    assert_eq!(journal.read(LogId(2), Seq(32)).unwrap(), entry(2, 32, 1000));
}

#[test]
fn a_torn_write_over_a_recycled_segment_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let recycling = JournalOptions { recycled_segments_max: 4, ..options(dir.path()) };
    let (mut journal, _) = Journal::open(recycling.clone()).unwrap();
    append_entries(&mut journal, 1, 1..=60, 1000);
    journal.trim(LogId(1), Seq(60)).unwrap();
    drop(journal);
    let (mut journal, report) = Journal::open(recycling.clone()).unwrap();
    let still_there = report.entries;
    append_entries(&mut journal, 2, 1..=20, 1000);
    let salt = journal.active().salt.unwrap();
    let tail = journal.write_offset;
    drop(journal);

    // Entry 21's frame and first half reached the disk, its second half did
    // not: the old life's bytes are still there.
    write_torn(dir.path(), salt, tail, &entry(2, 21, 1000));
    let (mut journal, report) = Journal::open(recycling.clone()).unwrap();
    assert_eq!(report.entries, still_there + 20);
    assert_eq!(report.torn_bytes, FRAME_BYTES as u64, "the torn record's frame is zeroed");
    append_entries(&mut journal, 2, 21..=21, 1000);
    drop(journal);
    let (journal, _) = Journal::open(recycling).unwrap();
    assert_eq!(journal.read(LogId(2), Seq(21)).unwrap(), entry(2, 21, 1000));
}

#[test]
fn version_1_segments_are_read_and_new_records_go_to_a_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    // A version-1 segment: header, then entries back to back, then zeros.
    let mut header = BytesMut::new();
    header.put_u32(SEGMENT_MAGIC);
    header.put_u8(SEGMENT_VERSION_UNFRAMED);
    header.put_bytes(0, 3);
    header.put_u64(3);
    let crc = crc32c::crc32c(&header);
    header.put_u32(crc);
    header.put_bytes(0, SEGMENT_HEADER_BYTES as usize - header.len());
    let mut bytes = header.to_vec();
    for seq in 1..=3 {
        bytes.extend_from_slice(&entry(1, seq, 100));
    }
    bytes.resize(SEGMENT as usize, 0);
    std::fs::write(segment_path(dir.path(), 3), &bytes).unwrap();

    let (mut journal, report) = Journal::open(options(dir.path())).unwrap();
    assert_eq!(report.entries, 3);
    assert_eq!(journal.read(LogId(1), Seq(2)).unwrap(), entry(1, 2, 100));
    append_entries(&mut journal, 1, 4..=5, 100);
    assert_eq!(journal.active().number, 4, "framed records never go into a version-1 segment");
    drop(journal);
    let (journal, report) = Journal::open(options(dir.path())).unwrap();
    assert_eq!((report.entries, report.torn_bytes), (5, 0));
    assert_eq!(journal.read(LogId(1), Seq(5)).unwrap(), entry(1, 5, 100));
}

#[test]
fn a_zero_filled_segment_is_full_size_with_its_header_first() {
    let dir = tempfile::tempdir().unwrap();
    // Not a whole number of fill steps, so the last step is a short one.
    let bytes = 2 * spare::FILL_STEP as u64 + 12_345;
    let path = dir.path().join("segment-0000000000000007.kseg");
    std::fs::write(path.with_extension("kseg.new"), vec![0xAAu8; bytes as usize + 100]).unwrap();

    spare::create_zeroed(&path, bytes, b"header").unwrap();
    let contents = std::fs::read(&path).unwrap();
    assert_eq!(contents.len() as u64, bytes, "an old staging file's longer contents are cut off");
    assert_eq!(&contents[..6], b"header");
    assert!(contents[6..].iter().all(|byte| *byte == 0), "zeros after the header, up to the end");
    assert!(!path.with_extension("kseg.new").exists(), "the staging name is gone");
}

#[test]
fn segments_half_prepared_when_the_node_stopped_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(options(dir.path())).unwrap();
    let entries = append_entries(&mut journal, 1, 1..=30, 1000);
    drop(journal);
    // What a kill leaves mid-preparation: a staging file and a spare, both
    // holding a copy of a real segment's records (as a disk's old blocks might).
    let copy = std::fs::read(last_segment_path(dir.path())).unwrap();
    std::fs::write(dir.path().join("segment-0000000000000009.kseg.new"), &copy[..5000]).unwrap();
    std::fs::write(dir.path().join("spare-0000000000000009.kseg"), &copy[..9000]).unwrap();

    let (mut journal, report) = Journal::open(options(dir.path())).unwrap();
    assert_eq!((report.entries, report.torn_bytes), (30, 0));
    // (The journal may already be preparing a spare of its own, under another number.)
    assert!(!dir.path().join("spare-0000000000000009.kseg").exists());
    assert!(!dir.path().join("segment-0000000000000009.kseg.new").exists());
    let more = append_entries(&mut journal, 1, 31..=50, 1000);
    drop(journal);
    let (journal, report) = Journal::open(options(dir.path())).unwrap();
    assert_eq!(report.entries, 50);
    assert_eq!(journal.read(LogId(1), Seq(1)).unwrap(), entries[0]);
    assert_eq!(journal.read(LogId(1), Seq(50)).unwrap(), more[19]);
}

/// A replica that skipped ahead to a trim point (it lagged behind it)
/// records the skip, then takes the entries after it: on reopen the log
/// holds those entries after the trim point, with no gap refused.
#[test]
fn a_skip_to_the_trim_point_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(options(dir.path())).unwrap();
    append_entries(&mut journal, 1, 1..=2, 100);
    journal.append(&[JournalRecord::LogState { log: LogId(1), epoch: LogEpoch(1), trimmed: Seq(7) }]).unwrap();
    journal.trim(LogId(1), Seq(7)).unwrap();
    let after = append_entries(&mut journal, 1, 8..=9, 100);
    drop(journal);

    let (journal, _) = Journal::open(options(dir.path())).unwrap();
    let contents = &journal.logs()[&LogId(1)];
    assert_eq!((contents.trim_seq, contents.first_seq(), contents.end_seq()), (Seq(7), Some(Seq(8)), Seq(9)));
    assert_eq!(&journal.read(LogId(1), Seq(9)).unwrap(), &after[1]);
}

/// Issue 21: a journal at its cap whose segments were filled to the last
/// byte had no room for the log states a trim writes before deleting, so
/// the trim failed and the node refused everything until restarted. The
/// reserve at each segment's end keeps that room: with entries that would
/// fill a whole segment, and with entries that fill all but the reserve.
#[test]
fn a_trim_frees_a_journal_at_its_cap_even_when_its_segments_are_full() {
    let whole = SEGMENT - SEGMENT_HEADER_BYTES;
    for room in [whole, whole - log_state_reserve(SEGMENT)] {
        let dir = tempfile::tempdir().unwrap();
        let capped = JournalOptions { journal_bytes_max: Some(3 * SEGMENT), ..options(dir.path()) };
        let (mut journal, _) = Journal::open(capped).unwrap();
        let framed = room / 8;
        let size = framed as usize - FRAME_BYTES - entry(1, 1, 0).len();
        let mut seq = 0;
        let error = loop {
            seq += 1;
            // Each entry of its own log, so the trim carries many log states.
            if let Err(error) = journal.write(&checked(entry(seq, 1, size))) {
                break error;
            }
            assert!(seq < 1000, "the cap must stop the writes");
        };
        assert!(matches!(error, JournalError::Full { .. }), "{error}");
        journal.sync().unwrap();
        for log in 1..seq {
            journal.trim(LogId(log), Seq(1)).unwrap();
        }
        assert!(journal.disk_bytes() < 3 * SEGMENT, "the trim deleted the trimmed segments");
        journal.append(&[checked(entry(seq, 1, size))]).unwrap();
    }
}

/// Segments written before frames named their batch are read, and new
/// records go to a new segment.
#[test]
fn version_2_segments_are_read_and_new_records_go_to_a_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    let salt = 0x5EED;
    let mut bytes = BytesMut::new();
    bytes.put_u32(SEGMENT_MAGIC);
    bytes.put_u8(SEGMENT_VERSION_UNBATCHED);
    bytes.put_bytes(0, 3);
    bytes.put_u64(3);
    bytes.put_u64(salt);
    let crc = crc32c::crc32c(&bytes);
    bytes.put_u32(crc);
    bytes.put_bytes(0, SEGMENT_HEADER_BYTES as usize - bytes.len());
    for seq in 1..=3 {
        let record = entry(1, seq, 100);
        bytes.put_u32(FRAME_MAGIC);
        bytes.put_u32(frame_crc(salt, None, &record));
        bytes.put_slice(&record);
    }
    let mut bytes = bytes.to_vec();
    bytes.resize(SEGMENT as usize, 0);
    std::fs::write(segment_path(dir.path(), 3), &bytes).unwrap();

    let (mut journal, report) = Journal::open(options(dir.path())).unwrap();
    assert_eq!(report.entries, 3);
    assert_eq!(journal.read(LogId(1), Seq(3)).unwrap(), entry(1, 3, 100));
    append_entries(&mut journal, 1, 4..=4, 100);
    assert_eq!(journal.active().number, 4, "batched frames never go into a version-2 segment");
    drop(journal);

    // Entry 2 damaged, in a segment before the last: corruption.
    let second = SEGMENT_HEADER_BYTES as usize + FRAME_BYTES_UNBATCHED + entry(1, 1, 100).len() + FRAME_BYTES_UNBATCHED;
    bytes[second + 60] ^= 0xFF;
    std::fs::write(segment_path(dir.path(), 3), &bytes).unwrap();
    let error = Journal::open(options(dir.path())).unwrap_err();
    assert!(matches!(error, JournalError::Corrupt { .. }), "{error}");
}

//! A WAL node's journal segment as it may be found on disk after a crash or
//! damage: opening the journal over any bytes must never panic, and every
//! entry it indexes must read back.
//!
//! The input is a flag byte (version 1 or 2) and chunks, each `len u16 |
//! flags u8 | bytes`. The harness puts a valid frame before a chunk, and can
//! set an entry's length and checksum or a log-state record's checksum, so
//! that the fuzzer reaches the record parsers and the index behind them.

#![no_main]

use keel_wal::journal::{Journal, JournalOptions};
use keel_wal_client::ids::Seq;
use libfuzzer_sys::fuzz_target;

const SEGMENT: usize = 64 << 10;
const SALT: u64 = 0x5EED;

fn header(version: u8) -> Vec<u8> {
    let mut header = b"KSEG".to_vec();
    header.extend([version, 0, 0, 0]);
    header.extend(0u64.to_be_bytes());
    if version == 2 {
        header.extend(SALT.to_be_bytes());
    }
    let crc = crc32c::crc32c(&header);
    header.extend(crc.to_be_bytes());
    header.resize(32, 0);
    header
}

/// Sets the length and checksum fields of an entry ("KWAL"), or the
/// checksum of a log-state record ("KLOG"), so that the record checks.
fn fix_checksum(record: &mut [u8]) {
    if record.starts_with(b"KWAL") && record.len() >= 48 {
        let len = record.len() as u32;
        record[12..16].copy_from_slice(&len.to_be_bytes());
        let crc = crc32c::crc32c(&record[12..]);
        record[8..12].copy_from_slice(&crc.to_be_bytes());
    } else if record.starts_with(b"KLOG") && record.len() >= 32 {
        let crc = crc32c::crc32c(&record[8..32]);
        record[4..8].copy_from_slice(&crc.to_be_bytes());
    }
}

fn frame(record: &[u8]) -> Vec<u8> {
    let crc = crc32c::crc32c_append(crc32c::crc32c(&SALT.to_be_bytes()), &record[..record.len().min(12)]);
    let mut frame = b"KREC".to_vec();
    frame.extend(crc.to_be_bytes());
    frame
}

fuzz_target!(|data: &[u8]| {
    let Some((flag, mut rest)) = data.split_first() else { return };
    let version = if flag & 1 == 1 { 1 } else { 2 };
    let mut segment = header(version);
    while rest.len() >= 3 && segment.len() < SEGMENT {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let flags = rest[2];
        rest = &rest[3..];
        let mut record = rest[..len.min(rest.len())].to_vec();
        rest = &rest[record.len()..];
        if flags & 2 == 2 {
            fix_checksum(&mut record);
        }
        if version == 2 && flags & 1 == 0 {
            segment.extend(frame(&record));
        }
        segment.extend(record);
    }
    segment.resize(SEGMENT, 0);

    let dir = std::env::temp_dir().join(format!("keel-fuzz-journal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the journal directory");
    std::fs::write(dir.join("segment-0000000000000000.kseg"), &segment).expect("write the segment");
    let options = JournalOptions {
        dir: dir.clone(),
        segment_bytes: SEGMENT as u64,
        journal_bytes_max: None,
        recycled_segments_max: 1,
        faults: None,
    };
    if let Ok((journal, _)) = Journal::open(options) {
        for (log, contents) in journal.logs() {
            if let (Some(first), Some(last)) = (contents.first_seq(), contents.last_seq()) {
                for seq in first.0..=last.0 {
                    journal.read(*log, Seq(seq)).expect("an indexed entry reads back");
                }
            }
        }
    }
});

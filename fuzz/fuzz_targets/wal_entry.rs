//! WAL entries as they arrive from the network or are read back from a
//! journal: decoding any bytes must never panic, and whatever decodes must
//! encode back to the very same bytes.

#![no_main]

use bytes::Bytes;
use keel_wal_client::entry::{decode_header, record_spans, Entry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_header(data);
    let spans = record_spans(data);
    if let Ok(entry) = Entry::decode(Bytes::copy_from_slice(data)) {
        let expected: Vec<_> = entry.records.iter().map(|r| (r.stream, r.base_offset, r.record_count)).collect();
        assert_eq!(spans.as_ref().ok(), Some(&expected), "record spans agree with the decoded records");
        let rebuilt = Entry::build(entry.header, entry.records.clone()).expect("a decoded entry fits in one");
        assert_eq!(rebuilt.bytes, entry.bytes);
    }
});

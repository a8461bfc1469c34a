//! WAL entries as they arrive from the network or are read back from a
//! journal: decoding any bytes must never panic, and whatever decodes must
//! encode back to the very same bytes.

#![no_main]

use bytes::Bytes;
use keel_wal_client::entry::{decode_header, Entry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_header(data);
    if let Ok(entry) = Entry::decode(Bytes::copy_from_slice(data)) {
        let rebuilt = Entry::build(entry.header, entry.records.clone());
        assert_eq!(rebuilt.bytes, entry.bytes);
    }
});

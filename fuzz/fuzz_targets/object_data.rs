//! Bytes read from the object store: an object's footer and index block, and
//! a stream range split into batches for a cold read. Neither may panic on
//! any input, and every index entry that decodes lies inside the object.

#![no_main]

use bytes::Bytes;
use keel_objects::format::read_index;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ranges) = read_index(data) {
        for range in ranges {
            assert!(range.pos + range.len <= data.len() as u64);
            assert!(range.start < range.end);
        }
    }
    if let Ok(batches) = keel_broker_core::batch::split(&Bytes::copy_from_slice(data)) {
        assert_eq!(batches.iter().map(Bytes::len).sum::<usize>(), data.len());
    }
});

//! Produced record batches: the broker's check must never panic, and a batch
//! it accepts stays valid after the broker rewrites its header in place.
//! Its records, decompressed with a bound (a compacted topic's keys,
//! ListOffsets by time), decode or are refused, never panic.

#![no_main]

use keel_broker_core::batch;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Stored control batches are read for their transaction marker.
    let _ = batch::marker(data);
    let Ok(header) = batch::check(data) else { return };
    if let Ok(set) = keel_broker_core::records::decode(data) {
        assert!(set.records.iter().all(
            |r| r.value.as_ref().map_or(0, |v| v.len()) as u64 <= keel_broker_core::records::DECOMPRESSED_BYTES_MAX
        ));
    }
    let _ = header.last_sequence();
    let mut stored = data.to_vec();
    batch::assign(&mut stored, keel_controller_client::Offset(42), 7);
    assert_eq!(batch::check(&stored), Ok(header), "offsets and leader epoch lie outside the CRC");
    batch::set_log_append_time(&mut stored, 1_000);
    assert!(batch::check(&stored).is_ok(), "the CRC is recomputed");
    assert_eq!(batch::base_offset(&stored), keel_controller_client::Offset(42));
});

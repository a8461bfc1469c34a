//! Records of `__transaction_state` (as a transaction coordinator replays
//! them on taking a partition over): decoding never panics, and what
//! decodes re-encodes to something that decodes the same.

#![no_main]

use keel_broker_core::txn::records;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(id) = records::decode_key(data) {
        assert_eq!(records::decode_key(&records::encode_key(&id)), Ok(id));
    }
    if let Ok(txn) = records::decode_value(data) {
        assert_eq!(records::decode_value(&records::encode_value(&txn)), Ok(txn));
    }
});

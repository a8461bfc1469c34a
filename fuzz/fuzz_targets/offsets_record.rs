//! Records of `__consumer_offsets` (keys and values as a coordinator
//! replays them on taking a partition over): decoding never panics, and
//! what decodes re-encodes to something that decodes the same.

#![no_main]

use keel_broker_core::groups::records;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = records::decode_key(data) {
        assert_eq!(records::decode_key(&records::encode_key(&key)), Ok(key));
    }
    if let Ok(offset) = records::decode_offset(data) {
        assert_eq!(records::decode_offset(&records::encode_offset(&offset)), Ok(offset));
    }
    if let Ok(group) = records::decode_group(data) {
        assert_eq!(records::decode_group(&records::encode_group(&group)), Ok(group));
    }
    if let Ok(group) = records::decode_consumer_group(data) {
        assert_eq!(records::decode_consumer_group(&records::encode_consumer_group(&group)), Ok(group));
    }
});

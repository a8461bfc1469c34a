//! SASL messages from clients not yet authenticated (`keel_broker_core::sasl`):
//! any bytes are parsed or refused, never a panic.
#![no_main]

use keel_broker_core::sasl::{parse_client_final, parse_client_first, parse_plain};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_plain(data);
    if let Ok(first) = parse_client_first(data) {
        let nonce = format!("{}server", first.nonce);
        let _ = parse_client_final(data, &first, &nonce);
    }
    if let Ok(first) = parse_client_first(b"n,,n=user,r=abc") {
        let _ = parse_client_final(data, &first, "abcdef");
    }
});

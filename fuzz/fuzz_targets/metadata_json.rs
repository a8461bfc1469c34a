//! Metadata as it arrives from the network: watch deltas (JSON commands) and
//! images decoded by every watcher, then applied. Decoding or applying any
//! bytes must never panic, and a refused command must leave the image as it was.

#![no_main]

use keel_controller_client::{Command, Image, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(image) = serde_json::from_slice::<Image>(data) {
        let _ = serde_json::to_vec(&image);
    }
    let Ok(command) = serde_json::from_slice::<Command>(data) else { return };
    let mut image = Image::default();
    for version in [Version(1), Version(2)] {
        let before = image.clone();
        if image.apply(version, &command).is_err() {
            assert_eq!(Image { version, ..before }, image);
        }
    }
});

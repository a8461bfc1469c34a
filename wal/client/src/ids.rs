//! Ids and positions of the WAL tier. They belong to the metadata model
//! (the controller records WAL logs), so they are defined there.

pub use keel_controller_client::{LogEpoch, LogId, Offset, Seq};

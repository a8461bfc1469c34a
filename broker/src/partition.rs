//! What the leader keeps for each partition it leads: the next offset to
//! assign, the high watermark (what the WAL acknowledged), producer state,
//! and where its older batches live in the WAL.

use std::collections::HashMap;

use keel_controller_client::{LeaderEpoch, StreamId};

use crate::log_owner::{LogRange, Owned};
use crate::producers::Producers;

#[derive(Debug)]
pub struct PartitionState {
    pub leader_epoch: LeaderEpoch,
    /// The offset the next appended record gets.
    pub next_offset: i64,
    /// Every offset below it is durable in the WAL quorum; fetches stop here.
    pub high_watermark: i64,
    pub log_start: i64,
    pub producers: Producers,
    /// Where the partition's offsets lie in the WAL, oldest first; the last
    /// range is the log this broker writes now.
    pub ranges: Vec<LogRange>,
}

/// The range of `ranges` (oldest first) holding `offset`.
pub fn range_of(ranges: &[LogRange], offset: i64) -> Option<LogRange> {
    ranges.iter().rev().find(|range| range.from <= offset).copied()
}

/// Everything this broker leads, under one registration.
#[derive(Debug, Default)]
pub struct Leadership {
    /// The WAL log this broker writes; `None` while it takes over.
    pub owned: Option<Owned>,
    pub partitions: HashMap<StreamId, PartitionState>,
}

impl Leadership {
    /// The state of a partition this broker leads, created on first use from
    /// what the take-over found in the sealed logs and what the metadata says
    /// is uploaded (a log trimmed after its upload no longer tells its ends).
    /// The log start follows the metadata's start offset (DeleteRecords,
    /// retention) up.
    pub fn partition(
        &mut self,
        stream: StreamId,
        leader_epoch: LeaderEpoch,
        record: &keel_controller_client::Partition,
    ) -> Option<&mut PartitionState> {
        let owned = self.owned.as_mut()?;
        let start_offset = record.start_offset.0;
        let state = self.partitions.entry(stream).or_insert_with(|| {
            let end = owned.ends.get(&stream).copied().unwrap_or(0).max(record.uploaded_end.0);
            let mut ranges = owned.history.get(&stream).cloned().unwrap_or_default();
            ranges.push(LogRange { log: owned.log, sealed_seq: keel_controller_client::Seq(0), from: end });
            PartitionState {
                leader_epoch,
                next_offset: end,
                high_watermark: end,
                log_start: 0,
                producers: owned.producers.remove(&stream).unwrap_or_default(),
                ranges,
            }
        });
        state.leader_epoch = leader_epoch;
        state.log_start = state.log_start.max(start_offset).min(state.high_watermark);
        Some(state)
    }
}

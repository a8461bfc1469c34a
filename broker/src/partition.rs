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
    /// Being handed to another broker (`drain`): no more writes.
    pub closing: bool,
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
    /// The state of a partition this broker leads at `leader_epoch`, once
    /// `leaders` has set it up; the log start follows the metadata's start
    /// offset (DeleteRecords, retention) up. A partition with nothing
    /// uploaded has no history anywhere (a handover waits for the upload), so
    /// its state is made here at once: a new topic takes writes without
    /// waiting for `leaders`.
    pub fn partition(
        &mut self,
        stream: StreamId,
        leader_epoch: LeaderEpoch,
        record: &keel_controller_client::Partition,
    ) -> Option<&mut PartitionState> {
        self.owned.as_ref()?;
        if record.uploaded_end.0 == 0 && !self.partitions.contains_key(&stream) {
            self.lead(stream, leader_epoch, 0, Producers::default());
        }
        let state = self.partitions.get_mut(&stream).filter(|state| state.leader_epoch == leader_epoch)?;
        let log_start = state.log_start.max(record.start_offset.0).min(state.high_watermark);
        if log_start > state.log_start {
            // Aborted transactions wholly below the start have no data left.
            state.producers.forget_aborted_before(log_start);
            state.log_start = log_start;
        }
        Some(state)
    }

    /// Starts leading a partition at `leader_epoch` from `end`, its uploaded
    /// end: everything before is in objects (DESIGN §5), everything after
    /// goes to the log this broker writes.
    pub fn lead(&mut self, stream: StreamId, leader_epoch: LeaderEpoch, end: i64, producers: Producers) -> bool {
        let Some(owned) = self.owned.as_ref() else { return false };
        let ranges = vec![LogRange { log: owned.log, sealed_seq: keel_controller_client::Seq(0), from: end }];
        let state = PartitionState {
            leader_epoch,
            next_offset: end,
            high_watermark: end,
            log_start: 0,
            producers,
            ranges,
            closing: false,
        };
        self.partitions.insert(stream, state);
        true
    }
}

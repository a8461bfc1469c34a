//! The recovery of a WAL log whose writer is gone, free of I/O (DESIGN §5).
//!
//! After the controller committed `RecoverLog` (the log's epoch + 1 for this
//! recoverer), the recoverer:
//! 1. fences the log at the new epoch on at least WQ - AQ + 1 members, so the
//!    old writer can no longer gather an ack quorum;
//! 2. reads, from at least AQ of the fenced members, every entry after the
//!    trim point: an entry the old writer saw acknowledged is on AQ members,
//!    so at least one of them holds it;
//! 3. keeps the gap-free prefix of what it read and makes it durable on every
//!    member it read from (at least AQ, in two zones) by appending the missing
//!    entries unchanged;
//! 4. commits `SealLog` with the sealed seq and the streams' end offsets.
//!
//! This module decides steps 2 to 4 from the replies; the caller does the I/O.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use keel_controller_client::StreamId;

use crate::entry::{Entry, EntryError};
use crate::ids::{LogEpoch, LogId, Offset, Seq};
use crate::quorum::Member;

/// Why the replies cannot be used as they are.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecoveryError {
    #[error("member {index} sent an undecodable entry: {error}")]
    Undecodable { index: usize, error: EntryError },
    #[error("member {index} sent an entry of {log} at {seq} while {expected} was expected")]
    Unexpected { index: usize, log: LogId, seq: Seq, expected: Seq },
    #[error("members hold different entries at {seq}")]
    Conflict { seq: Seq },
    #[error("member {index} was read before it was fenced")]
    NotFenced { index: usize },
}

/// What the recoverer must do to finish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryPlan {
    /// The last seq of the sealed log.
    pub sealed_seq: Seq,
    /// Per member read from: the entries to append to it (in seq order) so it
    /// holds every entry up to `sealed_seq`.
    pub repairs: Vec<(usize, Vec<(Seq, Bytes)>)>,
    /// The end offset each stream reaches in the recovered entries.
    pub stream_ends: BTreeMap<StreamId, Offset>,
    /// The kept entries after the trim point, in seq order: the recovered
    /// tail, which the new owner replays to rebuild producer state.
    pub entries: Vec<Entry>,
}

/// The state of one recovery.
#[derive(Debug)]
pub struct Recovery {
    log: LogId,
    epoch: LogEpoch,
    members: Vec<Member>,
    ack_quorum: usize,
    trim: Seq,
    /// Per member, its last seq once it confirmed the fence at `epoch`.
    fenced: Vec<Option<Seq>>,
    /// Per member, the entries after the trim point that it holds.
    reads: Vec<Option<Vec<Entry>>>,
}

impl Recovery {
    pub fn new(log: LogId, epoch: LogEpoch, members: Vec<Member>, ack_quorum: usize, trim: Seq) -> Recovery {
        assert!(ack_quorum >= 1 && ack_quorum <= members.len());
        let count = members.len();
        Recovery { log, epoch, members, ack_quorum, trim, fenced: vec![None; count], reads: vec![None; count] }
    }

    pub fn log(&self) -> LogId {
        self.log
    }

    /// The epoch this recovery fences and appends at.
    pub fn epoch(&self) -> LogEpoch {
        self.epoch
    }

    pub fn trim(&self) -> Seq {
        self.trim
    }

    /// How many members must confirm the fence: WQ - AQ + 1.
    pub fn fences_needed(&self) -> usize {
        self.members.len() - self.ack_quorum + 1
    }

    /// Member `index` is fenced at this recovery's epoch and holds entries up to `last_seq`.
    pub fn on_fenced(&mut self, index: usize, last_seq: Seq) {
        self.fenced[index] = Some(last_seq);
    }

    /// The fenced members to read from, with the range each holds after the
    /// trim point. A member whose last seq is below the trim point (it lagged
    /// while the log was trimmed past it) holds nothing after it and could
    /// not be repaired without a gap: it counts for the fence only.
    pub fn reads_to_make(&self) -> Vec<(usize, Seq, Seq)> {
        (0..self.members.len())
            .filter(|index| self.reads[*index].is_none())
            .filter_map(|index| self.fenced[index].map(|last| (index, self.trim.next(), last)))
            .filter(|(_, _, last)| *last >= self.trim)
            .collect()
    }

    /// Member `index` returned the entries it holds after the trim point, in order.
    pub fn on_read(&mut self, index: usize, entries: Vec<Bytes>) -> Result<(), RecoveryError> {
        if self.fenced[index].is_none() {
            return Err(RecoveryError::NotFenced { index });
        }
        let mut expected = self.trim.next();
        let mut decoded = Vec::with_capacity(entries.len());
        for bytes in entries {
            let entry = Entry::decode(bytes).map_err(|error| RecoveryError::Undecodable { index, error })?;
            let header = entry.header;
            if header.log != self.log || header.seq != expected {
                return Err(RecoveryError::Unexpected { index, log: header.log, seq: header.seq, expected });
            }
            expected = expected.next();
            decoded.push(entry);
        }
        self.reads[index] = Some(decoded);
        Ok(())
    }

    /// The plan, once enough members are fenced and read; `None` before.
    pub fn plan(&self) -> Result<Option<RecoveryPlan>, RecoveryError> {
        let fenced = self.fenced.iter().filter(|last| last.is_some()).count();
        let read: Vec<usize> = (0..self.members.len()).filter(|index| self.reads[*index].is_some()).collect();
        let zones: BTreeSet<&str> = read.iter().map(|index| self.members[*index].zone.as_str()).collect();
        let zones_in_ensemble: BTreeSet<&str> = self.members.iter().map(|member| member.zone.as_str()).collect();
        if fenced < self.fences_needed() || read.len() < self.ack_quorum || zones.len() < zones_in_ensemble.len().min(2)
        {
            return Ok(None);
        }
        let mut union: BTreeMap<Seq, &Entry> = BTreeMap::new();
        for entry in read.iter().flat_map(|index| self.reads[*index].iter().flatten()) {
            match union.get(&entry.header.seq) {
                Some(existing) if existing.bytes != entry.bytes => {
                    return Err(RecoveryError::Conflict { seq: entry.header.seq });
                }
                _ => {
                    union.insert(entry.header.seq, entry);
                }
            }
        }
        // Every member's entries are a prefix from the trim point, so their
        // union is gap-free; the longest prefix is what the old writer could
        // have had acknowledged.
        let mut sealed_seq = self.trim;
        while union.contains_key(&sealed_seq.next()) {
            sealed_seq = sealed_seq.next();
        }
        let repairs = read
            .iter()
            .map(|index| {
                let held = Seq(self.trim.0 + self.reads[*index].as_ref().map_or(0, |entries| entries.len() as u64));
                let missing = union
                    .range(held.next()..)
                    .take_while(|(seq, _)| **seq <= sealed_seq)
                    .map(|(seq, entry)| (*seq, entry.bytes.clone()))
                    .collect();
                (*index, missing)
            })
            .collect();
        let entries: Vec<Entry> = union.range(..=sealed_seq).map(|(_, entry)| (*entry).clone()).collect();
        let mut stream_ends = BTreeMap::new();
        for entry in &entries {
            for (stream, end) in entry.stream_ends() {
                let current = stream_ends.entry(stream).or_insert(end);
                *current = (*current).max(end);
            }
        }
        Ok(Some(RecoveryPlan { sealed_seq, repairs, stream_ends, entries }))
    }
}

#[cfg(test)]
mod tests;

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
    /// A member whose read broke off had read further than every member
    /// read in full: the stream ends it added cannot be taken back, so
    /// the recovery must start again.
    #[error("the read of member {index} broke off past every complete read")]
    BrokenOff { index: usize },
}

/// What the recoverer must do to finish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryPlan {
    /// The last seq of the sealed log.
    pub sealed_seq: Seq,
    /// The member whose read reached `sealed_seq`: repairs copy from it.
    pub source: usize,
    /// Per member read from: the seqs to copy to it from `source` (in
    /// order, an empty range when none) so it holds every entry up to
    /// `sealed_seq`.
    pub repairs: Vec<(usize, std::ops::RangeInclusive<Seq>)>,
    /// The end offset each stream reaches in the recovered entries.
    pub stream_ends: BTreeMap<StreamId, Offset>,
    /// How many entries follow the trim point up to `sealed_seq`.
    pub entries: u64,
}

/// The state of one recovery. Entries are read in pieces and not kept:
/// it keeps a digest of each (its checksum and length), so a recovery of
/// a long tail holds a few bytes per entry, not the tail.
#[derive(Debug)]
pub struct Recovery {
    log: LogId,
    epoch: LogEpoch,
    members: Vec<Member>,
    ack_quorum: usize,
    trim: Seq,
    /// Per member, its last seq once it confirmed the fence at `epoch`.
    fenced: Vec<Option<Seq>>,
    /// Per member, how many entries after the trim point it sent so far.
    received: Vec<u64>,
    /// Per member, whether its read is complete (every entry it holds after
    /// the trim point was sent).
    complete: Vec<bool>,
    /// The digest of every entry read, at index seq - trim - 1: members'
    /// reads are prefixes from the trim point, so their union is gap-free.
    digests: Vec<Digest>,
    /// The end offset each stream reaches in the entries read.
    stream_ends: BTreeMap<StreamId, Offset>,
}

/// What identifies an entry's bytes well enough to tell two members apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Digest {
    crc: u32,
    len: u32,
}

impl Digest {
    fn of(bytes: &[u8]) -> Digest {
        Digest { crc: crc32c::crc32c(bytes), len: bytes.len() as u32 }
    }
}

impl Recovery {
    pub fn new(log: LogId, epoch: LogEpoch, members: Vec<Member>, ack_quorum: usize, trim: Seq) -> Recovery {
        assert!(ack_quorum >= 1 && ack_quorum <= members.len());
        let count = members.len();
        Recovery {
            log,
            epoch,
            members,
            ack_quorum,
            trim,
            fenced: vec![None; count],
            received: vec![0; count],
            complete: vec![false; count],
            digests: Vec::new(),
            stream_ends: BTreeMap::new(),
        }
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
            .filter(|index| !self.complete[*index] && self.received[*index] == 0)
            .filter_map(|index| self.fenced[index].map(|last| (index, self.trim.next(), last)))
            .filter(|(_, _, last)| *last >= self.trim)
            .collect()
    }

    /// Member `index` sent every entry it holds after the trim point, in order.
    pub fn on_read(&mut self, index: usize, entries: Vec<Bytes>) -> Result<(), RecoveryError> {
        self.on_entries(index, entries)?;
        self.on_read_complete(index);
        Ok(())
    }

    /// Member `index` sent the next entries it holds after the trim point.
    pub fn on_entries(&mut self, index: usize, entries: Vec<Bytes>) -> Result<(), RecoveryError> {
        if self.fenced[index].is_none() {
            return Err(RecoveryError::NotFenced { index });
        }
        if self.complete[index] {
            // A duplicate reply to a read already complete.
            return Ok(());
        }
        for bytes in entries {
            let expected = Seq(self.trim.0 + self.received[index] + 1);
            let digest = Digest::of(&bytes);
            let entry = Entry::decode(bytes).map_err(|error| RecoveryError::Undecodable { index, error })?;
            let header = entry.header;
            if header.log != self.log || header.seq != expected {
                return Err(RecoveryError::Unexpected { index, log: header.log, seq: header.seq, expected });
            }
            let position = self.received[index] as usize;
            match self.digests.get(position) {
                Some(known) if *known != digest => return Err(RecoveryError::Conflict { seq: expected }),
                Some(_) => {}
                None => {
                    self.digests.push(digest);
                    for (stream, end) in entry.stream_ends() {
                        let current = self.stream_ends.entry(stream).or_insert(end);
                        *current = (*current).max(end);
                    }
                }
            }
            self.received[index] += 1;
        }
        Ok(())
    }

    /// Member `index` has no more entries after those it sent.
    pub fn on_read_complete(&mut self, index: usize) {
        self.complete[index] = true;
    }

    /// Whether `bytes` are the entry read at `seq` (a repair copies it).
    pub fn matches(&self, seq: Seq, bytes: &[u8]) -> bool {
        let position = seq.0.checked_sub(self.trim.0 + 1).map(|p| p as usize);
        position.and_then(|p| self.digests.get(p)).is_some_and(|known| *known == Digest::of(bytes))
    }

    /// The plan, once enough members are fenced and read; `None` before.
    pub fn plan(&self) -> Result<Option<RecoveryPlan>, RecoveryError> {
        let fenced = self.fenced.iter().filter(|last| last.is_some()).count();
        let read: Vec<usize> = (0..self.members.len()).filter(|index| self.complete[*index]).collect();
        let zones: BTreeSet<&str> = read.iter().map(|index| self.members[*index].zone.as_str()).collect();
        let zones_in_ensemble: BTreeSet<&str> = self.members.iter().map(|member| member.zone.as_str()).collect();
        if fenced < self.fences_needed() || read.len() < self.ack_quorum || zones.len() < zones_in_ensemble.len().min(2)
        {
            return Ok(None);
        }
        // The longest complete read is what the old writer could have had
        // acknowledged; the stream ends were taken over the whole union.
        let source = *read.iter().max_by_key(|index| self.received[**index]).expect("an ack quorum was read");
        let longest = self.received[source];
        if let Some(index) = (0..self.members.len()).find(|index| self.received[*index] > longest) {
            return Err(RecoveryError::BrokenOff { index });
        }
        let sealed_seq = Seq(self.trim.0 + longest);
        let repairs =
            read.iter().map(|index| (*index, Seq(self.trim.0 + self.received[*index] + 1)..=sealed_seq)).collect();
        Ok(Some(RecoveryPlan { sealed_seq, source, repairs, stream_ends: self.stream_ends.clone(), entries: longest }))
    }
}

#[cfg(test)]
mod tests;

//! The quorum writer's bookkeeping, free of I/O: it assigns seqs, builds
//! entries, and decides from the members' acknowledgements when an entry is
//! durable and whether the log must be sealed.
//!
//! Each member (one WAL node per zone) receives every entry in seq order and
//! acknowledges in seq order after fsync, so a member's state is just the
//! highest seq it acknowledged. An entry is durable once at least `ack_quorum`
//! members in at least two distinct zones have acknowledged it (DESIGN §3);
//! entries become acknowledged strictly in seq order. A writer that learns it
//! was fenced acknowledges nothing more.

use std::collections::{BTreeSet, VecDeque};

use bytes::Bytes;
use keel_controller_client::NodeId;

use crate::entry::{Entry, EntryHeader, Record};
use crate::ids::{LogEpoch, LogId, Seq};

/// A WAL node of a log's ensemble.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub node: NodeId,
    pub zone: String,
    /// The node's incarnation when the log was opened. The same node id with
    /// another incarnation (its disk was wiped) is not this member any more.
    pub incarnation: String,
}

/// The writer's view of one member.
#[derive(Clone, Debug)]
struct MemberState {
    member: Member,
    /// The highest seq this member acknowledged.
    acked: Seq,
    /// False after its connection failed, until it is reconnected.
    reachable: bool,
}

/// Why the writer cannot append.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriterError {
    #[error("{log} was fenced at a newer epoch; this writer can get nothing more acknowledged")]
    Fenced { log: LogId },
    #[error("{log} is sealed")]
    Sealed { log: LogId },
    /// This append's records do not fit in one entry; the writer goes on.
    #[error(transparent)]
    TooLarge(#[from] crate::entry::EntryError),
}

/// What the writer should do about its ensemble.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Every member is reachable.
    Healthy,
    /// Some member is unreachable but the rest still form an ack quorum:
    /// keep writing, and seal early once a better ensemble exists.
    Degraded,
    /// Too few members are reachable to acknowledge anything: seal this log
    /// and continue on a new one.
    Stalled,
}

/// The bookkeeping of one WAL log's writer.
#[derive(Debug)]
pub struct QuorumWriter {
    log: LogId,
    epoch: LogEpoch,
    members: Vec<MemberState>,
    ack_quorum: usize,
    /// Zones that must be represented among the acknowledgers of a durable entry.
    zones_required: usize,
    /// The seq the next entry gets.
    next_seq: Seq,
    /// The highest seq such that it and every seq before it are durable.
    acked: Seq,
    /// Entries not yet acknowledged by every member, in seq order. They are
    /// resent to a member that reconnects (it may have lost what it had not
    /// fsynced, after the others made it durable), and those not yet durable
    /// are re-appended unchanged to the next log when this one is sealed.
    /// A member that stays away makes this grow: `unreplicated_bytes` is what
    /// the caller caps, sealing the log early when it is too large.
    unreplicated: VecDeque<(Seq, Bytes)>,
    /// The bytes in `unreplicated`.
    unreplicated_bytes: usize,
    stopped: Option<WriterError>,
}

impl QuorumWriter {
    /// A writer for `log` at `epoch` whose entries so far end at `last_seq`
    /// (`Seq(0)` for a new log).
    pub fn new(log: LogId, epoch: LogEpoch, members: Vec<Member>, ack_quorum: usize, last_seq: Seq) -> QuorumWriter {
        assert!(ack_quorum >= 1 && ack_quorum <= members.len(), "ack quorum {ack_quorum} of {} members", members.len());
        let zones: BTreeSet<&str> = members.iter().map(|member| member.zone.as_str()).collect();
        let zones_required = zones.len().min(2);
        QuorumWriter {
            log,
            epoch,
            members: members
                .into_iter()
                .map(|member| MemberState { member, acked: last_seq, reachable: true })
                .collect(),
            ack_quorum,
            zones_required,
            next_seq: last_seq.next(),
            acked: last_seq,
            unreplicated: VecDeque::new(),
            unreplicated_bytes: 0,
            stopped: None,
        }
    }

    pub fn log(&self) -> LogId {
        self.log
    }

    pub fn epoch(&self) -> LogEpoch {
        self.epoch
    }

    /// The highest seq that is durable, with every seq before it.
    pub fn acked(&self) -> Seq {
        self.acked
    }

    /// Builds the next entry. The caller sends `entry.bytes` to every member.
    /// Records that do not fit in one entry are refused and take no seq.
    pub fn next_entry(&mut self, records: Vec<Record>) -> Result<Entry, WriterError> {
        if let Some(error) = &self.stopped {
            return Err(error.clone());
        }
        let seq = self.next_seq;
        let entry = Entry::build(EntryHeader { log: self.log, epoch: self.epoch, seq, acked: self.acked }, records)?;
        self.next_seq = seq.next();
        self.unreplicated_bytes += entry.bytes.len();
        self.unreplicated.push_back((seq, entry.bytes.clone()));
        Ok(entry)
    }

    /// Member `index` acknowledged every entry up to `seq`. Returns the new
    /// acknowledged seq when this made more entries durable.
    pub fn on_ack(&mut self, index: usize, seq: Seq) -> Option<Seq> {
        if self.stopped.is_some() {
            return None;
        }
        let state = &mut self.members[index];
        assert!(seq < self.next_seq, "{} acknowledged {seq}, which was never sent", state.member.node);
        if seq <= state.acked {
            return None;
        }
        state.acked = seq;
        let everywhere = self.members.iter().map(|state| state.acked).min().expect("a writer has members");
        while self.unreplicated.front().is_some_and(|(held, _)| *held <= everywhere) {
            let (_, bytes) = self.unreplicated.pop_front().expect("checked: not empty");
            self.unreplicated_bytes -= bytes.len();
        }
        let durable = self.durable_prefix();
        if durable <= self.acked {
            return None;
        }
        self.acked = durable;
        Some(durable)
    }

    /// The highest seq acknowledged by an ack quorum spanning the required zones.
    fn durable_prefix(&self) -> Seq {
        let mut candidates: Vec<Seq> = self.members.iter().map(|state| state.acked).collect();
        candidates.sort_unstable_by(|a, b| b.cmp(a));
        candidates.dedup();
        for candidate in candidates {
            let holders: Vec<&MemberState> = self.members.iter().filter(|state| state.acked >= candidate).collect();
            let zones: BTreeSet<&str> = holders.iter().map(|state| state.member.zone.as_str()).collect();
            if holders.len() >= self.ack_quorum && zones.len() >= self.zones_required {
                return candidate.max(self.acked);
            }
        }
        self.acked
    }

    /// Member `index`'s connection failed.
    pub fn on_member_lost(&mut self, index: usize) -> Health {
        self.members[index].reachable = false;
        self.health()
    }

    /// Member `index` is reachable again. Returns the entries to resend to it:
    /// every one after what it acknowledged. (It answers for each one it
    /// already holds without storing it twice.)
    pub fn on_member_back(&mut self, index: usize) -> Vec<(Seq, Bytes)> {
        let state = &mut self.members[index];
        state.reachable = true;
        let after = state.acked;
        self.unreplicated.iter().filter(|(seq, _)| *seq > after).cloned().collect()
    }

    /// Bytes held for members that have not acknowledged them yet.
    pub fn unreplicated_bytes(&self) -> usize {
        self.unreplicated_bytes
    }

    /// Whether the reachable members can still acknowledge entries.
    pub fn health(&self) -> Health {
        let reachable: Vec<&MemberState> = self.members.iter().filter(|state| state.reachable).collect();
        let zones: BTreeSet<&str> = reachable.iter().map(|state| state.member.zone.as_str()).collect();
        if reachable.len() == self.members.len() {
            Health::Healthy
        } else if reachable.len() >= self.ack_quorum && zones.len() >= self.zones_required {
            Health::Degraded
        } else {
            Health::Stalled
        }
    }

    /// Whether the writer was fenced or sealed.
    pub fn is_stopped(&self) -> bool {
        self.stopped.is_some()
    }

    /// A member refused an append because the log was fenced at a newer epoch.
    pub fn on_fenced(&mut self) {
        self.stopped = Some(WriterError::Fenced { log: self.log });
    }

    /// The writer stops appending to this log (it seals it). Returns the entries
    /// that were sent but not acknowledged: they are re-appended, unchanged, to
    /// the next log before anything new (DESIGN §3).
    pub fn seal(&mut self) -> Vec<(Seq, Bytes)> {
        self.stopped.get_or_insert(WriterError::Sealed { log: self.log });
        let acked = self.acked;
        self.unreplicated_bytes = 0;
        self.unreplicated.drain(..).filter(|(seq, _)| *seq > acked).collect()
    }
}

#[cfg(test)]
mod tests;

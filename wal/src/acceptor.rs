//! The rules a WAL node applies to one log, free of I/O.
//!
//! A node accepts an append only at seq = its last seq + 1, and only from an
//! epoch at least as new as every epoch it has seen (by a fence or by an
//! append). A fence at a newer epoch makes the node refuse the old writer from
//! then on; the node records the fence durably before it replies. A retransmitted
//! entry the node already holds is acknowledged again without being stored
//! twice, and must be the very same bytes. Readers are never served past what
//! is known to be committed: the writer's last acknowledged seq as carried in
//! the entries, or the sealed seq once the log is sealed.
//!
//! A trim is the controller's word that entries up to a seq are uploaded,
//! so no one needs them from the WAL any more. A node that lags behind a
//! trim (it was cut off while the others went on) skips ahead to it: it
//! holds "everything" up to the trim point, so a writer's resend or a
//! recovery's repair after the trim point is contiguous for it, instead of
//! a gap it could never fill.

use keel_wal_client::entry::EntryHeader;
use keel_wal_client::ids::{LogEpoch, LogId, Seq};

/// Why a node refuses a request for a log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaError {
    #[error("{log} is fenced at {fenced}; an append at {epoch} is refused")]
    Fenced { log: LogId, epoch: LogEpoch, fenced: LogEpoch },
    #[error("{log} holds entries up to {last}; an append at {seq} would leave a gap")]
    Gap { log: LogId, seq: Seq, last: Seq },
    #[error("{log} already holds different bytes at {seq}")]
    Conflict { log: LogId, seq: Seq },
    #[error("{log} is fenced at {fenced}; a fence at older {epoch} is refused")]
    StaleFence { log: LogId, epoch: LogEpoch, fenced: LogEpoch },
    #[error("the entry belongs to {entry}, not {log}")]
    WrongLog { log: LogId, entry: LogId },
}

/// What an accepted append does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendKind {
    /// A new entry: store it, then acknowledge once it is fsynced.
    New,
    /// The node already holds these exact bytes: acknowledge once they are fsynced.
    AlreadyHeld,
}

/// What a fence reports back to the recoverer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FenceReply {
    pub last_seq: Seq,
    pub trim_seq: Seq,
}

/// A node's state of one log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogReplica {
    log: LogId,
    /// The newest epoch seen; older writers are refused.
    epoch: LogEpoch,
    /// The last seq held (entries trim_seq+1 ..= last_seq are held).
    last_seq: Seq,
    /// Entries up to here may be deleted.
    trim_seq: Seq,
    /// The highest "acked" seq carried by a held entry.
    writer_acked: Seq,
}

impl LogReplica {
    pub fn new(log: LogId) -> LogReplica {
        LogReplica { log, epoch: LogEpoch(0), last_seq: Seq(0), trim_seq: Seq(0), writer_acked: Seq(0) }
    }

    /// A replica rebuilt from the journal after a restart.
    pub fn restored(log: LogId, epoch: LogEpoch, last_seq: Seq, trim_seq: Seq, writer_acked: Seq) -> LogReplica {
        assert!(trim_seq <= last_seq && writer_acked <= last_seq, "{log}: restored positions out of order");
        LogReplica { log, epoch, last_seq, trim_seq, writer_acked }
    }

    pub fn log(&self) -> LogId {
        self.log
    }

    pub fn writer_acked(&self) -> Seq {
        self.writer_acked
    }

    pub fn last_seq(&self) -> Seq {
        self.last_seq
    }

    pub fn trim_seq(&self) -> Seq {
        self.trim_seq
    }

    pub fn epoch(&self) -> LogEpoch {
        self.epoch
    }

    /// Decides an append sent at `sender_epoch` of an entry with `header`.
    /// `held_crc` answers the checksum of an entry this node already holds.
    pub fn check_append(
        &self,
        sender_epoch: LogEpoch,
        header: &EntryHeader,
        crc: u32,
        held_crc: impl Fn(Seq) -> Option<u32>,
    ) -> Result<AppendKind, ReplicaError> {
        let log = self.log;
        if header.log != log {
            return Err(ReplicaError::WrongLog { log, entry: header.log });
        }
        if sender_epoch < self.epoch {
            return Err(ReplicaError::Fenced { log, epoch: sender_epoch, fenced: self.epoch });
        }
        let seq = header.seq;
        if seq == self.last_seq.next() {
            return Ok(AppendKind::New);
        }
        if seq > self.last_seq {
            return Err(ReplicaError::Gap { log, seq, last: self.last_seq });
        }
        match held_crc(seq) {
            Some(held) if held == crc => Ok(AppendKind::AlreadyHeld),
            // Trimmed entries were durable and identical; a late duplicate of one is harmless.
            None if seq <= self.trim_seq => Ok(AppendKind::AlreadyHeld),
            _ => Err(ReplicaError::Conflict { log, seq }),
        }
    }

    /// Records an append that `check_append` accepted as new (after it is stored).
    pub fn on_appended(&mut self, sender_epoch: LogEpoch, header: &EntryHeader) {
        assert_eq!(header.seq, self.last_seq.next(), "{}: appended out of order", self.log);
        assert!(sender_epoch >= self.epoch, "{}: appended under an older epoch", self.log);
        self.epoch = sender_epoch;
        self.last_seq = header.seq;
        self.writer_acked = self.writer_acked.max(header.acked.min(header.seq));
    }

    /// Fences the log at `epoch`. Idempotent at the current epoch.
    pub fn fence(&mut self, epoch: LogEpoch) -> Result<FenceReply, ReplicaError> {
        if epoch < self.epoch {
            return Err(ReplicaError::StaleFence { log: self.log, epoch, fenced: self.epoch });
        }
        self.epoch = epoch;
        Ok(FenceReply { last_seq: self.last_seq, trim_seq: self.trim_seq })
    }

    /// Lets entries up to `seq` be deleted; a replica that holds less skips
    /// ahead to `seq`. Never moves backwards.
    pub fn trim(&mut self, seq: Seq) {
        self.trim_seq = self.trim_seq.max(seq);
        self.last_seq = self.last_seq.max(seq);
        self.writer_acked = self.writer_acked.max(seq);
    }

    /// The last seq a reader may be served: what is known committed.
    pub fn readable_end(&self, sealed_seq: Option<Seq>) -> Seq {
        match sealed_seq {
            Some(sealed) => sealed.min(self.last_seq),
            None => self.writer_acked,
        }
    }
}

#[cfg(test)]
mod tests;

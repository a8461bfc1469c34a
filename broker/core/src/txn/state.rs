//! One transactional id's state at its coordinator, and Kafka's rules for
//! moving it (`TransactionMetadata` and the coordinator's checks), without
//! I/O: each request either is answered at once or yields the next state,
//! which the coordinator writes to `__transaction_state` and applies once it
//! is durable.
//!
//! ```text
//! Empty ──AddPartitions──▶ Ongoing ──EndTxn(commit)──▶ PrepareCommit ──markers──▶ CompleteCommit
//!   ▲                        │  └──EndTxn(abort), timeout, fence──▶ PrepareAbort ──markers──▶ CompleteAbort
//!   └────InitProducerId (epoch + 1)◀──────────────────────────────────────────────────────────┘
//! ```

use std::collections::BTreeSet;

use kafka_protocol::error::ResponseError;

/// Kafka's `transaction.max.timeout.ms` default: 15 minutes.
pub const MAX_TIMEOUT_MS: i32 = 900_000;

/// Kafka's transaction states, with their ids in `__transaction_state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Empty = 0,
    Ongoing = 1,
    PrepareCommit = 2,
    PrepareAbort = 3,
    CompleteCommit = 4,
    CompleteAbort = 5,
    Dead = 6,
    PrepareEpochFence = 7,
}

impl Status {
    pub fn from_id(id: i8) -> Option<Status> {
        Some(match id {
            0 => Status::Empty,
            1 => Status::Ongoing,
            2 => Status::PrepareCommit,
            3 => Status::PrepareAbort,
            4 => Status::CompleteCommit,
            5 => Status::CompleteAbort,
            6 => Status::Dead,
            7 => Status::PrepareEpochFence,
            _ => return None,
        })
    }

    /// Kafka's name, as DescribeTransactions and ListTransactions show it.
    pub fn name(self) -> &'static str {
        match self {
            Status::Empty => "Empty",
            Status::Ongoing => "Ongoing",
            Status::PrepareCommit => "PrepareCommit",
            Status::PrepareAbort => "PrepareAbort",
            Status::CompleteCommit => "CompleteCommit",
            Status::CompleteAbort => "CompleteAbort",
            Status::Dead => "Dead",
            Status::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// Waiting for its markers to be written.
    pub fn is_prepared(self) -> bool {
        matches!(self, Status::PrepareCommit | Status::PrepareAbort)
    }
}

/// A transactional id's producer and transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Txn {
    pub producer_id: i64,
    pub epoch: i16,
    /// The epoch before the coordinator bumped it on its own (a timeout or
    /// a fence), so the producer may still ask for a new one (KIP-360).
    /// Kept in memory only, as in Kafka.
    pub last_epoch: i16,
    pub timeout_ms: i32,
    pub status: Status,
    /// The partitions of the transaction (topic, index).
    pub partitions: BTreeSet<(String, i32)>,
    pub start_ms: i64,
    pub update_ms: i64,
}

/// What `InitProducerId` leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum Init {
    /// Write this state, then answer with its producer id and epoch. The
    /// producer id is -1 when a fresh one must be allocated.
    Write(Txn),
    /// A retry of the bump that made the current epoch: answer with it.
    Current,
    /// Abort the open transaction at a bumped epoch first (write this
    /// state, then its markers); the client is told to retry.
    Fence(Txn),
    Refuse(ResponseError),
}

/// The highest epoch; the next bump takes a new producer id.
const LAST_EPOCH: i16 = i16::MAX - 1;

/// Whether a transaction timeout is one the coordinator accepts.
pub fn valid_timeout(timeout_ms: i32) -> bool {
    timeout_ms > 0 && timeout_ms <= MAX_TIMEOUT_MS
}

/// `InitProducerId` for a transactional id: a new producer (id -1 until
/// allocated), or the existing one at the next epoch. `expected` is the
/// (producer id, epoch) the client had, or (-1, -1) (KIP-360).
pub fn init(current: Option<&Txn>, timeout_ms: i32, expected: (i64, i16), now_ms: i64) -> Init {
    if !valid_timeout(timeout_ms) {
        return Init::Refuse(ResponseError::InvalidTransactionTimeout);
    }
    let Some(current) = current else {
        return Init::Write(Txn {
            producer_id: -1,
            epoch: 0,
            last_epoch: -1,
            timeout_ms,
            status: Status::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            update_ms: now_ms,
        });
    };
    if expected.0 >= 0 {
        // KIP-360: the client did not hear the answer to its bump and asks again.
        let retried = expected == (current.producer_id, current.last_epoch)
            && current.status == Status::Empty
            && current.epoch == current.last_epoch.wrapping_add(1);
        if retried {
            return Init::Current;
        }
        if expected.0 != current.producer_id {
            return Init::Refuse(ResponseError::ProducerFenced);
        }
        if expected.1 != current.epoch && expected.1 != current.last_epoch {
            return Init::Refuse(ResponseError::ProducerFenced);
        }
    }
    match current.status {
        Status::PrepareCommit | Status::PrepareAbort | Status::PrepareEpochFence => {
            Init::Refuse(ResponseError::ConcurrentTransactions)
        }
        Status::Ongoing => Init::Fence(abort_bumped(current, now_ms)),
        Status::Empty | Status::CompleteCommit | Status::CompleteAbort | Status::Dead => {
            let (producer_id, epoch) =
                if current.epoch >= LAST_EPOCH { (-1, 0) } else { (current.producer_id, current.epoch + 1) };
            Init::Write(Txn {
                producer_id,
                epoch,
                last_epoch: if producer_id == current.producer_id { current.epoch } else { -1 },
                timeout_ms,
                status: Status::Empty,
                partitions: BTreeSet::new(),
                start_ms: -1,
                update_ms: now_ms,
            })
        }
    }
}

/// The transaction aborted by the coordinator itself (a timeout, or a new
/// incarnation of the producer): at a bumped epoch, so the old producer is
/// fenced everywhere its markers land.
pub fn abort_bumped(current: &Txn, now_ms: i64) -> Txn {
    let epoch = if current.epoch >= LAST_EPOCH { current.epoch } else { current.epoch + 1 };
    Txn { epoch, last_epoch: current.epoch, status: Status::PrepareAbort, update_ms: now_ms, ..current.clone() }
}

/// Kafka's check of a request's producer id and epoch against the state.
fn check_producer(current: &Txn, producer_id: i64, epoch: i16) -> Result<(), ResponseError> {
    if producer_id != current.producer_id {
        return Err(ResponseError::InvalidProducerIdMapping);
    }
    if epoch != current.epoch {
        return Err(ResponseError::ProducerFenced);
    }
    Ok(())
}

/// `AddPartitionsToTxn` / `AddOffsetsToTxn`: `None` when every partition is
/// in the transaction already, else the state to write.
pub fn add_partitions(
    current: Option<&Txn>,
    producer_id: i64,
    epoch: i16,
    partitions: &[(String, i32)],
    now_ms: i64,
) -> Result<Option<Txn>, ResponseError> {
    let current = current.ok_or(ResponseError::InvalidProducerIdMapping)?;
    check_producer(current, producer_id, epoch)?;
    match current.status {
        Status::PrepareCommit | Status::PrepareAbort | Status::PrepareEpochFence => {
            return Err(ResponseError::ConcurrentTransactions)
        }
        Status::Dead => return Err(ResponseError::InvalidProducerIdMapping),
        Status::Ongoing if partitions.iter().all(|p| current.partitions.contains(p)) => return Ok(None),
        Status::Ongoing | Status::Empty | Status::CompleteCommit | Status::CompleteAbort => {}
    }
    let mut next = current.clone();
    if current.status != Status::Ongoing {
        next.partitions.clear();
        next.start_ms = now_ms;
    }
    next.status = Status::Ongoing;
    next.partitions.extend(partitions.iter().cloned());
    next.update_ms = now_ms;
    Ok(Some(next))
}

/// What `EndTxn` leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// Write this prepared state, answer, then write the markers.
    Prepare(Txn),
    /// The same end was asked for again after it completed: answer at once.
    Done,
}

pub fn end(
    current: Option<&Txn>,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    now_ms: i64,
) -> Result<End, ResponseError> {
    let current = current.ok_or(ResponseError::InvalidProducerIdMapping)?;
    if producer_id != current.producer_id {
        return Err(ResponseError::InvalidProducerIdMapping);
    }
    // An abort retried after the coordinator aborted the transaction on its
    // own (a timeout) at a bumped epoch is answered with the fence.
    if epoch != current.epoch {
        return Err(ResponseError::ProducerFenced);
    }
    match (current.status, commit) {
        (Status::Ongoing, _) => {
            let status = if commit { Status::PrepareCommit } else { Status::PrepareAbort };
            Ok(End::Prepare(Txn { status, update_ms: now_ms, ..current.clone() }))
        }
        (Status::CompleteCommit, true) | (Status::CompleteAbort, false) => Ok(End::Done),
        (Status::PrepareCommit, true) | (Status::PrepareAbort, false) => Err(ResponseError::ConcurrentTransactions),
        (Status::PrepareEpochFence, _) => Err(ResponseError::ConcurrentTransactions),
        _ => Err(ResponseError::InvalidTxnState),
    }
}

/// The state once every marker of a prepared transaction is written.
pub fn complete(prepared: &Txn, now_ms: i64) -> Txn {
    let status = if prepared.status == Status::PrepareCommit { Status::CompleteCommit } else { Status::CompleteAbort };
    Txn { status, partitions: BTreeSet::new(), update_ms: now_ms, ..prepared.clone() }
}

/// Whether an open transaction has outlived its timeout.
pub fn timed_out(txn: &Txn, now_ms: i64) -> bool {
    txn.status == Status::Ongoing && now_ms.saturating_sub(txn.start_ms) > i64::from(txn.timeout_ms)
}

/// `AddPartitionsToTxn` v4's check for a partition leader (KIP-890): the
/// producer, at this epoch, has `partition` in its open transaction.
pub fn verify(
    current: Option<&Txn>,
    producer_id: i64,
    epoch: i16,
    partition: &(String, i32),
) -> Result<(), ResponseError> {
    let current = current.ok_or(ResponseError::InvalidProducerIdMapping)?;
    check_producer(current, producer_id, epoch)?;
    if current.status == Status::Ongoing && current.partitions.contains(partition) {
        Ok(())
    } else {
        Err(ResponseError::InvalidTxnState)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(init: Init) -> Txn {
        match init {
            Init::Write(txn) => txn,
            other => panic!("expected a write, got {other:?}"),
        }
    }

    fn p(topic: &str, index: i32) -> (String, i32) {
        (topic.to_owned(), index)
    }

    #[test]
    fn a_transaction_goes_from_empty_through_ongoing_and_prepare_to_complete() {
        let mut txn = written(init(None, 60_000, (-1, -1), 0));
        assert_eq!((txn.producer_id, txn.epoch, txn.status), (-1, 0, Status::Empty));
        txn.producer_id = 5;
        let added = add_partitions(Some(&txn), 5, 0, &[p("a", 0), p("a", 1)], 10).unwrap().unwrap();
        assert_eq!((added.status, added.start_ms, added.partitions.len()), (Status::Ongoing, 10, 2));
        assert_eq!(add_partitions(Some(&added), 5, 0, &[p("a", 1)], 11), Ok(None), "already in");
        assert_eq!(verify(Some(&added), 5, 0, &p("a", 1)), Ok(()));
        assert_eq!(verify(Some(&added), 5, 0, &p("b", 0)), Err(ResponseError::InvalidTxnState));
        let End::Prepare(prepared) = end(Some(&added), 5, 0, true, 20).unwrap() else { panic!() };
        assert_eq!(prepared.status, Status::PrepareCommit);
        assert_eq!(add_partitions(Some(&prepared), 5, 0, &[p("c", 0)], 21), Err(ResponseError::ConcurrentTransactions));
        assert_eq!(end(Some(&prepared), 5, 0, true, 21), Err(ResponseError::ConcurrentTransactions));
        let done = complete(&prepared, 30);
        assert_eq!((done.status, done.partitions.len()), (Status::CompleteCommit, 0));
        assert_eq!(end(Some(&done), 5, 0, true, 31), Ok(End::Done), "a retried commit");
        assert_eq!(end(Some(&done), 5, 0, false, 31), Err(ResponseError::InvalidTxnState));
        let next = add_partitions(Some(&done), 5, 0, &[p("c", 0)], 40).unwrap().unwrap();
        assert_eq!((next.partitions.len(), next.start_ms), (1, 40), "a new transaction starts afresh");
    }

    #[test]
    fn a_new_incarnation_fences_the_old_one() {
        let mut txn = written(init(None, 60_000, (-1, -1), 0));
        txn.producer_id = 5;
        let again = written(init(Some(&txn), 60_000, (-1, -1), 1));
        assert_eq!((again.producer_id, again.epoch), (5, 1));
        assert_eq!(add_partitions(Some(&again), 5, 0, &[p("a", 0)], 2), Err(ResponseError::ProducerFenced));
        assert_eq!(add_partitions(Some(&again), 6, 1, &[p("a", 0)], 2), Err(ResponseError::InvalidProducerIdMapping));

        let ongoing = add_partitions(Some(&again), 5, 1, &[p("a", 0)], 3).unwrap().unwrap();
        let Init::Fence(fenced) = init(Some(&ongoing), 60_000, (-1, -1), 4) else {
            panic!("the open transaction is aborted first")
        };
        assert_eq!((fenced.status, fenced.epoch, fenced.last_epoch), (Status::PrepareAbort, 2, 1));
        assert_eq!(end(Some(&fenced), 5, 1, true, 5), Err(ResponseError::ProducerFenced));
        assert_eq!(init(Some(&fenced), 60_000, (-1, -1), 5), Init::Refuse(ResponseError::ConcurrentTransactions));
    }

    #[test]
    fn kip_360_lets_the_producer_of_a_timed_out_transaction_carry_on() {
        let mut txn = written(init(None, 1_000, (-1, -1), 0));
        txn.producer_id = 5;
        let ongoing = add_partitions(Some(&txn), 5, 0, &[p("a", 0)], 0).unwrap().unwrap();
        assert!(!timed_out(&ongoing, 1_000));
        assert!(timed_out(&ongoing, 1_001));
        let done = complete(&abort_bumped(&ongoing, 1_001), 1_002);
        assert_eq!((done.epoch, done.last_epoch, done.status), (1, 0, Status::CompleteAbort));
        let again = written(init(Some(&done), 1_000, (5, 0), 1_003));
        assert_eq!(again.epoch, 2, "the old epoch may ask again");
        assert_eq!(init(Some(&again), 1_000, (5, 1), 1_004), Init::Current, "a retried bump gets the same epoch");
        assert_eq!(init(Some(&done), 1_000, (5, 7), 1_003), Init::Refuse(ResponseError::ProducerFenced));
        assert_eq!(init(Some(&done), 1_000, (4, 0), 1_003), Init::Refuse(ResponseError::ProducerFenced));
    }

    #[test]
    fn bad_timeouts_and_exhausted_epochs() {
        assert_eq!(init(None, 0, (-1, -1), 0), Init::Refuse(ResponseError::InvalidTransactionTimeout));
        assert_eq!(init(None, MAX_TIMEOUT_MS + 1, (-1, -1), 0), Init::Refuse(ResponseError::InvalidTransactionTimeout));
        let mut txn = written(init(None, 1_000, (-1, -1), 0));
        txn.producer_id = 5;
        txn.epoch = LAST_EPOCH;
        assert_eq!(written(init(Some(&txn), 1_000, (-1, -1), 0)).producer_id, -1, "a new producer id");
    }
}

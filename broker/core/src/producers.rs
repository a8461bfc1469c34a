//! Idempotent and transactional producers: per partition, each producer's
//! epoch and its last five batches, so a retried batch is recognised and a
//! gap refused, and its open transaction, if any (as Kafka's
//! `ProducerStateManager`). The open transactions give the last stable
//! offset; the aborted ones, with their first and last offsets, are the
//! index `read_committed` consumers filter by. A producer that wrote nothing
//! for `producer_id_expiration` is forgotten (Kafka's
//! `producer.id.expiration.ms`), unless its transaction is still open.

use std::collections::{BTreeMap, HashMap, VecDeque};

use kafka_protocol::error::ResponseError;
use keel_controller_client::{Offset, ProducerId};

use crate::batch::{wrapping_add_sequence, BatchHeader, Marker};

/// Batches remembered per producer: clients have at most five in flight.
const WINDOW: usize = 5;

/// What to do with a produced batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Append it.
    Append,
    /// It was appended before at this base offset: answer with that offset
    /// once it is durable, append nothing.
    Duplicate { base_offset: Offset, last_offset: Offset },
    /// Refuse it with this error.
    Refuse(ResponseError),
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Producer {
    epoch: i16,
    /// (first sequence, last sequence, base offset, last offset), oldest first.
    batches: VecDeque<(i32, i32, Offset, Offset)>,
    /// When the leader appended its last batch (ms since the epoch); a
    /// snapshot from before this field counts from when it is loaded.
    #[serde(default = "crate::clock::now_ms")]
    last_append_ms: i64,
    /// The first offset of its open transaction in this partition.
    #[serde(default)]
    txn_first: Option<Offset>,
    /// The epoch of the transaction coordinator that wrote its last
    /// marker here: a marker from an older one (cut off, not yet aware of
    /// its successor) is refused.
    #[serde(default = "no_epoch")]
    coordinator_epoch: i32,
}

fn no_epoch() -> i32 {
    -1
}

/// A transaction that ended with an abort marker: its data lies between
/// `first_offset` and the marker at `last_offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AbortedTxn {
    pub producer_id: ProducerId,
    pub first_offset: Offset,
    pub last_offset: Offset,
}

/// One producer as `DescribeProducers` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerView {
    pub producer_id: ProducerId,
    pub epoch: i16,
    pub last_sequence: i32,
    pub last_append_ms: i64,
    pub txn_first: Option<Offset>,
}

/// The producer state of one partition.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Producers {
    producers: HashMap<ProducerId, Producer>,
    /// Open transactions: first offset -> producer id.
    #[serde(default)]
    open: BTreeMap<Offset, ProducerId>,
    /// Aborted transactions in the order of their markers.
    #[serde(default)]
    aborted: Vec<AbortedTxn>,
    /// KIP-890's guard: producer id -> (epoch, token) of a verification in
    /// flight with the transaction's coordinator. A marker clears it, so a
    /// verification answered after the transaction ended lets nothing in.
    #[serde(skip)]
    verifying: HashMap<ProducerId, (i16, u64)>,
}

impl Producers {
    /// Decides what to do with a batch, without changing anything. The
    /// first batch of a transaction here needs `verified`: the token of a
    /// verification begun here (`begin_verification`) that the
    /// transaction's coordinator confirmed and no marker cleared since.
    pub fn check(&self, batch: &BatchHeader, verified: Option<u64>) -> Verdict {
        if !batch.is_idempotent() {
            return Verdict::Append;
        }
        let producer = self.producers.get(&batch.producer_id);
        if batch.is_control() {
            // A marker from the coordinator: an older epoch is a zombie's.
            return match producer {
                Some(producer) if batch.producer_epoch < producer.epoch => {
                    Verdict::Refuse(ResponseError::InvalidProducerEpoch)
                }
                _ => Verdict::Append,
            };
        }
        if producer.is_some_and(|p| batch.producer_epoch < p.epoch) {
            return Verdict::Refuse(ResponseError::InvalidProducerEpoch);
        }
        let in_transaction = self.in_transaction(batch.producer_id, batch.producer_epoch);
        let guarded = verified
            .is_some_and(|token| self.verifying.get(&batch.producer_id) == Some(&(batch.producer_epoch, token)));
        if batch.is_transactional() && !in_transaction && !guarded {
            return Verdict::Refuse(ResponseError::InvalidTxnState);
        }
        if !batch.is_transactional() && producer.is_some_and(|p| p.txn_first.is_some()) {
            return Verdict::Refuse(ResponseError::InvalidTxnState);
        }
        if batch.base_sequence < 0 {
            // The coordinator's own transactional writes (offsets committed
            // in a transaction) carry no sequence; clients' are refused
            // before this.
            return Verdict::Append;
        }
        let Some(producer) = producer else {
            // Unknown producer (new, or its state expired): any sequence starts it, as in Kafka.
            return Verdict::Append;
        };
        if batch.producer_epoch < producer.epoch {
            return Verdict::Refuse(ResponseError::InvalidProducerEpoch);
        }
        if batch.producer_epoch > producer.epoch {
            return if batch.base_sequence == 0 {
                Verdict::Append
            } else {
                Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber)
            };
        }
        let last = batch.last_sequence();
        if let Some(&(_, _, base_offset, last_offset)) =
            producer.batches.iter().find(|(first, end, _, _)| *first == batch.base_sequence && *end == last)
        {
            return Verdict::Duplicate { base_offset, last_offset };
        }
        match producer.batches.back() {
            Some(&(_, previous_last, _, _)) if wrapping_add_sequence(previous_last, 1) != batch.base_sequence => {
                Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber)
            }
            _ => Verdict::Append,
        }
    }

    /// Whether to append a transaction marker written by coordinator epoch
    /// `coordinator_epoch` (Kafka's TRANSACTION_COORDINATOR_FENCED for an
    /// older coordinator than the last one seen here), else as `check`.
    pub fn check_marker(&self, batch: &BatchHeader, coordinator_epoch: i32) -> Verdict {
        let known = self.producers.get(&batch.producer_id).map_or(-1, |p| p.coordinator_epoch);
        if coordinator_epoch < known {
            return Verdict::Refuse(ResponseError::TransactionCoordinatorFenced);
        }
        self.check(batch, None)
    }

    /// Records a batch appended at `base_offset` at `now_ms`; `marker` is
    /// what a control batch marks, with its coordinator's epoch
    /// (`batch::marker`).
    pub fn record(&mut self, batch: &BatchHeader, marker: Option<(Marker, i32)>, base_offset: Offset, now_ms: i64) {
        if !batch.is_idempotent() {
            return;
        }
        let producer = self.producers.entry(batch.producer_id).or_insert_with(|| Producer {
            epoch: batch.producer_epoch,
            batches: VecDeque::new(),
            last_append_ms: now_ms,
            txn_first: None,
            coordinator_epoch: -1,
        });
        producer.last_append_ms = now_ms;
        if batch.producer_epoch > producer.epoch || (batch.producer_epoch != producer.epoch && !batch.is_control()) {
            producer.epoch = batch.producer_epoch;
            producer.batches.clear();
        }
        if batch.is_control() || batch.is_transactional() {
            // Ended, or opened: a verification in flight counts no more.
            self.verifying.remove(&batch.producer_id);
        }
        if batch.is_control() {
            // The transaction ends here, whatever its marker (an unknown
            // control type is not a transaction's end, and ends nothing).
            let Some((marker, coordinator_epoch)) = marker else { return };
            producer.coordinator_epoch = producer.coordinator_epoch.max(coordinator_epoch);
            if let Some(first) = producer.txn_first.take() {
                self.open.remove(&first);
                if marker == Marker::Abort {
                    let aborted =
                        AbortedTxn { producer_id: batch.producer_id, first_offset: first, last_offset: base_offset };
                    self.aborted.push(aborted);
                }
            }
            return;
        }
        if batch.is_transactional() && producer.txn_first.is_none() {
            producer.txn_first = Some(base_offset);
            self.open.insert(base_offset, batch.producer_id);
        }
        if batch.base_sequence < 0 {
            return;
        }
        let last_offset = base_offset + i64::from(batch.last_offset_delta);
        producer.batches.push_back((batch.base_sequence, batch.last_sequence(), base_offset, last_offset));
        if producer.batches.len() > WINDOW {
            producer.batches.pop_front();
        }
    }

    /// Forgets the producers that appended nothing since `horizon_ms`;
    /// returns how many.
    pub fn expire(&mut self, horizon_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, producer| producer.txn_first.is_some() || producer.last_append_ms > horizon_ms);
        before - self.producers.len()
    }

    /// Starts a verification of producer (id, epoch)'s transaction here:
    /// the token `check` wants once the coordinator confirmed it.
    pub fn begin_verification(&mut self, producer_id: ProducerId, epoch: i16) -> u64 {
        let token = rand::random::<u64>();
        self.verifying.insert(producer_id, (epoch, token));
        token
    }

    /// Whether the producer has a transaction open here at `epoch`.
    pub fn in_transaction(&self, producer_id: ProducerId, epoch: i16) -> bool {
        self.producers.get(&producer_id).is_some_and(|p| p.txn_first.is_some() && p.epoch == epoch)
    }

    /// The first offset of the oldest open transaction: the last stable
    /// offset is the lower of it and the high watermark.
    pub fn first_unstable(&self) -> Option<Offset> {
        self.open.keys().next().copied()
    }

    /// The aborted transactions with data in `[from, to)`, oldest first.
    pub fn aborted_between(&self, from: Offset, to: Offset) -> Vec<AbortedTxn> {
        self.aborted.iter().filter(|txn| txn.last_offset >= from && txn.first_offset < to).copied().collect()
    }

    /// Forgets aborted transactions that end below the log start (their
    /// data is deleted).
    pub fn forget_aborted_before(&mut self, log_start: Offset) {
        self.aborted.retain(|txn| txn.last_offset >= log_start);
    }

    /// Drops what a snapshot at the uploaded end no longer needs: producers
    /// idle since `horizon_ms` (unless a transaction of theirs is open) and
    /// aborted transactions wholly below `log_start`. Without it, every
    /// snapshot would carry every producer and abort the partition ever saw.
    pub fn prune(&mut self, log_start: Offset, horizon_ms: i64) -> usize {
        self.forget_aborted_before(log_start);
        self.expire(horizon_ms)
    }

    /// Every producer, for `DescribeProducers`.
    pub fn view(&self) -> Vec<ProducerView> {
        let mut producers: Vec<ProducerView> = self
            .producers
            .iter()
            .map(|(&producer_id, p)| ProducerView {
                producer_id,
                epoch: p.epoch,
                last_sequence: p.batches.back().map_or(-1, |b| b.1),
                last_append_ms: p.last_append_ms,
                txn_first: p.txn_first,
            })
            .collect();
        producers.sort_by_key(|p| p.producer_id);
        producers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(producer_id: i64, epoch: i16, base_sequence: i32, count: i32) -> BatchHeader {
        BatchHeader {
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: ProducerId(producer_id),
            producer_epoch: epoch,
            base_sequence,
            record_count: count,
        }
    }

    #[test]
    fn in_order_batches_append_retries_are_duplicates_and_gaps_are_refused() {
        let mut producers = Producers::default();
        let first = header(9, 0, 0, 3);
        assert_eq!(producers.check(&first, None), Verdict::Append);
        producers.record(&first, None, Offset(100), 0);
        assert_eq!(
            producers.check(&first, None),
            Verdict::Duplicate { base_offset: Offset(100), last_offset: Offset(102) }
        );
        let next = header(9, 0, 3, 2);
        assert_eq!(producers.check(&next, None), Verdict::Append);
        producers.record(&next, None, Offset(103), 0);
        assert_eq!(
            producers.check(&header(9, 0, 6, 1), None),
            Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber),
            "sequence 5 is missing"
        );
        assert_eq!(producers.check(&header(9, 0, 5, 1), None), Verdict::Append);
    }

    #[test]
    fn epochs_fence_old_producers_and_a_new_epoch_starts_at_zero() {
        let mut producers = Producers::default();
        producers.record(&header(9, 3, 0, 1), None, Offset(0), 0);
        assert_eq!(producers.check(&header(9, 2, 1, 1), None), Verdict::Refuse(ResponseError::InvalidProducerEpoch));
        assert_eq!(
            producers.check(&header(9, 4, 7, 1), None),
            Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber)
        );
        assert_eq!(producers.check(&header(9, 4, 0, 1), None), Verdict::Append);
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut producers = Producers::default();
        for seq in 0..6 {
            producers.record(&header(1, 0, seq, 1), None, Offset(i64::from(seq)), 0);
        }
        assert_eq!(
            producers.check(&header(1, 0, 0, 1), None),
            Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber)
        );
        assert!(matches!(producers.check(&header(1, 0, 1, 1), None), Verdict::Duplicate { .. }));
    }

    #[test]
    fn sequences_continue_across_the_wrap() {
        let mut producers = Producers::default();
        producers.record(&header(1, 0, i32::MAX - 1, 2), None, Offset(0), 0);
        assert_eq!(producers.check(&header(1, 0, 0, 1), None), Verdict::Append);
    }

    fn transactional(producer_id: i64, epoch: i16, base_sequence: i32, count: i32) -> BatchHeader {
        BatchHeader { attributes: 1 << 4, ..header(producer_id, epoch, base_sequence, count) }
    }

    fn marker(producer_id: i64, epoch: i16) -> BatchHeader {
        BatchHeader { attributes: (1 << 4) | (1 << 5), base_sequence: -1, ..header(producer_id, epoch, -1, 1) }
    }

    #[test]
    fn open_transactions_hold_the_stable_offset_and_aborts_are_indexed() {
        let mut producers = Producers::default();
        let first = transactional(1, 0, 0, 2);
        assert_eq!(producers.check(&first, None), Verdict::Refuse(ResponseError::InvalidTxnState), "not verified");
        let token = producers.begin_verification(ProducerId(1), 0);
        assert_eq!(producers.check(&first, Some(token ^ 1)), Verdict::Refuse(ResponseError::InvalidTxnState));
        assert_eq!(producers.check(&first, Some(token)), Verdict::Append);
        producers.record(&first, None, Offset(10), 0);
        let more = transactional(1, 0, 2, 1);
        assert_eq!(producers.check(&more, None), Verdict::Append, "the transaction is open here");
        producers.record(&more, None, Offset(12), 0);
        producers.record(&transactional(2, 0, 0, 1), None, Offset(13), 0);
        assert_eq!(producers.first_unstable(), Some(Offset(10)));
        assert_eq!(
            producers.check(&header(1, 0, 3, 1), None),
            Verdict::Refuse(ResponseError::InvalidTxnState),
            "no plain batch in the middle of a transaction"
        );

        producers.record(&marker(1, 0), Some((Marker::Abort, 0)), Offset(14), 0);
        assert_eq!(producers.first_unstable(), Some(Offset(13)), "producer 2 is still open");
        producers.record(&marker(2, 0), Some((Marker::Commit, 0)), Offset(15), 0);
        assert_eq!(producers.first_unstable(), None);
        let aborted = AbortedTxn { producer_id: ProducerId(1), first_offset: Offset(10), last_offset: Offset(14) };
        assert_eq!(producers.aborted_between(Offset(0), Offset(11)), [aborted]);
        assert_eq!(producers.aborted_between(Offset(14), Offset(20)), [aborted]);
        assert!(producers.aborted_between(Offset(15), Offset(20)).is_empty());
        assert!(producers.aborted_between(Offset(0), Offset(10)).is_empty());
        producers.forget_aborted_before(Offset(15));
        assert!(producers.aborted_between(Offset(0), Offset(20)).is_empty());
    }

    #[test]
    fn markers_of_an_older_epoch_are_refused_and_a_bumped_one_fences_the_producer() {
        let mut producers = Producers::default();
        producers.record(&transactional(1, 3, 0, 1), None, Offset(0), 0);
        assert_eq!(producers.check(&marker(1, 2), None), Verdict::Refuse(ResponseError::InvalidProducerEpoch));
        producers.record(&marker(1, 4), Some((Marker::Abort, 0)), Offset(1), 0);
        let token = producers.begin_verification(ProducerId(1), 3);
        assert_eq!(
            producers.check(&transactional(1, 3, 1, 1), Some(token)),
            Verdict::Refuse(ResponseError::InvalidProducerEpoch)
        );
        let token = producers.begin_verification(ProducerId(1), 4);
        assert_eq!(producers.check(&transactional(1, 4, 0, 1), Some(token)), Verdict::Append);
    }

    #[test]
    fn a_marker_from_an_older_coordinator_is_refused() {
        let mut producers = Producers::default();
        producers.record(&transactional(1, 0, 0, 1), None, Offset(0), 0);
        producers.record(&marker(1, 0), Some((Marker::Commit, 5)), Offset(1), 0);
        assert_eq!(
            producers.check_marker(&marker(1, 0), 4),
            Verdict::Refuse(ResponseError::TransactionCoordinatorFenced)
        );
        assert_eq!(producers.check_marker(&marker(1, 0), 5), Verdict::Append);
        assert_eq!(producers.check_marker(&marker(2, 0), 0), Verdict::Append, "another producer");
    }

    /// KIP-890's guard: a verification answered after the transaction
    /// ended (its marker landed meanwhile) lets nothing in.
    #[test]
    fn a_marker_between_a_verification_and_its_batch_voids_the_verification() {
        let mut producers = Producers::default();
        let token = producers.begin_verification(ProducerId(1), 0);
        producers.record(&marker(1, 0), Some((Marker::Abort, 0)), Offset(0), 0);
        assert_eq!(
            producers.check(&transactional(1, 0, 0, 1), Some(token)),
            Verdict::Refuse(ResponseError::InvalidTxnState)
        );
        assert_eq!(producers.first_unstable(), None);
    }

    #[test]
    fn a_producer_with_an_open_transaction_never_expires() {
        let mut producers = Producers::default();
        producers.record(&transactional(1, 0, 0, 1), None, Offset(0), 1_000);
        assert_eq!(producers.expire(2_000), 0);
        let json = serde_json::to_vec(&producers).unwrap();
        let restored: Producers = serde_json::from_slice(&json).unwrap();
        assert_eq!(restored.first_unstable(), Some(Offset(0)), "the snapshot keeps open transactions");
    }

    /// Snapshots uploaded before offsets and producer ids had types of
    /// their own read the same: the newtypes serialize as the numbers did.
    #[test]
    fn a_snapshot_written_before_the_newtypes_reads_the_same() {
        let json = r#"{"producers":{
            "9":{"epoch":0,"batches":[[0,2,100,102]],"last_append_ms":5,"txn_first":null,"coordinator_epoch":-1},
            "7":{"epoch":0,"batches":[],"last_append_ms":5,"txn_first":10,"coordinator_epoch":-1}},
            "open":{"10":7},
            "aborted":[{"producer_id":1,"first_offset":3,"last_offset":4}]}"#;
        let producers: Producers = serde_json::from_str(json).unwrap();
        let retry = header(9, 0, 0, 3);
        assert_eq!(
            producers.check(&retry, None),
            Verdict::Duplicate { base_offset: Offset(100), last_offset: Offset(102) }
        );
        assert_eq!(producers.first_unstable(), Some(Offset(10)));
        let aborted = AbortedTxn { producer_id: ProducerId(1), first_offset: Offset(3), last_offset: Offset(4) };
        assert_eq!(producers.aborted_between(Offset(0), Offset(5)), [aborted]);
        let again: Producers = serde_json::from_slice(&serde_json::to_vec(&producers).unwrap()).unwrap();
        assert_eq!(again.view(), producers.view(), "and writes it back the same way");
    }

    /// Issue 21: producer snapshots in objects never dropped expired
    /// producers nor aborted transactions older than the log start.
    #[test]
    fn a_pruned_snapshot_keeps_only_live_producers_and_aborts_with_data() {
        let mut producers = Producers::default();
        producers.record(&header(1, 0, 0, 1), None, Offset(0), 1_000);
        producers.record(&header(2, 0, 0, 1), None, Offset(1), 5_000);
        let token = producers.begin_verification(ProducerId(3), 0);
        assert_eq!(producers.check(&transactional(3, 0, 0, 1), Some(token)), Verdict::Append);
        producers.record(&transactional(3, 0, 0, 1), None, Offset(2), 1_000);
        producers.record(&marker(3, 0), Some((Marker::Abort, 0)), Offset(3), 1_000);
        let token = producers.begin_verification(ProducerId(4), 0);
        assert_eq!(producers.check(&transactional(4, 0, 0, 1), Some(token)), Verdict::Append);
        producers.record(&transactional(4, 0, 0, 1), None, Offset(4), 1_000);

        assert_eq!(producers.prune(Offset(4), 2_000), 2, "producers 1 and 3 are idle and not in a transaction");
        let ids: Vec<i64> = producers.view().iter().map(|p| p.producer_id.0).collect();
        assert_eq!(ids, [2, 4], "2 is recent, 4 has a transaction open");
        assert!(producers.aborted_between(Offset(0), Offset(10)).is_empty(), "the abort at 2..3 is below the start");
        let snapshot: Producers = serde_json::from_slice(&serde_json::to_vec(&producers).unwrap()).unwrap();
        assert_eq!(snapshot.view(), producers.view());
    }

    #[test]
    fn a_producer_idle_past_the_expiration_is_forgotten() {
        let mut producers = Producers::default();
        producers.record(&header(1, 0, 0, 1), None, Offset(0), 1_000);
        producers.record(&header(2, 0, 0, 1), None, Offset(1), 5_000);
        assert_eq!(producers.expire(2_000), 1);
        assert_eq!(producers.check(&header(1, 0, 7, 1), None), Verdict::Append, "an unknown producer starts anew");
        assert!(matches!(producers.check(&header(2, 0, 0, 1), None), Verdict::Duplicate { .. }), "2 is remembered");
    }
}

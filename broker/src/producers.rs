//! Idempotent producers: per partition, each producer's epoch and its last
//! five batches, so a retried batch is recognised and a gap refused (as
//! Kafka's `ProducerStateManager`). A producer that wrote nothing for
//! `producer_id_expiration` is forgotten (Kafka's `producer.id.expiration.ms`).

use std::collections::{HashMap, VecDeque};

use kafka_protocol::error::ResponseError;

use crate::batch::{wrapping_add_sequence, BatchHeader};

/// Batches remembered per producer: clients have at most five in flight.
const WINDOW: usize = 5;

/// What to do with a produced batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Append it.
    Append,
    /// It was appended before at this base offset: answer with that offset
    /// once it is durable, append nothing.
    Duplicate { base_offset: i64, last_offset: i64 },
    /// Refuse it with this error.
    Refuse(ResponseError),
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Producer {
    epoch: i16,
    /// (first sequence, last sequence, base offset, last offset), oldest first.
    batches: VecDeque<(i32, i32, i64, i64)>,
    /// When the leader appended its last batch (ms since the epoch); a
    /// snapshot from before this field counts from when it is loaded.
    #[serde(default = "now_ms")]
    last_append_ms: i64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The producer state of one partition.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Producers {
    producers: HashMap<i64, Producer>,
}

impl Producers {
    /// Decides what to do with a batch, without changing anything.
    pub fn check(&self, batch: &BatchHeader) -> Verdict {
        if !batch.is_idempotent() {
            return Verdict::Append;
        }
        let Some(producer) = self.producers.get(&batch.producer_id) else {
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

    /// Records a batch appended at `base_offset` at `now_ms`.
    pub fn record(&mut self, batch: &BatchHeader, base_offset: i64, now_ms: i64) {
        if !batch.is_idempotent() {
            return;
        }
        let producer = self.producers.entry(batch.producer_id).or_insert_with(|| Producer {
            epoch: batch.producer_epoch,
            batches: VecDeque::new(),
            last_append_ms: now_ms,
        });
        producer.last_append_ms = now_ms;
        if batch.producer_epoch != producer.epoch {
            producer.epoch = batch.producer_epoch;
            producer.batches.clear();
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
        self.producers.retain(|_, producer| producer.last_append_ms > horizon_ms);
        before - self.producers.len()
    }
}

/// Every so often (a quarter of the expiration, at most 10 minutes as
/// Kafka's check interval), forgets the idle producers of every partition
/// this broker leads.
pub async fn expire_idle(broker: std::sync::Arc<crate::broker::Broker>, cancel: tokio_util::sync::CancellationToken) {
    let expiration = broker.config.producer_id_expiration;
    let interval = (expiration / 4).clamp(std::time::Duration::from_millis(100), std::time::Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let horizon = now_ms() - expiration.as_millis() as i64;
        let mut leadership = broker.leadership();
        let expired: usize = leadership.partitions.values_mut().map(|state| state.producers.expire(horizon)).sum();
        drop(leadership);
        if expired > 0 {
            broker.metrics.producers_expired.inc_by(expired as u64);
            tracing::debug!(expired, "forgot idle producers");
        }
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
            producer_id,
            producer_epoch: epoch,
            base_sequence,
            record_count: count,
        }
    }

    #[test]
    fn in_order_batches_append_retries_are_duplicates_and_gaps_are_refused() {
        let mut producers = Producers::default();
        let first = header(9, 0, 0, 3);
        assert_eq!(producers.check(&first), Verdict::Append);
        producers.record(&first, 100, 0);
        assert_eq!(producers.check(&first), Verdict::Duplicate { base_offset: 100, last_offset: 102 });
        let next = header(9, 0, 3, 2);
        assert_eq!(producers.check(&next), Verdict::Append);
        producers.record(&next, 103, 0);
        assert_eq!(
            producers.check(&header(9, 0, 6, 1)),
            Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber),
            "sequence 5 is missing"
        );
        assert_eq!(producers.check(&header(9, 0, 5, 1)), Verdict::Append);
    }

    #[test]
    fn epochs_fence_old_producers_and_a_new_epoch_starts_at_zero() {
        let mut producers = Producers::default();
        producers.record(&header(9, 3, 0, 1), 0, 0);
        assert_eq!(producers.check(&header(9, 2, 1, 1)), Verdict::Refuse(ResponseError::InvalidProducerEpoch));
        assert_eq!(producers.check(&header(9, 4, 7, 1)), Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber));
        assert_eq!(producers.check(&header(9, 4, 0, 1)), Verdict::Append);
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut producers = Producers::default();
        for seq in 0..6 {
            producers.record(&header(1, 0, seq, 1), i64::from(seq), 0);
        }
        assert_eq!(producers.check(&header(1, 0, 0, 1)), Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber));
        assert!(matches!(producers.check(&header(1, 0, 1, 1)), Verdict::Duplicate { .. }));
    }

    #[test]
    fn sequences_continue_across_the_wrap() {
        let mut producers = Producers::default();
        producers.record(&header(1, 0, i32::MAX - 1, 2), 0, 0);
        assert_eq!(producers.check(&header(1, 0, 0, 1)), Verdict::Append);
    }

    #[test]
    fn a_producer_idle_past_the_expiration_is_forgotten() {
        let mut producers = Producers::default();
        producers.record(&header(1, 0, 0, 1), 0, 1_000);
        producers.record(&header(2, 0, 0, 1), 1, 5_000);
        assert_eq!(producers.expire(2_000), 1);
        assert_eq!(producers.check(&header(1, 0, 7, 1)), Verdict::Append, "an unknown producer starts anew");
        assert!(matches!(producers.check(&header(2, 0, 0, 1)), Verdict::Duplicate { .. }), "2 is remembered");
    }
}

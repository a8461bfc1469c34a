//! One partition as its leader keeps it, and the rule that admits produced
//! batches to it (DESIGN §3, invariant 2).
//!
//! The leader keeps, per partition: the next offset to assign, the high
//! watermark (every offset below it is acknowledged by the WAL quorum), the
//! log start, the producers' idempotence and transaction state, and where
//! its offsets lie in the WAL. `admit` decides what becomes of one produced
//! batch: appended at the next offsets, answered as a duplicate with the
//! offsets its original got, or refused with Kafka's error. It changes the
//! partition's state and nothing else; the caller holds the lock, appends the
//! admitted batch to the WAL entry, caches and counts it.
//!
//! A batch is checked (`check`) before the lock is taken: its CRC, sizes,
//! sequence fields and the topic's limits depend on nothing the lock guards.

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use keel_controller_client::{LeaderEpoch, LogId, Offset, Seq, Topic};

use crate::batch::{self, BatchHeader, Marker};
use crate::producers::{Producers, Verdict};

/// Where a stretch of a partition's offsets lives in the WAL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogRange {
    pub log: LogId,
    /// The log's sealed seq, or 0 while this broker still writes it.
    pub sealed_seq: Seq,
    /// The first offset of the partition in this log.
    pub from: Offset,
}

/// The range of `ranges` (oldest first) holding `offset`.
pub fn range_of(ranges: &[LogRange], offset: Offset) -> Option<LogRange> {
    ranges.iter().rev().find(|range| range.from <= offset).copied()
}

#[derive(Debug)]
pub struct PartitionState {
    pub leader_epoch: LeaderEpoch,
    /// The offset the next appended record gets.
    pub next_offset: Offset,
    /// Every offset below it is durable in the WAL quorum; fetches stop here.
    pub high_watermark: Offset,
    pub log_start: Offset,
    pub producers: Producers,
    /// Where the partition's offsets lie in the WAL, oldest first; the last
    /// range is the log this broker writes now.
    pub ranges: Vec<LogRange>,
    /// Being handed to another broker (`drain`): no more writes.
    pub closing: bool,
    /// When this broker started leading it (ms since the epoch).
    pub led_since_ms: i64,
}

/// How long after a takeover a sequence gap is answered as a retriable
/// NOT_LEADER_OR_FOLLOWER instead of OUT_OF_ORDER_SEQUENCE_NUMBER. A client
/// whose first batch was refused while the partition was taken over (a
/// takeover over `produce`'s hold) sends the next one pipelined behind it;
/// told it is out of sequence, librdkafka bumps its epoch and numbers anew
/// every batch it has no answer for, also batches other partitions may
/// have stored already (a timed-out request), which are then stored twice.
/// Retried instead, the refused batch comes first and the sequence holds.
pub const GAP_GRACE_MS: i64 = 10_000;

/// Who wrote a batch: a client, or the broker itself (the coordinators'
/// records and transaction markers, which clients may not write).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writer {
    Client,
    Broker,
}

/// A refused batch: Kafka's error, and a message for clients that read one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub error: ResponseError,
    pub message: Option<String>,
    /// The records at fault, by index in the batch, with why (KIP-467).
    pub record_errors: Vec<(i32, String)>,
}

impl Refusal {
    pub fn new(error: ResponseError) -> Refusal {
        Refusal { error, message: None, record_errors: Vec::new() }
    }

    pub fn with_message(error: ResponseError, message: impl Into<String>) -> Refusal {
        Refusal { error, message: Some(message.into()), record_errors: Vec::new() }
    }
}

/// The settings of a topic that decide whether a batch may be appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicRules {
    /// `max.message.bytes`: the largest batch.
    pub message_bytes_max: usize,
    /// The largest batch the cluster can store at all (what one WAL entry
    /// carries), whatever the topic allows.
    pub stored_bytes_max: usize,
    /// `message.timestamp.type=LogAppendTime`: the broker stamps batches.
    pub log_append_time: bool,
    /// `message.timestamp.before.max.ms` and `after.max.ms` (CreateTime only).
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
    /// `cleanup.policy` includes `compact`: every record needs a key.
    pub compacted: bool,
}

impl TopicRules {
    /// Kafka's default `max.message.bytes`.
    pub const MESSAGE_BYTES_MAX_DEFAULT: usize = 1_048_588;

    /// The rules of `topic`, on a cluster that stores batches of at most
    /// `stored_bytes_max` bytes.
    pub fn of(topic: &Topic, stored_bytes_max: usize) -> TopicRules {
        let bound = |key: &str| topic.config(key).and_then(|v| v.parse::<i64>().ok()).unwrap_or(i64::MAX);
        TopicRules {
            message_bytes_max: topic
                .config("max.message.bytes")
                .and_then(|v| v.parse().ok())
                .unwrap_or(Self::MESSAGE_BYTES_MAX_DEFAULT),
            stored_bytes_max,
            log_append_time: topic.config("message.timestamp.type") == Some("LogAppendTime"),
            timestamp_before_max_ms: bound("message.timestamp.before.max.ms"),
            timestamp_after_max_ms: bound("message.timestamp.after.max.ms"),
            compacted: topic
                .config("cleanup.policy")
                .is_some_and(|policy| keel_controller_client::topic_configs::list_items(policy).contains(&"compact")),
        }
    }
}

/// A produced batch that passed `check`: its header, the transaction
/// marker it carries (the broker's own control batches), and a copy of its
/// bytes for the header fields the leader rewrites.
#[derive(Debug)]
pub struct Checked {
    pub header: BatchHeader,
    pub marker: Option<(Marker, i32)>,
    bytes: BytesMut,
}

/// Checks one produced batch against what any partition of `rules`' topic
/// accepts, at wall-clock time `now_ms`: one intact magic-2 batch (for a
/// client, with consistent counts and no control flag), an idempotent
/// client's base sequence, the topic's `max.message.bytes`, and for
/// CreateTime topics its timestamp window. Reads the header only, but for a
/// compacted topic, whose records must all have keys (Kafka refuses the
/// batch with INVALID_RECORD naming each keyless record, KIP-467): its
/// records are read from a decompressed copy (`records::decode`, bounded).
pub fn check(bytes: &Bytes, writer: Writer, rules: &TopicRules, now_ms: i64) -> Result<Checked, Refusal> {
    let checked = match writer {
        Writer::Broker => batch::stored_header(bytes),
        Writer::Client => batch::check(bytes),
    };
    let header = checked.map_err(|error| Refusal::with_message(error.kafka_error(), error.to_string()))?;
    if writer == Writer::Client && header.is_idempotent() && header.base_sequence < 0 {
        return Err(Refusal::with_message(
            ResponseError::InvalidRecord,
            "a batch with a producer id needs a base sequence",
        ));
    }
    if bytes.len() > rules.message_bytes_max {
        return Err(Refusal::with_message(
            ResponseError::MessageTooLarge,
            format!("batch of {} bytes exceeds max.message.bytes {}", bytes.len(), rules.message_bytes_max),
        ));
    }
    if bytes.len() > rules.stored_bytes_max {
        return Err(Refusal::with_message(
            ResponseError::MessageTooLarge,
            format!(
                "batch of {} bytes exceeds {} bytes, the largest batch this cluster stores (whatever max.message.bytes says)",
                bytes.len(),
                rules.stored_bytes_max
            ),
        ));
    }
    if !rules.log_append_time {
        if let Some(reason) = timestamp_out_of_bounds(rules, &header, now_ms) {
            return Err(Refusal::with_message(ResponseError::InvalidTimestamp, reason));
        }
    }
    if rules.compacted && writer == Writer::Client {
        keyed(bytes)?;
    }
    Ok(Checked { header, marker: batch::marker(bytes), bytes: BytesMut::from(&bytes[..]) })
}

/// What Kafka says of a keyless record in a compacted topic.
const KEYLESS: &str = "Compacted topic cannot accept message without key.";

/// Refuses a batch with a record that has no key, naming every such record.
fn keyed(bytes: &Bytes) -> Result<(), Refusal> {
    let set = crate::records::decode(bytes)
        .map_err(|error| Refusal::with_message(ResponseError::CorruptMessage, error.to_string()))?;
    let keyless: Vec<(i32, String)> = set
        .records
        .iter()
        .enumerate()
        .filter(|(_, record)| record.key.is_none())
        .map(|(index, _)| (index as i32, KEYLESS.to_string()))
        .collect();
    if keyless.is_empty() {
        return Ok(());
    }
    let message =
        format!("One or more records have been rejected due to {} record errors in total: {KEYLESS}", keyless.len());
    Err(Refusal { error: ResponseError::InvalidRecord, message: Some(message), record_errors: keyless })
}

/// Why a CreateTime batch's timestamps are outside the topic's window, if
/// they are. Read from the batch header (first and max timestamp).
fn timestamp_out_of_bounds(rules: &TopicRules, header: &BatchHeader, now_ms: i64) -> Option<String> {
    let (before, after) = (rules.timestamp_before_max_ms, rules.timestamp_after_max_ms);
    let earliest = header.base_timestamp.min(header.max_timestamp);
    if now_ms.saturating_sub(earliest) > before {
        return Some(format!("timestamp {earliest} is more than message.timestamp.before.max.ms={before} before now"));
    }
    if header.max_timestamp.saturating_sub(now_ms) > after {
        return Some(format!(
            "timestamp {} is more than message.timestamp.after.max.ms={after} after now",
            header.max_timestamp
        ));
    }
    None
}

/// What the transaction's coordinator said of a transactional batch's
/// partition (KIP-890), when the partition leader had to ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verification {
    /// Nothing was asked: not a transaction's first batch here.
    NotAsked,
    /// Confirmed: the token of the verification begun at the partition.
    Confirmed(u64),
    /// The coordinator could not be asked (moving, loading, unreachable).
    Unreachable,
}

/// What became of a produced batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Appended at `base..=last`: `batch` is what goes to the WAL (its
    /// offsets and leader epoch set, stamped when `append_time` is set).
    Appended {
        base: Offset,
        last: Offset,
        batch: Bytes,
        append_time: Option<i64>,
    },
    /// A retry of a batch appended before at `base..=last`: answered with
    /// those offsets once they are durable; nothing is appended.
    Duplicate {
        base: Offset,
        last: Offset,
    },
    Refused(Refusal),
}

impl PartitionState {
    /// A partition led from `end`, its uploaded end: everything before is in
    /// objects (DESIGN §5), everything after goes to `log`, the log this
    /// broker writes, with the producers' state as of `end`.
    pub fn new(
        leader_epoch: LeaderEpoch,
        end: Offset,
        producers: Producers,
        log: LogId,
        now_ms: i64,
    ) -> PartitionState {
        PartitionState {
            leader_epoch,
            next_offset: end,
            high_watermark: end,
            log_start: Offset(0),
            producers,
            ranges: vec![LogRange { log, sealed_seq: Seq(0), from: end }],
            closing: false,
            led_since_ms: now_ms,
        }
    }

    /// Decides what becomes of a checked batch and, if it is appended,
    /// assigns its offsets, records its producer and rewrites its header.
    /// A refused batch or a duplicate changes nothing.
    pub fn admit(&mut self, batch: Checked, verification: Verification, rules: &TopicRules, now_ms: i64) -> Admission {
        if self.closing {
            return Admission::Refused(Refusal::with_message(
                ResponseError::NotLeaderOrFollower,
                "the partition is moving to another broker; retry",
            ));
        }
        if verification == Verification::Unreachable {
            // As Kafka: a producing client does not know coordinator errors.
            return Admission::Refused(Refusal::with_message(
                ResponseError::NotEnoughReplicas,
                "the transaction's coordinator could not confirm the partition yet; retry",
            ));
        }
        let header = batch.header;
        let verdict = match batch.marker {
            Some((_, coordinator_epoch)) if header.is_control() => {
                self.producers.check_marker(&header, coordinator_epoch)
            }
            _ => {
                let token = match verification {
                    Verification::Confirmed(token) => Some(token),
                    Verification::NotAsked | Verification::Unreachable => None,
                };
                self.producers.check(&header, token)
            }
        };
        match verdict {
            Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber) if now_ms - self.led_since_ms < GAP_GRACE_MS => {
                Admission::Refused(Refusal::with_message(
                    ResponseError::NotLeaderOrFollower,
                    "this broker has just taken the partition over and a batch before this one is missing; retry",
                ))
            }
            Verdict::Refuse(error) => Admission::Refused(Refusal::new(error)),
            Verdict::Duplicate { base_offset, last_offset } => {
                Admission::Duplicate { base: base_offset, last: last_offset }
            }
            Verdict::Append => {
                let base = self.next_offset;
                self.next_offset = base + i64::from(header.record_count);
                self.producers.record(&header, batch.marker, base, now_ms);
                let mut bytes = batch.bytes;
                batch::assign(&mut bytes, base, self.leader_epoch.0);
                let append_time = rules.log_append_time.then_some(now_ms);
                if let Some(now_ms) = append_time {
                    batch::set_log_append_time(&mut bytes, now_ms);
                }
                let last = base + (i64::from(header.record_count) - 1);
                Admission::Appended { base, last, batch: bytes.freeze(), append_time }
            }
        }
    }

    /// The WAL acknowledged everything up to `last` of this leader epoch:
    /// the high watermark moves past it. Returns whether it moved.
    pub fn acknowledge(&mut self, leader_epoch: LeaderEpoch, last: Offset) -> bool {
        if leader_epoch != self.leader_epoch || self.high_watermark > last {
            return false;
        }
        self.high_watermark = last + 1;
        true
    }

    /// Follows the metadata's start offset (DeleteRecords, retention) up,
    /// never past the high watermark.
    pub fn follow_start(&mut self, start_offset: Offset) {
        let log_start = self.log_start.max(start_offset).min(self.high_watermark);
        if log_start > self.log_start {
            // Aborted transactions wholly below the start have no data left.
            self.producers.forget_aborted_before(log_start);
            self.log_start = log_start;
        }
    }

    /// Below the first offset of any open transaction, at most the high
    /// watermark: what `read_committed` consumers may read.
    pub fn last_stable(&self) -> Offset {
        self.producers.first_unstable().map_or(self.high_watermark, |first| first.min(self.high_watermark))
    }

    /// Nothing appended is waiting for the WAL.
    pub fn is_settled(&self) -> bool {
        self.high_watermark == self.next_offset
    }
}

#[cfg(test)]
mod tests;

//! The write path (DESIGN §3): batches to partitions this broker leads,
//! admitted by the core's rule (`keel_broker_core::partition`), put in WAL
//! entries (one, unless they are too large together), and answered once
//! the WAL quorum acknowledged them. A batch larger than one entry holds is
//! refused with MESSAGE_TOO_LARGE before it is admitted.
//!
//! PERFORMANCE-CRITICAL PATH: every produce passes here. No INFO logs, no
//! blocking calls; the leadership lock is held only to check leadership,
//! admit and enqueue the entry. Batches are checked (CRC, sizes) and copied
//! before the lock is taken.
//!
//! `append` runs in the connection's request order, so pipelined produces
//! of one connection get offsets in the order they were sent, as in Kafka;
//! `settle` then waits for the entry. The coordinators' own records and the
//! transaction markers go the same way (`append_internal`), as the broker's
//! writes: they take their place in the log when called, so writes made in
//! some order (under a coordinator's lock) are in the log in that order.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use keel_broker_core::partition::{self, Admission, Refusal, TopicRules, Verification, Writer};
use keel_controller_client::{LeaderEpoch, Offset, Seq, StreamId};
use keel_wal_client::entry::{Record, BATCH_BYTES_MAX};
use keel_wal_client::quorum::WriterError;
use keel_wal_client::writer::WriteError;

use super::Partitions;
use crate::error::BrokerError;

/// How long the broker's own appends wait for the WAL quorum.
const INTERNAL_TIMEOUT: Duration = Duration::from_secs(10);

/// One partition's batch of a write, as the log takes it.
#[derive(Debug)]
pub struct PartitionBatch<'a> {
    pub topic: &'a str,
    pub partition: i32,
    /// `None`: the request carried no records for the partition.
    pub records: Option<&'a Bytes>,
    /// What the transaction's coordinator said (KIP-890), if it was asked.
    pub verification: Verification,
}

/// What became of one partition's batch.
#[derive(Clone, Debug)]
pub enum Fate {
    Refused(Refusal),
    /// Appended at `base..=last`; answered once the WAL entry is acknowledged.
    Appended {
        stream: StreamId,
        leader_epoch: LeaderEpoch,
        base: Offset,
        last: Offset,
        append_time: Option<i64>,
    },
    /// A retry of a batch appended before; answered once that one is durable.
    Duplicate {
        stream: StreamId,
        base: Offset,
        last: Offset,
    },
}

/// The answer for one partition's batch: its base offset and append time,
/// or why it was refused.
pub type Answer = Result<(Offset, Option<i64>), Refusal>;

/// The WAL's answer to the entries holding a write's batches: the last
/// one's seq once every one is durable.
type WalAck = Pin<Box<dyn Future<Output = Result<Seq, WriteError>> + Send>>;

/// Batches appended (offsets assigned, the WAL entry queued), waiting for
/// the WAL quorum.
pub struct Appended {
    /// One per batch, in the order they were given.
    fates: Vec<Fate>,
    ack: Option<WalAck>,
}

impl std::fmt::Debug for Appended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appended").field("fates", &self.fates).field("waits_for_wal", &self.ack.is_some()).finish()
    }
}

/// An append by the broker itself, on its way to being durable.
#[derive(Debug)]
pub struct AppendTicket {
    partitions: Arc<Partitions>,
    appended: Appended,
}

impl AppendTicket {
    /// Waits until the batch is durable; Kafka's error if it was refused or
    /// its fate is unknown.
    pub async fn durable(self) -> Result<(), ResponseError> {
        let mut answers = self.partitions.settle(self.appended, INTERNAL_TIMEOUT).await;
        match answers.pop() {
            Some(Ok(_)) => Ok(()),
            Some(Err(refusal)) => Err(refusal.error),
            None => Err(ResponseError::UnknownServerError),
        }
    }
}

impl Partitions {
    /// Checks and appends every batch, in as few WAL entries as hold them,
    /// without waiting for them. Called in a connection's request order.
    pub fn append(&self, batches: &[PartitionBatch<'_>], writer: Writer) -> Appended {
        let now = keel_broker_core::clock::now_ms();
        let cluster = &self.cluster;
        // Checked and copied before the lock: they depend on nothing it guards.
        let image = cluster.image();
        let checked: Vec<Option<Result<partition::Checked, Refusal>>> = batches
            .iter()
            .map(|batch| {
                let topic = image.topics.get(batch.topic)?;
                let bytes = batch.records?;
                Some(partition::check(bytes, writer, &rules(topic), now))
            })
            .collect();
        let mut fates = Vec::with_capacity(batches.len());
        let mut records = Vec::new();
        let mut leadership = self.leadership();
        // Read under the lock: `leaders` changes partition states only under it,
        // from an image at least this new, so a partition is appended to only
        // while the newest image names this broker its leader at that epoch.
        let image = cluster.image();
        let writable = self.writable(&leadership);
        let backlog = self.storage.backlog.bytes();
        let backlog_max = cluster.config.wal_backlog_bytes_max;
        for (batch, checked) in batches.iter().zip(checked) {
            let fate = (|| {
                let refused = |error| Fate::Refused(Refusal::new(error));
                let Some(topic) = image.topics.get(batch.topic) else {
                    return refused(ResponseError::UnknownTopicOrPartition);
                };
                if batch.partition < 0 || batch.partition as usize >= topic.partitions.len() {
                    return refused(ResponseError::UnknownTopicOrPartition);
                }
                if writer == Writer::Client && keel_broker_core::groups::is_internal(&topic.name) {
                    return Fate::Refused(Refusal::with_message(
                        ResponseError::InvalidTopicException,
                        format!("{} is written by the brokers only", topic.name),
                    ));
                }
                let Some((stream, leader_epoch)) = cluster.led(topic, batch.partition) else {
                    return refused(ResponseError::NotLeaderOrFollower);
                };
                if !writable {
                    return refused(ResponseError::NotLeaderOrFollower);
                }
                if backlog >= backlog_max {
                    // DESIGN §3.4: un-uploaded bytes are capped per log, and
                    // only that log's writer is pushed back. Retriable.
                    let error = crate::error::BrokerError::BacklogFull { backlog, cap: backlog_max };
                    let mut refusal = Refusal::new(error.kafka_error());
                    refusal.message = error.client_message();
                    return Fate::Refused(refusal);
                }
                let Some(bytes) = batch.records else {
                    return Fate::Refused(Refusal::with_message(ResponseError::CorruptMessage, "no records"));
                };
                // Not checked before the lock if the topic was created just now.
                let checked = match checked.unwrap_or_else(|| partition::check(bytes, writer, &rules(topic), now)) {
                    Err(refusal) => return Fate::Refused(refusal),
                    Ok(checked) => checked,
                };
                let record = &topic.partitions[batch.partition as usize];
                let Some(state) = leadership.partition(stream, leader_epoch, record) else {
                    return Fate::Refused(Refusal::with_message(
                        ResponseError::NotLeaderOrFollower,
                        "this broker is taking the partition over; retry",
                    ));
                };
                match state.admit(checked, batch.verification, &rules(topic), now) {
                    Admission::Refused(refusal) => Fate::Refused(refusal),
                    Admission::Duplicate { base, last } => {
                        cluster.metrics.produce_duplicates.inc();
                        Fate::Duplicate { stream, base, last }
                    }
                    Admission::Appended { base, last, batch, append_time } => {
                        cluster.metrics.bytes_in.with_label_values(&[&topic.name]).inc_by(batch.len() as u64);
                        self.traffic.count(stream, batch.len() as u64, 0);
                        self.cache.insert(stream, base, last + 1, batch.clone());
                        let record_count = ((last + 1) - base) as u32;
                        records.push(Record { stream, base_offset: base, record_count, batch });
                        Fate::Appended { stream, leader_epoch, base, last, append_time }
                    }
                }
            })();
            fates.push(fate);
        }
        let appended: u64 = records.iter().map(|record| record.batch.len() as u64).sum();
        self.storage.backlog.add(appended);
        let ack = (!records.is_empty()).then(|| {
            let owned = leadership.owned.as_ref().expect("records are only built while a log is owned");
            // Queued now, under the lock, so the entries take their seqs in order.
            let entries: Vec<_> =
                keel_wal_client::entry::pack(records).into_iter().map(|records| owned.writer.append(records)).collect();
            Box::pin(async move {
                let seqs = futures::future::try_join_all(entries).await?;
                Ok(*seqs.last().expect("records make at least one entry"))
            }) as WalAck
        });
        Appended { fates, ack }
    }

    /// Appends one batch as the broker itself (a coordinator's records, a
    /// transaction marker), through the same checks as a client's batch with
    /// acks=all. It takes its place in the log now; the ticket says when it
    /// is durable.
    pub fn append_internal(
        self: &Arc<Self>,
        topic: &str,
        partition: i32,
        batch: Bytes,
        verification: Verification,
    ) -> AppendTicket {
        let request = [PartitionBatch { topic, partition, records: Some(&batch), verification }];
        AppendTicket { partitions: self.clone(), appended: self.append(&request, Writer::Broker) }
    }

    /// Waits for the WAL quorum (and for the originals of duplicates), at
    /// most `timeout`, then answers each batch. A write whose fate is unknown
    /// is answered REQUEST_TIMED_OUT, never a definite error; a fenced log is
    /// given up (NOT_LEADER_OR_FOLLOWER), and this broker takes over again.
    pub async fn settle(self: &Arc<Self>, appended: Appended, timeout: Duration) -> Vec<Answer> {
        let Appended { fates, ack } = appended;
        let started = Instant::now();
        let outcome = match ack {
            None => None,
            Some(mut ack) => {
                let waited = tokio::time::timeout(timeout.max(Duration::from_millis(1)), &mut ack).await;
                if waited.is_err() {
                    // The entry may still become durable: its offsets must then
                    // become readable (and a close of the partition must see them
                    // acknowledged) even though this write was answered.
                    let appended: Vec<Fate> =
                        fates.iter().filter(|fate| matches!(fate, Fate::Appended { .. })).cloned().collect();
                    let partitions = self.clone();
                    self.tasks.spawn(async move {
                        if ack.await.is_ok() {
                            partitions.acknowledge(&appended);
                        }
                    });
                }
                Some(waited)
            }
        };
        let wal_answered = outcome.is_some();
        let failure = match outcome {
            None | Some(Ok(Ok(_))) => None,
            Some(Ok(Err(WriteError::Writer(WriterError::Fenced { log })))) => {
                self.on_log_fenced();
                Some(BrokerError::Fenced { log })
            }
            // Batch sizes are checked before admission, so this is a defect:
            // offsets were assigned that no entry holds. The registration is
            // given up, so the log is recovered and the partitions move on
            // from what it really holds.
            Some(Ok(Err(WriteError::Writer(WriterError::TooLarge(error))))) => {
                tracing::error!(%error, "admitted batches did not fit in WAL entries; giving up the registration");
                self.stop_leading();
                self.cluster.renewal.register_again();
                Some(BrokerError::EntryTooLarge(error))
            }
            // The entry's fate is unknown: it may still become durable.
            Some(Ok(Err(WriteError::Writer(WriterError::Sealed { .. }) | WriteError::Stopped))) | Some(Err(_)) => {
                Some(BrokerError::WalTimeout)
            }
        };
        if wal_answered {
            self.cluster.metrics.wal_ack_seconds.observe(started.elapsed().as_secs_f64());
        }
        if failure.is_none() {
            self.acknowledge(&fates);
        }
        let mut answers = Vec::with_capacity(fates.len());
        for fate in fates {
            answers.push(match fate {
                Fate::Refused(refusal) => Err(refusal),
                Fate::Appended { base, append_time, .. } => match &failure {
                    Some(error) => Err(Refusal::new(error.kafka_error())),
                    None => Ok((base, append_time)),
                },
                Fate::Duplicate { stream, base, last } => match self.durable(stream, last, timeout).await {
                    true => Ok((base, None)),
                    false => Err(Refusal::new(ResponseError::RequestTimedOut)),
                },
            });
        }
        answers
    }

    /// Moves the high watermark of every partition appended in an acknowledged entry.
    fn acknowledge(&self, fates: &[Fate]) {
        let mut leadership = self.leadership();
        let mut moved = false;
        for fate in fates {
            if let Fate::Appended { stream, leader_epoch, last, .. } = fate {
                if let Some(state) = leadership.partitions.get_mut(stream) {
                    moved |= state.acknowledge(*leader_epoch, *last);
                }
            }
        }
        drop(leadership);
        if moved {
            self.watermarks_moved();
        }
    }

    /// Waits until offset `last` of `stream` is durable, at most `timeout`.
    async fn durable(&self, stream: StreamId, last: Offset, timeout: Duration) -> bool {
        let mut watermarks = self.watermarks.subscribe();
        let reached = || self.leadership().partitions.get(&stream).is_some_and(|state| state.high_watermark > last);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if reached() {
                return true;
            }
            if tokio::time::timeout_at(deadline, watermarks.changed()).await.is_err() {
                return reached();
            }
        }
    }
}

/// The rules a batch for `topic` is checked against: the topic's own, and
/// no batch larger than one WAL entry carries.
fn rules(topic: &keel_controller_client::Topic) -> TopicRules {
    TopicRules::of(topic, BATCH_BYTES_MAX)
}

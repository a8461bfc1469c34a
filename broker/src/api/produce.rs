//! `Produce`: validate each partition's batch, assign offsets in order, put
//! the batches of every partition of the request into one WAL entry, and
//! answer once the WAL quorum acknowledged it (DESIGN §3). `acks=0` gets no
//! answer; `acks=1` waits for the same quorum as `acks=all`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{LeaderIdAndEpoch, PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use keel_controller_client::{Offset, Seq, StreamId};
use keel_wal_client::entry::Record;
use keel_wal_client::quorum::WriterError;
use keel_wal_client::writer::WriteError;

use crate::batch;
use crate::broker::Broker;
use crate::producers::Verdict;

/// What became of one partition's batch.
#[derive(Clone, Debug)]
enum Fate {
    Refused(ResponseError, Option<String>),
    /// Appended at `base..=last`; answered once the WAL entry is acknowledged.
    Appended {
        stream: StreamId,
        leader_epoch: keel_controller_client::LeaderEpoch,
        base: i64,
        last: i64,
        append_time: i64,
    },
    /// A retry of a batch appended before; answered once that one is durable.
    Duplicate {
        stream: StreamId,
        base: i64,
        last: i64,
    },
}

/// The WAL's answer to the entry holding a produce's batches.
type WalAck = Pin<Box<dyn Future<Output = Result<Seq, WriteError>> + Send>>;

/// A produce whose batches are appended (offsets assigned, the WAL entry
/// queued), waiting for its answer.
pub struct Admitted {
    request: ProduceRequest,
    version: i16,
    image: Arc<keel_controller_client::Image>,
    fates: Vec<(usize, i32, Fate)>,
    ack: Option<WalAck>,
}

impl std::fmt::Debug for Admitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admitted").field("fates", &self.fates).field("waits_for_wal", &self.ack.is_some()).finish()
    }
}

/// Checks and appends every partition's batch, without waiting: called in
/// the connection's request order, so pipelined produces of one connection
/// get their offsets in the order they were sent, as in Kafka.
///
/// `internal`: the broker's own write (group and transaction coordinators,
/// markers); `verified`: the partitions whose transaction the coordinator
/// confirmed for this producer (KIP-890, `txn::verify_produce`).
pub(super) fn admit(
    broker: &Arc<Broker>,
    request: ProduceRequest,
    version: i16,
    internal: bool,
    verified: &crate::txn::Verified,
) -> Admitted {
    let acks = request.acks;
    let now = now_ms();
    let mut fates: Vec<(usize, i32, Fate)> = Vec::new();
    let mut records = Vec::new();
    let mut leadership = broker.leadership();
    // Read under the lock: `leaders` changes partition states only under it,
    // from an image at least this new, so a partition is appended to only
    // while the newest image names this broker its leader at that epoch.
    let image = broker.image();
    let topics: Vec<_> = request.topic_data.iter().map(|t| super::find_topic(&image, &t.name.0, t.topic_id)).collect();
    let ack = {
        let writable = broker.writable(&leadership);
        let backlog = broker.wal_backlog.load(std::sync::atomic::Ordering::Relaxed);
        let backlog_full = backlog >= broker.config.wal_backlog_bytes_max;
        for (topic_index, topic_data) in request.topic_data.iter().enumerate() {
            let topic = topics[topic_index];
            for partition in &topic_data.partition_data {
                let fate = (|| {
                    let Some(topic) = topic else {
                        return Fate::Refused(ResponseError::UnknownTopicOrPartition, None);
                    };
                    if partition.index < 0 || partition.index as usize >= topic.partitions.len() {
                        return Fate::Refused(ResponseError::UnknownTopicOrPartition, None);
                    }
                    if crate::groups::is_internal(&topic.name) && !internal {
                        return Fate::Refused(
                            ResponseError::InvalidTopicException,
                            Some(format!("{} is written by the brokers only", topic.name)),
                        );
                    }
                    if !(acks == -1 || acks == 0 || acks == 1) {
                        return Fate::Refused(ResponseError::InvalidRequiredAcks, None);
                    }
                    let Some((stream, leader_epoch)) = broker.led(topic, partition.index) else {
                        return Fate::Refused(ResponseError::NotLeaderOrFollower, None);
                    };
                    if !writable {
                        return Fate::Refused(ResponseError::NotLeaderOrFollower, None);
                    }
                    if backlog_full {
                        // DESIGN §3.4: un-uploaded bytes are capped per log, and
                        // only that log's writer is pushed back. Retriable.
                        let max = broker.config.wal_backlog_bytes_max;
                        return Fate::Refused(
                            ResponseError::KafkaStorageError,
                            Some(format!("{backlog} bytes in the WAL are not uploaded yet (cap {max}): the object store is down or slow; retry")),
                        );
                    }
                    let Some(bytes) = &partition.records else {
                        return Fate::Refused(ResponseError::CorruptMessage, Some("no records".into()));
                    };
                    // Markers are written by the broker only.
                    let header = match if internal { batch::stored_header(bytes) } else { batch::check(bytes) } {
                        Ok(header) => header,
                        Err(error) => return Fate::Refused(error.kafka_error(), Some(error.to_string())),
                    };
                    if !internal && header.is_idempotent() && header.base_sequence < 0 {
                        return Fate::Refused(
                            ResponseError::InvalidRecord,
                            Some("a batch with a producer id needs a base sequence".into()),
                        );
                    }
                    let max_bytes: usize =
                        topic.config("max.message.bytes").and_then(|v| v.parse().ok()).unwrap_or(1_048_588);
                    if bytes.len() > max_bytes {
                        return Fate::Refused(
                            ResponseError::MessageTooLarge,
                            Some(format!("batch of {} bytes exceeds max.message.bytes {max_bytes}", bytes.len())),
                        );
                    }
                    let log_append_time = topic.config("message.timestamp.type") == Some("LogAppendTime");
                    if !log_append_time {
                        if let Some(reason) = timestamp_out_of_bounds(topic, &header, now) {
                            return Fate::Refused(ResponseError::InvalidTimestamp, Some(reason));
                        }
                    }
                    let record = &topic.partitions[partition.index as usize];
                    let Some(state) = leadership.partition(stream, leader_epoch, record) else {
                        return Fate::Refused(
                            ResponseError::NotLeaderOrFollower,
                            Some("this broker is taking the partition over; retry".into()),
                        );
                    };
                    if state.closing {
                        return Fate::Refused(
                            ResponseError::NotLeaderOrFollower,
                            Some("the partition is moving to another broker; retry".into()),
                        );
                    }
                    let key = (topic.name.clone(), partition.index);
                    if verified.unreachable.contains(&key) {
                        // As Kafka: a produce client does not know coordinator errors.
                        return Fate::Refused(
                            ResponseError::NotEnoughReplicas,
                            Some("the transaction's coordinator could not confirm the partition yet; retry".into()),
                        );
                    }
                    let marker = batch::marker(bytes);
                    let verdict = match marker {
                        Some((_, coordinator_epoch)) if header.is_control() => {
                            state.producers.check_marker(&header, coordinator_epoch)
                        }
                        _ => state.producers.check(&header, verified.ok.get(&key).copied()),
                    };
                    match verdict {
                        Verdict::Refuse(error) => Fate::Refused(error, None),
                        Verdict::Duplicate { base_offset, last_offset } => {
                            broker.metrics.produce_duplicates.inc();
                            Fate::Duplicate { stream, base: base_offset, last: last_offset }
                        }
                        Verdict::Append => {
                            let base = state.next_offset;
                            let count = header.record_count;
                            state.next_offset += i64::from(count);
                            state.producers.record(&header, marker, base, now);
                            let mut batch = BytesMut::from(&bytes[..]);
                            batch::assign(&mut batch, base, leader_epoch.0);
                            if log_append_time {
                                batch::set_log_append_time(&mut batch, now);
                            }
                            let batch: Bytes = batch.freeze();
                            broker.metrics.bytes_in.with_label_values(&[&topic.name]).inc_by(batch.len() as u64);
                            broker.traffic.count(stream, batch.len() as u64, 0);
                            broker.cache.insert(stream, base, base + i64::from(count), batch.clone());
                            records.push(Record {
                                stream,
                                base_offset: Offset(base),
                                record_count: count as u32,
                                batch,
                            });
                            let last = base + i64::from(count) - 1;
                            Fate::Appended {
                                stream,
                                leader_epoch,
                                base,
                                last,
                                append_time: if log_append_time { now } else { -1 },
                            }
                        }
                    }
                })();
                fates.push((topic_index, partition.index, fate));
            }
        }
        let owned = leadership.owned.as_ref();
        let appended: u64 = records.iter().map(|record| record.batch.len() as u64).sum();
        broker.wal_backlog.fetch_add(appended, std::sync::atomic::Ordering::Relaxed);
        (!records.is_empty()).then(|| {
            let ack = owned.expect("records are only built while a log is owned").writer.append(records);
            Box::pin(ack) as WalAck
        })
    };
    drop(leadership);
    Admitted { request, version, image, fates, ack }
}

/// Waits for the WAL quorum (and for the originals of duplicates), then answers.
pub(super) async fn finish(broker: &Arc<Broker>, admitted: Admitted) -> Option<ProduceResponse> {
    let Admitted { request, version, image, fates, ack } = admitted;
    let acks = request.acks;
    let timeout = Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0));
    let topics: Vec<_> = request.topic_data.iter().map(|t| super::find_topic(&image, &t.name.0, t.topic_id)).collect();

    let started = std::time::Instant::now();
    let outcome = match ack {
        None => None,
        Some(mut ack) => {
            let waited = tokio::time::timeout(timeout.max(Duration::from_millis(1)), &mut ack).await;
            if waited.is_err() {
                // The entry may still become durable: its offsets must then
                // become readable (and a close of the partition must see them
                // acknowledged) even though this produce was answered.
                let appended: Vec<(usize, i32, Fate)> =
                    fates.iter().filter(|(_, _, fate)| matches!(fate, Fate::Appended { .. })).cloned().collect();
                let broker = broker.clone();
                tokio::spawn(async move {
                    if ack.await.is_ok() {
                        advance_watermarks(&broker, &appended);
                    }
                });
            }
            Some(waited)
        }
    };
    let failure = match outcome {
        None | Some(Ok(Ok(_))) => None,
        Some(Ok(Err(WriteError::Writer(WriterError::Fenced { .. })))) => {
            broker.on_log_fenced();
            Some(ResponseError::NotLeaderOrFollower)
        }
        // The entry's fate is unknown: it may still become durable.
        Some(Ok(Err(_))) | Some(Err(_)) => Some(ResponseError::RequestTimedOut),
    };
    if outcome.is_some() {
        broker.metrics.wal_ack_seconds.observe(started.elapsed().as_secs_f64());
    }
    if failure.is_none() {
        advance_watermarks(broker, &fates);
    }
    let mut responses: Vec<TopicProduceResponse> = request
        .topic_data
        .iter()
        .map(|t| TopicProduceResponse::default().with_name(t.name.clone()).with_topic_id(t.topic_id))
        .collect();
    for (topic_index, index, fate) in fates {
        let mut answer =
            PartitionProduceResponse::default().with_index(index).with_base_offset(-1).with_log_append_time_ms(-1);
        let error = match fate {
            Fate::Refused(error, message) => {
                if version >= 8 {
                    answer = answer.with_error_message(message.map(StrBytes::from_string));
                }
                Some(error)
            }
            Fate::Appended { base, append_time, .. } => match failure {
                Some(error) => Some(error),
                None => {
                    answer = answer.with_base_offset(base).with_log_append_time_ms(append_time);
                    None
                }
            },
            Fate::Duplicate { stream, base, last } => match durable(broker, stream, last, timeout).await {
                true => {
                    answer = answer.with_base_offset(base);
                    None
                }
                false => Some(ResponseError::RequestTimedOut),
            },
        };
        if let Some(error) = error {
            super::count_error(broker, "Produce", error);
            answer = answer.with_error_code(error.code());
            if error == ResponseError::NotLeaderOrFollower && version >= 10 {
                if let Some(topic) = topics[topic_index] {
                    let (leader, epoch) = super::metadata::current_leader(&image, topic, index);
                    answer = answer.with_current_leader(
                        LeaderIdAndEpoch::default().with_leader_id(BrokerId(leader)).with_leader_epoch(epoch),
                    );
                }
            }
        }
        responses[topic_index].partition_responses.push(answer);
    }
    (acks != 0).then(|| ProduceResponse::default().with_responses(responses))
}

/// Moves the high watermark of every partition appended in the acknowledged entry.
fn advance_watermarks(broker: &Broker, fates: &[(usize, i32, Fate)]) {
    let mut leadership = broker.leadership();
    let mut moved = false;
    for (_, _, fate) in fates {
        if let Fate::Appended { stream, leader_epoch, last, .. } = fate {
            if let Some(state) = leadership.partitions.get_mut(stream).filter(|s| s.leader_epoch == *leader_epoch) {
                if state.high_watermark <= *last {
                    state.high_watermark = last + 1;
                    moved = true;
                }
            }
        }
    }
    drop(leadership);
    if moved {
        broker.watermarks_moved();
    }
}

/// Waits until offset `last` of `stream` is durable, at most `timeout`.
async fn durable(broker: &Broker, stream: StreamId, last: i64, timeout: Duration) -> bool {
    let mut watermarks = broker.watermarks.subscribe();
    let reached = || broker.leadership().partitions.get(&stream).is_some_and(|state| state.high_watermark > last);
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

/// Why a CreateTime batch's timestamps are outside the topic's
/// `message.timestamp.before.max.ms` / `after.max.ms` window, if they are.
/// Read from the batch header (first and max timestamp), as the batch is
/// not decompressed.
fn timestamp_out_of_bounds(
    topic: &keel_controller_client::Topic,
    header: &batch::BatchHeader,
    now: i64,
) -> Option<String> {
    let bound = |key: &str| topic.config(key).and_then(|v| v.parse::<i64>().ok()).unwrap_or(i64::MAX);
    let (before, after) = (bound("message.timestamp.before.max.ms"), bound("message.timestamp.after.max.ms"));
    let earliest = header.base_timestamp.min(header.max_timestamp);
    if now.saturating_sub(earliest) > before {
        return Some(format!("timestamp {earliest} is more than message.timestamp.before.max.ms={before} before now"));
    }
    if header.max_timestamp.saturating_sub(now) > after {
        return Some(format!(
            "timestamp {} is more than message.timestamp.after.max.ms={after} after now",
            header.max_timestamp
        ));
    }
    None
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

//! The node's store: one thread owns the journal and every log's rules, so
//! ordering needs no lock. Requests queue on a bounded channel; the thread
//! takes whatever is queued as one batch, checks each request against its
//! log's rules, writes the batch's records with one fdatasync (group commit),
//! and only then answers (reads last, so they see the batch).
//!
//! PERFORMANCE-CRITICAL PATH: appends. No INFO logs and no blocking besides
//! the journal's own I/O.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use keel_controller_client::StreamId;
use keel_proto::wal as pb;
use keel_wal_client::entry::CheckedEntry;
use keel_wal_client::ids::{LogEpoch, LogId, Offset, Seq};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::acceptor::{AppendKind, LogReplica, ReplicaError};
use crate::journal::{Journal, JournalError, JournalRecord};
use crate::metrics::Metrics;

/// Requests taken into one batch at most.
const BATCH_REQUESTS_MAX: usize = 1024;

/// A request to the store.
#[derive(Debug)]
pub enum StoreRequest {
    /// Entries in seq order; one reply for them all.
    Append {
        epoch: LogEpoch,
        entries: Vec<Bytes>,
        reply: oneshot::Sender<pb::AppendReply>,
    },
    Fence {
        log: LogId,
        epoch: LogEpoch,
        reply: oneshot::Sender<pb::FenceReply>,
    },
    Read {
        request: pb::ReadRequest,
        reply: oneshot::Sender<pb::ReadReply>,
    },
    ReadStream {
        request: pb::ReadStreamRequest,
        reply: oneshot::Sender<pb::ReadStreamReply>,
    },
    Status {
        reply: oneshot::Sender<pb::StatusReply>,
    },
    /// Lets entries of `log` up to `to` go: the trim point the controller
    /// committed (DESIGN §3: nodes trim from metadata, never on request).
    Trim {
        log: LogId,
        to: TrimTo,
    },
}

/// How far a trim goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrimTo {
    /// Through this seq: the log's committed trim point.
    Seq(Seq),
    /// Through whatever the node holds: the log is sealed and uploaded, and
    /// entries after its sealed seq (in flight when it was sealed) are no
    /// part of it.
    Everything,
}

/// Sends requests to the store thread.
#[derive(Clone, Debug)]
pub struct StoreHandle {
    sender: mpsc::Sender<StoreRequest>,
}

impl StoreHandle {
    /// Queues a request; waits while the queue is full (backpressure).
    /// Cancellation-safe: a dropped send queues nothing.
    pub async fn send(&self, request: StoreRequest) -> Result<(), StoreStopped> {
        self.sender.send(request).await.map_err(|_| StoreStopped)
    }
}

/// The store thread has stopped (shutdown, or a journal failure).
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("the WAL store has stopped")]
pub struct StoreStopped;

/// Starts the store thread over an opened journal. A journal failure that
/// is not a want of room fires `on_failure`: the node stops (and is
/// restarted by its supervisor, reopening the journal from disk) rather
/// than stay registered, refusing everything, and keep being chosen for
/// new ensembles.
pub fn start(
    journal: Journal,
    queue_depth: usize,
    metrics: Metrics,
    on_failure: CancellationToken,
) -> std::io::Result<(StoreHandle, std::thread::JoinHandle<()>)> {
    let (sender, receiver) = mpsc::channel(queue_depth);
    let state = Store::restore(journal, metrics, on_failure);
    let thread = std::thread::Builder::new().name("wal-store".into()).spawn(move || state.run(receiver))?;
    Ok((StoreHandle { sender }, thread))
}

/// The thread's state.
struct Store {
    journal: Journal,
    metrics: Metrics,
    replicas: BTreeMap<LogId, LogReplica>,
    /// Set after a journal write failed: the journal and the rules may then
    /// disagree, so the store refuses everything until it is restarted.
    failed: Option<String>,
    /// The journal had no room for the last record (its cap, or a full
    /// disk): said once when it starts and once when it ends.
    out_of_room: bool,
    /// A trim could not delete its segments for want of room (to write the
    /// log states first); tried again with every batch until it can.
    trim_pending: bool,
    on_failure: CancellationToken,
}

/// A reply sent only after the batch's records are durable.
enum Deferred {
    Append(oneshot::Sender<pb::AppendReply>, pb::AppendReply),
    Fence(oneshot::Sender<pb::FenceReply>, pb::FenceReply),
}

impl Store {
    fn restore(journal: Journal, metrics: Metrics, on_failure: CancellationToken) -> Store {
        let replicas = journal
            .logs()
            .iter()
            .map(|(log, contents)| {
                let last = contents.end_seq();
                let epoch = contents.fence.unwrap_or(LogEpoch(0)).max(contents.last_entry_epoch);
                let replica = LogReplica::restored(
                    *log,
                    epoch,
                    last,
                    contents.trim_seq.min(last),
                    contents.writer_acked.min(last),
                );
                (*log, replica)
            })
            .collect();
        metrics.journal_bytes.set(journal.disk_bytes() as i64);
        Store { journal, metrics, replicas, failed: None, out_of_room: false, trim_pending: false, on_failure }
    }

    fn run(mut self, mut receiver: mpsc::Receiver<StoreRequest>) {
        while let Some(first) = receiver.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < BATCH_REQUESTS_MAX {
                match receiver.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            let started = std::time::Instant::now();
            self.process(batch);
            self.metrics.batch_seconds.observe(started.elapsed().as_secs_f64());
        }
    }

    fn process(&mut self, batch: Vec<StoreRequest>) {
        self.retry_pending_trim();
        let mut deferred = Vec::new();
        let mut reads = Vec::new();
        // Checksums of entries written in this batch, for retransmissions within it.
        let mut batch_crcs: HashMap<(LogId, Seq), u32> = HashMap::new();
        let mut written = 0;
        for request in batch {
            match request {
                StoreRequest::Append { epoch, entries, reply } => {
                    match self.append_all(epoch, entries, &mut batch_crcs, &mut written) {
                        // Some entry was taken: the reply waits for the sync.
                        answer if answer.durable_seq > 0 => deferred.push(Deferred::Append(reply, answer)),
                        refused => {
                            let _ = reply.send(refused);
                        }
                    }
                }
                StoreRequest::Fence { log, epoch, reply } => match self.fence(log, epoch, &mut written) {
                    Ok(ok) => deferred.push(Deferred::Fence(reply, ok)),
                    Err(refused) => {
                        self.count_refused(refused.code);
                        let _ = reply.send(refused);
                    }
                },
                StoreRequest::Trim { log, to } => self.trim(log, to, &mut written),
                read_or_status => reads.push(read_or_status),
            }
        }
        if written > 0 && self.failed.is_none() {
            let started = std::time::Instant::now();
            match self.journal.sync() {
                Ok(()) => {
                    self.metrics.sync_seconds.observe(started.elapsed().as_secs_f64());
                    self.metrics.batch_records.observe(written as f64);
                    self.metrics.journal_bytes.set(self.journal.disk_bytes() as i64);
                }
                Err(error) => self.fail(format!("journal sync failed: {error}")),
            }
        }
        for reply in deferred {
            match (reply, &self.failed) {
                (Deferred::Append(sender, ok), None) => {
                    let _ = sender.send(ok);
                }
                (Deferred::Fence(sender, ok), None) => {
                    let _ = sender.send(ok);
                }
                (Deferred::Append(sender, ok), Some(failure)) => {
                    let _ = sender.send(append_error(
                        LogId(ok.log),
                        Seq(ok.seq),
                        pb::ErrorCode::Unavailable,
                        failure.clone(),
                    ));
                }
                (Deferred::Fence(sender, _), Some(failure)) => {
                    let _ = sender.send(pb::FenceReply {
                        code: pb::ErrorCode::Unavailable as i32,
                        message: failure.clone(),
                        ..Default::default()
                    });
                }
            }
        }
        for request in reads {
            match request {
                StoreRequest::Read { request, reply } => {
                    let _ = reply.send(self.read(&request));
                }
                StoreRequest::ReadStream { request, reply } => {
                    let _ = reply.send(self.read_stream(&request));
                }
                StoreRequest::Status { reply } => {
                    let _ = reply.send(self.status());
                }
                StoreRequest::Append { .. } | StoreRequest::Fence { .. } | StoreRequest::Trim { .. } => {
                    unreachable!("handled above")
                }
            }
        }
    }

    /// Trims `log` (skipping ahead if this node holds less), deleting the
    /// segments that then hold nothing needed.
    fn trim(&mut self, log: LogId, to: TrimTo, written: &mut usize) {
        if self.failed.is_some() {
            return;
        }
        let Some(replica) = self.replicas.get(&log) else { return };
        let (epoch, last) = (replica.epoch(), replica.last_seq());
        let seq = match to {
            TrimTo::Seq(seq) => seq,
            TrimTo::Everything => last,
        };
        if seq <= replica.trim_seq() {
            return;
        }
        if seq > last {
            // Skipping ahead: journalled before any entry after the trim
            // point, so a restart does not find a gap between the entries.
            let record = JournalRecord::LogState { log, epoch, trimmed: seq };
            if let Err(error) = self.write(&record, written) {
                tracing::warn!(%log, %seq, "cannot record the skip to the trim point now: {error}");
                return;
            }
        }
        self.replicas.get_mut(&log).expect("checked above").trim(seq);
        let trimmed = self.journal.trim(log, seq);
        self.after_deleting(trimmed);
    }

    /// Deletes the segments a trim left for want of room, if there are some.
    fn retry_pending_trim(&mut self) {
        if self.trim_pending && self.failed.is_none() {
            let deleted = self.journal.delete_trimmed_segments();
            self.after_deleting(deleted);
        }
    }

    fn after_deleting(&mut self, result: Result<(), JournalError>) {
        match result {
            Ok(()) => {
                self.trim_pending = false;
                self.metrics.journal_bytes.set(self.journal.disk_bytes() as i64);
            }
            Err(error) if error.is_retryable() => {
                if !std::mem::replace(&mut self.trim_pending, true) {
                    tracing::warn!("trimmed segments are kept until there is room to record the log states: {error}");
                }
            }
            Err(error) => self.fail(format!("journal trim failed: {error}")),
        }
    }

    /// The journal and the rules may now disagree: every request is refused
    /// and the node stops, to reopen the journal from disk when restarted.
    fn fail(&mut self, reason: String) {
        tracing::error!("{reason}; refusing every request and stopping the node");
        self.failed = Some(reason);
        self.on_failure.cancel();
    }

    fn count_refused(&self, code: i32) {
        let name = pb::ErrorCode::try_from(code).map_or("unknown", |code| code.as_str_name());
        self.metrics.refused.with_label_values(&[name]).inc();
    }

    /// Writes `record` to the journal. No room is a retriable refusal that
    /// changes nothing; any other failure stops the store.
    fn write(&mut self, record: &JournalRecord, written: &mut usize) -> Result<(), JournalError> {
        match self.journal.write(record) {
            Ok(()) => {
                *written += 1;
                if std::mem::take(&mut self.out_of_room) {
                    tracing::info!("the journal has room again; taking appends");
                }
                Ok(())
            }
            Err(error) if error.is_retryable() => {
                if !std::mem::replace(&mut self.out_of_room, true) {
                    tracing::warn!("refusing appends (retriable) until the journal has room: {error}");
                }
                Err(error)
            }
            Err(error) => {
                self.fail(format!("journal write failed: {error}"));
                Err(error)
            }
        }
    }

    /// Takes `entries` in order until one is refused. The answer is OK with
    /// `durable_seq` at the last entry, or the refusal, with `durable_seq` at
    /// the last entry taken before it (0 for none).
    fn append_all(
        &mut self,
        epoch: LogEpoch,
        entries: Vec<Bytes>,
        batch_crcs: &mut HashMap<(LogId, Seq), u32>,
        written: &mut usize,
    ) -> pb::AppendReply {
        let mut taken: Option<pb::AppendReply> = None;
        for entry in entries {
            match self.append(epoch, entry, batch_crcs, written) {
                Ok(ok) => taken = Some(ok),
                Err(mut refused) => {
                    self.count_refused(refused.code);
                    refused.durable_seq = taken.map_or(0, |ok| ok.seq);
                    return refused;
                }
            }
        }
        match taken {
            Some(mut ok) => {
                ok.durable_seq = ok.seq;
                ok
            }
            None => {
                self.count_refused(pb::ErrorCode::BadEntry as i32);
                append_error(LogId(0), Seq(0), pb::ErrorCode::BadEntry, "an append request with no entry".into())
            }
        }
    }

    fn append(
        &mut self,
        epoch: LogEpoch,
        entry: Bytes,
        batch_crcs: &mut HashMap<(LogId, Seq), u32>,
        written: &mut usize,
    ) -> Result<pb::AppendReply, pb::AppendReply> {
        // Untrusted bytes, checked once here: header, checksum, every record's bounds.
        let entry = match CheckedEntry::check(entry) {
            Ok(entry) => entry,
            Err(error) => return Err(append_error(LogId(0), Seq(0), pb::ErrorCode::BadEntry, error.to_string())),
        };
        let header = entry.header;
        let (log, seq) = (header.log, header.seq);
        if let Some(failure) = &self.failed {
            return Err(append_error(log, seq, pb::ErrorCode::Unavailable, failure.clone()));
        }
        let crc = u32::from_be_bytes(entry.bytes[8..12].try_into().expect("a checked entry has a checksum"));
        let journal = &self.journal;
        let replica = self.replicas.entry(log).or_insert_with(|| LogReplica::new(log));
        let held_crc = |held: Seq| {
            batch_crcs.get(&(log, held)).copied().or_else(|| {
                let bytes = journal.read(log, held).ok()?;
                Some(u32::from_be_bytes(bytes[8..12].try_into().ok()?))
            })
        };
        match replica.check_append(epoch, &header, crc, held_crc) {
            Ok(AppendKind::New) => {
                let bytes = entry.bytes.len() as u64;
                self.write(&JournalRecord::Entry(entry), written)
                    .map_err(|error| append_error(log, seq, pb::ErrorCode::Unavailable, error.to_string()))?;
                self.replicas.get_mut(&log).expect("inserted above").on_appended(epoch, &header);
                batch_crcs.insert((log, seq), crc);
                self.metrics.entries_appended.inc();
                self.metrics.bytes_appended.inc_by(bytes);
                Ok(append_ok(log, seq))
            }
            Ok(AppendKind::AlreadyHeld) => Ok(append_ok(log, seq)),
            Err(error) => Err(replica_error_reply(log, seq, &error)),
        }
    }

    fn fence(&mut self, log: LogId, epoch: LogEpoch, written: &mut usize) -> Result<pb::FenceReply, pb::FenceReply> {
        let refused =
            |code: pb::ErrorCode, message: String| pb::FenceReply { code: code as i32, message, ..Default::default() };
        if let Some(failure) = &self.failed {
            return Err(refused(pb::ErrorCode::Unavailable, failure.clone()));
        }
        let replica = self.replicas.entry(log).or_insert_with(|| LogReplica::new(log));
        let mut fenced = replica.clone();
        match fenced.fence(epoch) {
            Ok(reply) => {
                // Journalled first: the fence holds only once it is durable.
                let record = JournalRecord::LogState { log, epoch, trimmed: reply.trim_seq };
                self.write(&record, written).map_err(|error| refused(pb::ErrorCode::Unavailable, error.to_string()))?;
                self.replicas.insert(log, fenced);
                Ok(pb::FenceReply {
                    code: pb::ErrorCode::Ok as i32,
                    epoch: epoch.0,
                    last_seq: reply.last_seq.0,
                    trim_seq: reply.trim_seq.0,
                    ..Default::default()
                })
            }
            Err(error) => Err(pb::FenceReply {
                code: pb::ErrorCode::StaleEpoch as i32,
                epoch: replica.epoch().0,
                last_seq: replica.last_seq().0,
                trim_seq: replica.trim_seq().0,
                message: error.to_string(),
                ..Default::default()
            }),
        }
    }

    fn read(&self, request: &pb::ReadRequest) -> pb::ReadReply {
        let log = LogId(request.log);
        let Some(replica) = self.replicas.get(&log) else {
            return pb::ReadReply {
                code: pb::ErrorCode::UnknownLog as i32,
                message: format!("{log} is not on this node"),
                ..Default::default()
            };
        };
        let end = if request.recovery_epoch > 0 {
            if replica.epoch() != LogEpoch(request.recovery_epoch) {
                return pb::ReadReply {
                    code: pb::ErrorCode::StaleEpoch as i32,
                    message: format!(
                        "{log} is at {}, not fenced at {}",
                        replica.epoch(),
                        LogEpoch(request.recovery_epoch)
                    ),
                    ..Default::default()
                };
            }
            replica.last_seq()
        } else {
            replica.readable_end(sealed(request.sealed_seq))
        };
        let mut entries = Vec::new();
        let mut bytes = 0u64;
        let mut seq = Seq(request.from_seq.max(replica.trim_seq().0 + 1));
        while seq <= end && (entries.is_empty() || bytes < request.max_bytes) {
            match self.journal.read(log, seq) {
                Ok(entry) => {
                    bytes += entry.len() as u64;
                    entries.push(entry);
                }
                Err(error) => {
                    return pb::ReadReply {
                        code: pb::ErrorCode::Unavailable as i32,
                        message: error.to_string(),
                        ..Default::default()
                    };
                }
            }
            seq = seq.next();
        }
        pb::ReadReply { code: pb::ErrorCode::Ok as i32, entries, readable_end: end.0, ..Default::default() }
    }

    /// A stream's batches from an offset, up to what is known committed
    /// (the writer's acknowledged seq), for readers of a partition's tail.
    fn read_stream(&self, request: &pb::ReadStreamRequest) -> pb::ReadStreamReply {
        let log = LogId(request.log);
        let Some(replica) = self.replicas.get(&log) else {
            return pb::ReadStreamReply {
                code: pb::ErrorCode::UnknownLog as i32,
                message: format!("{log} is not on this node"),
                ..Default::default()
            };
        };
        let end = replica.readable_end(sealed(request.sealed_seq));
        let stream = StreamId(request.stream);
        match self.journal.read_stream(log, stream, Offset(request.from_offset), end, request.max_bytes) {
            Ok(batches) => pb::ReadStreamReply {
                code: pb::ErrorCode::Ok as i32,
                batches: batches
                    .into_iter()
                    .map(|(base, count, batch)| pb::StreamBatch { base_offset: base.0, record_count: count, batch })
                    .collect(),
                readable_end_seq: end.0,
                ..Default::default()
            },
            Err(error) => pb::ReadStreamReply {
                code: pb::ErrorCode::Unavailable as i32,
                message: error.to_string(),
                ..Default::default()
            },
        }
    }

    fn status(&self) -> pb::StatusReply {
        let logs = self
            .replicas
            .values()
            .map(|replica| pb::LogStatus {
                log: replica.log().0,
                epoch: replica.epoch().0,
                last_seq: replica.last_seq().0,
                trim_seq: replica.trim_seq().0,
                writer_acked: replica.writer_acked().0,
            })
            .collect();
        pb::StatusReply { logs, disk_bytes: self.journal.disk_bytes(), incarnation: String::new() }
    }
}

fn append_ok(log: LogId, seq: Seq) -> pb::AppendReply {
    pb::AppendReply { log: log.0, seq: seq.0, code: pb::ErrorCode::Ok as i32, ..Default::default() }
}

fn append_error(log: LogId, seq: Seq, code: pb::ErrorCode, message: String) -> pb::AppendReply {
    pb::AppendReply { log: log.0, seq: seq.0, code: code as i32, message, ..Default::default() }
}

fn replica_error_reply(log: LogId, seq: Seq, error: &ReplicaError) -> pb::AppendReply {
    let mut reply = append_error(log, seq, pb::ErrorCode::Ok, error.to_string());
    reply.code = match error {
        ReplicaError::Fenced { fenced, .. } => {
            reply.epoch = fenced.0;
            pb::ErrorCode::Fenced
        }
        ReplicaError::Gap { last, .. } => {
            reply.last_seq = last.0;
            pb::ErrorCode::Gap
        }
        ReplicaError::Conflict { .. } => pb::ErrorCode::Conflict,
        ReplicaError::StaleFence { .. } => pb::ErrorCode::StaleEpoch,
        ReplicaError::WrongLog { .. } => pb::ErrorCode::BadEntry,
    } as i32;
    reply
}

/// A reader's sealed seq: 0 means the log is open as far as it knows.
fn sealed(sealed_seq: u64) -> Option<Seq> {
    (sealed_seq > 0).then_some(Seq(sealed_seq))
}

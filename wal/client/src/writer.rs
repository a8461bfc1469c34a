//! `WalWriter`: the I/O around `QuorumWriter`. One task owns the bookkeeping;
//! each member has a connection task holding a gRPC append stream.
//!
//! An append builds the next entry, sends it to every connected member and
//! resolves once the entry is durable on the ack quorum (DESIGN §3). Entries
//! that queue up for a member while its stream is busy go in one request,
//! which the node stores with one write and answers with one reply. A member
//! whose stream fails (or falls too far behind) is disconnected and dialled
//! again with backoff; on reconnecting it is sent every entry it has not
//! acknowledged, in order, before anything new. A member that answers
//! "fenced" stops the writer: every waiting and later append fails with
//! `Fenced`. Whether the ensemble can still acknowledge is published as
//! `Health`, so the owner can seal the log and move to a new one.
//!
//! Moving to a new log (`continue_on`, DESIGN §3) is a command in the same
//! queue as appends: the writer stops the old log at its last acknowledged
//! seq, appends the records of the entries not acknowledged there to the new
//! log first, unchanged (same offsets, same batch bytes), and answers their
//! waiting appends from the new log's acknowledgements. Appends queued after
//! the command go to the new log after those. Events carry their log, so a
//! late reply from an old member is never counted for the new log.
//!
//! PERFORMANCE-CRITICAL PATH: no INFO logs, no blocking calls.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use keel_proto::wal as pb;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::entry::{Entry, Record};
use crate::ids::{LogEpoch, LogId, Offset, Seq};
use crate::quorum::{Health, Member, QuorumWriter, WriterError};
use keel_controller_client::StreamId;

/// Events queued from the connection tasks to the writer task.
const EVENT_QUEUE: usize = 4096;
/// Entries queued towards one member before it counts as too slow and is
/// reconnected. It must hold a returning member's whole resend list, which the
/// owner bounds by capping `QuorumWriter::unreplicated_bytes` (sealing early).
const MEMBER_QUEUE: usize = 1 << 20;
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// The most bytes of entries in one append request (an entry larger than
/// this goes alone).
pub const REQUEST_BYTES_MAX: usize = 4 << 20;

/// A member of the ensemble and its address.
#[derive(Clone, Debug)]
pub struct Target {
    pub member: Member,
    pub addr: String,
}

/// Why an append failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Writer(#[from] WriterError),
    #[error("the WAL writer has stopped")]
    Stopped,
}

enum Command {
    Append {
        records: Vec<Record>,
        reply: oneshot::Sender<Result<Seq, WriteError>>,
    },
    Continue {
        log: LogId,
        epoch: LogEpoch,
        targets: Vec<Target>,
        ack_quorum: usize,
        reply: oneshot::Sender<Result<Sealed, WriteError>>,
    },
}

/// What the writer left behind in a log it moved away from: the seq to seal
/// it at (its last acknowledged entry) and each stream's end offset there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    pub log: LogId,
    pub sealed_seq: Seq,
    pub stream_ends: BTreeMap<StreamId, Offset>,
}

/// Every event names the log of the connection that sent it.
struct Event {
    log: LogId,
    kind: EventKind,
}

/// What a connection task reports. `generation` tells a member's successive
/// connections apart: a late report from a connection the writer already
/// replaced must not tear down its successor.
enum EventKind {
    Connected {
        member: usize,
        generation: u64,
        sender: mpsc::Sender<Bytes>,
    },
    Reply {
        member: usize,
        reply: pb::AppendReply,
    },
    Lost {
        member: usize,
        generation: u64,
        reason: String,
    },
    /// The member is not the node the log recorded any more (its disk was
    /// wiped): it is lost for good and not dialled again.
    Gone {
        member: usize,
        generation: u64,
        reason: String,
    },
}

/// A handle to a running writer of one WAL log.
#[derive(Debug, Clone)]
pub struct WalWriter {
    /// Unbounded so that `append` enqueues at once, in call order; the owner
    /// bounds what is in flight (unacknowledged bytes) itself.
    commands: mpsc::UnboundedSender<Command>,
    /// The log written now and its highest acknowledged seq.
    acked: watch::Receiver<(LogId, Seq)>,
    /// Bytes held for members that have not acknowledged them (a member
    /// that stays away makes this grow; the owner caps it by sealing early).
    unreplicated: Arc<AtomicUsize>,
    health: watch::Receiver<Health>,
}

impl WalWriter {
    /// Starts writing `log` at `epoch` after `last_seq`, to `targets`, needing
    /// `ack_quorum` of them. Its tasks run in `tasks` until `cancel` fires.
    pub fn start(
        log: LogId,
        epoch: LogEpoch,
        targets: Vec<Target>,
        ack_quorum: usize,
        last_seq: Seq,
        tasks: &TaskTracker,
        cancel: CancellationToken,
    ) -> WalWriter {
        let quorum =
            QuorumWriter::new(log, epoch, targets.iter().map(|t| t.member.clone()).collect(), ack_quorum, last_seq);
        let (commands, command_receiver) = mpsc::unbounded_channel();
        let (events, event_receiver) = mpsc::channel(EVENT_QUEUE);
        let (acked_sender, acked) = watch::channel((log, last_seq));
        let (health_sender, health) = watch::channel(Health::Healthy);
        let log_cancel = cancel.child_token();
        let unreplicated = Arc::new(AtomicUsize::new(0));
        for (member, target) in targets.iter().enumerate() {
            let cancel = log_cancel.clone();
            tasks.spawn(connect(log, epoch, member, 0, target.clone(), Duration::ZERO, events.clone(), cancel));
        }
        let state = WriterTask {
            quorum,
            epoch,
            targets,
            senders: Vec::new(),
            generations: Vec::new(),
            waiters: BTreeMap::new(),
            ends: BTreeMap::new(),
            acked_ends: BTreeMap::new(),
            events,
            acked: acked_sender,
            health: health_sender,
            tasks: tasks.clone(),
            cancel: cancel.clone(),
            log_cancel,
            unreplicated: unreplicated.clone(),
        };
        tasks.spawn(state.run(command_receiver, event_receiver));
        WalWriter { commands, acked, health, unreplicated }
    }

    /// Appends one entry of `records`. The entry is queued when this is
    /// called, so entries get seqs in call order; the returned future resolves
    /// with the seq once the entry is durable. Dropping the future does not
    /// undo the append: the entry may still become durable.
    pub fn append(&self, records: Vec<Record>) -> impl std::future::Future<Output = Result<Seq, WriteError>> + use<> {
        let (reply, answer) = oneshot::channel();
        let queued = self.commands.send(Command::Append { records, reply });
        async move {
            queued.map_err(|_| WriteError::Stopped)?;
            answer.await.map_err(|_| WriteError::Stopped)?
        }
    }

    /// The highest seq that is durable (with every seq before it) in the log
    /// written now.
    pub fn acked(&self) -> Seq {
        self.acked.borrow().1
    }

    /// Bytes of the current log held until every member has them.
    pub fn unreplicated_bytes(&self) -> usize {
        self.unreplicated.load(Ordering::Relaxed)
    }

    /// The highest durable seq of `log`, if it is the log written now.
    pub fn acked_in(&self, log: LogId) -> Option<Seq> {
        let (current, seq) = *self.acked.borrow();
        (current == log).then_some(seq)
    }

    /// Moves to `log` (recorded by the controller, epoch `epoch`): see the
    /// module comment. Resolves with what to seal the old log at.
    pub fn continue_on(
        &self,
        log: LogId,
        epoch: LogEpoch,
        targets: Vec<Target>,
        ack_quorum: usize,
    ) -> impl std::future::Future<Output = Result<Sealed, WriteError>> + use<> {
        let (reply, answer) = oneshot::channel();
        let queued = self.commands.send(Command::Continue { log, epoch, targets, ack_quorum, reply });
        async move {
            queued.map_err(|_| WriteError::Stopped)?;
            answer.await.map_err(|_| WriteError::Stopped)?
        }
    }

    /// Resolves when the writer's task has ended: cancelled, or gone for
    /// any other reason. A writer that ends without being cancelled can get
    /// nothing acknowledged any more, and its owner must give the log up.
    pub async fn stopped(&self) {
        self.commands.closed().await
    }

    /// Whether the ensemble can still acknowledge entries. Copy the value
    /// out rather than holding a borrow of it: the writer's next health update
    /// waits for every borrow to end.
    pub fn health(&self) -> watch::Receiver<Health> {
        self.health.clone()
    }
}

struct WriterTask {
    quorum: QuorumWriter,
    epoch: LogEpoch,
    targets: Vec<Target>,
    /// Per member, the sender of its open stream's entries.
    senders: Vec<Option<mpsc::Sender<Bytes>>>,
    /// Per member, the generation of its current connection task.
    generations: Vec<u64>,
    /// Appends waiting for their entry to be durable, by seq.
    waiters: BTreeMap<Seq, oneshot::Sender<Result<Seq, WriteError>>>,
    /// Per entry not acknowledged yet, the end offset of each of its streams;
    /// folded into `acked_ends` as entries are acknowledged.
    ends: BTreeMap<Seq, Vec<(StreamId, Offset)>>,
    acked_ends: BTreeMap<StreamId, Offset>,
    events: mpsc::Sender<Event>,
    acked: watch::Sender<(LogId, Seq)>,
    health: watch::Sender<Health>,
    tasks: TaskTracker,
    cancel: CancellationToken,
    /// Stops the current log's connections.
    log_cancel: CancellationToken,
    unreplicated: Arc<AtomicUsize>,
}

impl WriterTask {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>, mut events: mpsc::Receiver<Event>) {
        self.senders = vec![None; self.targets.len()];
        self.generations = vec![0; self.targets.len()];
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                command = commands.recv() => match command {
                    Some(Command::Append { records, reply }) => self.append(records, reply),
                    Some(Command::Continue { log, epoch, targets, ack_quorum, reply }) => {
                        let _ = reply.send(self.continue_on(log, epoch, targets, ack_quorum));
                    }
                    None => break,
                },
                Some(event) = events.recv() => {
                    // A late event of a log this writer moved away from.
                    if event.log == self.quorum.log() {
                        self.handle(event.kind);
                    }
                }
            }
            self.unreplicated.store(self.quorum.unreplicated_bytes(), Ordering::Relaxed);
        }
        for (_, waiter) in std::mem::take(&mut self.waiters) {
            let _ = waiter.send(Err(WriteError::Stopped));
        }
    }

    fn append(&mut self, records: Vec<Record>, reply: oneshot::Sender<Result<Seq, WriteError>>) {
        let entry = match self.quorum.next_entry(records) {
            Ok(entry) => entry,
            Err(error) => {
                let _ = reply.send(Err(error.into()));
                return;
            }
        };
        self.waiters.insert(entry.header.seq, reply);
        let ends = entry.records.iter().map(|r| (r.stream, Offset(r.base_offset.0 + i64::from(r.record_count))));
        self.ends.insert(entry.header.seq, ends.collect());
        for member in 0..self.senders.len() {
            self.send_to(member, entry.bytes.clone());
        }
    }

    /// Queues an entry to a member; a member whose queue is full is too slow
    /// and is disconnected (it gets everything again when it reconnects).
    fn send_to(&mut self, member: usize, entry: Bytes) {
        let Some(sender) = &self.senders[member] else { return };
        if sender.try_send(entry).is_err() {
            let generation = self.generations[member];
            self.lost(member, generation, "too far behind".into());
        }
    }

    /// Stops the current log at its last acknowledged seq and continues on
    /// `log`, re-appending the records of the unacknowledged entries first.
    fn continue_on(
        &mut self,
        log: LogId,
        epoch: LogEpoch,
        targets: Vec<Target>,
        ack_quorum: usize,
    ) -> Result<Sealed, WriteError> {
        if self.quorum.is_stopped() {
            return Err(WriterError::Fenced { log: self.quorum.log() }.into());
        }
        let old = self.quorum.log();
        let sealed_seq = self.quorum.acked();
        let unacked = self.quorum.seal();
        let stream_ends = std::mem::take(&mut self.acked_ends);
        self.ends.clear();
        let mut waiters = std::mem::take(&mut self.waiters);
        self.log_cancel.cancel();
        self.log_cancel = self.cancel.child_token();
        self.quorum =
            QuorumWriter::new(log, epoch, targets.iter().map(|t| t.member.clone()).collect(), ack_quorum, Seq(0));
        self.epoch = epoch;
        self.senders = vec![None; targets.len()];
        self.generations = vec![0; targets.len()];
        for (member, target) in targets.iter().enumerate() {
            let (events, cancel) = (self.events.clone(), self.log_cancel.clone());
            self.tasks.spawn(connect(log, epoch, member, 0, target.clone(), Duration::ZERO, events, cancel));
        }
        self.targets = targets;
        self.acked.send_replace((log, Seq(0)));
        self.health.send_replace(Health::Healthy);
        for (seq, bytes) in unacked {
            let waiter = waiters.remove(&seq).unwrap_or_else(|| oneshot::channel().0);
            match Entry::decode(bytes) {
                Ok(entry) => self.append(entry.records, waiter),
                // The writer built these bytes itself: this cannot happen.
                Err(error) => {
                    let _ = waiter.send(Err(WriteError::Stopped));
                    tracing::error!(%old, %seq, %error, "an unacknowledged entry does not decode; it is not re-appended");
                }
            }
        }
        Ok(Sealed { log: old, sealed_seq, stream_ends })
    }

    fn handle(&mut self, event: EventKind) {
        match event {
            EventKind::Connected { member, generation, sender } => {
                if generation != self.generations[member] {
                    return;
                }
                self.senders[member] = Some(sender);
                for (_, bytes) in self.quorum.on_member_back(member) {
                    self.send_to(member, bytes);
                }
                self.health.send_replace(self.quorum.health());
            }
            // Acknowledgements count whichever connection carried them: each
            // one says the node fsynced the entry.
            EventKind::Reply { member, reply } => self.reply(member, reply),
            EventKind::Lost { member, generation, reason } => {
                if self.disconnect(member, generation, &reason) {
                    let target = self.targets[member].clone();
                    let generation = self.generations[member];
                    self.tasks.spawn(connect(
                        self.quorum.log(),
                        self.epoch,
                        member,
                        generation,
                        target,
                        RECONNECT_BACKOFF_MIN,
                        self.events.clone(),
                        self.log_cancel.clone(),
                    ));
                }
            }
            EventKind::Gone { member, generation, reason } => {
                self.disconnect(member, generation, &reason);
            }
        }
    }

    /// Member `member` has every entry up to `seq` fsynced.
    fn on_durable(&mut self, member: usize, seq: Seq) {
        if let Some(acked) = self.quorum.on_ack(member, seq) {
            self.acked.send_replace((self.quorum.log(), acked));
            while let Some(entry) = self.ends.first_entry() {
                if *entry.key() > acked {
                    break;
                }
                for (stream, end) in entry.remove() {
                    self.acked_ends.insert(stream, end);
                }
            }
            while let Some(entry) = self.waiters.first_entry() {
                if *entry.key() > acked {
                    break;
                }
                let (seq, waiter) = entry.remove_entry();
                let _ = waiter.send(Ok(seq));
            }
        }
    }

    fn reply(&mut self, member: usize, reply: pb::AppendReply) {
        // Entries before a refused one may still have been stored.
        if reply.durable_seq > 0 {
            self.on_durable(member, Seq(reply.durable_seq));
        }
        match pb::ErrorCode::try_from(reply.code) {
            Ok(pb::ErrorCode::Ok) => {}
            Ok(pb::ErrorCode::Fenced) => {
                if self.quorum.is_stopped() {
                    return;
                }
                tracing::warn!(log = %self.quorum.log(), epoch = reply.epoch, "WAL log fenced at a newer epoch; writer stops");
                self.quorum.on_fenced();
                let log = self.quorum.log();
                for (_, waiter) in std::mem::take(&mut self.waiters) {
                    let _ = waiter.send(Err(WriterError::Fenced { log }.into()));
                }
            }
            _ => {
                let generation = self.generations[member];
                self.lost(member, generation, format!("append refused: {}", reply.message));
            }
        }
    }

    /// The writer's own decision to drop a member's connection (too slow, or
    /// an unexpected refusal): it is dialled again.
    fn lost(&mut self, member: usize, generation: u64, reason: String) {
        self.handle(EventKind::Lost { member, generation, reason });
    }

    /// Marks connection `generation` of `member` as gone. Returns false for a
    /// stale generation (its successor is already dialling or connected),
    /// which changes nothing.
    fn disconnect(&mut self, member: usize, generation: u64, reason: &str) -> bool {
        if generation != self.generations[member] {
            return false;
        }
        self.generations[member] += 1;
        self.senders[member] = None;
        let health = self.quorum.on_member_lost(member);
        self.health.send_replace(health);
        tracing::warn!(log = %self.quorum.log(), node = %self.targets[member].member.node, ?health, %reason, "lost a WAL member");
        true
    }
}

/// Dials the member (after `delay`, then with backoff) and runs the append
/// stream until it breaks, reporting to the writer task. A node that answers
/// under another incarnation lost its disk: it is never used again for this
/// log, which the owner then seals and replaces.
#[allow(clippy::too_many_arguments)]
async fn connect(
    log: LogId,
    epoch: LogEpoch,
    member: usize,
    generation: u64,
    target: Target,
    delay: Duration,
    events: mpsc::Sender<Event>,
    cancel: CancellationToken,
) {
    let addr = target.addr.clone();
    let mut backoff = delay;
    loop {
        if !backoff.is_zero() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
        }
        backoff = (backoff * 2).clamp(RECONNECT_BACKOFF_MIN, RECONNECT_BACKOFF_MAX);
        let endpoint = match keel_proto::transport::endpoint(&addr) {
            Ok(endpoint) => endpoint,
            Err(error) => {
                let kind = EventKind::Lost { member, generation, reason: error.to_string() };
                let _ = events.send(Event { log, kind }).await;
                return;
            }
        };
        let channel = tokio::select! {
            _ = cancel.cancelled() => return,
            channel = endpoint.connect() => match channel {
                Ok(channel) => channel,
                Err(_) => continue,
            },
        };
        let mut client = pb::wal_client::WalClient::new(keel_proto::auth::channel(channel))
            .max_encoding_message_size(crate::entry::ENTRY_BYTES_MAX + (1 << 20))
            .max_decoding_message_size(1 << 20);
        let incarnation = match client.status(pb::StatusRequest {}).await {
            Ok(status) => status.into_inner().incarnation,
            Err(_) => continue,
        };
        if incarnation != target.member.incarnation {
            let reason =
                format!("it is now incarnation {incarnation}, not {}: its disk was wiped", target.member.incarnation);
            let _ = events.send(Event { log, kind: EventKind::Gone { member, generation, reason } }).await;
            return;
        }
        let (sender, receiver) = mpsc::channel(MEMBER_QUEUE);
        // Announce the stream before the call: requests queue until it is up.
        if events.send(Event { log, kind: EventKind::Connected { member, generation, sender } }).await.is_err() {
            return;
        }
        let reason = match client.append(requests(epoch, receiver)).await {
            Ok(response) => {
                let mut replies = response.into_inner();
                loop {
                    let message = tokio::select! {
                        _ = cancel.cancelled() => return,
                        message = replies.message() => message,
                    };
                    match message {
                        Ok(Some(reply)) => {
                            if events.send(Event { log, kind: EventKind::Reply { member, reply } }).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break "stream closed".to_owned(),
                        Err(status) => break status.to_string(),
                    }
                }
            }
            Err(status) => status.to_string(),
        };
        let _ = events.send(Event { log, kind: EventKind::Lost { member, generation, reason } }).await;
        return;
    }
}

/// The append requests of a member's stream: each takes every entry queued
/// by the time the stream can send again, up to `REQUEST_BYTES_MAX`.
fn requests(epoch: LogEpoch, entries: mpsc::Receiver<Bytes>) -> impl Stream<Item = pb::AppendRequest> {
    futures::stream::unfold((entries, None), move |(mut entries, carried): (_, Option<Bytes>)| async move {
        let first = match carried {
            Some(entry) => entry,
            None => entries.recv().await?,
        };
        let mut bytes = first.len();
        let mut batch = vec![first];
        let mut carry = None;
        while let Ok(entry) = entries.try_recv() {
            if bytes + entry.len() > REQUEST_BYTES_MAX {
                carry = Some(entry);
                break;
            }
            bytes += entry.len();
            batch.push(entry);
        }
        Some((pb::AppendRequest { epoch: epoch.0, entries: batch }, (entries, carry)))
    })
}

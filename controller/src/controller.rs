//! The running controller: its Raft node, state and the operations the gRPC
//! services and background tasks share (routing to the leader, proposing
//! commands, expiring sessions).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_controller_client::{pb, Command, Epoch, Image, MetaError, NodeId, NodeKind, Outcome, Version};
use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;
use pb::metadata_client::MetadataClient as GrpcClient;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ControllerConfig;
use crate::metrics::Metrics;
use crate::network::Peers;
use crate::raft_types::{ControllerNode, Raft, RaftId};
use crate::sessions::Sessions;
use crate::store::{Identity, LogStore, Shared};

/// Metadata key marking a request one controller forwarded to another.
pub(crate) const FORWARDED_HEADER: &str = "x-keel-forwarded";

/// Everything a running controller holds.
pub struct Controller {
    pub(crate) config: Arc<ControllerConfig>,
    pub(crate) identity: Arc<Identity>,
    pub(crate) raft: Raft,
    pub(crate) state: Arc<Shared>,
    pub(crate) log: LogStore,
    pub(crate) sessions: Mutex<Sessions>,
    /// Per stream, the bytes/s in and out its leader last reported, and when
    /// (leader-only, like sessions; the balancer's input).
    pub(crate) loads: Mutex<std::collections::HashMap<keel_controller_client::StreamId, StreamLoad>>,
    pub(crate) peers: Peers,
    pub(crate) metrics: Metrics,
    /// While this controller leads: when a quorum last acknowledged it, on
    /// this process's monotonic clock (`track_quorum_contact`).
    pub(crate) quorum_contact: Mutex<Option<Instant>>,
    /// While this controller leads: brokers fenced while leading partitions,
    /// and when (a failover lasts until every one of them has a new leader).
    pub(crate) failing_over: Mutex<std::collections::HashMap<NodeId, Instant>>,
    /// Cancelled when this controller must stop (shutdown, or a fatal Raft error).
    pub(crate) cancel: CancellationToken,
    /// Every background task of this controller (watch feeds included).
    pub(crate) tasks: TaskTracker,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").field("identity", &self.identity).finish_non_exhaustive()
    }
}

/// A partition's latest load report.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamLoad {
    pub(crate) bytes_in: f64,
    pub(crate) bytes_out: f64,
    pub(crate) at: Instant,
}

/// Load reports older than this are ignored (the broker stopped reporting).
const LOAD_REPORT_TTL: Duration = Duration::from_secs(30);
/// How often the balancer looks, and how many partitions it moves at most each time.
const BALANCE_EVERY: Duration = Duration::from_secs(5);
const MOVES_PER_ROUND: usize = 4;

/// Where a request must go.
#[derive(Debug)]
pub(crate) enum Route {
    /// This controller leads: handle it here.
    Local,
    /// Send it to the leader through this client.
    Forward(Box<GrpcClient<keel_proto::auth::Channel>>),
}

impl Controller {
    /// Decides whether this controller handles a leader-only request or forwards
    /// it. A request that was already forwarded once is never forwarded again
    /// (leadership is moving); the client retries instead.
    pub(crate) fn route(&self, already_forwarded: bool) -> Result<Route, MetaError> {
        let (leader, node) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            let leader = metrics.current_leader;
            let node = leader.and_then(|leader| metrics.membership_config.membership().get_node(&leader).cloned());
            (leader, node)
        };
        match (leader, node) {
            (Some(leader), _) if leader == self.identity.raft_id => Ok(Route::Local),
            (Some(_), Some(node)) if !already_forwarded => {
                let channel =
                    self.peers.channel(&node.addr).map_err(|e| MetaError::Internal { reason: e.to_string() })?;
                self.metrics.forwarded_requests.inc();
                Ok(Route::Forward(Box::new(
                    GrpcClient::new(channel)
                        .max_decoding_message_size(keel_controller_client::GRPC_MESSAGE_BYTES_MAX)
                        .max_encoding_message_size(keel_controller_client::GRPC_MESSAGE_BYTES_MAX),
                )))
            }
            _ => Err(MetaError::NoLeader),
        }
    }

    /// Whether this controller, as leader, heard from a quorum within the
    /// longest election timeout. A leader that did not may already be
    /// deposed (frozen, or cut off while the others elected a new one): it
    /// must not renew sessions it may no longer govern.
    pub(crate) fn leads_with_quorum(&self) -> bool {
        let contact = *self.quorum_contact.lock().expect("quorum contact lock poisoned");
        contact.is_some_and(|at| at.elapsed() <= self.config.election_timeout_max)
    }

    /// Keeps `quorum_contact` from Raft's metrics. The time is taken when a
    /// report arrives, so a controller that was frozen (its last report
    /// old) does not count as in contact until Raft reports again after it
    /// wakes. Cancellation-safe: it only reads metrics.
    pub(crate) async fn track_quorum_contact(self: Arc<Self>) {
        let mut metrics = self.raft.metrics();
        loop {
            let contact = {
                let current = metrics.borrow_and_update();
                let leading = current.current_leader == Some(self.identity.raft_id);
                let since = current.millis_since_quorum_ack.filter(|_| leading);
                since.map(|millis| Instant::now() - Duration::from_millis(millis))
            };
            *self.quorum_contact.lock().expect("quorum contact lock poisoned") = contact;
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                changed = metrics.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Builds a command from the current image, checks it, commits it and
    /// returns its outcome. Called on the leader.
    pub(crate) async fn propose(
        &self,
        build: impl FnOnce(&Image) -> Result<Command, MetaError>,
    ) -> Result<(Version, Outcome), MetaError> {
        let command = self.state.read(|state| build(&state.image));
        let command = command.inspect_err(|error| self.count_refused(error))?;
        if let Err(refusal) = self.state.read(|state| state.image.check(&command)) {
            // This leader may not have applied everything committed yet (it
            // was just elected, or the sender saw the image of a controller
            // that is ahead of it): catch up, then decide. If it cannot
            // catch up in time, the refusal stands (the sender retries).
            let decided = match self.catch_up().await {
                true => self.state.read(|state| state.image.check(&command)),
                false => Err(refusal),
            };
            decided.inspect_err(|error| self.count_refused(error))?;
        }
        // A command that does not decode back to itself would be a poison entry:
        // every controller would stop when it applied or replayed it. Refuse it here.
        let decodes =
            serde_json::to_vec(&command).ok().and_then(|bytes| serde_json::from_slice::<Command>(&bytes).ok());
        if decodes.as_ref() != Some(&command) {
            tracing::error!(?command, "refusing a command that does not survive its own encoding");
            return Err(MetaError::Internal { reason: "the command does not survive its encoding".into() });
        }
        let started = Instant::now();
        let response = self.raft.client_write(command).await.map_err(|e| self.client_write_error(e))?;
        self.metrics.commit_latency.observe(started.elapsed().as_secs_f64());
        match response.data.result {
            Some(Ok(outcome)) => Ok((response.data.version, outcome)),
            Some(Err(error)) => {
                self.count_refused(&error);
                Err(error)
            }
            None => Err(MetaError::Internal { reason: "a command entry produced no result".into() }),
        }
    }

    /// Waits until this controller, still the leader, has applied every
    /// entry committed before the call; false if it could not within an
    /// election timeout.
    async fn catch_up(&self) -> bool {
        let caught_up = tokio::time::timeout(self.config.election_timeout_max, self.raft.ensure_linearizable()).await;
        matches!(caught_up, Ok(Ok(_)))
    }

    /// Maps a failed Raft write to a metadata error; a fatal Raft error stops this controller.
    pub(crate) fn client_write_error(
        &self,
        error: RaftError<RaftId, ClientWriteError<RaftId, ControllerNode>>,
    ) -> MetaError {
        match error {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => MetaError::NoLeader,
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                MetaError::MembershipRefused { reason: e.to_string() }
            }
            RaftError::Fatal(fatal) => {
                tracing::error!(error = %fatal, "raft stopped; shutting this controller down");
                self.cancel.cancel();
                MetaError::Internal { reason: format!("raft stopped: {fatal}") }
            }
        }
    }

    fn count_refused(&self, error: &MetaError) {
        let reason = match error.grpc_code() {
            tonic::Code::AlreadyExists => "already_exists",
            tonic::Code::InvalidArgument => "invalid",
            tonic::Code::NotFound => "not_found",
            tonic::Code::FailedPrecondition => "precondition",
            tonic::Code::Unavailable => "no_leader",
            _ => "internal",
        };
        self.metrics.writes_refused.with_label_values(&[reason]).inc();
    }

    /// Fences node `id` of `kind` at `epoch` (if that is still its active
    /// registration), saying `why` in the log. A broker fenced while it led
    /// partitions starts a failover, timed until they all have new leaders.
    /// Returns whether it was fenced now.
    pub(crate) async fn fence(&self, kind: NodeKind, id: NodeId, epoch: Epoch, why: &str) -> bool {
        let leads = kind == NodeKind::Broker && self.state.read(|state| state.image.led_by(id).next().is_some());
        let fenced_at = Instant::now();
        match self.propose(|_| Ok(Command::FenceNode { kind, id, epoch })).await {
            Ok((_, outcome)) => {
                self.sessions.lock().expect("sessions lock poisoned").on_fenced(kind, id, epoch);
                let applied = matches!(outcome, Outcome::Fenced { applied: true });
                if applied {
                    if leads {
                        self.failing_over.lock().expect("failovers lock poisoned").insert(id, fenced_at);
                    }
                    tracing::info!(%kind, node = %id, %epoch, "{why}; node fenced");
                }
                applied
            }
            Err(error) => {
                tracing::warn!(%kind, node = %id, %epoch, "failed to fence a node ({why}): {error}");
                false
            }
        }
    }

    /// Keeps the session deadlines while this controller leads and fences the
    /// nodes whose sessions expire. Runs until cancelled; cancellation-safe.
    pub(crate) async fn run_session_expiry(self: Arc<Self>, tick: Duration) {
        let mut led_term = None;
        let mut balanced_at = Instant::now();
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let (state, term) = {
                let metrics = self.raft.metrics();
                let metrics = metrics.borrow();
                (metrics.state, metrics.current_term)
            };
            self.update_raft_gauges();
            // A leader out of touch with its quorum may be deposed already:
            // it refuses renewals (`leads_with_quorum`), so it must not expire
            // sessions either, and once back in touch it gives every session
            // a full timeout, as a newly elected leader does.
            if state != ServerState::Leader || !self.leads_with_quorum() {
                if led_term.take().is_some() {
                    self.sessions.lock().expect("sessions lock poisoned").clear();
                    self.failing_over.lock().expect("failovers lock poisoned").clear();
                }
                continue;
            }
            let now = Instant::now();
            let expired = {
                let mut sessions = self.sessions.lock().expect("sessions lock poisoned");
                if led_term != Some(term) {
                    tracing::info!(
                        term,
                        "leading with a quorum (elected, or back in touch with it); every session gets a full timeout"
                    );
                    sessions.clear();
                    led_term = Some(term);
                }
                self.state.read(|state| sessions.sync(&state.image, now));
                sessions.expired(now)
            };
            for (kind, id, epoch) in expired {
                if self.fence(kind, id, epoch, "session expired").await {
                    self.metrics.sessions_expired.inc();
                }
            }
            // Partitions without a leader (created while no broker was live, or
            // released by a fenced or restarted broker) get one as soon as one
            // is live and the previous leader's logs are sealed and uploaded.
            for command in self.state.read(|state| state.image.leaderless_assignments()) {
                let Command::AssignLeader { topic, partition, leader, leader_epoch } = &command else { continue };
                let (topic, partition, leader, leader_epoch) = (*topic, *partition, *leader, *leader_epoch);
                match self.propose(|_| Ok(command)).await {
                    Ok(_) => {
                        self.metrics.leaders_assigned.inc();
                        tracing::info!(%topic, partition, %leader, %leader_epoch, "partition leader assigned")
                    }
                    // The image moved since the assignment was chosen (the broker
                    // left, the previous leader restarted): the next tick chooses again.
                    Err(error @ (MetaError::InvalidRequest { .. } | MetaError::Fenced { .. })) => {
                        tracing::debug!(%topic, partition, %leader, "leader assignment overtaken: {error}")
                    }
                    Err(error) => tracing::warn!(%topic, partition, %leader, "failed to assign a leader: {error}"),
                }
            }
            self.failing_over.lock().expect("failovers lock poisoned").retain(|broker, fenced_at| {
                let waiting = self.state.read(|state| {
                    state
                        .image
                        .topics
                        .values()
                        .flat_map(|t| &t.partitions)
                        .any(|p| p.leader.is_none() && p.previous_leader == Some(*broker))
                });
                if !waiting {
                    self.metrics.failovers.inc();
                    self.metrics.failover_seconds.observe(fenced_at.elapsed().as_secs_f64());
                    tracing::info!(%broker, seconds = fenced_at.elapsed().as_secs_f64(), "failover done: every partition of the fenced broker has a new leader");
                }
                waiting
            });
            if balanced_at.elapsed() >= BALANCE_EVERY {
                balanced_at = Instant::now();
                self.balance().await;
            }
        }
    }

    /// One balancer round: ask for the moves that even out measured load.
    async fn balance(&self) {
        let weights: std::collections::HashMap<_, f64> = {
            let mut loads = self.loads.lock().expect("loads lock poisoned");
            loads.retain(|_, load| load.at.elapsed() < LOAD_REPORT_TTL);
            loads.iter().map(|(stream, load)| (*stream, load.bytes_in + load.bytes_out)).collect()
        };
        let moves = self.state.read(|state| crate::balancer::moves(&state.image, &weights, MOVES_PER_ROUND));
        for command in moves {
            let Command::MovePartition { topic, partition, to, .. } = &command else { continue };
            let (topic, partition, to) = (*topic, *partition, *to);
            match self.propose(|_| Ok(command)).await {
                Ok(_) => {
                    self.metrics.partition_moves.inc();
                    tracing::info!(%topic, partition, %to, "balancer: moving a partition");
                }
                Err(error) => tracing::debug!(%topic, partition, %to, "balancer move overtaken: {error}"),
            }
        }
    }

    fn update_raft_gauges(&self) {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        self.metrics.term.set(metrics.current_term as i64);
        self.metrics.is_leader.set(i64::from(metrics.state == ServerState::Leader));
        self.metrics.applied_index.set(metrics.last_applied.map_or(0, |log_id| log_id.index) as i64);
        let purged = metrics.purged.map_or(0, |log_id| log_id.index);
        self.metrics.log_entries.set(metrics.last_log_index.unwrap_or(0).saturating_sub(purged) as i64);
        let (objects, bytes) = self
            .state
            .read(|state| (state.image.objects.len(), state.image.objects.values().map(|o| o.size).sum::<u64>()));
        self.metrics.objects.set(objects as i64);
        self.metrics.object_bytes.set(bytes as i64);
    }
}

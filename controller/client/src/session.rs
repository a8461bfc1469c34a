//! Keeps a broker's or WAL node's registration alive: registers, heartbeats,
//! and registers again (with a new epoch) after being fenced.
//!
//! The lease is measured on this process's own monotonic clock from the moment
//! a heartbeat was *sent*: if the controller answered, it had renewed the
//! session at some time after that send, so the session cannot expire at the
//! controller before `send + session_timeout`. The holder stops acting at
//! `send + session_timeout - margin`. No clock is compared across machines.
//!
//! Each heartbeat attempt has a deadline well under the session, so a silent
//! controller costs one short attempt before the next is tried. A node that
//! has heard nothing at all from any controller for a whole session (not
//! even a refusal) registers again: by then the controller has either
//! expired it, or hears it without being heard (its replies are lost), in
//! which case only a new registration lets its partitions move to brokers
//! that can be reached.
//!
//! While registered, the node also holds an attach stream open to the
//! controller leader: when the process dies its connection closes at once,
//! and the leader fences it after a failed probe of its address rather than
//! after the whole session.

use std::sync::Arc;
use std::time::Duration;

use keel_proto::controller as pb;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::{ClientError, Deadlines, MetadataClient};
use crate::error::MetaError;
use crate::ids::{Epoch, NodeId, NodeKind};

/// An attach stream that sends nothing for this long is broken: the leader
/// sends every 200 ms.
const ATTACH_SILENCE: Duration = Duration::from_secs(1);

/// What a node tells the controller when it registers.
#[derive(Clone, Debug)]
pub struct Registration {
    pub kind: NodeKind,
    pub id: NodeId,
    pub zone: String,
    pub internal_addr: String,
    pub kafka_listeners: Vec<String>,
    pub incarnation: String,
}

/// The current registration, as far as this process knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionState {
    pub epoch: Epoch,
    /// Until when this process may act under `epoch`.
    pub lease_until: Instant,
}

impl SessionState {
    /// Whether the lease still holds now.
    pub fn is_live(&self) -> bool {
        Instant::now() < self.lease_until
    }
}

/// Asks a node's `SessionKeeper` to give up its registration and register
/// again under a new epoch: the node found it cannot act under the current
/// one (its WAL writer died, say), and a new epoch makes the controller
/// hand what it held to recovery, as for a restarted node.
#[derive(Clone, Debug, Default)]
pub struct Renewal(Arc<Notify>);

impl Renewal {
    pub fn register_again(&self) {
        self.0.notify_one();
    }
}

/// Runs one node's session against the controller quorum.
#[derive(Debug)]
pub struct SessionKeeper {
    client: Arc<MetadataClient>,
    registration: Registration,
    heartbeat_interval: Duration,
    /// Safety margin subtracted from the session timeout for the local lease.
    lease_margin: Duration,
    state: watch::Sender<Option<SessionState>>,
    renewal: Renewal,
}

impl SessionKeeper {
    pub fn new(
        client: Arc<MetadataClient>,
        registration: Registration,
        heartbeat_interval: Duration,
        lease_margin: Duration,
    ) -> (SessionKeeper, watch::Receiver<Option<SessionState>>) {
        let (state, receiver) = watch::channel(None);
        let renewal = Renewal::default();
        (SessionKeeper { client, registration, heartbeat_interval, lease_margin, state, renewal }, receiver)
    }

    /// A handle that makes this keeper register again.
    pub fn renewal(&self) -> Renewal {
        self.renewal.clone()
    }

    /// Registers and heartbeats until `cancel` fires. Cancellation-safe: it only
    /// sends requests and updates the watch channel.
    pub async fn run(self, cancel: CancellationToken) {
        while !cancel.is_cancelled() {
            let Some((epoch, session_timeout)) = self.register(&cancel).await else { return };
            tracing::info!(kind = %self.registration.kind, node = %self.registration.id, %epoch, "registered");
            tokio::select! {
                _ = self.heartbeat_until_lost(epoch, session_timeout, &cancel) => {}
                _ = self.stay_attached(epoch, &cancel) => {}
            }
            self.state.send_replace(None);
        }
    }

    async fn register(&self, cancel: &CancellationToken) -> Option<(Epoch, Duration)> {
        let r = &self.registration;
        let request = pb::RegisterNodeRequest {
            kind: kind_to_pb(r.kind) as i32,
            node_id: r.id.0,
            zone: r.zone.clone(),
            internal_addr: r.internal_addr.clone(),
            kafka_listeners: r.kafka_listeners.clone(),
            incarnation: r.incarnation.clone(),
        };
        loop {
            let sent = Instant::now();
            let deadlines = Deadlines { attempt: self.attempt_timeout(), call: self.client.deadlines().call };
            let call = self.client.call_within(deadlines, |mut c| {
                let request = request.clone();
                async move { c.register_node(request).await }
            });
            let result = tokio::select! {
                _ = cancel.cancelled() => return None,
                result = call => result,
            };
            match result {
                Ok((_, reply)) => {
                    let session_timeout = Duration::from_millis(reply.session_timeout_ms);
                    let epoch = Epoch(reply.epoch);
                    self.state.send_replace(Some(SessionState {
                        epoch,
                        lease_until: self.lease_from(sent, session_timeout),
                    }));
                    return Some((epoch, session_timeout));
                }
                Err(error) => tracing::warn!(node = %r.id, "failed to register: {error:#}"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(self.heartbeat_interval) => {}
            }
        }
    }

    async fn heartbeat_until_lost(&self, epoch: Epoch, mut session_timeout: Duration, cancel: &CancellationToken) {
        let r = &self.registration;
        let request = pb::HeartbeatRequest { kind: kind_to_pb(r.kind) as i32, node_id: r.id.0, epoch: epoch.0 };
        let mut ticker = tokio::time::interval(self.heartbeat_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The send time of the last heartbeat some controller answered, if
        // only to refuse it (or of the registration), and how many were sent
        // since without any answer. Both count: a process that was paused
        // (SIGSTOP) has an old `answered` but sent nothing meanwhile.
        let mut answered = Instant::now();
        let mut unheard = 0;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
                _ = self.renewal.0.notified() => {
                    tracing::warn!(node = %r.id, %epoch, "giving up the registration; registering again");
                    return;
                }
            }
            if answered.elapsed() >= session_timeout && unheard > 0 {
                tracing::warn!(node = %r.id, %epoch, "no controller answered a heartbeat for a whole session; registering again");
                return;
            }
            let sent = Instant::now();
            let deadlines = Deadlines { attempt: self.attempt_timeout(), call: session_timeout };
            let call = self.client.call_within(deadlines, |mut c| async move { c.heartbeat(request).await });
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                result = tokio::time::timeout(session_timeout, call) => result,
            };
            match result {
                Ok(Ok((_, reply))) => {
                    session_timeout = Duration::from_millis(reply.session_timeout_ms);
                    (answered, unheard) = (sent, 0);
                    self.state.send_replace(Some(SessionState {
                        epoch,
                        lease_until: self.lease_from(sent, session_timeout),
                    }));
                }
                Ok(Err(ClientError::Meta(
                    error @ (MetaError::Fenced { .. } | MetaError::StaleEpoch { .. } | MetaError::UnknownNode { .. }),
                ))) => {
                    tracing::warn!(node = %r.id, %epoch, "session lost, registering again: {error}");
                    return;
                }
                Ok(Err(error)) => {
                    if matches!(error, ClientError::Meta(_) | ClientError::Unavailable { heard: true, .. }) {
                        (answered, unheard) = (sent, 0);
                    } else {
                        unheard += 1;
                    }
                    self.heartbeat_failed(&format!("failed to heartbeat: {error:#}"));
                }
                Err(_) => {
                    unheard += 1;
                    self.heartbeat_failed("heartbeat timed out");
                }
            }
        }
    }

    /// A failed heartbeat is a warning once the lease has run out (this node
    /// stops acting then); before that, while a controller election or a
    /// slow moment passes, it is routine.
    fn heartbeat_failed(&self, what: &str) {
        let node = self.registration.id;
        if self.state.borrow().is_some_and(|state| state.is_live()) {
            tracing::info!(%node, "{what}; the lease still holds");
        } else {
            tracing::warn!(%node, "{what}; the lease has run out: not acting until a heartbeat is answered");
        }
    }

    /// Keeps an attach stream open to the controller leader while registered
    /// at `epoch`, so that the leader learns of this process's death from its
    /// connection closing, not only from its session running out. Returns
    /// only when cancelled.
    async fn stay_attached(&self, epoch: Epoch, cancel: &CancellationToken) {
        let r = &self.registration;
        let request = pb::AttachRequest { kind: kind_to_pb(r.kind) as i32, node_id: r.id.0, epoch: epoch.0 };
        let deadlines = Deadlines { attempt: self.attempt_timeout(), call: self.client.deadlines().call };
        loop {
            let attached = self.client.call_within(deadlines, |mut c| async move { c.attach(request).await });
            let attached = tokio::select! {
                _ = cancel.cancelled() => return,
                attached = attached => attached,
            };
            if let Ok((_, mut stream)) = attached {
                loop {
                    let event = tokio::select! {
                        _ = cancel.cancelled() => return,
                        event = tokio::time::timeout(ATTACH_SILENCE, stream.message()) => event,
                    };
                    // Ended (the leader changed), broken, or silent: attach again.
                    if !matches!(event, Ok(Ok(Some(_)))) {
                        break;
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.heartbeat_interval) => {}
            }
        }
    }

    /// How long one heartbeat or registration attempt may take before the
    /// next controller is tried: two heartbeat intervals, so that a silent
    /// controller costs a fraction of the session.
    fn attempt_timeout(&self) -> Duration {
        self.heartbeat_interval * 2
    }

    fn lease_from(&self, sent: Instant, session_timeout: Duration) -> Instant {
        sent + session_timeout.saturating_sub(self.lease_margin)
    }
}

/// The protobuf form of a node kind.
pub fn kind_to_pb(kind: NodeKind) -> pb::NodeKind {
    match kind {
        NodeKind::Broker => pb::NodeKind::Broker,
        NodeKind::Wal => pb::NodeKind::Wal,
    }
}

/// The node kind of a protobuf value, refusing unknown values.
pub fn kind_from_pb(value: i32) -> Result<NodeKind, MetaError> {
    match pb::NodeKind::try_from(value) {
        Ok(pb::NodeKind::Broker) => Ok(NodeKind::Broker),
        Ok(pb::NodeKind::Wal) => Ok(NodeKind::Wal),
        _ => Err(MetaError::InvalidRequest { reason: format!("unknown node kind {value}") }),
    }
}

//! Session deadlines of registered brokers and WAL nodes, kept by the
//! controller leader on its own monotonic clock (DESIGN §2).
//!
//! This is the I/O-free core: it is told about elections, registrations,
//! heartbeats and fences, and answers which sessions have expired. Heartbeats
//! are not Raft commands; only the resulting `FenceNode` is committed. A new
//! leader restarts every active node's deadline when it is elected, so a
//! controller failover never expires everyone at once. The leader calls
//! `sync` on every tick, so a registration it applied without handling it
//! itself (one committed just before an election) still gets a deadline.

use std::collections::HashMap;
use std::time::Duration;

use keel_controller_client::{Epoch, Image, NodeId, NodeKind, NodeState};
use tokio::time::Instant;

/// Deadlines of the active sessions.
#[derive(Debug)]
pub(crate) struct Sessions {
    timeout: Duration,
    deadlines: HashMap<(NodeKind, NodeId), (Epoch, Instant)>,
}

impl Sessions {
    pub(crate) fn new(timeout: Duration) -> Sessions {
        Sessions { timeout, deadlines: HashMap::new() }
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Forgets every deadline: this controller is not (or no longer) the
    /// leader, or it was just elected and `sync` will grant full timeouts.
    pub(crate) fn clear(&mut self) {
        self.deadlines.clear();
    }

    /// Brings the tracked sessions in line with the image: an active node
    /// without a deadline at its current epoch gets a full timeout from `now`;
    /// fenced, re-registered or unknown entries are dropped.
    pub(crate) fn sync(&mut self, image: &Image, now: Instant) {
        self.deadlines.retain(|(kind, id), (epoch, _)| {
            image.nodes(*kind).get(id).is_some_and(|node| node.epoch == *epoch && node.state == NodeState::Active)
        });
        for node in image.brokers.values().chain(image.wal_nodes.values()) {
            if node.state == NodeState::Active {
                self.deadlines.entry((node.kind, node.id)).or_insert((node.epoch, now + self.timeout));
            }
        }
    }

    /// A node registered at `epoch`: its session runs a full timeout from `now`.
    pub(crate) fn on_registered(&mut self, kind: NodeKind, id: NodeId, epoch: Epoch, now: Instant) {
        self.deadlines.insert((kind, id), (epoch, now + self.timeout));
    }

    /// A heartbeat from a node the image holds active at `epoch`. Renews the
    /// session and returns true, or returns false when the session already
    /// expired: the node is about to be fenced and must not be revived.
    pub(crate) fn on_heartbeat(&mut self, kind: NodeKind, id: NodeId, epoch: Epoch, now: Instant) -> bool {
        match self.deadlines.get_mut(&(kind, id)) {
            Some((tracked, deadline)) if *tracked == epoch => {
                if *deadline <= now {
                    return false;
                }
                *deadline = now + self.timeout;
                true
            }
            _ => {
                self.deadlines.insert((kind, id), (epoch, now + self.timeout));
                true
            }
        }
    }

    /// Sessions whose deadline has passed, with the epoch to fence.
    pub(crate) fn expired(&self, now: Instant) -> Vec<(NodeKind, NodeId, Epoch)> {
        let mut expired: Vec<_> = self
            .deadlines
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|((kind, id), (epoch, _))| (*kind, *id, *epoch))
            .collect();
        expired.sort();
        expired
    }

    /// The fence of a node at `epoch` committed (or was moot): forget that
    /// session, unless the node has since registered with a newer epoch.
    pub(crate) fn on_fenced(&mut self, kind: NodeKind, id: NodeId, epoch: Epoch) {
        if self.deadlines.get(&(kind, id)).is_some_and(|(current, _)| *current == epoch) {
            self.deadlines.remove(&(kind, id));
        }
    }

    /// Time left on a node's session, if this leader tracks one.
    pub(crate) fn remaining(&self, kind: NodeKind, id: NodeId, now: Instant) -> Option<Duration> {
        self.deadlines.get(&(kind, id)).map(|(_, deadline)| deadline.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use keel_controller_client::{Command, Version};

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(2);

    fn image_with_two_brokers() -> Image {
        let mut image = Image::default();
        for (version, id) in [(1, 1), (2, 2)] {
            let command = Command::RegisterNode {
                kind: NodeKind::Broker,
                id: NodeId(id),
                zone: "a".into(),
                internal_addr: "x:1".into(),
                kafka_listeners: vec![],
                incarnation: "i".into(),
            };
            image.apply(Version(version), &command).unwrap();
        }
        image
    }

    #[test]
    fn a_session_expires_only_after_a_full_timeout_without_heartbeats() {
        let start = Instant::now();
        let mut sessions = Sessions::new(TIMEOUT);
        sessions.on_registered(NodeKind::Broker, NodeId(1), Epoch(1), start);
        assert!(sessions.expired(start + TIMEOUT - Duration::from_millis(1)).is_empty());
        assert!(sessions.on_heartbeat(NodeKind::Broker, NodeId(1), Epoch(1), start + Duration::from_secs(1)));
        assert!(sessions.expired(start + TIMEOUT).is_empty());
        assert_eq!(sessions.expired(start + Duration::from_secs(3)), vec![(NodeKind::Broker, NodeId(1), Epoch(1))]);
    }

    #[test]
    fn a_heartbeat_after_the_deadline_does_not_revive_the_session() {
        let start = Instant::now();
        let mut sessions = Sessions::new(TIMEOUT);
        sessions.on_registered(NodeKind::Broker, NodeId(1), Epoch(1), start);
        assert!(!sessions.on_heartbeat(NodeKind::Broker, NodeId(1), Epoch(1), start + TIMEOUT));
        assert_eq!(sessions.expired(start + TIMEOUT).len(), 1);
    }

    #[test]
    fn a_new_leader_gives_every_active_node_a_full_timeout() {
        let image = image_with_two_brokers();
        let mut sessions = Sessions::new(TIMEOUT);
        sessions.on_registered(NodeKind::Broker, NodeId(1), Epoch(1), Instant::now());
        let elected_at = Instant::now() + Duration::from_secs(100);
        sessions.clear();
        sessions.sync(&image, elected_at);
        assert!(sessions.expired(elected_at + TIMEOUT - Duration::from_millis(1)).is_empty());
        assert_eq!(sessions.expired(elected_at + TIMEOUT).len(), 2);
    }

    #[test]
    fn sync_drops_sessions_of_fenced_nodes() {
        let mut image = image_with_two_brokers();
        let now = Instant::now();
        let mut sessions = Sessions::new(TIMEOUT);
        sessions.sync(&image, now);
        image
            .apply(Version(3), &Command::FenceNode { kind: NodeKind::Broker, id: NodeId(1), epoch: Epoch(1) })
            .unwrap();
        sessions.sync(&image, now);
        assert_eq!(sessions.remaining(NodeKind::Broker, NodeId(1), now), None);
        assert_eq!(sessions.remaining(NodeKind::Broker, NodeId(2), now), Some(TIMEOUT));
    }

    #[test]
    fn a_late_fence_does_not_forget_a_newer_registration() {
        let now = Instant::now();
        let mut sessions = Sessions::new(TIMEOUT);
        sessions.on_registered(NodeKind::Wal, NodeId(1), Epoch(7), now);
        sessions.on_fenced(NodeKind::Wal, NodeId(1), Epoch(3));
        assert_eq!(sessions.remaining(NodeKind::Wal, NodeId(1), now), Some(TIMEOUT));
        sessions.on_fenced(NodeKind::Wal, NodeId(1), Epoch(7));
        assert_eq!(sessions.remaining(NodeKind::Wal, NodeId(1), now), None);
    }
}

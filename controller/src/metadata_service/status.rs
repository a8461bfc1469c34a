//! Operator views of the quorum: the leader's cluster status and each
//! controller's own Raft state.

use keel_controller_client::{kind_to_pb, pb, NodeRecord, NodeState};
use openraft::{RaftMetrics, ServerState};
use tokio::time::Instant;

use crate::controller::Controller;
use crate::raft_types::{ControllerNode, RaftId};

/// The members of the current membership config, voters first.
pub(super) fn controllers(metrics: &RaftMetrics<RaftId, ControllerNode>) -> Vec<pb::ControllerInfo> {
    let membership = metrics.membership_config.membership();
    let voters: Vec<RaftId> = membership.voter_ids().collect();
    let mut controllers: Vec<pb::ControllerInfo> = membership
        .nodes()
        .map(|(raft_id, node)| pb::ControllerInfo {
            controller_id: node.controller_id.0,
            raft_id: *raft_id,
            addr: node.addr.clone(),
            voter: voters.contains(raft_id),
            matched_index: metrics
                .replication
                .as_ref()
                .and_then(|replication| replication.get(raft_id).copied().flatten())
                .map(|log_id| log_id.index),
        })
        .collect();
    controllers.sort_by_key(|controller| (!controller.voter, controller.controller_id, controller.raft_id));
    controllers
}

pub(super) fn cluster_status(controller: &Controller) -> pb::ClusterStatusReply {
    let metrics = controller.raft.metrics().borrow().clone();
    let now = Instant::now();
    let sessions = controller.sessions.lock().expect("sessions lock poisoned");
    let loads = controller.loads.lock().expect("loads lock poisoned").clone();
    let (version, topic_count, nodes) = controller.state.read(|state| {
        let image = &state.image;
        // Per broker: partitions led, bytes/s in and out (latest reports).
        let mut led: std::collections::HashMap<_, (u32, f64, f64)> = std::collections::HashMap::new();
        for partition in image.topics.values().flat_map(|topic| &topic.partitions) {
            let Some(leader) = partition.leader else { continue };
            let entry = led.entry(leader).or_default();
            entry.0 += 1;
            if let Some(load) = loads.get(&partition.stream_id) {
                entry.1 += load.bytes_in;
                entry.2 += load.bytes_out;
            }
        }
        let nodes: Vec<pb::NodeInfo> = image
            .brokers
            .values()
            .chain(image.wal_nodes.values())
            .map(|node: &NodeRecord| {
                let (partitions_led, bytes_in_per_sec, bytes_out_per_sec) = match node.kind {
                    keel_controller_client::NodeKind::Broker => led.get(&node.id).copied().unwrap_or_default(),
                    keel_controller_client::NodeKind::Wal => (0, 0.0, 0.0),
                };
                pb::NodeInfo {
                    kind: kind_to_pb(node.kind) as i32,
                    node_id: node.id.0,
                    zone: node.zone.clone(),
                    internal_addr: node.internal_addr.clone(),
                    epoch: node.epoch.0,
                    state: match node.state {
                        NodeState::Active if node.draining => "draining".into(),
                        NodeState::Active => "active".into(),
                        NodeState::Fenced => "fenced".into(),
                    },
                    lease_remaining_ms: sessions.remaining(node.kind, node.id, now).map(|left| left.as_millis() as u64),
                    partitions_led,
                    bytes_in_per_sec,
                    bytes_out_per_sec,
                }
            })
            .collect();
        (image.version, image.topics.len() as u32, nodes)
    });
    pb::ClusterStatusReply {
        cluster_id: controller.identity.cluster_id.clone(),
        leader_controller_id: controller.config.node_id.0,
        term: metrics.current_term,
        version: version.0,
        controllers: controllers(&metrics),
        nodes,
        topic_count,
    }
}

pub(super) fn node_status(controller: &Controller) -> pb::NodeStatusReply {
    let metrics = controller.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let role = match metrics.state {
        ServerState::Leader => "leader",
        ServerState::Candidate => "candidate",
        ServerState::Follower if membership.voter_ids().any(|id| id == controller.identity.raft_id) => "follower",
        ServerState::Follower | ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    };
    let leader_controller_id =
        metrics.current_leader.and_then(|leader| membership.get_node(&leader)).map(|node| node.controller_id.0);
    let purged = metrics.purged.map(|log_id| log_id.index);
    pb::NodeStatusReply {
        controller_id: controller.identity.controller_id,
        raft_id: controller.identity.raft_id,
        cluster_id: controller.identity.cluster_id.clone(),
        role: role.into(),
        term: metrics.current_term,
        leader_controller_id,
        last_log_index: metrics.last_log_index,
        last_applied_index: metrics.last_applied.map(|log_id| log_id.index),
        snapshot_index: metrics.snapshot.map(|log_id| log_id.index),
        purged_index: purged,
        log_entry_count: metrics.last_log_index.unwrap_or(0).saturating_sub(purged.unwrap_or(0)),
        membership: controllers(&metrics),
    }
}

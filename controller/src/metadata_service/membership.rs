//! Controller membership changes: a fresh controller joins as a learner by
//! itself; only an operator's explicit promotion makes it a voter (DESIGN §5:
//! an empty voter could elect a stale leader).

use std::collections::BTreeSet;

use keel_controller_client::{pb, ControllerId, MetaError};
use openraft::ChangeMembers;

use super::status::controllers;
use crate::controller::Controller;
use crate::raft_types::{ControllerNode, RaftId};

fn membership_reply(controller: &Controller) -> pb::MembershipReply {
    pb::MembershipReply { controllers: controllers(&controller.raft.metrics().borrow()) }
}

fn current_membership(controller: &Controller) -> Result<openraft::Membership<RaftId, ControllerNode>, MetaError> {
    let metrics = controller.raft.metrics();
    let membership = metrics.borrow().membership_config.membership().clone();
    if membership.get_joint_config().len() > 1 {
        return Err(MetaError::MembershipRefused { reason: "a membership change is still in progress; retry".into() });
    }
    Ok(membership)
}

fn ids_of(membership: &openraft::Membership<RaftId, ControllerNode>, target: ControllerId) -> Vec<RaftId> {
    membership.nodes().filter(|(_, node)| node.controller_id == target).map(|(raft_id, _)| *raft_id).collect()
}

pub(super) async fn join_as_learner(
    controller: &Controller,
    request: pb::JoinAsLearnerRequest,
) -> Result<pb::MembershipReply, MetaError> {
    if request.addr.is_empty() || request.raft_id == 0 {
        return Err(MetaError::InvalidRequest { reason: "a joining controller gives its raft id and address".into() });
    }
    let membership = current_membership(controller)?;
    if membership.get_node(&request.raft_id).is_some() {
        return Ok(membership_reply(controller));
    }
    let node = ControllerNode { controller_id: ControllerId(request.controller_id), addr: request.addr };
    tracing::info!(controller = %node.controller_id, raft_id = %crate::raft_service::raft_id_hex(request.raft_id), addr = %node.addr, "adding controller as learner");
    controller.raft.add_learner(request.raft_id, node, false).await.map_err(|e| controller.client_write_error(e))?;
    Ok(membership_reply(controller))
}

pub(super) async fn promote(
    controller: &Controller,
    request: pb::ControllerRequest,
) -> Result<pb::MembershipReply, MetaError> {
    let target = ControllerId(request.controller_id);
    let membership = current_membership(controller)?;
    let ids = ids_of(&membership, target);
    let voters: BTreeSet<RaftId> = membership.voter_ids().collect();
    let learners: Vec<RaftId> = ids.iter().copied().filter(|id| !voters.contains(id)).collect();
    let learner = match learners.as_slice() {
        [learner] => *learner,
        [] if ids.is_empty() => return Err(MetaError::UnknownController { controller: target }),
        [] => return Err(MetaError::MembershipRefused { reason: format!("controller {target} is already a voter") }),
        _ => {
            return Err(MetaError::MembershipRefused {
                reason: format!("controller {target} has several learners; remove it and let it join again"),
            })
        }
    };
    // The learner replaces every former incarnation of the same controller.
    let mut new_voters: BTreeSet<RaftId> = voters.into_iter().filter(|id| !ids.contains(id)).collect();
    new_voters.insert(learner);
    tracing::info!(controller = %target, raft_id = %crate::raft_service::raft_id_hex(learner), "promoting learner to voter");
    controller
        .raft
        .change_membership(ChangeMembers::ReplaceAllVoters(new_voters), false)
        .await
        .map_err(|e| controller.client_write_error(e))?;
    Ok(membership_reply(controller))
}

pub(super) async fn remove(
    controller: &Controller,
    request: pb::ControllerRequest,
) -> Result<pb::MembershipReply, MetaError> {
    let target = ControllerId(request.controller_id);
    let membership = current_membership(controller)?;
    let ids = ids_of(&membership, target);
    if ids.is_empty() {
        return Err(MetaError::UnknownController { controller: target });
    }
    let voters: BTreeSet<RaftId> = membership.voter_ids().collect();
    let remaining: BTreeSet<RaftId> = voters.iter().copied().filter(|id| !ids.contains(id)).collect();
    if remaining.is_empty() {
        return Err(MetaError::MembershipRefused { reason: "removing it would leave no voter".into() });
    }
    tracing::info!(controller = %target, "removing controller from the quorum");
    if remaining.len() != voters.len() {
        controller
            .raft
            .change_membership(ChangeMembers::ReplaceAllVoters(remaining), false)
            .await
            .map_err(|e| controller.client_write_error(e))?;
    }
    let learners: BTreeSet<RaftId> = ids.into_iter().filter(|id| !voters.contains(id)).collect();
    if !learners.is_empty() {
        controller
            .raft
            .change_membership(ChangeMembers::RemoveNodes(learners), false)
            .await
            .map_err(|e| controller.client_write_error(e))?;
    }
    Ok(membership_reply(controller))
}

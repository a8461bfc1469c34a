//! The classic group protocol at the coordinator: JoinGroup, SyncGroup,
//! Heartbeat and LeaveGroup. A join or sync the group cannot answer yet is
//! parked until the group moves on (the rebalance completes, the leader's
//! assignment is written); the group's record is written before a
//! rebalance's assignment is handed out.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use keel_broker_core::groups::classic::{self, Answer, Join, JoinAnswer, Reply, SyncAnswer};
use keel_broker_core::groups::Kind;

use super::{classic_of, Groups};

/// A SyncGroup, as the coordinator sees it.
#[derive(Debug)]
pub struct Sync {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    /// The protocol type and name the member believes in (v5+).
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// From the leader: each member's assignment.
    pub assignments: Vec<(String, Bytes)>,
}

impl Groups {
    /// A JoinGroup: answered now, or once the rebalance completes.
    pub async fn join(self: &Arc<Self>, group_id: &str, join: Join) -> JoinAnswer {
        if !(classic::MIN_SESSION_TIMEOUT..=classic::MAX_SESSION_TIMEOUT).contains(&join.session_timeout) {
            return JoinAnswer { error: Some(ResponseError::InvalidSessionTimeout), ..Default::default() };
        }
        let waiting = {
            let mut locked = match self.lock(group_id) {
                Ok(locked) => locked,
                Err(error) => return JoinAnswer { error: Some(error), ..Default::default() },
            };
            let shard = locked.state();
            let group = classic_of(shard.group_or_new(group_id, &self.settings), group_id, &self.settings);
            let waiting = match group.map(|group| group.join(join, Instant::now())) {
                Err(error) => Err(JoinAnswer { error: Some(error), ..Default::default() }),
                Ok(Reply::Now(answer)) => Err(answer),
                Ok(Reply::Parked { member }) => Ok(shard.park(group_id, &member, true)),
            };
            shard.deliver(group_id);
            self.persist_dirty(&mut locked);
            waiting
        };
        match waiting {
            Err(answer) => answer,
            Ok(waiting) => match waiting.await {
                Ok(Answer::Join(answer)) => answer,
                Ok(Answer::Sync(_)) | Err(_) => {
                    JoinAnswer { error: Some(ResponseError::NotCoordinator), ..Default::default() }
                }
            },
        }
    }

    /// A SyncGroup: answered now, or once the leader's assignment is written.
    pub async fn sync(self: &Arc<Self>, group_id: &str, sync: Sync) -> SyncAnswer {
        let waiting = {
            let mut locked = match self.lock(group_id) {
                Ok(locked) => locked,
                Err(error) => return SyncAnswer { error: Some(error), ..Default::default() },
            };
            let shard = locked.state();
            let reply = match shard.groups.get_mut(group_id).map(|g| &mut g.kind) {
                Some(Kind::Classic(group)) => {
                    let inconsistent = (sync.protocol_type.is_some() && sync.protocol_type != group.protocol_type)
                        || (sync.protocol_name.is_some() && sync.protocol_name != group.protocol);
                    if inconsistent && group.members.contains_key(&sync.member_id) {
                        Reply::Now(SyncAnswer {
                            error: Some(ResponseError::InconsistentGroupProtocol),
                            ..Default::default()
                        })
                    } else {
                        let Sync { member_id, instance_id, generation, assignments, .. } = sync;
                        group.sync(&member_id, instance_id.as_deref(), generation, assignments, Instant::now())
                    }
                }
                _ => Reply::Now(SyncAnswer { error: Some(ResponseError::UnknownMemberId), ..Default::default() }),
            };
            let waiting = match reply {
                Reply::Now(answer) => Err(answer),
                Reply::Parked { member } => Ok(shard.park(group_id, &member, false)),
            };
            shard.deliver(group_id);
            self.persist_dirty(&mut locked);
            waiting
        };
        match waiting {
            Err(answer) => answer,
            Ok(waiting) => match waiting.await {
                Ok(Answer::Sync(answer)) => answer,
                Ok(Answer::Join(_)) | Err(_) => {
                    SyncAnswer { error: Some(ResponseError::NotCoordinator), ..Default::default() }
                }
            },
        }
    }

    /// A Heartbeat of a classic group's member.
    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        let mut locked = self.lock(group_id)?;
        match locked.state().groups.get_mut(group_id).map(|g| &mut g.kind) {
            Some(Kind::Classic(group)) => group.heartbeat(member_id, instance_id, generation, Instant::now()),
            _ => Err(ResponseError::UnknownMemberId),
        }
    }

    /// A LeaveGroup of `leaving` (member id, instance id): one result each.
    pub fn leave(
        self: &Arc<Self>,
        group_id: &str,
        leaving: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), ResponseError>>, ResponseError> {
        let now = Instant::now();
        let mut locked = self.lock(group_id)?;
        let shard = locked.state();
        let results = match shard.groups.get_mut(group_id).map(|g| &mut g.kind) {
            Some(Kind::Classic(group)) => {
                leaving.iter().map(|(member, instance)| group.leave(member, instance.as_deref(), now)).collect()
            }
            _ => leaving.iter().map(|_| Err(ResponseError::UnknownMemberId)).collect(),
        };
        shard.deliver(group_id);
        self.persist_dirty(&mut locked);
        Ok(results)
    }
}

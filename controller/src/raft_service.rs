//! The server side of the Raft transport, plus `Identify`.

use std::sync::Arc;

use keel_controller_client::pb;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::raft_types::{Raft, RaftId};
use crate::store::Identity;

/// Answers Raft RPCs addressed to this incarnation.
pub(crate) struct RaftService {
    pub(crate) raft: Raft,
    pub(crate) identity: Arc<Identity>,
    /// The controller's tasks (answers that must outlive their caller run here).
    pub(crate) tasks: tokio_util::task::TaskTracker,
}

impl std::fmt::Debug for RaftService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftService").field("identity", &self.identity).finish_non_exhaustive()
    }
}

impl RaftService {
    /// Decodes a request meant for this incarnation. A message for another Raft
    /// id (this controller's former self, before its disk was wiped) is refused,
    /// so this controller never votes or acks as a member it no longer is.
    fn decode<T: DeserializeOwned>(&self, request: Request<pb::RaftRequest>) -> Result<T, Status> {
        let request = request.into_inner();
        if request.target_raft_id != self.identity.raft_id {
            return Err(Status::failed_precondition(format!(
                "controller {} is raft id {:x}, not {:x}: it lost its former state and only acts under its new id",
                self.identity.controller_id, self.identity.raft_id, request.target_raft_id
            )));
        }
        serde_json::from_slice(&request.payload)
            .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))
    }
}

fn encode<T: Serialize>(result: &T) -> Result<Response<pb::RaftReply>, Status> {
    let payload = serde_json::to_vec(result).map_err(|e| Status::internal(format!("encode raft reply: {e}")))?;
    Ok(Response::new(pb::RaftReply { payload }))
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn append_entries(&self, request: Request<pb::RaftRequest>) -> Result<Response<pb::RaftReply>, Status> {
        let rpc = self.decode(request)?;
        encode(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<pb::RaftRequest>) -> Result<Response<pb::RaftReply>, Status> {
        let rpc = self.decode(request)?;
        encode(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, request: Request<pb::RaftRequest>) -> Result<Response<pb::RaftReply>, Status> {
        let rpc = self.decode(request)?;
        encode(&self.raft.install_snapshot(rpc).await)
    }

    async fn identify(&self, _request: Request<pb::IdentifyRequest>) -> Result<Response<pb::IdentifyReply>, Status> {
        // Asked in a task of its own: a caller that gives up (its deadline)
        // must not drop the answer Raft is about to send, which openraft logs
        // as an error.
        let raft = self.raft.clone();
        let initialized = self
            .tasks
            .spawn(async move { raft.is_initialized().await })
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::IdentifyReply {
            controller_id: self.identity.controller_id,
            raft_id: self.identity.raft_id,
            cluster_id: self.identity.cluster_id.clone(),
            initialized,
        }))
    }
}

/// Displays a Raft id the way logs and `keelctl` show it.
pub(crate) fn raft_id_hex(raft_id: RaftId) -> String {
    format!("{raft_id:016x}")
}

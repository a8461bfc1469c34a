//! The Raft transport: openraft's messages as JSON over the `Raft` gRPC
//! service, one HTTP/2 connection per peer address shared by every RPC.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use keel_controller_client::{pb, GRPC_MESSAGE_BYTES_MAX};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use pb::raft_client::RaftClient;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;

use crate::raft_types::{ControllerNode, RaftId, TypeConfig};

/// One lazily connected channel per controller address, shared by the Raft
/// transport and by write forwarding.
#[derive(Clone, Debug, Default)]
pub(crate) struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Peers {
    /// The channel to `addr`, created on first use.
    pub(crate) fn channel(&self, addr: &str) -> Result<keel_proto::auth::Channel, tonic::transport::Error> {
        let mut channels = self.channels.lock().expect("peer map lock poisoned");
        if let Some(channel) = channels.get(addr) {
            return Ok(keel_proto::auth::channel(channel.clone()));
        }
        let channel = keel_proto::transport::endpoint(addr)?.connect_lazy();
        channels.insert(addr.to_owned(), channel.clone());
        Ok(keel_proto::auth::channel(channel))
    }
}

/// Builds a `PeerClient` per replication target.
#[derive(Clone, Debug)]
pub(crate) struct Network {
    pub(crate) peers: Peers,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: RaftId, node: &ControllerNode) -> PeerClient {
        PeerClient { target, addr: node.addr.clone(), channel: self.peers.channel(&node.addr) }
    }
}

/// The Raft client of one peer.
#[derive(Debug)]
pub(crate) struct PeerClient {
    target: RaftId,
    addr: String,
    channel: Result<keel_proto::auth::Channel, tonic::transport::Error>,
}

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<RaftId, ControllerNode, RaftError<RaftId, E>>>;

impl PeerClient {
    async fn send<Req, Resp, E>(&self, method: Method, request: &Req, option: &RPCOption) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let channel = self.channel.as_ref().map_err(|e| RPCError::Unreachable(Unreachable::new(e)))?.clone();
        let mut client = RaftClient::new(channel)
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX);
        let payload = serde_json::to_vec(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut grpc_request = tonic::Request::new(pb::RaftRequest { target_raft_id: self.target, payload });
        grpc_request.set_timeout(option.hard_ttl());
        let reply = match method {
            Method::AppendEntries => client.append_entries(grpc_request).await,
            Method::Vote => client.vote(grpc_request).await,
            Method::InstallSnapshot => client.install_snapshot(grpc_request).await,
        };
        let reply = reply.map_err(|status| {
            tracing::debug!(peer = %self.addr, %status, "raft rpc failed");
            RPCError::Unreachable(Unreachable::new(&std::io::Error::other(status.to_string())))
        })?;
        let result: Result<Resp, RaftError<RaftId, E>> = serde_json::from_slice(&reply.into_inner().payload)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

#[derive(Clone, Copy, Debug)]
enum Method {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<RaftId>> {
        self.send(Method::AppendEntries, &request, &option).await
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<RaftId>, InstallSnapshotError> {
        self.send(Method::InstallSnapshot, &request, &option).await
    }

    async fn vote(&mut self, request: VoteRequest<RaftId>, option: RPCOption) -> RpcResult<VoteResponse<RaftId>> {
        self.send(Method::Vote, &request, &option).await
    }
}

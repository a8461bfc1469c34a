//! The `Metadata` gRPC service: what brokers, WAL nodes and keelctl call.
//!
//! Writes, linearizable reads, membership changes and the cluster status are
//! leader-only: a follower forwards them once to the leader it knows. The
//! watch stream and `NodeStatus` are served by whichever controller answers.

mod attach;
mod membership;
mod status;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use keel_controller_client::topic_rules::validate_partition_count;
use keel_controller_client::{
    kind_from_pb, pb, Command, EnsembleMember, Epoch, LeaderEpoch, LogEpoch, LogId, MetaError, NodeId, ObjectId,
    Offset, Outcome, Seq, StreamId, TopicId, Version,
};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::controller::{Controller, Route, FORWARDED_HEADER};

/// The gRPC face of a `Controller`.
#[derive(Debug)]
pub(crate) struct MetadataService {
    pub(crate) controller: Arc<Controller>,
}

/// Handles a leader-only request here, or forwards it to the leader and
/// returns the leader's answer (errors included, details intact).
macro_rules! leader_only {
    ($self:ident, $request:ident, $method:ident) => {{
        let forwarded = $request.metadata().contains_key(FORWARDED_HEADER);
        match $self.controller.route(forwarded).map_err(|e| e.to_status())? {
            Route::Local => $request.into_inner(),
            Route::Forward(mut client) => {
                let mut request = Request::new($request.into_inner());
                request.metadata_mut().insert(FORWARDED_HEADER, tonic::metadata::MetadataValue::from_static("1"));
                // A silent leader must not hold the caller: it tries another controller.
                return match tokio::time::timeout(FORWARD_TIMEOUT, client.$method(request)).await {
                    Ok(answer) => answer,
                    Err(_) => Err(MetaError::NoLeader.to_status()),
                };
            }
        }
    }};
}

/// How long a follower waits for the leader on a forwarded request.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

fn write_reply((version, outcome): (Version, Outcome)) -> Result<Response<pb::WriteReply>, Status> {
    let outcome = serde_json::to_vec(&outcome).map_err(|e| Status::internal(format!("encode outcome: {e}")))?;
    Ok(Response::new(pb::WriteReply { version: version.0, outcome }))
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis() as u64
}

#[tonic::async_trait]
impl pb::metadata_server::Metadata for MetadataService {
    async fn register_node(
        &self,
        request: Request<pb::RegisterNodeRequest>,
    ) -> Result<Response<pb::RegisterNodeReply>, Status> {
        let request = leader_only!(self, request, register_node);
        let kind = kind_from_pb(request.kind).map_err(|e| e.to_status())?;
        let id = NodeId(request.node_id);
        let command = Command::RegisterNode {
            kind,
            id,
            zone: request.zone,
            internal_addr: request.internal_addr,
            kafka_listeners: request.kafka_listeners,
            incarnation: request.incarnation,
        };
        let (version, outcome) = self.controller.propose(|_| Ok(command)).await.map_err(|e| e.to_status())?;
        let Outcome::Registered { epoch } = outcome else {
            return Err(Status::internal(format!("register produced {outcome:?}")));
        };
        let mut sessions = self.controller.sessions.lock().expect("sessions lock poisoned");
        sessions.on_registered(kind, id, epoch, Instant::now());
        Ok(Response::new(pb::RegisterNodeReply {
            epoch: epoch.0,
            version: version.0,
            session_timeout_ms: millis(sessions.timeout()),
        }))
    }

    async fn heartbeat(&self, request: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatReply>, Status> {
        let request = leader_only!(self, request, heartbeat);
        if !self.controller.leads_with_quorum() {
            // Possibly deposed: the node asks another controller.
            return Err(MetaError::NoLeader.to_status());
        }
        let kind = kind_from_pb(request.kind).map_err(|e| e.to_status())?;
        let (id, epoch) = (NodeId(request.node_id), keel_controller_client::Epoch(request.epoch));
        self.controller.state.read(|state| state.image.check_active(kind, id, epoch)).map_err(|e| e.to_status())?;
        let mut sessions = self.controller.sessions.lock().expect("sessions lock poisoned");
        if !sessions.on_heartbeat(kind, id, epoch, Instant::now()) {
            return Err(MetaError::Fenced { kind, node: id, epoch }.to_status());
        }
        Ok(Response::new(pb::HeartbeatReply { session_timeout_ms: millis(sessions.timeout()) }))
    }

    async fn create_topic(&self, request: Request<pb::CreateTopicRequest>) -> Result<Response<pb::WriteReply>, Status> {
        let request = leader_only!(self, request, create_topic);
        let result = self
            .controller
            .propose(|image| {
                validate_partition_count(i64::from(request.partitions))?;
                Ok(Command::CreateTopic {
                    id: TopicId(uuid::Uuid::new_v4()),
                    name: request.name,
                    configs: request.configs.into_iter().collect(),
                    owner: request.owner,
                    description: request.description,
                    leaders: image.place_leaders(request.partitions as usize),
                })
            })
            .await;
        write_reply(result.map_err(|e| e.to_status())?)
    }

    async fn delete_topic(&self, request: Request<pb::DeleteTopicRequest>) -> Result<Response<pb::WriteReply>, Status> {
        let request = leader_only!(self, request, delete_topic);
        let result = self.controller.propose(|_| Ok(Command::DeleteTopic { name: request.name })).await;
        write_reply(result.map_err(|e| e.to_status())?)
    }

    async fn create_partitions(
        &self,
        request: Request<pb::CreatePartitionsRequest>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        let request = leader_only!(self, request, create_partitions);
        let result = self
            .controller
            .propose(|image| {
                let current = image.topic(&request.name)?.partitions.len() as i64;
                let count = i64::from(request.count);
                if count <= current {
                    return Err(MetaError::InvalidPartitions {
                        count,
                        reason: format!(
                            "topic {:?} already has {current} partitions; the count can only grow",
                            request.name
                        ),
                    });
                }
                validate_partition_count(count)?;
                Ok(Command::CreatePartitions {
                    leaders: image.place_leaders((count - current) as usize),
                    name: request.name,
                })
            })
            .await;
        write_reply(result.map_err(|e| e.to_status())?)
    }

    async fn alter_configs(
        &self,
        request: Request<pb::AlterConfigsRequest>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        let request = leader_only!(self, request, alter_configs);
        let command = Command::AlterConfigs {
            name: request.name,
            set: request.set.into_iter().collect(),
            delete: request.delete,
        };
        let result = self.controller.propose(|_| Ok(command)).await;
        write_reply(result.map_err(|e| e.to_status())?)
    }

    async fn alter_scram_credentials(
        &self,
        request: Request<pb::AlterScramCredentialsRequest>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        let request = leader_only!(self, request, alter_scram_credentials);
        let upsert = serde_json::from_slice(&request.upsert)
            .map_err(|e| Status::invalid_argument(format!("credentials to set: {e}")))?;
        let delete = serde_json::from_slice(&request.delete)
            .map_err(|e| Status::invalid_argument(format!("credentials to remove: {e}")))?;
        let command = Command::AlterScramCredentials { upsert, delete };
        let result = self.controller.propose(|_| Ok(command)).await;
        write_reply(result.map_err(|e| e.to_status())?)
    }

    async fn allocate_producer_ids(
        &self,
        request: Request<pb::AllocateProducerIdsRequest>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        let request = leader_only!(self, request, allocate_producer_ids);
        let command = Command::AllocateProducerIds {
            broker: NodeId(request.broker_id),
            broker_epoch: keel_controller_client::Epoch(request.broker_epoch),
        };
        let result = self.controller.propose(|_| Ok(command)).await;
        write_reply(result.map_err(|e| e.to_status())?)
    }

    async fn open_log(&self, request: Request<pb::OpenLogRequest>) -> Result<Response<pb::WriteReply>, Status> {
        let request = leader_only!(self, request, open_log);
        let result = self
            .controller
            .propose(|image| {
                // No ensemble given: the controller chooses one from the live WAL nodes.
                let (ensemble, ack_quorum) = if request.ensemble.is_empty() {
                    image.choose_ensemble()?
                } else {
                    let ensemble = request
                        .ensemble
                        .into_iter()
                        .map(|m| EnsembleMember { node: NodeId(m.node_id), zone: m.zone, incarnation: m.incarnation })
                        .collect();
                    (ensemble, request.ack_quorum)
                };
                Ok(Command::OpenLog {
                    owner: NodeId(request.owner),
                    owner_epoch: Epoch(request.owner_epoch),
                    ensemble,
                    ack_quorum,
                })
            })
            .await;
        write_reply(result.map_err(|e| e.to_status())?)
    }

    async fn recover_log(&self, request: Request<pb::RecoverLogRequest>) -> Result<Response<pb::WriteReply>, Status> {
        let request = leader_only!(self, request, recover_log);
        let command = Command::RecoverLog {
            log: LogId(request.log),
            epoch: LogEpoch(request.epoch),
            recoverer: NodeId(request.recoverer),
            recoverer_epoch: Epoch(request.recoverer_epoch),
        };
        write_reply(self.controller.propose(|_| Ok(command)).await.map_err(|e| e.to_status())?)
    }

    async fn seal_log(&self, request: Request<pb::SealLogRequest>) -> Result<Response<pb::WriteReply>, Status> {
        let request = leader_only!(self, request, seal_log);
        let command = Command::SealLog {
            log: LogId(request.log),
            epoch: LogEpoch(request.epoch),
            sealed_seq: Seq(request.sealed_seq),
            stream_ends: request
                .stream_ends
                .into_iter()
                .map(|(stream, end)| (StreamId(stream), Offset(end)))
                .collect::<std::collections::BTreeMap<_, _>>()
                .into_iter()
                .collect(),
            sender: NodeId(request.sender),
            sender_epoch: Epoch(request.sender_epoch),
        };
        write_reply(self.controller.propose(|_| Ok(command)).await.map_err(|e| e.to_status())?)
    }

    async fn advance_start_offset(
        &self,
        request: Request<pb::AdvanceStartOffsetRequest>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        let request = leader_only!(self, request, advance_start_offset);
        let topic = request.topic_id.parse::<uuid::Uuid>().map_err(|error| {
            MetaError::InvalidRequest { reason: format!("topic id {:?}: {error}", request.topic_id) }.to_status()
        })?;
        let command = Command::AdvanceStartOffset {
            topic: TopicId(topic),
            partition: request.partition,
            leader_epoch: LeaderEpoch(request.leader_epoch),
            start_offset: Offset(request.start_offset),
            sender: NodeId(request.sender),
            sender_epoch: Epoch(request.sender_epoch),
        };
        write_reply(self.controller.propose(|_| Ok(command)).await.map_err(|e| e.to_status())?)
    }

    async fn drain_broker(&self, request: Request<pb::DrainBrokerRequest>) -> Result<Response<pb::WriteReply>, Status> {
        let request = leader_only!(self, request, drain_broker);
        let id = NodeId(request.broker);
        let given = Epoch(request.broker_epoch);
        let proposed = self
            .controller
            .propose(|image| {
                let epoch =
                    if given.0 == 0 { image.node(keel_controller_client::NodeKind::Broker, id)?.epoch } else { given };
                Ok(Command::DrainBroker { id, epoch })
            })
            .await;
        write_reply(proposed.map_err(|e| e.to_status())?)
    }

    async fn report_load(
        &self,
        request: Request<pb::ReportLoadRequest>,
    ) -> Result<Response<pb::ReportLoadReply>, Status> {
        let request = leader_only!(self, request, report_load);
        let (id, epoch) = (NodeId(request.broker), Epoch(request.broker_epoch));
        self.controller
            .state
            .read(|state| state.image.check_active(keel_controller_client::NodeKind::Broker, id, epoch))
            .map_err(|e| e.to_status())?;
        let at = Instant::now();
        let mut loads = self.controller.loads.lock().expect("loads lock poisoned");
        for partition in request.partitions {
            let load = crate::controller::StreamLoad {
                bytes_in: partition.bytes_in_per_sec.max(0.0),
                bytes_out: partition.bytes_out_per_sec.max(0.0),
                at,
            };
            loads.insert(keel_controller_client::StreamId(partition.stream), load);
        }
        Ok(Response::new(pb::ReportLoadReply {}))
    }

    async fn close_partition(
        &self,
        request: Request<pb::ClosePartitionRequest>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        let request = leader_only!(self, request, close_partition);
        let topic = request.topic_id.parse::<uuid::Uuid>().map_err(|error| {
            MetaError::InvalidRequest { reason: format!("topic id {:?}: {error}", request.topic_id) }.to_status()
        })?;
        let command = Command::ClosePartition {
            topic: TopicId(topic),
            partition: request.partition,
            leader_epoch: LeaderEpoch(request.leader_epoch),
            end_offset: Offset(request.end_offset),
            sender: NodeId(request.sender),
            sender_epoch: Epoch(request.sender_epoch),
        };
        write_reply(self.controller.propose(|_| Ok(command)).await.map_err(|e| e.to_status())?)
    }

    async fn reserve_objects(
        &self,
        request: Request<pb::ReserveObjectsRequest>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        let request = leader_only!(self, request, reserve_objects);
        let command = Command::ReserveObjects {
            broker: NodeId(request.broker),
            broker_epoch: Epoch(request.broker_epoch),
            count: request.count,
            deadline_ms: wall_clock_ms().saturating_add(i64::try_from(request.ttl_ms).unwrap_or(i64::MAX)),
        };
        write_reply(self.controller.propose(|_| Ok(command)).await.map_err(|e| e.to_status())?)
    }

    async fn commit_upload(
        &self,
        request: Request<pb::CommitUploadRequest>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        let request = leader_only!(self, request, commit_upload);
        let objects = serde_json::from_slice(&request.objects).map_err(|error| {
            MetaError::InvalidRequest { reason: format!("objects are not valid JSON: {error}") }.to_status()
        })?;
        let command = Command::CommitUpload {
            broker: NodeId(request.broker),
            broker_epoch: Epoch(request.broker_epoch),
            log: LogId(request.log),
            log_epoch: LogEpoch(request.log_epoch),
            trim_seq: Seq(request.trim_seq),
            objects,
            now_ms: wall_clock_ms(),
        };
        write_reply(self.controller.propose(|_| Ok(command)).await.map_err(|e| e.to_status())?)
    }

    async fn compact_ranges(
        &self,
        request: Request<pb::CompactRangesRequest>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        let request = leader_only!(self, request, compact_ranges);
        let object = serde_json::from_slice(&request.object).map_err(|error| {
            MetaError::InvalidRequest { reason: format!("the object is not valid JSON: {error}") }.to_status()
        })?;
        let command = Command::CompactRanges {
            stream: StreamId(request.stream),
            object,
            replaced: request.replaced.into_iter().map(ObjectId).collect(),
            now_ms: wall_clock_ms(),
            sender: NodeId(request.sender),
            sender_epoch: Epoch(request.sender_epoch),
        };
        write_reply(self.controller.propose(|_| Ok(command)).await.map_err(|e| e.to_status())?)
    }

    async fn delete_objects(
        &self,
        request: Request<pb::DeleteObjectsRequest>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        let request = leader_only!(self, request, delete_objects);
        let command = Command::DeleteObjects {
            objects: request.objects.into_iter().map(ObjectId).collect(),
            now_ms: wall_clock_ms(),
            sender: NodeId(request.sender),
            sender_epoch: Epoch(request.sender_epoch),
        };
        write_reply(self.controller.propose(|_| Ok(command)).await.map_err(|e| e.to_status())?)
    }

    async fn purge_objects(
        &self,
        request: Request<pb::PurgeObjectsRequest>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        let request = leader_only!(self, request, purge_objects);
        let command = Command::PurgeObjects {
            deleted: request.deleted.into_iter().map(ObjectId).collect(),
            reservations: request.reservations.into_iter().map(ObjectId).collect(),
            grace_ms: i64::try_from(request.grace_ms).unwrap_or(i64::MAX),
            now_ms: wall_clock_ms(),
            sender: NodeId(request.sender),
            sender_epoch: Epoch(request.sender_epoch),
        };
        write_reply(self.controller.propose(|_| Ok(command)).await.map_err(|e| e.to_status())?)
    }

    async fn forget_logs(&self, request: Request<pb::ForgetLogsRequest>) -> Result<Response<pb::WriteReply>, Status> {
        let request = leader_only!(self, request, forget_logs);
        let command = Command::ForgetLogs {
            logs: request.logs.into_iter().map(LogId).collect(),
            sender: NodeId(request.sender),
            sender_epoch: Epoch(request.sender_epoch),
        };
        write_reply(self.controller.propose(|_| Ok(command)).await.map_err(|e| e.to_status())?)
    }

    async fn read_image(&self, request: Request<pb::ReadImageRequest>) -> Result<Response<pb::ImageReply>, Status> {
        let _request = leader_only!(self, request, read_image);
        self.controller.raft.ensure_linearizable().await.map_err(|_| MetaError::NoLeader.to_status())?;
        let image = self.controller.state.read(|state| state.image.clone());
        Ok(Response::new(watch::image_reply(&image)?))
    }

    type WatchStream = watch::WatchStream;
    type AttachStream = attach::AttachStream;

    /// Served by the leader only (a stream is not forwarded): others answer
    /// NoLeader and the node tries the next controller.
    async fn attach(&self, request: Request<pb::AttachRequest>) -> Result<Response<Self::AttachStream>, Status> {
        if !self.controller.leads_with_quorum() {
            return Err(MetaError::NoLeader.to_status());
        }
        let request = request.into_inner();
        let kind = kind_from_pb(request.kind).map_err(|e| e.to_status())?;
        let (id, epoch) = (NodeId(request.node_id), keel_controller_client::Epoch(request.epoch));
        self.controller.state.read(|state| state.image.check_active(kind, id, epoch)).map_err(|e| e.to_status())?;
        Ok(Response::new(attach::start(self.controller.clone(), kind, id, epoch)))
    }

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        Ok(Response::new(watch::start(self.controller.clone(), Version(request.into_inner().from_version))))
    }

    async fn join_as_learner(
        &self,
        request: Request<pb::JoinAsLearnerRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        let request = leader_only!(self, request, join_as_learner);
        membership::join_as_learner(&self.controller, request).await.map(Response::new).map_err(|e| e.to_status())
    }

    async fn promote_controller(
        &self,
        request: Request<pb::ControllerRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        let request = leader_only!(self, request, promote_controller);
        membership::promote(&self.controller, request).await.map(Response::new).map_err(|e| e.to_status())
    }

    async fn remove_controller(
        &self,
        request: Request<pb::ControllerRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        let request = leader_only!(self, request, remove_controller);
        membership::remove(&self.controller, request).await.map(Response::new).map_err(|e| e.to_status())
    }

    async fn cluster_status(
        &self,
        request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusReply>, Status> {
        let _request = leader_only!(self, request, cluster_status);
        Ok(Response::new(status::cluster_status(&self.controller)))
    }

    async fn node_status(
        &self,
        _request: Request<pb::NodeStatusRequest>,
    ) -> Result<Response<pb::NodeStatusReply>, Status> {
        Ok(Response::new(status::node_status(&self.controller)))
    }
}

/// This controller's wall clock in milliseconds: object reservations expire
/// on it. Only reservation deadlines use it, with a time to live far larger
/// than the clock skew between controllers.
fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

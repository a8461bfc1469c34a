//! The group APIs: FindCoordinator, the classic group protocol (JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup), KIP-848's ConsumerGroupHeartbeat,
//! committed offsets (OffsetCommit, OffsetFetch, OffsetDelete) and the
//! admin views (DescribeGroups, ListGroups, DeleteGroups). The rules live
//! in `crate::groups`; this file translates each version of the wire
//! messages to them and back.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use keel_controller_client::{pb, ClientError, MetaError, NodeState};

use crate::broker::Broker;
use crate::groups::classic::{self, ClassicGroup, Join, JoinAnswer, Reply, SyncAnswer};
use crate::groups::consumer::{self, ConsumerGroup};
use crate::groups::records::{self, Key, OffsetValue};
use crate::groups::{Coordinator, Entry, Group, Kind, METADATA_BYTES_MAX, OFFSETS_TOPIC};
use crate::txn::TXN_TOPIC;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// Who sent a request, as DescribeGroups shows members: the client id and
/// Kafka's form of the host (`/127.0.0.1`).
#[derive(Debug)]
pub(super) struct Client {
    id: String,
    host: String,
}

impl Client {
    pub(super) fn of(header: &RequestHeader, peer: std::net::SocketAddr) -> Client {
        Client { id: header.client_id.as_deref().unwrap_or_default().to_string(), host: format!("/{}", peer.ip()) }
    }
}

fn text(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

fn code(error: Option<ResponseError>) -> i16 {
    error.map_or(0, |e| e.code())
}

pub(super) async fn find_coordinator(
    broker: &Arc<Broker>,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let keys: Vec<String> = if version >= 4 {
        request.coordinator_keys.iter().map(|k| k.to_string()).collect()
    } else {
        vec![request.key.to_string()]
    };
    let mut coordinators = Vec::with_capacity(keys.len());
    for key in keys {
        let answer = match request.key_type {
            KEY_TYPE_GROUP => {
                let partitions = broker.groups.settings.offsets_partitions;
                locate(broker, &key, OFFSETS_TOPIC, partitions, "committed offsets and consumer group state").await
            }
            KEY_TYPE_TRANSACTION => {
                let partitions = broker.txns.settings.partitions;
                locate(broker, &key, TXN_TOPIC, partitions, "transaction coordinators' state").await
            }
            other => Err((ResponseError::InvalidRequest, format!("unknown coordinator key type {other}"))),
        };
        let coordinator = match answer {
            Ok((node, host, port)) => find_coordinator_response::Coordinator::default()
                .with_node_id(BrokerId(node))
                .with_host(text(host))
                .with_port(port),
            Err((error, message)) => {
                super::count_error(broker, "FindCoordinator", error);
                find_coordinator_response::Coordinator::default()
                    .with_node_id(BrokerId(-1))
                    .with_port(-1)
                    .with_error_code(error.code())
                    .with_error_message(Some(text(message)))
            }
        }
        .with_key(text(key));
        coordinators.push(coordinator);
    }
    if version >= 4 {
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let only = coordinators.pop().unwrap_or_default();
    FindCoordinatorResponse::default()
        .with_error_code(only.error_code)
        .with_error_message(if version >= 1 { only.error_message } else { None })
        .with_node_id(only.node_id)
        .with_host(only.host)
        .with_port(only.port)
}

/// The broker leading `key`'s partition of the internal topic `topic`
/// (`__consumer_offsets` for a group, `__transaction_state` for a
/// transactional id), as (id, host, port); the topic is created on first
/// use with `partitions` partitions.
async fn locate(
    broker: &Broker,
    key: &str,
    topic: &str,
    partitions: i32,
    description: &str,
) -> Result<(i32, String, i32), (ResponseError, String)> {
    if key.is_empty() {
        return Err((ResponseError::InvalidRequest, "the coordinator key is empty".into()));
    }
    let mut image = broker.image();
    if !image.topics.contains_key(topic) {
        image = create_internal_topic(broker, topic, partitions, description).await?;
    }
    let count = image.topics[topic].partitions.len();
    let partition = crate::groups::partition_for(key, count);
    let record = &image.topics[topic].partitions[partition as usize];
    let not_available =
        || (ResponseError::CoordinatorNotAvailable, format!("{topic} partition {partition} has no leader yet"));
    let node = record.leader.and_then(|id| image.brokers.get(&id)).ok_or_else(not_available)?;
    if node.state != NodeState::Active {
        return Err(not_available());
    }
    let (host, port) = super::metadata::kafka_endpoint(node).ok_or_else(not_available)?;
    Ok((node.id.0 as i32, host, port))
}

/// Creates a compacted internal topic (a coordinator's log), waiting until
/// the metadata shows it.
async fn create_internal_topic(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    description: &str,
) -> Result<Arc<keel_controller_client::Image>, (ResponseError, String)> {
    let request = pb::CreateTopicRequest {
        name: topic.to_owned(),
        partitions,
        configs: [("cleanup.policy".to_owned(), "compact".to_owned())].into(),
        owner: "keel".into(),
        description: description.into(),
    };
    match broker.client.create_topic(request).await {
        Ok(_) | Err(ClientError::Meta(MetaError::TopicAlreadyExists { .. })) => {
            tracing::info!("created {topic}");
        }
        Err(error) => {
            return Err((ResponseError::CoordinatorNotAvailable, format!("cannot create {topic}: {error}")));
        }
    }
    let mut images = broker.images.clone();
    let shown =
        match tokio::time::timeout(Duration::from_secs(5), images.wait_for(|image| image.topics.contains_key(topic)))
            .await
        {
            Ok(Ok(image)) => Ok(image.clone()),
            _ => Err((ResponseError::CoordinatorNotAvailable, format!("{topic} is not in the metadata yet"))),
        };
    shown
}

/// A classic group to join or act in, made from an empty group of either kind.
fn classic_of<'a>(group: &'a mut Group, id: &str, broker: &Broker) -> Result<&'a mut ClassicGroup, ResponseError> {
    if let Kind::Consumer(consumer) = &group.kind {
        if !consumer.members.is_empty() {
            return Err(ResponseError::InconsistentGroupProtocol);
        }
        group.kind = Kind::Classic(ClassicGroup::new(id, broker.groups.settings.initial_delay));
    }
    match &mut group.kind {
        Kind::Classic(classic) => Ok(classic),
        Kind::Consumer(_) => unreachable!("converted above"),
    }
}

pub(super) async fn join_group(
    broker: &Arc<Broker>,
    request: JoinGroupRequest,
    version: i16,
    client: &Client,
) -> JoinGroupResponse {
    let group_id = request.group_id.0.to_string();
    let session_timeout = Duration::from_millis(request.session_timeout_ms.max(0) as u64);
    let rebalance_timeout =
        if version >= 1 { Duration::from_millis(request.rebalance_timeout_ms.max(0) as u64) } else { session_timeout };
    let join = Join {
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.as_ref().map(|i| i.to_string()),
        client_id: client.id.clone(),
        client_host: client.host.clone(),
        session_timeout,
        rebalance_timeout,
        protocol_type: request.protocol_type.to_string(),
        protocols: request.protocols.iter().map(|p| (p.name.to_string(), p.metadata.clone())).collect(),
        requires_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
    };
    let answer = if !(classic::MIN_SESSION_TIMEOUT..=classic::MAX_SESSION_TIMEOUT).contains(&session_timeout) {
        JoinAnswer { error: Some(ResponseError::InvalidSessionTimeout), ..Default::default() }
    } else {
        let reply = match broker.groups.lock(broker, &group_id) {
            Err(error) => Reply::Now(JoinAnswer { error: Some(error), ..Default::default() }),
            Ok(mut locked) => {
                match classic_of(locked.group_or_new(&group_id, &broker.groups.settings), &group_id, broker) {
                    Err(error) => Reply::Now(JoinAnswer { error: Some(error), ..Default::default() }),
                    Ok(group) => group.join(join.clone(), Instant::now()),
                }
            }
        };
        Coordinator::persist_dirty(broker);
        match reply {
            Reply::Now(answer) => answer,
            Reply::Later(receiver) => receiver
                .await
                .unwrap_or(JoinAnswer { error: Some(ResponseError::NotCoordinator), ..Default::default() }),
        }
    };
    if let Some(error) = answer.error {
        super::count_error(broker, "JoinGroup", error);
    }
    let members = answer
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            join_group_response::JoinGroupResponseMember::default()
                .with_member_id(text(id))
                .with_group_instance_id(if version >= 5 { instance.map(text) } else { None })
                .with_metadata(metadata)
        })
        .collect();
    let mut response = JoinGroupResponse::default()
        .with_error_code(code(answer.error))
        .with_generation_id(if answer.error.is_some() { -1 } else { answer.generation })
        .with_protocol_name(answer.protocol.map(text).or_else(|| (version < 7).then(|| text(""))))
        .with_leader(text(answer.leader))
        .with_member_id(text(answer.member_id))
        .with_members(members);
    if version >= 7 {
        response = response.with_protocol_type(answer.protocol_type.map(text));
    }
    if version >= 9 {
        response = response.with_skip_assignment(answer.skip_assignment);
    }
    response
}

pub(super) async fn sync_group(broker: &Arc<Broker>, request: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    let group_id = request.group_id.0.to_string();
    let member_id = request.member_id.to_string();
    let instance = request.group_instance_id.as_ref().map(|i| i.to_string());
    let assignments = request.assignments.iter().map(|a| (a.member_id.to_string(), a.assignment.clone())).collect();
    let reply = match broker.groups.lock(broker, &group_id) {
        Err(error) => Reply::Now(SyncAnswer { error: Some(error), ..Default::default() }),
        Ok(mut locked) => match locked.groups().get_mut(&group_id).map(|g| &mut g.kind) {
            Some(Kind::Classic(group)) => {
                let protocol_type = request.protocol_type.as_ref().map(|p| p.to_string());
                let protocol_name = request.protocol_name.as_ref().map(|p| p.to_string());
                let inconsistent = (protocol_type.is_some() && protocol_type != group.protocol_type)
                    || (protocol_name.is_some() && protocol_name != group.protocol);
                if inconsistent && group.members.contains_key(&member_id) {
                    Reply::Now(SyncAnswer {
                        error: Some(ResponseError::InconsistentGroupProtocol),
                        ..Default::default()
                    })
                } else {
                    group.sync(&member_id, instance.as_deref(), request.generation_id, assignments, Instant::now())
                }
            }
            _ => Reply::Now(SyncAnswer { error: Some(ResponseError::UnknownMemberId), ..Default::default() }),
        },
    };
    Coordinator::persist_dirty(broker);
    let answer = match reply {
        Reply::Now(answer) => answer,
        Reply::Later(receiver) => {
            receiver.await.unwrap_or(SyncAnswer { error: Some(ResponseError::NotCoordinator), ..Default::default() })
        }
    };
    if let Some(error) = answer.error {
        super::count_error(broker, "SyncGroup", error);
    }
    let mut response =
        SyncGroupResponse::default().with_error_code(code(answer.error)).with_assignment(answer.assignment);
    if version >= 5 {
        response =
            response.with_protocol_type(answer.protocol_type.map(text)).with_protocol_name(answer.protocol.map(text));
    }
    response
}

pub(super) fn heartbeat(broker: &Arc<Broker>, request: HeartbeatRequest) -> HeartbeatResponse {
    let group_id = request.group_id.0.to_string();
    let instance = request.group_instance_id.as_ref().map(|i| i.to_string());
    let result = broker.groups.lock(broker, &group_id).and_then(|mut locked| {
        match locked.groups().get_mut(&group_id).map(|g| &mut g.kind) {
            Some(Kind::Classic(group)) => {
                group.heartbeat(&request.member_id, instance.as_deref(), request.generation_id, Instant::now())
            }
            _ => Err(ResponseError::UnknownMemberId),
        }
    });
    if let Err(error) = result {
        if error != ResponseError::RebalanceInProgress {
            super::count_error(broker, "Heartbeat", error);
        }
    }
    HeartbeatResponse::default().with_error_code(code(result.err()))
}

pub(super) fn leave_group(broker: &Arc<Broker>, request: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let group_id = request.group_id.0.to_string();
    let leaving: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| (m.member_id.to_string(), m.group_instance_id.as_ref().map(|i| i.to_string())))
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let now = Instant::now();
    let outcome = broker.groups.lock(broker, &group_id).map(|mut locked| {
        let group = locked.groups().get_mut(&group_id).map(|g| &mut g.kind);
        match group {
            Some(Kind::Classic(group)) => {
                leaving.iter().map(|(member, instance)| group.leave(member, instance.as_deref(), now)).collect()
            }
            _ => leaving.iter().map(|_| Err(ResponseError::UnknownMemberId)).collect::<Vec<_>>(),
        }
    });
    Coordinator::persist_dirty(broker);
    match outcome {
        Err(error) => LeaveGroupResponse::default().with_error_code(error.code()),
        Ok(results) if version >= 3 => {
            let members = leaving
                .into_iter()
                .zip(results)
                .map(|((member, instance), result)| {
                    leave_group_response::MemberResponse::default()
                        .with_member_id(text(member))
                        .with_group_instance_id(instance.map(text))
                        .with_error_code(code(result.err()))
                })
                .collect();
            LeaveGroupResponse::default().with_members(members)
        }
        Ok(results) => LeaveGroupResponse::default().with_error_code(code(results[0].err())),
    }
}

pub(super) async fn consumer_group_heartbeat(
    broker: &Arc<Broker>,
    request: ConsumerGroupHeartbeatRequest,
    client: &Client,
) -> ConsumerGroupHeartbeatResponse {
    let group_id = request.group_id.0.to_string();
    let image = broker.image();
    let topics: BTreeMap<String, (uuid::Uuid, i32)> = image
        .topics
        .values()
        .filter(|topic| !crate::groups::is_internal(&topic.name))
        .map(|topic| (topic.name.clone(), (topic.id.0, topic.partitions.len() as i32)))
        .collect();
    let heartbeat = consumer::Heartbeat {
        member_id: request.member_id.to_string(),
        member_epoch: request.member_epoch,
        instance_id: request.instance_id.as_ref().map(|i| i.to_string()),
        rack_id: request.rack_id.as_ref().map(|r| r.to_string()),
        client_id: client.id.clone(),
        client_host: client.host.clone(),
        rebalance_timeout: Duration::from_millis(request.rebalance_timeout_ms.max(0) as u64),
        subscribed_topics: request.subscribed_topic_names.as_ref().map(|t| t.iter().map(|n| n.0.to_string()).collect()),
        subscribed_regex: request.subscribed_topic_regex.as_ref().map(|r| r.to_string()),
        assignor: request.server_assignor.as_ref().map(|a| a.to_string()),
        owned: request
            .topic_partitions
            .as_ref()
            .map(|owned| owned.iter().flat_map(|t| t.partitions.iter().map(move |p| (t.topic_id, *p))).collect()),
    };
    let settings = &broker.groups.settings;
    let result = {
        broker.groups.lock(broker, &group_id).map_err(|e| (e, String::new())).and_then(|mut locked| {
            let group = locked.group_or_new(&group_id, settings);
            if let Kind::Classic(classic) = &group.kind {
                if !classic.is_empty() {
                    return Err((
                        ResponseError::GroupIdNotFound,
                        "the group is a classic group with members; it cannot use the consumer protocol".to_owned(),
                    ));
                }
                group.kind = Kind::Consumer(ConsumerGroup::new(&group_id, settings.consumer_session_timeout));
            }
            let Kind::Consumer(consumer) = &mut group.kind else { unreachable!("converted above") };
            let answer = consumer.heartbeat(heartbeat, &topics, Instant::now()).map_err(|e| (e, String::new()))?;
            // A change is written before it is answered, so a coordinator
            // taking over knows what each member was told.
            let partition = locked.partition;
            let group = locked.groups().get_mut(&group_id).expect("made above");
            let appended =
                group.dirty_record(&group_id).map(|(entry, _)| Coordinator::append(broker, partition, vec![entry]));
            Ok((answer, appended))
        })
    };
    let result = match result {
        Ok((answer, Some(appended))) => match appended.durable().await {
            Ok(()) => Ok(answer),
            Err(error) => {
                if let Ok(mut locked) = broker.groups.lock(broker, &group_id) {
                    if let Some(group) = locked.groups().get_mut(&group_id) {
                        group.written(None, Err(error));
                        if let Kind::Consumer(consumer) = &mut group.kind {
                            consumer.forget_told(&answer.member_id);
                        }
                    }
                }
                Err((error, "the group's new state could not be written; retry".to_owned()))
            }
        },
        Ok((answer, None)) => Ok(answer),
        Err(error) => Err(error),
    };
    match result {
        Ok(answer) => ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(text(answer.member_id)))
            .with_member_epoch(answer.member_epoch)
            .with_heartbeat_interval_ms(settings.consumer_heartbeat_interval.as_millis() as i32)
            .with_assignment(answer.assignment.map(|assigned| {
                let mut by_topic: BTreeMap<uuid::Uuid, Vec<i32>> = BTreeMap::new();
                for (topic, partition) in assigned {
                    by_topic.entry(topic).or_default().push(partition);
                }
                consumer_group_heartbeat_response::Assignment::default().with_topic_partitions(
                    by_topic
                        .into_iter()
                        .map(|(topic_id, partitions)| {
                            consumer_group_heartbeat_response::TopicPartitions::default()
                                .with_topic_id(topic_id)
                                .with_partitions(partitions)
                        })
                        .collect(),
                )
            })),
        Err((error, message)) => {
            super::count_error(broker, "ConsumerGroupHeartbeat", error);
            ConsumerGroupHeartbeatResponse::default()
                .with_error_code(error.code())
                .with_error_message((!message.is_empty()).then(|| text(message)))
                .with_member_epoch(-1)
        }
    }
}

/// Appends records for `group` under the groups' lock (log order is the
/// order of changes) and waits until they are durable.
async fn append_locked(
    broker: &Arc<Broker>,
    group: &str,
    partition: i32,
    entries: Vec<Entry>,
) -> Result<(), ResponseError> {
    let appended = {
        let _locked = broker.groups.lock(broker, group)?;
        Coordinator::append(broker, partition, entries)
    };
    appended.durable().await
}

/// One partition of an OffsetCommit, after the checks that need no I/O.
struct Commit {
    /// The topic's index in the request (for the answer) and its name.
    topic: usize,
    name: String,
    partition: i32,
    value: OffsetValue,
    error: Option<ResponseError>,
}

impl Commit {
    /// One partition's commit of request topic `topic` (index, name),
    /// checked as Kafka checks it: a known partition, metadata within
    /// `offset.metadata.max.bytes`, an offset not below 0.
    fn checked(
        image: &keel_controller_client::Image,
        topic: (usize, &str),
        partition: i32,
        offset: i64,
        leader_epoch: i32,
        metadata: Option<&StrBytes>,
        now: i64,
    ) -> Commit {
        let known = image
            .topics
            .get(topic.1)
            .is_some_and(|record| partition >= 0 && (partition as usize) < record.partitions.len());
        let metadata = metadata.map(|m| m.to_string()).unwrap_or_default();
        let error = if !known {
            Some(ResponseError::UnknownTopicOrPartition)
        } else if metadata.len() > METADATA_BYTES_MAX {
            Some(ResponseError::OffsetMetadataTooLarge)
        } else if offset < 0 {
            Some(ResponseError::OffsetOutOfRange)
        } else {
            None
        };
        let value = OffsetValue { offset, leader_epoch, metadata, commit_timestamp: now };
        Commit { topic: topic.0, name: topic.1.to_owned(), partition, value, error }
    }

    fn key(&self) -> (String, i32) {
        (self.name.clone(), self.partition)
    }
}

/// The `__consumer_offsets` records of a group's accepted commits.
fn offset_records(group: &str, commits: &[Commit]) -> Vec<Entry> {
    commits
        .iter()
        .filter(|c| c.error.is_none())
        .map(|c| {
            let key = Key::Offset { group: group.to_owned(), topic: c.name.clone(), partition: c.partition };
            (records::encode_key(&key), Some(records::encode_offset(&c.value)))
        })
        .collect()
}

pub(super) async fn offset_commit(
    broker: &Arc<Broker>,
    request: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    let group_id = request.group_id.0.to_string();
    let generation = if version >= 1 { request.generation_id_or_member_epoch } else { -1 };
    let member_id = request.member_id.to_string();
    let instance = request.group_instance_id.as_ref().map(|i| i.to_string());
    let image = broker.image();
    let now = crate::groups::now_ms();
    let mut commits: Vec<Commit> = Vec::new();
    for (t, topic) in request.topics.iter().enumerate() {
        for p in &topic.partitions {
            let epoch = if version >= 6 { p.committed_leader_epoch } else { -1 };
            let (partition, offset, metadata) = (p.partition_index, p.committed_offset, p.committed_metadata.as_ref());
            commits.push(Commit::checked(&image, (t, &topic.name.0), partition, offset, epoch, metadata, now));
        }
    }
    // Beyond the log end: refused, as a consumer only commits what it read.
    let wanted: Vec<(String, i32)> = commits.iter().filter(|c| c.error.is_none()).map(Commit::key).collect();
    let ends = crate::peers::end_offsets(broker, &wanted).await;
    for commit in commits.iter_mut().filter(|c| c.error.is_none()) {
        let key = commit.key();
        if ends.get(&key).is_some_and(|end| commit.value.offset > *end) {
            commit.error = Some(ResponseError::OffsetOutOfRange);
        }
    }
    // Checked and appended under the groups' lock: commits reach the log in
    // the order they were accepted.
    let appended = (|| {
        let mut locked = broker.groups.lock(broker, &group_id)?;
        let partition = locked.partition;
        let exists = locked.groups().contains_key(&group_id);
        if !exists && generation >= 0 {
            return Err(ResponseError::IllegalGeneration);
        }
        let group = locked.group_or_new(&group_id, &broker.groups.settings);
        match &group.kind {
            Kind::Classic(classic) => {
                classic.check_commit(&member_id, instance.as_deref(), generation)?;
                if let Some(owned) = classic.owned_partitions(&member_id) {
                    for commit in commits.iter_mut().filter(|c| c.error.is_none()) {
                        if !owned.contains(&commit.key()) {
                            commit.error = Some(ResponseError::IllegalGeneration);
                        }
                    }
                }
            }
            Kind::Consumer(consumer) => consumer.check_commit(&member_id, generation)?,
        }
        let writes = offset_records(&group_id, &commits);
        if writes.is_empty() {
            return Ok(None);
        }
        group.commits_appended += 1;
        Ok(Some((Coordinator::append(broker, partition, writes), group.commits_appended)))
    })();
    match appended {
        Err(error) => {
            for commit in &mut commits {
                commit.error = commit.error.or(Some(error));
            }
        }
        Ok(None) => {}
        Ok(Some((appended, sequence))) => {
            let started = Instant::now();
            let written = appended.durable().await;
            broker.metrics.offset_commit_seconds.observe(started.elapsed().as_secs_f64());
            match written {
                Ok(()) => {
                    if let Ok(mut locked) = broker.groups.lock(broker, &group_id) {
                        let group = locked.group_or_new(&group_id, &broker.groups.settings);
                        for commit in commits.iter().filter(|c| c.error.is_none()) {
                            let key = commit.key();
                            group.commit_durable(key, commit.value.clone(), sequence);
                        }
                    }
                }
                Err(error) => {
                    for commit in commits.iter_mut().filter(|c| c.error.is_none()) {
                        commit.error = Some(error);
                    }
                }
            }
        }
    }
    let mut topics: Vec<offset_commit_response::OffsetCommitResponseTopic> = request
        .topics
        .iter()
        .map(|t| offset_commit_response::OffsetCommitResponseTopic::default().with_name(t.name.clone()))
        .collect();
    for commit in commits {
        if let Some(error) = commit.error {
            super::count_error(broker, "OffsetCommit", error);
        }
        topics[commit.topic].partitions.push(
            offset_commit_response::OffsetCommitResponsePartition::default()
                .with_partition_index(commit.partition)
                .with_error_code(code(commit.error)),
        );
    }
    OffsetCommitResponse::default().with_topics(topics)
}

/// `TxnOffsetCommit`: offsets committed as part of a transaction (KIP-98,
/// `sendOffsetsToTransaction`). They are written to the group's partition
/// as the producer's transactional records once the transaction
/// coordinator confirms the partition is in its transaction
/// (`AddOffsetsToTxn`), and become the group's offsets only when the
/// commit marker lands there (`groups::Coordinator::txn_ended`).
pub(super) async fn txn_offset_commit(
    broker: &Arc<Broker>,
    request: TxnOffsetCommitRequest,
    version: i16,
) -> TxnOffsetCommitResponse {
    let group_id = request.group_id.0.to_string();
    let transactional_id = request.transactional_id.0.to_string();
    let (producer_id, epoch) = (request.producer_id.0, request.producer_epoch);
    let generation = if version >= 3 { request.generation_id } else { -1 };
    let member_id = request.member_id.to_string();
    let instance = request.group_instance_id.as_ref().map(|i| i.to_string());
    let image = broker.image();
    let now = crate::groups::now_ms();
    let mut commits: Vec<Commit> = Vec::new();
    for (t, topic) in request.topics.iter().enumerate() {
        for p in &topic.partitions {
            let epoch = if version >= 2 { p.committed_leader_epoch } else { -1 };
            let (partition, offset, metadata) = (p.partition_index, p.committed_offset, p.committed_metadata.as_ref());
            commits.push(Commit::checked(&image, (t, &topic.name.0), partition, offset, epoch, metadata, now));
        }
    }
    let fenced = |error: ResponseError| match error {
        ResponseError::ProducerFenced | ResponseError::InvalidProducerEpoch if version < 3 => {
            ResponseError::InvalidProducerEpoch
        }
        ResponseError::InvalidProducerEpoch => ResponseError::ProducerFenced,
        other => other,
    };
    // KIP-890 for offsets: the group's partition must be in the transaction
    // (AddOffsetsToTxn), and no marker may land between the check and the write.
    let verified = match Coordinator::partition_of(&image, &group_id) {
        None => Err(ResponseError::CoordinatorNotAvailable),
        Some(partition) => {
            let wanted = [(OFFSETS_TOPIC.to_owned(), partition)];
            let token = crate::txn::begin_verification(broker, OFFSETS_TOPIC, partition, (producer_id, epoch));
            match (
                token,
                crate::txn::markers::verify(broker, &image, &transactional_id, producer_id, epoch, &wanted).await,
            ) {
                (None, _) => Err(ResponseError::NotCoordinator),
                (Some(token), Ok(confirmed)) if confirmed.contains(&wanted[0]) => Ok(token),
                (_, Ok(_)) => Err(ResponseError::InvalidTxnState),
                (_, Err(crate::txn::markers::Unverified::Unreachable(_))) => {
                    Err(ResponseError::CoordinatorNotAvailable)
                }
                (_, Err(crate::txn::markers::Unverified::Failed(error))) => {
                    tracing::debug!(group = %group_id, "cannot verify a transactional offset commit: {error:#}");
                    Err(ResponseError::CoordinatorNotAvailable)
                }
            }
        }
    };
    let appended = verified.and_then(|token| {
        let mut locked = broker.groups.lock(broker, &group_id)?;
        let partition = locked.partition;
        if generation >= 0 || !member_id.is_empty() {
            // KIP-447: a zombie member of an older generation is refused.
            let group = locked.groups().get(&group_id).ok_or(ResponseError::IllegalGeneration)?;
            match &group.kind {
                Kind::Classic(classic) => classic.check_commit(&member_id, instance.as_deref(), generation)?,
                Kind::Consumer(consumer) => consumer.check_commit(&member_id, generation)?,
            }
        }
        let writes = offset_records(&group_id, &commits);
        if writes.is_empty() {
            return Ok(None);
        }
        // Its place among the group's commits (a plain commit after it wins).
        let group = locked.group_or_new(&group_id, &broker.groups.settings);
        group.commits_appended += 1;
        let sequence = group.commits_appended;
        let appended = Coordinator::append_as(broker, partition, writes, Some((producer_id, epoch, token)));
        Ok(Some((partition, appended, sequence)))
    });
    let result = match appended {
        Err(error) => Err(error),
        Ok(None) => Ok(()),
        Ok(Some((partition, appended, sequence))) => match appended.durable_or(fenced).await {
            Ok(()) => {
                let offsets =
                    commits.iter().filter(|c| c.error.is_none()).map(|c| (c.key(), c.value.clone())).collect();
                broker.groups.txn_offsets_written(partition, producer_id, &group_id, offsets, sequence);
                Ok(())
            }
            Err(error) => Err(error),
        },
    };
    let mut topics: Vec<txn_offset_commit_response::TxnOffsetCommitResponseTopic> = request
        .topics
        .iter()
        .map(|t| txn_offset_commit_response::TxnOffsetCommitResponseTopic::default().with_name(t.name.clone()))
        .collect();
    for commit in commits {
        let error = commit.error.or(result.err());
        if let Some(error) = error {
            super::count_error(broker, "TxnOffsetCommit", error);
        }
        topics[commit.topic].partitions.push(
            txn_offset_commit_response::TxnOffsetCommitResponsePartition::default()
                .with_partition_index(commit.partition)
                .with_error_code(code(error)),
        );
    }
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// A topic's committed offsets by partition (`None`: nothing committed),
/// or UNSTABLE_OFFSET_COMMIT.
type TopicOffsets = (String, Vec<(i32, Result<Option<OffsetValue>, ResponseError>)>);

/// A group's committed offsets for `wanted` (topic, partitions; `None`:
/// all). With `require_stable` (KIP-447), a partition with an offset
/// committed in a transaction still open is UNSTABLE_OFFSET_COMMIT, which
/// the client retries.
fn fetch_offsets(
    broker: &Broker,
    group_id: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
    member: Option<(String, i32)>,
    require_stable: bool,
) -> Result<Vec<TopicOffsets>, ResponseError> {
    let mut locked = broker.groups.lock(broker, group_id)?;
    let Some(group) = locked.groups().get(group_id) else {
        return Ok(wanted
            .unwrap_or_default()
            .into_iter()
            .map(|(topic, partitions)| (topic, partitions.into_iter().map(|p| (p, Ok(None))).collect()))
            .collect());
    };
    if let (Some((member_id, epoch)), Kind::Consumer(consumer)) = (member, &group.kind) {
        consumer.check_commit(&member_id, epoch)?;
    }
    let wanted = wanted.unwrap_or_else(|| {
        let mut all: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for (topic, partition) in group.offsets.keys() {
            all.entry(topic.clone()).or_default().push(*partition);
        }
        all.into_iter().collect()
    });
    Ok(wanted
        .into_iter()
        .map(|(topic, partitions)| {
            let found = partitions
                .into_iter()
                .map(|p| {
                    let key = (topic.clone(), p);
                    if require_stable && group.has_pending(&key) {
                        return (p, Err(ResponseError::UnstableOffsetCommit));
                    }
                    (p, Ok(group.offsets.get(&key).cloned()))
                })
                .collect();
            (topic, found)
        })
        .collect())
}

pub(super) fn offset_fetch(broker: &Arc<Broker>, request: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = request.groups.iter().map(|wanted| fetch_group(broker, wanted, request.require_stable)).collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics = request
        .topics
        .as_ref()
        .map(|ts| ts.iter().map(|t| (t.name.0.to_string(), t.partition_indexes.clone())).collect());
    let requested = topics.clone();
    let require_stable = version >= 7 && request.require_stable;
    let (found, error) = match fetch_offsets(broker, &request.group_id.0, topics, None, require_stable) {
        Ok(found) => (found, None),
        Err(error) => {
            super::count_error(broker, "OffsetFetch", error);
            if version >= 2 {
                return OffsetFetchResponse::default().with_error_code(error.code());
            }
            // v0-1 carry errors per partition only.
            let nothing: Vec<TopicOffsets> = requested
                .unwrap_or_default()
                .into_iter()
                .map(|(topic, partitions)| (topic, partitions.into_iter().map(|p| (p, Ok(None))).collect()))
                .collect();
            (nothing, Some(error))
        }
    };
    let topics = found
        .into_iter()
        .map(|(topic, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(p, value)| {
                    let partition_error = value.as_ref().err().copied().or(error);
                    let (offset, epoch, metadata) = parts(value.unwrap_or(None));
                    offset_fetch_response::OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(if version >= 5 { epoch } else { -1 })
                        .with_metadata(Some(text(metadata)))
                        .with_error_code(code(partition_error))
                })
                .collect();
            offset_fetch_response::OffsetFetchResponseTopic::default()
                .with_name(TopicName(text(topic)))
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

/// One group of an OffsetFetch v8+.
fn fetch_group(
    broker: &Broker,
    wanted: &offset_fetch_request::OffsetFetchRequestGroup,
    require_stable: bool,
) -> offset_fetch_response::OffsetFetchResponseGroup {
    let topics = wanted
        .topics
        .as_ref()
        .map(|ts| ts.iter().map(|t| (t.name.0.to_string(), t.partition_indexes.clone())).collect());
    let member = wanted.member_id.as_ref().map(|m| (m.to_string(), wanted.member_epoch));
    let response = offset_fetch_response::OffsetFetchResponseGroup::default().with_group_id(wanted.group_id.clone());
    let found = match fetch_offsets(broker, &wanted.group_id.0, topics, member, require_stable) {
        Ok(found) => found,
        Err(error) => {
            super::count_error(broker, "OffsetFetch", error);
            return response.with_error_code(error.code());
        }
    };
    let topics = found
        .into_iter()
        .map(|(topic, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(p, value)| {
                    let partition_error = value.as_ref().err().copied();
                    let (offset, epoch, metadata) = parts(value.unwrap_or(None));
                    offset_fetch_response::OffsetFetchResponsePartitions::default()
                        .with_error_code(code(partition_error))
                        .with_partition_index(p)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(epoch)
                        .with_metadata(Some(text(metadata)))
                })
                .collect();
            offset_fetch_response::OffsetFetchResponseTopics::default()
                .with_name(TopicName(text(topic)))
                .with_partitions(partitions)
        })
        .collect();
    response.with_topics(topics)
}

fn parts(value: Option<OffsetValue>) -> (i64, i32, String) {
    match value {
        Some(value) => (value.offset, value.leader_epoch, value.metadata),
        None => (-1, -1, String::new()),
    }
}

/// The topics a group's members subscribe to.
fn subscribed_topics(group: &Group) -> BTreeSet<String> {
    match &group.kind {
        Kind::Consumer(consumer) => consumer.members.values().flat_map(|m| m.subscribed.iter().cloned()).collect(),
        Kind::Classic(classic) => classic.subscribed_topics(),
    }
}

pub(super) async fn offset_delete(broker: &Arc<Broker>, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group_id = request.group_id.0.to_string();
    let checked = (|| {
        let mut locked = broker.groups.lock(broker, &group_id)?;
        let partition = locked.partition;
        let group = locked.groups().get(&group_id).ok_or(ResponseError::GroupIdNotFound)?;
        if let Kind::Classic(classic) = &group.kind {
            if !classic.is_empty() && classic.protocol_type.as_deref() != Some("consumer") {
                return Err(ResponseError::NonEmptyGroup);
            }
        }
        Ok((partition, subscribed_topics(group)))
    })();
    let (partition, subscribed) = match checked {
        Ok(checked) => checked,
        Err(error) => {
            super::count_error(broker, "OffsetDelete", error);
            return OffsetDeleteResponse::default().with_error_code(error.code());
        }
    };
    let mut tombstones = Vec::new();
    let topics: Vec<_> = request
        .topics
        .iter()
        .map(|topic| {
            let busy = subscribed.contains(topic.name.0.as_str());
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let answer = offset_delete_response::OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index);
                    if busy {
                        return answer.with_error_code(ResponseError::GroupSubscribedToTopic.code());
                    }
                    let key = Key::Offset {
                        group: group_id.clone(),
                        topic: topic.name.0.to_string(),
                        partition: p.partition_index,
                    };
                    tombstones.push((records::encode_key(&key), None));
                    answer
                })
                .collect();
            offset_delete_response::OffsetDeleteResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    if !tombstones.is_empty() {
        if let Err(error) = append_locked(broker, &group_id, partition, tombstones).await {
            return OffsetDeleteResponse::default().with_error_code(error.code());
        }
        if let Ok(mut locked) = broker.groups.lock(broker, &group_id) {
            if let Some(group) = locked.groups().get_mut(&group_id) {
                for topic in request.topics.iter().filter(|t| !subscribed.contains(t.name.0.as_str())) {
                    for p in &topic.partitions {
                        group.offsets.remove(&(topic.name.0.to_string(), p.partition_index));
                    }
                }
            }
        }
    }
    OffsetDeleteResponse::default().with_topics(topics)
}

pub(super) fn describe_groups(
    broker: &Arc<Broker>,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let image = broker.image();
    let groups = request
        .groups
        .iter()
        .map(|id| {
            let described = describe_groups_response::DescribedGroup::default().with_group_id(id.clone());
            let mut locked = match broker.groups.lock(broker, &id.0) {
                Ok(locked) => locked,
                Err(error) => return described.with_error_code(error.code()).with_group_state(text("")),
            };
            let Some(group) = locked.groups().get(id.0.as_str()) else {
                let described = described.with_group_state(text("Dead"));
                return if version >= 6 {
                    described
                        .with_error_code(ResponseError::GroupIdNotFound.code())
                        .with_error_message(Some(text(format!("group {} does not exist", id.0))))
                } else {
                    described
                };
            };
            let described = described.with_group_state(text(group.state()));
            match &group.kind {
                Kind::Classic(classic) => {
                    let protocol = classic.protocol.clone().unwrap_or_default();
                    let members = classic
                        .members
                        .values()
                        .map(|m| {
                            describe_groups_response::DescribedGroupMember::default()
                                .with_member_id(text(m.id.clone()))
                                .with_group_instance_id(if version >= 4 {
                                    m.instance_id.clone().map(text)
                                } else {
                                    None
                                })
                                .with_client_id(text(m.client_id.clone()))
                                .with_client_host(text(m.client_host.clone()))
                                .with_member_metadata(m.metadata(&protocol))
                                .with_member_assignment(m.assignment.clone())
                        })
                        .collect();
                    described
                        .with_protocol_type(text(classic.protocol_type.clone().unwrap_or_default()))
                        .with_protocol_data(text(protocol))
                        .with_members(members)
                }
                Kind::Consumer(consumer) => {
                    let members = consumer
                        .members
                        .values()
                        .map(|m| {
                            describe_groups_response::DescribedGroupMember::default()
                                .with_member_id(text(m.id.clone()))
                                .with_group_instance_id(if version >= 4 {
                                    m.instance_id.clone().map(text)
                                } else {
                                    None
                                })
                                .with_client_id(text(m.client_id.clone()))
                                .with_client_host(text(m.client_host.clone()))
                                .with_member_metadata(subscription_bytes(&m.subscribed))
                                .with_member_assignment(assignment_bytes(&image, &m.assigned))
                        })
                        .collect();
                    described
                        .with_protocol_type(text("consumer"))
                        .with_protocol_data(text(consumer.assignor()))
                        .with_members(members)
                }
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

pub(super) fn consumer_group_describe(
    broker: &Arc<Broker>,
    request: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    use consumer_group_describe_response::{Assignment, DescribedGroup, Member, TopicPartitions};
    let image = broker.image();
    let partitions = |assigned: &BTreeSet<consumer::TopicPartition>| {
        let mut by_topic: BTreeMap<uuid::Uuid, Vec<i32>> = BTreeMap::new();
        for (topic, partition) in assigned {
            by_topic.entry(*topic).or_default().push(*partition);
        }
        let topic_partitions = by_topic
            .into_iter()
            .map(|(id, partitions)| {
                let name =
                    image.topic_by_id(keel_controller_client::TopicId(id)).map(|t| t.name.clone()).unwrap_or_default();
                TopicPartitions::default()
                    .with_topic_id(id)
                    .with_topic_name(TopicName(text(name)))
                    .with_partitions(partitions)
            })
            .collect();
        Assignment::default().with_topic_partitions(topic_partitions)
    };
    let groups = request
        .group_ids
        .iter()
        .map(|id| {
            let described = DescribedGroup::default().with_group_id(id.clone());
            let mut locked = match broker.groups.lock(broker, &id.0) {
                Ok(locked) => locked,
                Err(error) => return described.with_error_code(error.code()),
            };
            let Some(Group { kind: Kind::Consumer(consumer), .. }) = locked.groups().get(id.0.as_str()) else {
                return described
                    .with_error_code(ResponseError::GroupIdNotFound.code())
                    .with_error_message(Some(text(format!("{} is not a consumer-protocol group", id.0))));
            };
            let members = consumer
                .members
                .values()
                .map(|m| {
                    Member::default()
                        .with_member_id(text(m.id.clone()))
                        .with_instance_id(m.instance_id.clone().map(text))
                        .with_member_epoch(m.epoch)
                        .with_client_id(text(m.client_id.clone()))
                        .with_client_host(text(m.client_host.clone()))
                        .with_subscribed_topic_names(m.subscribed.iter().map(|t| TopicName(text(t.clone()))).collect())
                        .with_subscribed_topic_regex(m.regex.as_ref().map(|r| text(r.text.clone())))
                        .with_assignment(partitions(&m.assigned))
                        .with_target_assignment(partitions(&consumer.target_of(&m.id)))
                        .with_member_type(1)
                })
                .collect();
            described
                .with_group_state(text(consumer.state()))
                .with_group_epoch(consumer.epoch)
                .with_assignment_epoch(consumer.assignment_epoch())
                .with_assignor_name(text(consumer.assignor()))
                .with_members(members)
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}

/// Topics as a classic `ConsumerProtocolSubscription` (v0).
fn subscription_bytes(topics: &[String]) -> Bytes {
    let subscription =
        ConsumerProtocolSubscription::default().with_topics(topics.iter().map(|t| text(t.clone())).collect());
    versioned(&subscription)
}

/// Partitions as a classic `ConsumerProtocolAssignment` (v0), topics by name.
fn assignment_bytes(image: &keel_controller_client::Image, assigned: &BTreeSet<consumer::TopicPartition>) -> Bytes {
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (topic_id, partition) in assigned {
        if let Some(topic) = image.topic_by_id(keel_controller_client::TopicId(*topic_id)) {
            by_topic.entry(topic.name.clone()).or_default().push(*partition);
        }
    }
    let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
        by_topic
            .into_iter()
            .map(|(topic, partitions)| {
                consumer_protocol_assignment::TopicPartition::default()
                    .with_topic(TopicName(text(topic)))
                    .with_partitions(partitions)
            })
            .collect(),
    );
    versioned(&assignment)
}

/// A consumer-protocol structure as the clients write it: version 0, then the body.
fn versioned<T: Encodable>(value: &T) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(0);
    if value.encode(&mut out, 0).is_err() {
        return Bytes::new();
    }
    out.freeze()
}

pub(super) fn list_groups(broker: &Arc<Broker>, request: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let states: HashMap<String, ()> =
        request.states_filter.iter().map(|s| (s.to_string().to_lowercase(), ())).collect();
    let types: HashMap<String, ()> = request.types_filter.iter().map(|s| (s.to_string().to_lowercase(), ())).collect();
    let groups = broker
        .groups
        .list()
        .into_iter()
        .filter(|(_, state, _, _)| version < 4 || states.is_empty() || states.contains_key(&state.to_lowercase()))
        .filter(|(_, _, _, consumer)| {
            let kind = if *consumer { "consumer" } else { "classic" };
            version < 5 || types.is_empty() || types.contains_key(kind)
        })
        .map(|(id, state, protocol_type, consumer)| {
            let mut listed = list_groups_response::ListedGroup::default()
                .with_group_id(GroupId(text(id)))
                .with_protocol_type(text(protocol_type));
            if version >= 4 {
                listed = listed.with_group_state(text(state));
            }
            if version >= 5 {
                listed = listed.with_group_type(text(if consumer { "consumer" } else { "classic" }));
            }
            listed
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub(super) async fn delete_groups(broker: &Arc<Broker>, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for id in &request.groups_names {
        let group_id = id.0.to_string();
        let checked = (|| {
            let mut locked = broker.groups.lock(broker, &group_id)?;
            let partition = locked.partition;
            let group = locked.groups().get(&group_id).ok_or(ResponseError::GroupIdNotFound)?;
            if !group.is_empty() {
                return Err(ResponseError::NonEmptyGroup);
            }
            let mut tombstones: Vec<Entry> = group
                .offsets
                .keys()
                .map(|(topic, p)| {
                    let key = Key::Offset { group: group_id.clone(), topic: topic.clone(), partition: *p };
                    (records::encode_key(&key), None)
                })
                .collect();
            tombstones.extend(crate::groups::group_tombstones(&group_id));
            Ok((partition, tombstones))
        })();
        let result = match checked {
            Err(error) => Err(error),
            Ok((partition, tombstones)) => match append_locked(broker, &group_id, partition, tombstones).await {
                Ok(()) => {
                    if let Ok(mut locked) = broker.groups.lock(broker, &group_id) {
                        if locked.groups().get(&group_id).is_some_and(Group::is_empty) {
                            locked.groups().remove(&group_id);
                        }
                    }
                    tracing::info!(group = %group_id, "deleted the group");
                    Ok(())
                }
                Err(error) => Err(error),
            },
        };
        if let Err(error) = result {
            super::count_error(broker, "DeleteGroups", error);
        }
        results.push(
            delete_groups_response::DeletableGroupResult::default()
                .with_group_id(id.clone())
                .with_error_code(code(result.err())),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

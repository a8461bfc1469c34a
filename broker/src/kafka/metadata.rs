//! `Metadata`: brokers and partition leaders from the broker's metadata
//! image. A partition whose leader failed shows, until the controller
//! assigns its new leader, the broker it will assign (`Image::planned_leaders`,
//! at the leader epoch it will assign, one above the current): clients send their produce
//! there at once, and that broker holds it until it leads the partition
//! (`produce::await_planned`), instead of polling for a leader with growing
//! backoffs. (librdkafka still loses about 1 s: the answer that moves the
//! partitions also drops the fenced broker from the list, and tearing that
//! broker down takes the partitions back to "no leader" until its next
//! leader query; listing the fenced broker longer kept its client handle,
//! with a reconnect backoff of seconds, past the broker's restart.) Unknown topics are created when the client allows it and the
//! broker's `auto_create_topics` (Kafka's `auto.create.topics.enable`) is
//! on, with `default_partitions` partitions (Kafka's `num.partitions`).

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use keel_controller_client::{pb, ClientError, Image, MetaError, NodeState, Partition, Topic, TopicId};

use crate::broker::Broker;

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    request: MetadataRequest,
    version: i16,
    listener: &str,
) -> MetadataResponse {
    let mut image = broker.cluster.image();
    // Before v1 an empty list meant every topic; from v1 that is `None`.
    let wanted: Option<Vec<(Option<String>, uuid::Uuid)>> = match request.topics {
        None => None,
        Some(topics) if topics.is_empty() && version == 0 => None,
        Some(topics) => Some(topics.into_iter().map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id)).collect()),
    };
    let auto_create = broker.cluster.config.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
    if let (Some(wanted), true) = (&wanted, auto_create) {
        let missing: Vec<&String> = wanted
            .iter()
            .filter_map(|(name, _)| name.as_ref())
            .filter(|name| !image.topics.contains_key(*name))
            .collect();
        for name in missing {
            image = auto_create_topic(broker, name).await.unwrap_or(image);
        }
    }
    let mut shown = Leaders::default();
    let asked_topic_ops = version >= 8 && request.include_topic_authorized_operations;
    let asked_cluster_ops = (8..=10).contains(&version) && request.include_cluster_authorized_operations;
    let topics = match wanted {
        None => {
            image.topics.values().map(|topic| describe(&image, &mut shown, topic, version, asked_topic_ops)).collect()
        }
        Some(wanted) => wanted
            .into_iter()
            .map(|(name, id)| {
                let found = match &name {
                    Some(name) => image.topics.get(name),
                    None => image.topic_by_id(keel_controller_client::TopicId(id)),
                };
                match found {
                    Some(topic) => describe(&image, &mut shown, topic, version, asked_topic_ops),
                    None => MetadataResponseTopic::default()
                        .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        .with_name(name.map(|n| TopicName(StrBytes::from_string(n))))
                        .with_topic_id(if version >= 10 { id } else { uuid::Uuid::nil() }),
                }
            })
            .collect(),
    };
    MetadataResponse::default()
        .with_brokers(brokers(&image, version, listener))
        .with_cluster_id((version >= 2).then(|| StrBytes::from_string(broker.cluster.config.cluster_id.clone())))
        // Any broker takes admin requests and forwards them to the controller quorum.
        .with_controller_id(BrokerId(if version >= 1 { broker.cluster.config.node_id.0 as i32 } else { -1 }))
        .with_topics(topics)
        .with_cluster_authorized_operations(super::authorized::cluster(asked_cluster_ops))
}

async fn auto_create_topic(broker: &Broker, name: &str) -> Option<Arc<Image>> {
    let partitions = broker.cluster.config.default_partitions;
    let request = pb::CreateTopicRequest { name: name.to_string(), partitions, ..Default::default() };
    let mut images = broker.cluster.images.clone();
    match broker.cluster.client.create_topic(request).await {
        Ok((version, _)) => broker.cluster.seen(version).await.ok(),
        // Created a moment ago by someone else: wait until this broker's metadata shows it.
        Err(ClientError::Meta(MetaError::TopicAlreadyExists { .. })) => {
            let shown = images.wait_for(|image| image.topics.contains_key(name));
            match tokio::time::timeout(Duration::from_secs(5), shown).await {
                Ok(Ok(image)) => Some(image.clone()),
                _ => None,
            }
        }
        Err(error) => {
            tracing::info!(topic = name, "could not auto-create a topic: {error}");
            None
        }
    }
}

/// The active brokers with their address on `listener`, the one the client
/// connected to; a broker without it is left out, as in Kafka.
/// (`rack` exists from v1.)
pub(crate) fn brokers(image: &Image, version: i16, listener: &str) -> Vec<MetadataResponseBroker> {
    image
        .brokers
        .values()
        .filter(|node| node.state == NodeState::Active)
        .filter_map(|node| {
            let (host, port) = kafka_endpoint(node, listener)?;
            Some(
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(node.id.0 as i32))
                    .with_host(StrBytes::from_string(host))
                    .with_port(port)
                    .with_rack((version >= 1).then(|| StrBytes::from_string(node.zone.clone()))),
            )
        })
        .collect()
}

/// A broker's address on Kafka listener `listener` as (host, port).
pub(crate) fn kafka_endpoint(node: &keel_controller_client::NodeRecord, listener: &str) -> Option<(String, i32)> {
    let (host, port) = node.kafka_address(listener)?.rsplit_once(':')?;
    Some((host.to_string(), port.parse().ok()?))
}

/// Partition `index`'s (leader, leader epoch) as clients should see them,
/// for errors that tell a client where to go (KIP-951); (-1, -1) if unknown.
pub(crate) fn current_leader(image: &Image, topic: &Topic, index: i32) -> (i32, i32) {
    match usize::try_from(index).ok().and_then(|i| topic.partitions.get(i)) {
        Some(partition) => {
            Leaders::default().of(image, topic, index as u32, partition).unwrap_or((-1, partition.leader_epoch.0))
        }
        None => (-1, -1),
    }
}

/// The leaders of partitions as clients should see them, planned ones
/// worked out once per request, and only if some partition has no leader.
#[derive(Default)]
pub(crate) struct Leaders {
    planned: Option<std::collections::HashMap<(TopicId, u32), i32>>,
}

impl Leaders {
    /// (leader, leader epoch): an active broker leading the partition, else
    /// the one planned to, at the epoch it will be assigned.
    pub(crate) fn of(&mut self, image: &Image, topic: &Topic, index: u32, partition: &Partition) -> Option<(i32, i32)> {
        match partition.leader {
            Some(leader) => {
                let node = image.brokers.get(&leader)?;
                (node.state == NodeState::Active).then_some((leader.0 as i32, partition.leader_epoch.0))
            }
            None => {
                let planned = self.planned.get_or_insert_with(|| {
                    let plan = image.planned_leaders().into_iter();
                    plan.map(|(topic, index, _, leader)| ((topic.id, index), leader.0 as i32)).collect()
                });
                let leader = planned.get(&(topic.id, index)).copied()?;
                Some((leader, partition.leader_epoch.0 + 1))
            }
        }
    }
}

fn describe(image: &Image, shown: &mut Leaders, topic: &Topic, version: i16, asked_ops: bool) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, partition)| {
            let leader = shown.of(image, topic, index as u32, partition);
            let replicas: Vec<BrokerId> = leader.map(|(id, _)| BrokerId(id)).into_iter().collect();
            let (leader_id, leader_epoch) = leader.unwrap_or((-1, partition.leader_epoch.0));
            MetadataResponsePartition::default()
                .with_error_code(if leader.is_some() { 0 } else { ResponseError::LeaderNotAvailable.code() })
                .with_partition_index(index as i32)
                .with_leader_id(BrokerId(leader_id))
                .with_leader_epoch(if version >= 7 { leader_epoch } else { -1 })
                .with_replica_nodes(replicas.clone())
                .with_isr_nodes(replicas)
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(if version >= 10 { topic.id.0 } else { uuid::Uuid::nil() })
        .with_is_internal(version >= 1 && keel_broker_core::groups::is_internal(&topic.name))
        .with_partitions(partitions)
        .with_topic_authorized_operations(super::authorized::topic(asked_ops))
}

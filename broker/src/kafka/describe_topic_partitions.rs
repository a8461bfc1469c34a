//! `DescribeTopicPartitions` (KIP-966), which Kafka 3.8+ admin clients use
//! to describe topics (`kafka-topics.sh --describe`): the named topics, or
//! all, sorted by name, with each partition's leader as Metadata shows it,
//! at most `response_partition_limit` partitions per answer and a cursor to
//! the next. A Keel partition's only replica is its leader; it has no
//! eligible-leader or offline replicas.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName};

use super::metadata::Leaders;
use super::text;
use crate::broker::Broker;

/// The most partitions one answer holds, as Kafka's default limit.
const PARTITIONS_MAX: usize = 2000;

pub(super) async fn handle(
    broker: &Arc<Broker>,
    request: DescribeTopicPartitionsRequest,
    _version: i16,
) -> DescribeTopicPartitionsResponse {
    let image = broker.cluster.image();
    let mut names: Vec<String> = if request.topics.is_empty() {
        image.topics.keys().cloned().collect()
    } else {
        request.topics.iter().map(|t| t.name.0.to_string()).collect()
    };
    names.sort();
    names.dedup();
    let (from_topic, from_partition) = match &request.cursor {
        Some(cursor) => (cursor.topic_name.0.to_string(), cursor.partition_index.max(0) as usize),
        None => (String::new(), 0),
    };
    let mut budget = usize::try_from(request.response_partition_limit).unwrap_or(0).clamp(1, PARTITIONS_MAX);
    let mut shown = Leaders::default();
    let mut topics = Vec::new();
    let mut next = None;
    for name in names.into_iter().filter(|name| *name >= from_topic) {
        let Some(topic) = image.topics.get(&name) else {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                    .with_name(Some(TopicName(text(name)))),
            );
            continue;
        };
        let first = if name == from_topic { from_partition } else { 0 };
        if budget == 0 {
            next = Some(Cursor::default().with_topic_name(TopicName(text(name))).with_partition_index(first as i32));
            break;
        }
        let mut partitions = Vec::new();
        for (index, partition) in topic.partitions.iter().enumerate().skip(first) {
            if budget == 0 {
                next = Some(
                    Cursor::default().with_topic_name(TopicName(text(name.clone()))).with_partition_index(index as i32),
                );
                break;
            }
            budget -= 1;
            let leader = shown.of(&image, topic, index as u32, partition);
            let replicas: Vec<BrokerId> = leader.map(|(id, _)| BrokerId(id)).into_iter().collect();
            let (leader_id, leader_epoch) = leader.unwrap_or((-1, partition.leader_epoch.0));
            partitions.push(
                DescribeTopicPartitionsResponsePartition::default()
                    .with_error_code(if leader.is_some() { 0 } else { ResponseError::LeaderNotAvailable.code() })
                    .with_partition_index(index as i32)
                    .with_leader_id(BrokerId(leader_id))
                    .with_leader_epoch(leader_epoch)
                    .with_replica_nodes(replicas.clone())
                    .with_isr_nodes(replicas)
                    .with_eligible_leader_replicas(Some(Vec::new()))
                    .with_last_known_elr(Some(Vec::new())),
            );
        }
        topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(TopicName(text(name.clone()))))
                .with_topic_id(topic.id.0)
                .with_is_internal(keel_broker_core::groups::is_internal(&name))
                .with_partitions(partitions)
                .with_topic_authorized_operations(super::authorized::topic(true)),
        );
        if next.is_some() {
            break;
        }
    }
    DescribeTopicPartitionsResponse::default().with_topics(topics).with_next_cursor(next)
}

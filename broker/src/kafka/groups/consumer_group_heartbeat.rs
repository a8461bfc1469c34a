//! `ConsumerGroupHeartbeat` (KIP-848): a member's subscription and owned
//! partitions in, its epoch and (when it changed) its assignment out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use keel_broker_core::groups::consumer::Heartbeat;

use crate::broker::Broker;
use crate::kafka::{text, Client};

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    request: ConsumerGroupHeartbeatRequest,
    _version: i16,
    client: &Client,
) -> ConsumerGroupHeartbeatResponse {
    let heartbeat = Heartbeat {
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
    match broker.groups.consumer_heartbeat(&request.group_id.0, heartbeat).await {
        Ok(answer) => ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(text(answer.member_id)))
            .with_member_epoch(answer.member_epoch)
            .with_heartbeat_interval_ms(broker.groups.settings.consumer_heartbeat_interval.as_millis() as i32)
            .with_assignment(answer.assignment.map(|assigned| {
                let mut by_topic: BTreeMap<uuid::Uuid, Vec<i32>> = BTreeMap::new();
                for (topic, partition) in assigned {
                    by_topic.entry(topic).or_default().push(partition);
                }
                Assignment::default().with_topic_partitions(
                    by_topic
                        .into_iter()
                        .map(|(topic_id, partitions)| {
                            TopicPartitions::default().with_topic_id(topic_id).with_partitions(partitions)
                        })
                        .collect(),
                )
            })),
        Err((error, message)) => {
            broker.count_error("ConsumerGroupHeartbeat", error);
            ConsumerGroupHeartbeatResponse::default()
                .with_error_code(error.code())
                .with_error_message((!message.is_empty()).then(|| text(message)))
                .with_member_epoch(-1)
        }
    }
}

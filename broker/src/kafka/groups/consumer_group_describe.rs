//! `ConsumerGroupDescribe` (KIP-848): a consumer-protocol group's epochs,
//! assignor and members with their current and target assignments.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;
use keel_broker_core::groups::consumer;
use keel_broker_core::groups::{Group, Kind};

use crate::broker::Broker;
use crate::kafka::text;

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    request: ConsumerGroupDescribeRequest,
    _version: i16,
) -> ConsumerGroupDescribeResponse {
    use consumer_group_describe_response::{Assignment, DescribedGroup, Member, TopicPartitions};
    let image = broker.cluster.image();
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
            let described = DescribedGroup::default()
                .with_group_id(id.clone())
                .with_authorized_operations(crate::kafka::authorized::group(request.include_authorized_operations));
            let found = broker.groups.with_group(&id.0, |group| {
                let Some(Group { kind: Kind::Consumer(consumer), .. }) = group else {
                    return described
                        .clone()
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
                            .with_subscribed_topic_names(
                                m.subscribed.iter().map(|t| TopicName(text(t.clone()))).collect(),
                            )
                            .with_subscribed_topic_regex(m.regex.as_ref().map(|r| text(r.text.clone())))
                            .with_assignment(partitions(&m.assigned))
                            .with_target_assignment(partitions(&consumer.target_of(&m.id)))
                            .with_member_type(1)
                    })
                    .collect();
                described
                    .clone()
                    .with_group_state(text(consumer.state()))
                    .with_group_epoch(consumer.epoch)
                    .with_assignment_epoch(consumer.assignment_epoch())
                    .with_assignor_name(text(consumer.assignor()))
                    .with_members(members)
            });
            found.unwrap_or_else(|error| described.with_error_code(error.code()))
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}

//! `DescribeGroups`: a group's state, protocol and members, classic or
//! consumer protocol (whose members appear as a classic consumer group's).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Encodable;
use keel_broker_core::groups::consumer;
use keel_broker_core::groups::{Group, Kind};
use keel_controller_client::Image;

use crate::broker::Broker;
use crate::kafka::text;

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let image = broker.cluster.image();
    let groups = request
        .groups
        .iter()
        .map(|id| {
            let described = DescribedGroup::default()
                .with_group_id(id.clone())
                .with_authorized_operations(crate::kafka::authorized::group(request.include_authorized_operations));
            let described = broker.groups.with_group(&id.0, |group| describe(&image, &id.0, group, described, version));
            match described {
                Ok(described) => described,
                Err(error) => DescribedGroup::default()
                    .with_group_id(id.clone())
                    .with_error_code(error.code())
                    .with_group_state(text("")),
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

/// One group as DescribeGroups shows it.
fn describe(image: &Image, id: &str, group: Option<&Group>, described: DescribedGroup, version: i16) -> DescribedGroup {
    let Some(group) = group else {
        let described = described.with_group_state(text("Dead"));
        return if version >= 6 {
            described
                .with_error_code(ResponseError::GroupIdNotFound.code())
                .with_error_message(Some(text(format!("group {id} does not exist"))))
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
                    DescribedGroupMember::default()
                        .with_member_id(text(m.id.clone()))
                        .with_group_instance_id(if version >= 4 { m.instance_id.clone().map(text) } else { None })
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
                    DescribedGroupMember::default()
                        .with_member_id(text(m.id.clone()))
                        .with_group_instance_id(if version >= 4 { m.instance_id.clone().map(text) } else { None })
                        .with_client_id(text(m.client_id.clone()))
                        .with_client_host(text(m.client_host.clone()))
                        .with_member_metadata(subscription_bytes(&m.subscribed))
                        .with_member_assignment(assignment_bytes(image, &m.assigned))
                })
                .collect();
            described
                .with_protocol_type(text("consumer"))
                .with_protocol_data(text(consumer.assignor()))
                .with_members(members)
        }
    }
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

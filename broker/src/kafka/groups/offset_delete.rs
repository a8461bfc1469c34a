//! `OffsetDelete`: a group's offsets of some partitions, except those of
//! topics its members subscribe to.

use std::sync::Arc;

use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use crate::broker::Broker;
use crate::kafka::code;

pub(crate) async fn handle(broker: &Arc<Broker>, request: OffsetDeleteRequest, _version: i16) -> OffsetDeleteResponse {
    let wanted: Vec<(String, Vec<i32>)> = request
        .topics
        .iter()
        .map(|topic| (topic.name.0.to_string(), topic.partitions.iter().map(|p| p.partition_index).collect()))
        .collect();
    let errors = match broker.groups.delete_offsets(&request.group_id.0, &wanted).await {
        Ok(errors) => errors,
        Err(error) => {
            broker.count_error("OffsetDelete", error);
            return OffsetDeleteResponse::default().with_error_code(error.code());
        }
    };
    let topics = request
        .topics
        .iter()
        .zip(errors)
        .map(|(topic, errors)| {
            let partitions = topic
                .partitions
                .iter()
                .zip(errors)
                .map(|(p, error)| {
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code(error))
                })
                .collect();
            OffsetDeleteResponseTopic::default().with_name(topic.name.clone()).with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}

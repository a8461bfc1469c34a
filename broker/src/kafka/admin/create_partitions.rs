//! `CreatePartitions`: more partitions for a topic, never fewer.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::*;
use keel_controller_client::topic_rules::validate_partition_count;

use super::{kafka_error, meta_error, seen};
use crate::broker::Broker;
use crate::kafka::text;

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    request: CreatePartitionsRequest,
    _version: i16,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    let mut last = None;
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        let image = broker.cluster.image();
        let outcome = match image.topics.get(&name) {
            None => Err((ResponseError::UnknownTopicOrPartition, format!("unknown topic {name:?}"))),
            Some(_) if topic.assignments.is_some() => Err((
                ResponseError::InvalidRequest,
                "manual replica assignments are not supported: Keel places leaders itself".into(),
            )),
            Some(existing) if topic.count <= existing.partitions.len() as i32 => Err((
                ResponseError::InvalidPartitions,
                format!("topic {name:?} has {} partitions; the new count must be larger", existing.partitions.len()),
            )),
            Some(_) if request.validate_only => validate_partition_count(i64::from(topic.count)).map_err(meta_error),
            Some(_) => match broker.cluster.client.create_partitions(&name, topic.count).await {
                Ok((version, _)) => {
                    last = Some(version);
                    Ok(())
                }
                Err(error) => Err(kafka_error(error)),
            },
        };
        results.push(match outcome {
            Ok(()) => result,
            Err((error, message)) => {
                broker.count_error("CreatePartitions", error);
                result.with_error_code(error.code()).with_error_message(Some(text(message)))
            }
        });
    }
    if let Some(version) = last {
        seen(broker, version).await;
    }
    CreatePartitionsResponse::default().with_results(results)
}

//! `CreatePartitions`: more partitions for a topic, never fewer. A valid
//! manual assignment of the new partitions is accepted (leaders are Keel's
//! choice); `validate_only` checks everything and changes nothing.

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
        let checked = match image.topics.get(&name) {
            None => Err((ResponseError::UnknownTopicOrPartition, format!("unknown topic {name:?}"))),
            Some(existing) if topic.count <= existing.partitions.len() as i32 => Err((
                ResponseError::InvalidPartitions,
                format!("topic {name:?} has {} partitions; the new count must be larger", existing.partitions.len()),
            )),
            Some(existing) => {
                let added = topic.count - existing.partitions.len() as i32;
                match topic.assignments.as_deref() {
                    Some(assignments) if assignments.len() as i32 != added => Err((
                        ResponseError::InvalidReplicaAssignment,
                        format!(
                            "increasing the number of partitions by {added} but {} assignments provided",
                            assignments.len()
                        ),
                    )),
                    Some(assignments) => {
                        super::check_assignments(&image, assignments.iter().map(|a| a.broker_ids.as_slice()))
                    }
                    None => Ok(()),
                }
                .and_then(|()| validate_partition_count(i64::from(topic.count)).map_err(meta_error))
            }
        };
        let outcome = match checked {
            Err(error) => Err(error),
            Ok(()) if request.validate_only => Ok(()),
            Ok(()) => match broker.cluster.client.create_partitions(&name, topic.count).await {
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

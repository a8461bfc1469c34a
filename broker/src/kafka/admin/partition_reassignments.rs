//! `AlterPartitionReassignments` and `ListPartitionReassignments`: a Keel
//! partition has no replicas to move (its data is in the WAL across three
//! zones, then in the object store), so a valid reassignment is complete
//! the moment it is accepted and none is ever in progress. A bad one gets
//! Kafka's error; cancelling gets NO_REASSIGNMENT_IN_PROGRESS.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::*;

use crate::broker::Broker;
use crate::kafka::text;

pub(crate) async fn alter(
    broker: &Arc<Broker>,
    request: AlterPartitionReassignmentsRequest,
    _version: i16,
) -> AlterPartitionReassignmentsResponse {
    let image = broker.cluster.image();
    let responses = request
        .topics
        .iter()
        .map(|wanted| {
            let topic = image.topics.get(wanted.name.0.as_str());
            let partitions = wanted
                .partitions
                .iter()
                .map(|p| {
                    let exists =
                        topic.is_some_and(|t| usize::try_from(p.partition_index).is_ok_and(|i| i < t.partitions.len()));
                    let checked = match &p.replicas {
                        _ if !exists => {
                            Err((ResponseError::UnknownTopicOrPartition, "unknown topic or partition".to_string()))
                        }
                        None => Err((
                            ResponseError::NoReassignmentInProgress,
                            "no reassignment is in progress: Keel partitions have no replicas to move".to_string(),
                        )),
                        Some(replicas) => super::check_assignments(&image, [replicas.as_slice()]),
                    };
                    let answer = ReassignablePartitionResponse::default().with_partition_index(p.partition_index);
                    match checked {
                        Ok(()) => answer.with_error_message(None),
                        Err((error, message)) => {
                            broker.count_error("AlterPartitionReassignments", error);
                            answer.with_error_code(error.code()).with_error_message(Some(text(message)))
                        }
                    }
                })
                .collect();
            ReassignableTopicResponse::default().with_name(wanted.name.clone()).with_partitions(partitions)
        })
        .collect();
    AlterPartitionReassignmentsResponse::default().with_responses(responses)
}

pub(crate) async fn list(
    _broker: &Arc<Broker>,
    _request: ListPartitionReassignmentsRequest,
    _version: i16,
) -> ListPartitionReassignmentsResponse {
    ListPartitionReassignmentsResponse::default()
}

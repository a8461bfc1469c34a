//! `AddOffsetsToTxn`: the group's partition of `__consumer_offsets` joins
//! the transaction, so its commit marker lands there too.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};
use keel_broker_core::groups::OFFSETS_TOPIC;

use super::{add, fence_for};
use crate::broker::Broker;
use crate::kafka::code;

/// `AddOffsetsToTxn`: the group's partition of `__consumer_offsets` joins
/// the transaction, so its commit marker lands there too.
pub(crate) async fn handle(
    broker: &Arc<Broker>,
    request: AddOffsetsToTxnRequest,
    version: i16,
) -> AddOffsetsToTxnResponse {
    let image = broker.cluster.image();
    let error = match broker.groups.partition_of(&image, &request.group_id.0) {
        None => Some(ResponseError::CoordinatorNotAvailable),
        Some(_) if request.group_id.0.is_empty() => Some(ResponseError::InvalidGroupId),
        Some(partition) => {
            let id = request.transactional_id.0.to_string();
            let partitions = vec![(OFFSETS_TOPIC.to_owned(), partition)];
            add(broker, &id, request.producer_id.0, request.producer_epoch, partitions).await.err()
        }
    };
    let error = error.map(|error| fence_for(version, 2, error));
    if let Some(error) = error {
        broker.count_error("AddOffsetsToTxn", error);
    }
    AddOffsetsToTxnResponse::default().with_error_code(code(error))
}

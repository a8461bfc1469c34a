//! `FindCoordinator`: the broker leading the key's partition of
//! `__consumer_offsets` (a group) or `__transaction_state` (a transactional
//! id); the internal topic is created by the first such request.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use keel_controller_client::NodeRecord;

use crate::broker::Broker;
use crate::kafka::metadata::kafka_endpoint;
use crate::kafka::text;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    request: FindCoordinatorRequest,
    version: i16,
    listener: &str,
) -> FindCoordinatorResponse {
    let keys: Vec<String> = if version >= 4 {
        request.coordinator_keys.iter().map(|k| k.to_string()).collect()
    } else {
        vec![request.key.to_string()]
    };
    let mut coordinators = Vec::with_capacity(keys.len());
    for key in keys {
        let found = match request.key_type {
            KEY_TYPE_GROUP => {
                let partitions = broker.groups.settings.offsets_partitions;
                let description = "committed offsets and consumer group state";
                broker.groups.runtime().coordinator_of(&key, partitions, description).await
            }
            KEY_TYPE_TRANSACTION => {
                let partitions = broker.txns.settings.partitions;
                broker.txns.runtime().coordinator_of(&key, partitions, "transaction coordinators' state").await
            }
            other => Err((ResponseError::InvalidRequest, format!("unknown coordinator key type {other}"))),
        };
        let endpoint = found.and_then(|node| endpoint_of(&node, listener));
        let coordinator = match endpoint {
            Ok((node, host, port)) => {
                Coordinator::default().with_node_id(BrokerId(node)).with_host(text(host)).with_port(port)
            }
            Err((error, message)) => {
                broker.count_error("FindCoordinator", error);
                Coordinator::default()
                    .with_node_id(BrokerId(-1))
                    .with_port(-1)
                    .with_error_code(error.code())
                    .with_error_message(Some(text(message)))
            }
        }
        .with_key(text(key));
        coordinators.push(coordinator);
    }
    if version >= 4 {
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let only = coordinators.pop().unwrap_or_default();
    FindCoordinatorResponse::default()
        .with_error_code(only.error_code)
        .with_error_message(if version >= 1 { only.error_message } else { None })
        .with_node_id(only.node_id)
        .with_host(only.host)
        .with_port(only.port)
}

/// A coordinator as (id, host, port) on `listener`.
fn endpoint_of(node: &NodeRecord, listener: &str) -> Result<(i32, String, i32), (ResponseError, String)> {
    let (host, port) = kafka_endpoint(node, listener).ok_or_else(|| {
        (ResponseError::CoordinatorNotAvailable, format!("broker {} has no Kafka listener {listener}", node.id))
    })?;
    Ok((node.id.0 as i32, host, port))
}

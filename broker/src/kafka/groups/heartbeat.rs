//! `Heartbeat` of a classic group's member.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::broker::Broker;
use crate::kafka::code;

pub(crate) async fn handle(broker: &Arc<Broker>, request: HeartbeatRequest, _version: i16) -> HeartbeatResponse {
    let instance = request.group_instance_id.as_ref().map(|i| i.to_string());
    let result =
        broker.groups.heartbeat(&request.group_id.0, &request.member_id, instance.as_deref(), request.generation_id);
    if let Err(error) = result {
        if error != ResponseError::RebalanceInProgress {
            broker.count_error("Heartbeat", error);
        }
    }
    HeartbeatResponse::default().with_error_code(code(result.err()))
}

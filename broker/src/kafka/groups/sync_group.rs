//! `SyncGroup` of the classic group protocol: the leader hands in the
//! assignment; every member gets its part once the assignment is written.

use std::sync::Arc;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use crate::broker::Broker;
use crate::coordinator::groups::membership::Sync;
use crate::kafka::{code, text};

pub(crate) async fn handle(broker: &Arc<Broker>, request: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    let sync = Sync {
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.as_ref().map(|i| i.to_string()),
        generation: request.generation_id,
        protocol_type: request.protocol_type.as_ref().map(|p| p.to_string()),
        protocol_name: request.protocol_name.as_ref().map(|p| p.to_string()),
        assignments: request.assignments.iter().map(|a| (a.member_id.to_string(), a.assignment.clone())).collect(),
    };
    let answer = broker.groups.sync(&request.group_id.0, sync).await;
    if let Some(error) = answer.error {
        broker.count_error("SyncGroup", error);
    }
    let mut response =
        SyncGroupResponse::default().with_error_code(code(answer.error)).with_assignment(answer.assignment);
    if version >= 5 {
        response =
            response.with_protocol_type(answer.protocol_type.map(text)).with_protocol_name(answer.protocol.map(text));
    }
    response
}

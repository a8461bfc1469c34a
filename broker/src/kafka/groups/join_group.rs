//! `JoinGroup` of the classic group protocol: answered once the rebalance
//! completes (or at once, with an error or the current generation).

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use keel_broker_core::groups::classic::Join;

use crate::broker::Broker;
use crate::kafka::{code, text, Client};

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    request: JoinGroupRequest,
    version: i16,
    client: &Client,
) -> JoinGroupResponse {
    let session_timeout = Duration::from_millis(request.session_timeout_ms.max(0) as u64);
    let rebalance_timeout =
        if version >= 1 { Duration::from_millis(request.rebalance_timeout_ms.max(0) as u64) } else { session_timeout };
    let join = Join {
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.as_ref().map(|i| i.to_string()),
        client_id: client.id.clone(),
        client_host: client.host.clone(),
        session_timeout,
        rebalance_timeout,
        protocol_type: request.protocol_type.to_string(),
        protocols: request.protocols.iter().map(|p| (p.name.to_string(), p.metadata.clone())).collect(),
        requires_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
    };
    let answer = broker.groups.join(&request.group_id.0, join).await;
    if let Some(error) = answer.error {
        broker.count_error("JoinGroup", error);
    }
    let members = answer
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            JoinGroupResponseMember::default()
                .with_member_id(text(id))
                .with_group_instance_id(if version >= 5 { instance.map(text) } else { None })
                .with_metadata(metadata)
        })
        .collect();
    let mut response = JoinGroupResponse::default()
        .with_error_code(code(answer.error))
        .with_generation_id(if answer.error.is_some() { -1 } else { answer.generation })
        .with_protocol_name(answer.protocol.map(text).or_else(|| (version < 7).then(|| text(""))))
        .with_leader(text(answer.leader))
        .with_member_id(text(answer.member_id))
        .with_members(members);
    if version >= 7 {
        response = response.with_protocol_type(answer.protocol_type.map(text));
    }
    if version >= 9 {
        response = response.with_skip_assignment(answer.skip_assignment);
    }
    response
}

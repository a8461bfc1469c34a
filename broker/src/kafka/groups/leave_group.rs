//! `LeaveGroup`: one member (before v3) or several, by member id or
//! (static members) instance id.

use std::sync::Arc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use crate::broker::Broker;
use crate::kafka::{code, text};

pub(crate) async fn handle(broker: &Arc<Broker>, request: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let leaving: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| (m.member_id.to_string(), m.group_instance_id.as_ref().map(|i| i.to_string())))
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    match broker.groups.leave(&request.group_id.0, &leaving) {
        Err(error) => LeaveGroupResponse::default().with_error_code(error.code()),
        Ok(results) if version >= 3 => {
            let members = leaving
                .into_iter()
                .zip(results)
                .map(|((member, instance), result)| {
                    MemberResponse::default()
                        .with_member_id(text(member))
                        .with_group_instance_id(instance.map(text))
                        .with_error_code(code(result.err()))
                })
                .collect();
            LeaveGroupResponse::default().with_members(members)
        }
        Ok(results) => LeaveGroupResponse::default().with_error_code(code(results[0].err())),
    }
}

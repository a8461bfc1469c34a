//! `ListGroups`: the groups this broker coordinates, filtered by state
//! (v4) and type (v5).

use std::collections::HashMap;
use std::sync::Arc;

use kafka_protocol::messages::*;

use crate::broker::Broker;
use crate::kafka::text;

pub(crate) async fn handle(broker: &Arc<Broker>, request: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let states: HashMap<String, ()> =
        request.states_filter.iter().map(|s| (s.to_string().to_lowercase(), ())).collect();
    let types: HashMap<String, ()> = request.types_filter.iter().map(|s| (s.to_string().to_lowercase(), ())).collect();
    let groups = broker
        .groups
        .list()
        .into_iter()
        .filter(|(_, state, _, _)| version < 4 || states.is_empty() || states.contains_key(&state.to_lowercase()))
        .filter(|(_, _, _, consumer)| {
            let kind = if *consumer { "consumer" } else { "classic" };
            version < 5 || types.is_empty() || types.contains_key(kind)
        })
        .map(|(id, state, protocol_type, consumer)| {
            let mut listed = list_groups_response::ListedGroup::default()
                .with_group_id(GroupId(text(id)))
                .with_protocol_type(text(protocol_type));
            if version >= 4 {
                listed = listed.with_group_state(text(state));
            }
            if version >= 5 {
                listed = listed.with_group_type(text(if consumer { "consumer" } else { "classic" }));
            }
            listed
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

//! `DeleteGroups`: empty groups only, with their committed offsets.

use std::sync::Arc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use crate::broker::Broker;
use crate::kafka::code;

pub(crate) async fn handle(broker: &Arc<Broker>, request: DeleteGroupsRequest, _version: i16) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for id in &request.groups_names {
        let result = broker.groups.delete_group(&id.0).await;
        if let Err(error) = result {
            broker.count_error("DeleteGroups", error);
        }
        results.push(DeletableGroupResult::default().with_group_id(id.clone()).with_error_code(code(result.err())));
    }
    DeleteGroupsResponse::default().with_results(results)
}

//! `OffsetFetch`: a group's committed offsets, per group from v8; with
//! `require_stable` (KIP-447) an offset of a transaction still open is
//! UNSTABLE_OFFSET_COMMIT, which the client retries.

use std::sync::Arc;

use kafka_protocol::messages::*;
use keel_broker_core::groups::records::OffsetValue;

use crate::broker::Broker;
use crate::coordinator::groups::offsets::TopicOffsets;
use crate::kafka::{code, text};

pub(crate) async fn handle(broker: &Arc<Broker>, request: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = request.groups.iter().map(|wanted| fetch_group(broker, wanted, request.require_stable)).collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics = request
        .topics
        .as_ref()
        .map(|ts| ts.iter().map(|t| (t.name.0.to_string(), t.partition_indexes.clone())).collect());
    let requested = topics.clone();
    let require_stable = version >= 7 && request.require_stable;
    let (found, error) = match broker.groups.fetch_offsets(&request.group_id.0, topics, None, require_stable) {
        Ok(found) => (found, None),
        Err(error) => {
            broker.count_error("OffsetFetch", error);
            if version >= 2 {
                return OffsetFetchResponse::default().with_error_code(error.code());
            }
            // v0-1 carry errors per partition only.
            let nothing: Vec<TopicOffsets> = requested
                .unwrap_or_default()
                .into_iter()
                .map(|(topic, partitions)| (topic, partitions.into_iter().map(|p| (p, Ok(None))).collect()))
                .collect();
            (nothing, Some(error))
        }
    };
    let topics = found
        .into_iter()
        .map(|(topic, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(p, value)| {
                    let partition_error = value.as_ref().err().copied().or(error);
                    let (offset, epoch, metadata) = parts(value.unwrap_or(None));
                    offset_fetch_response::OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(if version >= 5 { epoch } else { -1 })
                        .with_metadata(Some(text(metadata)))
                        .with_error_code(code(partition_error))
                })
                .collect();
            offset_fetch_response::OffsetFetchResponseTopic::default()
                .with_name(TopicName(text(topic)))
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

/// One group of an OffsetFetch v8+.
fn fetch_group(
    broker: &Broker,
    wanted: &offset_fetch_request::OffsetFetchRequestGroup,
    require_stable: bool,
) -> offset_fetch_response::OffsetFetchResponseGroup {
    let topics = wanted
        .topics
        .as_ref()
        .map(|ts| ts.iter().map(|t| (t.name.0.to_string(), t.partition_indexes.clone())).collect());
    let member = wanted.member_id.as_ref().map(|m| (m.to_string(), wanted.member_epoch));
    let response = offset_fetch_response::OffsetFetchResponseGroup::default().with_group_id(wanted.group_id.clone());
    let found = match broker.groups.fetch_offsets(&wanted.group_id.0, topics, member, require_stable) {
        Ok(found) => found,
        Err(error) => {
            broker.count_error("OffsetFetch", error);
            return response.with_error_code(error.code());
        }
    };
    let topics = found
        .into_iter()
        .map(|(topic, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(p, value)| {
                    let partition_error = value.as_ref().err().copied();
                    let (offset, epoch, metadata) = parts(value.unwrap_or(None));
                    offset_fetch_response::OffsetFetchResponsePartitions::default()
                        .with_error_code(code(partition_error))
                        .with_partition_index(p)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(epoch)
                        .with_metadata(Some(text(metadata)))
                })
                .collect();
            offset_fetch_response::OffsetFetchResponseTopics::default()
                .with_name(TopicName(text(topic)))
                .with_partitions(partitions)
        })
        .collect();
    response.with_topics(topics)
}

fn parts(value: Option<OffsetValue>) -> (i64, i32, String) {
    match value {
        Some(value) => (value.offset, value.leader_epoch, value.metadata),
        None => (-1, -1, String::new()),
    }
}

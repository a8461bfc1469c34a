//! `OffsetCommit`: each partition's offset checked as Kafka checks it,
//! then written for the group and answered once durable.

use std::sync::Arc;

use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use crate::broker::Broker;
use crate::coordinator::groups::offsets::{Commit, Committer};
use crate::kafka::code;

pub(crate) async fn handle(broker: &Arc<Broker>, request: OffsetCommitRequest, version: i16) -> OffsetCommitResponse {
    let committer = Committer {
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.as_ref().map(|i| i.to_string()),
        generation: if version >= 1 { request.generation_id_or_member_epoch } else { -1 },
    };
    let image = broker.cluster.image();
    let now = keel_broker_core::clock::now_ms();
    let mut commits = Vec::new();
    let mut places = Vec::new();
    for (t, topic) in request.topics.iter().enumerate() {
        for p in &topic.partitions {
            let epoch = if version >= 6 { p.committed_leader_epoch } else { -1 };
            let metadata = p.committed_metadata.as_deref();
            commits.push(Commit::checked(
                &image,
                &topic.name.0,
                p.partition_index,
                p.committed_offset,
                epoch,
                metadata,
                now,
            ));
            places.push(t);
        }
    }
    broker.groups.commit_offsets(&request.group_id.0, &committer, &mut commits).await;
    let mut topics: Vec<OffsetCommitResponseTopic> =
        request.topics.iter().map(|t| OffsetCommitResponseTopic::default().with_name(t.name.clone())).collect();
    for (commit, t) in commits.into_iter().zip(places) {
        if let Some(error) = commit.error {
            broker.count_error("OffsetCommit", error);
        }
        topics[t].partitions.push(
            OffsetCommitResponsePartition::default()
                .with_partition_index(commit.partition)
                .with_error_code(code(commit.error)),
        );
    }
    OffsetCommitResponse::default().with_topics(topics)
}

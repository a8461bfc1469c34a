//! `TxnOffsetCommit`: offsets committed as part of a transaction (KIP-98,
//! `sendOffsetsToTransaction`). They are written to the group's partition
//! as the producer's transactional records once the transaction's
//! coordinator confirms the partition is in its transaction
//! (`AddOffsetsToTxn`), and become the group's offsets only when the
//! commit marker lands there.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use crate::broker::Broker;
use crate::coordinator::groups::offsets::{Commit, Committer};
use crate::kafka::code;

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    request: TxnOffsetCommitRequest,
    version: i16,
) -> TxnOffsetCommitResponse {
    let group_id = request.group_id.0.as_str();
    let producer = (keel_controller_client::ProducerId(request.producer_id.0), request.producer_epoch);
    let committer = Committer {
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.as_ref().map(|i| i.to_string()),
        generation: if version >= 3 { request.generation_id } else { -1 },
    };
    let image = broker.cluster.image();
    let now = keel_broker_core::clock::now_ms();
    let mut commits = Vec::new();
    let mut places = Vec::new();
    for (t, topic) in request.topics.iter().enumerate() {
        for p in &topic.partitions {
            let epoch = if version >= 2 { p.committed_leader_epoch } else { -1 };
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
    // KIP-588: before v3, clients know PRODUCER_FENCED as INVALID_PRODUCER_EPOCH.
    let fenced = |error: ResponseError| match error {
        ResponseError::ProducerFenced | ResponseError::InvalidProducerEpoch if version < 3 => {
            ResponseError::InvalidProducerEpoch
        }
        ResponseError::InvalidProducerEpoch => ResponseError::ProducerFenced,
        other => other,
    };
    let result = match broker.groups.partition_of(&image, group_id) {
        None => Err(ResponseError::CoordinatorNotAvailable),
        Some(partition) => match broker.txns.verify_offsets(&request.transactional_id.0, producer, partition).await {
            Err(error) => Err(error),
            Ok(token) => {
                broker.groups.commit_txn_offsets(group_id, producer, token, &committer, &commits).await.map_err(fenced)
            }
        },
    };
    let mut topics: Vec<TxnOffsetCommitResponseTopic> =
        request.topics.iter().map(|t| TxnOffsetCommitResponseTopic::default().with_name(t.name.clone())).collect();
    for (commit, t) in commits.into_iter().zip(places) {
        let error = commit.error.or(result.err());
        if let Some(error) = error {
            broker.count_error("TxnOffsetCommit", error);
        }
        topics[t].partitions.push(
            TxnOffsetCommitResponsePartition::default()
                .with_partition_index(commit.partition)
                .with_error_code(code(error)),
        );
    }
    TxnOffsetCommitResponse::default().with_topics(topics)
}

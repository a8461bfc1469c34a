//! `DeleteRecords`: moves a partition's start offset (Kafka's log start
//! offset) forward, so readers see nothing below it. The leader checks the
//! offset against its high watermark (-1 means the high watermark) and the
//! controller commits it (`AdvanceStartOffset`, only at the leader's current
//! leader epoch). The bytes themselves go when the S3 tier's retention
//! deletes whole objects and the WAL is trimmed.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use keel_controller_client::{ClientError, MetaError, Outcome, Topic};

use crate::broker::Broker;

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    request: DeleteRecordsRequest,
    _version: i16,
) -> DeleteRecordsResponse {
    let image = broker.cluster.image();
    let mut topics = Vec::with_capacity(request.topics.len());
    for wanted in &request.topics {
        let topic = image.topics.get(wanted.name.0.as_str());
        let mut partitions = Vec::with_capacity(wanted.partitions.len());
        for partition in &wanted.partitions {
            let result = DeleteRecordsPartitionResult::default().with_partition_index(partition.partition_index);
            let outcome = match topic {
                None => Err(ResponseError::UnknownTopicOrPartition),
                Some(topic) => delete(broker, topic, partition.partition_index, partition.offset).await,
            };
            partitions.push(match outcome {
                Ok(low_watermark) => result.with_low_watermark(low_watermark),
                Err(error) => {
                    broker.count_error("DeleteRecords", error);
                    result.with_low_watermark(-1).with_error_code(error.code())
                }
            });
        }
        topics.push(DeleteRecordsTopicResult::default().with_name(wanted.name.clone()).with_partitions(partitions));
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

/// Deletes the records of one partition below `offset`; answers the new low watermark.
async fn delete(broker: &Arc<Broker>, topic: &Topic, index: i32, offset: i64) -> Result<i64, ResponseError> {
    let view = broker.partitions.read_view(topic, index, -1)?;
    let offset = if offset == -1 { view.high_watermark.0 } else { offset };
    if offset < 0 || offset > view.high_watermark.0 {
        return Err(ResponseError::OffsetOutOfRange);
    }
    if offset <= view.log_start.0 {
        return Ok(view.log_start.0);
    }
    let epoch = broker.cluster.live_epoch().ok_or(ResponseError::NotLeaderOrFollower)?;
    match broker.cluster.advance_start_offset(topic, index, view.leader_epoch, offset, epoch).await {
        Ok((version, Outcome::StartOffset { start_offset })) => {
            // Readers of this broker see the new start once its image has it.
            if let Err(error) = broker.cluster.seen(version).await {
                tracing::warn!(topic = %topic.name, partition = index, "{error}");
            }
            tracing::info!(topic = %topic.name, partition = index, start_offset = start_offset.0, "records deleted below the new start offset");
            Ok(start_offset.0)
        }
        Ok((_, other)) => {
            tracing::error!(?other, "AdvanceStartOffset answered with an unexpected outcome");
            Err(ResponseError::UnknownServerError)
        }
        Err(ClientError::Meta(
            MetaError::NotPartitionLeader { .. } | MetaError::StaleEpoch { .. } | MetaError::Fenced { .. },
        )) => Err(ResponseError::NotLeaderOrFollower),
        Err(error) => {
            tracing::warn!(topic = %topic.name, partition = index, "AdvanceStartOffset failed: {error}");
            Err(ResponseError::RequestTimedOut)
        }
    }
}

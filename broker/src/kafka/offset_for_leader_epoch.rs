//! `OffsetForLeaderEpoch`: where a leader epoch ended, which clients ask
//! after a leader change to find out whether their position was truncated
//! (KIP-320). Keel never truncates: a new leader starts at the end its
//! predecessor's acknowledged records reached, and nobody reads past the
//! high watermark. So any epoch up to the current one is answered as
//! ending at the high watermark: never below a position a client can
//! hold, so a client never takes a truncation that did not happen.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::broker::Broker;

pub(super) async fn handle(
    broker: &Arc<Broker>,
    request: OffsetForLeaderEpochRequest,
    _version: i16,
) -> OffsetForLeaderEpochResponse {
    let image = broker.cluster.image();
    let topics = request
        .topics
        .iter()
        .map(|wanted| {
            let topic = image.topics.get(wanted.topic.0.as_str());
            let partitions = wanted
                .partitions
                .iter()
                .map(|p| {
                    let answer = EpochEndOffset::default().with_partition(p.partition);
                    let view = topic
                        .ok_or(ResponseError::UnknownTopicOrPartition)
                        .and_then(|topic| broker.partitions.read_view(topic, p.partition, p.current_leader_epoch));
                    match view {
                        Err(error) => {
                            broker.count_error("OffsetForLeaderEpoch", error);
                            answer.with_error_code(error.code()).with_leader_epoch(-1).with_end_offset(-1)
                        }
                        // An epoch this leader has not reached: Kafka's undefined answer.
                        Ok(view) if p.leader_epoch > view.leader_epoch.0 => {
                            answer.with_leader_epoch(-1).with_end_offset(-1)
                        }
                        Ok(view) => answer.with_leader_epoch(p.leader_epoch).with_end_offset(view.high_watermark.0),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default().with_topic(wanted.topic.clone()).with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

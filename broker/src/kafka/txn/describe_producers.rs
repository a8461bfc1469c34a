//! `DescribeProducers`: the producer state of partitions this broker leads.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;

use crate::broker::Broker;

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    request: DescribeProducersRequest,
    _version: i16,
) -> DescribeProducersResponse {
    let image = broker.cluster.image();
    let topics = request
        .topics
        .iter()
        .map(|wanted| {
            let partitions = wanted
                .partition_indexes
                .iter()
                .map(|&index| {
                    let answer = describe_producers_response::PartitionResponse::default().with_partition_index(index);
                    let found = image
                        .topics
                        .get(wanted.name.0.as_str())
                        .ok_or(ResponseError::UnknownTopicOrPartition)
                        .and_then(|topic| {
                            let view = broker.partitions.read_view(topic, index, -1)?;
                            let leadership = broker.partitions.leadership();
                            let state =
                                leadership.partitions.get(&view.stream).ok_or(ResponseError::NotLeaderOrFollower)?;
                            Ok(state.producers.view())
                        });
                    match found {
                        Ok(producers) => answer.with_active_producers(
                            producers
                                .into_iter()
                                .map(|p| {
                                    describe_producers_response::ProducerState::default()
                                        .with_producer_id(ProducerId(p.producer_id.0))
                                        .with_producer_epoch(i32::from(p.epoch))
                                        .with_last_sequence(p.last_sequence)
                                        .with_last_timestamp(p.last_append_ms)
                                        .with_coordinator_epoch(-1)
                                        .with_current_txn_start_offset(p.txn_first.map_or(-1, |first| first.0))
                                })
                                .collect(),
                        ),
                        Err(error) => {
                            broker.count_error("DescribeProducers", error);
                            answer.with_error_code(error.code())
                        }
                    }
                })
                .collect();
            describe_producers_response::TopicResponse::default()
                .with_name(wanted.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}

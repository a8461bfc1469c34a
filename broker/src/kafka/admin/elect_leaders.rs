//! `ElectLeaders`: Keel chooses partition leaders itself (the controller
//! assigns one when a partition has none, the balancer moves them by load),
//! so there is no preferred or unclean election to run. Answered as Kafka
//! answers a partition that needs none: ELECTION_NOT_NEEDED while it has a
//! leader, ELIGIBLE_LEADERS_NOT_AVAILABLE while its new leader is being
//! assigned; with no partitions named, nothing needed an election.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse};

use crate::broker::Broker;
use crate::kafka::text;

pub(crate) async fn handle(broker: &Arc<Broker>, request: ElectLeadersRequest, _version: i16) -> ElectLeadersResponse {
    let image = broker.cluster.image();
    let results = request
        .topic_partitions
        .iter()
        .flatten()
        .map(|wanted| {
            let topic = image.topics.get(wanted.topic.0.as_str());
            let partitions = wanted
                .partitions
                .iter()
                .map(|index| {
                    let partition = topic.and_then(|t| usize::try_from(*index).ok().and_then(|i| t.partitions.get(i)));
                    let (error, message) = match partition {
                        None => (ResponseError::UnknownTopicOrPartition, "unknown topic or partition"),
                        Some(p) if p.leader.is_some() => {
                            (ResponseError::ElectionNotNeeded, "Keel chooses leaders itself; the partition has one")
                        }
                        Some(_) => {
                            (ResponseError::EligibleLeadersNotAvailable, "the partition's new leader is being assigned")
                        }
                    };
                    PartitionResult::default()
                        .with_partition_id(*index)
                        .with_error_code(error.code())
                        .with_error_message(Some(text(message.to_string())))
                })
                .collect();
            ReplicaElectionResult::default().with_topic(wanted.topic.clone()).with_partition_result(partitions)
        })
        .collect();
    ElectLeadersResponse::default().with_replica_election_results(results)
}

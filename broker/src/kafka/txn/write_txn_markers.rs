//! `WriteTxnMarkers` at a partition leader, from a transaction's
//! coordinator: each marker is written to each of its partitions and
//! answered once durable (`coordinator::txn::markers::write`).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{ProducerId, TopicName, WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use crate::broker::Broker;
use crate::coordinator::peers::Marker;
use crate::coordinator::txn::markers;
use crate::kafka::{code, text};

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    request: WriteTxnMarkersRequest,
    _version: i16,
) -> WriteTxnMarkersResponse {
    let markers: Vec<Marker> = request
        .markers
        .iter()
        .map(|marker| Marker {
            producer_id: keel_controller_client::ProducerId(marker.producer_id.0),
            producer_epoch: marker.producer_epoch,
            commit: marker.transaction_result,
            coordinator_epoch: marker.coordinator_epoch,
            partitions: marker
                .topics
                .iter()
                .flat_map(|topic| topic.partition_indexes.iter().map(move |index| (topic.name.0.to_string(), *index)))
                .collect(),
        })
        .collect();
    let mut results = markers::write(&broker.partitions, &broker.groups, &markers).await.into_iter();
    let mut by_producer: BTreeMap<i64, BTreeMap<String, Vec<WritableTxnMarkerPartitionResult>>> = BTreeMap::new();
    for marker in &markers {
        for _ in &marker.partitions {
            let ((topic, index), result) = results.next().expect("one result per partition");
            let partition = WritableTxnMarkerPartitionResult::default()
                .with_partition_index(index)
                .with_error_code(code(result.err()));
            by_producer.entry(marker.producer_id.0).or_default().entry(topic).or_default().push(partition);
        }
    }
    let markers = by_producer
        .into_iter()
        .map(|(producer_id, topics)| {
            WritableTxnMarkerResult::default().with_producer_id(ProducerId(producer_id)).with_topics(
                topics
                    .into_iter()
                    .map(|(name, partitions)| {
                        WritableTxnMarkerTopicResult::default()
                            .with_name(TopicName(text(name)))
                            .with_partitions(partitions)
                    })
                    .collect(),
            )
        })
        .collect();
    WriteTxnMarkersResponse::default().with_markers(markers)
}

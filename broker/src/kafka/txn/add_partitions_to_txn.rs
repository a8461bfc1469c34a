//! `AddPartitionsToTxn`: partitions join a producer's open transaction
//! (v0-3 one transaction, v4 several); with `verify_only` (v4, from
//! partition leaders, KIP-890) it only says whether they have.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::*;
use keel_broker_core::txn::state;
use keel_broker_core::txn::TXN_TOPIC;

use super::{add, fence_for};
use crate::broker::Broker;
use crate::kafka::{code, text};

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    request: AddPartitionsToTxnRequest,
    version: i16,
) -> AddPartitionsToTxnResponse {
    if version >= 4 {
        let mut results = Vec::new();
        for transaction in &request.transactions {
            results.push(add_one(broker, transaction, version).await);
        }
        return AddPartitionsToTxnResponse::default().with_results_by_transaction(results);
    }
    let transaction = add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
        .with_transactional_id(request.v3_and_below_transactional_id.clone())
        .with_producer_id(request.v3_and_below_producer_id)
        .with_producer_epoch(request.v3_and_below_producer_epoch)
        .with_topics(request.v3_and_below_topics.clone());
    let result = add_one(broker, &transaction, version).await;
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(result.topic_results)
}

/// One transaction of an AddPartitionsToTxn: added (or, `verify_only`,
/// checked), with an error per partition. Unknown partitions are refused
/// and the rest answered OPERATION_NOT_ATTEMPTED, as in Kafka.
async fn add_one(
    broker: &Arc<Broker>,
    transaction: &add_partitions_to_txn_request::AddPartitionsToTxnTransaction,
    version: i16,
) -> AddPartitionsToTxnResult {
    let id = transaction.transactional_id.0.to_string();
    let (producer_id, epoch) = (transaction.producer_id.0, transaction.producer_epoch);
    let image = broker.cluster.image();
    let wanted: Vec<(String, i32)> =
        transaction.topics.iter().flat_map(|t| t.partitions.iter().map(move |p| (t.name.0.to_string(), *p))).collect();
    let known = |(topic, index): &(String, i32)| {
        image.topics.get(topic).is_some_and(|t| *index >= 0 && (*index as usize) < t.partitions.len())
            && topic != TXN_TOPIC
    };
    let errors: Vec<Option<ResponseError>> = if transaction.verify_only {
        let current = broker.txns.current(&id);
        wanted
            .iter()
            .map(|p| match &current {
                Err(error) => Some(*error),
                Ok(current) => state::verify(current.as_ref(), producer_id, epoch, p).err(),
            })
            .collect()
    } else if wanted.iter().all(known) {
        let added = add(broker, &id, producer_id, epoch, wanted.clone()).await.err();
        let added = added.map(|error| fence_for(version, 2, error));
        vec![added; wanted.len()]
    } else {
        wanted
            .iter()
            .map(|p| {
                Some(if known(p) {
                    ResponseError::OperationNotAttempted
                } else {
                    ResponseError::UnknownTopicOrPartition
                })
            })
            .collect()
    };
    let mut by_topic: BTreeMap<String, Vec<AddPartitionsToTxnPartitionResult>> = BTreeMap::new();
    for ((topic, index), error) in wanted.into_iter().zip(errors) {
        if let Some(error) = error {
            broker.count_error("AddPartitionsToTxn", error);
        }
        let result = AddPartitionsToTxnPartitionResult::default()
            .with_partition_index(index)
            .with_partition_error_code(code(error));
        by_topic.entry(topic).or_default().push(result);
    }
    AddPartitionsToTxnResult::default().with_transactional_id(transaction.transactional_id.clone()).with_topic_results(
        by_topic
            .into_iter()
            .map(|(name, results)| {
                AddPartitionsToTxnTopicResult::default()
                    .with_name(TopicName(text(name)))
                    .with_results_by_partition(results)
            })
            .collect(),
    )
}

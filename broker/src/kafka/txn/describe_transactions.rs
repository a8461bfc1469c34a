//! `DescribeTransactions`: the state of transactional ids coordinated here.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use keel_broker_core::txn::state::Txn;

use crate::broker::Broker;

fn topics_of(txn: &Txn) -> Vec<describe_transactions_response::TopicData> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, index) in &txn.partitions {
        by_topic.entry(topic).or_default().push(*index);
    }
    by_topic
        .into_iter()
        .map(|(topic, partitions)| {
            describe_transactions_response::TopicData::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(partitions)
        })
        .collect()
}

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    request: DescribeTransactionsRequest,
    _version: i16,
) -> DescribeTransactionsResponse {
    let states = request
        .transactional_ids
        .iter()
        .map(|id| {
            let answer = describe_transactions_response::TransactionState::default()
                .with_transactional_id(id.clone())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
                .with_transaction_start_time_ms(-1)
                .with_transaction_state(StrBytes::from_static_str(""));
            match broker.txns.current(&id.0) {
                Ok(Some(txn)) => answer
                    .with_transaction_state(StrBytes::from_static_str(txn.status.name()))
                    .with_transaction_timeout_ms(txn.timeout_ms)
                    .with_transaction_start_time_ms(txn.start_ms)
                    .with_producer_id(ProducerId(txn.producer_id))
                    .with_producer_epoch(txn.epoch)
                    .with_topics(topics_of(&txn)),
                Ok(None) => answer.with_error_code(ResponseError::TransactionalIdNotFound.code()),
                Err(error) => answer.with_error_code(error.code()),
            }
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

//! The transaction APIs: AddPartitionsToTxn (from clients, and v4's
//! verify-only form from partition leaders, KIP-890), AddOffsetsToTxn,
//! EndTxn, WriteTxnMarkers (from coordinators), and the admin views
//! DescribeTransactions, ListTransactions and DescribeProducers. The rules
//! live in `crate::txn`; this file translates the wire messages.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use crate::groups::{now_ms, Coordinator, OFFSETS_TOPIC};
use crate::txn::state::{self, End, Txn};

/// KIP-588: before these versions, clients know PRODUCER_FENCED as
/// INVALID_PRODUCER_EPOCH.
fn fence_for(version: i16, first_with_fenced: i16, error: ResponseError) -> ResponseError {
    match error {
        ResponseError::ProducerFenced if version < first_with_fenced => ResponseError::InvalidProducerEpoch,
        other => other,
    }
}

fn code(error: Option<ResponseError>) -> i16 {
    error.map_or(0, |e| e.code())
}

/// Adds `partitions` to `id`'s transaction; `Ok` once durable.
async fn add(
    broker: &Arc<Broker>,
    id: &str,
    producer_id: i64,
    epoch: i16,
    partitions: Vec<(String, i32)>,
) -> Result<(), ResponseError> {
    crate::txn::transition(broker, id, |current| {
        state::add_partitions(current, producer_id, epoch, &partitions, now_ms())
    })
    .await
    .map(|_| ())
}

pub(super) async fn add_partitions_to_txn(
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
    let image = broker.image();
    let wanted: Vec<(String, i32)> =
        transaction.topics.iter().flat_map(|t| t.partitions.iter().map(move |p| (t.name.0.to_string(), *p))).collect();
    let known = |(topic, index): &(String, i32)| {
        image.topics.get(topic).is_some_and(|t| *index >= 0 && (*index as usize) < t.partitions.len())
            && topic != crate::txn::TXN_TOPIC
    };
    let errors: Vec<Option<ResponseError>> = if transaction.verify_only {
        let current = broker.txns.current(broker, &id);
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
            super::count_error(broker, "AddPartitionsToTxn", error);
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
                    .with_name(TopicName(StrBytes::from_string(name)))
                    .with_results_by_partition(results)
            })
            .collect(),
    )
}

/// `AddOffsetsToTxn`: the group's partition of `__consumer_offsets` joins
/// the transaction, so its commit marker lands there too.
pub(super) async fn add_offsets_to_txn(
    broker: &Arc<Broker>,
    request: AddOffsetsToTxnRequest,
    version: i16,
) -> AddOffsetsToTxnResponse {
    let image = broker.image();
    let error = match Coordinator::partition_of(&image, &request.group_id.0) {
        None => Some(ResponseError::CoordinatorNotAvailable),
        Some(_) if request.group_id.0.is_empty() => Some(ResponseError::InvalidGroupId),
        Some(partition) => {
            let id = request.transactional_id.0.to_string();
            let partitions = vec![(OFFSETS_TOPIC.to_owned(), partition)];
            add(broker, &id, request.producer_id.0, request.producer_epoch, partitions).await.err()
        }
    };
    let error = error.map(|error| fence_for(version, 2, error));
    if let Some(error) = error {
        super::count_error(broker, "AddOffsetsToTxn", error);
    }
    AddOffsetsToTxnResponse::default().with_error_code(code(error))
}

/// `EndTxn`: answered once the prepared state is durable; the markers and
/// the completed state follow in the background (`txn::finish`).
pub(super) async fn end_txn(broker: &Arc<Broker>, request: EndTxnRequest, version: i16) -> EndTxnResponse {
    let id = request.transactional_id.0.to_string();
    let (producer_id, epoch, commit) = (request.producer_id.0, request.producer_epoch, request.committed);
    let mut done = false;
    let ended = crate::txn::transition(broker, &id, |current| {
        match state::end(current, producer_id, epoch, commit, now_ms())? {
            End::Prepare(txn) => Ok(Some(txn)),
            End::Done => {
                done = true;
                Ok(None)
            }
        }
    })
    .await;
    let error = match ended {
        Ok(Some(txn)) if !done => {
            tokio::spawn(crate::txn::finish(broker.clone(), id, txn));
            None
        }
        Ok(_) => None,
        Err(error) => Some(fence_for(version, 2, error)),
    };
    if let Some(error) = error {
        super::count_error(broker, "EndTxn", error);
    }
    EndTxnResponse::default().with_error_code(code(error))
}

pub(super) async fn write_txn_markers(
    broker: &Arc<Broker>,
    request: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    crate::txn::markers::write(broker, request).await
}

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

pub(super) fn describe_transactions(
    broker: &Arc<Broker>,
    request: DescribeTransactionsRequest,
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
            match broker.txns.current(broker, &id.0) {
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

pub(super) fn list_transactions(
    broker: &Arc<Broker>,
    request: ListTransactionsRequest,
    version: i16,
) -> ListTransactionsResponse {
    let known = [
        "Empty",
        "Ongoing",
        "PrepareCommit",
        "PrepareAbort",
        "CompleteCommit",
        "CompleteAbort",
        "Dead",
        "PrepareEpochFence",
    ];
    let (valid, unknown): (Vec<&StrBytes>, Vec<&StrBytes>) =
        request.state_filters.iter().partition(|state| known.contains(&state.as_str()));
    let pattern = match request.transactional_id_pattern.as_deref().filter(|_| version >= 2) {
        None | Some("") => None,
        Some(pattern) => match regex::Regex::new(&format!("^(?:{pattern})$")) {
            Ok(pattern) => Some(pattern),
            Err(_) => {
                return ListTransactionsResponse::default()
                    .with_error_code(ResponseError::InvalidRegularExpression.code())
            }
        },
    };
    let now = now_ms();
    let states = broker
        .txns
        .list()
        .into_iter()
        .filter(|(_, txn)| valid.is_empty() || valid.iter().any(|s| s.as_str() == txn.status.name()))
        .filter(|(_, txn)| {
            request.producer_id_filters.is_empty() || request.producer_id_filters.contains(&ProducerId(txn.producer_id))
        })
        .filter(|(_, txn)| {
            // v1: only transactions open longer than the filter.
            version < 1
                || request.duration_filter < 0
                || (txn.start_ms >= 0 && now - txn.start_ms >= request.duration_filter)
        })
        .filter(|(id, _)| pattern.as_ref().is_none_or(|p| p.is_match(id)))
        .map(|(id, txn)| {
            list_transactions_response::TransactionState::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(id)))
                .with_producer_id(ProducerId(txn.producer_id))
                .with_transaction_state(StrBytes::from_static_str(txn.status.name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown.into_iter().cloned().collect())
        .with_transaction_states(states)
}

/// `DescribeProducers`: the producer state of partitions this broker leads.
pub(super) fn describe_producers(broker: &Arc<Broker>, request: DescribeProducersRequest) -> DescribeProducersResponse {
    let image = broker.image();
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
                            let view = broker.read_view(topic, index, -1)?;
                            let leadership = broker.leadership();
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
                                        .with_producer_id(ProducerId(p.producer_id))
                                        .with_producer_epoch(i32::from(p.epoch))
                                        .with_last_sequence(p.last_sequence)
                                        .with_last_timestamp(p.last_append_ms)
                                        .with_coordinator_epoch(-1)
                                        .with_current_txn_start_offset(p.txn_first.unwrap_or(-1))
                                })
                                .collect(),
                        ),
                        Err(error) => {
                            super::count_error(broker, "DescribeProducers", error);
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

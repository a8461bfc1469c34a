//! `ListTransactions`: the transactional ids coordinated here, filtered by
//! state, producer id, duration (v1) and id pattern (v2).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;

pub(crate) async fn handle(
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
    let now = keel_broker_core::clock::now_ms();
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

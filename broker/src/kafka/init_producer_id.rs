//! `InitProducerId`: for an idempotent producer, a fresh producer id from
//! the block this broker got from the controller, at epoch 0; for a
//! transactional id, its coordinator's producer at the next epoch, which
//! fences every older incarnation (an open transaction of theirs is
//! aborted first, and the client told to retry).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::broker::Broker;
use keel_broker_core::txn::state::{self, Init};

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    request: InitProducerIdRequest,
    version: i16,
) -> InitProducerIdResponse {
    let refused = |error: ResponseError| {
        let error = super::txn::fence_for(version, 4, error);
        broker.count_error("InitProducerId", error);
        InitProducerIdResponse::default()
            .with_error_code(error.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    let Some(id) = request.transactional_id.as_ref().map(|id| id.0.to_string()) else {
        return match broker.cluster.next_producer_id().await {
            Ok(id) => InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(0),
            Err(error) => {
                tracing::info!("could not hand out a producer id: {error:#}");
                refused(ResponseError::CoordinatorLoadInProgress)
            }
        };
    };
    if id.is_empty() {
        return refused(ResponseError::InvalidRequest);
    }
    // Kafka checks the timeout before it looks at the coordinator's state,
    // so a bad timeout is answered even while the partition is loading.
    if !state::valid_timeout(request.transaction_timeout_ms) {
        return refused(ResponseError::InvalidTransactionTimeout);
    }
    // A new producer id is taken before deciding, as taking one may wait
    // for the controller; one not used is simply skipped.
    let fresh = match broker.txns.current(&id) {
        Err(error) => return refused(error),
        Ok(Some(txn)) if txn.epoch < i16::MAX - 1 => None,
        Ok(_) => match broker.cluster.next_producer_id().await {
            Ok(fresh) => Some(fresh),
            Err(error) => {
                tracing::info!("could not hand out a producer id: {error:#}");
                return refused(ResponseError::CoordinatorNotAvailable);
            }
        },
    };
    let expected = if version >= 3 { (request.producer_id.0, request.producer_epoch) } else { (-1, -1) };
    let timeout_ms = request.transaction_timeout_ms;
    let mut fencing = false;
    let decided = broker
        .txns
        .transition(&id, |current| {
            match state::init(current, timeout_ms, expected, keel_broker_core::clock::now_ms()) {
                Init::Write(mut txn) => {
                    if txn.producer_id < 0 {
                        txn.producer_id = fresh.ok_or(ResponseError::ConcurrentTransactions)?;
                    }
                    Ok(Some(txn))
                }
                Init::Fence(txn) => {
                    fencing = true;
                    Ok(Some(txn))
                }
                Init::Current => Ok(None),
                Init::Refuse(error) => Err(error),
            }
        })
        .await;
    match decided {
        Ok(Some(txn)) if fencing => {
            tracing::info!(transactional_id = %id, "a new producer instance aborts its predecessor's open transaction");
            broker.txns.start_finish(id, txn);
            refused(ResponseError::ConcurrentTransactions)
        }
        Ok(Some(txn)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(txn.producer_id))
            .with_producer_epoch(txn.epoch),
        Ok(None) => refused(ResponseError::UnknownServerError),
        Err(error) => refused(error),
    }
}

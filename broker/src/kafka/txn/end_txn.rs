//! `EndTxn`: answered once the prepared state is durable; the markers and
//! the completed state follow in the coordinator's background work.

use std::sync::Arc;

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse};
use keel_broker_core::clock::now_ms;
use keel_broker_core::txn::state::{self, End};

use super::fence_for;
use crate::broker::Broker;
use crate::kafka::code;

/// `EndTxn`: answered once the prepared state is durable; the markers and
/// the completed state follow in the background (`txn::finish`).
pub(crate) async fn handle(broker: &Arc<Broker>, request: EndTxnRequest, version: i16) -> EndTxnResponse {
    let id = request.transactional_id.0.to_string();
    let (producer_id, epoch, commit) = (request.producer_id.0, request.producer_epoch, request.committed);
    let mut done = false;
    let ended = broker
        .txns
        .transition(&id, |current| match state::end(current, producer_id, epoch, commit, now_ms())? {
            End::Prepare(txn) => Ok(Some(txn)),
            End::Done => {
                done = true;
                Ok(None)
            }
        })
        .await;
    let error = match ended {
        Ok(Some(txn)) if !done => {
            broker.txns.start_finish(id, txn);
            None
        }
        Ok(_) => None,
        Err(error) => Some(fence_for(version, 2, error)),
    };
    if let Some(error) = error {
        broker.count_error("EndTxn", error);
    }
    EndTxnResponse::default().with_error_code(code(error))
}

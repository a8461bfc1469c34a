//! `InitProducerId` for idempotent producers: a fresh producer id from the
//! block this broker got from the controller, at epoch 0. Transactional ids
//! need the transaction coordinator, which does not exist yet.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::broker::Broker;

pub(super) async fn handle(broker: &Arc<Broker>, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let refused = |error: ResponseError| {
        super::count_error(broker, "InitProducerId", error);
        InitProducerIdResponse::default()
            .with_error_code(error.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if request.transactional_id.is_some() {
        tracing::info!("refused InitProducerId with a transactional id: transactions are not supported yet");
        return refused(ResponseError::InvalidRequest);
    }
    match broker.next_producer_id().await {
        Ok(id) => InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(error) => {
            tracing::info!("could not hand out a producer id: {error:#}");
            refused(ResponseError::CoordinatorLoadInProgress)
        }
    }
}

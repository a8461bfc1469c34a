//! The transaction APIs, one file each: AddPartitionsToTxn (from clients,
//! and v4's verify-only form from partition leaders, KIP-890),
//! AddOffsetsToTxn, EndTxn, WriteTxnMarkers (from coordinators), and the
//! admin views DescribeTransactions, ListTransactions and
//! DescribeProducers. The rules live in `crate::coordinator::txn`; these
//! files translate the wire messages.

pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod describe_producers;
pub mod describe_transactions;
pub mod end_txn;
pub mod list_transactions;
pub mod write_txn_markers;

use kafka_protocol::error::ResponseError;

use crate::broker::Broker;

/// KIP-588: before these versions, clients know PRODUCER_FENCED as
/// INVALID_PRODUCER_EPOCH.
pub(crate) fn fence_for(version: i16, first_with_fenced: i16, error: ResponseError) -> ResponseError {
    match error {
        ResponseError::ProducerFenced if version < first_with_fenced => ResponseError::InvalidProducerEpoch,
        other => other,
    }
}

/// Adds `partitions` to `id`'s transaction; `Ok` once durable.
pub(crate) async fn add(
    broker: &Broker,
    id: &str,
    producer_id: i64,
    epoch: i16,
    partitions: Vec<(String, i32)>,
) -> Result<(), ResponseError> {
    broker
        .txns
        .transition(id, |current| {
            keel_broker_core::txn::state::add_partitions(
                current,
                producer_id,
                epoch,
                &partitions,
                keel_broker_core::clock::now_ms(),
            )
        })
        .await
        .map(|_| ())
}

//! Producer-state snapshots in objects (DESIGN §3.4, §5): every uploaded
//! stream range carries its partition's idempotent-producer state as of the
//! range's end (JSON of `Producers`), so a broker taking a partition over
//! starts from the snapshot at the uploaded end (a handover waits until the
//! previous leader's WAL tail is uploaded), however long ago a producer last
//! wrote.

use std::sync::Arc;

use keel_controller_client::{Image, Offset, StreamId};
use keel_objects::ObjectStore;

use keel_broker_core::producers::Producers;

use crate::error::BrokerError;

/// The producer state of `stream` as of its uploaded end, from the snapshot
/// in the range that ends there; empty when nothing is uploaded or the
/// range has no snapshot.
pub async fn at_uploaded_end(
    store: &Arc<dyn ObjectStore>,
    image: &Image,
    stream: StreamId,
) -> Result<Producers, BrokerError> {
    let Some((_, _, partition)) = image.partition_of_stream(stream) else { return Ok(Producers::default()) };
    let end = partition.uploaded_end;
    if end.0 == 0 {
        return Ok(Producers::default());
    }
    let ranges = image.object_ranges_from(stream, Offset(end.0 - 1));
    // Retention may have deleted the last range: its producers are then
    // forgotten, as Kafka forgets the producers of deleted segments.
    let Some((object, range)) = ranges.into_iter().find(|(_, range)| range.end == end) else {
        return Ok(Producers::default());
    };
    if range.snapshot_len == 0 {
        return Ok(Producers::default());
    }
    match store.get_range(&object.key, range.snapshot_pos, range.snapshot_len).await {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| BrokerError::ObjectDamaged {
            key: object.key.clone(),
            reason: format!("the producer snapshot of {stream}: {error}"),
        }),
        Err(keel_objects::StoreError::NotFound { .. }) => Ok(Producers::default()),
        Err(error) => Err(error.into()),
    }
}

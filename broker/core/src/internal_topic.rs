//! Reading the broker's own internal topics (`__consumer_offsets`,
//! `__transaction_state`) back as their coordinators replay them: keyed
//! records in offset order, and the transaction markers between them.

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;
use keel_controller_client::{Offset, ProducerId};

use crate::batch::{self, BatchError, Marker};

/// What a partition of an internal topic holds, in offset order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A record; `producer` is set for a transaction's record (offsets
    /// committed in a transaction).
    Record { key: Bytes, value: Option<Bytes>, producer: Option<ProducerId> },
    /// A transaction's end.
    Marker { producer: ProducerId, commit: bool },
}

/// Why a stored batch of an internal topic cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("a stored batch is damaged: {0}")]
    Batch(#[from] BatchError),
    #[error("the records of the batch at offset {offset} cannot be decoded: {reason}")]
    Records { offset: Offset, reason: String },
}

/// The items of one stored batch from offset `from` on (a batch may start
/// below the partition's start offset), and the offset after the batch.
pub fn items(stored: &Bytes, from: Offset, out: &mut Vec<Item>) -> Result<Offset, ReplayError> {
    let header = batch::stored_header(stored)?;
    let end = batch::base_offset(stored) + i64::from(header.last_offset_delta) + 1;
    if header.is_control() {
        if let Some((marker, _)) = batch::marker(stored) {
            out.push(Item::Marker { producer: header.producer_id, commit: marker == Marker::Commit });
        }
        return Ok(end);
    }
    let producer = header.is_transactional().then_some(header.producer_id);
    let mut bytes = stored.clone();
    let set = RecordBatchDecoder::decode(&mut bytes)
        .map_err(|error| ReplayError::Records { offset: batch::base_offset(stored), reason: error.to_string() })?;
    for record in set.records.into_iter().filter(|record| record.offset >= from.0 && !record.control) {
        if let Some(key) = record.key {
            out.push(Item::Record { key, value: record.value, producer });
        }
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_batches_and_markers_read_back_as_items_from_the_start_offset_on() {
        let records =
            vec![(Bytes::from_static(b"k1"), Some(Bytes::from_static(b"v1"))), (Bytes::from_static(b"k2"), None)];
        let mut keyed = bytes::BytesMut::from(&batch::keyed_batch(records, Some((ProducerId(7), 0)), 0)[..]);
        batch::assign(&mut keyed, Offset(10), 0);
        let mut out = Vec::new();
        assert_eq!(items(&keyed.freeze(), Offset(11), &mut out).unwrap(), Offset(12));
        let record = Item::Record { key: Bytes::from_static(b"k2"), value: None, producer: Some(ProducerId(7)) };
        assert_eq!(out, [record]);

        let mut marker = bytes::BytesMut::from(&batch::marker_batch(ProducerId(7), 0, Marker::Commit, 3, 0)[..]);
        batch::assign(&mut marker, Offset(12), 0);
        out.clear();
        assert_eq!(items(&marker.freeze(), Offset(0), &mut out).unwrap(), Offset(13));
        assert_eq!(out, [Item::Marker { producer: ProducerId(7), commit: true }]);

        let short = items(&Bytes::from_static(b"short"), Offset(0), &mut out);
        assert!(matches!(short, Err(ReplayError::Batch(_))));
    }
}

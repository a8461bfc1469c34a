//! `cleanup.policy=compact` (DESIGN §3.5): for topics that ask for it, the
//! uploaded history of each partition is rewritten keeping only the latest
//! record of each key (records without a key are kept). Offsets never
//! change: the gaps left behind are what a compacted Kafka log looks like.
//! Each kept batch is decoded and encoded again with its own codec, producer
//! fields and offsets; the rewritten range replaces the old ones in one
//! `CompactRanges` swap, and the old objects become garbage. A partition is
//! rewritten only when doing so removes something.
//!
//! The newest records, still in the WAL, are not looked at: a key updated
//! there keeps its older uploaded value until the next round, as Kafka keeps
//! the dirty head of a log until the cleaner reaches it.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, RecordSet};
use keel_controller_client::{Epoch, Image, ObjectRange, ObjectRecord, StreamId, Topic};
use keel_objects::ObjectStore;

use crate::cluster::Cluster;

/// Compacts by key every partition of every `cleanup.policy=compact` topic
/// where that removes a record; returns how many partitions it rewrote.
pub async fn compact(
    cluster: &Cluster,
    store: &Arc<dyn ObjectStore>,
    image: &Image,
    epoch: Epoch,
) -> anyhow::Result<usize> {
    let mut rewritten = 0;
    for topic in image.topics.values().filter(|topic| compacted(topic)) {
        for partition in &topic.partitions {
            let ranges = image.object_ranges_from(partition.stream_id, partition.start_offset);
            if ranges.is_empty() {
                continue;
            }
            let retention = topic.config("delete.retention.ms").and_then(|v| v.parse().ok()).unwrap_or(86_400_000);
            if rewrite(cluster, store, partition.stream_id, &ranges, epoch, retention).await? {
                rewritten += 1;
            }
        }
    }
    Ok(rewritten)
}

fn compacted(topic: &Topic) -> bool {
    topic.config("cleanup.policy").is_some_and(|policy| policy.split(',').any(|p| p.trim() == "compact"))
}

/// The decoded batches of one stream's uploaded ranges, in offset order.
async fn read_batches(
    store: &Arc<dyn ObjectStore>,
    ranges: &[(&ObjectRecord, &ObjectRange)],
) -> anyhow::Result<Vec<RecordSet>> {
    let mut sets = Vec::new();
    for (object, range) in ranges {
        let bytes =
            store.get_range(&object.key, range.pos, range.len).await.with_context(|| format!("GET {}", object.key))?;
        let batches =
            keel_broker_core::batch::split(&bytes).map_err(|reason| anyhow::anyhow!("{}: {reason}", object.key))?;
        for batch in batches {
            let mut batch = batch;
            sets.push(
                RecordBatchDecoder::decode(&mut batch).with_context(|| format!("decode a batch of {}", object.key))?,
            );
        }
    }
    Ok(sets)
}

/// What to do with each record of `sets` (in offset order), as Kafka's
/// log cleaner decides: a record of a committed transaction or of no
/// transaction stays if it is its key's latest (keyless records stay); a
/// record of an aborted transaction goes (no `read_committed` reader ever
/// sees it); a record of a transaction whose marker is not in `sets` yet
/// stays and does not count as its key's latest (it may still abort); a
/// transaction marker stays while a record of its transaction does, and
/// for `delete_retention_ms` (Kafka's `delete.retention.ms`) after it was
/// written, so a reader that was part-way through the transaction still
/// sees its end.
fn decide(sets: &[RecordSet], now_ms: i64, delete_retention_ms: i64) -> Vec<Vec<bool>> {
    // Each transactional batch's outcome: Some(committed), or None while
    // its marker is not among `sets`.
    let mut outcome: Vec<Option<bool>> = vec![None; sets.len()];
    let mut open: HashMap<i64, Vec<usize>> = HashMap::new();
    // Marker set -> the transactional sets it ended.
    let mut ended: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, set) in sets.iter().enumerate() {
        let Some(first) = set.records.first() else { continue };
        if first.control {
            let commit = first.key.as_ref().filter(|key| key.len() >= 4).map(|key| key[2..4] == [0, 1]);
            if let (Some(commit), Some(batches)) = (commit, open.remove(&first.producer_id)) {
                for batch in &batches {
                    outcome[*batch] = Some(commit);
                }
                ended.insert(i, batches);
            }
        } else if first.transactional {
            open.entry(first.producer_id).or_default().push(i);
        }
    }
    let counts = |i: usize, record: &Record| !record.control && (!record.transactional || outcome[i] == Some(true));
    let mut latest: HashMap<&Bytes, i64> = HashMap::new();
    for (i, set) in sets.iter().enumerate() {
        for record in set.records.iter().filter(|record| counts(i, record)) {
            if let Some(key) = &record.key {
                latest.insert(key, record.offset);
            }
        }
    }
    let mut keep: Vec<Vec<bool>> = sets
        .iter()
        .enumerate()
        .map(|(i, set)| {
            set.records
                .iter()
                .map(|record| {
                    if record.control {
                        return true;
                    }
                    if record.transactional {
                        match outcome[i] {
                            Some(false) => return false,
                            None => return true,
                            Some(true) => {}
                        }
                    }
                    record.key.as_ref().is_none_or(|key| latest.get(key) == Some(&record.offset))
                })
                .collect()
        })
        .collect();
    for (marker, batches) in ended {
        let data_left = batches.iter().any(|b| keep[*b].iter().any(|kept| *kept));
        let written = sets[marker].records.first().map_or(now_ms, |r| r.timestamp);
        if !data_left && now_ms.saturating_sub(written) > delete_retention_ms {
            keep[marker].iter_mut().for_each(|kept| *kept = false);
        }
    }
    keep
}

/// Keeps the latest record per key (`decide`); false when nothing would
/// be removed.
async fn rewrite(
    cluster: &Cluster,
    store: &Arc<dyn ObjectStore>,
    stream: StreamId,
    ranges: &[(&ObjectRecord, &ObjectRange)],
    epoch: Epoch,
    delete_retention_ms: i64,
) -> anyhow::Result<bool> {
    let sets = read_batches(store, ranges).await?;
    let keep = decide(&sets, keel_broker_core::clock::now_ms(), delete_retention_ms);
    if keep.iter().flatten().all(|kept| *kept) {
        return Ok(false);
    }
    let mut batches = Vec::new();
    for (set, keep) in sets.iter().zip(&keep) {
        let records: Vec<&Record> = set.records.iter().zip(keep).filter(|(_, kept)| **kept).map(|(r, _)| r).collect();
        if records.is_empty() {
            continue;
        }
        let mut bytes = BytesMut::new();
        let options = RecordEncodeOptions { version: 2, compression: set.compression };
        RecordBatchEncoder::encode(&mut bytes, records, &options).context("encode a compacted batch")?;
        batches.push(bytes.freeze());
    }
    let id = super::compactor::swap_in(cluster, store, stream, ranges, &batches, epoch).await?;
    let (from, to) = (ranges[0].1.start, ranges[ranges.len() - 1].1.end);
    let removed = keep.iter().flatten().filter(|kept| !**kept).count();
    tracing::info!(%stream, from = from.0, to = to.0, removed, %id, "compacted by key");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{Compression, TimestampType};

    fn record(offset: i64, key: &'static [u8], producer: Option<i64>) -> Record {
        Record {
            transactional: producer.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: producer.unwrap_or(-1),
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: -1,
            timestamp: 0,
            key: Some(Bytes::from_static(key)),
            value: Some(Bytes::from_static(b"v")),
            headers: Default::default(),
        }
    }

    fn marker(offset: i64, producer: i64, commit: bool) -> Record {
        let kind: &'static [u8] = if commit { &[0, 0, 0, 1] } else { &[0, 0, 0, 0] };
        Record { control: true, ..record(offset, kind, Some(producer)) }
    }

    fn set(records: Vec<Record>) -> RecordSet {
        RecordSet { compression: Compression::None, version: 2, records }
    }

    #[test]
    fn a_marker_goes_once_its_transaction_has_no_record_left_and_the_retention_passed() {
        let sets = vec![set(vec![record(0, b"a", Some(7))]), set(vec![marker(1, 7, false)])];
        assert_eq!(decide(&sets, 1_000, 86_400_000), vec![vec![false], vec![true]], "written just now: kept");
        assert_eq!(decide(&sets, 90_000_000, 86_400_000), vec![vec![false], vec![false]], "past the retention");
        let committed = vec![set(vec![record(0, b"a", Some(7))]), set(vec![marker(1, 7, true)])];
        assert_eq!(decide(&committed, 90_000_000, 86_400_000), vec![vec![true], vec![true]], "its record is kept");
    }

    #[test]
    fn aborted_records_go_open_ones_stay_and_markers_are_kept() {
        let sets = vec![
            set(vec![record(0, b"a", None), record(1, b"b", None)]),
            set(vec![record(2, b"a", Some(7))]), // aborted below: "a" keeps offset 0
            set(vec![record(3, b"b", Some(8))]), // committed below: "b" is now offset 3
            set(vec![marker(4, 7, false)]),
            set(vec![marker(5, 8, true)]),
            set(vec![record(6, b"c", None)]),
            set(vec![record(7, b"c", Some(9))]), // no marker yet: kept, "c" keeps offset 6 too
            set(vec![marker(8, 8, true)]),       // a second commit marker, same key bytes: kept
        ];
        let keep = decide(&sets, 1_000, 86_400_000);
        assert_eq!(
            keep,
            vec![
                vec![true, false],
                vec![false],
                vec![true],
                vec![true],
                vec![true],
                vec![true],
                vec![true],
                vec![true]
            ]
        );
    }
}

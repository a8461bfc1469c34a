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
use keel_controller_client::{pb, Epoch, Image, ObjectRange, ObjectRecord, Outcome, StreamId, Topic};
use keel_objects::format::ObjectBuilder;
use keel_objects::ObjectStore;

use crate::broker::Broker;
use crate::uploader::object_key;

/// Compacts by key every partition of every `cleanup.policy=compact` topic
/// where that removes a record; returns how many partitions it rewrote.
pub async fn compact(
    broker: &Broker,
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
            if rewrite(broker, store, partition.stream_id, &ranges, epoch).await? {
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
            crate::object_reads::split(&bytes).map_err(|reason| anyhow::anyhow!("{}: {reason}", object.key))?;
        for batch in batches {
            let mut batch = batch;
            sets.push(
                RecordBatchDecoder::decode(&mut batch).with_context(|| format!("decode a batch of {}", object.key))?,
            );
        }
    }
    Ok(sets)
}

/// Keeps the latest record per key; false when nothing would be removed.
async fn rewrite(
    broker: &Broker,
    store: &Arc<dyn ObjectStore>,
    stream: StreamId,
    ranges: &[(&ObjectRecord, &ObjectRange)],
    epoch: Epoch,
) -> anyhow::Result<bool> {
    let sets = read_batches(store, ranges).await?;
    let mut latest: HashMap<&Bytes, i64> = HashMap::new();
    for record in sets.iter().flat_map(|set| &set.records) {
        if let Some(key) = &record.key {
            latest.insert(key, record.offset);
        }
    }
    let kept = |record: &Record| record.key.as_ref().is_none_or(|key| latest.get(key) == Some(&record.offset));
    if sets.iter().flat_map(|set| &set.records).all(kept) {
        return Ok(false);
    }
    let mut batches = Vec::new();
    for set in &sets {
        let records: Vec<&Record> = set.records.iter().filter(|record| kept(record)).collect();
        if records.is_empty() {
            continue;
        }
        let mut bytes = BytesMut::new();
        let options = RecordEncodeOptions { version: 2, compression: set.compression };
        RecordBatchEncoder::encode(&mut bytes, records, &options).context("encode a compacted batch")?;
        batches.push(bytes.freeze());
    }
    let (first, last) = (ranges[0].1, ranges[ranges.len() - 1].1);
    let min_ts = ranges.iter().map(|(_, range)| range.min_ts).min().unwrap_or(i64::MAX);
    let max_ts = ranges.iter().map(|(_, range)| range.max_ts).max().unwrap_or(i64::MIN);
    // The rewritten range ends where the last one did: its snapshot holds.
    let (last_object, _) = ranges[ranges.len() - 1];
    let snapshot = match last.snapshot_len {
        0 => Bytes::new(),
        len => store.get_range(&last_object.key, last.snapshot_pos, len).await?,
    };
    let mut builder = ObjectBuilder::default();
    builder.add_range(stream.0, first.start.0, last.end.0, (min_ts, max_ts), &batches, &snapshot);
    let (bytes, index) = builder.finish();

    let request = pb::ReserveObjectsRequest {
        broker: broker.config.node_id.0,
        broker_epoch: epoch.0,
        count: 1,
        ttl_ms: 3_600_000,
    };
    let id = match broker.client.reserve_objects(request).await.context("ReserveObjects")? {
        (_, Outcome::ObjectsReserved { first, .. }) => first,
        (_, other) => anyhow::bail!("ReserveObjects answered {other:?}"),
    };
    let key = object_key(&broker.config.cluster_id, id);
    let size = bytes.len() as u64;
    store.put(&key, bytes).await.with_context(|| format!("PUT {key}"))?;
    let entry = &index[0];
    let object = ObjectRecord {
        id,
        key: key.clone(),
        size,
        ranges: vec![ObjectRange {
            stream,
            start: first.start,
            end: last.end,
            pos: entry.pos,
            len: entry.len,
            min_ts,
            max_ts,
            snapshot_pos: entry.snapshot_pos,
            snapshot_len: entry.snapshot_len,
        }],
    };
    let request = pb::CompactRangesRequest {
        stream: stream.0,
        object: serde_json::to_vec(&object)?,
        replaced: ranges.iter().map(|(object, _)| object.id.0).collect(),
        sender: broker.config.node_id.0,
        sender_epoch: epoch.0,
    };
    match broker.client.compact_ranges(request).await {
        Ok((version, Outcome::RangesCompacted { .. })) => {
            let mut images = broker.images.clone();
            keel_controller_client::follower::wait_for_version(
                &mut images,
                version,
                std::time::Duration::from_secs(10),
            )
            .await?;
            tracing::info!(%stream, from = first.start.0, to = last.end.0, keys = latest.len(), "compacted by key");
            Ok(true)
        }
        // Not deleted here: an earlier attempt may have applied. Garbage
        // collection deletes it once its reservation expired unused.
        outcome => anyhow::bail!("CompactRanges (by key) for {stream} answered {outcome:?}"),
    }
}

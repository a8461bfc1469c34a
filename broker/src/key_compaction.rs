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

use crate::broker::Broker;

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
    let id = crate::compactor::swap_in(broker, store, stream, ranges, &batches, epoch).await?;
    let (from, to) = (ranges[0].1.start, ranges[ranges.len() - 1].1.end);
    tracing::info!(%stream, from = from.0, to = to.0, keys = latest.len(), %id, "compacted by key");
    Ok(true)
}

//! The compactor (DESIGN §3.5): uploads make one small multi-stream object
//! every few seconds, so a partition's history ends up spread over many of
//! them. The compactor rewrites runs of a stream's small ranges into one
//! per-stream object (bytes copied as they are) and commits the swap
//! (`CompactRanges`) in one step; the replaced objects lose that stream's
//! range, and once nothing readable is left in them garbage collection
//! deletes them after the grace period. It runs beside garbage collection,
//! on one broker at a time.

use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use keel_controller_client::{pb, Epoch, Image, ObjectId, ObjectRange, ObjectRecord, Outcome, StreamId};
use keel_objects::format::ObjectBuilder;
use keel_objects::ObjectStore;

use super::uploader::{object_key, object_range, reserve};
use crate::cluster::Cluster;

/// A range in an object smaller than this, or in a multi-stream object, is worth merging.
const SMALL_OBJECT_BYTES: u64 = 8 << 20;
/// The most bytes one compacted object holds.
const MAX_COMPACTED_BYTES: u64 = 64 << 20;

/// Compacts the first run worth it in every stream; returns how many objects it wrote.
pub async fn compact(
    cluster: &Cluster,
    store: &Arc<dyn ObjectStore>,
    image: &Image,
    epoch: Epoch,
) -> anyhow::Result<usize> {
    let mut written = 0;
    for topic in image.topics.values() {
        for partition in &topic.partitions {
            let ranges = image.object_ranges_from(partition.stream_id, partition.start_offset);
            let min_run = cluster.config.compaction_min_ranges;
            let run = run_to_merge(&ranges, min_run);
            if run.len() >= min_run {
                merge(cluster, store, partition.stream_id, &run, epoch).await?;
                written += 1;
            }
        }
    }
    Ok(written)
}

/// The first run of contiguous small ranges, bounded in bytes.
fn run_to_merge<'a>(
    ranges: &[(&'a ObjectRecord, &'a ObjectRange)],
    min_run: usize,
) -> Vec<(&'a ObjectRecord, &'a ObjectRange)> {
    let small =
        |(object, _): &(&ObjectRecord, &ObjectRange)| object.ranges.len() > 1 || object.size < SMALL_OBJECT_BYTES;
    let mut run: Vec<(&ObjectRecord, &ObjectRange)> = Vec::new();
    let mut bytes = 0;
    for entry in ranges {
        let follows = run.last().is_none_or(|(_, last)| last.end == entry.1.start);
        if small(entry) && follows && bytes + entry.1.len <= MAX_COMPACTED_BYTES {
            bytes += entry.1.len;
            run.push(*entry);
        } else if run.len() >= min_run {
            break;
        } else {
            run.clear();
            bytes = 0;
            if small(entry) {
                bytes = entry.1.len;
                run.push(*entry);
            }
        }
    }
    run
}

async fn merge(
    cluster: &Cluster,
    store: &Arc<dyn ObjectStore>,
    stream: StreamId,
    run: &[(&ObjectRecord, &ObjectRange)],
    epoch: Epoch,
) -> anyhow::Result<()> {
    let mut batches: Vec<Bytes> = Vec::with_capacity(run.len());
    for (object, range) in run {
        let bytes =
            store.get_range(&object.key, range.pos, range.len).await.with_context(|| format!("GET {}", object.key))?;
        keel_broker_core::batch::split(&bytes).map_err(|reason| anyhow::anyhow!("{}: {reason}", object.key))?;
        batches.push(bytes);
    }
    let (start, end) = (run[0].1.start, run[run.len() - 1].1.end);
    let id = swap_in(cluster, store, stream, run, &batches, epoch).await?;
    tracing::info!(%stream, from = start.0, to = end.0, objects = run.len(), %id, "compacted ranges into one object");
    Ok(())
}

/// Writes `batches` (all of `stream`'s offsets in `run`, a contiguous run of
/// its ranges) as one new object and commits the swap (`CompactRanges`).
/// Shared by this compactor and compaction by key.
pub async fn swap_in(
    cluster: &Cluster,
    store: &Arc<dyn ObjectStore>,
    stream: StreamId,
    run: &[(&ObjectRecord, &ObjectRange)],
    batches: &[Bytes],
    epoch: Epoch,
) -> anyhow::Result<ObjectId> {
    let (start, end) = (run[0].1.start, run[run.len() - 1].1.end);
    let min_ts = run.iter().map(|(_, range)| range.min_ts).min().unwrap_or(i64::MAX);
    let max_ts = run.iter().map(|(_, range)| range.max_ts).max().unwrap_or(i64::MIN);
    // The new range ends where the run's last range ends: its snapshot holds.
    let (last_object, last_range) = run[run.len() - 1];
    let snapshot = match last_range.snapshot_len {
        0 => Bytes::new(),
        len => store.get_range(&last_object.key, last_range.snapshot_pos, len).await?,
    };
    let mut builder = ObjectBuilder::default();
    builder.add_range(stream.0, start.0, end.0, (min_ts, max_ts), batches, &snapshot);
    let (bytes, index) = builder.finish();

    let id = reserve(cluster, epoch).await?;
    let key = object_key(&cluster.config.cluster_id, id);
    let size = bytes.len() as u64;
    store.put(&key, bytes).await.with_context(|| format!("PUT {key}"))?;
    let object = ObjectRecord { id, key, size, ranges: index.iter().map(object_range).collect() };
    let request = pb::CompactRangesRequest {
        stream: stream.0,
        object: serde_json::to_vec(&object)?,
        replaced: run.iter().map(|(object, _)| object.id.0).collect(),
        sender: cluster.config.node_id.0,
        sender_epoch: epoch.0,
    };
    match cluster.client.compact_ranges(request).await {
        Ok((version, Outcome::RangesCompacted { .. })) => {
            cluster.seen(version).await?;
            Ok(id)
        }
        // Not deleted here: an earlier attempt may have applied. Garbage
        // collection deletes it once its reservation expired unused.
        outcome => anyhow::bail!("CompactRanges for {stream} answered {outcome:?}"),
    }
}

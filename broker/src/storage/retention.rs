//! Retention, object garbage collection and (through `compactor.rs`) compaction.
//!
//! Every `retention_check_interval`, the leader of each partition applies
//! the topic's `retention.ms` and `retention.bytes` to its uploaded ranges
//! (whole ranges only, as Kafka deletes whole segments) and moves the
//! partition's start offset forward (`AdvanceStartOffset`). Objects in which
//! nothing readable is left then leave the index (`DeleteObjects`); after
//! `object_delete_delay`, for readers that found them just before, their
//! bytes are deleted from the store and the controller forgets them
//! (`PurgeObjects`), together with expired reservations, whose keys are
//! deleted too in case an upload wrote them and never committed. Garbage
//! collection and compaction run on one broker at a time: the active broker
//! with the lowest id, which also has the controller forget the WAL logs
//! that are done (sealed and uploaded to their sealed seq: `ForgetLogs`).
//! Nothing is ever deleted by listing the bucket.

use std::sync::Arc;

use keel_controller_client::{pb, Image, NodeState, ObjectId, ObjectRange, Topic, WalLogState};
use keel_objects::ObjectStore;
use tokio_util::sync::CancellationToken;

use super::uploader::object_key;
use crate::cluster::Cluster;

pub async fn run(cluster: Arc<Cluster>, storage: Arc<super::Storage>, cancel: CancellationToken) {
    let store = &storage.store;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(cluster.config.retention_check_interval) => {}
        }
        let Some(epoch) = cluster.live_epoch() else { continue };
        let image = cluster.image();
        for topic in image.topics.values() {
            for index in 0..topic.partitions.len() as i32 {
                if let Err(error) = enforce(&cluster, &image, topic, index, epoch).await {
                    tracing::warn!(topic = %topic.name, partition = index, "retention: {error:#}");
                }
            }
        }
        let janitor = image.brokers.values().filter(|b| b.state == NodeState::Active).map(|b| b.id).min();
        if janitor == Some(cluster.config.node_id) {
            if let Err(error) = collect_garbage(&cluster, store, &image, epoch).await {
                tracing::warn!("object garbage collection: {error:#}");
            }
            forget_done_logs(&cluster, &image, epoch).await;
            if let Err(error) = super::compactor::compact(&cluster, store, &cluster.image(), epoch).await {
                tracing::warn!("compaction: {error:#}");
            }
            if let Err(error) = super::key_compaction::compact(&cluster, store, &cluster.image(), epoch).await {
                tracing::warn!("compaction by key: {error:#}");
            }
        }
    }
}

/// Has the controller forget the WAL logs that are sealed and uploaded to
/// their sealed seq: without it every log a broker ever wrote would stay in
/// the metadata (and in every image sent to every node) for ever.
async fn forget_done_logs(cluster: &Cluster, image: &Image, epoch: keel_controller_client::Epoch) {
    let done: Vec<u64> = image
        .wal_logs
        .values()
        .filter(|log| matches!(&log.state, WalLogState::Sealed { sealed_seq, .. } if log.trim_seq >= *sealed_seq))
        .map(|log| log.id.0)
        .collect();
    if done.is_empty() {
        return;
    }
    let count = done.len();
    let request = pb::ForgetLogsRequest { logs: done, sender: cluster.config.node_id.0, sender_epoch: epoch.0 };
    match cluster.client.forget_logs(request).await {
        Ok(_) => tracing::info!(logs = count, "forgot WAL logs that are sealed and uploaded"),
        Err(error) => tracing::debug!("ForgetLogs refused, retrying later: {error}"),
    }
}

/// The start offset retention allows for a partition whose uploaded ranges
/// from its start on are `ranges` (in offset order): every leading range
/// whose newest record is older than `retention_ms`, and as many leading
/// ranges as keep the rest at or above `retention_bytes`, go (-1: no limit).
pub fn retained_start(
    ranges: &[&ObjectRange],
    start: i64,
    now_ms: i64,
    retention_ms: i64,
    retention_bytes: i64,
) -> i64 {
    let mut total: i64 = ranges.iter().map(|range| range.len as i64).sum();
    let mut new_start = start;
    for range in ranges {
        let too_old = retention_ms >= 0 && range.max_ts < now_ms.saturating_sub(retention_ms);
        let too_big = retention_bytes >= 0 && total - range.len as i64 >= retention_bytes;
        if !(too_old || too_big) {
            break;
        }
        new_start = new_start.max(range.end.0);
        total -= range.len as i64;
    }
    new_start
}

async fn enforce(
    cluster: &Cluster,
    image: &Image,
    topic: &Topic,
    index: i32,
    epoch: keel_controller_client::Epoch,
) -> anyhow::Result<()> {
    let Some((stream, leader_epoch)) = cluster.led(topic, index) else { return Ok(()) };
    let partition = &topic.partitions[index as usize];
    let config = |key: &str| topic.config(key).and_then(|value| value.parse::<i64>().ok()).unwrap_or(-1);
    let (retention_ms, retention_bytes) = (config("retention.ms"), config("retention.bytes"));
    if retention_ms < 0 && retention_bytes < 0 {
        return Ok(());
    }
    let ranges: Vec<&ObjectRange> =
        image.object_ranges_from(stream, partition.start_offset).into_iter().map(|(_, range)| range).collect();
    let start = partition.start_offset.0;
    let new_start = retained_start(&ranges, start, keel_broker_core::clock::now_ms(), retention_ms, retention_bytes);
    if new_start <= start {
        return Ok(());
    }
    cluster.advance_start_offset(topic, index, leader_epoch, new_start, epoch).await?;
    tracing::info!(topic = %topic.name, partition = index, from = start, to = new_start, "retention moved the start offset");
    Ok(())
}

async fn collect_garbage(
    cluster: &Cluster,
    store: &Arc<dyn ObjectStore>,
    image: &Image,
    epoch: keel_controller_client::Epoch,
) -> anyhow::Result<()> {
    let unreferenced: Vec<u64> =
        image.objects.values().filter(|object| image.object_unreferenced(object)).map(|object| object.id.0).collect();
    if !unreferenced.is_empty() {
        let request = pb::DeleteObjectsRequest {
            objects: unreferenced.clone(),
            sender: cluster.config.node_id.0,
            sender_epoch: epoch.0,
        };
        cluster.client.delete_objects(request).await?;
        tracing::info!(objects = unreferenced.len(), "objects with nothing readable left their index");
    }
    let now = keel_broker_core::clock::now_ms();
    let grace = cluster.config.object_delete_delay.as_millis() as i64;
    let deleted: Vec<(ObjectId, &str)> = image
        .deleted_objects
        .iter()
        .filter(|(_, object)| object.deleted_at_ms + grace <= now)
        .map(|(id, object)| (*id, object.key.as_str()))
        .collect();
    let expired: Vec<ObjectId> =
        image.reservations.iter().filter(|(_, r)| r.deadline_ms <= now).map(|(id, _)| *id).collect();
    if deleted.is_empty() && expired.is_empty() {
        return Ok(());
    }
    // Bytes of objects out of the index go first, then the controller
    // forgets them; an expired reservation is forgotten first (no commit can
    // use it any more), then its key is deleted.
    for (_, key) in &deleted {
        store.delete(key).await?;
    }
    let request = pb::PurgeObjectsRequest {
        deleted: deleted.iter().map(|(id, _)| id.0).collect(),
        reservations: expired.iter().map(|id| id.0).collect(),
        grace_ms: grace as u64,
        sender: cluster.config.node_id.0,
        sender_epoch: epoch.0,
    };
    // The controller checks the grace period on its own clock; a refusal
    // (clocks apart) is retried on the next round.
    match cluster.client.purge_objects(request).await {
        Ok(_) => {
            for id in &expired {
                let key = object_key(&cluster.config.cluster_id, *id);
                if let Err(error) = store.delete(&key).await {
                    tracing::warn!(key, "could not delete the key of an expired reservation: {error}");
                }
            }
            tracing::info!(objects = deleted.len(), reservations = expired.len(), "deleted from the object store");
        }
        Err(error) => tracing::debug!("PurgeObjects refused, retrying later: {error}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use keel_controller_client::{Offset, StreamId};

    use super::*;

    fn range(start: i64, end: i64, len: u64, max_ts: i64) -> ObjectRange {
        ObjectRange {
            stream: StreamId(1),
            start: Offset(start),
            end: Offset(end),
            pos: 0,
            len,
            min_ts: 0,
            max_ts,
            snapshot_pos: 0,
            snapshot_len: 0,
        }
    }

    #[test]
    fn retention_drops_whole_leading_ranges_by_age_and_by_size() {
        let ranges = [range(0, 10, 100, 1_000), range(10, 20, 100, 5_000), range(20, 30, 100, 9_000)];
        let all: Vec<&ObjectRange> = ranges.iter().collect();
        assert_eq!(retained_start(&all, 0, 10_000, -1, -1), 0, "no limits");
        assert_eq!(retained_start(&all, 0, 10_000, 6_000, -1), 10, "only the first is older than 6 s");
        assert_eq!(retained_start(&all, 0, 10_000, 0, -1), 30, "everything is older than now");
        assert_eq!(retained_start(&all, 0, 10_000, -1, 150), 10, "what is left stays at or above 150 bytes");
        assert_eq!(retained_start(&all, 0, 10_000, -1, 100), 20, "the last range alone is 100 bytes");
        assert_eq!(retained_start(&all, 0, 10_000, -1, 300), 0, "300 bytes are all there is");
        assert_eq!(retained_start(&all, 25, 10_000, 0, -1), 30, "never below the current start");
    }
}

//! Which partitions this broker leads, following the metadata (DESIGN §5).
//!
//! The controller hands a partition over only once everything its previous
//! leader appended is uploaded, so a partition newly led here starts at its
//! uploaded end, with the producer state of the snapshot uploaded there:
//! no data is copied between brokers. Until that state is loaded, produce
//! and fetch answer NOT_LEADER_OR_FOLLOWER (retriable). A partition this
//! broker no longer leads, or leads at another leader epoch, is dropped with
//! its cached batches.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use keel_broker_core::producers::Producers;
use keel_controller_client::{Image, LeaderEpoch, Offset, StreamId};
use tokio_util::sync::CancellationToken;

use super::Partitions;

/// Pause after a snapshot could not be read.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

pub async fn run(partitions: Arc<Partitions>, cancel: CancellationToken) {
    let mut images = partitions.cluster.images.clone();
    loop {
        let complete = follow(&partitions).await;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = images.changed() => {}
            _ = partitions.leaders_changed.notified() => {}
            _ = tokio::time::sleep(RETRY_PAUSE), if !complete => {}
        }
    }
}

/// Brings the led partitions in line with the image; false if some
/// partition's state could not be loaded yet.
async fn follow(partitions: &Partitions) -> bool {
    let cluster = &partitions.cluster;
    let (image, log, missing) = {
        let mut leadership = partitions.leadership();
        // Read under the lock: a produce makes a partition's state from an
        // image it read before taking the lock, so this one is at least as
        // new, and a state is never dropped on the word of an older image.
        let image = cluster.image();
        let led = led_by(&image, cluster.config.node_id);
        let Some(log) = leadership.owned.as_ref().map(|owned| owned.log) else { return true };
        let gone: Vec<StreamId> = leadership
            .partitions
            .iter()
            .filter(|(stream, state)| led.get(stream).map(|(epoch, _)| *epoch) != Some(state.leader_epoch))
            .map(|(stream, _)| *stream)
            .collect();
        for stream in gone {
            leadership.partitions.remove(&stream);
            partitions.cache.forget(stream);
            tracing::info!(%stream, "no longer leading the partition");
        }
        let missing: Vec<(StreamId, LeaderEpoch, Offset)> = led
            .iter()
            .filter(|(stream, _)| !leadership.partitions.contains_key(stream))
            .map(|(stream, (epoch, end))| (*stream, *epoch, *end))
            .collect();
        (image, log, missing)
    };
    let loads = missing.iter().map(|(stream, _, end)| producers_at(partitions, &image, *stream, *end));
    let loaded = futures::future::join_all(loads).await;
    let mut complete = true;
    let mut leadership = partitions.leadership();
    let still_led = led_by(&cluster.image(), cluster.config.node_id);
    for ((stream, epoch, end), producers) in missing.into_iter().zip(loaded) {
        let Some(producers) = producers else {
            complete = false;
            continue;
        };
        let current_log = leadership.owned.as_ref().map(|owned| owned.log);
        if current_log != Some(log) || still_led.get(&stream).map(|(e, _)| *e) != Some(epoch) {
            continue;
        }
        if leadership.partitions.get(&stream).is_some_and(|state| state.leader_epoch == epoch) {
            // Made meanwhile by a produce (nothing uploaded): it may hold appends.
            continue;
        }
        leadership.lead(stream, epoch, end, producers);
        cluster.metrics.partitions_taken.inc();
        tracing::info!(%stream, leader_epoch = %epoch, from = %end, "leading the partition");
    }
    cluster.metrics.partitions_led.set(leadership.partitions.len() as i64);
    drop(leadership);
    partitions.leading.send_modify(|count| *count += 1);
    let image = cluster.image();
    if let Ok(mut since) = partitions.planned_since.lock() {
        if !since.is_empty() {
            // Kept while a partition is still being taken over: leaderless,
            // or assigned here with its state not loaded yet.
            let me = cluster.config.node_id;
            let leadership = partitions.leadership();
            let taking_over: std::collections::HashSet<StreamId> = image
                .partitions()
                .filter(|(_, _, p)| p.leader.is_none() || leadership.loading(me, p))
                .map(|(_, _, p)| p.stream_id)
                .collect();
            drop(leadership);
            since.retain(|stream, _| taking_over.contains(stream));
        }
    }
    complete
}

/// The partitions `image` gives this broker: leader epoch and uploaded end.
fn led_by(image: &Image, me: keel_controller_client::NodeId) -> HashMap<StreamId, (LeaderEpoch, Offset)> {
    image
        .led_by(me)
        .map(|(_, _, partition)| (partition.stream_id, (partition.leader_epoch, partition.uploaded_end)))
        .collect()
}

/// The producer state as of `end` (the uploaded snapshot), or `None` if the
/// object store cannot give it now.
async fn producers_at(partitions: &Partitions, image: &Image, stream: StreamId, end: Offset) -> Option<Producers> {
    if end.0 == 0 {
        return Some(Producers::default());
    }
    match crate::storage::snapshots::at_uploaded_end(&partitions.storage.store, image, stream).await {
        Ok(producers) => Some(producers),
        Err(error) => {
            tracing::warn!(%stream, "cannot read the producer snapshot yet: {error:#}");
            None
        }
    }
}

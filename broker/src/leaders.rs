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

use keel_controller_client::{Image, LeaderEpoch, Offset, StreamId};
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::producers::Producers;

/// Pause after a snapshot could not be read.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

pub async fn run(broker: Arc<Broker>, cancel: CancellationToken) {
    let mut images = broker.images.clone();
    loop {
        let complete = follow(&broker).await;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = images.changed() => {}
            _ = broker.leaders_changed.notified() => {}
            _ = tokio::time::sleep(RETRY_PAUSE), if !complete => {}
        }
    }
}

/// Brings the led partitions in line with the image; false if some
/// partition's state could not be loaded yet.
async fn follow(broker: &Broker) -> bool {
    let (image, log, missing) = {
        let mut leadership = broker.leadership();
        // Read under the lock: a produce makes a partition's state from an
        // image it read before taking the lock, so this one is at least as
        // new, and a state is never dropped on the word of an older image.
        let image = broker.image();
        let led = led_by(&image, broker);
        let Some(log) = leadership.owned.as_ref().map(|owned| owned.log) else { return true };
        let gone: Vec<StreamId> = leadership
            .partitions
            .iter()
            .filter(|(stream, state)| led.get(stream).map(|(epoch, _)| *epoch) != Some(state.leader_epoch))
            .map(|(stream, _)| *stream)
            .collect();
        for stream in gone {
            leadership.partitions.remove(&stream);
            broker.cache.forget(stream);
            tracing::info!(%stream, "no longer leading the partition");
        }
        let missing: Vec<(StreamId, LeaderEpoch, Offset)> = led
            .iter()
            .filter(|(stream, _)| !leadership.partitions.contains_key(stream))
            .map(|(stream, (epoch, end))| (*stream, *epoch, *end))
            .collect();
        (image, log, missing)
    };
    let loads = missing.iter().map(|(stream, _, end)| producers_at(broker, &image, *stream, *end));
    let loaded = futures::future::join_all(loads).await;
    let mut complete = true;
    let mut leadership = broker.leadership();
    let still_led = led_by(&broker.image(), broker);
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
        leadership.lead(stream, epoch, end.0, producers);
        broker.metrics.partitions_taken.inc();
        tracing::info!(%stream, leader_epoch = %epoch, from = %end, "leading the partition");
    }
    broker.metrics.partitions_led.set(leadership.partitions.len() as i64);
    complete
}

/// The partitions `image` gives this broker: leader epoch and uploaded end.
fn led_by(image: &Image, broker: &Broker) -> HashMap<StreamId, (LeaderEpoch, Offset)> {
    image
        .led_by(broker.config.node_id)
        .map(|(_, _, partition)| (partition.stream_id, (partition.leader_epoch, partition.uploaded_end)))
        .collect()
}

/// The producer state as of `end` (the uploaded snapshot), or `None` if the
/// object store cannot give it now.
async fn producers_at(broker: &Broker, image: &Image, stream: StreamId, end: Offset) -> Option<Producers> {
    if end.0 == 0 {
        return Some(Producers::default());
    }
    match crate::snapshots::at_uploaded_end(&broker.objects, image, stream).await {
        Ok(producers) => Some(producers),
        Err(error) => {
            tracing::warn!(%stream, "cannot read the producer snapshot yet: {error:#}");
            None
        }
    }
}

//! Handing partitions over on purpose (DESIGN §5): when the metadata marks
//! this broker as draining (`DrainBroker`: SIGTERM, or `keelctl broker
//! drain`) it closes every partition it leads, and otherwise the ones the
//! balancer is moving (`MovePartition`):
//!
//! 1. it stops taking writes for them (NOT_LEADER_OR_FOLLOWER, retriable:
//!    clients refresh their metadata and retry at the next leader);
//! 2. it waits for the entries already in flight to be acknowledged;
//! 3. it has the uploader upload its log up to there and waits until the
//!    metadata shows each partition uploaded to its end;
//! 4. it commits `ClosePartition` at that end; the controller then hands the
//!    partition to another broker, which starts there. No data is copied.
//!
//! While uploads fail (the object store down) or the object store is slow
//! (`StoreLatency`), the balancer's moves wait: a move closes its partitions
//! only once uploads succeed quickly again, since a closed partition takes
//! no writes until it is uploaded, and its next leader reads its producer
//! snapshot from the store. A close that
//! fails or gives up (an upload failing meanwhile, `CLOSE_TIMEOUT`) opens
//! its partitions again and is retried later; a draining broker that
//! stops before its partitions are handed over leaves them to failover.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use keel_broker_core::producers::Producers;
use keel_controller_client::{pb, Image, LeaderEpoch, NodeId, Offset, StreamId, TopicId};
use tokio_util::sync::CancellationToken;

use super::Partitions;

/// How long in-flight entries and uploads may take before a close gives up.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(partitions: Arc<Partitions>, cancel: CancellationToken) {
    let cluster = &partitions.cluster;
    let mut images = cluster.images.clone();
    loop {
        let image = cluster.image();
        let me = cluster.config.node_id;
        let draining =
            image.brokers.get(&me).is_some_and(|node| node.draining && Some(node.epoch) == cluster.live_epoch());
        let mut led: Led = led(&image, me).into_iter().filter(|(.., moving)| draining || *moving).collect();
        let failing = partitions.storage.upload_failures.in_a_row();
        if !draining && failing > 0 && !led.is_empty() {
            tracing::info!(moves = led.len(), failing, "uploads are failing: partition moves wait until they succeed");
            led.clear();
        }
        if !draining && partitions.storage.store_latency.slow() && !led.is_empty() {
            tracing::info!(moves = led.len(), "the object store is slow: partition moves wait until it is fast again");
            led.clear();
        }
        if !led.is_empty() {
            let started = Instant::now();
            match tokio::time::timeout(CLOSE_TIMEOUT, prepare(&partitions, &led)).await {
                Ok(Ok(ends)) => match hand_over(&partitions, &led, &ends).await {
                    Ok(closed) => {
                        cluster.metrics.close_seconds.observe(started.elapsed().as_secs_f64());
                        tracing::info!(closed, seconds = started.elapsed().as_secs_f64(), "partitions handed over");
                    }
                    // A ClosePartition of unknown fate: the partitions stay closed.
                    Err(error) => tracing::warn!("handing partitions over failed: {error:#}"),
                },
                Ok(Err(error)) => {
                    tracing::warn!("closing partitions failed, taking writes again: {error:#}");
                    reopen(&partitions, &led);
                }
                Err(_) => {
                    tracing::warn!(?CLOSE_TIMEOUT, "closing partitions timed out, taking writes again");
                    reopen(&partitions, &led);
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = images.changed() => {}
            // Partitions that could not be closed are tried again.
            _ = tokio::time::sleep(Duration::from_secs(1)), if !led.is_empty() => {}
        }
    }
}

/// A partition this broker leads: its topic, index, stream, leader epoch,
/// and whether the balancer moves it.
type Led = Vec<(TopicId, u32, StreamId, LeaderEpoch, bool)>;

fn led(image: &Image, me: NodeId) -> Led {
    image
        .led_by(me)
        .map(|(topic, index, partition)| {
            (topic.id, index, partition.stream_id, partition.leader_epoch, partition.moving_to.is_some())
        })
        .collect()
}

/// Closes the partitions in `led` to writes, waits for what is in flight
/// and for the upload up to there; returns each partition's end.
async fn prepare(partitions: &Partitions, led: &Led) -> anyhow::Result<HashMap<StreamId, Offset>> {
    let cluster = &partitions.cluster;
    // 1. No more writes; a partition not set up yet is set up closed, at its uploaded end.
    let image = cluster.image();
    {
        let mut leadership = partitions.leadership();
        anyhow::ensure!(leadership.owned.is_some(), "no WAL log is open");
        for (_, _, stream, leader_epoch, _) in led {
            // A partition not set up yet has nothing appended: set it up
            // closed at its uploaded end. (A state at another epoch is left
            // alone; `leaders` replaces it.)
            if !leadership.partitions.contains_key(stream) {
                let end = image.partition_of_stream(*stream).map_or(Offset(0), |(_, _, p)| p.uploaded_end);
                leadership.lead(*stream, *leader_epoch, end, Producers::default());
            }
            match leadership.partitions.get_mut(stream) {
                Some(state) if state.leader_epoch == *leader_epoch => state.closing = true,
                _ => anyhow::bail!("the state of {stream} is not set up at leader epoch {leader_epoch} yet"),
            }
        }
    }
    // 2. Wait for what is in flight.
    let ends: HashMap<StreamId, Offset> = loop {
        if let Some(ends) = settled(partitions, led)? {
            break ends;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // 3. Upload up to there; give up at the first upload that fails.
    let mut images = cluster.images.clone();
    let failures_before = partitions.storage.upload_failures.in_a_row();
    loop {
        anyhow::ensure!(
            partitions.storage.upload_failures.in_a_row() <= failures_before,
            "an upload failed while the partitions were closed"
        );
        let image = cluster.image();
        let behind = led.iter().any(|(_, _, stream, ..)| {
            image.partition_of_stream(*stream).is_some_and(|(_, _, p)| p.uploaded_end < ends[stream])
        });
        if !behind {
            break;
        }
        partitions.storage.upload_now.notify_one();
        let _ = tokio::time::timeout(Duration::from_millis(200), images.changed()).await;
    }
    Ok(ends)
}

/// Commits `ClosePartition` for each partition at its end; returns how many
/// were closed.
async fn hand_over(partitions: &Partitions, led: &Led, ends: &HashMap<StreamId, Offset>) -> anyhow::Result<usize> {
    let cluster = &partitions.cluster;
    let epoch = cluster.live_epoch().context("no live session")?;
    let mut closed = 0;
    let mut version = keel_controller_client::Version(0);
    for (topic, index, stream, leader_epoch, _) in led {
        let request = pb::ClosePartitionRequest {
            topic_id: topic.0.to_string(),
            partition: *index,
            leader_epoch: leader_epoch.0,
            end_offset: ends[stream].0,
            sender: cluster.config.node_id.0,
            sender_epoch: epoch.0,
        };
        match cluster.client.close_partition(request).await {
            Ok((at, _)) => {
                closed += 1;
                version = version.max(at);
            }
            Err(error) => tracing::warn!(%stream, "ClosePartition failed: {error}"),
        }
    }
    // The next round must not see these partitions as still led.
    cluster.seen(version).await?;
    cluster.metrics.partitions_closed.inc_by(closed as u64);
    Ok(closed)
}

/// Lets the partitions of a close that gave up before any `ClosePartition`
/// was sent take writes again.
fn reopen(partitions: &Partitions, led: &Led) {
    let mut leadership = partitions.leadership();
    for (_, _, stream, leader_epoch, _) in led {
        if let Some(state) = leadership.partitions.get_mut(stream).filter(|s| s.leader_epoch == *leader_epoch) {
            state.closing = false;
        }
    }
}

/// Each partition's end once nothing is in flight for any of them.
fn settled(partitions: &Partitions, led: &Led) -> anyhow::Result<Option<HashMap<StreamId, Offset>>> {
    let leadership = partitions.leadership();
    let states: Vec<_> = led.iter().filter_map(|(_, _, stream, ..)| leadership.partitions.get(stream)).collect();
    anyhow::ensure!(states.len() == led.len(), "partition state was dropped (the WAL log was fenced?)");
    if !states.iter().all(|state| state.is_settled()) {
        return Ok(None);
    }
    Ok(Some(led.iter().map(|(_, _, stream, ..)| (*stream, leadership.partitions[stream].next_offset)).collect()))
}

/// Asks the controller to drain this broker, then waits until it leads
/// nothing or `timeout` passes. Called on SIGTERM before the broker stops.
pub async fn drain_self(partitions: &Partitions, timeout: Duration) {
    let cluster = &partitions.cluster;
    let me = cluster.config.node_id;
    let Some(epoch) = cluster.live_epoch() else { return };
    let request = pb::DrainBrokerRequest { broker: me.0, broker_epoch: epoch.0 };
    if let Err(error) = cluster.client.drain_broker(request).await {
        tracing::warn!("cannot drain before stopping (the partitions will fail over instead): {error}");
        return;
    }
    let started = Instant::now();
    let mut images = cluster.images.clone();
    loop {
        let image = cluster.image();
        let left = led(&image, me).len();
        if left == 0 {
            tracing::info!(seconds = started.elapsed().as_secs_f64(), "drained: this broker leads no partition");
            return;
        }
        if image.broker_load().keys().all(|id| *id == me) {
            // The whole cluster is stopping (or this is the last broker):
            // waiting would only delay the stop.
            tracing::info!(left, "no other broker can take the partitions; stopping without handing them over");
            return;
        }
        if started.elapsed() >= timeout {
            tracing::warn!(left, ?timeout, "drain timed out; the partitions left will fail over");
            return;
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), images.changed()).await;
    }
}

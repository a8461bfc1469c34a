//! The task that keeps this broker writing a WAL log under its current
//! registration: at every new registration epoch, and after the log was
//! fenced under it, it drops what it led and opens a new log
//! (`owner::take_over`); partitions come back through `leaders`.
//!
//! A writer whose task ends while its log is owned (it was not cancelled:
//! a defect ended it) can get nothing acknowledged, yet the broker would
//! keep its session and leaderships and every produce would time out. The
//! keeper then gives the registration up: under a new epoch the old log is
//! an orphan, recovered and uploaded by failover, and the partitions move.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_controller_client::Epoch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Partitions;

/// Pause after a failed take-over.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

pub async fn run(partitions: Arc<Partitions>, tasks: TaskTracker, cancel: CancellationToken) {
    let cluster = &partitions.cluster;
    let mut session = cluster.session.clone();
    let mut images = cluster.images.clone();
    loop {
        let epoch = tokio::select! {
            _ = cancel.cancelled() => return,
            state = session.wait_for(|state| state.is_some_and(|s| s.is_live())) => match state {
                Ok(state) => state.expect("waited for Some").epoch,
                Err(_) => return,
            },
        };
        let current = partitions.leadership().owned.as_ref().map(|owned| (owned.session_epoch, owned.writer.clone()));
        if let Some((owned_epoch, writer)) = current.filter(|(owned, _)| *owned == epoch) {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = session.changed() => {}
                _ = partitions.log_lost.notified() => {}
                _ = writer.stopped() => give_up_if_dead(&partitions, owned_epoch, &cancel).await,
            }
            continue;
        }
        partitions.stop_leading();
        let started = Instant::now();
        let node = cluster.config.node_id;
        let taken = super::owner::take_over(&cluster.client, &mut images, node, epoch, &tasks, &cancel);
        match taken.await {
            Ok(owned) => {
                cluster.metrics.takeover_seconds.observe(started.elapsed().as_secs_f64());
                partitions.leadership().owned = Some(owned);
                partitions.storage.backlog.reset();
                partitions.leaders_changed.notify_one();
            }
            Err(error) => {
                tracing::warn!(%epoch, "take-over failed, retrying: {error:#}");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_PAUSE) => {}
                }
            }
        }
    }
}

/// The writer of the log owned under `epoch` stopped. Unless it was
/// stopped on purpose (the log given up, the broker shutting down), gives
/// the registration up and waits until it is gone.
async fn give_up_if_dead(partitions: &Partitions, epoch: Epoch, cancel: &CancellationToken) {
    let died = partitions
        .leadership()
        .owned
        .as_ref()
        .is_some_and(|owned| owned.session_epoch == epoch && !owned.cancel.is_cancelled());
    if !died {
        return;
    }
    tracing::error!(%epoch, "the WAL writer stopped by itself; giving up the registration so that its log is recovered and its partitions move");
    partitions.stop_leading();
    partitions.cluster.renewal.register_again();
    let mut session = partitions.cluster.session.clone();
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = session.wait_for(|state| state.is_none_or(|s| s.epoch != epoch)) => {}
    }
}

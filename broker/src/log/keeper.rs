//! The task that keeps this broker writing a WAL log under its current
//! registration: at every new registration epoch, and after the log was
//! fenced under it, it drops what it led and opens a new log
//! (`owner::take_over`); partitions come back through `leaders`.

use std::sync::Arc;
use std::time::{Duration, Instant};

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
        let current = partitions.leadership().owned.as_ref().map(|owned| owned.session_epoch);
        if current == Some(epoch) {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = session.changed() => {}
                _ = partitions.log_lost.notified() => {}
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

//! Failover (DESIGN §5): the logs of a broker that is gone (fenced, or
//! registered again under a new epoch) are recovered, sealed and uploaded by
//! one active broker, so its partitions can go to new leaders at their true
//! end with nothing acknowledged lost.
//!
//! Each orphaned log that is not yet sealed and fully uploaded has one
//! designated recoverer: the active broker with the lowest id in its owner's
//! zone, else the lowest id anywhere. It first recovers and seals every
//! unsealed log of that owner (`RecoverLog`, fence, read, repair, `SealLog`:
//! fencing first stops a zombie writer soonest), then uploads the sealed
//! logs in creation order, so each stream's ranges follow one another, with
//! `CommitUpload` up to their sealed seqs. The controller hands the
//! partitions over once that is done (`Image::handover_ready`). Every step is
//! a compare-and-set, so a second recoverer (after a metadata change) or a
//! retry never commits twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_controller_client::{ClientError, Epoch, Image, LogId, MetaError, NodeId, NodeState, WalLog, WalLogState};
use keel_wal_client::recover::RecoverError;
use tokio_util::sync::CancellationToken;

use super::Partitions;
use crate::storage::uploader::{Pending, States, Uploaded};

/// Pause after a failed step.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

pub async fn run(partitions: Arc<Partitions>, cancel: CancellationToken) {
    let cluster = &partitions.cluster;
    let mut images = cluster.images.clone();
    let mut states = States::new();
    let mut failed: HashMap<LogId, Instant> = HashMap::new();
    loop {
        let image = cluster.image();
        let me = cluster.config.node_id;
        let work = cluster.live_epoch().and_then(|epoch| Some((epoch, next_log(&image, me, &failed)?)));
        let Some((epoch, log)) = work else {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = images.changed() => continue,
            }
        };
        let step = step(&partitions, &image, &log, epoch, &mut states);
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            result = step => result,
        };
        if let Err(error) = result {
            if overtaken(&error) {
                // Sealed, or taken over by another recoverer, since this
                // broker's metadata showed it (a restarted owner recovers its
                // own logs too): the step is someone else's now.
                tracing::debug!(log = %log.id, owner = %log.owner, "overtaken: {error:#}");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = images.changed() => {}
                    _ = tokio::time::sleep(RETRY_PAUSE) => {}
                }
                continue;
            }
            failed.insert(log.id, Instant::now());
            tracing::warn!(log = %log.id, owner = %log.owner, "failover step failed, retrying: {error:#}");
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(RETRY_PAUSE) => {}
            }
        }
    }
}

/// Whether `error` says the log was sealed, or is being recovered at a
/// newer epoch, by someone else (a lost compare-and-set, or a WAL member
/// already fenced at a newer epoch), or that its owner still writes it
/// (this broker's image was behind).
fn overtaken(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<ClientError>(),
            Some(ClientError::Meta(
                MetaError::LogSealed { .. } | MetaError::LogEpochMismatch { .. } | MetaError::LogStillWritten { .. }
            ))
        ) || matches!(cause.downcast_ref::<RecoverError>(), Some(RecoverError::Overtaken(_)))
    })
}

/// Whether an orphaned log still needs work: sealing, or uploading.
fn unfinished(log: &WalLog) -> bool {
    match &log.state {
        WalLogState::Sealed { sealed_seq, .. } => log.trim_seq < *sealed_seq,
        WalLogState::Open | WalLogState::Recovering { .. } => true,
    }
}

/// The next orphaned log `me` is the designated recoverer of: unsealed logs
/// first, then sealed ones to upload (each owner's in creation order, as its
/// streams' ranges must follow one another). A log whose step failed within
/// `RETRY_PAUSE` yields to the others, so one unrecoverable log does not hold
/// up every other failover.
fn next_log(image: &Image, me: NodeId, failed: &HashMap<LogId, Instant>) -> Option<WalLog> {
    let orphans: Vec<&WalLog> = image
        .wal_logs
        .values()
        .filter(|log| unfinished(log) && image.orphaned(log) && designated(image, log.owner) == Some(me))
        .collect();
    let unsealed = orphans.iter().filter(|log| !matches!(log.state, WalLogState::Sealed { .. }));
    // Per owner, only its oldest unfinished log can be uploaded next.
    let uploadable = orphans
        .iter()
        .filter(|log| matches!(log.state, WalLogState::Sealed { .. }))
        .filter(|log| !orphans.iter().any(|other| other.owner == log.owner && other.id < log.id));
    let candidates: Vec<&&WalLog> = unsealed.chain(uploadable).collect();
    let recent = |log: &&&WalLog| failed.get(&log.id).is_some_and(|at| at.elapsed() < RETRY_PAUSE * 3);
    let chosen = candidates.iter().find(|log| !recent(log)).or(candidates.first());
    chosen.map(|log| (**log).clone())
}

/// The broker that recovers `owner`'s orphaned logs: the lowest active id
/// in the owner's zone, else the lowest active id; a draining broker (about
/// to leave) only when no other is active.
fn designated(image: &Image, owner: NodeId) -> Option<NodeId> {
    let zone = image.brokers.get(&owner).map(|node| node.zone.as_str());
    let active = image.brokers.values().filter(|node| node.state == NodeState::Active);
    active.min_by_key(|node| (node.draining, Some(node.zone.as_str()) != zone, node.id)).map(|node| node.id)
}

/// One step on `log`: recover and seal it, or upload the next stretch.
async fn step(
    partitions: &Partitions,
    image: &Image,
    log: &WalLog,
    epoch: Epoch,
    states: &mut States,
) -> anyhow::Result<()> {
    let cluster = &partitions.cluster;
    let me = cluster.config.node_id;
    match &log.state {
        WalLogState::Open | WalLogState::Recovering { .. } => {
            let started = Instant::now();
            let (version, recovered) = super::owner::recover_and_seal(&cluster.client, image, log, me, epoch).await?;
            cluster.metrics.logs_recovered.inc();
            cluster.metrics.entries_recovered.inc_by(recovered.entries);
            cluster.metrics.recovery_seconds.observe(started.elapsed().as_secs_f64());
            cluster.seen(version).await?;
        }
        WalLogState::Sealed { sealed_seq, .. } => {
            let pending = Pending { log: log.clone(), end: *sealed_seq };
            let uploaded =
                crate::storage::uploader::upload(cluster, &partitions.storage, partitions, states, image, &pending);
            if uploaded.await? == Uploaded::UpToDate {
                tracing::info!(log = %log.id, owner = %log.owner, "an orphaned WAL log is uploaded; its partitions can move");
            }
        }
    }
    Ok(())
}

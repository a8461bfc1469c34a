//! Sealing this broker's own WAL log early (DESIGN §3, §5): when a member of
//! its ensemble is lost for good (its session expired, or it came back with
//! a wiped disk) and the controller could form a strictly better ensemble
//! (more live members than the log has left), or when the writer holds more
//! than `wal_unreplicated_bytes_max` for a member that has not acknowledged
//! them (a WAL node down with no better ensemble: memory must stay bounded),
//! the broker records a new log,
//! has its writer continue there — the entries not yet acknowledged in the
//! old log are re-appended first, unchanged — and seals the old log at its
//! last acknowledged seq. Producers see nothing but the latency of one
//! `OpenLog`; the uploader then uploads the sealed log before the new one.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use keel_broker_core::partition::LogRange;
use keel_controller_client::{pb, ClientError, Image, MetaError, NodeState, Seq, WalLog};
use tokio_util::sync::CancellationToken;

use super::Partitions;

pub async fn run(partitions: Arc<Partitions>, cancel: CancellationToken) {
    let cluster = &partitions.cluster;
    let mut images = cluster.images.clone();
    loop {
        let image = cluster.image();
        let (current, unreplicated, degraded) = match partitions.leadership().owned.as_ref() {
            Some(owned) => {
                let degraded = *owned.writer.health().borrow() != keel_wal_client::quorum::Health::Healthy;
                (Some(owned.log), owned.writer.unreplicated_bytes() as u64, degraded)
            }
            None => (None, 0, false),
        };
        cluster.metrics.wal_unreplicated_bytes.set(unreplicated as i64);
        cluster.metrics.wal_log_under_replicated.set(i64::from(degraded));
        let cap = cluster.config.wal_unreplicated_bytes_max;
        let log = current.and_then(|log| image.wal_logs.get(&log));
        let reason = log.and_then(|log| Some((log, reason_to_seal(&image, log, unreplicated, cap)?)));
        if let Some((log, why)) = reason {
            match seal_and_continue(&partitions, log, &why).await {
                Ok(()) => {}
                Err(error) => {
                    tracing::warn!(log = %log.id, "sealing the WAL log early failed, retrying: {error:#}");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
            continue;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = images.changed() => {}
            // The bytes held for a lagging member grow without a metadata change.
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Why `log` should be sealed early, if it should: a new ensemble would have
/// more live members than it has (a member lost for good, or a log opened
/// while a zone was down), or the writer holds more than `cap` bytes for a
/// lagging member. Over the cap, a new log helps once the lagging node is out
/// of the ensemble the controller would choose (its session expired); well
/// over it, memory comes first.
fn reason_to_seal(image: &Image, log: &WalLog, unreplicated: u64, cap: u64) -> Option<String> {
    let chosen = image.choose_ensemble().ok().map(|(ensemble, _)| ensemble);
    let other = chosen.as_ref().is_some_and(|ensemble| *ensemble != log.ensemble);
    if (unreplicated > cap && other) || unreplicated > cap.saturating_mul(4) {
        return Some(format!("{unreplicated} bytes are held for a WAL member that has not acknowledged them"));
    }
    let live = log
        .ensemble
        .iter()
        .filter(|member| {
            image
                .wal_nodes
                .get(&member.node)
                .is_some_and(|node| node.state == NodeState::Active && node.incarnation == member.incarnation)
        })
        .count();
    let better = chosen.is_some_and(|ensemble| ensemble.len() > live);
    better.then(|| format!("a better ensemble exists ({live} of the log's members are live)"))
}

async fn seal_and_continue(partitions: &Partitions, old: &WalLog, why: &str) -> anyhow::Result<()> {
    let cluster = &partitions.cluster;
    let me = cluster.config.node_id;
    let epoch = cluster.live_epoch().context("no live session")?;
    anyhow::ensure!(old.owner == me && old.owner_epoch == epoch, "{} is not this registration's log", old.id);
    tracing::info!(log = %old.id, "{why}: sealing the log early");
    let request = pb::OpenLogRequest { owner: me.0, owner_epoch: epoch.0, ensemble: vec![], ack_quorum: 0 };
    let (version, outcome) = cluster.client.open_log(request).await.context("OpenLog")?;
    let keel_controller_client::Outcome::LogOpened { log: new, .. } = outcome else {
        anyhow::bail!("OpenLog answered {outcome:?}")
    };
    let image = cluster.seen(version).await?;
    let record = image.wal_logs.get(&new).context("the opened log is missing from the metadata")?;
    let targets = crate::cluster::wal::targets(&image, record)?;
    let sealing = {
        let mut leadership = partitions.leadership();
        let owned = leadership.owned.as_mut().context("no log is owned")?;
        anyhow::ensure!(owned.log == old.id, "the log changed meanwhile");
        owned.log = new;
        owned.sealing = Some(old.id);
        owned.writer.continue_on(new, record.epoch, targets, record.ack_quorum as usize)
    };
    let sealed = sealing.await.context("the writer could not move to the new log")?;
    {
        let mut leadership = partitions.leadership();
        for (stream, state) in leadership.partitions.iter_mut() {
            let Some(last) = state.ranges.last_mut().filter(|range| range.log == old.id) else { continue };
            last.sealed_seq = sealed.sealed_seq;
            let from = sealed.stream_ends.get(stream).copied().unwrap_or(last.from);
            state.ranges.push(LogRange { log: new, sealed_seq: Seq(0), from });
        }
    }
    let request = pb::SealLogRequest {
        log: old.id.0,
        epoch: old.epoch.0,
        sealed_seq: sealed.sealed_seq.0,
        stream_ends: sealed.stream_ends.iter().map(|(stream, end)| (stream.0, end.0)).collect(),
        sender: me.0,
        sender_epoch: epoch.0,
    };
    // The writer has moved on: the old log must be sealed, or the uploader
    // waits for it forever. Retry until it is, or until this registration
    // is gone (the log is an orphan then, which failover seals).
    let sealed_at = loop {
        match cluster.client.seal_log(request.clone()).await {
            Ok((version, _)) => break Some(version),
            Err(ClientError::Meta(MetaError::LogSealed { .. } | MetaError::LogEpochMismatch { .. })) => break None,
            Err(error) if cluster.live_epoch() == Some(epoch) => {
                tracing::warn!(log = %old.id, "SealLog failed, retrying: {error}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => return Err(error).context("SealLog"),
        }
    };
    // The uploader must see the log sealed before it stops waiting for it:
    // the log's tail comes before the new log's first entries.
    if let Some(version) = sealed_at {
        cluster.seen(version).await?;
    }
    if let Some(owned) = partitions.leadership().owned.as_mut() {
        owned.sealing = None;
    }
    cluster.metrics.logs_sealed_early.inc();
    partitions.storage.upload_now.notify_one();
    tracing::info!(old = %old.id, %new, sealed_seq = %sealed.sealed_seq, "sealed the WAL log early; writing the new one");
    Ok(())
}

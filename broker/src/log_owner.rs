//! The broker's WAL log: taking over after a (re)registration and opening the
//! log it writes.
//!
//! A broker registers with a new epoch every time (start, or after its
//! session was fenced). Before it appends anything under that epoch it
//! recovers and seals every log it opened before (DESIGN §5: `RecoverLog`,
//! fence, read, repair, `SealLog`), so nothing a previous run of it got
//! acknowledged is lost or offered again at another offset. The sealed logs'
//! stream ends give each partition its next offset, and the logs themselves
//! stay readable until the S3 tier uploads and trims them. Then it records a
//! new log (`OpenLog`) and starts its writer.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use keel_controller_client::follower::wait_for_version;
use keel_controller_client::{
    pb, ClientError, Epoch, Image, LogEpoch, LogId, MetaError, MetadataClient, NodeId, Outcome, Seq, StreamId, Version,
    WalLog, WalLogState,
};
use keel_wal_client::quorum::Member;
use keel_wal_client::recover::Recovered;
use keel_wal_client::writer::{Target, WalWriter};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::batch;
use crate::producers::Producers;
use keel_objects::ObjectStore;

/// How long to wait for the metadata to show a change this broker committed.
const METADATA_WAIT: Duration = Duration::from_secs(10);

/// Where a stretch of a partition's offsets lives in the WAL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogRange {
    pub log: LogId,
    /// The log's sealed seq, or 0 while this broker still writes it.
    pub sealed_seq: Seq,
    /// The first offset of the partition in this log.
    pub from: i64,
}

/// The log a broker writes under one registration, and what it took over.
#[derive(Debug)]
pub struct Owned {
    pub session_epoch: Epoch,
    pub log: LogId,
    pub writer: WalWriter,
    /// Per stream, its ranges in the sealed logs, oldest first.
    pub history: HashMap<StreamId, Vec<LogRange>>,
    /// Per stream, the end offset the sealed logs reach.
    pub ends: HashMap<StreamId, i64>,
    /// Per stream, the idempotent producers seen in the logs this take-over
    /// recovered, taken by the partition's state when it is first led.
    pub producers: HashMap<StreamId, Producers>,
    /// Stops this log's writer.
    pub cancel: CancellationToken,
}

/// Recovers and seals this broker's earlier logs, then opens a new one.
pub async fn take_over(
    client: &MetadataClient,
    images: &mut watch::Receiver<Arc<Image>>,
    me: NodeId,
    epoch: Epoch,
    store: &Arc<dyn ObjectStore>,
    tasks: &TaskTracker,
    cancel: &CancellationToken,
) -> anyhow::Result<Owned> {
    let image = wait_for_version(images, Version(epoch.0), METADATA_WAIT).await?;
    let unsealed: Vec<WalLog> = image
        .wal_logs
        .values()
        .filter(|log| log.owner == me && !matches!(log.state, WalLogState::Sealed { .. }))
        .cloned()
        .collect();
    let mut recovered = Vec::new();
    for log in &unsealed {
        recovered.push(
            recover_and_seal(client, &image, log, me, epoch).await.with_context(|| format!("recover {}", log.id))?,
        );
    }
    let producers = rebuild_producers(store, &image, me, &recovered).await?;
    let (version, log) = open(client, me, epoch, cancel).await?;
    let image = wait_for_version(images, version, METADATA_WAIT).await?;
    let record = image.wal_logs.get(&log).context("the opened log is missing from the metadata")?;
    let targets = targets(&image, record)?;
    let writer_cancel = cancel.child_token();
    let writer =
        WalWriter::start(log, record.epoch, targets, record.ack_quorum as usize, Seq(0), tasks, writer_cancel.clone());
    let (history, ends) = history(&image, me);
    tracing::info!(%log, %epoch, recovered = unsealed.len(), streams = ends.len(), "writing a new WAL log");
    Ok(Owned { session_epoch: epoch, log, writer, history, ends, producers, cancel: writer_cancel })
}

/// One recovery step per log, as DESIGN §5: bump the epoch by compare-and-set,
/// fence and read the ensemble, repair, then seal at what was found.
async fn recover_and_seal(
    client: &MetadataClient,
    image: &Image,
    log: &WalLog,
    me: NodeId,
    epoch: Epoch,
) -> anyhow::Result<Recovered> {
    let next = LogEpoch(log.epoch.0 + 1);
    let request = pb::RecoverLogRequest { log: log.id.0, epoch: next.0, recoverer: me.0, recoverer_epoch: epoch.0 };
    client.recover_log(request).await.context("RecoverLog")?;
    let targets = targets(image, log)?;
    let recovered =
        keel_wal_client::recover::recover(log.id, next, &targets, log.ack_quorum as usize, log.trim_seq).await?;
    let request = pb::SealLogRequest {
        log: log.id.0,
        epoch: next.0,
        sealed_seq: recovered.sealed_seq.0,
        stream_ends: recovered.stream_ends.iter().map(|(stream, end)| (stream.0, end.0)).collect(),
        sender: me.0,
        sender_epoch: epoch.0,
    };
    client.seal_log(request).await.context("SealLog")?;
    tracing::info!(log = %log.id, sealed_seq = %recovered.sealed_seq, streams = recovered.stream_ends.len(), "recovered and sealed an earlier WAL log");
    Ok(recovered)
}

/// Producer state per stream of the partitions this broker leads (DESIGN §5):
/// the latest uploaded snapshot, then the batches of the recovered logs
/// after it, so an idempotent producer's retry of a batch the previous run
/// stored is answered as a duplicate, not stored twice.
async fn rebuild_producers(
    store: &Arc<dyn ObjectStore>,
    image: &Image,
    me: NodeId,
    recovered: &[Recovered],
) -> anyhow::Result<HashMap<StreamId, Producers>> {
    let mut producers = HashMap::new();
    let led = image.topics.values().flat_map(|topic| &topic.partitions).filter(|p| p.leader == Some(me));
    for partition in led.filter(|p| p.uploaded_end.0 > 0) {
        let snapshot = crate::snapshots::at_uploaded_end(store, image, partition.stream_id)
            .await
            .with_context(|| format!("the producer snapshot of {}", partition.stream_id))?;
        producers.insert(partition.stream_id, snapshot);
    }
    for recovered in recovered {
        replay_producers(recovered, image, &mut producers);
    }
    Ok(producers)
}

/// Replays the batches of a recovered log after each stream's uploaded end
/// (what the snapshot already holds is not replayed twice).
fn replay_producers(recovered: &Recovered, image: &Image, producers: &mut HashMap<StreamId, Producers>) {
    for record in recovered.entries.iter().flat_map(|entry| &entry.records) {
        let uploaded_end = image.partition_of_stream(record.stream).map_or(0, |(_, _, p)| p.uploaded_end.0);
        if record.base_offset.0 < uploaded_end {
            continue;
        }
        match batch::check(&record.batch) {
            Ok(header) => producers.entry(record.stream).or_default().record(&header, record.base_offset.0),
            Err(error) => {
                tracing::error!(stream = %record.stream, offset = record.base_offset.0, %error, "a recovered batch is unreadable; its producer state is skipped")
            }
        }
    }
}

/// Records a new log, waiting while too few WAL zones are live to form an ensemble.
async fn open(
    client: &MetadataClient,
    me: NodeId,
    epoch: Epoch,
    cancel: &CancellationToken,
) -> anyhow::Result<(Version, LogId)> {
    let request = pb::OpenLogRequest { owner: me.0, owner_epoch: epoch.0, ensemble: vec![], ack_quorum: 0 };
    let mut warned = false;
    loop {
        match client.open_log(request.clone()).await {
            Ok((version, Outcome::LogOpened { log, .. })) => return Ok((version, log)),
            Ok((_, other)) => anyhow::bail!("OpenLog answered {other:?}"),
            Err(ClientError::Meta(MetaError::NoEnsemble { zones })) => {
                if !warned {
                    tracing::warn!(zones, "cannot open a WAL log yet: WAL nodes are live in too few zones; waiting");
                    warned = true;
                }
            }
            Err(error) => return Err(error).context("OpenLog"),
        }
        tokio::select! {
            _ = cancel.cancelled() => anyhow::bail!("stopped while waiting for WAL nodes"),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// The ensemble of `log` with each member's current address.
pub fn targets(image: &Image, log: &WalLog) -> anyhow::Result<Vec<Target>> {
    log.ensemble
        .iter()
        .map(|member| {
            let node =
                image.wal_nodes.get(&member.node).with_context(|| format!("WAL node {} is unknown", member.node))?;
            Ok(Target {
                member: Member {
                    node: member.node,
                    zone: member.zone.clone(),
                    incarnation: member.incarnation.clone(),
                },
                addr: node.internal_addr.clone(),
            })
        })
        .collect()
}

/// Per stream, where its offsets lie in this broker's sealed logs (in log
/// order), and the end offset they reach.
fn history(image: &Image, me: NodeId) -> (HashMap<StreamId, Vec<LogRange>>, HashMap<StreamId, i64>) {
    let mut history: HashMap<StreamId, Vec<LogRange>> = HashMap::new();
    let mut ends: HashMap<StreamId, i64> = HashMap::new();
    let sealed: BTreeMap<LogId, &WalLog> =
        image.wal_logs.iter().filter(|(_, log)| log.owner == me).map(|(id, log)| (*id, log)).collect();
    for log in sealed.values() {
        let WalLogState::Sealed { sealed_seq, stream_ends } = &log.state else { continue };
        for (stream, end) in stream_ends {
            let from = ends.get(stream).copied().unwrap_or(0);
            if end.0 > from {
                history.entry(*stream).or_default().push(LogRange { log: log.id, sealed_seq: *sealed_seq, from });
                ends.insert(*stream, end.0);
            }
        }
    }
    (history, ends)
}

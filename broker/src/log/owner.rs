//! The broker's WAL log: opening the log it writes under each registration,
//! and recovering a log whose writer is gone.
//!
//! A broker registers with a new epoch every time (start, or after its
//! session was fenced), and then leads nothing (DESIGN §5). It records a new
//! log (`OpenLog`) and starts its writer. Its earlier logs are orphans:
//! one recovery step each (`RecoverLog`, fence, read, repair, `SealLog`),
//! run by `failover`, so nothing a previous run got acknowledged is lost or
//! offered again at another offset.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use keel_controller_client::follower::wait_for_version;
use keel_controller_client::{
    pb, ClientError, Epoch, Image, LogEpoch, LogId, MetaError, MetadataClient, NodeId, Outcome, Seq, Version, WalLog,
};
use keel_wal_client::recover::Recovered;
use keel_wal_client::writer::WalWriter;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::wal::targets;

/// How long to wait for the metadata to show a change this broker committed.
const METADATA_WAIT: Duration = Duration::from_secs(10);

/// The log a broker writes under one registration.
#[derive(Debug)]
pub struct Owned {
    pub session_epoch: Epoch,
    pub log: LogId,
    pub writer: WalWriter,
    /// A log this writer moved away from (`early_seal`) whose `SealLog` is
    /// not committed yet; the uploader waits for it.
    pub sealing: Option<LogId>,
    /// Stops this log's writer.
    pub cancel: CancellationToken,
}

/// Opens a new log for this registration and starts its writer. Logs of
/// earlier registrations are orphans now: `failover` recovers and uploads
/// them, and the partitions they held get leaders only after that.
pub async fn take_over(
    client: &MetadataClient,
    images: &mut watch::Receiver<Arc<Image>>,
    me: NodeId,
    epoch: Epoch,
    tasks: &TaskTracker,
    cancel: &CancellationToken,
) -> anyhow::Result<Owned> {
    wait_for_version(images, Version(epoch.0), METADATA_WAIT).await?;
    let (version, log) = open(client, me, epoch, cancel).await?;
    let image = wait_for_version(images, version, METADATA_WAIT).await?;
    let record = image.wal_logs.get(&log).context("the opened log is missing from the metadata")?;
    let targets = targets(&image, record)?;
    let writer_cancel = cancel.child_token();
    let writer =
        WalWriter::start(log, record.epoch, targets, record.ack_quorum as usize, Seq(0), tasks, writer_cancel.clone());
    tracing::info!(%log, %epoch, "writing a new WAL log");
    Ok(Owned { session_epoch: epoch, log, writer, sealing: None, cancel: writer_cancel })
}

/// One recovery step per log, as DESIGN §5: bump the epoch by compare-and-set,
/// fence and read the ensemble, repair, then seal at what was found.
pub async fn recover_and_seal(
    client: &MetadataClient,
    image: &Image,
    log: &WalLog,
    me: NodeId,
    epoch: Epoch,
) -> anyhow::Result<(Version, Recovered)> {
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
    let (version, _) = client.seal_log(request).await.context("SealLog")?;
    tracing::info!(log = %log.id, owner = %log.owner, sealed_seq = %recovered.sealed_seq, streams = recovered.stream_ends.len(), "recovered and sealed an orphaned WAL log");
    Ok((version, recovered))
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

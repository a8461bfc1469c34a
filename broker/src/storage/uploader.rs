//! The uploader (DESIGN §3.4): turns this broker's WAL data into objects and
//! commits them with the WAL trim point they make possible.
//!
//! Every `upload_interval`, or as soon as `upload_bytes` wait (at once again
//! while a log has more than one object's worth left), it takes the oldest of this broker's logs that still
//! holds untrimmed entries, reads whole entries after the log's trim point
//! from a WAL member (its own zone first; acknowledged entries only), and
//! builds one multi-stream object of their batches, sorted by stream and
//! offset. Then it reserves an object id, PUTs the object, and commits
//! `CommitUpload {object, log, log epoch, trim seq = the last entry read}`.
//! The controller accepts it only while the log's epoch is unchanged, the
//! reservation is alive and each stream's range starts at its uploaded end;
//! WAL nodes trim once they see the commit. A failed commit leaves an object
//! nothing may point to; it is never deleted here (an earlier attempt of the
//! commit may still apply) but by garbage collection once its reservation
//! has expired unused.
//!
//! Logs are uploaded in order, so each stream's ranges follow one another.
//! Batches of streams whose topic was deleted are dropped, not uploaded.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use keel_broker_core::batch;
use keel_broker_core::producers::Producers;
use keel_controller_client::{
    pb, Epoch, Image, LogId, ObjectId, ObjectRange, ObjectRecord, Offset, Outcome, Seq, StreamId, WalLog, WalLogState,
};
use keel_objects::format::{ObjectBuilder, RangeIndex};
use tokio_util::sync::CancellationToken;

use super::Storage;
use crate::cluster::Cluster;

/// How long reserved object ids stay valid: far longer than an upload takes.
const RESERVATION_TTL: Duration = Duration::from_secs(3600);
/// Pause after a failed upload.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Per stream, the producer state as of the offset it was last uploaded to.
pub type States = std::collections::HashMap<StreamId, (Offset, Producers)>;

/// The log this broker writes now, as the uploader needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Writing {
    pub log: LogId,
    /// The registration the log was opened under.
    pub session_epoch: Epoch,
    /// The last seq the writer had acknowledged in `log`.
    pub acked: Option<Seq>,
    /// A log this writer moved away from whose `SealLog` is not committed yet.
    pub sealing: Option<LogId>,
}

/// Tells the uploader which log this broker writes (the log layer knows).
pub trait WritingLog: Send + Sync + std::fmt::Debug {
    /// `None` while no log is open (a take-over under way).
    fn writing(&self) -> Option<Writing>;
}

pub async fn run(
    cluster: Arc<Cluster>,
    storage: Arc<Storage>,
    writing: Arc<dyn WritingLog>,
    cancel: CancellationToken,
) {
    let mut states = States::new();
    loop {
        let uploaded = upload_once(&cluster, &storage, writing.as_ref(), &mut states).await;
        match &uploaded {
            Ok(_) => storage.upload_failures.succeeded(),
            Err(_) => storage.upload_failures.failed(),
        }
        let (pause, early) = match uploaded {
            Ok(Uploaded::More) => (Duration::ZERO, false),
            Ok(Uploaded::UpToDate) => (cluster.config.upload_interval, true),
            Err(error) => {
                cluster.metrics.upload_failures.inc();
                tracing::warn!("upload failed, retrying: {error:#}");
                (RETRY_PAUSE, false)
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
            // Every `upload_bytes` as well as every `upload_interval`.
            _ = backlog_reaches(&storage, cluster.config.upload_bytes), if early => {}
            _ = storage.upload_now.notified(), if early => {}
        }
    }
}

/// Returns once the current log holds `bytes` not uploaded yet.
/// Cancellation-safe: it only reads.
async fn backlog_reaches(storage: &Storage, bytes: u64) {
    while storage.backlog.bytes() < bytes {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Uploaded {
    /// A log still holds untrimmed entries beyond this upload.
    More,
    UpToDate,
}

/// A log with entries to upload: from its trim point to `end`, its sealed
/// seq or, for the log this broker writes, the last seq it had acknowledged.
/// Reads pass `end` as their bound: a WAL node learns what the writer
/// acknowledged only from later entries, so a quiet log's last entries would
/// otherwise stay unreadable.
#[derive(Debug)]
pub struct Pending {
    pub log: WalLog,
    pub end: Seq,
}

/// The oldest log of this broker's current registration with untrimmed,
/// acknowledged entries. Logs of earlier registrations are orphans, which
/// `failover` recovers and uploads.
fn next_log(cluster: &Cluster, writing: Writing, image: &Image) -> Option<Pending> {
    let me = cluster.config.node_id;
    let Writing { log: current, session_epoch: epoch, acked, sealing } = writing;
    for log in image.wal_logs.values().filter(|log| log.owner == me && log.owner_epoch == epoch) {
        let end = match &log.state {
            WalLogState::Sealed { sealed_seq, .. } => *sealed_seq,
            // The writer may not have moved to a new current log yet: wait.
            WalLogState::Open if log.id == current => acked?,
            // A log sealed early whose SealLog is not committed yet: wait.
            WalLogState::Open if Some(log.id) == sealing => return None,
            // Opened and never written (its take-over failed after OpenLog):
            // `seal_abandoned` seals it empty.
            WalLogState::Open if log.id < current => continue,
            // Opened by an early seal the writer has not moved to yet.
            WalLogState::Open => return None,
            WalLogState::Recovering { .. } => return None,
        };
        if end > log.trim_seq {
            return Some(Pending { log: log.clone(), end });
        }
    }
    None
}

async fn upload_once(
    cluster: &Cluster,
    storage: &Storage,
    writing_log: &dyn WritingLog,
    states: &mut States,
) -> anyhow::Result<Uploaded> {
    let image = cluster.image();
    // Without a live session under the registration its log was opened in
    // (lost, or registered again and not yet writing), the log is no longer
    // this broker's to upload: it is an orphan, which failover uploads.
    let Some(writing) = writing_log.writing() else { return Ok(Uploaded::UpToDate) };
    if cluster.live_epoch() != Some(writing.session_epoch) {
        return Ok(Uploaded::UpToDate);
    }
    seal_abandoned(cluster, writing, &image).await;
    // Read again: the writer may have acknowledged more, or moved on, meanwhile.
    let Some(writing) = writing_log.writing() else { return Ok(Uploaded::UpToDate) };
    let Some(pending) = next_log(cluster, writing, &image) else { return Ok(Uploaded::UpToDate) };
    upload(cluster, storage, writing_log, states, &image, &pending).await
}

/// Seals, empty, the logs of this registration that were opened and never
/// written (a take-over or an early seal failed after `OpenLog`), so they do
/// not stay open for good. Best effort: tried again on the next round.
async fn seal_abandoned(cluster: &Cluster, writing: Writing, image: &Image) {
    let me = cluster.config.node_id;
    let Writing { log: current, session_epoch: epoch, sealing, .. } = writing;
    let abandoned = image.wal_logs.values().filter(|log| {
        log.owner == me
            && log.owner_epoch == epoch
            // Only below the current log: a log opened just now by an early
            // seal is above it until the writer moves there.
            && log.id < current
            && Some(log.id) != sealing
            && matches!(log.state, WalLogState::Open)
    });
    for log in abandoned {
        let request = pb::SealLogRequest {
            log: log.id.0,
            epoch: log.epoch.0,
            sealed_seq: 0,
            stream_ends: Default::default(),
            sender: me.0,
            sender_epoch: epoch.0,
        };
        match cluster.client.seal_log(request).await {
            Ok(_) => tracing::info!(log = %log.id, "sealed a log that was opened and never written"),
            Err(error) => tracing::debug!(log = %log.id, "sealing an unwritten log failed, retrying later: {error}"),
        }
    }
}

/// Uploads the next stretch of `pending` (about `upload_bytes`) as one
/// object and commits it with its trim point.
pub async fn upload(
    cluster: &Cluster,
    storage: &Storage,
    writing: &dyn WritingLog,
    states: &mut States,
    image: &Image,
    pending: &Pending,
) -> anyhow::Result<Uploaded> {
    let epoch = cluster.live_epoch().context("no live session")?;
    let started = std::time::Instant::now();
    let budget = cluster.config.upload_bytes;
    let entries = cluster.wal.read_entries(image, &pending.log, pending.log.trim_seq, pending.end, budget).await?;
    let last = entries.last().map(|entry| entry.header.seq).context("the WAL read returned no entries")?;

    let mut streams: BTreeMap<StreamId, StreamData> = BTreeMap::new();
    for record in entries.iter().flat_map(|entry| &entry.records) {
        let Some((_, _, partition)) = image.partition_of_stream(record.stream) else { continue };
        if record.base_offset.0 + i64::from(record.record_count) <= partition.uploaded_end.0 {
            // Uploaded already, by the partition's close or by a later leader.
            continue;
        }
        let data = streams.entry(record.stream).or_insert_with(|| StreamData::new(partition.uploaded_end));
        data.push(record.stream, record.base_offset, &record.batch)?;
    }
    // Each range carries the partition's producer state as of its end. A
    // producer's last append counts as now: later than it was, so the
    // snapshot never makes a producer expire early.
    let now = keel_broker_core::clock::now_ms();
    let mut snapshots = BTreeMap::new();
    for (stream, data) in &streams {
        let mut state = match states.get(stream) {
            Some((end, state)) if *end == data.start => state.clone(),
            _ => super::snapshots::at_uploaded_end(&storage.store, image, *stream).await?,
        };
        for batch in &data.batches {
            if let Ok(header) = batch::stored_header(batch) {
                state.record(&header, batch::marker(batch), batch::base_offset(batch), now);
            }
        }
        let log_start = image.partition_of_stream(*stream).map_or(Offset(0), |(_, _, p)| p.start_offset);
        state.prune(log_start, now - cluster.config.producer_id_expiration.as_millis() as i64);
        snapshots.insert(*stream, state);
    }
    let mut objects = Vec::new();
    let mut bytes = 0u64;
    if !streams.is_empty() {
        let id = reserve(cluster, epoch).await?;
        let mut builder = ObjectBuilder::default();
        for (stream, data) in &streams {
            let snapshot = serde_json::to_vec(&snapshots[stream])?;
            builder.add_range(stream.0, data.start.0, data.end.0, (data.min_ts, data.max_ts), &data.batches, &snapshot);
        }
        let (object, index) = builder.finish();
        bytes = object.len() as u64;
        let key = object_key(&cluster.config.cluster_id, id);
        storage.store.put(&key, object).await.with_context(|| format!("PUT {key}"))?;
        let ranges = index.iter().map(object_range).collect();
        objects.push(ObjectRecord { id, key, size: bytes, ranges });
    }
    let request = pb::CommitUploadRequest {
        broker: cluster.config.node_id.0,
        broker_epoch: epoch.0,
        log: pending.log.id.0,
        log_epoch: pending.log.epoch.0,
        trim_seq: last.0,
        objects: serde_json::to_vec(&objects)?,
    };
    match cluster.client.commit_upload(request).await {
        Ok((version, Outcome::UploadCommitted { .. })) => {
            // The next upload starts from this one's end: wait until the
            // metadata shows it.
            cluster.seen(version).await?;
        }
        // The object is not deleted here: an earlier attempt of this commit
        // may have applied, or still apply. If it never does, its reservation
        // expires and garbage collection deletes its key.
        outcome => anyhow::bail!("CommitUpload of {} through {last} answered {outcome:?}", pending.log.id),
    }
    for (stream, state) in snapshots {
        states.insert(stream, (streams[&stream].end, state));
    }
    let current = writing.writing().map(|writing| writing.session_epoch);
    if current == Some(pending.log.owner_epoch) {
        let uploaded: u64 = entries.iter().flat_map(|e| &e.records).map(|r| r.batch.len() as u64).sum();
        storage.backlog.remove(uploaded);
    }
    let metrics = &cluster.metrics;
    metrics.wal_backlog_bytes.set(storage.backlog.bytes() as i64);
    metrics.uploads.inc();
    metrics.upload_bytes.inc_by(bytes);
    metrics.upload_seconds.observe(started.elapsed().as_secs_f64());
    tracing::debug!(log = %pending.log.id, trim_seq = %last, streams = streams.len(), bytes, "uploaded and committed");
    Ok(if last < pending.end { Uploaded::More } else { Uploaded::UpToDate })
}

/// One stream's batches in an upload.
struct StreamData {
    start: Offset,
    end: Offset,
    batches: Vec<Bytes>,
    min_ts: i64,
    max_ts: i64,
}

impl StreamData {
    fn new(uploaded_end: Offset) -> StreamData {
        StreamData { start: uploaded_end, end: uploaded_end, batches: Vec::new(), min_ts: i64::MAX, max_ts: i64::MIN }
    }

    /// Appends the next batch; offsets must continue exactly where the
    /// stream's uploaded data ends, or the object would leave a hole.
    fn push(&mut self, stream: StreamId, base: Offset, bytes: &Bytes) -> anyhow::Result<()> {
        anyhow::ensure!(
            base == self.end,
            "stream {stream}: the WAL holds offset {base} next, but its uploaded data ends at {}",
            self.end
        );
        let header =
            batch::stored_header(bytes).map_err(|error| anyhow::anyhow!("stream {stream} at {base}: {error}"))?;
        self.end = Offset(base.0 + i64::from(header.record_count));
        self.min_ts = self.min_ts.min(header.base_timestamp.min(header.max_timestamp));
        self.max_ts = self.max_ts.max(header.max_timestamp);
        self.batches.push(bytes.clone());
        Ok(())
    }
}

/// One object id for this broker, reserved for `RESERVATION_TTL`.
pub async fn reserve(cluster: &Cluster, epoch: Epoch) -> anyhow::Result<ObjectId> {
    let request = pb::ReserveObjectsRequest {
        broker: cluster.config.node_id.0,
        broker_epoch: epoch.0,
        count: 1,
        ttl_ms: RESERVATION_TTL.as_millis() as u64,
    };
    match cluster.client.reserve_objects(request).await.context("ReserveObjects")? {
        (_, Outcome::ObjectsReserved { first, .. }) => Ok(first),
        (_, other) => anyhow::bail!("ReserveObjects answered {other:?}"),
    }
}

/// A range of a built object as the metadata's object index records it.
pub fn object_range(range: &RangeIndex) -> ObjectRange {
    ObjectRange {
        stream: StreamId(range.stream),
        start: Offset(range.start),
        end: Offset(range.end),
        pos: range.pos,
        len: range.len,
        min_ts: range.min_ts,
        max_ts: range.max_ts,
        snapshot_pos: range.snapshot_pos,
        snapshot_len: range.snapshot_len,
    }
}

/// An object's key: a hash prefix spreads keys over the store's partitions.
pub fn object_key(cluster: &str, id: ObjectId) -> String {
    let spread = (id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8;
    format!("{spread:02x}/{cluster}/{:016x}.obj", id.0)
}

//! The S3 tier as the broker uses it (DESIGN §3.4, §3.5, §4): uploading
//! WAL data as objects, reading history back from them, producer-state
//! snapshots, compaction, retention and garbage collection, and the
//! object store itself, counted (`metered_store.rs`).
//!
//! This layer knows the cluster (`crate::cluster`) but not which partitions
//! this broker leads: the uploader learns which log this broker writes
//! through `WritingLog`, which the log layer implements.

pub mod compactor;
pub mod key_compaction;
pub mod metered_store;
pub mod object_reads;
pub mod retention;
pub mod snapshots;
pub mod uploader;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel_broker_core::stream_index::IndexCache;
use keel_controller_client::{Offset, StreamId};
use keel_objects::ObjectStore;
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

use crate::cluster::Cluster;
use crate::error::BrokerError;
use object_reads::ObjectCache;

#[derive(Debug)]
pub struct Storage {
    pub store: Arc<dyn ObjectStore>,
    /// Stream ranges read from objects, for cold readers.
    pub object_cache: Arc<ObjectCache>,
    /// The image arranged for reads, per metadata version.
    pub stream_index: IndexCache,
    /// Batch bytes appended to the current WAL log and not uploaded yet.
    pub backlog: Backlog,
    /// Has the uploader upload at once (a partition is being closed).
    pub upload_now: Notify,
    /// Counts the uploader's failed rounds, and is zero again after a
    /// round that succeeds: moves wait while uploads fail.
    pub upload_failures: UploadFailures,
    /// The object store's recent latency: moves wait while it is slow.
    pub store_latency: Arc<metered_store::StoreLatency>,
    /// Reads ahead run here.
    tasks: TaskTracker,
}

/// Batch bytes appended to this broker's current WAL log and not uploaded
/// yet: produces are refused (retriably) while it is over the cap, so an
/// object-store outage fills no WAL disk (DESIGN §3.4).
#[derive(Debug, Default)]
pub struct Backlog(AtomicU64);

/// The uploader's failed rounds since its last successful one.
#[derive(Debug, Default)]
pub struct UploadFailures(AtomicU64);

impl UploadFailures {
    /// Failed rounds in a row, now.
    pub fn in_a_row(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    pub fn failed(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn succeeded(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

impl Backlog {
    pub fn bytes(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    pub fn add(&self, bytes: u64) {
        self.0.fetch_add(bytes, Ordering::Relaxed);
    }

    /// `bytes` were uploaded.
    pub fn remove(&self, bytes: u64) {
        let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(b.saturating_sub(bytes)));
    }

    /// A new log starts with nothing to upload.
    pub fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

impl Storage {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        store_latency: Arc<metered_store::StoreLatency>,
        object_cache_bytes: usize,
        tasks: TaskTracker,
    ) -> Storage {
        Storage {
            tasks,
            store,
            object_cache: Arc::new(ObjectCache::new(object_cache_bytes)),
            stream_index: IndexCache::default(),
            backlog: Backlog::default(),
            upload_now: Notify::new(),
            upload_failures: UploadFailures::default(),
            store_latency,
        }
    }

    /// The batches of `stream` from the one holding `offset`, ending at or
    /// before `until`, within `limit` bytes (at least one batch), if
    /// `offset` lies below the partition's uploaded end; an error if the
    /// object store cannot give them intact.
    pub async fn read_uploaded(
        &self,
        cluster: &Cluster,
        stream: StreamId,
        offset: Offset,
        until: Offset,
        limit: usize,
    ) -> Result<Option<Vec<Bytes>>, BrokerError> {
        // A missing object may have been replaced or deleted under a stale
        // image (DESIGN §3): read the metadata again and retry once.
        let mut retried = false;
        loop {
            let index = self.stream_index.get(&cluster.image());
            let Some(facts) = index.stream(stream).filter(|facts| offset < facts.uploaded_end) else {
                return Ok(None);
            };
            let until = until.min(facts.uploaded_end);
            let ranges = facts.ranges_from(offset);
            match object_reads::read(&self.store, &self.object_cache, &self.tasks, ranges, offset, until, limit).await {
                Ok(batches) => {
                    cluster.metrics.object_read_bytes.inc_by(batches.iter().map(|b| b.len() as u64).sum());
                    return Ok(Some(batches));
                }
                Err(BrokerError::ObjectMissing { key }) if !retried => {
                    tracing::info!(key, "an object is missing; reading the metadata again");
                    retried = true;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => {
                    cluster.metrics.object_read_failures.inc();
                    tracing::error!(%stream, %offset, "cold read failed: {error}");
                    return Err(error);
                }
            }
        }
    }
}

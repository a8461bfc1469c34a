//! A led partition's batches for readers (DESIGN §4): from the hot cache,
//! else from objects below the partition's uploaded end, else from the WAL
//! log that holds the offset (the member in this broker's zone first).

use bytes::Bytes;
use keel_broker_core::partition::LogRange;
use keel_controller_client::{Offset, StreamId};
use keel_proto::wal as wal_pb;

use super::Partitions;
use crate::error::BrokerError;

impl Partitions {
    /// A partition's batches from the one holding `offset`, ending at or
    /// before `until`, within `limit` bytes (at least one batch): from the
    /// cache, else from objects below the partition's uploaded end, else
    /// from the WAL log `range` names.
    pub async fn read_batches(
        &self,
        stream: StreamId,
        range: Option<LogRange>,
        offset: Offset,
        until: Offset,
        limit: usize,
    ) -> Result<Vec<Bytes>, BrokerError> {
        if let Some(cached) = self.cache.read(stream, offset, until, limit) {
            return Ok(cached.into_iter().map(|c| c.batch).collect());
        }
        let storage = &self.storage;
        match storage.read_uploaded(&self.cluster, stream, offset, until, limit).await {
            Ok(Some(batches)) => return Ok(batches),
            Ok(None) => {}
            // A damaged or unreadable object: the WAL may still hold a copy
            // (not trimmed yet); if not, the read fails, never serving bad bytes.
            Err(error) => match range {
                Some(range) => match self.read_wal(stream, range, offset, limit).await {
                    Ok(read) if !read.is_empty() => return Ok(within(read, until, limit)),
                    _ => return Err(error),
                },
                None => return Err(error),
            },
        }
        let range = range.ok_or(BrokerError::NotStored { stream, offset })?;
        let read = match self.read_wal(stream, range, offset, limit).await {
            Ok(read) => read,
            // The WAL may have been trimmed after an upload this image did not show yet.
            Err(error) => match storage.read_uploaded(&self.cluster, stream, offset, until, limit).await? {
                Some(batches) => return Ok(batches),
                None => return Err(error),
            },
        };
        Ok(within(read, until, limit))
    }

    async fn read_wal(
        &self,
        stream: StreamId,
        range: LogRange,
        from: Offset,
        max_bytes: usize,
    ) -> Result<Vec<wal_pb::StreamBatch>, BrokerError> {
        self.cluster.wal.read_stream(&self.cluster.image(), range, stream, from, max_bytes).await
    }
}

/// WAL batches that end at or before `until`, within `limit` bytes (at least one).
fn within(read: Vec<wal_pb::StreamBatch>, until: Offset, limit: usize) -> Vec<Bytes> {
    let mut bytes = 0usize;
    read.into_iter()
        .filter(|batch| batch.base_offset + i64::from(batch.record_count) <= until.0)
        .take_while(|batch| {
            let take = bytes == 0 || bytes + batch.batch.len() <= limit;
            bytes += batch.batch.len();
            take
        })
        .map(|batch| batch.batch)
        .collect()
}

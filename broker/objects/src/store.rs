//! One trait for object storage, so the uploader and the cold-read path do
//! not care where objects live: S3 (any S3-compatible endpoint) in
//! production, a local directory for `keelctl dev` and single-machine use.
//!
//! Keys are written once and never overwritten (each names a reserved object
//! id), so a PUT that is retried after an unknown outcome writes the same
//! bytes again.

use std::fmt::Debug;

use async_trait::async_trait;
use bytes::Bytes;

/// Why an object-store call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("object {key} does not exist")]
    NotFound { key: String },
    /// The range asked for reaches past the object's end.
    #[error("object {key} is shorter than the range asked for")]
    OutOfRange { key: String },
    /// Anything else, after the backend's own retries.
    #[error("object store: {0}")]
    Failed(String),
}

#[async_trait]
pub trait ObjectStore: Send + Sync + Debug {
    /// Writes `bytes` as object `key`.
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError>;
    /// Reads `len` bytes of object `key` from byte `pos`.
    async fn get_range(&self, key: &str, pos: u64, len: u64) -> Result<Bytes, StoreError>;
    /// Deletes object `key`; deleting a missing object succeeds.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// What the backend is, for logs: a directory or a bucket and endpoint.
    fn describe(&self) -> String;
}

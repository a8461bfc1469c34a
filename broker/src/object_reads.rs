//! Cold reads (DESIGN §4): offsets below a partition's uploaded end come
//! from the object store. The object index is in the metadata; each read
//! GETs one stream range of one object (a ranged GET) into a byte-bounded
//! cache, and a reader that reached a range's end has the next range fetched
//! ahead, so a consumer catching up reads at the object store's bandwidth.
//!
//! Bytes from the object store are not trusted: each batch is checked
//! (length, magic, CRC32C) before it is served.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use keel_controller_client::ObjectId;
use keel_objects::ObjectStore;

use crate::batch;
use crate::stream_index::Located;

/// Stream ranges of objects kept in memory, first in first out, bounded in bytes.
#[derive(Debug)]
pub struct ObjectCache {
    capacity: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    ranges: HashMap<(ObjectId, u64), Bytes>,
    order: VecDeque<(ObjectId, u64)>,
    bytes: usize,
}

impl ObjectCache {
    pub fn new(capacity: usize) -> ObjectCache {
        ObjectCache { capacity, inner: Mutex::default() }
    }

    fn get(&self, key: (ObjectId, u64)) -> Option<Bytes> {
        self.inner.lock().expect("object cache lock").ranges.get(&key).cloned()
    }

    fn insert(&self, key: (ObjectId, u64), bytes: Bytes) {
        if bytes.len() > self.capacity {
            return;
        }
        let mut inner = self.inner.lock().expect("object cache lock");
        if inner.ranges.contains_key(&key) {
            return;
        }
        while inner.bytes + bytes.len() > self.capacity {
            let Some(oldest) = inner.order.pop_front() else { break };
            if let Some(evicted) = inner.ranges.remove(&oldest) {
                inner.bytes -= evicted.len();
            }
        }
        inner.bytes += bytes.len();
        inner.order.push_back(key);
        inner.ranges.insert(key, bytes);
    }
}

/// Why a cold read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The object is gone from the store (its key).
    #[error("object {0} is missing from the store")]
    NotFound(String),
    /// The store failed, or the bytes are damaged: never served.
    #[error("{0}")]
    Failed(String),
}

/// The batches from the one holding `offset`, ending at or before `until`,
/// within `limit` bytes (at least one batch), from a stream's object ranges
/// (`ranges`, in offset order, those reaching past `offset`).
pub async fn read(
    store: &Arc<dyn ObjectStore>,
    cache: &Arc<ObjectCache>,
    ranges: &[Located],
    offset: i64,
    until: i64,
    limit: usize,
) -> Result<Vec<Bytes>, ReadError> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for (index, located) in ranges.iter().enumerate() {
        if located.range.start.0 >= until {
            break;
        }
        let data = fetch_range(store, cache, located).await?;
        let batches = split(&data)
            .map_err(|reason| ReadError::Failed(format!("{} ({}): {reason}", located.object, located.key)))?;
        for batch in batches {
            let base = batch::base_offset(&batch);
            let end = base + i64::from(batch::record_count(&batch));
            if end <= offset {
                continue;
            }
            if end > until || (bytes > 0 && bytes + batch.len() > limit) {
                return Ok(out);
            }
            bytes += batch.len();
            out.push(batch);
        }
        // Read ahead: the reader will want the next range soon.
        if let Some(next) = ranges.get(index + 1) {
            if cache.get((next.object, next.range.pos)).is_none() {
                let (store, cache, next) = (store.clone(), cache.clone(), next.clone());
                tokio::spawn(async move {
                    let _ = fetch_range(&store, &cache, &next).await;
                });
            }
        }
        if bytes >= limit {
            break;
        }
    }
    Ok(out)
}

async fn fetch_range(store: &Arc<dyn ObjectStore>, cache: &ObjectCache, located: &Located) -> Result<Bytes, ReadError> {
    let key = (located.object, located.range.pos);
    if let Some(bytes) = cache.get(key) {
        return Ok(bytes);
    }
    let bytes =
        store.get_range(&located.key, located.range.pos, located.range.len).await.map_err(|error| match error {
            keel_objects::StoreError::NotFound { key } => ReadError::NotFound(key),
            other => ReadError::Failed(other.to_string()),
        })?;
    cache.insert(key, bytes.clone());
    Ok(bytes)
}

/// Splits a stream range into its batches, checking each.
pub fn split(data: &Bytes) -> Result<Vec<Bytes>, String> {
    let mut batches = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        let rest = &data[at..];
        if rest.len() < batch::HEADER_BYTES {
            return Err(format!("{} stray bytes at {at}", rest.len()));
        }
        let length = i32::from_be_bytes(rest[8..12].try_into().expect("4 bytes"));
        let total = usize::try_from(length).ok().and_then(|l| l.checked_add(12)).filter(|t| *t <= rest.len());
        let total = total.ok_or_else(|| format!("batch at {at} claims {length} bytes"))?;
        batch::check_stored(&rest[..total]).map_err(|error| format!("batch at {at}: {error}"))?;
        batches.push(data.slice(at..at + total));
        at += total;
    }
    Ok(batches)
}

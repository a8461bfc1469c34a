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
use keel_broker_core::batch;
use keel_broker_core::stream_index::Located;
use keel_controller_client::{ObjectId, Offset};
use keel_objects::ObjectStore;
use tokio_util::task::TaskTracker;

use crate::error::BrokerError;

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

/// The batches from the one holding `offset`, ending at or before `until`,
/// within `limit` bytes (at least one batch), from a stream's object ranges
/// (`ranges`, in offset order, those reaching past `offset`).
///
/// The next range is read ahead in a task of `tasks`.
pub async fn read(
    store: &Arc<dyn ObjectStore>,
    cache: &Arc<ObjectCache>,
    tasks: &TaskTracker,
    ranges: &[Located],
    offset: Offset,
    until: Offset,
    limit: usize,
) -> Result<Vec<Bytes>, BrokerError> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for (index, located) in ranges.iter().enumerate() {
        if located.range.start >= until {
            break;
        }
        let data = fetch_range(store, cache, located).await?;
        let batches = batch::split(&data).map_err(|error| BrokerError::ObjectDamaged {
            key: located.key.to_string(),
            reason: format!("{}: {error}", located.object),
        })?;
        for batch in batches {
            let end = batch::end_offset(&batch);
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
                tasks.spawn(async move {
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

async fn fetch_range(
    store: &Arc<dyn ObjectStore>,
    cache: &ObjectCache,
    located: &Located,
) -> Result<Bytes, BrokerError> {
    let key = (located.object, located.range.pos);
    if let Some(bytes) = cache.get(key) {
        return Ok(bytes);
    }
    let bytes = store.get_range(&located.key, located.range.pos, located.range.len).await?;
    cache.insert(key, bytes.clone());
    Ok(bytes)
}

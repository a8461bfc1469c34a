//! The hot cache: recent record batches of every partition this broker
//! leads, bounded in bytes, oldest evicted first. Fetches of the tail are
//! served from here; what is evicted is read back from the WAL.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use keel_controller_client::{Offset, StreamId};

/// A cached batch and the offset after its last record.
#[derive(Clone, Debug)]
pub struct Cached {
    pub batch: Bytes,
    pub end: Offset,
}

#[derive(Debug)]
pub struct BatchCache {
    max_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    streams: HashMap<StreamId, BTreeMap<Offset, Cached>>,
    /// Insertion order, for eviction. Entries already removed are skipped.
    order: VecDeque<(StreamId, Offset)>,
    bytes: usize,
}

impl BatchCache {
    pub fn new(max_bytes: usize) -> BatchCache {
        BatchCache { max_bytes, inner: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a batch covering `base..end`, evicting the oldest batches over the bound.
    pub fn insert(&self, stream: StreamId, base: Offset, end: Offset, batch: Bytes) {
        let mut inner = self.lock();
        inner.bytes += batch.len();
        if let Some(old) = inner.streams.entry(stream).or_default().insert(base, Cached { batch, end }) {
            inner.bytes -= old.batch.len();
        }
        inner.order.push_back((stream, base));
        while inner.bytes > self.max_bytes {
            let Some((stream, base)) = inner.order.pop_front() else { break };
            let removed = inner.streams.get_mut(&stream).and_then(|batches| batches.remove(&base));
            if let Some(removed) = removed {
                inner.bytes -= removed.batch.len();
            }
        }
    }

    /// The batches from the one holding `from`, ending at or before `until`,
    /// up to `max_bytes` (at least one batch). `None` when the cache does not
    /// hold the batch with `from`: the caller reads the WAL.
    pub fn read(&self, stream: StreamId, from: Offset, until: Offset, max_bytes: usize) -> Option<Vec<Cached>> {
        let inner = self.lock();
        let batches = inner.streams.get(&stream)?;
        let (&start, first) = batches.range(..=from).next_back()?;
        if first.end <= from {
            return None;
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        for (_, cached) in batches.range(start..) {
            if cached.end > until || (!out.is_empty() && bytes + cached.batch.len() > max_bytes) {
                break;
            }
            bytes += cached.batch.len();
            out.push(cached.clone());
        }
        Some(out)
    }

    /// Drops everything of a stream (the partition is no longer led here).
    pub fn forget(&self, stream: StreamId) {
        let mut inner = self.lock();
        if let Some(batches) = inner.streams.remove(&stream) {
            inner.bytes -= batches.values().map(|cached| cached.batch.len()).sum::<usize>();
        }
    }

    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(len: usize) -> Bytes {
        Bytes::from(vec![0u8; len])
    }

    #[test]
    fn reads_start_at_the_batch_holding_the_offset_and_stop_at_the_bound() {
        let cache = BatchCache::new(1 << 20);
        let s = StreamId(1);
        cache.insert(s, Offset(0), Offset(3), batch(10));
        cache.insert(s, Offset(3), Offset(5), batch(10));
        cache.insert(s, Offset(5), Offset(9), batch(10));
        let ends = |v: Option<Vec<Cached>>| v.map(|v| v.iter().map(|c| c.end.0).collect::<Vec<_>>());
        assert_eq!(ends(cache.read(s, Offset(4), Offset(9), 1 << 20)), Some(vec![5, 9]));
        assert_eq!(ends(cache.read(s, Offset(4), Offset(5), 1 << 20)), Some(vec![5]), "not past the high watermark");
        assert_eq!(ends(cache.read(s, Offset(0), Offset(9), 15)), Some(vec![3]), "max bytes, but at least one batch");
        assert_eq!(ends(cache.read(s, Offset(9), Offset(9), 100)), None, "nothing holds offset 9 yet");
    }

    #[test]
    fn the_oldest_batches_are_evicted_past_the_bound_and_forgetting_releases_bytes() {
        let cache = BatchCache::new(25);
        let s = StreamId(1);
        for base in 0..4 {
            cache.insert(s, Offset(base), Offset(base + 1), batch(10));
        }
        assert_eq!(cache.bytes(), 20);
        assert!(cache.read(s, Offset(1), Offset(4), 100).is_none(), "offsets 0 and 1 were evicted");
        assert!(cache.read(s, Offset(2), Offset(4), 100).is_some());
        cache.forget(s);
        assert_eq!(cache.bytes(), 0);
    }
}

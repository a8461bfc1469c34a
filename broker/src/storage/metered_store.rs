//! The object store as the broker uses it, counted: every PUT, ranged GET
//! and DELETE by operation and outcome, with its latency, so an S3 problem
//! shows on the dashboard as S3's and not as a slow broker; and the recent
//! latency kept (`StoreLatency`), so that work the broker may put off (the
//! balancer's moves) waits while the store is slow.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use keel_objects::{ObjectStore, StoreError};
use prometheus::{HistogramVec, IntCounterVec};

#[derive(Debug)]
pub struct MeteredStore {
    inner: Arc<dyn ObjectStore>,
    requests: IntCounterVec,
    seconds: HistogramVec,
    latency: Arc<StoreLatency>,
}

/// The durations of the object store's recent successful calls.
#[derive(Debug, Default)]
pub struct StoreLatency(Mutex<VecDeque<(Instant, Duration)>>);

/// Calls older than this are forgotten.
const LATENCY_WINDOW: Duration = Duration::from_secs(10);
/// A store whose recent calls took this long, half of them or more, is
/// slow: S3 answers in tens of milliseconds, and a whole upload of
/// `upload_bytes` in well under a second.
const SLOW_CALL: Duration = Duration::from_secs(1);
const CALLS_KEPT: usize = 64;

impl StoreLatency {
    fn record(&self, took: Duration) {
        if let Ok(mut calls) = self.0.lock() {
            calls.push_back((Instant::now(), took));
            while calls.len() > CALLS_KEPT {
                calls.pop_front();
            }
        }
    }

    /// Whether at least two calls in the last `LATENCY_WINDOW` took, at the
    /// median, `SLOW_CALL` or more.
    pub fn slow(&self) -> bool {
        let Ok(calls) = self.0.lock() else { return false };
        let mut recent: Vec<Duration> =
            calls.iter().filter(|(at, _)| at.elapsed() < LATENCY_WINDOW).map(|(_, took)| *took).collect();
        if recent.len() < 2 {
            return false;
        }
        recent.sort_unstable();
        recent[recent.len() / 2] >= SLOW_CALL
    }
}

impl MeteredStore {
    pub fn new(
        inner: Arc<dyn ObjectStore>,
        metrics: &crate::metrics::Metrics,
        latency: Arc<StoreLatency>,
    ) -> MeteredStore {
        MeteredStore {
            inner,
            requests: metrics.object_requests.clone(),
            seconds: metrics.object_request_seconds.clone(),
            latency,
        }
    }

    fn count<T>(&self, operation: &str, started: std::time::Instant, result: &Result<T, StoreError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(StoreError::NotFound { .. }) => "not_found",
            Err(StoreError::OutOfRange { .. }) => "out_of_range",
            Err(StoreError::Failed(_)) => "error",
        };
        self.requests.with_label_values(&[operation, outcome]).inc();
        self.seconds.with_label_values(&[operation]).observe(started.elapsed().as_secs_f64());
        if result.is_ok() {
            self.latency.record(started.elapsed());
        }
    }
}

#[async_trait]
impl ObjectStore for MeteredStore {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let result = self.inner.put(key, bytes).await;
        self.count("put", started, &result);
        result
    }

    async fn get_range(&self, key: &str, pos: u64, len: u64) -> Result<Bytes, StoreError> {
        let started = std::time::Instant::now();
        let result = self.inner.get_range(key, pos, len).await;
        self.count("get", started, &result);
        result
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let result = self.inner.delete(key).await;
        self.count("delete", started, &result);
        result
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_is_slow_when_most_recent_calls_are() {
        let latency = StoreLatency::default();
        assert!(!latency.slow(), "nothing known: not slow");
        latency.record(Duration::from_millis(1500));
        assert!(!latency.slow(), "one call says little");
        latency.record(Duration::from_millis(1600));
        assert!(latency.slow());
        for _ in 0..3 {
            latency.record(Duration::from_millis(40));
        }
        assert!(!latency.slow(), "most calls are fast again");
    }
}

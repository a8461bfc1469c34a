//! The object store as the broker uses it, counted: every PUT, ranged GET
//! and DELETE by operation and outcome, with its latency, so an S3 problem
//! shows on the dashboard as S3's and not as a slow broker.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use keel_objects::{ObjectStore, StoreError};
use prometheus::{HistogramVec, IntCounterVec};

#[derive(Debug)]
pub struct MeteredStore {
    inner: Arc<dyn ObjectStore>,
    requests: IntCounterVec,
    seconds: HistogramVec,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn ObjectStore>, metrics: &crate::metrics::Metrics) -> MeteredStore {
        MeteredStore {
            inner,
            requests: metrics.object_requests.clone(),
            seconds: metrics.object_request_seconds.clone(),
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

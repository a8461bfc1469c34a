//! The broker's Prometheus metrics. They answer "is it the producer, the
//! consumer or the broker": requests and errors by API, bytes in and out by
//! topic, and how long produces wait for the WAL quorum.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone, Debug)]
pub struct Metrics {
    /// Kafka requests answered, by API.
    pub requests: IntCounterVec,
    /// Partition-level errors returned, by API and Kafka error name.
    pub errors: IntCounterVec,
    /// Time from a request's arrival to its answer, by API.
    pub request_seconds: HistogramVec,
    /// Record-batch bytes appended, by topic.
    pub bytes_in: IntCounterVec,
    /// Record-batch bytes returned by fetches, by topic.
    pub bytes_out: IntCounterVec,
    /// Time a produce waits for its WAL entry to be acknowledged.
    pub wal_ack_seconds: Histogram,
    /// How long taking over the previous logs and opening a new one took.
    pub takeover_seconds: Histogram,
    pub connections: IntGauge,
}

impl Metrics {
    pub fn new(registry: &Registry) -> anyhow::Result<Metrics> {
        let seconds = vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];
        let metrics = Metrics {
            requests: IntCounterVec::new(
                Opts::new("keel_broker_requests_total", "Kafka requests answered, by API."),
                &["api"],
            )?,
            errors: IntCounterVec::new(
                Opts::new("keel_broker_errors_total", "Kafka errors returned, by API and error."),
                &["api", "error"],
            )?,
            request_seconds: HistogramVec::new(
                HistogramOpts::new("keel_broker_request_seconds", "Time from a request's arrival to its answer.")
                    .buckets(seconds.clone()),
                &["api"],
            )?,
            bytes_in: IntCounterVec::new(
                Opts::new("keel_broker_bytes_in_total", "Record-batch bytes appended, by topic."),
                &["topic"],
            )?,
            bytes_out: IntCounterVec::new(
                Opts::new("keel_broker_bytes_out_total", "Record-batch bytes served by fetches, by topic."),
                &["topic"],
            )?,
            wal_ack_seconds: Histogram::with_opts(
                HistogramOpts::new("keel_broker_wal_ack_seconds", "Time a produce waits for the WAL quorum's ack.")
                    .buckets(seconds.clone()),
            )?,
            takeover_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "keel_broker_takeover_seconds",
                    "Time to recover this broker's earlier WAL logs and open a new one.",
                )
                .buckets(seconds),
            )?,
            connections: IntGauge::new("keel_broker_connections", "Open Kafka client connections.")?,
        };
        registry.register(Box::new(metrics.requests.clone()))?;
        registry.register(Box::new(metrics.errors.clone()))?;
        registry.register(Box::new(metrics.request_seconds.clone()))?;
        registry.register(Box::new(metrics.bytes_in.clone()))?;
        registry.register(Box::new(metrics.bytes_out.clone()))?;
        registry.register(Box::new(metrics.wal_ack_seconds.clone()))?;
        registry.register(Box::new(metrics.takeover_seconds.clone()))?;
        registry.register(Box::new(metrics.connections.clone()))?;
        Ok(metrics)
    }
}

//! The broker's Prometheus metrics. They answer "is it the producer, the
//! consumer or the broker": requests and errors by API, bytes in and out by
//! topic, and how long produces wait for the WAL quorum.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

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
    /// How long opening a new WAL log after a (re)registration took.
    pub takeover_seconds: Histogram,
    /// Failover: orphaned WAL logs this broker recovered and sealed, the
    /// entries it found in them, and the time each recovery took.
    pub logs_recovered: IntCounter,
    pub entries_recovered: IntCounter,
    pub recovery_seconds: Histogram,
    /// Partitions this broker started leading, and how many it leads now.
    pub partitions_taken: IntCounter,
    /// This broker's own logs sealed early (a member lost, a better ensemble found).
    pub logs_sealed_early: IntCounter,
    /// Partitions this broker handed over on purpose (drain, balancer), and
    /// the time each round of closes took (stop writes to ClosePartition).
    pub partitions_closed: IntCounter,
    pub close_seconds: Histogram,
    pub partitions_led: IntGauge,
    pub connections: IntGauge,
    /// Connections closed at once because `connections_max` were open.
    pub connections_refused: IntCounter,
    /// TLS handshakes on an SSL listener that failed or timed out.
    pub tls_handshakes_failed: IntCounter,
    /// SASL authentications that succeeded and failed, by mechanism.
    pub sasl_authenticated: IntCounterVec,
    pub sasl_failed: IntCounterVec,
    /// Objects uploaded and committed, their bytes, the time each took, and failed attempts.
    pub uploads: IntCounter,
    pub upload_bytes: IntCounter,
    pub upload_seconds: Histogram,
    pub upload_failures: IntCounter,
    /// Record-batch bytes served from the object store (cold reads).
    pub object_read_bytes: IntCounter,
    /// Bytes appended to the current WAL log not uploaded yet.
    pub wal_backlog_bytes: IntGauge,
    /// Cold reads that failed: the store failed, or an object was damaged or missing.
    pub object_read_failures: IntCounter,
    /// Retried idempotent batches recognised and not appended again.
    pub produce_duplicates: IntCounter,
    /// Idle producers forgotten (producer_id_expiration).
    pub producers_expired: IntCounter,
    /// Transactions this broker coordinated to their end, by outcome
    /// (commit, abort, timed_out), and the time from the prepared state to
    /// every marker written.
    pub transactions: IntCounterVec,
    pub transaction_markers_seconds: Histogram,
    /// Bytes of this broker's WAL log some member has not acknowledged, and
    /// whether the log is missing a member now (1) or not (0).
    pub wal_unreplicated_bytes: IntGauge,
    pub wal_log_under_replicated: IntGauge,
    /// Object store calls by operation (put, get, delete) and outcome, and their time.
    pub object_requests: IntCounterVec,
    pub object_request_seconds: HistogramVec,
    /// Per group and partition this broker coordinates: end offset minus committed offset.
    pub group_lag: IntGaugeVec,
    /// Partitions of `__consumer_offsets` loaded (groups rebuilt) by this broker.
    pub group_loads: IntCounter,
    /// Time from an offset commit's checks to its record being durable.
    pub offset_commit_seconds: Histogram,
}

impl Metrics {
    pub fn new(registry: &Registry) -> anyhow::Result<Metrics> {
        let seconds = vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];
        let metrics = Metrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "keel_broker_requests_total",
                    "Kafka requests answered, by API and version (which versions clients use).",
                ),
                &["api", "version"],
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
                    "Time to open a new WAL log after a (re)registration.",
                )
                .buckets(seconds.clone()),
            )?,
            logs_recovered: IntCounter::new(
                "keel_broker_logs_recovered_total",
                "Orphaned WAL logs (of a fenced or restarted broker) this broker recovered and sealed.",
            )?,
            entries_recovered: IntCounter::new(
                "keel_broker_entries_recovered_total",
                "WAL entries found by this broker's recoveries of orphaned logs.",
            )?,
            recovery_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "keel_broker_recovery_seconds",
                    "Time to recover and seal one orphaned WAL log (RecoverLog to SealLog).",
                )
                .buckets(seconds),
            )?,
            partitions_taken: IntCounter::new(
                "keel_broker_partitions_taken_total",
                "Partitions this broker started leading (new, moved or failed over).",
            )?,
            partitions_closed: IntCounter::new(
                "keel_broker_partitions_closed_total",
                "Partitions this broker handed to another on purpose (drain, balancer).",
            )?,
            close_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "keel_broker_close_seconds",
                    "Time to hand partitions over: writes stopped, in-flight acknowledged, uploaded, ClosePartition committed.",
                )
                .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            )?,
            logs_sealed_early: IntCounter::new(
                "keel_broker_logs_sealed_early_total",
                "This broker's WAL logs sealed early because a member was lost and a better ensemble existed.",
            )?,
            partitions_led: IntGauge::new("keel_broker_partitions_led", "Partitions this broker leads now.")?,
            connections: IntGauge::new("keel_broker_connections", "Open Kafka client connections.")?,
            connections_refused: IntCounter::new(
                "keel_broker_connections_refused_total",
                "Kafka client connections closed as they arrived because connections_max were open.",
            )?,
            sasl_authenticated: IntCounterVec::new(
                Opts::new("keel_broker_sasl_authentications_total", "SASL authentications that succeeded, by mechanism."),
                &["mechanism"],
            )?,
            sasl_failed: IntCounterVec::new(
                Opts::new(
                    "keel_broker_sasl_authentication_failures_total",
                    "SASL authentications refused (bad credentials, unknown user, a mechanism not enabled), by mechanism.",
                ),
                &["mechanism"],
            )?,
            tls_handshakes_failed: IntCounter::new(
                "keel_broker_tls_handshakes_failed_total",
                "TLS handshakes on an SSL listener that failed (no or a bad client certificate, a plaintext client) or timed out.",
            )?,
            uploads: IntCounter::new("keel_broker_uploads_total", "Objects uploaded and committed.")?,
            upload_bytes: IntCounter::new(
                "keel_broker_upload_bytes_total",
                "Bytes of objects uploaded and committed.",
            )?,
            upload_seconds: Histogram::with_opts(
                HistogramOpts::new("keel_broker_upload_seconds", "Time to read, PUT and commit one object.")
                    .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            )?,
            upload_failures: IntCounter::new("keel_broker_upload_failures_total", "Upload attempts that failed.")?,
            object_read_bytes: IntCounter::new(
                "keel_broker_object_read_bytes_total",
                "Record-batch bytes read from the object store for fetches.",
            )?,
            wal_backlog_bytes: IntGauge::new(
                "keel_broker_wal_backlog_bytes",
                "Batch bytes in this broker's current WAL log not uploaded yet (produce is refused over the cap).",
            )?,
            object_read_failures: IntCounter::new(
                "keel_broker_object_read_failures_total",
                "Cold reads that failed: store errors, damaged or missing objects (never served).",
            )?,
            produce_duplicates: IntCounter::new(
                "keel_broker_produce_duplicates_total",
                "Idempotent batches received again (a producer's retry) and answered with their first offset, not appended.",
            )?,
            producers_expired: IntCounter::new(
                "keel_broker_producers_expired_total",
                "Idempotent producers forgotten after appending nothing for producer_id_expiration.",
            )?,
            transactions: IntCounterVec::new(
                Opts::new(
                    "keel_broker_transactions_total",
                    "Transactions ended by this broker as their coordinator: commit, abort, or timed_out (aborted by the coordinator).",
                ),
                &["outcome"],
            )?,
            transaction_markers_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "keel_broker_transaction_markers_seconds",
                    "From a transaction's prepared state to its markers durable in every partition.",
                )
                .buckets(prometheus::exponential_buckets(0.001, 2.0, 16)?),
            )?,
            wal_unreplicated_bytes: IntGauge::new(
                "keel_broker_wal_unreplicated_bytes",
                "Bytes of this broker's WAL log held in memory for a member that has not acknowledged them.",
            )?,
            wal_log_under_replicated: IntGauge::new(
                "keel_broker_wal_log_under_replicated",
                "1 while this broker's WAL log is missing a member (writing on two of three), else 0.",
            )?,
            object_requests: IntCounterVec::new(
                Opts::new(
                    "keel_broker_object_requests_total",
                    "Object store calls by operation (put, get, delete) and outcome (ok, not_found, out_of_range, error).",
                ),
                &["operation", "outcome"],
            )?,
            object_request_seconds: HistogramVec::new(
                HistogramOpts::new("keel_broker_object_request_seconds", "Time of one object store call, by operation.")
                    .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
                &["operation"],
            )?,
            group_lag: IntGaugeVec::new(
                Opts::new(
                    "keel_broker_group_lag",
                    "Records between a group's committed offset and the partition's end, for the groups this broker coordinates (every 10 s).",
                ),
                &["group", "topic", "partition"],
            )?,
            group_loads: IntCounter::new(
                "keel_broker_group_loads_total",
                "Partitions of __consumer_offsets this broker loaded on taking them over (groups rebuilt).",
            )?,
            offset_commit_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "keel_broker_offset_commit_seconds",
                    "Time to make an offset commit durable (its record acknowledged by the WAL quorum).",
                )
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
            )?,
        };
        registry.register(Box::new(metrics.requests.clone()))?;
        registry.register(Box::new(metrics.group_loads.clone()))?;
        registry.register(Box::new(metrics.group_lag.clone()))?;
        registry.register(Box::new(metrics.object_requests.clone()))?;
        registry.register(Box::new(metrics.wal_unreplicated_bytes.clone()))?;
        registry.register(Box::new(metrics.wal_log_under_replicated.clone()))?;
        registry.register(Box::new(metrics.object_request_seconds.clone()))?;
        registry.register(Box::new(metrics.produce_duplicates.clone()))?;
        registry.register(Box::new(metrics.producers_expired.clone()))?;
        registry.register(Box::new(metrics.transactions.clone()))?;
        registry.register(Box::new(metrics.transaction_markers_seconds.clone()))?;
        registry.register(Box::new(metrics.offset_commit_seconds.clone()))?;
        registry.register(Box::new(metrics.errors.clone()))?;
        registry.register(Box::new(metrics.request_seconds.clone()))?;
        registry.register(Box::new(metrics.bytes_in.clone()))?;
        registry.register(Box::new(metrics.bytes_out.clone()))?;
        registry.register(Box::new(metrics.wal_ack_seconds.clone()))?;
        registry.register(Box::new(metrics.takeover_seconds.clone()))?;
        registry.register(Box::new(metrics.logs_recovered.clone()))?;
        registry.register(Box::new(metrics.entries_recovered.clone()))?;
        registry.register(Box::new(metrics.recovery_seconds.clone()))?;
        registry.register(Box::new(metrics.partitions_taken.clone()))?;
        registry.register(Box::new(metrics.partitions_led.clone()))?;
        registry.register(Box::new(metrics.logs_sealed_early.clone()))?;
        registry.register(Box::new(metrics.partitions_closed.clone()))?;
        registry.register(Box::new(metrics.close_seconds.clone()))?;
        registry.register(Box::new(metrics.connections.clone()))?;
        registry.register(Box::new(metrics.connections_refused.clone()))?;
        registry.register(Box::new(metrics.tls_handshakes_failed.clone()))?;
        registry.register(Box::new(metrics.sasl_authenticated.clone()))?;
        registry.register(Box::new(metrics.sasl_failed.clone()))?;
        registry.register(Box::new(metrics.uploads.clone()))?;
        registry.register(Box::new(metrics.upload_bytes.clone()))?;
        registry.register(Box::new(metrics.upload_seconds.clone()))?;
        registry.register(Box::new(metrics.upload_failures.clone()))?;
        registry.register(Box::new(metrics.object_read_bytes.clone()))?;
        registry.register(Box::new(metrics.object_read_failures.clone()))?;
        registry.register(Box::new(metrics.wal_backlog_bytes.clone()))?;
        Ok(metrics)
    }
}

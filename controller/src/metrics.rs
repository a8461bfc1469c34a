//! The controller's Prometheus metrics.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Metrics of one controller, registered in the registry passed in.
#[derive(Clone, Debug)]
pub(crate) struct Metrics {
    /// Time from proposing a command to its being applied on the leader.
    pub(crate) commit_latency: Histogram,
    /// Write requests refused, by reason class.
    pub(crate) writes_refused: IntCounterVec,
    pub(crate) sessions_expired: IntCounter,
    /// Nodes fenced before their session ended: their attach stream closed
    /// and nothing answered at their address.
    pub(crate) probe_fences: IntCounter,
    /// Leaders given to leaderless partitions (failover, drain, moves, new brokers).
    pub(crate) leaders_assigned: IntCounter,
    /// Partition moves the balancer asked for.
    pub(crate) partition_moves: IntCounter,
    /// Broker failovers: from fencing a broker that led partitions to every
    /// one of them having a new leader.
    pub(crate) failovers: IntCounter,
    pub(crate) failover_seconds: Histogram,
    pub(crate) forwarded_requests: IntCounter,
    pub(crate) term: IntGauge,
    pub(crate) is_leader: IntGauge,
    pub(crate) applied_index: IntGauge,
    pub(crate) log_entries: IntGauge,
    pub(crate) watchers: IntGauge,
    /// Objects in the index and their bytes (what the object store should hold).
    pub(crate) objects: IntGauge,
    pub(crate) object_bytes: IntGauge,
}

impl Metrics {
    pub(crate) fn new(registry: &Registry) -> anyhow::Result<Metrics> {
        let buckets = vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
        let metrics = Metrics {
            commit_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "keel_controller_commit_latency_seconds",
                    "Time from proposing a metadata command to its being applied on the leader.",
                )
                .buckets(buckets),
            )?,
            writes_refused: IntCounterVec::new(
                Opts::new("keel_controller_writes_refused_total", "Metadata writes refused, by reason."),
                &["reason"],
            )?,
            sessions_expired: IntCounter::new(
                "keel_controller_sessions_expired_total",
                "Broker and WAL node sessions expired and fenced by this controller.",
            )?,
            probe_fences: IntCounter::new(
                "keel_controller_probe_fences_total",
                "Nodes fenced at once: their connection to the leader closed and nothing answered at their address.",
            )?,
            leaders_assigned: IntCounter::new(
                "keel_controller_leaders_assigned_total",
                "Leaders given to leaderless partitions (after a failover, a drain, a balancer move).",
            )?,
            partition_moves: IntCounter::new(
                "keel_controller_partition_moves_total",
                "Partition moves the balancer asked for.",
            )?,
            failovers: IntCounter::new(
                "keel_controller_failovers_total",
                "Brokers fenced while leading partitions whose partitions all got new leaders.",
            )?,
            failover_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "keel_controller_failover_seconds",
                    "Time from fencing a broker to every partition it led having a new leader (its logs recovered and uploaded).",
                )
                .buckets(vec![0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0]),
            )?,
            forwarded_requests: IntCounter::new(
                "keel_controller_forwarded_requests_total",
                "Requests this controller forwarded to the leader.",
            )?,
            term: IntGauge::new("keel_controller_term", "Current Raft term.")?,
            is_leader: IntGauge::new("keel_controller_is_leader", "1 when this controller is the Raft leader.")?,
            applied_index: IntGauge::new(
                "keel_controller_applied_index",
                "Index of the last Raft entry applied to the metadata image.",
            )?,
            log_entries: IntGauge::new(
                "keel_controller_log_entries",
                "Raft log entries held on disk (last index minus purged index).",
            )?,
            watchers: IntGauge::new("keel_controller_watchers", "Open metadata watch streams.")?,
            objects: IntGauge::new("keel_controller_objects", "Objects in the object store's index (committed uploads).")?,
            object_bytes: IntGauge::new("keel_controller_object_bytes", "Bytes of the objects in the index.")?,
        };
        registry.register(Box::new(metrics.commit_latency.clone()))?;
        registry.register(Box::new(metrics.writes_refused.clone()))?;
        registry.register(Box::new(metrics.sessions_expired.clone()))?;
        registry.register(Box::new(metrics.probe_fences.clone()))?;
        registry.register(Box::new(metrics.leaders_assigned.clone()))?;
        registry.register(Box::new(metrics.partition_moves.clone()))?;
        registry.register(Box::new(metrics.failovers.clone()))?;
        registry.register(Box::new(metrics.failover_seconds.clone()))?;
        registry.register(Box::new(metrics.forwarded_requests.clone()))?;
        registry.register(Box::new(metrics.term.clone()))?;
        registry.register(Box::new(metrics.is_leader.clone()))?;
        registry.register(Box::new(metrics.applied_index.clone()))?;
        registry.register(Box::new(metrics.log_entries.clone()))?;
        registry.register(Box::new(metrics.watchers.clone()))?;
        registry.register(Box::new(metrics.objects.clone()))?;
        registry.register(Box::new(metrics.object_bytes.clone()))?;
        Ok(metrics)
    }
}

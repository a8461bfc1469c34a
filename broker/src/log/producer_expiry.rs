//! Forgetting idle producers (Kafka's `producer.id.expiration.ms`): every
//! so often (a quarter of the expiration, at most 10 minutes, as Kafka's
//! check interval) the producers of every partition led here that wrote
//! nothing for `producer_id_expiration` are forgotten, unless a
//! transaction of theirs is open.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Partitions;

pub async fn run(partitions: Arc<Partitions>, cancel: CancellationToken) {
    let cluster = &partitions.cluster;
    let expiration = cluster.config.producer_id_expiration;
    let interval = (expiration / 4).clamp(Duration::from_millis(100), Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let horizon = keel_broker_core::clock::now_ms() - expiration.as_millis() as i64;
        let mut leadership = partitions.leadership();
        let expired: usize = leadership.partitions.values_mut().map(|state| state.producers.expire(horizon)).sum();
        drop(leadership);
        if expired > 0 {
            cluster.metrics.producers_expired.inc_by(expired as u64);
            tracing::debug!(expired, "forgot idle producers");
        }
    }
}

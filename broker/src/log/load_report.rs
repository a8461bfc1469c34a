//! Load reports for the balancer (DESIGN §5): every few seconds the broker
//! tells the controller the bytes/s produced to and fetched from each
//! partition it leads. Reports are not Raft commands; the controller leader
//! keeps the latest ones in memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_controller_client::{pb, StreamId};
use tokio_util::sync::CancellationToken;

use super::Partitions;

/// How often loads are reported (the controller's balancer looks every 5 s).
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// Bytes in and out per partition since the last report.
#[derive(Debug, Default)]
pub struct Traffic(std::sync::Mutex<HashMap<StreamId, (u64, u64)>>);

impl Traffic {
    pub fn count(&self, stream: StreamId, bytes_in: u64, bytes_out: u64) {
        let mut traffic = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = traffic.entry(stream).or_default();
        entry.0 += bytes_in;
        entry.1 += bytes_out;
    }

    fn take(&self) -> HashMap<StreamId, (u64, u64)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

pub async fn run(partitions: Arc<Partitions>, cancel: CancellationToken) {
    let cluster = &partitions.cluster;
    let mut since = Instant::now();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(REPORT_EVERY) => {}
        }
        let traffic = partitions.traffic.take();
        let seconds = since.elapsed().as_secs_f64().max(0.001);
        since = Instant::now();
        let Some(epoch) = cluster.live_epoch() else { continue };
        let me = cluster.config.node_id;
        let image = cluster.image();
        let partitions = image
            .led_by(me)
            .map(|(_, _, partition)| {
                let (bytes_in, bytes_out) = traffic.get(&partition.stream_id).copied().unwrap_or_default();
                pb::PartitionLoad {
                    stream: partition.stream_id.0,
                    bytes_in_per_sec: bytes_in as f64 / seconds,
                    bytes_out_per_sec: bytes_out as f64 / seconds,
                }
            })
            .collect();
        let request = pb::ReportLoadRequest { broker: me.0, broker_epoch: epoch.0, partitions };
        if let Err(error) = cluster.client.report_load(request).await {
            tracing::debug!("load report not delivered: {error}");
        }
    }
}

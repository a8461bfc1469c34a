//! Consumer lag as the coordinator sees it: every `LAG_INTERVAL`,
//! `keel_broker_group_lag{group,topic,partition}` is set for each committed
//! offset of the groups coordinated here, as the partition's end (asked of
//! its leader) minus the committed offset. Series of groups no longer
//! coordinated here disappear.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Groups;

/// How often the lag of the groups this broker coordinates is measured.
const LAG_INTERVAL: Duration = Duration::from_secs(10);

pub async fn run(groups: Arc<Groups>, cancel: CancellationToken) {
    let metrics = &groups.runtime.cluster().metrics;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(LAG_INTERVAL) => {}
        }
        let committed: Vec<(String, String, i32, i64)> = {
            let shards = groups.runtime.shards();
            shards
                .values()
                .filter(|shard| shard.loaded)
                .flat_map(|shard| {
                    shard.state.groups.iter().flat_map(|(id, group)| {
                        group
                            .offsets
                            .iter()
                            .map(move |((topic, p), value)| (id.clone(), topic.clone(), *p, value.offset))
                    })
                })
                .collect()
        };
        let mut partitions: Vec<(String, i32)> = committed.iter().map(|(_, t, p, _)| (t.clone(), *p)).collect();
        partitions.sort();
        partitions.dedup();
        let ends =
            crate::coordinator::peers::end_offsets(groups.runtime.partitions(), groups.peers.as_ref(), &partitions)
                .await;
        metrics.group_lag.reset();
        for (group, topic, partition, offset) in committed {
            if let Some(end) = ends.get(&(topic.clone(), partition)) {
                let lag = (end.0 - offset).max(0);
                metrics.group_lag.with_label_values(&[&group, &topic, &partition.to_string()]).set(lag);
            }
        }
    }
}

//! Snapshots keep the Raft log bounded, and a controller that lost its disk
//! catches up from a snapshot rather than from a log that no longer exists.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use keel_controller_client::{pb, Version, WatchItem};
use keel_tests::{eventually, TestCluster, PEER_UNREACHABLE};
use tracing::info;

const SNAPSHOT_EVERY: u64 = 500;
const LOGS_KEPT: u64 = 100;
const WRITERS: u64 = 32;
/// At least 10 000 commands, split evenly over the writers.
const COMMANDS: u64 = 10_000_u64.div_ceil(WRITERS) * WRITERS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_stays_bounded_and_a_wiped_follower_catches_up_by_snapshot() {
    let args = ["--snapshot-every", "500", "--logs-kept-after-snapshot", "100"];
    let mut test = TestCluster::start(3, &args).await.unwrap();
    let client = Arc::new(test.cluster.client().unwrap());
    client
        .create_topic(pb::CreateTopicRequest { name: "t".into(), partitions: 1, ..Default::default() })
        .await
        .unwrap();

    info!(COMMANDS, "commit many commands from concurrent writers");
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..WRITERS {
        let client = client.clone();
        writers.spawn(async move {
            for i in 0..COMMANDS / WRITERS {
                let value = (writer * 1_000_000 + i).to_string();
                let request = pb::AlterConfigsRequest {
                    name: "t".into(),
                    set: HashMap::from([("retention.ms".to_owned(), value)]),
                    delete: vec![],
                };
                client.alter_configs(request).await.unwrap();
            }
        });
    }
    while let Some(written) = writers.join_next().await {
        written.unwrap();
    }

    info!("every controller holds a bounded log behind a recent snapshot");
    let bound = SNAPSHOT_EVERY + LOGS_KEPT + 2 * WRITERS;
    eventually(Duration::from_secs(20), "every log is bounded", || async {
        let statuses = test.cluster.node_statuses().await;
        statuses
            .iter()
            .all(|s| s.as_ref().is_some_and(|s| s.snapshot_index.is_some() && s.log_entry_count <= bound))
            .then_some(())
    })
    .await;

    info!("a watcher older than the purged log gets a fresh image first");
    let mut stream = Box::pin(keel_tests::watch_changes(&client, Version(1)).await.unwrap());
    let Some(Ok(WatchItem::Image(image))) = stream.next().await else { panic!("expected an image") };
    assert!(image.version.0 > COMMANDS, "image at {} after {COMMANDS} commands", image.version);
    drop(stream);

    info!("wipe a follower; it rejoins as a learner and installs a snapshot");
    let leader = test.cluster.wait_for_leader(Duration::from_secs(5)).await.unwrap();
    let wiped = test.others(leader)[0];
    test.cluster.controllers[wiped].kill9();
    test.cluster.wipe_controller(wiped).unwrap();
    test.cluster.start_controller(wiped).unwrap();
    let truth = client.read_image().await.unwrap();
    let direct = test.cluster.client_of(wiped).unwrap();
    let status = eventually(Duration::from_secs(30), "the wiped controller has caught up", || async {
        let status = test.status_of(wiped).await?;
        (status.last_applied_index? >= truth.version.0).then_some(status)
    })
    .await;
    let snapshot_index = status.snapshot_index.expect("caught up through a snapshot");
    assert!(snapshot_index > LOGS_KEPT, "installed snapshot at {snapshot_index}");

    info!("its own watch stream (served locally) shows the same image");
    let mut stream = Box::pin(keel_tests::watch_changes(&direct, Version(0)).await.unwrap());
    let Some(Ok(WatchItem::Image(local))) = stream.next().await else { panic!("expected an image") };
    assert_eq!(local.topics, truth.topics);

    test.assert_clean_logs(PEER_UNREACHABLE);
}

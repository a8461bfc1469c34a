//! The controller quorum survives losing its leader and a full restart, and
//! watchers that reconnect get exactly what they missed.

use std::time::Duration;

use futures::StreamExt;
use keel_controller_client::{pb, Command, Version, WatchItem};
use keel_tests::{eventually, TestCluster, PEER_UNREACHABLE};
use tracing::info;

fn topic(name: String) -> pb::CreateTopicRequest {
    pb::CreateTopicRequest { name, partitions: 3, ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_survive_leader_kill_and_full_restart() {
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    let leader = test.cluster.wait_for_leader(Duration::from_secs(10)).await.unwrap();
    let follower = test.others(leader)[0];

    info!("create 100 topics through a follower, which forwards to the leader");
    let through_follower = test.cluster.client_of(follower).unwrap();
    for i in 0..100 {
        through_follower.create_topic(topic(format!("topic-{i:03}"))).await.unwrap();
    }

    info!("kill -9 the leader; a new one is elected and takes writes");
    let old_term = test.cluster.node_statuses().await[leader].as_ref().unwrap().term;
    test.cluster.controllers[leader].kill9();
    let new_leader = test.cluster.wait_for_leader(Duration::from_secs(10)).await.unwrap();
    assert_ne!(new_leader, leader);
    let new_term = test.cluster.node_statuses().await[new_leader].as_ref().unwrap().term;
    assert!(new_term > old_term, "term {new_term} after {old_term}");
    let client = test.cluster.client().unwrap();
    client.create_topic(topic("after-failover".into())).await.unwrap();
    let image = client.read_image().await.unwrap();
    assert_eq!(image.topics.len(), 101);
    assert!((0..100).all(|i| image.topics.contains_key(&format!("topic-{i:03}"))));

    info!("restart all three from their data directories; the state is intact");
    test.cluster.kill_all();
    test.cluster.start_all().unwrap();
    test.cluster.wait_for_leader(Duration::from_secs(30)).await.unwrap();
    let client = test.cluster.client().unwrap();
    let restarted = client.read_image().await.unwrap();
    assert_eq!(restarted.topics, image.topics);
    assert!(restarted.version >= image.version);
    client.create_topic(topic("after-restart".into())).await.unwrap();

    test.assert_clean_logs(PEER_UNREACHABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_watcher_receives_exactly_the_missed_deltas() {
    let test = TestCluster::start(3, &[]).await.unwrap();
    let client = test.cluster.client().unwrap();
    client.create_topic(topic("first".into())).await.unwrap();

    info!("a new watcher gets the image first, then each change");
    let mut stream = Box::pin(keel_tests::watch_changes(&client, Version(0)).await.unwrap());
    let Some(Ok(WatchItem::Image(mut image))) = stream.next().await else { panic!("watch must start with an image") };
    // Any controller serves a watch: a follower that has not applied
    // "first" yet sends it as the next delta.
    while !image.topics.contains_key("first") {
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
            Ok(Some(Ok(WatchItem::Delta(version, command)))) => {
                image.apply(version, &command).unwrap();
            }
            other => panic!("\"first\" must reach the watcher: {other:?}"),
        }
    }
    for name in ["a", "b", "c"] {
        client.create_topic(topic(name.into())).await.unwrap();
    }
    let mut names = Vec::new();
    while names.len() < 3 {
        match stream.next().await {
            Some(Ok(WatchItem::Delta(version, command))) => {
                if let Command::CreateTopic { name, .. } = &command {
                    names.push(name.clone());
                }
                image.apply(version, &command).unwrap();
            }
            other => panic!("expected deltas, got {other:?}"),
        }
    }
    assert_eq!(names, ["a", "b", "c"]);
    drop(stream);

    info!("changes made while disconnected arrive as exactly those deltas, in order");
    let last_seen = image.version;
    for name in ["d", "e", "f", "g", "h"] {
        client.create_topic(topic(name.into())).await.unwrap();
    }
    let mut stream = Box::pin(keel_tests::watch_changes(&client, last_seen).await.unwrap());
    let mut missed = Vec::new();
    while missed.len() < 5 {
        match stream.next().await {
            Some(Ok(WatchItem::Delta(version, command))) => {
                assert!(version > image.version, "delta {version} not after {}", image.version);
                if let Command::CreateTopic { name, .. } = &command {
                    missed.push(name.clone());
                }
                image.apply(version, &command).unwrap();
            }
            other => panic!("expected only deltas after reconnecting, got {other:?}"),
        }
    }
    assert_eq!(missed, ["d", "e", "f", "g", "h"]);
    let extra = tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
    assert!(extra.is_err(), "no more events expected, got {extra:?}");

    info!("the watcher's own image equals the controller's");
    let truth = client.read_image().await.unwrap();
    assert_eq!(image, truth);

    info!("a watcher ahead of a lagging controller never moves backwards");
    let ahead = eventually(Duration::from_secs(5), "a delta arrives", || {
        let client = &client;
        async move {
            let mut stream = Box::pin(keel_tests::watch_changes(client, truth.version).await.ok()?);
            client.create_topic(topic(format!("late-{}", truth.version))).await.ok()?;
            match tokio::time::timeout(Duration::from_secs(2), stream.next()).await.ok()? {
                Some(Ok(item)) => Some(item),
                _ => None,
            }
        }
    })
    .await;
    assert!(matches!(ahead, WatchItem::Delta(version, _) if version > truth.version), "{ahead:?}");

    test.assert_clean_logs(PEER_UNREACHABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_controller_quorum_survives_losing_two() {
    let mut test = TestCluster::start(5, &[]).await.unwrap();
    let client = test.cluster.client().unwrap();
    client.create_topic(topic("five".into())).await.unwrap();

    info!("kill -9 the leader and one follower: three of five still elect and commit");
    let leader = test.cluster.wait_for_leader(Duration::from_secs(10)).await.unwrap();
    let follower = test.others(leader)[0];
    test.cluster.controllers[leader].kill9();
    test.cluster.controllers[follower].kill9();
    test.cluster.wait_for_leader(Duration::from_secs(15)).await.unwrap();
    client.create_topic(topic("after-two-losses".into())).await.unwrap();
    let image = client.read_image().await.unwrap();
    assert!(image.topics.contains_key("five") && image.topics.contains_key("after-two-losses"));

    test.assert_clean_logs(PEER_UNREACHABLE);
}

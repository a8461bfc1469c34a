//! A controller whose disk was wiped never votes under its old identity: it
//! rejoins as a learner and votes only after an operator promotes it.

use std::time::Duration;

use keel_controller_client::pb;
use keel_tests::launcher::ControllerSpec;
use keel_tests::{eventually, TestCluster, PEER_UNREACHABLE};
use tracing::info;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_controller_rejoins_as_a_learner_and_votes_only_after_promotion() {
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    let client = test.cluster.client().unwrap();
    client
        .create_topic(pb::CreateTopicRequest { name: "before".into(), partitions: 1, ..Default::default() })
        .await
        .unwrap();
    let leader = test.cluster.wait_for_leader(Duration::from_secs(5)).await.unwrap();
    let [wiped, other] = test.others(leader)[..] else { panic!("three controllers") };

    info!("wipe a follower's disk and restart it: it joins as a learner");
    test.cluster.controllers[wiped].kill9();
    test.cluster.wipe_controller(wiped).unwrap();
    test.cluster.start_controller(wiped).unwrap();
    eventually(Duration::from_secs(20), "the wiped controller is a caught-up learner", || async {
        let status = test.status_of(wiped).await?;
        (status.role == "learner" && status.last_applied_index.is_some()).then_some(())
    })
    .await;

    info!("with the leader gone, one voter and the learner cannot elect anyone");
    test.cluster.controllers[leader].kill9();
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let statuses = test.cluster.node_statuses().await;
        assert!(
            statuses.iter().flatten().all(|s| s.role != "leader"),
            "a leader was elected without a voter majority: {statuses:?}"
        );
        let learner_role = statuses[wiped].as_ref().map(|s| s.role.clone());
        assert_eq!(learner_role.as_deref(), Some("learner"));
    }

    info!("the old voter returns; the operator promotes the learner");
    test.cluster.start_controller(leader).unwrap();
    test.cluster.wait_for_leader(Duration::from_secs(15)).await.unwrap();
    let controller_id = test.cluster.controllers[wiped].spec.id;
    let request = pb::ControllerRequest { controller_id };
    let reply = client.call(|mut c| async move { c.promote_controller(request).await }).await.unwrap();
    let voters: Vec<u32> = reply.controllers.iter().filter(|c| c.voter).map(|c| c.controller_id).collect();
    assert_eq!(voters.len(), 3, "{reply:?}");
    assert_eq!(
        reply.controllers.iter().filter(|c| c.controller_id == controller_id).count(),
        1,
        "the old incarnation is gone"
    );

    info!("now the promoted controller votes: it and one other elect a leader");
    let leader = test.cluster.wait_for_leader(Duration::from_secs(10)).await.unwrap();
    let to_kill = if leader == wiped { other } else { leader };
    test.cluster.controllers[to_kill].kill9();
    test.cluster.wait_for_leader(Duration::from_secs(15)).await.unwrap();
    let image = client.read_image().await.unwrap();
    assert!(image.topics.contains_key("before"));
    client
        .create_topic(pb::CreateTopicRequest { name: "after".into(), partitions: 1, ..Default::default() })
        .await
        .unwrap();

    // A write that reaches a controller while the killed leader's successor is
    // not known yet is refused (NoLeader) and retried; openraft logs it at ERROR.
    test.assert_clean_logs(&[PEER_UNREACHABLE, &["has to forward request to: None"]].concat());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_controller_is_added_as_learner_promoted_and_removed() {
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    let client = test.cluster.client().unwrap();

    info!("a fourth controller with an empty directory joins as a learner");
    let spec = ControllerSpec {
        id: 4,
        grpc: test.cluster.free_addr().unwrap(),
        admin: test.cluster.free_addr().unwrap(),
        data_dir: test.cluster.dir.join("controller-4"),
    };
    let fourth = test.cluster.add_controller(spec);
    test.cluster.start_controller(fourth).unwrap();
    eventually(Duration::from_secs(20), "controller 4 is a learner", || async {
        let status = test.status_of(fourth).await?;
        (status.role == "learner" && status.leader_controller_id.is_some()).then_some(())
    })
    .await;

    info!("promoted, it is the fourth voter; with one voter down, three of four still commit");
    let request = pb::ControllerRequest { controller_id: 4 };
    let reply = client.call(|mut c| async move { c.promote_controller(request).await }).await.unwrap();
    assert_eq!(reply.controllers.iter().filter(|c| c.voter).count(), 4, "{reply:?}");
    let leader = test.cluster.wait_for_leader(Duration::from_secs(10)).await.unwrap();
    let victim = (0..3).find(|index| *index != leader).unwrap();
    test.cluster.controllers[victim].kill9();
    client
        .create_topic(pb::CreateTopicRequest { name: "with-four".into(), partitions: 1, ..Default::default() })
        .await
        .unwrap();
    test.cluster.start_controller(victim).unwrap();

    info!("removed again, the quorum is back to the original three");
    let request = pb::ControllerRequest { controller_id: 4 };
    let reply = client.call(|mut c| async move { c.remove_controller(request).await }).await.unwrap();
    let ids: Vec<u32> = reply.controllers.iter().map(|c| c.controller_id).collect();
    assert_eq!(ids.len(), 3, "{reply:?}");
    assert!(!ids.contains(&4), "{reply:?}");
    let request = pb::ControllerRequest { controller_id: 4 };
    let again = client.call(|mut c| async move { c.remove_controller(request).await }).await;
    assert!(
        matches!(
            again,
            Err(keel_controller_client::ClientError::Meta(keel_controller_client::MetaError::UnknownController { .. }))
        ),
        "{again:?}"
    );

    test.assert_clean_logs(PEER_UNREACHABLE);
}

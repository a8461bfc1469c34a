//! Every controller serves /health, /ready and Prometheus /metrics on its admin
//! port, and stops cleanly (exit status 0) on SIGTERM.

use std::time::Duration;

use keel_controller_client::pb;
use keel_tests::{http_get, TestCluster};
use tracing::info;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_answer_and_sigterm_stops_cleanly() {
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    let client = test.cluster.client().unwrap();
    client
        .create_topic(pb::CreateTopicRequest { name: "m".into(), partitions: 1, ..Default::default() })
        .await
        .unwrap();
    let leader = test.cluster.wait_for_leader(Duration::from_secs(5)).await.unwrap();

    info!("health, readiness and metrics on every controller");
    for (index, controller) in test.cluster.controllers.iter().enumerate() {
        let admin = controller.spec.admin;
        assert_eq!(http_get(admin, "/health").await.unwrap().0, 200);
        assert_eq!(http_get(admin, "/ready").await.unwrap().0, 200);
        let (status, metrics) = http_get(admin, "/metrics").await.unwrap();
        assert_eq!(status, 200);
        let is_leader = if index == leader { "keel_controller_is_leader 1" } else { "keel_controller_is_leader 0" };
        assert!(metrics.contains(is_leader), "controller {index}: {metrics}");
        assert!(metrics.contains("keel_controller_applied_index"), "{metrics}");
        if index == leader {
            assert!(metrics.contains("keel_controller_commit_latency_seconds_count"), "{metrics}");
        }
    }
    assert_eq!(http_get(test.cluster.controllers[0].spec.admin, "/nope").await.unwrap().0, 404);

    info!("SIGTERM: each controller exits by itself with status 0");
    for controller in &mut test.cluster.controllers {
        let status = controller.terminate(Duration::from_secs(10)).expect("it must exit before being killed");
        assert!(status.success(), "controller c{} exited with {status}", controller.spec.id);
    }
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

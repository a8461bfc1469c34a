//! The Grafana dashboard (`deploy/grafana/keel.json`) and `/metrics`:
//! every metric the dashboard asks for is one the binaries define, and
//! after a short produce and fetch the main ones move the right way on a
//! running cluster (issue 10).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use keel_tests::{eventually, metric_sum, TestCluster};
use keel_tools::kafka::{self, Connection};

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `keel_*` metric name in the dashboard's queries, without the
/// histogram suffixes.
fn dashboard_metrics() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repository().join("deploy/grafana/keel.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut names = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            for (start, _) in expr.match_indices("keel_") {
                let name: String = expr[start..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(&name);
                names.insert(base.to_owned());
            }
        }
    }
    names
}

#[test]
fn the_dashboard_asks_only_for_metrics_the_binaries_define() {
    let mut defined = String::new();
    for dir in ["broker/src", "controller/src", "wal/src"] {
        for entry in walk(&repository().join(dir)) {
            defined.push_str(&std::fs::read_to_string(entry).unwrap());
        }
    }
    let asked = dashboard_metrics();
    assert!(asked.len() >= 30, "the dashboard covers producer, consumer, broker, WAL, S3 and controller: {asked:?}");
    for name in &asked {
        assert!(defined.contains(&format!("\"{name}\"")), "the dashboard asks for {name}, which no binary defines");
    }
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_move_the_right_way_after_a_short_produce_and_fetch() {
    let test = TestCluster::start_full().await.unwrap();
    let bootstrap = test.cluster.bootstrap();
    let create =
        keel_controller_client::pb::CreateTopicRequest { name: "metered".into(), partitions: 1, ..Default::default() };
    test.cluster.client().unwrap().create_topic(create).await.unwrap();
    let layout = kafka::ready_layout(&bootstrap, "metered", Duration::from_secs(60)).await.unwrap();
    let leader = Connection::connect(&layout.brokers[&layout.leaders[0]]).await.unwrap();
    let values: Vec<Bytes> = (0..50).map(|i| Bytes::from(format!("m-{i}"))).collect();
    let batch = kafka::batch(&values, 1_000, None).unwrap();
    let produced = leader.send(kafka::PRODUCE_VERSION, &kafka::produce_request("metered", 0, -1, batch)).await.unwrap();
    assert_eq!(kafka::produce_result(&produced).unwrap().0, 0);
    let fetched =
        leader.send(kafka::FETCH_VERSION, &kafka::fetch_request("metered", 0, 0, 100, 1 << 20)).await.unwrap();
    assert!(!kafka::fetch_result(&fetched).unwrap().2.is_empty(), "the records come back");

    let brokers: Vec<_> = test.cluster.brokers.iter().map(|b| b.spec.admin).collect();
    let wal_nodes: Vec<_> = test.cluster.wal_nodes.iter().map(|n| n.spec.admin).collect();
    let controllers: Vec<_> = test.cluster.controllers.iter().map(|c| c.spec.admin).collect();
    assert!(metric_sum(&brokers, "keel_broker_requests_total{api=\"Produce\",").await >= 1.0);
    assert!(metric_sum(&brokers, "keel_broker_bytes_in_total{topic=\"metered\"}").await > 0.0, "bytes in");
    assert!(metric_sum(&brokers, "keel_broker_bytes_out_total{topic=\"metered\"}").await > 0.0, "bytes out");
    assert!(metric_sum(&brokers, "keel_broker_wal_ack_seconds_count").await >= 1.0, "a WAL ack was timed");
    assert!(metric_sum(&brokers, "keel_broker_partitions_led").await >= 1.0, "the partition is led");
    assert!(metric_sum(&wal_nodes, "keel_wal_sync_seconds_count").await >= 2.0, "the WAL nodes fsynced");
    assert!(metric_sum(&controllers, "keel_controller_is_leader").await == 1.0, "one controller leads");
    assert!(metric_sum(&controllers, "keel_controller_term").await >= 3.0, "each controller knows the term");
    eventually(Duration::from_secs(30), "the upload shows in the S3 and index metrics", || async {
        let puts = metric_sum(&brokers, "keel_broker_object_requests_total{operation=\"put\",outcome=\"ok\"}").await;
        let indexed = metric_sum(&controllers, "keel_controller_objects").await;
        (puts >= 1.0 && indexed >= 1.0).then_some(())
    })
    .await;
    assert_eq!(
        metric_sum(&brokers, "keel_broker_wal_log_under_replicated").await,
        0.0,
        "every log has its three members"
    );
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

//! Bad requests get typed errors and change nothing; a controller refuses a
//! data directory that is not its own.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use keel_controller_client::{pb, ClientError, Epoch, MetaError, NodeId, NodeKind};
use keel_tests::{launcher, TestCluster, PEER_UNREACHABLE};
use tracing::info;

fn create(name: &str, partitions: i32, configs: &[(&str, &str)]) -> pb::CreateTopicRequest {
    pb::CreateTopicRequest {
        name: name.into(),
        partitions,
        configs: configs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    }
}

fn meta_error<T: std::fmt::Debug>(result: Result<T, ClientError>) -> MetaError {
    match result {
        Err(ClientError::Meta(error)) => error,
        other => panic!("expected a typed refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_typed_errors_and_change_nothing() {
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    let client = test.cluster.client().unwrap();
    client.create_topic(create("orders", 3, &[])).await.unwrap();
    client.create_topic(create("orders.eu", 3, &[])).await.unwrap();
    let before = client.read_image().await.unwrap();

    info!("topic requests that break Kafka's rules (orders_eu collides with orders.eu)");
    let long = "x".repeat(250);
    type Expected = fn(&MetaError) -> bool;
    let cases: Vec<(pb::CreateTopicRequest, Expected)> = vec![
        (create("orders", 1, &[]), |e| matches!(e, MetaError::TopicAlreadyExists { .. })),
        (create("orders_eu", 1, &[]), |e| matches!(e, MetaError::InvalidTopicName { .. })),
        (create("bad name", 1, &[]), |e| matches!(e, MetaError::InvalidTopicName { .. })),
        (create(".", 1, &[]), |e| matches!(e, MetaError::InvalidTopicName { .. })),
        (create("..", 1, &[]), |e| matches!(e, MetaError::InvalidTopicName { .. })),
        (create(&long, 1, &[]), |e| matches!(e, MetaError::InvalidTopicName { .. })),
        (create("zero", 0, &[]), |e| matches!(e, MetaError::InvalidPartitions { .. })),
        (create("negative", -4, &[]), |e| matches!(e, MetaError::InvalidPartitions { .. })),
        (create("unknown-config", 1, &[("retention.hours", "1")]), |e| matches!(e, MetaError::UnknownConfig { .. })),
        (create("bad-config", 1, &[("retention.ms", "-5")]), |e| matches!(e, MetaError::InvalidConfig { .. })),
    ];
    for (request, expected) in cases {
        let name = request.name.clone();
        let error = meta_error(client.create_topic(request).await);
        assert!(expected(&error), "{name:?}: unexpected error {error:?}");
    }
    let error = meta_error(client.create_partitions("orders", 2).await);
    assert!(matches!(error, MetaError::InvalidPartitions { .. }), "{error:?}");
    let error = meta_error(client.delete_topic("missing").await);
    assert!(matches!(error, MetaError::UnknownTopic { .. }), "{error:?}");
    let alter = pb::AlterConfigsRequest {
        name: "orders".into(),
        set: HashMap::from([("retention.ms".into(), "1000".into()), ("nope".into(), "1".into())]),
        delete: vec![],
    };
    let error = meta_error(client.alter_configs(alter).await);
    assert!(matches!(error, MetaError::UnknownConfig { .. }), "{error:?}");

    info!("heartbeats from unregistered or stale nodes");
    let heartbeat = |node_id, epoch| pb::HeartbeatRequest { kind: pb::NodeKind::Broker as i32, node_id, epoch };
    let error = meta_error(client.call(|mut c| async move { c.heartbeat(heartbeat(99, 1)).await }).await);
    assert_eq!(error, MetaError::UnknownNode { kind: NodeKind::Broker, node: NodeId(99) });
    let register = pb::RegisterNodeRequest {
        kind: pb::NodeKind::Broker as i32,
        node_id: 7,
        zone: "a".into(),
        internal_addr: "127.0.0.1:1".into(),
        kafka_listeners: vec![],
        incarnation: "x".into(),
    };
    let registered = client
        .call(|mut c| {
            let r = register.clone();
            async move { c.register_node(r).await }
        })
        .await
        .unwrap();
    let stale = registered.epoch - 1;
    let error = meta_error(client.call(|mut c| async move { c.heartbeat(heartbeat(7, stale)).await }).await);
    assert!(matches!(error, MetaError::StaleEpoch { epoch: Epoch(e), .. } if e == stale), "{error:?}");
    let error = meta_error(client.call(|mut c| async move { c.heartbeat(heartbeat(1, 0)).await }).await);
    assert!(matches!(error, MetaError::UnknownNode { .. }), "{error:?}");

    info!("nothing changed but the registration (which may have given partitions a leader)");
    let after = client.read_image().await.unwrap();
    let shape = |image: &keel_controller_client::Image| {
        image
            .topics
            .values()
            .map(|t| {
                (t.name.clone(), t.id, t.configs.clone(), t.partitions.iter().map(|p| p.stream_id).collect::<Vec<_>>())
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(shape(&after), shape(&before));

    info!("a controller started on another controller's data directory refuses to start");
    test.cluster.kill_all();
    let spec_1 = test.cluster.controllers[0].spec.clone();
    let spec_2 = test.cluster.controllers[1].spec.clone();
    let binary = launcher::find_binary("keel-controller").unwrap();
    let peers = test.cluster.peers();
    let run = |spec: &launcher::ControllerSpec, cluster_id: &str| {
        tokio::process::Command::new(&binary)
            .args(["--node-id", &spec.id.to_string(), "--cluster-id", cluster_id])
            .args(["--listen", &spec.grpc.to_string(), "--admin-listen", &spec.admin.to_string()])
            .arg("--data-dir")
            .arg(&spec_2.data_dir)
            .args(["--peers", &peers])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
    };
    info!("controller 1 on controller 2's directory, then controller 2 under another cluster id");
    let wrong_id = tokio::time::timeout(Duration::from_secs(30), run(&spec_1, "test")).await.unwrap().unwrap();
    let wrong_cluster = tokio::time::timeout(Duration::from_secs(30), run(&spec_2, "other")).await.unwrap().unwrap();
    let output = (wrong_id, wrong_cluster);
    for (result, needle) in [(&output.0, "belongs to controller 2"), (&output.1, "of cluster \"test\"")] {
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success(), "it must refuse to start: {stderr}");
        assert!(stderr.contains(needle) && stderr.contains("refusing to start"), "{stderr}");
    }
    test.assert_clean_logs(PEER_UNREACHABLE);
}

//! Internal gRPC carries the cluster token (issue 10): every process of a
//! test cluster has one, and a call to a controller or a WAL node without
//! it, or with another, is refused as UNAUTHENTICATED and changes nothing;
//! keelctl with a wrong token fails with a message that says so.

use keel_proto::controller as controller_pb;
use keel_proto::wal as wal_pb;
use keel_tests::TestCluster;
use tonic::metadata::MetadataValue;

#[tokio::test(flavor = "multi_thread")]
async fn calls_without_the_cluster_token_are_refused() {
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    test.start_wal_nodes(3).await.unwrap();
    assert!(keel_proto::auth::token_text().is_some(), "the test cluster has a token");

    let controller = format!("http://{}", test.cluster.controllers[0].spec.grpc);
    let channel = tonic::transport::Endpoint::from_shared(controller).unwrap().connect().await.unwrap();
    let mut metadata = controller_pb::metadata_client::MetadataClient::new(channel.clone());
    let create = controller_pb::CreateTopicRequest { name: "intruder".into(), partitions: 1, ..Default::default() };
    let refused = metadata.create_topic(create.clone()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("cluster token"), "the refusal says why: {refused:?}");
    let mut wrong = tonic::Request::new(create);
    wrong.metadata_mut().insert("authorization", MetadataValue::from_static("Bearer not-the-cluster-token"));
    assert_eq!(metadata.create_topic(wrong).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    let mut raft = controller_pb::raft_client::RaftClient::new(channel);
    let vote = controller_pb::RaftRequest { target_raft_id: 1, payload: b"{}".to_vec() };
    assert_eq!(raft.vote(vote).await.unwrap_err().code(), tonic::Code::Unauthenticated, "Raft too");

    let wal = format!("http://{}", test.cluster.wal_nodes[0].spec.grpc);
    let channel = tonic::transport::Endpoint::from_shared(wal).unwrap().connect().await.unwrap();
    let mut wal = wal_pb::wal_client::WalClient::new(channel);
    let fence = wal_pb::FenceRequest { log: 1, epoch: 99 };
    assert_eq!(wal.fence(fence).await.unwrap_err().code(), tonic::Code::Unauthenticated, "no fencing without it");
    let status = keel_tests::wal_client(test.cluster.wal_nodes[0].spec.grpc).await.unwrap();
    status.clone().status(wal_pb::StatusRequest {}).await.expect("with the token, the same node answers");

    let image = test.cluster.client().unwrap().read_image().await.unwrap();
    assert!(!image.topics.contains_key("intruder"), "the refused calls changed nothing");
    let output = keel_tests::keelctl(&test)
        .env("KEEL_CLUSTER_TOKEN", "a-wrong-token-of-some-length")
        .args(["topic", "list"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "keelctl with a wrong token fails");
    assert!(stderr.contains("cluster token"), "and says why: {stderr}");
    let output = keel_tests::keelctl(&test).args(["topic", "list"]).output().await.unwrap();
    assert!(output.status.success(), "with the right token it works: {}", String::from_utf8_lossy(&output.stderr));
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

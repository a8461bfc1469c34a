//! `keelctl` itself, without a cluster: shell completions cover every verb.

#[tokio::test]
async fn completions_cover_every_verb_for_each_shell() {
    let keelctl = keel_tools::launcher::find_binary("keelctl").unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let output = tokio::process::Command::new(&keelctl).args(["completions", shell]).output().await.unwrap();
        assert!(output.status.success(), "keelctl completions {shell}: {}", String::from_utf8_lossy(&output.stderr));
        let script = String::from_utf8_lossy(&output.stdout);
        for verb in ["cluster", "broker", "topic", "group", "controller", "reset-offsets", "drain"] {
            assert!(script.contains(verb), "the {shell} completions know `{verb}`");
        }
    }
    let output = tokio::process::Command::new(&keelctl).args(["completions", "tcsh"]).output().await.unwrap();
    assert!(!output.status.success(), "an unknown shell is refused");
    assert!(String::from_utf8_lossy(&output.stderr).contains("possible values"), "and the valid ones listed");
}

/// `keelctl wal status --json`: each WAL node with its zone, reachable under
/// the incarnation the controller recorded.
#[tokio::test(flavor = "multi_thread")]
async fn wal_status_shows_every_node_reachable_under_its_incarnation() {
    let mut test = keel_tests::TestCluster::start(3, &[]).await.unwrap();
    test.start_wal_nodes(3).await.unwrap();
    let output = keel_tests::keelctl(&test).args(["wal", "status", "--json"]).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let nodes: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let nodes = nodes.as_array().expect("an array of nodes");
    let zones: Vec<&str> = nodes.iter().map(|n| n["zone"].as_str().unwrap()).collect();
    assert_eq!(zones, ["a", "b", "c"]);
    for node in nodes {
        assert_eq!(node["reachable"], true, "{node}");
        assert_eq!(node["same_incarnation"], true, "{node}");
        assert!(node["disk_bytes"].as_u64().is_some_and(|b| b > 0), "the journal takes room: {node}");
    }
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

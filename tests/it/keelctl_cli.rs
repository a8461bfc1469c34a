//! `keelctl` itself, without a cluster: shell completions cover every verb,
//! and `keelctl config` checks files; and its read commands against one.

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

/// `keelctl config check` reads a file as its binary would: every example
/// config of deploy/ passes with its effective config printed (secrets
/// hidden); a misspelt key fails with the file, line and closest valid key.
#[tokio::test]
async fn config_check_accepts_the_examples_and_points_at_a_misspelt_key() {
    let keelctl = keel_tools::launcher::find_binary("keelctl").unwrap();
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config");
    let files = [
        ("controller", "controller-a.toml", "peers"),
        ("wal", "wal-b.toml", "zone"),
        ("broker", "broker-c.toml", "zone"),
    ];
    for (kind, file, key) in files {
        let output = tokio::process::Command::new(&keelctl)
            .args(["config", "check", kind])
            .arg(deploy.join(file))
            .env_remove("KEEL_CLUSTER_TOKEN")
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{file}: {stdout}{}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.contains(key), "{file}: the effective config is printed: {stdout}");
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broker.toml");
    let example = std::fs::read_to_string(deploy.join("broker-a.toml")).unwrap();
    std::fs::write(&bad, example.replace("upload_interval", "upload_intervall")).unwrap();
    let output =
        tokio::process::Command::new(&keelctl).args(["config", "check", "broker"]).arg(&bad).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("upload_intervall") && stderr.contains("upload_interval"),
        "names the key and the closest one: {stderr}"
    );
    assert!(stderr.contains("broker.toml"), "names the file: {stderr}");

    let output = tokio::process::Command::new(&keelctl).args(["config", "default", "wal"]).output().await.unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("segment_bytes"), "the WAL example is printed");
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

/// The read commands' `--json` output has the documented shape: the keys
/// scripts rely on, with their types, on a running 3-zone cluster.
#[tokio::test(flavor = "multi_thread")]
async fn read_commands_print_their_documented_json_shapes() {
    let test = keel_tests::TestCluster::start_full().await.unwrap();
    let run = |args: &'static [&'static str]| {
        let mut command = keel_tests::keelctl(&test);
        command.args(args);
        async move {
            let output = command.output().await.unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            assert!(output.status.success(), "keelctl {args:?}: {stdout}{}", String::from_utf8_lossy(&output.stderr));
            stdout
        }
    };
    run(&["topic", "create", "shapes", "-p", "3", "--owner", "checkout"]).await;
    let json = |text: String| -> serde_json::Value { serde_json::from_str(&text).expect("JSON") };

    let status = json(run(&["cluster", "status", "--json"]).await);
    assert!(status["cluster_id"].is_string() && status["term"].as_u64() >= Some(1), "{status}");
    assert!(status["leader_controller_id"].is_u64() && status["metadata_version"].is_u64(), "{status}");
    assert_eq!(status["controllers"].as_array().map(Vec::len), Some(3), "{status}");
    for controller in status["controllers"].as_array().unwrap() {
        assert!(controller["controller_id"].is_u64() && controller["role"].is_string(), "{controller}");
    }
    let zones = status["zones"].as_object().expect("zones by name");
    assert_eq!(zones.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
    for nodes in zones.values() {
        let kinds: Vec<&str> = nodes.as_array().unwrap().iter().map(|n| n["kind"].as_str().unwrap()).collect();
        assert!(kinds.contains(&"broker") && kinds.contains(&"wal"), "a broker and a WAL node per zone: {nodes}");
        for node in nodes.as_array().unwrap() {
            assert_eq!(node["state"], "active", "{node}");
            assert!(node["node_id"].is_u64() && node["address"].is_string() && node["epoch"].is_u64(), "{node}");
        }
    }

    let controllers = json(run(&["controller", "status", "--json"]).await);
    let controllers = controllers.as_array().expect("an array");
    assert_eq!(controllers.len(), 3);
    assert!(controllers.iter().all(|c| c["reachable"] == true && c["role"].is_string()), "{controllers:?}");

    let topics = json(run(&["topic", "list", "--json"]).await);
    let shapes = topics.as_array().unwrap().iter().find(|t| t["name"] == "shapes").expect("the topic is listed");
    assert_eq!((shapes["partitions"].as_u64(), shapes["owner"].as_str()), (Some(3), Some("checkout")), "{shapes}");
    assert!(shapes["id"].is_string());

    let described = json(run(&["topic", "describe", "shapes", "--json"]).await);
    assert_eq!(described["name"], "shapes");
    assert_eq!(described["partitions"].as_array().map(Vec::len), Some(3), "{described}");

    let groups = json(run(&["group", "list", "--json"]).await);
    assert!(groups.is_array(), "no group yet, an empty array: {groups}");
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

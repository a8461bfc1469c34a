//! The confluent-kafka Python client (librdkafka) against a real cluster:
//! admin calls and their error codes, an idempotent producer, an oversized
//! message, a consumer reading everything back, watermarks. The script
//! (`tests/clients/roundtrip.py`) says what it checks.

use std::time::Duration;

use keel_tests::TestCluster;

#[tokio::test(flavor = "multi_thread")]
async fn confluent_kafka_admin_produce_and_consume_round_trip() {
    let test = TestCluster::start_full().await.unwrap();
    let script = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("clients/roundtrip.py");
    let run =
        tokio::process::Command::new("python3").arg(&script).arg(test.cluster.bootstrap()).kill_on_drop(true).output();
    let output =
        tokio::time::timeout(Duration::from_secs(240), run).await.expect("finished in 240 s").expect("python3 ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "roundtrip.py failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("ok: 20000 records"), "{stdout}");
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

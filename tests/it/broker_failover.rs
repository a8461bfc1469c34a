//! Failover under load (DESIGN §5, §9): idempotent producers (acks=all) write
//! 24 partitions on 3 brokers while brokers are killed with SIGKILL and
//! started again. The killed broker's partitions must move to the others
//! (its WAL log recovered, sealed and uploaded first), and the final read
//! must hold every acknowledged record exactly once, at its acknowledged
//! offset, in order per partition.
//!
//! The default run kills 3 times; `KEEL_FAILOVER_KILLS=20` gives the figures
//! (time from kill to the partition taking writes again, p50/p99).
//! `KEEL_FAILOVER_SEED` replays a run's choice of victims.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keel_tests::TestCluster;
use keel_tools::kafka;
use rand::{Rng, SeedableRng};
use tokio::io::AsyncBufReadExt;
use tracing::info;

const PARTITIONS: usize = 24;

#[tokio::test(flavor = "multi_thread")]
async fn killed_brokers_hand_their_partitions_over_and_nothing_acknowledged_is_lost() {
    let kills: usize = std::env::var("KEEL_FAILOVER_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let seed: u64 = std::env::var("KEEL_FAILOVER_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64);
    eprintln!("failover seed {seed}: replay with KEEL_FAILOVER_SEED={seed} KEEL_FAILOVER_KILLS={kills}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let mut test = TestCluster::start(3, &[]).await.unwrap();
    test.start_wal_nodes(3).await.unwrap();
    test.start_brokers(3, &[]).await.unwrap();
    let bootstrap = test.cluster.bootstrap();
    let client = test.cluster.client().unwrap();
    let create = keel_controller_client::pb::CreateTopicRequest {
        name: "orders".into(),
        partitions: PARTITIONS as i32,
        ..Default::default()
    };
    client.create_topic(create).await.unwrap();

    let control = tempfile::tempdir().unwrap();
    let script = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("clients/failover_load.py");
    let mut child = tokio::process::Command::new("python3")
        .arg(&script)
        .args([bootstrap.as_str(), "orders", &PARTITIONS.to_string()])
        .arg(control.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut output = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        output.push(line.clone());
        if line.starts_with("progress") && output.len() >= 3 {
            break;
        }
    }
    let output = std::sync::Arc::new(std::sync::Mutex::new(output));
    let collect = {
        let output = output.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                output.lock().unwrap().push(line);
            }
        })
    };

    let mut writable = Vec::new();
    for kill in 0..kills {
        let layout = kafka::ready_layout(&bootstrap, "orders", Duration::from_secs(60)).await.unwrap();
        let leading: Vec<i32> = {
            let mut ids: Vec<i32> = layout.leaders.clone();
            ids.sort();
            ids.dedup();
            ids
        };
        let victim = leading[rng.gen_range(0..leading.len())];
        let index = test.cluster.brokers.iter().position(|b| b.spec.id as i32 == victim).unwrap();
        let led: Vec<usize> = (0..PARTITIONS).filter(|p| layout.leaders[*p] == victim).collect();
        let at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        let mut kills_file =
            std::fs::OpenOptions::new().create(true).append(true).open(control.path().join("kills.jsonl")).unwrap();
        writeln!(kills_file, "{{\"at\": {at}, \"partitions\": {led:?}}}").unwrap();
        info!(kill, victim, partitions = led.len(), "kill -9");
        test.cluster.brokers[index].kill9();
        let killed = std::time::Instant::now();
        // Writable again: every partition has a leader that serves it.
        let survivors: Vec<String> = test
            .cluster
            .brokers
            .iter()
            .filter(|b| b.spec.id as i32 != victim)
            .map(|b| b.spec.kafka.to_string())
            .collect();
        kafka::ready_layout(&survivors.join(","), "orders", Duration::from_secs(60)).await.unwrap();
        writable.push(killed.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_secs(3).saturating_sub(killed.elapsed())).await;
        test.cluster.start_broker(index).unwrap();
        test.cluster.wait_for_brokers(Duration::from_secs(60)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    kafka::ready_layout(&bootstrap, "orders", Duration::from_secs(60)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::write(control.path().join("stop"), b"").unwrap();

    let finished = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .expect("the load finished in 300 s")
        .unwrap();
    collect.await.unwrap();
    let output = output.lock().unwrap().join("\n");
    let stderr = String::from_utf8_lossy(&finished.stderr);
    assert!(finished.status.success(), "failover_load.py failed:\n{output}\n{stderr}");
    let result = output.lines().find_map(|line| line.strip_prefix("result ")).expect("a result line");
    let result: serde_json::Value = serde_json::from_str(result).unwrap();
    eprintln!("failover result: {result}");
    let count = |key: &str| result[key].as_u64().unwrap_or(u64::MAX);
    assert!(count("acked") > 1000, "the load made progress: {result}");
    assert_eq!(count("failed"), 0, "no produce failed (default retries): {result}");
    assert_eq!(count("unflushed"), 0, "{result}");
    assert_eq!(count("lost"), 0, "acknowledged records lost: {result}");
    assert_eq!(count("inconsistent_offsets"), 0, "{result}");
    assert_eq!(count("duplicates"), 0, "{result}");
    assert_eq!(count("reordered"), 0, "{result}");
    assert_eq!(count("never_writable"), 0, "every partition of a killed broker took writes again: {result}");
    assert_eq!(result["unread_partitions"].as_array().map(Vec::len), Some(0), "{result}");
    let quantile = |times: &mut Vec<f64>, q: f64| {
        times.sort_by(f64::total_cmp);
        times[((times.len() as f64 - 1.0) * q).round() as usize]
    };
    eprintln!(
        "time from kill -9 to every partition served again (probed every 100 ms) over {kills} kills: p50 {:.2} s, p99 {:.2} s",
        quantile(&mut writable, 0.5),
        quantile(&mut writable, 0.99),
    );
    let mut client_seen: Vec<f64> =
        result["writable_after"].as_array().unwrap().iter().filter_map(|t| t.as_f64()).collect();
    eprintln!(
        "time from kill -9 to librdkafka's first acknowledgement per partition ({} partitions, the killed broker restarted after 3 s): p50 {:.2} s, p99 {:.2} s",
        client_seen.len(),
        quantile(&mut client_seen, 0.5),
        quantile(&mut client_seen, 0.99),
    );
    test.assert_clean_logs(keel_tests::PEER_UNREACHABLE);
}

//! Issue 3, backpressure: a WAL node whose disk fills up refuses appends
//! retriably, stays up, damages nothing, and takes appends again by itself
//! once space returns; writers ride it out on the other two members and
//! catch it up. The node's data directory is a small tmpfs the test mounts
//! and unmounts, also when it fails; where it cannot mount one (not root, or
//! a container without the capability) it says so and skips.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures::stream::{FuturesOrdered, StreamExt};
use keel_controller_client::StreamId;
use keel_proto::wal as pb;
use keel_tests::{eventually, TestCluster, PEER_UNREACHABLE};
use keel_wal_client::entry::Record;
use keel_wal_client::ids::{LogEpoch, LogId, Offset, Seq};
use keel_wal_client::writer::WalWriter;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

const LOG: LogId = LogId(21);
/// The smallest segment that holds the largest entry.
const SEGMENT: u64 = 34 << 20;
const ENTRY: usize = 64 << 10;

/// A tmpfs mounted for the test's lifetime.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` on `path`, or says why it cannot.
    #[allow(clippy::disallowed_methods)]
    fn mount(path: &Path, bytes: u64) -> anyhow::Result<Tmpfs> {
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}")])
            .arg("tmpfs")
            .arg(path)
            .output()
            .context("run mount")?;
        if !output.status.success() {
            anyhow::bail!("{}", String::from_utf8_lossy(&output.stderr).trim());
        }
        Ok(Tmpfs(path.to_owned()))
    }
}

impl Drop for Tmpfs {
    #[allow(clippy::disallowed_methods)]
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Bytes free on the file system holding `path`.
#[allow(clippy::disallowed_methods)]
fn available(path: &Path) -> u64 {
    let output = std::process::Command::new("df").args(["-B1", "--output=avail"]).arg(path).output().unwrap();
    String::from_utf8_lossy(&output.stdout).lines().nth(1).and_then(|line| line.trim().parse().ok()).unwrap()
}

fn record(seq: u64) -> Vec<Record> {
    let mut batch = vec![(seq % 251) as u8; ENTRY];
    batch[..8].copy_from_slice(&seq.to_be_bytes());
    vec![Record {
        stream: StreamId(1),
        base_offset: Offset(seq as i64 - 1),
        record_count: 1,
        batch: Bytes::from(batch),
    }]
}

async fn last_seq(addr: std::net::SocketAddr) -> Option<u64> {
    let mut client = keel_tests::wal_client(addr).await.ok()?;
    let status = client.status(pb::StatusRequest {}).await.ok()?.into_inner();
    Some(status.logs.iter().find(|log| log.log == LOG.0).map_or(0, |log| log.last_seq))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wal_node_with_a_full_disk_refuses_retriably_and_recovers_when_space_returns() {
    let mount_dir = tempfile::Builder::new().prefix("keel-full-disk").tempdir().unwrap();
    let _tmpfs = match Tmpfs::mount(mount_dir.path(), 4 * SEGMENT) {
        Ok(tmpfs) => tmpfs,
        Err(why) => {
            eprintln!("SKIPPED: the full-disk test mounts a tmpfs (it needs root and CAP_SYS_ADMIN): {why:#}");
            return;
        }
    };
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    test.cluster.add_free_port_wal_nodes(3).unwrap();
    let data_dir = mount_dir.path().join("wal-1");
    test.cluster.wal_nodes[0].spec.data_dir = data_dir.clone();
    test.cluster.wal_nodes[0].spec.args = vec!["--segment-bytes".into(), SEGMENT.to_string()];
    test.cluster.start_all_wal().unwrap();
    test.cluster.wait_for_wal_nodes(Duration::from_secs(60)).await.unwrap();
    let addr = test.cluster.wal_nodes[0].spec.grpc;

    // Leave the node its first two segments (the active one and its spare)
    // and little else.
    eventually(Duration::from_secs(30), "the spare segment prepared", || async {
        (available(&data_dir) <= 2 * SEGMENT + (1 << 20)).then_some(())
    })
    .await;
    let filler = mount_dir.path().join("filler");
    std::fs::write(&filler, vec![1u8; (available(&data_dir) - (4 << 20)) as usize]).unwrap();

    let tasks = TaskTracker::new();
    let cancel = CancellationToken::new();
    let targets = test.cluster.wal_targets().await.unwrap();
    let writer = WalWriter::start(LOG, LogEpoch(1), targets, 2, Seq(0), &tasks, cancel.clone());
    // About 2.6 segments of entries: more than the node has room for.
    let entries = (SEGMENT * 26 / 10) / ENTRY as u64;
    info!(entries, "append more than the full node can hold");
    let mut in_flight = FuturesOrdered::new();
    for seq in 1..=entries {
        in_flight.push_back(writer.append(record(seq)));
        if in_flight.len() >= 32 {
            assert!(in_flight.next().await.unwrap().is_ok(), "the writer rides out the full node");
        }
    }
    while let Some(result) = in_flight.next().await {
        assert!(result.is_ok(), "the writer rides out the full node");
    }
    assert_eq!(writer.acked(), Seq(entries));
    let stuck = last_seq(addr).await.expect("the full node is up and answers");
    assert!(stuck < entries, "the full node took {stuck} of {entries} entries");
    assert!(test.cluster.wal_nodes[0].is_running(), "a full disk does not stop the node");
    let log = std::fs::read_to_string(test.cluster.dir.join("wal-1.log")).unwrap();
    assert!(log.contains("no room for a new journal segment"), "the refusal says why:\n{log}");

    info!(stuck, "space returns: the node takes appends again and is caught up");
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(writer.append(record(entries + 1)).await, Ok(Seq(entries + 1)));
    eventually(Duration::from_secs(30), "the node caught up", || async {
        (last_seq(addr).await? == entries + 1).then_some(())
    })
    .await;

    info!("restarted, it opens its journal cleanly and keeps every entry");
    test.cluster.wal_nodes[0].kill9();
    test.cluster.start_wal(0).unwrap();
    eventually(Duration::from_secs(30), "the node is back with everything", || async {
        (last_seq(addr).await? == entries + 1).then_some(())
    })
    .await;
    let mut client = keel_tests::wal_client(addr).await.unwrap().max_decoding_message_size(64 << 20);
    let read = pb::ReadRequest { log: LOG.0, from_seq: 1, max_bytes: 1 << 20, recovery_epoch: 0, sealed_seq: entries };
    let reply = client.read(read).await.unwrap().into_inner();
    assert_eq!(reply.code, pb::ErrorCode::Ok as i32, "{}", reply.message);
    let first = keel_wal_client::entry::Entry::decode(reply.entries[0].clone()).unwrap();
    assert_eq!(first.records[0].batch, record(1)[0].batch, "entries read back intact");
    cancel.cancel();
    test.assert_clean_logs(
        &[
            PEER_UNREACHABLE,
            &["lost a WAL member", "no room for a new journal segment", "failed to prepare a spare segment"],
        ]
        .concat(),
    );
}

//! `keel-bench controller`: metadata commit latency and throughput, and leader
//! re-election time after `kill -9` of the leader, on a 3-controller quorum on
//! loopback started from the real binaries in a temporary directory.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use keel_controller_client::{pb, MetadataClient};
use serde::Serialize;
use tokio::time::Instant;

use super::{micros_histogram, LatencySummary};
use crate::launcher::{ClusterOptions, LocalCluster};

#[derive(Debug, clap::Args)]
pub struct ControllerBenchArgs {
    /// Sequential commits measured one at a time (latency).
    #[arg(long, default_value_t = 2000)]
    pub commits: u64,
    /// Commits sent by concurrent writers (throughput).
    #[arg(long, default_value_t = 20000)]
    pub throughput_commits: u64,
    /// Concurrent writers in the throughput phase.
    #[arg(long, default_value_t = 32)]
    pub concurrency: u64,
    /// Leader kills (kill -9) for the re-election phase.
    #[arg(long, default_value_t = 20)]
    pub kills: u32,
    #[arg(long)]
    pub json: bool,
    /// Keep the controllers' data and logs after the run.
    #[arg(long)]
    pub keep_data: bool,
}

/// What the controller benchmark measured.
#[derive(Debug, Serialize)]
pub struct ControllerBenchReport {
    pub commit_latency: LatencySummary,
    pub commits_per_second: f64,
    pub throughput_concurrency: u64,
    /// From the kill to a surviving controller reporting itself leader of a newer term.
    pub reelection: LatencySummary,
}

pub async fn run(args: ControllerBenchArgs) -> anyhow::Result<ControllerBenchReport> {
    let dir = tempfile::Builder::new().prefix("keel-bench-controller").tempdir()?;
    eprintln!("controllers' data and logs in {}", dir.path().display());
    let specs = LocalCluster::free_port_specs(dir.path(), 3)?;
    let options = ClusterOptions { cluster_id: "bench".into(), controller_args: vec![] };
    let mut cluster = LocalCluster::new(dir.path(), options, specs)?;
    cluster.start_all()?;
    cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let client = Arc::new(cluster.client()?);
    let topic = pb::CreateTopicRequest { name: "bench".into(), partitions: 1, ..Default::default() };
    client.create_topic(topic).await.context("create the benchmark topic")?;

    eprintln!("measuring commit latency over {} sequential commits", args.commits);
    let mut latency = micros_histogram();
    for i in 0..args.commits {
        let started = Instant::now();
        alter(&client, i).await?;
        latency.record(started.elapsed().as_micros() as u64)?;
    }

    eprintln!("measuring throughput: {} commits from {} writers", args.throughput_commits, args.concurrency);
    let per_writer = args.throughput_commits / args.concurrency.max(1);
    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..args.concurrency {
        let client = client.clone();
        writers.spawn(async move {
            for i in 0..per_writer {
                alter(&client, writer * per_writer + i).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(written) = writers.join_next().await {
        written??;
    }
    let commits_per_second = (per_writer * args.concurrency) as f64 / started.elapsed().as_secs_f64();

    eprintln!("measuring re-election over {} leader kills", args.kills);
    let mut reelection = micros_histogram();
    for kill in 0..args.kills {
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
        let term = cluster.node_statuses().await[leader].as_ref().map_or(0, |status| status.term);
        cluster.controllers[leader].kill9();
        let killed_at = Instant::now();
        let new_leader = wait_for_new_leader(&cluster, term).await.with_context(|| format!("kill {kill}"))?;
        let elapsed = killed_at.elapsed();
        reelection.record(elapsed.as_micros() as u64)?;
        eprintln!(
            "kill {kill}: c{} killed, c{} leader after {elapsed:?}",
            cluster.controllers[leader].spec.id, cluster.controllers[new_leader].spec.id
        );
        cluster.start_controller(leader)?;
        wait_until_all_follow(&cluster).await?;
    }
    cluster.stop_all(Duration::from_secs(5));
    if args.keep_data {
        eprintln!("kept {}", dir.keep().display());
    }
    Ok(ControllerBenchReport {
        commit_latency: LatencySummary::from_micros(&latency),
        commits_per_second,
        throughput_concurrency: args.concurrency,
        reelection: LatencySummary::from_micros(&reelection),
    })
}

async fn alter(client: &MetadataClient, i: u64) -> anyhow::Result<()> {
    let request = pb::AlterConfigsRequest {
        name: "bench".into(),
        set: HashMap::from([("retention.ms".to_owned(), (i + 1).to_string())]),
        delete: vec![],
    };
    client.alter_configs(request).await?;
    Ok(())
}

/// Polls until a controller reports itself leader of a term after `old_term`; returns its index.
async fn wait_for_new_leader(cluster: &LocalCluster, old_term: u64) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let statuses = cluster.node_statuses().await;
        if let Some(index) =
            statuses.iter().position(|s| s.as_ref().is_some_and(|s| s.role == "leader" && s.term > old_term))
        {
            return Ok(index);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    anyhow::bail!("no new leader within 30s")
}

/// Waits until every controller is back, knows the leader and has applied the
/// same entries, so the next kill starts from a healthy quorum. (A follower
/// that still lacks the new leader's first entry would lose its own campaign
/// and cost an extra election round.)
async fn wait_until_all_follow(cluster: &LocalCluster) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let statuses = cluster.node_statuses().await;
        let caught_up = statuses.iter().all(|s| s.as_ref().is_some_and(|s| s.leader_controller_id.is_some()))
            && statuses.iter().flatten().map(|s| s.last_applied_index).collect::<std::collections::BTreeSet<_>>().len()
                == 1;
        if caught_up {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the restarted controller did not rejoin within 30s")
}

impl std::fmt::Display for ControllerBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "metadata commit latency (sequential): {}", self.commit_latency)?;
        writeln!(f, "metadata commits/s ({} writers): {:.0}", self.throughput_concurrency, self.commits_per_second)?;
        write!(f, "leader re-election after kill -9: {}", self.reelection)
    }
}

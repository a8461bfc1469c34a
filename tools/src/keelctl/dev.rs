//! `keelctl dev`: a whole local cluster on loopback, data under one directory,
//! until Ctrl-C: the controller quorum, and a WAL node and a broker in each of
//! zones a, b and c. Kafka clients bootstrap from 127.0.0.1:9092.

use std::path::PathBuf;
use std::time::Duration;

use crate::launcher::{BrokerSpec, ClusterOptions, ControllerSpec, LocalCluster, Managed, WalSpec};

/// The controller addresses `keelctl dev` uses, and `keelctl`'s default.
pub(super) const DEFAULT_CONTROLLERS: &str = "127.0.0.1:9190,127.0.0.1:9191,127.0.0.1:9192";
/// Where `keelctl dev` keeps its cluster, and where `keelctl` finds its token.
pub(super) const DEFAULT_DIR: &str = "/tmp/keel-dev";

#[derive(Debug, clap::Args)]
pub(super) struct DevArgs {
    /// Where the cluster keeps its data and logs. Kept across runs.
    #[arg(long, env = "KEEL_DEV_DIR", default_value = DEFAULT_DIR)]
    data_dir: PathBuf,
    /// Delete the data directory first.
    #[arg(long)]
    fresh: bool,
    /// Whether a client's Metadata request creates a topic that does not
    /// exist (Kafka's auto.create.topics.enable).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    auto_create_topics: bool,
    /// Partitions of a topic created without a count (Kafka's num.partitions).
    #[arg(long, default_value_t = 1)]
    default_partitions: u32,
}

pub(super) async fn run(args: DevArgs) -> anyhow::Result<()> {
    if args.fresh && args.data_dir.exists() {
        std::fs::remove_dir_all(&args.data_dir)?;
    }
    let specs = (0..3u16)
        .map(|i| {
            Ok(ControllerSpec {
                id: u32::from(i) + 1,
                grpc: format!("127.0.0.1:{}", 9190 + i).parse()?,
                admin: format!("127.0.0.1:{}", 9290 + i).parse()?,
                data_dir: args.data_dir.join(format!("controller-{}", i + 1)),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let options = ClusterOptions { cluster_id: "keel-dev".into(), controller_args: vec![] };
    let mut cluster = LocalCluster::new(&args.data_dir, options, specs)?;
    for (i, zone) in (0..3u16).zip(["a", "b", "c"]) {
        cluster.wal_nodes.push(Managed::new(WalSpec {
            id: u32::from(i) + 1,
            zone: zone.to_owned(),
            grpc: format!("127.0.0.1:{}", 9390 + i).parse()?,
            admin: format!("127.0.0.1:{}", 9490 + i).parse()?,
            data_dir: args.data_dir.join(format!("wal-{}", i + 1)),
            args: Vec::new(),
        }));
        cluster.brokers.push(Managed::new(BrokerSpec {
            id: u32::from(i) + 1,
            zone: zone.to_owned(),
            kafka: format!("127.0.0.1:{}", 9092 + i).parse()?,
            admin: format!("127.0.0.1:{}", 9592 + i).parse()?,
            args: vec![
                format!("--auto-create-topics={}", args.auto_create_topics),
                format!("--default-partitions={}", args.default_partitions),
            ],
        }));
    }
    cluster.start_all()?;
    println!("starting 3 controllers, 3 WAL nodes and 3 brokers; data and logs in {}", args.data_dir.display());
    let leader = match cluster.wait_for_leader(Duration::from_secs(30)).await {
        Ok(leader) => leader,
        Err(error) => {
            cluster.stop_all(Duration::from_secs(5));
            anyhow::bail!("{error}; see the controller-*.log files in {}", args.data_dir.display());
        }
    };
    cluster.start_all_wal()?;
    if let Err(error) = cluster.wait_for_wal_nodes(Duration::from_secs(60)).await {
        cluster.stop_all(Duration::from_secs(5));
        anyhow::bail!("{error}; see the wal-*.log files in {}", args.data_dir.display());
    }
    cluster.start_all_brokers()?;
    if let Err(error) = cluster.wait_for_brokers(Duration::from_secs(60)).await {
        cluster.stop_all(Duration::from_secs(5));
        anyhow::bail!("{error}; see the broker-*.log files in {}", args.data_dir.display());
    }
    for controller in &cluster.controllers {
        let spec = &controller.spec;
        println!("controller c{}  grpc {}  admin http://{}/metrics", spec.id, spec.grpc, spec.admin);
    }
    println!("leader: c{}", cluster.controllers[leader].spec.id);
    for node in &cluster.wal_nodes {
        let spec = &node.spec;
        println!("WAL node {}  zone {}  grpc {}  admin http://{}/metrics", spec.id, spec.zone, spec.grpc, spec.admin);
    }
    for broker in &cluster.brokers {
        let spec = &broker.spec;
        println!("broker {}  zone {}  kafka {}  admin http://{}/metrics", spec.id, spec.zone, spec.kafka, spec.admin);
    }
    println!("ready: try `keelctl topic create orders -p 12`, then");
    println!("  echo hello | kcat -b 127.0.0.1:9092 -P -t orders   and   kcat -b 127.0.0.1:9092 -C -t orders -e");
    println!("(Ctrl-C stops the cluster)");
    let mut reported_exits = std::collections::BTreeSet::new();
    loop {
        tokio::select! {
            signal = keel_common::signal::shutdown_requested() => {
                println!("{}: stopping the cluster", signal?);
                break;
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                for controller in &mut cluster.controllers {
                    if !controller.is_running() && reported_exits.insert(format!("controller-{}", controller.spec.id)) {
                        eprintln!("controller c{} exited; see its log in {}", controller.spec.id, args.data_dir.display());
                    }
                }
                for node in &mut cluster.wal_nodes {
                    if !node.is_running() && reported_exits.insert(format!("wal-{}", node.spec.id)) {
                        eprintln!("WAL node {} exited; see its log in {}", node.spec.id, args.data_dir.display());
                    }
                }
                for broker in &mut cluster.brokers {
                    if !broker.is_running() && reported_exits.insert(format!("broker-{}", broker.spec.id)) {
                        eprintln!("broker {} exited; see its log in {}", broker.spec.id, args.data_dir.display());
                    }
                }
            }
        }
    }
    cluster.stop_all(Duration::from_secs(10));
    println!("stopped");
    Ok(())
}

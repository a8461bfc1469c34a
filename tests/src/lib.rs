//! Shared set-up for the multi-process tests: a cluster of real Keel binaries
//! on distinct free ports of a loopback address of their own, in a temporary directory, killed when dropped (also
//! when a test fails), with the logs printed on failure.

use std::time::Duration;

use keel_tools::launcher::{ClusterOptions, LocalCluster};

pub use keel_tools::launcher;

/// Log lines that tests which kill, wipe or load processes expect: openraft
/// logs at ERROR every RPC to an unreachable peer (dead, or answering under a
/// new raft id) and every append RPC that outlives its deadline (the
/// heartbeat interval, which a loaded 2-core machine sometimes exceeds).
/// Anything else at WARN or ERROR fails a test.
pub const PEER_UNREACHABLE: &[&str] = &["err=Unreachable node", "error=Unreachable node", "err=timeout after"];

/// A running cluster owned by one test.
#[derive(Debug)]
pub struct TestCluster {
    pub cluster: LocalCluster,
    dir: tempfile::TempDir,
}

impl TestCluster {
    /// Starts `count` controllers with `controller_args` and waits for a leader.
    pub async fn start(count: u32, controller_args: &[&str]) -> anyhow::Result<TestCluster> {
        init_tracing();
        let dir = tempfile::Builder::new().prefix("keel-test").tempdir()?;
        let specs = LocalCluster::free_port_specs(dir.path(), count)?;
        let options = ClusterOptions {
            cluster_id: "test".into(),
            controller_args: controller_args.iter().map(|arg| arg.to_string()).collect(),
        };
        let mut cluster = LocalCluster::new(dir.path(), options, specs)?;
        cluster.start_all()?;
        if let Err(error) = cluster.wait_for_leader(Duration::from_secs(30)).await {
            // The cluster never formed: show why before the directory goes.
            print_log_tails(dir.path(), cluster.controllers.iter().map(|c| format!("controller-{}.log", c.spec.id)));
            return Err(error);
        }
        Ok(TestCluster { cluster, dir })
    }

    /// Controller `index`'s own status, if it answers.
    pub async fn status_of(&self, index: usize) -> Option<keel_controller_client::pb::NodeStatusReply> {
        self.cluster.node_statuses().await.into_iter().nth(index).flatten()
    }

    /// A registered node's state ("active" or "fenced") and epoch, as the
    /// controller leader reports it.
    pub async fn node_state(&self, kind: keel_controller_client::NodeKind, id: u32) -> Option<(String, u64)> {
        let status = self.cluster.client().ok()?.cluster_status().await.ok()?;
        let kind = keel_controller_client::kind_to_pb(kind) as i32;
        status
            .nodes
            .iter()
            .find(|node| node.kind == kind && node.node_id == id)
            .map(|node| (node.state.clone(), node.epoch))
    }

    /// The indexes of the controllers other than `leader`.
    pub fn others(&self, leader: usize) -> Vec<usize> {
        (0..self.cluster.controllers.len()).filter(|index| *index != leader).collect()
    }

    /// Fails if any controller logged an ERROR or WARN line containing none of `allowed`.
    pub fn assert_clean_logs(&self, allowed: &[&str]) {
        let mut unexpected = self.cluster.log_lines_at("ERROR", allowed).expect("read controller logs");
        unexpected.extend(self.cluster.log_lines_at("WARN", allowed).expect("read controller logs"));
        assert!(unexpected.is_empty(), "unexpected log lines:\n{}", unexpected.join("\n"));
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.cluster.kill_all();
        // KEEL_KEEP_LOGS=DIR keeps every process log of the test, for reading afterwards.
        if let Some(keep) = std::env::var_os("KEEL_KEEP_LOGS") {
            let keep = std::path::PathBuf::from(keep);
            let copied = std::fs::create_dir_all(&keep).and_then(|()| {
                for entry in std::fs::read_dir(self.dir.path())? {
                    let path = entry?.path();
                    if path.extension().is_some_and(|ext| ext == "log") {
                        std::fs::copy(&path, keep.join(path.file_name().expect("a file")))?;
                    }
                }
                Ok(())
            });
            if let Err(error) = copied {
                eprintln!("could not keep the logs in {}: {error}", keep.display());
            }
        }
        if std::thread::panicking() {
            let names = self
                .cluster
                .controllers
                .iter()
                .map(|controller| format!("controller-{}.log", controller.spec.id))
                .chain(self.cluster.wal_nodes.iter().map(|node| format!("wal-{}.log", node.spec.id)))
                .chain(self.cluster.brokers.iter().map(|broker| format!("broker-{}.log", broker.spec.id)));
            print_log_tails(self.dir.path(), names);
        }
    }
}

impl TestCluster {
    /// Adds `count` WAL nodes (zones a, b, c, ...), starts them and waits until all are registered.
    pub async fn start_wal_nodes(&mut self, count: u32) -> anyhow::Result<Vec<u64>> {
        self.cluster.add_free_port_wal_nodes(count)?;
        self.cluster.start_all_wal()?;
        self.cluster.wait_for_wal_nodes(Duration::from_secs(60)).await
    }

    /// Adds `count` brokers (zones a, b, c, ...) with extra `args`, starts
    /// them and waits until each is ready to take produce requests.
    pub async fn start_brokers(&mut self, count: u32, args: &[&str]) -> anyhow::Result<()> {
        self.cluster.add_free_port_brokers(count, args)?;
        self.cluster.start_all_brokers()?;
        self.cluster.wait_for_brokers(Duration::from_secs(60)).await
    }

    /// Kills broker `index` with SIGKILL, starts it again, and waits until
    /// every partition of `topic` is served again (its old log recovered and
    /// uploaded, the partitions handed out anew).
    pub async fn restart_broker(&mut self, index: usize, topic: &str) -> anyhow::Result<()> {
        self.cluster.brokers[index].kill9();
        self.cluster.start_broker(index)?;
        self.cluster.wait_for_brokers(Duration::from_secs(60)).await?;
        keel_tools::kafka::ready_layout(&self.cluster.bootstrap(), topic, Duration::from_secs(60)).await?;
        Ok(())
    }

    /// A whole cluster: 3 controllers, and a WAL node and a broker in each of zones a, b and c.
    pub async fn start_full() -> anyhow::Result<TestCluster> {
        let mut test = TestCluster::start(3, &[]).await?;
        test.start_wal_nodes(3).await?;
        test.start_brokers(3, &[]).await?;
        Ok(test)
    }
}

/// Prints the last 40 lines of each named log in `dir` to stderr.
fn print_log_tails(dir: &std::path::Path, names: impl Iterator<Item = String>) {
    for name in names {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        eprintln!("---- last lines of {} ----", path.display());
        for line in tail.into_iter().rev() {
            eprintln!("{line}");
        }
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub use keel_tools::launcher::http_get;

/// Test output through `tracing`, shown by the test runner on failure.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("info").try_init();
}

/// The sum of metric `name` over the processes whose admin ports are `admins`.
pub async fn metric_total(admins: &[std::net::SocketAddr], name: &str) -> f64 {
    let mut total = 0.0;
    for admin in admins {
        let (_, metrics) = keel_tools::launcher::http_get(*admin, "/metrics").await.unwrap();
        total += keel_tools::launcher::metric_value(&metrics, name);
    }
    total
}

/// The sum of the samples whose line starts with `prefix` (a name, and
/// optionally the start of its labels) over the processes at `admins`; a
/// process that does not answer counts nothing.
pub async fn metric_sum(admins: &[std::net::SocketAddr], prefix: &str) -> f64 {
    let mut total = 0.0;
    for admin in admins {
        let Ok((_, metrics)) = keel_tools::launcher::http_get(*admin, "/metrics").await else { continue };
        total += metrics
            .lines()
            .filter(|line| line.starts_with(prefix))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    total
}

/// `keelctl` aimed at `test`'s controllers, with its cluster token.
pub fn keelctl(test: &TestCluster) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(keel_tools::launcher::find_binary("keelctl").unwrap());
    command.args(["--controllers", &test.cluster.controller_addrs().join(",")]);
    if let Some(token) = keel_proto::auth::token_text() {
        command.env("KEEL_CLUSTER_TOKEN", token);
    }
    command
}

/// A gRPC client of the WAL node at `addr`, whose calls carry the cluster token.
pub async fn wal_client(
    addr: std::net::SocketAddr,
) -> anyhow::Result<keel_proto::wal::wal_client::WalClient<keel_proto::auth::Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?.connect().await?;
    Ok(keel_proto::wal::wal_client::WalClient::new(keel_proto::auth::channel(channel)))
}

/// A client of the WAL node at `addr` once it answers a status call, as
/// after a restart (waits up to 30 s).
pub async fn wal_client_when_up(
    addr: std::net::SocketAddr,
) -> keel_proto::wal::wal_client::WalClient<keel_proto::auth::Channel> {
    eventually(Duration::from_secs(30), "the WAL node answers again", || async {
        let mut client = wal_client(addr).await.ok()?;
        client.status(keel_proto::wal::StatusRequest {}).await.ok()?;
        Some(client)
    })
    .await
}

/// Registers broker `id` with the controller and keeps its session until
/// `cancel` fires, as a test's stand-in for a broker that opens WAL logs and
/// commits uploads; returns its epoch.
pub async fn register_broker(
    client: &std::sync::Arc<keel_controller_client::MetadataClient>,
    id: u32,
    tasks: &tokio_util::task::TaskTracker,
    cancel: &tokio_util::sync::CancellationToken,
) -> keel_controller_client::Epoch {
    use keel_controller_client::{NodeId, NodeKind, Registration, SessionKeeper};
    let registration = Registration {
        kind: NodeKind::Broker,
        id: NodeId(id),
        zone: "a".into(),
        internal_addr: format!("127.0.0.1:{}", 30000 + id),
        kafka_listeners: vec![],
        incarnation: format!("broker-{id}"),
    };
    let (keeper, mut session) =
        SessionKeeper::new(client.clone(), registration, Duration::from_millis(250), Duration::from_millis(300));
    tasks.spawn(keeper.run(cancel.clone()));
    let state = *session.wait_for(Option::is_some).await.unwrap();
    state.expect("registered").epoch
}

/// A controller's watch stream from `from`, without the progress events a
/// quiet stream carries: only the changes.
pub async fn watch_changes(
    client: &keel_controller_client::MetadataClient,
    from: keel_controller_client::Version,
) -> Result<
    impl futures::Stream<Item = Result<keel_controller_client::WatchItem, keel_controller_client::ClientError>>,
    keel_controller_client::ClientError,
> {
    use futures::StreamExt;
    let (_, stream) = client.watch(from).await?;
    Ok(stream.filter(|item| {
        let change = !matches!(item, Ok(keel_controller_client::WatchItem::Progress(_)));
        std::future::ready(change)
    }))
}

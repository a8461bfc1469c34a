//! Starts and stops local Keel processes: the whole cluster of `keelctl dev`,
//! the clusters of the multi-process tests and of `keel-bench`.
//!
//! Every process is a real binary started from the same directory as the
//! running executable (or its parent, for test executables under `deps/`),
//! with its log in `<dir>/<name>.log`. Processes are ended by their pid only,
//! and all of them are killed when the `LocalCluster` is dropped, also on
//! panic, and by the kernel when the launcher dies without dropping it.
//!
//! The kernel does that when the *thread* that started a process exits, so
//! start processes only from the thread that runs the launcher's main future
//! (a binary's main thread, a test's own thread), never from
//! `spawn_blocking`, a short-lived thread, or a task a runtime may move.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use keel_controller_client::{pb, ClientOptions, MetadataClient};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::time::Instant;

/// How long a status poll waits for one controller.
const STATUS_TIMEOUT: Duration = Duration::from_millis(300);

/// The Python that runs the Python test clients and the chaos workload:
/// `KEEL_PYTHON` (scripts/setup sets it to the virtual environment it
/// makes), else that environment where it exists, else `python3` on the
/// PATH. Never the system Python's own packages: Debian's is externally
/// managed.
pub fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("KEEL_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(python);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    let venv = home.join(".cache/keel/venv/bin/python3");
    if venv.is_file() {
        return venv;
    }
    PathBuf::from("python3")
}

/// A program installed beside `python()` (as `moto_server`), else `name` on the PATH.
pub fn python_tool(name: &str) -> PathBuf {
    let beside = python().parent().map(|dir| dir.join(name));
    beside.filter(|path| path.is_file()).unwrap_or_else(|| PathBuf::from(name))
}

/// Finds a Keel binary next to the running executable.
pub fn find_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locate the running executable")?;
    let mut dir = exe.parent().context("executable has no directory")?.to_path_buf();
    for _ in 0..2 {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
        match dir.parent() {
            Some(parent) => dir = parent.to_path_buf(),
            None => break,
        }
    }
    anyhow::bail!("no {name} binary near {}; build the workspace first (cargo build --workspace --bins)", exe.display())
}

/// Where one controller listens and keeps its data.
#[derive(Clone, Debug)]
pub struct ControllerSpec {
    pub id: u32,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    pub data_dir: PathBuf,
}

/// Where one WAL node listens and keeps its data.
#[derive(Clone, Debug)]
pub struct WalSpec {
    pub id: u32,
    pub zone: String,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    pub data_dir: PathBuf,
    /// Extra flags (tests: a small segment size).
    pub args: Vec<String>,
}

/// Where one broker listens.
#[derive(Clone, Debug)]
pub struct BrokerSpec {
    pub id: u32,
    pub zone: String,
    pub kafka: SocketAddr,
    pub admin: SocketAddr,
    /// Extra flags (for example a smaller cache).
    pub args: Vec<String>,
}

/// A process this launcher started, with what it was started from.
#[derive(Debug)]
pub struct Managed<S> {
    pub spec: S,
    /// The network namespace it runs in (`ip netns exec`), if not this one's.
    pub netns: Option<String>,
    child: Option<Child>,
}

pub type ControllerProcess = Managed<ControllerSpec>;
pub type WalProcess = Managed<WalSpec>;
pub type BrokerProcess = Managed<BrokerSpec>;

impl<S> Managed<S> {
    /// Describes a process to start; nothing runs yet.
    pub fn new(spec: S) -> Managed<S> {
        Managed { spec, netns: None, child: None }
    }

    /// Describes a process to start in network namespace `netns`.
    pub fn in_netns(spec: S, netns: &str) -> Managed<S> {
        Managed { spec, netns: Some(netns.to_owned()), child: None }
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process with SIGSTOP (it holds its sockets but does nothing:
    /// a zombie leader, for tests) or lets it go on with SIGCONT. Stopping
    /// returns once every thread of the process is stopped, so nothing sent
    /// to it afterwards is handled before it is let go.
    #[allow(clippy::disallowed_methods)]
    pub fn pause(&self, paused: bool) {
        let Some(pid) = self.pid() else { return };
        let signal = if paused { Signal::SIGSTOP } else { Signal::SIGCONT };
        let _ = kill(Pid::from_raw(pid as i32), signal);
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while paused && !all_threads_stopped(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Sends SIGTERM and waits up to `patience` for the process to exit; kills
    /// it with SIGKILL after that. Returns the exit status of a process that
    /// exited by itself, `None` if it had to be killed or was not running.
    /// Synchronous on purpose: it also runs at the very end of `keelctl dev`,
    /// where nothing else needs the thread.
    #[allow(clippy::disallowed_methods)]
    pub fn terminate(&mut self, patience: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = std::time::Instant::now() + patience;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

/// Whether every thread of process `pid` is stopped (state T in /proc).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    threads.flatten().all(|thread| {
        let stat = std::fs::read_to_string(thread.path().join("stat")).unwrap_or_default();
        // The state follows the parenthesised command name.
        stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
    })
}

/// Options for a local cluster's controllers.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub cluster_id: String,
    /// Extra flags for every controller (for example a shorter snapshot interval).
    pub controller_args: Vec<String>,
}

/// A set of local processes forming one Keel cluster.
#[derive(Debug)]
pub struct LocalCluster {
    pub dir: PathBuf,
    pub options: ClusterOptions,
    pub controllers: Vec<ControllerProcess>,
    pub wal_nodes: Vec<WalProcess>,
    pub brokers: Vec<BrokerProcess>,
    controller_binary: PathBuf,
    /// A client of the whole quorum, made on first use (it needs a runtime).
    client: std::sync::OnceLock<MetadataClient>,
}

impl LocalCluster {
    /// Describes a cluster of `specs` under `dir`; nothing is started yet.
    pub fn new(dir: &Path, options: ClusterOptions, specs: Vec<ControllerSpec>) -> anyhow::Result<LocalCluster> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        use_cluster_token(dir)?;
        let controllers = specs.into_iter().map(Managed::new).collect();
        Ok(LocalCluster {
            dir: dir.to_path_buf(),
            options,
            controllers,
            wal_nodes: Vec::new(),
            brokers: Vec::new(),
            controller_binary: find_binary("keel-controller")?,
            client: std::sync::OnceLock::new(),
        })
    }

    /// Specs for `count` controllers on free ports of a loopback address of
    /// their own (see `random_loopback_ip`), data under `dir`.
    pub fn free_port_specs(dir: &Path, count: u32) -> anyhow::Result<Vec<ControllerSpec>> {
        let mut addrs = free_addrs(random_loopback_ip(), 2 * count as usize, &[])?.into_iter();
        (1..=count)
            .map(|id| {
                Ok(ControllerSpec {
                    id,
                    grpc: addrs.next().expect("two addresses per controller"),
                    admin: addrs.next().expect("two addresses per controller"),
                    data_dir: dir.join(format!("controller-{id}")),
                })
            })
            .collect()
    }

    /// A free port on this cluster's loopback address that none of its
    /// processes has been given.
    pub fn free_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(free_addrs(self.ip(), 1, &self.taken_addrs())?.remove(0))
    }

    /// The loopback address this cluster's processes listen on.
    pub fn ip(&self) -> std::net::IpAddr {
        self.controllers.first().map_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), |c| c.spec.grpc.ip())
    }

    /// Every address given to one of this cluster's processes.
    fn taken_addrs(&self) -> Vec<SocketAddr> {
        self.controllers
            .iter()
            .flat_map(|c| [c.spec.grpc, c.spec.admin])
            .chain(self.wal_nodes.iter().flat_map(|n| [n.spec.grpc, n.spec.admin]))
            .chain(self.brokers.iter().flat_map(|b| [b.spec.kafka, b.spec.admin]))
            .collect()
    }

    /// The `--peers` value naming every controller.
    pub fn peers(&self) -> String {
        self.controllers.iter().map(|c| format!("{}={}", c.spec.id, c.spec.grpc)).collect::<Vec<_>>().join(",")
    }

    /// The controllers' zones, in the order of `controller_addrs`: the
    /// `id`-th controller is in the `id`-th zone, as the other nodes are.
    pub fn controller_zones(&self) -> String {
        self.controllers.iter().map(|c| zone_of(c.spec.id)).collect::<Vec<_>>().join(",")
    }

    /// The controllers' gRPC addresses.
    pub fn controller_addrs(&self) -> Vec<String> {
        self.controllers.iter().map(|c| c.spec.grpc.to_string()).collect()
    }

    /// A new client of the whole quorum.
    pub fn client(&self) -> anyhow::Result<MetadataClient> {
        MetadataClient::new(self.controller_addrs(), ClientOptions::default())
    }

    /// A new client that talks to controller `index` only.
    pub fn client_of(&self, index: usize) -> anyhow::Result<MetadataClient> {
        MetadataClient::new(vec![self.controllers[index].spec.grpc.to_string()], ClientOptions::default())
    }

    /// The cluster's own client, shared by its status polls.
    fn shared_client(&self) -> anyhow::Result<&MetadataClient> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let client = self.client()?;
        Ok(self.client.get_or_init(|| client))
    }

    /// Starts every controller that is not running.
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for index in 0..self.controllers.len() {
            if !self.controllers[index].is_running() {
                self.start_controller(index)?;
            }
        }
        Ok(())
    }

    /// Starts controller `index` (0-based) from its data directory.
    pub fn start_controller(&mut self, index: usize) -> anyhow::Result<()> {
        let peers = self.peers();
        let controller = &mut self.controllers[index];
        let spec = &controller.spec;
        let args: Vec<std::ffi::OsString> = vec![
            "--node-id".into(),
            spec.id.to_string().into(),
            "--cluster-id".into(),
            self.options.cluster_id.clone().into(),
            "--listen".into(),
            spec.grpc.to_string().into(),
            "--admin-listen".into(),
            spec.admin.to_string().into(),
            "--data-dir".into(),
            spec.data_dir.clone().into(),
            "--peers".into(),
            peers.into(),
        ];
        let args = args.into_iter().chain(self.options.controller_args.iter().map(Into::into));
        let log = format!("controller-{}.log", spec.id);
        let netns = controller.netns.as_deref();
        controller.child = Some(spawn_logged(&self.dir, &log, &self.controller_binary, args, netns)?);
        Ok(())
    }

    /// Adds a controller to the cluster (not started); returns its index.
    pub fn add_controller(&mut self, spec: ControllerSpec) -> usize {
        self.controllers.push(Managed::new(spec));
        // The shared client knew only the former controllers.
        self.client = std::sync::OnceLock::new();
        self.controllers.len() - 1
    }

    /// Adds WAL nodes in zones a, b, c, ... on free loopback ports (not started).
    pub fn add_free_port_wal_nodes(&mut self, count: u32) -> anyhow::Result<()> {
        for id in 1..=count {
            let zone = zone_of(id);
            let addrs = free_addrs(self.ip(), 2, &self.taken_addrs())?;
            let spec = WalSpec {
                id,
                zone,
                grpc: addrs[0],
                admin: addrs[1],
                data_dir: self.dir.join(format!("wal-{id}")),
                args: Vec::new(),
            };
            self.wal_nodes.push(Managed::new(spec));
        }
        Ok(())
    }

    /// Starts WAL node `index` (0-based) from its data directory.
    pub fn start_wal(&mut self, index: usize) -> anyhow::Result<()> {
        let controllers = self.controller_addrs().join(",");
        let controller_zones = self.controller_zones();
        let binary = find_binary("keel-wal")?;
        let node = &mut self.wal_nodes[index];
        let spec = &node.spec;
        let args: Vec<std::ffi::OsString> = vec![
            "--node-id".into(),
            spec.id.to_string().into(),
            "--zone".into(),
            spec.zone.clone().into(),
            "--listen".into(),
            spec.grpc.to_string().into(),
            "--admin-listen".into(),
            spec.admin.to_string().into(),
            "--data-dir".into(),
            spec.data_dir.clone().into(),
            "--controllers".into(),
            controllers.into(),
            "--controller-zones".into(),
            controller_zones.into(),
        ];
        let args = args.into_iter().chain(spec.args.iter().map(Into::into));
        let log = format!("wal-{}.log", spec.id);
        node.child = Some(spawn_logged(&self.dir, &log, &binary, args, node.netns.as_deref())?);
        Ok(())
    }

    /// Starts every WAL node that is not running.
    pub fn start_all_wal(&mut self) -> anyhow::Result<()> {
        for index in 0..self.wal_nodes.len() {
            if !self.wal_nodes[index].is_running() {
                self.start_wal(index)?;
            }
        }
        Ok(())
    }

    /// Waits until every WAL node is registered and active; returns their epochs.
    pub async fn wait_for_wal_nodes(&self, timeout: Duration) -> anyhow::Result<Vec<u64>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(status) = self.shared_client()?.cluster_status().await {
                let epochs: Vec<u64> = self
                    .wal_nodes
                    .iter()
                    .filter_map(|node| {
                        status
                            .nodes
                            .iter()
                            .find(|n| {
                                n.kind == pb::NodeKind::Wal as i32 && n.node_id == node.spec.id && n.state == "active"
                            })
                            .map(|n| n.epoch)
                    })
                    .collect();
                if epochs.len() == self.wal_nodes.len() {
                    return Ok(epochs);
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "WAL nodes did not all register within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The WAL nodes as writer targets, with the incarnations the controller
    /// has registered for them.
    pub async fn wal_targets(&self) -> anyhow::Result<Vec<keel_wal_client::writer::Target>> {
        let image = self.shared_client()?.read_image().await?;
        self.wal_nodes
            .iter()
            .map(|node| {
                let record = image
                    .wal_nodes
                    .get(&keel_controller_client::NodeId(node.spec.id))
                    .with_context(|| format!("WAL node {} is not registered", node.spec.id))?;
                Ok(keel_wal_client::writer::Target {
                    member: keel_wal_client::quorum::Member {
                        node: record.id,
                        zone: record.zone.clone(),
                        incarnation: record.incarnation.clone(),
                    },
                    addr: node.spec.grpc.to_string(),
                })
            })
            .collect()
    }

    /// Adds brokers in zones a, b, c, ... on free loopback ports (not started).
    pub fn add_free_port_brokers(&mut self, count: u32, args: &[&str]) -> anyhow::Result<()> {
        let first = self.brokers.len() as u32 + 1;
        for id in first..first + count {
            let zone = zone_of(id);
            let addrs = free_addrs(self.ip(), 2, &self.taken_addrs())?;
            let args = args.iter().map(|arg| arg.to_string()).collect();
            self.brokers.push(Managed::new(BrokerSpec { id, zone, kafka: addrs[0], admin: addrs[1], args }));
        }
        Ok(())
    }

    /// Starts broker `index` (0-based).
    pub fn start_broker(&mut self, index: usize) -> anyhow::Result<()> {
        let controllers = self.controller_addrs().join(",");
        let controller_zones = self.controller_zones();
        let binary = find_binary("keel-broker")?;
        let broker = &mut self.brokers[index];
        let spec = &broker.spec;
        let mut args: Vec<std::ffi::OsString> = vec![
            "--node-id".into(),
            spec.id.to_string().into(),
            "--zone".into(),
            spec.zone.clone().into(),
            "--listen".into(),
            spec.kafka.to_string().into(),
            "--admin-listen".into(),
            spec.admin.to_string().into(),
            "--controllers".into(),
            controllers.into(),
            "--controller-zones".into(),
            controller_zones.into(),
        ];
        // Unless told to use S3, the brokers share one local object directory
        // (as they would share a bucket).
        if !spec.args.iter().any(|arg| arg.starts_with("--s3-bucket")) {
            args.extend(["--objects-dir".into(), self.dir.join("objects").into()]);
        }
        let args = args.into_iter().chain(spec.args.iter().map(Into::into));
        let log = format!("broker-{}.log", spec.id);
        broker.child = Some(spawn_logged(&self.dir, &log, &binary, args, broker.netns.as_deref())?);
        Ok(())
    }

    /// Starts every broker that is not running.
    pub fn start_all_brokers(&mut self) -> anyhow::Result<()> {
        for index in 0..self.brokers.len() {
            if !self.brokers[index].is_running() {
                self.start_broker(index)?;
            }
        }
        Ok(())
    }

    /// Waits until every running broker reports `/ready` (it holds a session
    /// and writes a WAL log).
    pub async fn wait_for_brokers(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for broker in &self.brokers {
            loop {
                if matches!(http_get(broker.spec.admin, "/ready").await, Ok((200, _))) {
                    break;
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "broker {} was not ready within {timeout:?}",
                    broker.spec.id
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// The Kafka bootstrap list of every broker (`host:port,...`).
    pub fn bootstrap(&self) -> String {
        self.brokers.iter().map(|b| b.spec.kafka.to_string()).collect::<Vec<_>>().join(",")
    }

    /// Deletes controller `index`'s data directory (it must be stopped).
    pub fn wipe_controller(&mut self, index: usize) -> anyhow::Result<()> {
        let controller = &mut self.controllers[index];
        anyhow::ensure!(!controller.is_running(), "stop controller {} before wiping it", controller.spec.id);
        match std::fs::remove_dir_all(&controller.spec.data_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Asks every controller for its own status, all at once, each within
    /// `STATUS_TIMEOUT` (a dead controller answers `None`, promptly). Each
    /// call dials afresh: processes come and go in these clusters, and a
    /// status poll must never depend on a connection made before a restart.
    pub async fn node_statuses(&self) -> Vec<Option<pb::NodeStatusReply>> {
        let Ok(client) = self.client() else { return vec![None; self.controllers.len()] };
        let client = &client;
        let calls = (0..self.controllers.len()).map(|index| async move {
            let mut controller = client.controller(index);
            match tokio::time::timeout(STATUS_TIMEOUT, controller.node_status(pb::NodeStatusRequest {})).await {
                Ok(Ok(reply)) => Some(reply.into_inner()),
                _ => None,
            }
        });
        futures::future::join_all(calls).await
    }

    /// Appends every line of the controllers' logs at `level` (`ERROR`, `WARN`)
    /// that contains none of `allowed`, as `controller-N.log: line`.
    pub fn log_lines_at(&self, level: &str, allowed: &[&str]) -> anyhow::Result<Vec<String>> {
        let marker = format!(" {level} ");
        let mut found = Vec::new();
        let names = self
            .controllers
            .iter()
            .map(|controller| format!("controller-{}.log", controller.spec.id))
            .chain(self.wal_nodes.iter().map(|node| format!("wal-{}.log", node.spec.id)))
            .chain(self.brokers.iter().map(|broker| format!("broker-{}.log", broker.spec.id)));
        for name in names {
            let text = match std::fs::read_to_string(self.dir.join(&name)) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            found.extend(
                text.lines()
                    .filter(|line| line.contains(&marker) && !allowed.iter().any(|allowed| line.contains(allowed)))
                    .map(|line| format!("{name}: {line}")),
            );
        }
        Ok(found)
    }

    /// Waits until a running controller reports itself leader; returns its index.
    pub async fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses = self.node_statuses().await;
            if let Some(index) = statuses.iter().position(|s| s.as_ref().is_some_and(|s| s.role == "leader")) {
                return Ok(index);
            }
            anyhow::ensure!(Instant::now() < deadline, "no controller became leader within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills every process (SIGKILL).
    pub fn kill_all(&mut self) {
        for broker in &mut self.brokers {
            broker.kill9();
        }
        for node in &mut self.wal_nodes {
            node.kill9();
        }
        for controller in &mut self.controllers {
            controller.kill9();
        }
    }

    /// Stops every process with SIGTERM, waiting up to `patience` for each.
    pub fn stop_all(&mut self, patience: Duration) {
        for broker in &mut self.brokers {
            if broker.is_running() && broker.terminate(patience).is_none() {
                eprintln!("broker {} did not stop within {patience:?} and was killed", broker.spec.id);
            }
        }
        for node in &mut self.wal_nodes {
            if node.is_running() && node.terminate(patience).is_none() {
                eprintln!("WAL node {} did not stop within {patience:?} and was killed", node.spec.id);
            }
        }
        for controller in &mut self.controllers {
            if controller.is_running() && controller.terminate(patience).is_none() {
                eprintln!("controller c{} did not stop within {patience:?} and was killed", controller.spec.id);
            }
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// The zone of the `id`-th node of a kind: a, b, c, ... in turn.
fn zone_of(id: u32) -> String {
    char::from(b'a' + ((id - 1) % 26) as u8).to_string()
}

/// The file in a cluster's directory that holds its cluster token.
pub const TOKEN_FILE: &str = "cluster-token";

/// Gives the cluster in `dir` a cluster token, and this process too (its
/// clients send it; the processes it starts get it as KEEL_CLUSTER_TOKEN):
/// the one in `dir/cluster-token` if there is one (a restarted dev
/// cluster), else this process's, else a new random one; written there,
/// readable by its owner only, for keelctl.
fn use_cluster_token(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(TOKEN_FILE);
    let token = match std::fs::read_to_string(&path) {
        Ok(token) => token.trim().to_owned(),
        Err(_) => {
            let token = keel_proto::auth::token_text().map_or_else(
                || {
                    use rand::Rng;
                    (0..32).map(|_| format!("{:x}", rand::thread_rng().gen_range(0..16u8))).collect()
                },
                str::to_owned,
            );
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("write {}", path.display()))?;
            std::io::Write::write_all(&mut file, token.as_bytes())?;
            token
        }
    };
    keel_proto::auth::set_token(Some(&token)).map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))
}

/// Starts `binary` with `args`, its stdout and stderr appended to `log` in
/// `dir`; in network namespace `netns` when given (`ip netns exec` execs
/// the binary, so the child's pid is the binary's).
fn spawn_logged(
    dir: &Path,
    log: &str,
    binary: &Path,
    args: impl IntoIterator<Item = std::ffi::OsString>,
    netns: Option<&str>,
) -> anyhow::Result<Child> {
    let log_path = dir.join(log);
    let log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("open {}", log_path.display()))?;
    let mut command = match netns {
        Some(netns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", netns]).arg(binary);
            command
        }
        None => Command::new(binary),
    };
    if let Some(token) = keel_proto::auth::token_text() {
        command.env("KEEL_CLUSTER_TOKEN", token);
    }
    // A process group of its own: a terminal's Ctrl-C reaches the launcher
    // alone, which then stops the cluster in order (brokers first, each
    // handing its partitions to the ones still running).
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    die_with_launcher(&mut command);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("start {}", binary.display()))
}

/// Out of the launcher's process group, nothing would end a process if the
/// launcher died without stopping it (a kill -9, a test killed at its
/// timeout). So the kernel sends it SIGKILL when the thread that started it
/// exits (see the module's note on threads), and it does not start at all
/// if the launcher is already gone.
#[allow(unsafe_code)]
fn die_with_launcher(command: &mut Command) {
    let launcher = nix::unistd::getpid();
    let failed = |errno: nix::errno::Errno| std::io::Error::from_raw_os_error(errno as i32);
    // SAFETY: the closure runs in the child between fork and exec. It makes
    // only the async-signal-safe prctl and getppid calls and allocates nothing.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(command, move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(failed)?;
            if nix::unistd::getppid() != launcher {
                return Err(failed(nix::errno::Errno::ESRCH));
            }
            Ok(())
        });
    }
}

/// A random loopback address other than 127.0.0.1 (all of 127.0.0.0/8 is
/// local on Linux). A cluster whose processes all listen on their own address
/// cannot lose a port it picked to the ephemeral port of some connection made
/// from 127.0.0.1 (by another test) between picking and binding it.
pub fn random_loopback_ip() -> std::net::IpAddr {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, rng.gen_range(1..=254), rng.gen(), rng.gen_range(1..=254)))
}

/// `count` distinct addresses on `ip` with ports the kernel handed out, none
/// of them in `taken`. Every listener is held until all are chosen: a port
/// released at once can be handed out again by the very next bind.
pub fn free_addrs(ip: std::net::IpAddr, count: usize, taken: &[SocketAddr]) -> anyhow::Result<Vec<SocketAddr>> {
    let mut listeners = Vec::with_capacity(count);
    while listeners.len() < count {
        let listener = TcpListener::bind((ip, 0)).with_context(|| format!("find a free port on {ip}"))?;
        if !taken.contains(&listener.local_addr()?) {
            listeners.push(listener);
        }
    }
    listeners.iter().map(|listener| Ok(listener.local_addr()?)).collect()
}

/// The value of an unlabelled metric in Prometheus text, 0 when absent.
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
}

/// Sends `GET path` over HTTP/1.0 to `addr` and returns the status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    http_request(addr, "GET", path, "").await
}

/// Sends `method path` with `body` over HTTP/1.0 to `addr` and returns the
/// status code and body.
pub async fn http_request(addr: SocketAddr, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr)).await??;
    let request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response)).await??;
    let status = response.split_whitespace().nth(1).and_then(|code| code.parse().ok());
    let status = status.ok_or_else(|| anyhow::anyhow!("not an HTTP response: {response:?}"))?;
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Ok((status, body))
}

//! Controller configuration: a TOML file (`--config`), every field of which a
//! flag or a `KEEL_CONTROLLER_*` environment variable overrides.
//! Precedence: flag, then environment, then file, then default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use keel_controller_client::ControllerId;
use serde::{Deserialize, Serialize};

/// The file form. Every key is optional; unknown keys are errors.
#[derive(Clone, Debug, Default, Deserialize, Serialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigToml {
    /// This controller's id (stable across disk replacements).
    #[arg(long, env = "KEEL_CONTROLLER_NODE_ID")]
    pub node_id: Option<u32>,
    /// The cluster this controller belongs to; a data directory of another cluster is refused.
    #[arg(long, env = "KEEL_CONTROLLER_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// gRPC listen address (Raft and metadata API). Default 127.0.0.1:9190.
    #[arg(long, env = "KEEL_CONTROLLER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The address other processes use to reach this controller. Default: `listen`.
    #[arg(long, env = "KEEL_CONTROLLER_ADVERTISE")]
    pub advertise: Option<String>,
    /// Admin HTTP listen address (/metrics, /health, /ready). Default 127.0.0.1:9290.
    #[arg(long, env = "KEEL_CONTROLLER_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Data directory (RocksDB).
    #[arg(long, env = "KEEL_CONTROLLER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Controllers of the initial quorum, as `id=host:port`, comma-separated.
    /// The lowest id bootstraps the quorum when every one of them is fresh.
    #[arg(long, env = "KEEL_CONTROLLER_PEERS", value_delimiter = ',')]
    pub peers: Option<Vec<String>>,
    /// Raft heartbeat interval, also the deadline of each append RPC. Default 100ms.
    #[arg(long, env = "KEEL_CONTROLLER_HEARTBEAT_INTERVAL", value_parser = humantime_serde::re::humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Option<Duration>,
    /// Shortest Raft election timeout. Default 300ms. A follower also waits out the
    /// leader lease (the longest election timeout) after the last heartbeat, so
    /// re-election after a leader dies takes about max + a random [min, max].
    #[arg(long, env = "KEEL_CONTROLLER_ELECTION_TIMEOUT_MIN", value_parser = humantime_serde::re::humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub election_timeout_min: Option<Duration>,
    /// Longest Raft election timeout. Default 600ms.
    #[arg(long, env = "KEEL_CONTROLLER_ELECTION_TIMEOUT_MAX", value_parser = humantime_serde::re::humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub election_timeout_max: Option<Duration>,
    /// Broker and WAL node session timeout. Default 2s.
    #[arg(long, env = "KEEL_CONTROLLER_SESSION_TIMEOUT", value_parser = humantime_serde::re::humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub session_timeout: Option<Duration>,
    /// Build a snapshot after this many log entries since the last one. Default 5000.
    #[arg(long, env = "KEEL_CONTROLLER_SNAPSHOT_EVERY")]
    pub snapshot_every: Option<u64>,
    /// Log entries kept behind the snapshot for slow followers and watchers. Default 1000.
    #[arg(long, env = "KEEL_CONTROLLER_LOGS_KEPT_AFTER_SNAPSHOT")]
    pub logs_kept_after_snapshot: Option<u64>,
    /// The cluster's shared secret (at least 16 characters): every internal
    /// gRPC call carries it, and controllers and WAL nodes refuse calls
    /// without it. The same on every process of the cluster and for
    /// keelctl. Unset: internal calls are not authenticated.
    #[arg(long, env = "KEEL_CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: Option<String>,
}

/// One controller of the initial quorum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub id: ControllerId,
    pub addr: String,
}

/// The validated, effective configuration.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    pub node_id: ControllerId,
    pub cluster_id: String,
    pub listen: SocketAddr,
    pub advertise: String,
    pub admin_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub peers: Vec<Peer>,
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    pub session_timeout: Duration,
    pub snapshot_every: u64,
    pub logs_kept_after_snapshot: u64,
    pub cluster_token: Option<keel_proto::auth::Secret>,
}

impl ConfigToml {
    /// Fills every field this one leaves unset from `lower`.
    pub fn or(self, lower: ConfigToml) -> ConfigToml {
        ConfigToml {
            node_id: self.node_id.or(lower.node_id),
            cluster_id: self.cluster_id.or(lower.cluster_id),
            listen: self.listen.or(lower.listen),
            advertise: self.advertise.or(lower.advertise),
            admin_listen: self.admin_listen.or(lower.admin_listen),
            data_dir: self.data_dir.or(lower.data_dir),
            peers: self.peers.or(lower.peers),
            heartbeat_interval: self.heartbeat_interval.or(lower.heartbeat_interval),
            election_timeout_min: self.election_timeout_min.or(lower.election_timeout_min),
            election_timeout_max: self.election_timeout_max.or(lower.election_timeout_max),
            session_timeout: self.session_timeout.or(lower.session_timeout),
            snapshot_every: self.snapshot_every.or(lower.snapshot_every),
            logs_kept_after_snapshot: self.logs_kept_after_snapshot.or(lower.logs_kept_after_snapshot),
            cluster_token: self.cluster_token.or(lower.cluster_token),
        }
    }

    /// Validates and applies defaults.
    pub fn validate(self) -> anyhow::Result<ControllerConfig> {
        let ConfigToml {
            node_id,
            cluster_id,
            listen,
            advertise,
            admin_listen,
            data_dir,
            peers,
            heartbeat_interval,
            election_timeout_min,
            election_timeout_max,
            session_timeout,
            snapshot_every,
            logs_kept_after_snapshot,
            cluster_token,
        } = self;
        let node_id = ControllerId(node_id.context("node_id is required")?);
        let cluster_id = cluster_id.context("cluster_id is required")?;
        anyhow::ensure!(!cluster_id.is_empty(), "cluster_id must not be empty");
        let listen = listen.unwrap_or_else(|| "127.0.0.1:9190".parse().expect("valid literal"));
        let advertise = advertise.unwrap_or_else(|| listen.to_string());
        let data_dir = data_dir.context("data_dir is required")?;
        let peers =
            peers.unwrap_or_default().iter().map(|peer| parse_peer(peer)).collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(!peers.is_empty(), "peers must list the controllers of the initial quorum (id=host:port)");
        if let Some(me) = peers.iter().find(|peer| peer.id == node_id) {
            anyhow::ensure!(
                me.addr == advertise,
                "peers lists controller {node_id} at {} but it advertises {advertise}",
                me.addr
            );
        }
        let heartbeat_interval = heartbeat_interval.unwrap_or(Duration::from_millis(100));
        let election_timeout_min = election_timeout_min.unwrap_or(Duration::from_millis(300));
        let election_timeout_max = election_timeout_max.unwrap_or(Duration::from_millis(600));
        anyhow::ensure!(
            heartbeat_interval < election_timeout_min,
            "heartbeat_interval must be shorter than election_timeout_min"
        );
        anyhow::ensure!(
            election_timeout_min < election_timeout_max,
            "election_timeout_min must be shorter than election_timeout_max"
        );
        let session_timeout = session_timeout.unwrap_or(Duration::from_secs(2));
        anyhow::ensure!(session_timeout >= Duration::from_millis(100), "session_timeout must be at least 100ms");
        let snapshot_every = snapshot_every.unwrap_or(5000);
        anyhow::ensure!(snapshot_every > 0, "snapshot_every must be positive");
        Ok(ControllerConfig {
            cluster_token: cluster_token.map(keel_proto::auth::Secret),
            node_id,
            cluster_id,
            listen,
            advertise,
            admin_listen: admin_listen.unwrap_or_else(|| "127.0.0.1:9290".parse().expect("valid literal")),
            data_dir,
            peers,
            heartbeat_interval,
            election_timeout_min,
            election_timeout_max,
            session_timeout,
            snapshot_every,
            logs_kept_after_snapshot: logs_kept_after_snapshot.unwrap_or(1000),
        })
    }
}

fn parse_peer(text: &str) -> anyhow::Result<Peer> {
    let (id, addr) = text.split_once('=').with_context(|| format!("peer {text:?} is not id=host:port"))?;
    let id = id.trim().parse().with_context(|| format!("peer {text:?} has no numeric id"))?;
    let addr = addr.trim();
    anyhow::ensure!(addr.contains(':'), "peer {text:?} has no port");
    Ok(Peer { id: ControllerId(id), addr: addr.to_owned() })
}

impl ControllerConfig {
    /// The controller that bootstraps a fresh quorum: the lowest id among the peers.
    pub fn is_bootstrapper(&self) -> bool {
        self.peers.iter().map(|peer| peer.id).min() == Some(self.node_id)
    }

    /// The openraft configuration derived from this one.
    pub fn raft_config(&self) -> anyhow::Result<openraft::Config> {
        let config = openraft::Config {
            cluster_name: self.cluster_id.clone(),
            heartbeat_interval: self.heartbeat_interval.as_millis() as u64,
            election_timeout_min: self.election_timeout_min.as_millis() as u64,
            election_timeout_max: self.election_timeout_max.as_millis() as u64,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.logs_kept_after_snapshot,
            // Snapshots travel in chunks well under the gRPC message limit.
            snapshot_max_chunk_size: 4 << 20,
            install_snapshot_timeout: 2000,
            ..Default::default()
        };
        Ok(config.validate()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let file: ConfigToml = keel_common::config::parse_toml(
            "node_id = 1\ncluster_id = \"c\"\ndata_dir = \"/d\"\npeers = [\"1=127.0.0.1:9190\"]\nsession_timeout = \"3s\"\n",
        )
        .unwrap();
        let flags = ConfigToml { session_timeout: Some(Duration::from_secs(5)), ..Default::default() };
        let config = flags.or(file).validate().unwrap();
        assert_eq!(config.session_timeout, Duration::from_secs(5));
        assert_eq!(config.heartbeat_interval, Duration::from_millis(100));
        assert!(config.is_bootstrapper());
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let error =
            keel_common::config::parse_toml::<ConfigToml>("node_id = 1\nsesion_timeout = \"3s\"\n").unwrap_err();
        let message = format!("{error:#}");
        assert!(message.contains("sesion_timeout") && message.contains("line 2"), "{message}");
    }

    #[test]
    fn a_peer_list_that_disagrees_with_the_advertised_address_is_refused() {
        let config = ConfigToml {
            node_id: Some(2),
            cluster_id: Some("c".into()),
            data_dir: Some("/d".into()),
            advertise: Some("127.0.0.1:1".into()),
            peers: Some(vec!["2=127.0.0.1:2".into()]),
            ..Default::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn the_example_configs_in_deploy_parse_and_validate() {
        let dir = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
            .join("../deploy/config");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !(name.starts_with("controller") && name.ends_with(".toml")) {
                continue;
            }
            let file: ConfigToml = keel_common::config::load_toml(&path).unwrap();
            let config = file.validate().unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(config.peers.len(), 3, "{name}");
            config.raft_config().unwrap();
            checked += 1;
        }
        assert_eq!(checked, 3, "expected the three zone configs in {}", dir.display());
    }
}

//! WAL node configuration: a TOML file (`--config`), every field of which a
//! flag or a `KEEL_WAL_*` environment variable overrides.
//! Precedence: flag, then environment, then file, then default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use keel_controller_client::NodeId;
use serde::{Deserialize, Serialize};

/// The file form. Every key is optional; unknown keys are errors.
#[derive(Clone, Debug, Default, Deserialize, Serialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigToml {
    /// This node's id (unique among WAL nodes).
    #[arg(long, env = "KEEL_WAL_NODE_ID")]
    pub node_id: Option<u32>,
    /// The availability zone this node runs in.
    #[arg(long, env = "KEEL_WAL_ZONE")]
    pub zone: Option<String>,
    /// gRPC listen address. Default 127.0.0.1:9390.
    #[arg(long, env = "KEEL_WAL_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The address brokers use to reach this node. Default: `listen`.
    #[arg(long, env = "KEEL_WAL_ADVERTISE")]
    pub advertise: Option<String>,
    /// Admin HTTP listen address (/metrics, /health, /ready). Default 127.0.0.1:9490.
    #[arg(long, env = "KEEL_WAL_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Data directory (journal segments and the incarnation file).
    #[arg(long, env = "KEEL_WAL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Controller gRPC addresses, comma-separated.
    #[arg(long, env = "KEEL_WAL_CONTROLLERS", value_delimiter = ',')]
    pub controllers: Option<Vec<String>>,
    /// The zone of each controller, in the order of `controllers`,
    /// comma-separated. A node calls its own zone's controller first;
    /// unset, it starts at a random one.
    #[arg(long, env = "KEEL_WAL_CONTROLLER_ZONES", value_delimiter = ',')]
    pub controller_zones: Option<Vec<String>>,
    /// For fault tests only: serve `/faults/...` on the admin port, through
    /// which a chaos run slows this node's fdatasyncs or cuts its power
    /// (`keel_wal::faults`). Default false; never set it in production.
    #[arg(long, env = "KEEL_WAL_ALLOW_DISK_FAULTS")]
    pub allow_disk_faults: Option<bool>,
    /// Size of each journal segment file, in bytes. Default 64 MiB.
    #[arg(long, env = "KEEL_WAL_SEGMENT_BYTES")]
    pub segment_bytes: Option<u64>,
    /// The most bytes the journal may take on disk; appends beyond it are
    /// refused (retriably) until entries are trimmed. Default: no cap.
    #[arg(long, env = "KEEL_WAL_JOURNAL_BYTES_MAX")]
    pub journal_bytes_max: Option<u64>,
    /// Segments whose entries are all trimmed are kept, up to this many, and
    /// reused as new segments (no zero-filling); more are deleted. Default 4.
    #[arg(long, env = "KEEL_WAL_RECYCLED_SEGMENTS")]
    pub recycled_segments: Option<usize>,
    /// Heartbeat interval to the controller. Default 250ms.
    #[arg(long, env = "KEEL_WAL_HEARTBEAT_INTERVAL", value_parser = humantime_serde::re::humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Option<Duration>,
    /// The cluster's shared secret (at least 16 characters): every internal
    /// gRPC call carries it, and controllers and WAL nodes refuse calls
    /// without it. The same on every process of the cluster and for
    /// keelctl. Unset: internal calls are not authenticated.
    #[arg(long, env = "KEEL_CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: Option<String>,
}

/// The validated, effective configuration.
#[derive(Clone, Debug)]
pub struct WalConfig {
    pub node_id: NodeId,
    pub zone: String,
    pub listen: SocketAddr,
    pub advertise: String,
    pub admin_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub controllers: Vec<String>,
    pub controller_zones: Vec<String>,
    pub allow_disk_faults: bool,
    pub segment_bytes: u64,
    pub journal_bytes_max: Option<u64>,
    pub recycled_segments: usize,
    pub heartbeat_interval: Duration,
    pub cluster_token: Option<keel_proto::auth::Secret>,
}

impl ConfigToml {
    /// Fills every field this one leaves unset from `lower`.
    pub fn or(self, lower: ConfigToml) -> ConfigToml {
        ConfigToml {
            node_id: self.node_id.or(lower.node_id),
            zone: self.zone.or(lower.zone),
            listen: self.listen.or(lower.listen),
            advertise: self.advertise.or(lower.advertise),
            admin_listen: self.admin_listen.or(lower.admin_listen),
            data_dir: self.data_dir.or(lower.data_dir),
            controllers: self.controllers.or(lower.controllers),
            controller_zones: self.controller_zones.or(lower.controller_zones),
            allow_disk_faults: self.allow_disk_faults.or(lower.allow_disk_faults),
            segment_bytes: self.segment_bytes.or(lower.segment_bytes),
            journal_bytes_max: self.journal_bytes_max.or(lower.journal_bytes_max),
            recycled_segments: self.recycled_segments.or(lower.recycled_segments),
            heartbeat_interval: self.heartbeat_interval.or(lower.heartbeat_interval),
            cluster_token: self.cluster_token.or(lower.cluster_token),
        }
    }

    pub fn validate(self) -> anyhow::Result<WalConfig> {
        let ConfigToml {
            node_id,
            zone,
            listen,
            advertise,
            admin_listen,
            data_dir,
            controllers,
            controller_zones,
            allow_disk_faults,
            segment_bytes,
            journal_bytes_max,
            recycled_segments,
            heartbeat_interval,
            cluster_token,
        } = self;
        let zone = zone.context("zone is required")?;
        anyhow::ensure!(!zone.is_empty(), "zone must not be empty");
        let listen = listen.unwrap_or_else(|| "127.0.0.1:9390".parse().expect("valid literal"));
        let controllers = controllers.unwrap_or_default();
        let controller_zones = controller_zones.unwrap_or_default();
        keel_controller_client::check_controllers(&controllers, &controller_zones)?;
        let segment_bytes = segment_bytes.unwrap_or(64 << 20);
        let entry_max = keel_wal_client::entry::ENTRY_BYTES_MAX as u64;
        anyhow::ensure!(
            segment_bytes >= entry_max + 1024 + crate::journal::log_state_reserve(segment_bytes),
            "segment_bytes must hold the largest entry ({entry_max} bytes), a header and room for log states"
        );
        Ok(WalConfig {
            cluster_token: cluster_token.map(keel_proto::auth::Secret),
            node_id: NodeId(node_id.context("node_id is required")?),
            zone,
            listen,
            advertise: advertise.unwrap_or_else(|| listen.to_string()),
            admin_listen: admin_listen.unwrap_or_else(|| "127.0.0.1:9490".parse().expect("valid literal")),
            data_dir: data_dir.context("data_dir is required")?,
            controllers,
            controller_zones,
            allow_disk_faults: allow_disk_faults.unwrap_or(false),
            segment_bytes,
            journal_bytes_max,
            recycled_segments: recycled_segments.unwrap_or(4),
            heartbeat_interval: heartbeat_interval.unwrap_or(Duration::from_millis(250)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_config_validates_and_unknown_keys_are_refused() {
        let file: ConfigToml = keel_common::config::parse_toml(
            "node_id = 1\nzone = \"a\"\ndata_dir = \"/d\"\ncontrollers = [\"127.0.0.1:9190\"]\n",
        )
        .unwrap();
        let config = file.validate().unwrap();
        assert_eq!((config.segment_bytes, config.advertise.as_str()), (64 << 20, "127.0.0.1:9390"));
        assert!(keel_common::config::parse_toml::<ConfigToml>("zone = \"a\"\nzones = 3\n").is_err());
        let small = ConfigToml {
            segment_bytes: Some(1 << 20),
            ..keel_common::config::parse_toml("node_id = 1\nzone = \"a\"\ndata_dir = \"/d\"\ncontrollers = [\"x:1\"]")
                .unwrap()
        };
        assert!(small.validate().is_err(), "a segment must hold the largest entry");
        let zones = ConfigToml {
            controller_zones: Some(vec!["a".into(), "b".into()]),
            ..keel_common::config::parse_toml("node_id = 1\nzone = \"a\"\ndata_dir = \"/d\"\ncontrollers = [\"x:1\"]")
                .unwrap()
        };
        let error = zones.validate().unwrap_err().to_string();
        assert!(error.contains("one zone per controller"), "{error}");
    }

    #[test]
    fn the_example_configs_in_deploy_parse_and_validate() {
        let dir = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
            .join("../deploy/config");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !(name.starts_with("wal") && name.ends_with(".toml")) {
                continue;
            }
            let file: ConfigToml = keel_common::config::load_toml(&path).unwrap();
            let config = file.validate().unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(config.controllers.len(), 3, "{name}");
            assert_eq!(config.controller_zones, ["a", "b", "c"], "{name}");
            checked += 1;
        }
        assert_eq!(checked, 3, "expected the three zone configs in {}", dir.display());
    }
}

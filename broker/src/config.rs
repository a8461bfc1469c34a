//! Broker configuration: a TOML file (`--config`), every field of which a
//! flag or a `KEEL_BROKER_*` environment variable overrides.
//! Precedence: flag, then environment, then file, then default.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use keel_controller_client::NodeId;
use serde::{Deserialize, Serialize};

/// The file form. Every key is optional; unknown keys are errors.
#[derive(Clone, Debug, Default, Deserialize, Serialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigToml {
    /// This broker's id: its Kafka broker id, unique among brokers.
    #[arg(long, env = "KEEL_BROKER_NODE_ID")]
    pub node_id: Option<u32>,
    /// The availability zone this broker runs in (its Kafka `rack`).
    #[arg(long, env = "KEEL_BROKER_ZONE")]
    pub zone: Option<String>,
    /// Kafka listen address. Default 127.0.0.1:9092.
    #[arg(long, env = "KEEL_BROKER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The host:port Kafka clients are told to use for this broker. Default: `listen`.
    #[arg(long, env = "KEEL_BROKER_ADVERTISE")]
    pub advertise: Option<String>,
    /// Admin HTTP listen address (/metrics, /health, /ready). Default 127.0.0.1:9592.
    #[arg(long, env = "KEEL_BROKER_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Controller gRPC addresses, comma-separated.
    #[arg(long, env = "KEEL_BROKER_CONTROLLERS", value_delimiter = ',')]
    pub controllers: Option<Vec<String>>,
    /// Heartbeat interval to the controller. Default 250ms.
    #[arg(long, env = "KEEL_BROKER_HEARTBEAT_INTERVAL", value_parser = humantime_serde::re::humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Option<Duration>,
    /// Bytes of recent record batches kept in memory for fetches. Default 256 MiB.
    #[arg(long, env = "KEEL_BROKER_CACHE_BYTES")]
    pub cache_bytes: Option<u64>,
    /// The largest Kafka request accepted, in bytes (Kafka's
    /// `socket.request.max.bytes`). Default 100 MiB.
    #[arg(long, env = "KEEL_BROKER_REQUEST_BYTES_MAX")]
    pub request_bytes_max: Option<u32>,
    /// The cluster id reported to Kafka clients. Default "keel".
    #[arg(long, env = "KEEL_BROKER_CLUSTER_ID")]
    pub cluster_id: Option<String>,
}

/// The validated, effective configuration.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub node_id: NodeId,
    pub zone: String,
    pub listen: SocketAddr,
    pub advertise: String,
    pub admin_listen: SocketAddr,
    pub controllers: Vec<String>,
    pub heartbeat_interval: Duration,
    pub cache_bytes: u64,
    pub request_bytes_max: u32,
    pub cluster_id: String,
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
            controllers: self.controllers.or(lower.controllers),
            heartbeat_interval: self.heartbeat_interval.or(lower.heartbeat_interval),
            cache_bytes: self.cache_bytes.or(lower.cache_bytes),
            request_bytes_max: self.request_bytes_max.or(lower.request_bytes_max),
            cluster_id: self.cluster_id.or(lower.cluster_id),
        }
    }

    pub fn validate(self) -> anyhow::Result<BrokerConfig> {
        let ConfigToml {
            node_id,
            zone,
            listen,
            advertise,
            admin_listen,
            controllers,
            heartbeat_interval,
            cache_bytes,
            request_bytes_max,
            cluster_id,
        } = self;
        let zone = zone.context("zone is required")?;
        anyhow::ensure!(!zone.is_empty(), "zone must not be empty");
        let listen = listen.unwrap_or_else(|| "127.0.0.1:9092".parse().expect("valid literal"));
        let controllers = controllers.unwrap_or_default();
        anyhow::ensure!(!controllers.is_empty(), "controllers must list the controller quorum's addresses");
        let advertise = advertise.unwrap_or_else(|| listen.to_string());
        anyhow::ensure!(
            advertise.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()),
            "advertise must be host:port, not {advertise:?}"
        );
        let request_bytes_max = request_bytes_max.unwrap_or(100 << 20);
        anyhow::ensure!(request_bytes_max >= 1 << 20, "request_bytes_max must be at least 1 MiB");
        Ok(BrokerConfig {
            node_id: NodeId(node_id.context("node_id is required")?),
            zone,
            listen,
            advertise,
            admin_listen: admin_listen.unwrap_or_else(|| "127.0.0.1:9592".parse().expect("valid literal")),
            controllers,
            heartbeat_interval: heartbeat_interval.unwrap_or(Duration::from_millis(250)),
            cache_bytes: cache_bytes.unwrap_or(256 << 20),
            request_bytes_max,
            cluster_id: cluster_id.unwrap_or_else(|| "keel".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_config_validates_and_bad_values_are_refused() {
        let file: ConfigToml =
            keel_common::config::parse_toml("node_id = 1\nzone = \"a\"\ncontrollers = [\"127.0.0.1:9190\"]\n").unwrap();
        let config = file.clone().validate().unwrap();
        assert_eq!(config.advertise, "127.0.0.1:9092");
        assert_eq!(config.cache_bytes, 256 << 20);
        assert!(keel_common::config::parse_toml::<ConfigToml>("zone = \"a\"\nadvertised = \"x:1\"\n").is_err());
        let bad = ConfigToml { advertise: Some("no-port".into()), ..file };
        assert!(bad.validate().is_err(), "advertise needs a port");
    }

    #[test]
    fn the_example_configs_in_deploy_parse_and_validate() {
        let dir = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
            .join("../deploy/config");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !(name.starts_with("broker") && name.ends_with(".toml")) {
                continue;
            }
            let file: ConfigToml = keel_common::config::load_toml(&path).unwrap();
            let config = file.validate().unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(config.controllers.len(), 3, "{name}");
            checked += 1;
        }
        assert_eq!(checked, 3, "expected the three zone configs in {}", dir.display());
    }
}

//! Broker configuration: a TOML file (`--config`), every field of which a
//! flag or a `KEEL_BROKER_*` environment variable overrides.
//! Precedence: flag, then environment, then file, then default.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use keel_controller_client::NodeId;
use serde::{Deserialize, Serialize};

pub mod listeners;

use listeners::{ClientAuth, Listener, Mechanism, TlsFiles};

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
    /// More Kafka listeners as `NAME://ip:port`, comma-separated (Kafka's
    /// `listeners`; port 0 binds a free one). The one at `listen` is named
    /// PLAINTEXT: brokers reach each other there.
    #[arg(long, env = "KEEL_BROKER_LISTENERS", value_delimiter = ',')]
    pub listeners: Option<Vec<String>>,
    /// What clients are told for each of `listeners`, as `NAME://host:port`,
    /// comma-separated (Kafka's `advertised.listeners`). Default: the bound address.
    #[arg(long, env = "KEEL_BROKER_ADVERTISED_LISTENERS", value_delimiter = ',')]
    pub advertised_listeners: Option<Vec<String>>,
    /// Each listener's security protocol as `NAME:PROTOCOL` (PLAINTEXT or
    /// SSL), comma-separated (Kafka's `listener.security.protocol.map`).
    /// A listener missing here must be named after its protocol.
    #[arg(long, env = "KEEL_BROKER_LISTENER_SECURITY_PROTOCOL_MAP", value_delimiter = ',')]
    pub listener_security_protocol_map: Option<Vec<String>>,
    /// The SSL listeners' certificate chain, a PEM file; read again when it
    /// changes or on SIGHUP, without dropping a connection.
    #[arg(long, env = "KEEL_BROKER_SSL_CERTIFICATE")]
    pub ssl_certificate: Option<std::path::PathBuf>,
    /// The private key of `ssl_certificate`, a PEM file (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "KEEL_BROKER_SSL_PRIVATE_KEY")]
    pub ssl_private_key: Option<std::path::PathBuf>,
    /// The CA certificates (PEM) client certificates must chain to.
    #[arg(long, env = "KEEL_BROKER_SSL_CLIENT_CA")]
    pub ssl_client_ca: Option<std::path::PathBuf>,
    /// `required`, `requested` or `none` (Kafka's `ssl.client.auth`). Default none.
    #[arg(long, env = "KEEL_BROKER_SSL_CLIENT_AUTH")]
    pub ssl_client_auth: Option<String>,
    /// The SASL mechanisms SASL listeners offer, comma-separated:
    /// SCRAM-SHA-256, SCRAM-SHA-512, PLAIN (Kafka's
    /// `sasl.enabled.mechanisms`). Default SCRAM-SHA-256,SCRAM-SHA-512.
    #[arg(long, env = "KEEL_BROKER_SASL_ENABLED_MECHANISMS", value_delimiter = ',')]
    pub sasl_enabled_mechanisms: Option<Vec<String>>,
    /// Admin HTTP listen address (/metrics, /health, /ready). Default 127.0.0.1:9592.
    #[arg(long, env = "KEEL_BROKER_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Controller gRPC addresses, comma-separated.
    #[arg(long, env = "KEEL_BROKER_CONTROLLERS", value_delimiter = ',')]
    pub controllers: Option<Vec<String>>,
    /// The zone of each controller, in the order of `controllers`,
    /// comma-separated. A node calls its own zone's controller first;
    /// unset, it starts at a random one.
    #[arg(long, env = "KEEL_BROKER_CONTROLLER_ZONES", value_delimiter = ',')]
    pub controller_zones: Option<Vec<String>>,
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
    /// The most Kafka client connections open at once (Kafka's
    /// `max.connections`); more are closed as they arrive. Default 10000.
    #[arg(long, env = "KEEL_BROKER_CONNECTIONS_MAX")]
    pub connections_max: Option<u32>,
    /// The cluster id reported to Kafka clients. Default "keel".
    #[arg(long, env = "KEEL_BROKER_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// Object storage in a local directory (single machine, `keelctl dev`).
    /// Exactly one of this and `s3_bucket` is required.
    #[arg(long, env = "KEEL_BROKER_OBJECTS_DIR")]
    pub objects_dir: Option<std::path::PathBuf>,
    /// Object storage in this S3 bucket.
    #[arg(long, env = "KEEL_BROKER_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// An S3-compatible endpoint (http://host:port); unset for AWS S3.
    #[arg(long, env = "KEEL_BROKER_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// The S3 region. Default: the AWS environment's, else us-east-1.
    #[arg(long, env = "KEEL_BROKER_S3_REGION")]
    pub s3_region: Option<String>,
    /// Address the bucket in the path, as most S3-compatible servers want. Default false.
    #[arg(long, env = "KEEL_BROKER_S3_PATH_STYLE")]
    pub s3_path_style: Option<bool>,
    /// Static S3 credentials; unset: the AWS environment's (variables, profile, role).
    #[arg(long, env = "KEEL_BROKER_S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,
    #[arg(long, env = "KEEL_BROKER_S3_SECRET_ACCESS_KEY")]
    pub s3_secret_access_key: Option<String>,
    /// Upload the WAL's data to the object store at least this often. Default 5s.
    #[arg(long, env = "KEEL_BROKER_UPLOAD_INTERVAL", value_parser = humantime_serde::re::humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub upload_interval: Option<Duration>,
    /// The most WAL bytes one uploaded object holds (more: several uploads
    /// back to back). Default 32 MiB.
    #[arg(long, env = "KEEL_BROKER_UPLOAD_BYTES")]
    pub upload_bytes: Option<u64>,
    /// Bytes of object ranges kept in memory for cold reads. Default 128 MiB.
    #[arg(long, env = "KEEL_BROKER_OBJECT_CACHE_BYTES")]
    pub object_cache_bytes: Option<u64>,
    /// Bytes of the WAL log a broker keeps in memory for a member that has
    /// not acknowledged them (a WAL node down); over this the log is sealed
    /// early and writing goes on with the live nodes. Default 256 MiB.
    #[arg(long, env = "KEEL_BROKER_WAL_UNREPLICATED_BYTES_MAX")]
    pub wal_unreplicated_bytes_max: Option<u64>,
    /// On SIGTERM, how long the broker may take to hand its partitions to
    /// others before it exits anyway (they then move by the failover path). Default 30s.
    #[arg(long, env = "KEEL_BROKER_DRAIN_TIMEOUT", value_parser = humantime_serde::re::humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Option<Duration>,
    /// How often retention (retention.ms, retention.bytes) is applied. Default 30s.
    #[arg(long, env = "KEEL_BROKER_RETENTION_CHECK_INTERVAL", value_parser = humantime_serde::re::humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub retention_check_interval: Option<Duration>,
    /// How long an object that left the index stays in the store, for readers
    /// that found it just before (Kafka's file.delete.delay.ms). Default 60s.
    #[arg(long, env = "KEEL_BROKER_OBJECT_DELETE_DELAY", value_parser = humantime_serde::re::humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub object_delete_delay: Option<Duration>,
    /// The compactor merges a partition's small object ranges once this many
    /// follow one another. Default 4.
    #[arg(long, env = "KEEL_BROKER_COMPACTION_MIN_RANGES")]
    pub compaction_min_ranges: Option<usize>,
    /// Produce is refused (retriably) while this many bytes appended to the
    /// broker's WAL log are not uploaded yet: the object store is down or
    /// slow, and the WAL must not fill up. Default 1 GiB.
    #[arg(long, env = "KEEL_BROKER_WAL_BACKLOG_BYTES_MAX")]
    pub wal_backlog_bytes_max: Option<u64>,
    /// Partitions of `__consumer_offsets`, the internal topic of committed
    /// offsets and groups, when a broker creates it (first FindCoordinator).
    /// It never changes afterwards: a group's partition depends on it. Default 12.
    #[arg(long, env = "KEEL_BROKER_OFFSETS_TOPIC_PARTITIONS")]
    pub offsets_topic_partitions: Option<i32>,
    /// How long an empty group's first rebalance waits for more members
    /// (Kafka's group.initial.rebalance.delay.ms). Default 3s.
    #[arg(long, env = "KEEL_BROKER_GROUP_INITIAL_REBALANCE_DELAY", value_parser = humantime_serde::re::humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub group_initial_rebalance_delay: Option<Duration>,
    /// Consumer-protocol (KIP-848) members that send no heartbeat for this
    /// long leave their group (Kafka's group.consumer.session.timeout.ms). Default 45s.
    #[arg(long, env = "KEEL_BROKER_GROUP_CONSUMER_SESSION_TIMEOUT", value_parser = humantime_serde::re::humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub group_consumer_session_timeout: Option<Duration>,
    /// How often consumer-protocol members heartbeat (Kafka's
    /// group.consumer.heartbeat.interval.ms). Default 5s.
    #[arg(long, env = "KEEL_BROKER_GROUP_CONSUMER_HEARTBEAT_INTERVAL", value_parser = humantime_serde::re::humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub group_consumer_heartbeat_interval: Option<Duration>,
    /// A group without members for this long loses the offsets committed
    /// before then, and then is deleted (Kafka's offsets.retention.minutes). Default 7 days.
    #[arg(long, env = "KEEL_BROKER_OFFSETS_RETENTION", value_parser = humantime_serde::re::humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub offsets_retention: Option<Duration>,
    /// An idempotent producer that appends nothing to a partition for this
    /// long is forgotten there (Kafka's producer.id.expiration.ms). Default 1 day.
    #[arg(long, env = "KEEL_BROKER_PRODUCER_ID_EXPIRATION", value_parser = humantime_serde::re::humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub producer_id_expiration: Option<Duration>,
    /// Whether a Metadata request for a topic that does not exist creates
    /// it, when the client allows it (Kafka's auto.create.topics.enable).
    /// Default true, as Kafka; the production configs in deploy/ turn it off.
    #[arg(long, env = "KEEL_BROKER_AUTO_CREATE_TOPICS")]
    pub auto_create_topics: Option<bool>,
    /// Partitions of a topic created without a count: auto-created, or by
    /// CreateTopics with -1 (Kafka's num.partitions). Default 1.
    #[arg(long, env = "KEEL_BROKER_DEFAULT_PARTITIONS")]
    pub default_partitions: Option<i32>,
    /// Partitions of `__transaction_state`, the internal topic of the
    /// transaction coordinators, when a broker creates it (first
    /// FindCoordinator for a transactional id). It never changes
    /// afterwards: an id's partition depends on it. Default 12.
    #[arg(long, env = "KEEL_BROKER_TRANSACTION_STATE_PARTITIONS")]
    pub transaction_state_partitions: Option<i32>,
    /// A transactional id with no transaction for this long is forgotten
    /// (Kafka's transactional.id.expiration.ms). Default 7 days.
    #[arg(long, env = "KEEL_BROKER_TRANSACTIONAL_ID_EXPIRATION", value_parser = humantime_serde::re::humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub transactional_id_expiration: Option<Duration>,
    /// The cluster's shared secret (at least 16 characters): every internal
    /// gRPC call carries it, and controllers and WAL nodes refuse calls
    /// without it. The same on every process of the cluster and for
    /// keelctl. Unset: internal calls are not authenticated.
    #[arg(long, env = "KEEL_CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: Option<String>,
}

/// Where the broker keeps objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectsConfig {
    LocalDir(std::path::PathBuf),
    S3(keel_objects::S3Config),
}

/// The validated, effective configuration.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub node_id: NodeId,
    pub zone: String,
    pub listen: SocketAddr,
    pub advertise: String,
    /// Every Kafka listener, the one at `listen` first.
    pub listeners: Vec<Listener>,
    /// Set when a listener is SSL.
    pub tls: Option<TlsFiles>,
    pub sasl_mechanisms: Vec<Mechanism>,
    pub admin_listen: SocketAddr,
    pub controllers: Vec<String>,
    pub controller_zones: Vec<String>,
    pub heartbeat_interval: Duration,
    pub cache_bytes: u64,
    pub request_bytes_max: u32,
    pub connections_max: u32,
    pub cluster_id: String,
    pub objects: ObjectsConfig,
    pub upload_interval: Duration,
    pub upload_bytes: u64,
    pub drain_timeout: Duration,
    pub wal_unreplicated_bytes_max: u64,
    pub object_cache_bytes: u64,
    pub retention_check_interval: Duration,
    pub object_delete_delay: Duration,
    pub compaction_min_ranges: usize,
    pub wal_backlog_bytes_max: u64,
    pub offsets_topic_partitions: i32,
    pub group_initial_rebalance_delay: Duration,
    pub group_consumer_session_timeout: Duration,
    pub group_consumer_heartbeat_interval: Duration,
    pub offsets_retention: Duration,
    pub producer_id_expiration: Duration,
    pub auto_create_topics: bool,
    pub default_partitions: i32,
    pub transaction_state_partitions: i32,
    pub transactional_id_expiration: Duration,
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
            listeners: self.listeners.or(lower.listeners),
            advertised_listeners: self.advertised_listeners.or(lower.advertised_listeners),
            listener_security_protocol_map: self
                .listener_security_protocol_map
                .or(lower.listener_security_protocol_map),
            ssl_certificate: self.ssl_certificate.or(lower.ssl_certificate),
            ssl_private_key: self.ssl_private_key.or(lower.ssl_private_key),
            ssl_client_ca: self.ssl_client_ca.or(lower.ssl_client_ca),
            ssl_client_auth: self.ssl_client_auth.or(lower.ssl_client_auth),
            sasl_enabled_mechanisms: self.sasl_enabled_mechanisms.or(lower.sasl_enabled_mechanisms),
            admin_listen: self.admin_listen.or(lower.admin_listen),
            controllers: self.controllers.or(lower.controllers),
            controller_zones: self.controller_zones.or(lower.controller_zones),
            heartbeat_interval: self.heartbeat_interval.or(lower.heartbeat_interval),
            cache_bytes: self.cache_bytes.or(lower.cache_bytes),
            request_bytes_max: self.request_bytes_max.or(lower.request_bytes_max),
            connections_max: self.connections_max.or(lower.connections_max),
            cluster_id: self.cluster_id.or(lower.cluster_id),
            objects_dir: self.objects_dir.or(lower.objects_dir),
            s3_bucket: self.s3_bucket.or(lower.s3_bucket),
            s3_endpoint: self.s3_endpoint.or(lower.s3_endpoint),
            s3_region: self.s3_region.or(lower.s3_region),
            s3_path_style: self.s3_path_style.or(lower.s3_path_style),
            s3_access_key_id: self.s3_access_key_id.or(lower.s3_access_key_id),
            s3_secret_access_key: self.s3_secret_access_key.or(lower.s3_secret_access_key),
            upload_interval: self.upload_interval.or(lower.upload_interval),
            upload_bytes: self.upload_bytes.or(lower.upload_bytes),
            drain_timeout: self.drain_timeout.or(lower.drain_timeout),
            wal_unreplicated_bytes_max: self.wal_unreplicated_bytes_max.or(lower.wal_unreplicated_bytes_max),
            object_cache_bytes: self.object_cache_bytes.or(lower.object_cache_bytes),
            retention_check_interval: self.retention_check_interval.or(lower.retention_check_interval),
            object_delete_delay: self.object_delete_delay.or(lower.object_delete_delay),
            compaction_min_ranges: self.compaction_min_ranges.or(lower.compaction_min_ranges),
            wal_backlog_bytes_max: self.wal_backlog_bytes_max.or(lower.wal_backlog_bytes_max),
            offsets_topic_partitions: self.offsets_topic_partitions.or(lower.offsets_topic_partitions),
            group_initial_rebalance_delay: self.group_initial_rebalance_delay.or(lower.group_initial_rebalance_delay),
            group_consumer_session_timeout: self
                .group_consumer_session_timeout
                .or(lower.group_consumer_session_timeout),
            group_consumer_heartbeat_interval: self
                .group_consumer_heartbeat_interval
                .or(lower.group_consumer_heartbeat_interval),
            offsets_retention: self.offsets_retention.or(lower.offsets_retention),
            producer_id_expiration: self.producer_id_expiration.or(lower.producer_id_expiration),
            auto_create_topics: self.auto_create_topics.or(lower.auto_create_topics),
            default_partitions: self.default_partitions.or(lower.default_partitions),
            transaction_state_partitions: self.transaction_state_partitions.or(lower.transaction_state_partitions),
            transactional_id_expiration: self.transactional_id_expiration.or(lower.transactional_id_expiration),
            cluster_token: self.cluster_token.or(lower.cluster_token),
        }
    }

    pub fn validate(self) -> anyhow::Result<BrokerConfig> {
        let ConfigToml {
            node_id,
            zone,
            listen,
            advertise,
            listeners,
            advertised_listeners,
            listener_security_protocol_map,
            ssl_certificate,
            ssl_private_key,
            ssl_client_ca,
            ssl_client_auth,
            sasl_enabled_mechanisms,
            admin_listen,
            controllers,
            controller_zones,
            heartbeat_interval,
            cache_bytes,
            request_bytes_max,
            connections_max,
            cluster_id,
            objects_dir,
            s3_bucket,
            s3_endpoint,
            s3_region,
            s3_path_style,
            s3_access_key_id,
            s3_secret_access_key,
            upload_interval,
            upload_bytes,
            drain_timeout,
            wal_unreplicated_bytes_max,
            object_cache_bytes,
            retention_check_interval,
            object_delete_delay,
            compaction_min_ranges,
            wal_backlog_bytes_max,
            offsets_topic_partitions,
            group_initial_rebalance_delay,
            group_consumer_session_timeout,
            group_consumer_heartbeat_interval,
            offsets_retention,
            producer_id_expiration,
            auto_create_topics,
            default_partitions,
            transaction_state_partitions,
            transactional_id_expiration,
            cluster_token,
        } = self;
        let objects = match (objects_dir, s3_bucket) {
            (Some(dir), None) => ObjectsConfig::LocalDir(dir),
            (None, Some(bucket)) => ObjectsConfig::S3(keel_objects::S3Config {
                bucket,
                endpoint: s3_endpoint.unwrap_or_default(),
                region: s3_region.unwrap_or_default(),
                path_style: s3_path_style.unwrap_or(false),
                access_key_id: s3_access_key_id.unwrap_or_default(),
                secret_access_key: s3_secret_access_key.unwrap_or_default(),
                ..Default::default()
            }),
            (Some(_), Some(_)) => anyhow::bail!("set one of objects_dir and s3_bucket, not both"),
            (None, None) => anyhow::bail!("object storage is required: set objects_dir or s3_bucket"),
        };
        let upload_bytes = upload_bytes.unwrap_or(32 << 20);
        anyhow::ensure!(upload_bytes >= 1 << 20, "upload_bytes must be at least 1 MiB");
        let zone = zone.context("zone is required")?;
        anyhow::ensure!(!zone.is_empty(), "zone must not be empty");
        let listen = listen.unwrap_or_else(|| "127.0.0.1:9092".parse().expect("valid literal"));
        let controllers = controllers.unwrap_or_default();
        let controller_zones = controller_zones.unwrap_or_default();
        keel_controller_client::check_controllers(&controllers, &controller_zones)?;
        let advertise = advertise.unwrap_or_else(|| listen.to_string());
        listeners::check_host_port(&advertise, "advertise")?;
        let listeners = listeners::parse(
            listen,
            advertise.clone(),
            &listeners.unwrap_or_default(),
            &advertised_listeners.unwrap_or_default(),
            &listener_security_protocol_map.unwrap_or_default(),
        )?;
        let client_auth = match ssl_client_auth.as_deref().unwrap_or("none") {
            "none" => ClientAuth::None,
            "requested" => ClientAuth::Requested,
            "required" => ClientAuth::Required,
            other => anyhow::bail!("ssl_client_auth must be required, requested or none, not {other:?}"),
        };
        let tls = match (ssl_certificate, ssl_private_key) {
            (Some(certificate), Some(private_key)) => {
                anyhow::ensure!(
                    client_auth == ClientAuth::None || ssl_client_ca.is_some(),
                    "ssl_client_auth {client_auth:?} needs ssl_client_ca, the CAs client certificates chain to"
                );
                Some(TlsFiles { certificate, private_key, client_ca: ssl_client_ca, client_auth })
            }
            (None, None) => None,
            _ => anyhow::bail!("set both ssl_certificate and ssl_private_key, or neither"),
        };
        let sasl_mechanisms = sasl_enabled_mechanisms
            .unwrap_or_else(|| vec!["SCRAM-SHA-256".into(), "SCRAM-SHA-512".into()])
            .iter()
            .map(|name| {
                Mechanism::parse(name).ok_or_else(|| {
                    anyhow::anyhow!("unknown SASL mechanism {name:?}: use SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN")
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if let Some(sasl) = listeners.iter().find(|l| l.protocol.sasl()) {
            anyhow::ensure!(!sasl_mechanisms.is_empty(), "listener {} is SASL: enable a mechanism", sasl.name);
        }
        if let Some(ssl) = listeners.iter().find(|l| l.protocol.tls()) {
            anyhow::ensure!(tls.is_some(), "listener {} is SSL: set ssl_certificate and ssl_private_key", ssl.name);
        }
        let offsets_topic_partitions = offsets_topic_partitions.unwrap_or(12);
        anyhow::ensure!(
            (1..=1000).contains(&offsets_topic_partitions),
            "offsets_topic_partitions must be between 1 and 1000"
        );
        let transaction_state_partitions = transaction_state_partitions.unwrap_or(12);
        anyhow::ensure!(
            (1..=1000).contains(&transaction_state_partitions),
            "transaction_state_partitions must be between 1 and 1000"
        );
        let default_partitions = default_partitions.unwrap_or(1);
        anyhow::ensure!(
            (1..=keel_controller_client::topic_rules::PARTITION_COUNT_MAX).contains(&i64::from(default_partitions)),
            "default_partitions must be between 1 and {}",
            keel_controller_client::topic_rules::PARTITION_COUNT_MAX
        );
        let request_bytes_max = request_bytes_max.unwrap_or(100 << 20);
        anyhow::ensure!(request_bytes_max >= 1 << 20, "request_bytes_max must be at least 1 MiB");
        let connections_max = connections_max.unwrap_or(10_000);
        anyhow::ensure!(connections_max >= 1, "connections_max must be at least 1");
        Ok(BrokerConfig {
            cluster_token: cluster_token.map(keel_proto::auth::Secret),
            node_id: NodeId(node_id.context("node_id is required")?),
            zone,
            listen,
            advertise,
            listeners,
            tls,
            sasl_mechanisms,
            admin_listen: admin_listen.unwrap_or_else(|| "127.0.0.1:9592".parse().expect("valid literal")),
            controllers,
            controller_zones,
            heartbeat_interval: heartbeat_interval.unwrap_or(Duration::from_millis(250)),
            cache_bytes: cache_bytes.unwrap_or(256 << 20),
            request_bytes_max,
            connections_max,
            cluster_id: cluster_id.unwrap_or_else(|| "keel".into()),
            objects,
            upload_interval: upload_interval.unwrap_or(Duration::from_secs(5)),
            upload_bytes,
            drain_timeout: drain_timeout.unwrap_or(Duration::from_secs(30)),
            wal_unreplicated_bytes_max: wal_unreplicated_bytes_max.unwrap_or(256 << 20),
            object_cache_bytes: object_cache_bytes.unwrap_or(128 << 20),
            retention_check_interval: retention_check_interval.unwrap_or(Duration::from_secs(30)),
            object_delete_delay: object_delete_delay.unwrap_or(Duration::from_secs(60)),
            compaction_min_ranges: compaction_min_ranges.unwrap_or(4).max(2),
            wal_backlog_bytes_max: wal_backlog_bytes_max.unwrap_or(1 << 30),
            offsets_topic_partitions,
            group_initial_rebalance_delay: group_initial_rebalance_delay.unwrap_or(Duration::from_secs(3)),
            group_consumer_session_timeout: group_consumer_session_timeout.unwrap_or(Duration::from_secs(45)),
            group_consumer_heartbeat_interval: group_consumer_heartbeat_interval.unwrap_or(Duration::from_secs(5)),
            offsets_retention: offsets_retention.unwrap_or(Duration::from_secs(7 * 24 * 3600)),
            producer_id_expiration: producer_id_expiration.unwrap_or(Duration::from_secs(24 * 3600)),
            auto_create_topics: auto_create_topics.unwrap_or(true),
            default_partitions,
            transaction_state_partitions,
            transactional_id_expiration: transactional_id_expiration.unwrap_or(Duration::from_secs(7 * 24 * 3600)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_config_validates_and_bad_values_are_refused() {
        let file: ConfigToml = keel_common::config::parse_toml(
            "node_id = 1\nzone = \"a\"\ncontrollers = [\"127.0.0.1:9190\"]\nobjects_dir = \"/o\"\n",
        )
        .unwrap();
        let config = file.clone().validate().unwrap();
        assert_eq!(config.advertise, "127.0.0.1:9092");
        assert_eq!(config.cache_bytes, 256 << 20);
        assert!(keel_common::config::parse_toml::<ConfigToml>("zone = \"a\"\nadvertised = \"x:1\"\n").is_err());
        let bad = ConfigToml { advertise: Some("no-port".into()), ..file };
        assert!(bad.validate().is_err(), "advertise needs a port");
    }

    #[test]
    fn secrets_never_reach_the_effective_config_log() {
        let file: ConfigToml = keel_common::config::parse_toml(
            "node_id = 1\nzone = \"a\"\ncontrollers = [\"c:1\"]\ns3_bucket = \"b\"\ns3_access_key_id = \"AKID\"\ns3_secret_access_key = \"hunter2\"\ncluster_token = \"sesame-sesame-sesame\"\n",
        )
        .unwrap();
        let logged = format!("{:?}", file.clone().validate().unwrap());
        assert!(logged.contains("AKID") && !logged.contains("hunter2"), "{logged}");
        assert!(!logged.contains("sesame"), "nor the cluster token: {logged}");
        let both = ConfigToml { objects_dir: Some("/o".into()), ..file };
        assert!(both.validate().is_err(), "one object store, not two");
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

//! Starting and stopping a broker: register with the controller quorum,
//! follow the metadata, build the layers (cluster, storage, the partitions
//! led here, the coordinators, the Kafka edge), start their tasks, then
//! serve Kafka clients and the admin endpoints.
//!
//! Every task runs in one `TaskTracker` under one `CancellationToken`, so
//! `shutdown` stops them all and waits for them, with a deadline.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use keel_broker_core::fetch_session::FetchSessions;
use keel_controller_client::{ClientOptions, MetadataClient, NodeKind, Registration, SessionKeeper};
use keel_objects::ObjectStore;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::cluster::Cluster;
use crate::config::{BrokerConfig, ObjectsConfig};
use crate::coordinator::runtime;
use crate::coordinator::{groups, txn, Groups, Peers, Txns};
use crate::kafka::peers::KafkaPeers;
use crate::log::Partitions;
use crate::metrics::Metrics;
use crate::storage::uploader::WritingLog;
use crate::storage::Storage;

#[derive(Debug)]
pub struct BrokerNode {
    cancel: CancellationToken,
    tasks: TaskTracker,
    broker: Arc<Broker>,
}

/// Starts a broker; it runs until `cancel` fires, then call `shutdown`.
pub async fn start(config: BrokerConfig, registry: &Registry, cancel: CancellationToken) -> anyhow::Result<BrokerNode> {
    let mut listeners = Vec::new();
    for listener in &config.listeners {
        let socket = TcpListener::bind(listener.bind)
            .await
            .with_context(|| format!("bind Kafka listener {} at {}", listener.name, listener.bind))?;
        listeners.push((socket, listener.clone()));
    }
    // Registered as NAME://host:port, the brokers' own listener first; one
    // given no advertised address is advertised at the port it was bound to.
    let mut advertised = Vec::new();
    for (socket, listener) in &listeners {
        let address = match &listener.advertise {
            Some(address) => address.clone(),
            None => socket.local_addr()?.to_string(),
        };
        advertised.push(format!("{}://{address}", listener.name));
    }
    let tls = config.tls.clone().map(crate::kafka::tls::Tls::load).transpose().context("TLS for the SSL listeners")?;
    let admin = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("bind admin listener {}", config.admin_listen))?;
    let metrics = Metrics::new(registry)?;
    let tasks = TaskTracker::new();
    let client = Arc::new(
        MetadataClient::new(config.controllers.clone(), ClientOptions::default())?
            .prefer_zone(&config.controller_zones, &config.zone)?,
    );

    let (images, follow) = keel_controller_client::follower::follow(client.clone(), cancel.clone());
    tasks.spawn(follow);
    // Brokers keep nothing on disk: every start is a new incarnation.
    let registration = Registration {
        kind: NodeKind::Broker,
        id: config.node_id,
        zone: config.zone.clone(),
        internal_addr: config.advertise.clone(),
        kafka_listeners: advertised.clone(),
        incarnation: uuid::Uuid::new_v4().to_string(),
    };
    let (keeper, session) =
        SessionKeeper::new(client.clone(), registration, config.heartbeat_interval, config.heartbeat_interval);
    let renewal = keeper.renewal();
    tasks.spawn(keeper.run(cancel.clone()));

    let store_latency = Arc::new(crate::storage::metered_store::StoreLatency::default());
    let store: Arc<dyn ObjectStore> = Arc::new(crate::storage::metered_store::MeteredStore::new(
        object_store(&config.objects).await?,
        &metrics,
        store_latency.clone(),
    ));
    tracing::info!(objects = store.describe(), "object storage");
    let object_cache_bytes = config.object_cache_bytes as usize;
    let cluster = Arc::new(Cluster::new(config.clone(), client, images, session, renewal, metrics));
    let storage = Arc::new(Storage::new(store, store_latency, object_cache_bytes, tasks.clone()));
    let partitions = Arc::new(Partitions::new(cluster.clone(), storage.clone(), tasks.clone()));
    let peers: Arc<dyn Peers> = Arc::new(KafkaPeers::default());
    let groups = Arc::new(Groups::new(
        keel_broker_core::groups::Settings {
            initial_delay: config.group_initial_rebalance_delay,
            consumer_session_timeout: config.group_consumer_session_timeout,
            consumer_heartbeat_interval: config.group_consumer_heartbeat_interval,
            offsets_partitions: config.offsets_topic_partitions,
            offsets_retention: config.offsets_retention,
        },
        partitions.clone(),
        peers.clone(),
        tasks.clone(),
        cancel.clone(),
    ));
    let txns = Arc::new(Txns::new(
        txn::Settings {
            partitions: config.transaction_state_partitions,
            id_expiration: config.transactional_id_expiration,
        },
        partitions.clone(),
        groups.clone(),
        peers.clone(),
        tasks.clone(),
        cancel.clone(),
    ));
    let writing: Arc<dyn WritingLog> = partitions.clone();

    tasks.spawn(crate::log::keeper::run(partitions.clone(), tasks.clone(), cancel.clone()));
    tasks.spawn(crate::log::leaders::run(partitions.clone(), cancel.clone()));
    tasks.spawn(crate::log::producer_expiry::run(partitions.clone(), cancel.clone()));
    tasks.spawn(crate::log::drain::run(partitions.clone(), cancel.clone()));
    tasks.spawn(crate::log::load_report::run(partitions.clone(), cancel.clone()));
    tasks.spawn(crate::log::early_seal::run(partitions.clone(), cancel.clone()));
    tasks.spawn(crate::log::failover::run(partitions.clone(), cancel.clone()));
    tasks.spawn(crate::storage::uploader::run(cluster.clone(), storage.clone(), writing, cancel.clone()));
    tasks.spawn(crate::storage::retention::run(cluster.clone(), storage.clone(), cancel.clone()));
    tasks.spawn(runtime::run(groups.clone()));
    tasks.spawn(runtime::run(txns.clone()));
    tasks.spawn(groups::lag::run(groups.clone(), cancel.clone()));

    let broker = Arc::new(Broker {
        cluster,
        storage,
        partitions,
        groups,
        txns,
        peers,
        fetch_sessions: FetchSessions::default(),
    });
    if let Some(tls) = &tls {
        tasks.spawn(tls.clone().watch(cancel.clone()));
    }
    tasks.spawn(crate::kafka::server::serve(listeners, tls, broker.clone(), tasks.clone(), cancel.clone()));

    let (ready_sender, ready) = watch::channel(false);
    tasks.spawn(track_readiness(broker.partitions.clone(), ready_sender, cancel.clone()));
    let registry = registry.clone();
    let on_failure = cancel.clone();
    tasks.spawn(async move {
        if let Err(error) = keel_common::admin::serve(admin, registry, ready, on_failure.clone()).await {
            tracing::error!("admin server failed: {error:#}");
            on_failure.cancel();
        }
    });
    tracing::info!(kafka = %config.listen, listeners = ?advertised, admin = %config.admin_listen, "broker serving");
    Ok(BrokerNode { cancel, tasks, broker })
}

async fn object_store(config: &ObjectsConfig) -> anyhow::Result<Arc<dyn ObjectStore>> {
    Ok(match config {
        ObjectsConfig::LocalDir(dir) => Arc::new(
            keel_objects::LocalDirStore::new(dir)
                .with_context(|| format!("object storage directory {}", dir.display()))?,
        ),
        ObjectsConfig::S3(s3) => Arc::new(keel_objects::S3Store::connect(s3.clone()).await?),
    })
}

/// `/ready` is true while the broker may produce: its lease holds and it
/// writes a WAL log under that registration.
async fn track_readiness(partitions: Arc<Partitions>, ready: watch::Sender<bool>, cancel: CancellationToken) {
    loop {
        let writable = {
            let leadership = partitions.leadership();
            partitions.writable(&leadership)
        };
        ready.send_replace(writable);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

impl BrokerNode {
    /// Hands every partition to other brokers (DESIGN §5), waiting at most
    /// the configured `drain_timeout`; the broker keeps serving meanwhile.
    pub async fn drain(&self) {
        let timeout = self.broker.cluster.config.drain_timeout;
        crate::log::drain::drain_self(&self.broker.partitions, timeout).await;
    }

    /// Stops serving and waits at most `patience` for the tasks.
    pub async fn shutdown(self, patience: Duration) {
        self.cancel.cancel();
        self.tasks.close();
        if tokio::time::timeout(patience, self.tasks.wait()).await.is_err() {
            tracing::warn!(?patience, "tasks did not stop in time");
        }
    }
}

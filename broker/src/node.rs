//! Starting and stopping a broker: register with the controller quorum,
//! follow the metadata, take over and open a WAL log, then serve Kafka
//! clients and the admin endpoints.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use keel_controller_client::{ClientOptions, MetadataClient, NodeKind, Registration, SessionKeeper};
use keel_objects::ObjectStore;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::config::{BrokerConfig, ObjectsConfig};
use crate::metrics::Metrics;

#[derive(Debug)]
pub struct BrokerNode {
    cancel: CancellationToken,
    tasks: TaskTracker,
    broker: Arc<Broker>,
}

/// Starts a broker; it runs until `cancel` fires, then call `shutdown`.
pub async fn start(config: BrokerConfig, registry: &Registry, cancel: CancellationToken) -> anyhow::Result<BrokerNode> {
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("bind Kafka listener {}", config.listen))?;
    let admin = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("bind admin listener {}", config.admin_listen))?;
    let metrics = Metrics::new(registry)?;
    let tasks = TaskTracker::new();
    let client = Arc::new(MetadataClient::new(config.controllers.clone(), ClientOptions::default())?);

    let (images, follow) = keel_controller_client::follower::follow(client.clone(), cancel.clone());
    tasks.spawn(follow);
    // Brokers keep nothing on disk: every start is a new incarnation.
    let registration = Registration {
        kind: NodeKind::Broker,
        id: config.node_id,
        zone: config.zone.clone(),
        internal_addr: config.advertise.clone(),
        kafka_listeners: vec![config.advertise.clone()],
        incarnation: uuid::Uuid::new_v4().to_string(),
    };
    let (keeper, session) =
        SessionKeeper::new(client.clone(), registration, config.heartbeat_interval, config.heartbeat_interval);
    tasks.spawn(keeper.run(cancel.clone()));

    let objects: Arc<dyn ObjectStore> =
        Arc::new(crate::metered_store::MeteredStore::new(object_store(&config.objects).await?, &metrics));
    tracing::info!(objects = objects.describe(), "object storage");
    let broker = Arc::new(Broker::new(config.clone(), client, images, session, objects.clone(), metrics));
    tasks.spawn(broker.clone().keep_log(tasks.clone(), cancel.clone()));
    tasks.spawn(crate::leaders::run(broker.clone(), cancel.clone()));
    tasks.spawn(crate::groups::run(broker.clone(), cancel.clone()));
    tasks.spawn(crate::txn::run(broker.clone(), cancel.clone()));
    tasks.spawn(crate::groups::report_lag(broker.clone(), cancel.clone()));
    tasks.spawn(crate::producers::expire_idle(broker.clone(), cancel.clone()));
    tasks.spawn(crate::drain::run(broker.clone(), cancel.clone()));
    tasks.spawn(crate::load_report::run(broker.clone(), cancel.clone()));
    tasks.spawn(crate::early_seal::run(broker.clone(), cancel.clone()));
    tasks.spawn(crate::uploader::run(broker.clone(), objects.clone(), cancel.clone()));
    tasks.spawn(crate::failover::run(broker.clone(), objects.clone(), cancel.clone()));
    tasks.spawn(crate::retention::run(broker.clone(), objects, cancel.clone()));
    tasks.spawn(crate::server::serve(listener, broker.clone(), tasks.clone(), cancel.clone()));

    let (ready_sender, ready) = watch::channel(false);
    tasks.spawn(track_readiness(broker.clone(), ready_sender, cancel.clone()));
    let registry = registry.clone();
    let on_failure = cancel.clone();
    tasks.spawn(async move {
        if let Err(error) = keel_common::admin::serve(admin, registry, ready, on_failure.clone()).await {
            tracing::error!("admin server failed: {error:#}");
            on_failure.cancel();
        }
    });
    tracing::info!(kafka = %config.listen, advertise = %config.advertise, admin = %config.admin_listen, "broker serving");
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
async fn track_readiness(broker: Arc<Broker>, ready: watch::Sender<bool>, cancel: CancellationToken) {
    loop {
        let writable = {
            let leadership = broker.leadership();
            broker.writable(&leadership)
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
        crate::drain::drain_self(&self.broker, self.broker.config.drain_timeout).await;
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

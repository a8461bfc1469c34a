//! Starting and stopping a controller: open the data directory and check whose
//! it is, start Raft, serve gRPC and the admin endpoints, bootstrap or join the
//! quorum, and run the background tasks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use keel_controller_client::{pb, GRPC_MESSAGE_BYTES_MAX};
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ControllerConfig;
use crate::controller::Controller;
use crate::metadata_service::MetadataService;
use crate::metrics::Metrics;
use crate::network::{Network, Peers};
use crate::raft_service::{raft_id_hex, RaftService};
use crate::raft_types::{ControllerNode, Raft, RaftId};
use crate::sessions::Sessions;
use crate::store::{Identity, Store};

/// How often the leader checks session deadlines.
const SESSION_TICK: Duration = Duration::from_millis(100);
/// How often a controller outside the quorum retries bootstrapping or joining.
const JOIN_RETRY: Duration = Duration::from_millis(500);

/// Starts a controller and returns once it serves gRPC. It runs until
/// `cancel` fires or a fatal error cancels it; then call `shutdown`.
pub async fn start(
    config: ControllerConfig,
    registry: &Registry,
    cancel: CancellationToken,
) -> anyhow::Result<Arc<Controller>> {
    let config = Arc::new(config);
    let store = Store::open(&config.data_dir)?;
    let identity = Arc::new(load_or_create_identity(&store, &config)?);
    tracing::info!(
        controller = %config.node_id,
        raft_id = %raft_id_hex(identity.raft_id),
        cluster = %identity.cluster_id,
        data_dir = %config.data_dir.display(),
        "controller starting"
    );

    let peers = Peers::default();
    let state_machine = store.state_machine()?;
    let state = state_machine.shared();
    let log = store.log_store();
    let raft = Raft::new(
        identity.raft_id,
        Arc::new(config.raft_config()?),
        Network { peers: peers.clone() },
        log.clone(),
        state_machine,
    )
    .await
    .context("start raft")?;

    let controller = Arc::new(Controller {
        sessions: Mutex::new(Sessions::new(config.session_timeout)),
        loads: Mutex::default(),
        quorum_contact: Mutex::new(None),
        failing_over: Mutex::default(),
        metrics: Metrics::new(registry)?,
        config: config.clone(),
        identity: identity.clone(),
        raft: raft.clone(),
        state,
        log,
        peers,
        cancel,
        tasks: TaskTracker::new(),
    });

    let grpc_listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("bind gRPC listener {}", config.listen))?;
    let admin_listener = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("bind admin listener {}", config.admin_listen))?;
    let (ready_sender, ready) = watch::channel(false);

    let raft_service =
        pb::raft_server::RaftServer::new(RaftService { raft: raft.clone(), identity, tasks: controller.tasks.clone() })
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX);
    let metadata_service = pb::metadata_server::MetadataServer::new(MetadataService { controller: controller.clone() })
        .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX);
    let server = keel_proto::transport::server()
        .layer(tonic::service::interceptor(keel_proto::auth::check))
        .add_service(raft_service)
        .add_service(metadata_service)
        .serve_with_incoming_shutdown(
            keel_common::net::incoming_nodelay(grpc_listener),
            controller.cancel.clone().cancelled_owned(),
        );
    let tasks = &controller.tasks;
    let cancel = controller.cancel.clone();
    tasks.spawn(async move {
        if let Err(error) = server.await {
            tracing::error!("gRPC server failed: {error:#}");
            cancel.cancel();
        }
    });
    let cancel = controller.cancel.clone();
    let registry = registry.clone();
    tasks.spawn(async move {
        if let Err(error) = keel_common::admin::serve(admin_listener, registry, ready, cancel.clone()).await {
            tracing::error!("admin server failed: {error:#}");
            cancel.cancel();
        }
    });
    tasks.spawn(track_readiness(raft.clone(), ready_sender, controller.cancel.clone()));
    tasks.spawn(controller.clone().run_session_expiry(SESSION_TICK));
    tasks.spawn(controller.clone().track_quorum_contact());
    tasks.spawn(bootstrap_or_join(controller.clone()));
    tracing::info!(grpc = %config.listen, admin = %config.admin_listen, "controller serving");
    Ok(controller)
}

/// Stops a controller's tasks and Raft, waiting at most `patience`.
pub async fn shutdown(controller: &Controller, patience: Duration) {
    controller.cancel.cancel();
    controller.tasks.close();
    if let Err(error) = controller.raft.shutdown().await {
        tracing::warn!("raft did not stop cleanly: {error}");
    }
    if tokio::time::timeout(patience, controller.tasks.wait()).await.is_err() {
        tracing::warn!(?patience, "background tasks did not stop in time");
    }
}

/// Reads this directory's identity, or creates one for a fresh directory. A
/// directory of another controller or cluster is refused: starting on it would
/// impersonate that controller.
fn load_or_create_identity(store: &Store, config: &ControllerConfig) -> anyhow::Result<Identity> {
    if let Some(identity) = store.identity()? {
        anyhow::ensure!(
            identity.controller_id == config.node_id.0 && identity.cluster_id == config.cluster_id,
            "data directory {} belongs to controller {} of cluster {:?}, but this config says controller {} of cluster {:?}; \
             refusing to start (point data_dir at this controller's own directory, or an empty one to join as a new learner)",
            config.data_dir.display(),
            identity.controller_id,
            identity.cluster_id,
            config.node_id.0,
            config.cluster_id,
        );
        return Ok(identity);
    }
    let raft_id: RaftId = loop {
        let candidate = rand::random::<u64>();
        if candidate != 0 {
            break candidate;
        }
    };
    let identity = Identity { controller_id: config.node_id.0, cluster_id: config.cluster_id.clone(), raft_id };
    store.create_identity(&identity)?;
    tracing::info!(raft_id = %raft_id_hex(raft_id), "fresh data directory: new controller incarnation");
    Ok(identity)
}

/// `/ready` is true while this controller knows a quorum leader.
async fn track_readiness(raft: Raft, ready: watch::Sender<bool>, cancel: CancellationToken) {
    let mut metrics = raft.metrics();
    loop {
        ready.send_replace(metrics.borrow().current_leader.is_some());
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = metrics.changed() => if changed.is_err() { return },
        }
    }
}

/// Brings a controller without Raft state into the quorum: if any peer already
/// belongs to an initialized quorum, this one joins as a learner (a controller
/// whose disk was wiped comes back this way); if every initial peer is fresh
/// and reachable, the lowest-id peer initializes the quorum with all of them.
async fn bootstrap_or_join(controller: Arc<Controller>) {
    let mut attempts = 0u64;
    loop {
        match controller.raft.is_initialized().await {
            Ok(true) => return,
            Ok(false) => {}
            Err(error) => {
                tracing::error!("raft stopped before joining: {error}");
                return;
            }
        }
        match try_bootstrap_or_join(&controller).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(error) => {
                tracing::error!("refusing to join: {error:#}");
                controller.cancel.cancel();
                return;
            }
        }
        attempts += 1;
        if attempts.is_multiple_of(20) {
            tracing::info!(attempts, "waiting for the other controllers to bootstrap or admit this one");
        }
        tokio::select! {
            _ = controller.cancel.cancelled() => return,
            _ = tokio::time::sleep(JOIN_RETRY) => {}
        }
    }
}

/// One round of `bootstrap_or_join`. Ok(true) when done, Ok(false) to retry,
/// Err for a peer that belongs to another cluster or lies about its id.
async fn try_bootstrap_or_join(controller: &Controller) -> anyhow::Result<bool> {
    let config = &controller.config;
    let mut members = BTreeMap::from([(
        controller.identity.raft_id,
        ControllerNode { controller_id: config.node_id, addr: config.advertise.clone() },
    )]);
    let mut all_fresh = true;
    for peer in config.peers.iter().filter(|peer| peer.id != config.node_id) {
        let Ok(channel) = controller.peers.channel(&peer.addr) else { continue };
        let mut client = pb::raft_client::RaftClient::new(channel.clone());
        let mut request = tonic::Request::new(pb::IdentifyRequest {});
        request.set_timeout(Duration::from_secs(1));
        let reply = match client.identify(request).await {
            Ok(reply) => reply.into_inner(),
            Err(_) => {
                all_fresh = false;
                continue;
            }
        };
        anyhow::ensure!(
            reply.cluster_id == config.cluster_id,
            "controller at {} belongs to cluster {:?}, not {:?}",
            peer.addr,
            reply.cluster_id,
            config.cluster_id
        );
        anyhow::ensure!(
            reply.controller_id == peer.id.0,
            "peers lists controller {} at {}, but controller c{} answers there",
            peer.id,
            peer.addr,
            reply.controller_id
        );
        if reply.initialized {
            return join_as_learner(controller, channel).await;
        }
        members.insert(reply.raft_id, ControllerNode { controller_id: peer.id, addr: peer.addr.clone() });
    }
    let listed = config.peers.iter().any(|peer| peer.id == config.node_id);
    if !(listed && all_fresh && config.is_bootstrapper()) {
        return Ok(false);
    }
    tracing::info!(controllers = members.len(), "every initial controller is fresh: bootstrapping the quorum");
    match controller.raft.initialize(members).await {
        Ok(()) => Ok(true),
        Err(error) => {
            tracing::warn!("failed to bootstrap: {error}");
            Ok(false)
        }
    }
}

async fn join_as_learner(controller: &Controller, channel: keel_proto::auth::Channel) -> anyhow::Result<bool> {
    let mut client = pb::metadata_client::MetadataClient::new(channel);
    let request = pb::JoinAsLearnerRequest {
        controller_id: controller.config.node_id.0,
        raft_id: controller.identity.raft_id,
        addr: controller.config.advertise.clone(),
    };
    match client.join_as_learner(request).await {
        Ok(reply) => {
            let raft_id = controller.identity.raft_id;
            let voter = reply.into_inner().controllers.iter().any(|c| c.raft_id == raft_id && c.voter);
            if voter {
                tracing::info!("already a voter of the quorum");
            } else {
                tracing::info!("joined the quorum as a learner; `keelctl controller promote` makes it a voter");
            }
            Ok(true)
        }
        Err(status) => {
            tracing::debug!(%status, "join as learner failed; retrying");
            Ok(false)
        }
    }
}

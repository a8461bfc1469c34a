//! Broker and WAL node sessions: heartbeats keep them, silence fences them, and
//! a controller failover expires nobody.
//!
//! These tests depend on timing (2 s sessions, 250 ms heartbeats), so they run
//! in the `serial` test group (see `.config/nextest.toml`).

use std::sync::Arc;
use std::time::Duration;

use keel_controller_client::{pb, ClientError, MetaError, NodeId, NodeKind, Registration, SessionKeeper, SessionState};
use keel_tests::{eventually, TestCluster, PEER_UNREACHABLE};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::info;

const HEARTBEAT: Duration = Duration::from_millis(250);
const SESSION_TIMEOUT: Duration = Duration::from_secs(2);

struct Keeper {
    state: watch::Receiver<Option<SessionState>>,
    cancel: CancellationToken,
    task: tokio::task::JoinSet<()>,
    /// The node's address keeps a listener, as a silent (frozen) process's
    /// would: the leader's probe finds it answering, so only the session
    /// fences the node.
    _listener: std::net::TcpListener,
}

fn keep_session(client: Arc<keel_controller_client::MetadataClient>, kind: NodeKind, id: u32, zone: &str) -> Keeper {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let registration = Registration {
        kind,
        id: NodeId(id),
        zone: zone.into(),
        internal_addr: listener.local_addr().unwrap().to_string(),
        kafka_listeners: vec![],
        incarnation: format!("test-{id}"),
    };
    let (keeper, state) = SessionKeeper::new(client, registration, HEARTBEAT, Duration::from_millis(300));
    let cancel = CancellationToken::new();
    let mut task = tokio::task::JoinSet::new();
    task.spawn(keeper.run(cancel.clone()));
    Keeper { state, cancel, task, _listener: listener }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_fences_a_node_and_leader_failover_expires_nobody() {
    let mut test = TestCluster::start(3, &[]).await.unwrap();
    let client = Arc::new(test.cluster.client().unwrap());

    info!("three nodes in three zones register and heartbeat");
    let keepers = [
        keep_session(client.clone(), NodeKind::Broker, 1, "a"),
        keep_session(client.clone(), NodeKind::Broker, 2, "b"),
        keep_session(client.clone(), NodeKind::Wal, 3, "c"),
    ];
    let mut epochs = Vec::new();
    for keeper in &keepers {
        let mut state = keeper.state.clone();
        let session = *state.wait_for(Option::is_some).await.unwrap();
        epochs.push(session.unwrap().epoch);
    }

    info!("the WAL node stops heartbeating: it is fenced after the session timeout, not before");
    let [broker_1, broker_2, mut wal_3] = keepers;
    wal_3.cancel.cancel();
    wal_3.task.join_next().await.expect("the session keeper").unwrap();
    let silent_since = Instant::now();
    eventually(Duration::from_secs(10), "the silent node is fenced", || async {
        (test.node_state(NodeKind::Wal, 3).await?.0 == "fenced").then_some(())
    })
    .await;
    let fenced_after = silent_since.elapsed();
    assert!(fenced_after >= SESSION_TIMEOUT - HEARTBEAT * 2, "fenced after only {fenced_after:?}");
    let heartbeat = pb::HeartbeatRequest { kind: pb::NodeKind::Wal as i32, node_id: 3, epoch: epochs[2].0 };
    let refused = client.call(|mut c| async move { c.heartbeat(heartbeat).await }).await;
    assert!(
        matches!(refused, Err(ClientError::Meta(MetaError::Fenced { epoch, .. })) if epoch == epochs[2]),
        "a heartbeat at the fenced epoch must be refused: {refused:?}"
    );

    info!("kill -9 the controller leader; healthy sessions outlive the failover");
    let leader = test.cluster.wait_for_leader(Duration::from_secs(5)).await.unwrap();
    test.cluster.controllers[leader].kill9();
    test.cluster.wait_for_leader(Duration::from_secs(10)).await.unwrap();
    tokio::time::sleep(SESSION_TIMEOUT * 2).await;
    for (id, epoch) in [(1, epochs[0]), (2, epochs[1])] {
        let (state, current_epoch) = test.node_state(NodeKind::Broker, id).await.unwrap();
        assert_eq!(state, "active", "broker {id}");
        assert_eq!(current_epoch, epoch.0, "broker {id} must not have been fenced and re-registered");
    }
    for keeper in [&broker_1, &broker_2] {
        let state = keeper.state.borrow().expect("session held");
        assert!(state.is_live(), "the local lease must still hold");
    }

    info!("a fenced node that comes back registers with a new, larger epoch");
    let returning = keep_session(client.clone(), NodeKind::Wal, 3, "c");
    let mut state = returning.state.clone();
    let session = state.wait_for(Option::is_some).await.unwrap().unwrap();
    assert!(session.epoch > epochs[2]);

    for mut keeper in [broker_1, broker_2, returning] {
        keeper.cancel.cancel();
        keeper.task.join_next().await.expect("the session keeper").unwrap();
    }
    test.assert_clean_logs(PEER_UNREACHABLE);
}

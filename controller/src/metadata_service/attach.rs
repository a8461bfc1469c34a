//! The attach stream (`Attach`): each registered node holds one open to the
//! leader, which sends it an event every `PING_EVERY`. A process killed
//! outright closes its connections at once, so the leader sees the stream
//! end without the node having said anything; it then probes the node's
//! address and, if nothing accepts a connection there, fences the node
//! without waiting out its session. A frozen node keeps its connections
//! (the kernel answers for it), so it is still found by its session, and so
//! is a node cut off by the network.

use std::sync::Arc;
use std::time::Duration;

use keel_controller_client::{pb, Epoch, NodeId, NodeKind};
use openraft::ServerState;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::controller::Controller;

pub(crate) type AttachStream = ReceiverStream<Result<pb::AttachEvent, Status>>;

/// How often the leader sends on an attach stream. Nodes take one silent
/// for a few of these as broken and attach again.
const PING_EVERY: Duration = Duration::from_millis(200);
/// How long one probe of a node's address may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// A probe that connected waits this long for the connection to be reset
/// (a listener of a process being torn down accepts, then resets).
const PROBE_HOLD: Duration = Duration::from_millis(100);
/// Between the two probes.
const PROBE_AGAIN: Duration = Duration::from_millis(250);

/// Serves the attach stream of node `id` of `kind` registered at `epoch`.
pub(super) fn start(controller: Arc<Controller>, kind: NodeKind, id: NodeId, epoch: Epoch) -> AttachStream {
    let (sender, receiver) = mpsc::channel(1);
    let tasks = controller.tasks.clone();
    tasks.spawn(async move {
        let mut ticker = tokio::time::interval(PING_EVERY);
        loop {
            tokio::select! {
                _ = controller.cancel.cancelled() => return,
                // The node's end of the stream is gone.
                _ = sender.closed() => break,
                _ = ticker.tick() => {}
            }
            if controller.raft.metrics().borrow().state != ServerState::Leader {
                // Dropping the sender ends the stream: the node attaches to the next leader.
                return;
            }
            let _ = sender.try_send(Ok(pb::AttachEvent {}));
        }
        suspect(&controller, kind, id, epoch).await;
    });
    ReceiverStream::new(receiver)
}

/// The node's attach stream ended without a goodbye: fences it now unless
/// something accepts a connection at its address.
async fn suspect(controller: &Controller, kind: NodeKind, id: NodeId, epoch: Epoch) {
    let addr = controller.state.read(|state| {
        state.image.nodes(kind).get(&id).filter(|node| node.epoch == epoch).map(|node| node.internal_addr.clone())
    });
    let Some(addr) = addr else { return };
    tracing::info!(%kind, node = %id, %epoch, %addr, "attach stream ended; probing the node");
    if answers(&addr).await {
        tracing::debug!(%kind, node = %id, %epoch, %addr, "attach stream ended but the node answers; its session decides");
        return;
    }
    if controller.fence(kind, id, epoch, "its connection closed and nothing answers at its address").await {
        controller.metrics.probe_fences.inc();
    }
}

/// Whether something listens at `addr`, asked twice: a process killed a
/// moment ago may still have its listening socket while its connections are
/// already closed, so one connection that succeeds is not enough.
async fn answers(addr: &str) -> bool {
    for attempt in 0..2 {
        if attempt > 0 {
            tokio::time::sleep(PROBE_AGAIN).await;
        }
        let Ok(Ok(stream)) = tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await else {
            return false;
        };
        // Reset or closed at once: nothing serves there.
        let mut byte = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(PROBE_HOLD, stream.peek(&mut byte)).await {
            return false;
        }
    }
    true
}

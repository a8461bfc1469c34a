//! The attach stream (`Attach`): each registered node holds one open to the
//! leader, which sends it an event every `PING_EVERY`. A process killed
//! outright closes its connections at once, so the leader sees the stream
//! end without the node having said anything; it then probes the node's
//! address and, if the connection is refused there, fences the node
//! without waiting out its session. A frozen node keeps its connections
//! (the kernel answers for it), so it is still found by its session, and so
//! is a node cut off by the network: a probe that gets no answer at all
//! proves nothing (a partition that heals in a second must not fence it).

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

/// Whether something may still listen at `addr`, asked twice: a process
/// killed a moment ago may still have its listening socket while its
/// connections are already closed, so one connection that succeeds is not
/// enough. Only a refused connection (or one reset at once) says the
/// process is gone: a connection attempt that gets no answer, or an
/// unreachable network, is a frozen or cut-off node (a partition, a zone
/// dropping packets), which its session decides, not the probe.
async fn answers(addr: &str) -> bool {
    for attempt in 0..2 {
        if attempt > 0 {
            tokio::time::sleep(PROBE_AGAIN).await;
        }
        let stream = match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => return false,
            // Silent or unreachable: not known to be gone.
            Ok(Err(_)) | Err(_) => return true,
        };
        // Reset or closed at once: nothing serves there.
        let mut byte = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(PROBE_HOLD, stream.peek(&mut byte)).await {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_a_refused_connection_says_the_node_is_gone() {
        // The kernel completes connections into a listener's backlog.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listening = listener.local_addr().unwrap().to_string();
        assert!(answers(&listening).await, "a listening process answers");
        // A port nothing listens on: refused at once.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let refused = closed.local_addr().unwrap().to_string();
        drop(closed);
        assert!(!answers(&refused).await, "a refused connection: gone");
    }
}

//! Trims this node's copy of each log from the trim points the controller
//! commits (`CommitUpload`, DESIGN §3): a node never trims on a broker's
//! request, only from metadata, so an entry goes only once the objects
//! holding it are committed.

use std::collections::HashMap;
use std::sync::Arc;

use keel_controller_client::{Image, LogId, MetadataClient, NodeId, Seq};
use tokio_util::sync::CancellationToken;

use crate::store::{StoreHandle, StoreRequest};

/// Follows the metadata and sends the store each log's new trim point.
pub(crate) async fn run(
    client: Arc<MetadataClient>,
    me: NodeId,
    incarnation: String,
    store: StoreHandle,
    cancel: CancellationToken,
) {
    let (mut images, follow) = keel_controller_client::follower::follow(client, cancel.clone());
    tokio::spawn(follow);
    let mut sent: HashMap<LogId, Seq> = HashMap::new();
    loop {
        let image: Arc<Image> = images.borrow_and_update().clone();
        for log in image.wal_logs.values() {
            let mine = log.ensemble.iter().any(|member| member.node == me && member.incarnation == incarnation);
            if !mine || log.trim_seq.0 == 0 || sent.get(&log.id).is_some_and(|seq| *seq >= log.trim_seq) {
                continue;
            }
            let request = StoreRequest::Trim { log: log.id, seq: log.trim_seq };
            if store.send(request).await.is_err() {
                return;
            }
            tracing::debug!(log = %log.id, trim_seq = %log.trim_seq, "trimming from the committed trim point");
            sent.insert(log.id, log.trim_seq);
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = images.changed() => if changed.is_err() { return },
        }
    }
}

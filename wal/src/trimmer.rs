//! Trims this node's copy of each log from the trim points the controller
//! commits (`CommitUpload`, DESIGN §3): a node never trims on a broker's
//! request, only from metadata, so an entry goes only once the objects
//! holding it are committed. A sealed log trimmed to its sealed seq is
//! dropped whole: entries after the sealed seq (in flight when it was sealed)
//! are no part of it, and would otherwise keep their segments forever.
//!
//! Done logs are then forgotten by the controller (`ForgetLogs`). A log
//! this node still holds entries of (it was down when the log was done)
//! that the metadata no longer lists, although it lists later logs, was
//! forgotten: it is trimmed whole too, by a sweep every `SWEEP_EVERY`. Its
//! fence stays in the journal.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use keel_controller_client::{Image, LogId, MetadataClient, NodeId, Seq, WalLogState};
use tokio_util::sync::CancellationToken;

use crate::store::{StoreHandle, StoreRequest, TrimTo};

/// How often held logs are checked against the metadata for forgotten ones.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Follows the metadata and sends the store each log's new trim point.
pub(crate) async fn run(
    client: Arc<MetadataClient>,
    me: NodeId,
    incarnation: String,
    store: StoreHandle,
    cancel: CancellationToken,
) {
    let (mut images, follow) = keel_controller_client::follower::follow(client, cancel.clone());
    let trimming = async move {
        let mut sent: HashMap<LogId, Seq> = HashMap::new();
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        loop {
            let image: Arc<Image> = images.borrow_and_update().clone();
            for log in image.wal_logs.values() {
                let mine = log.ensemble.iter().any(|member| member.node == me && member.incarnation == incarnation);
                let done = matches!(&log.state, WalLogState::Sealed { sealed_seq, .. } if log.trim_seq >= *sealed_seq);
                let (trim, to) = match done {
                    true => (Seq(u64::MAX), TrimTo::Everything),
                    false => (log.trim_seq, TrimTo::Seq(log.trim_seq)),
                };
                if !mine || trim.0 == 0 || sent.get(&log.id).is_some_and(|seq| *seq >= trim) {
                    continue;
                }
                let request = StoreRequest::Trim { log: log.id, to };
                if store.send(request).await.is_err() {
                    return;
                }
                tracing::debug!(log = %log.id, trim_seq = %log.trim_seq, "trimming from the committed trim point");
                sent.insert(log.id, trim);
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = images.changed() => if changed.is_err() { return },
                _ = sweep.tick() => {
                    if trim_forgotten(&store, &image).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    // The metadata is followed for as long as trimming runs, and no longer.
    tokio::select! {
        _ = follow => {}
        _ = trimming => {}
    }
}

/// Trims whole every log this node holds entries of that the metadata no
/// longer lists although it lists a later one: the controller forgot it,
/// sealed and uploaded.
async fn trim_forgotten(store: &StoreHandle, image: &Image) -> Result<(), crate::store::StoreStopped> {
    let (reply, status) = tokio::sync::oneshot::channel();
    store.send(StoreRequest::Status { reply }).await?;
    let Ok(status) = status.await else { return Err(crate::store::StoreStopped) };
    for held in status.logs {
        let log = LogId(held.log);
        let forgotten = log <= image.last_log_id && !image.wal_logs.contains_key(&log);
        if forgotten && held.last_seq > held.trim_seq {
            tracing::info!(%log, last_seq = held.last_seq, "trimming a log the metadata forgot (sealed and uploaded)");
            store.send(StoreRequest::Trim { log, to: TrimTo::Everything }).await?;
        }
    }
    Ok(())
}

//! The watch stream: an ordered feed of metadata changes.
//!
//! A watcher sends the last version it applied. If the Raft log still holds
//! every entry after it, the watcher gets exactly those commands as deltas;
//! otherwise (a new watcher, or one older than the purged log) it gets the
//! whole image first. Then it receives each command as it is applied here.
//! A watcher that falls more than the backlog behind gets a fresh image.
//! While nothing changes, the watcher gets a `Progress` event every
//! `PROGRESS_EVERY`, so that it can tell a quiet controller from a silent
//! one (frozen, or cut off) and move to another.
//! Versions only move forward: a watcher ahead of this controller (it watched
//! a more up-to-date one before) is sent only what comes after its version.

use std::sync::Arc;

use keel_controller_client::{pb, Image, Version};
use openraft::EntryPayload;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::controller::Controller;
use crate::store::Change;

pub(crate) type WatchStream = ReceiverStream<Result<pb::WatchEvent, Status>>;

/// Events buffered per watcher before the sender waits for the network.
const WATCH_BUFFER: usize = 256;
/// How often a quiet watch stream says it is alive. Watchers treat three
/// missed ones as a broken stream (`keel_controller_client::follower`).
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

pub(super) fn start(controller: Arc<Controller>, from: Version) -> WatchStream {
    let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
    let tasks = controller.tasks.clone();
    tasks.spawn(async move {
        controller.metrics.watchers.inc();
        let cancel = controller.cancel.clone();
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = sender.closed() => {}
            _ = feed(&controller, from, &sender) => {}
        }
        controller.metrics.watchers.dec();
    });
    ReceiverStream::new(receiver)
}

pub(super) fn image_reply(image: &Image) -> Result<pb::ImageReply, Status> {
    let bytes = serde_json::to_vec(image).map_err(|e| Status::internal(format!("encode image: {e}")))?;
    Ok(pb::ImageReply { version: image.version.0, image: bytes })
}

fn image_event(image: &Image) -> Result<pb::WatchEvent, Status> {
    Ok(pb::WatchEvent { event: Some(pb::watch_event::Event::Image(image_reply(image)?)) })
}

fn delta_event(version: Version, command: Vec<u8>) -> pb::WatchEvent {
    pb::WatchEvent { event: Some(pb::watch_event::Event::Delta(pb::Delta { version: version.0, command })) }
}

/// Sends the catch-up, then live changes, until the watcher goes away.
/// Cancellation-safe: it only reads state and sends on the channel.
async fn feed(controller: &Controller, from: Version, sender: &mpsc::Sender<Result<pb::WatchEvent, Status>>) {
    let (mut changes, image, applied_index) = controller.state.subscribe();
    let catch_up = catch_up(controller, from, applied_index);
    let mut sent_through = match catch_up {
        Some(deltas) => {
            for (version, command) in deltas {
                if sender.send(Ok(delta_event(version, command))).await.is_err() {
                    return;
                }
            }
            applied_index.max(from.0)
        }
        None => {
            if sender.send(image_event(&image)).await.is_err() {
                return;
            }
            applied_index
        }
    };
    loop {
        let change = tokio::select! {
            change = changes.recv() => change,
            _ = tokio::time::sleep(PROGRESS_EVERY) => {
                let progress = pb::Progress { version: sent_through };
                let event = pb::WatchEvent { event: Some(pb::watch_event::Event::Progress(progress)) };
                if sender.send(Ok(event)).await.is_err() {
                    return;
                }
                continue;
            }
        };
        match change {
            Ok(Change::Delta { version, command }) => {
                if version.0 <= sent_through {
                    continue;
                }
                sent_through = version.0;
                if sender.send(Ok(delta_event(version, command.as_ref().clone()))).await.is_err() {
                    return;
                }
            }
            Ok(Change::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => {
                let (fresh, image, applied_index) = controller.state.subscribe();
                changes = fresh;
                sent_through = applied_index;
                if sender.send(image_event(&image)).await.is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// The commands after `from` up to `applied_index`, if the log still holds all
/// of them; `None` when the watcher needs the whole image instead.
fn catch_up(controller: &Controller, from: Version, applied_index: u64) -> Option<Vec<(Version, Vec<u8>)>> {
    if from.0 == 0 {
        return None;
    }
    if from.0 >= applied_index {
        return Some(Vec::new());
    }
    let entries = match controller.log.read_range(from.0 + 1..=applied_index) {
        Ok(entries) => entries,
        Err(error) => {
            tracing::warn!(%from, "failed to read log for watch catch-up, sending image: {error}");
            return None;
        }
    };
    let complete = entries.first().is_some_and(|entry| entry.log_id.index == from.0 + 1)
        && entries.len() as u64 == applied_index - from.0;
    if !complete {
        return None;
    }
    entries
        .into_iter()
        .filter_map(|entry| match entry.payload {
            EntryPayload::Normal(command) => Some((Version(entry.log_id.index), command)),
            EntryPayload::Blank | EntryPayload::Membership(_) => None,
        })
        .map(|(version, command)| serde_json::to_vec(&command).ok().map(|bytes| (version, bytes)))
        .collect()
}

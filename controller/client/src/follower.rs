//! A process's copy of the cluster metadata: it follows the controllers'
//! watch stream (an image, then ordered deltas) and publishes each new image.
//! Brokers answer Kafka `Metadata` and check leadership from it; WAL nodes
//! trim from the trim points in it.
//!
//! A controller sends progress on a quiet stream; a stream silent for
//! `WATCH_SILENCE` is taken as broken (its controller frozen or cut off),
//! and the follower watches from another controller.

use std::sync::Arc;
use std::time::Duration;

use crate::{Image, MetadataClient, Version, WatchItem};
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const RETRY_BACKOFF: Duration = Duration::from_millis(200);
/// A watch stream that sends nothing for this long is broken: controllers
/// send progress every 500 ms.
pub const WATCH_SILENCE: Duration = Duration::from_millis(1500);

/// Follows the metadata until `cancel` fires. The receiver starts with an
/// empty image at version 0.
pub fn follow(
    client: Arc<MetadataClient>,
    cancel: CancellationToken,
) -> (watch::Receiver<Arc<Image>>, impl std::future::Future<Output = ()>) {
    let (sender, receiver) = watch::channel(Arc::new(Image::default()));
    (receiver, run(client, sender, cancel))
}

async fn run(client: Arc<MetadataClient>, sender: watch::Sender<Arc<Image>>, cancel: CancellationToken) {
    let mut image = Image::default();
    while !cancel.is_cancelled() {
        let stream = tokio::select! {
            _ = cancel.cancelled() => return,
            stream = client.watch(image.version) => stream,
        };
        let (controller, mut stream) = match stream {
            Ok((controller, stream)) => (controller, Box::pin(stream)),
            Err(error) => {
                tracing::debug!("metadata watch could not start: {error}");
                tokio::time::sleep(RETRY_BACKOFF).await;
                continue;
            }
        };
        loop {
            let item = tokio::select! {
                _ = cancel.cancelled() => return,
                item = tokio::time::timeout(WATCH_SILENCE, stream.next()) => item,
            };
            match item {
                Ok(Some(Ok(WatchItem::Image(fresh)))) => image = fresh,
                Ok(Some(Ok(WatchItem::Delta(version, command)))) => apply(&mut image, version, &command),
                Ok(Some(Ok(WatchItem::Progress(_)))) => continue,
                Ok(Some(Err(error))) => {
                    tracing::debug!("metadata watch broke: {error}");
                    break;
                }
                Ok(None) => break,
                Err(_) => {
                    let endpoint = &client.endpoints()[controller];
                    tracing::info!(controller = %endpoint, "the metadata watch went silent; watching another controller");
                    client.avoid(controller);
                    break;
                }
            }
            sender.send_replace(Arc::new(image.clone()));
        }
        tokio::time::sleep(RETRY_BACKOFF).await;
    }
}

/// Applies a delta; a command the controller refused still advances the
/// version, and one at or below the image's version (a repeat) changes nothing.
fn apply(image: &mut Image, version: Version, command: &crate::Command) {
    if let Err(error) = image.apply(version, command) {
        tracing::trace!(%version, "delta did not apply: {error}");
    }
}

/// Waits until the image is at `version` or later, or `timeout` passes.
pub async fn wait_for_version(
    images: &mut watch::Receiver<Arc<Image>>,
    version: Version,
    timeout: Duration,
) -> anyhow::Result<Arc<Image>> {
    let found = tokio::time::timeout(timeout, images.wait_for(|image| image.version >= version)).await;
    match found {
        Ok(Ok(image)) => Ok(image.clone()),
        Ok(Err(_)) => anyhow::bail!("the metadata follower stopped"),
        Err(_) => anyhow::bail!("metadata did not reach {version} within {timeout:?}"),
    }
}

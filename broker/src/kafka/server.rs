//! The Kafka listener: one task per connection reads request frames, admits
//! each in order (a produce appends its batches there, so pipelined produces
//! keep their order), runs the rest of each request as its own task (so a
//! produce waiting for the WAL does not hold up the fetches behind it) and
//! writes the answers back strictly in request order, as the protocol requires.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use keel_broker_core::wire::{self, Unreadable};

use super::request;
use crate::broker::Broker;

/// Requests of one connection being worked on at once, as Kafka's
/// per-connection in-flight limit; reading pauses beyond it.
const IN_FLIGHT_PER_CONNECTION: usize = 32;

pub async fn serve(listener: TcpListener, broker: Arc<Broker>, tasks: TaskTracker, cancel: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let broker = broker.clone();
                let cancel = cancel.clone();
                let request_tasks = tasks.clone();
                tasks.spawn(async move {
                    broker.cluster.metrics.connections.inc();
                    if let Err(error) = connection(stream, &broker, &request_tasks, cancel).await {
                        tracing::debug!(%peer, "connection closed: {error}");
                    }
                    broker.cluster.metrics.connections.dec();
                });
            }
            Err(error) => {
                tracing::warn!("accept failed: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

type Answer = oneshot::Receiver<Option<BytesMut>>;

async fn connection(
    stream: TcpStream,
    broker: &Arc<Broker>,
    tasks: &TaskTracker,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let peer = stream.peer_addr()?;
    let (mut reader, mut writer) = stream.into_split();
    let (answers, mut queue) = mpsc::channel::<Answer>(IN_FLIGHT_PER_CONNECTION);
    let write = async move {
        while let Some(answer) = queue.recv().await {
            let Ok(frame) = answer.await else { break };
            if let Some(frame) = frame {
                writer.write_all(&frame).await?;
            }
        }
        anyhow::Ok(())
    };
    let (broker, tasks) = (broker.clone(), tasks.clone());
    // Owns the sender of `answers`: when reading ends, the writer sends what
    // is still owed and then ends too.
    let read = async move {
        let max = broker.cluster.config.request_bytes_max;
        loop {
            let length = tokio::select! {
                _ = cancel.cancelled() => return anyhow::Ok(()),
                length = reader.read_i32() => match length {
                    Ok(length) => length,
                    Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(error) => return Err(error.into()),
                },
            };
            if length < 0 || length as u32 > max {
                tracing::info!(%peer, length, max, "closing a connection: request size out of bounds");
                return Ok(());
            }
            let mut frame = vec![0u8; length as usize];
            reader.read_exact(&mut frame).await?;
            let request = match wire::parse(Bytes::from(frame)) {
                Ok(request) => request,
                Err(error) => {
                    tracing::info!(%peer, "closing a connection: {error}");
                    return Ok(());
                }
            };
            let client = request.header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default();
            let (reply, answer) = oneshot::channel();
            if answers.send(answer).await.is_err() {
                return Ok(());
            }
            let admitted = request::admit(&broker, request).await;
            let broker = broker.clone();
            tasks.spawn(async move {
                match async { request::handle(&broker, admitted?, peer).await }.await {
                    Ok(frame) => {
                        let _ = reply.send(frame);
                    }
                    // Dropping `reply` ends the writer, which closes the connection.
                    Err(error @ Unreadable::Encode { .. }) => {
                        tracing::error!(%peer, client, "closing a connection: {error}")
                    }
                    Err(error) => tracing::info!(%peer, client, "closing a connection: {error}"),
                }
            });
        }
    };
    tokio::pin!(read, write);
    tokio::select! {
        read = &mut read => {
            read?;
            write.await
        }
        // The writer stopped (a request was unreadable, or the peer is gone).
        write = &mut write => write,
    }
}

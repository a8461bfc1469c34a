//! The Kafka listener: one task per connection reads request frames, admits
//! each in order (a produce appends its batches there, so pipelined produces
//! keep their order), runs the rest of each request as its own task (so a
//! produce waiting for the WAL does not hold up the fetches behind it) and
//! writes the answers back strictly in request order, as the protocol requires.
//!
//! Each listener (`listeners`) is served alike; on an SSL one the TLS
//! handshake comes first, within `HANDSHAKE_TIMEOUT`.
//!
//! Everything a client can make the broker hold is bounded: connections
//! (`connections_max`; more are closed as they arrive), requests in flight
//! per connection, the bytes of requests read and not yet answered across
//! all connections (reading waits for room), and a connection's idle time.
//! A fetch still waiting when its connection closes is dropped with it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use keel_broker_core::wire::{self, Unreadable};

use super::request;
use super::sasl::{Authentication, Gate, Mechanism};
use super::tls::Tls;
use crate::broker::Broker;
use crate::config::listeners::Listener;

/// Requests of one connection being worked on at once, as Kafka's
/// per-connection in-flight limit; reading pauses beyond it.
const IN_FLIGHT_PER_CONNECTION: usize = 32;
/// A connection with no request for this long is closed (Kafka's
/// `connections.max.idle.ms`).
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// A TLS client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of requests read and not yet answered, across all connections, in
/// KiB (or one request of `request_bytes_max`, if that is more).
const QUEUED_REQUEST_KIB_MAX: u32 = 256 << 10;

/// Serves every Kafka listener until `cancel`; `tls` is set when one is
/// SSL. The limits are the broker's, shared by all listeners.
pub async fn serve(
    listeners: Vec<(TcpListener, Listener)>,
    tls: Option<Arc<Tls>>,
    broker: Arc<Broker>,
    tasks: TaskTracker,
    cancel: CancellationToken,
) {
    let limits = Limits {
        connections: Arc::new(Semaphore::new(broker.cluster.config.connections_max as usize)),
        queued: Arc::new(Semaphore::new(
            QUEUED_REQUEST_KIB_MAX.max(broker.cluster.config.request_bytes_max >> 10) as usize
        )),
    };
    let mut accepting = Vec::new();
    for (socket, listener) in listeners {
        let tls = match listener.protocol.tls() {
            false => None,
            true => Some(tls.clone().expect("the config refuses an SSL listener without TLS files")),
        };
        let sasl = listener.protocol.sasl().then(|| broker.cluster.config.sasl_mechanisms.clone());
        let name: Arc<str> = listener.name.into();
        let listening = Listening { name, tls, sasl };
        accepting.push(accept(socket, listening, broker.clone(), limits.clone(), tasks.clone(), cancel.clone()));
    }
    futures::future::join_all(accepting).await;
}

/// What bounds the connections of all listeners together.
#[derive(Clone, Debug)]
struct Limits {
    connections: Arc<Semaphore>,
    queued: Arc<Semaphore>,
}

/// The connection a request came on, for handlers whose answer depends on it.
#[derive(Clone, Debug)]
pub struct Connection {
    pub peer: SocketAddr,
    /// The listener's name: Metadata answers with that listener's addresses.
    pub listener: Arc<str>,
}

/// How one listener serves its connections.
#[derive(Debug)]
struct Listening {
    name: Arc<str>,
    tls: Option<Arc<Tls>>,
    /// The SASL mechanisms a client must authenticate with first, on a SASL listener.
    sasl: Option<Vec<Mechanism>>,
}

async fn accept(
    socket: TcpListener,
    listening: Listening,
    broker: Arc<Broker>,
    limits: Limits,
    tasks: TaskTracker,
    cancel: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = socket.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Ok(slot) = limits.connections.clone().try_acquire_owned() else {
                    broker.cluster.metrics.connections_refused.inc();
                    tracing::debug!(%peer, max = broker.cluster.config.connections_max, "too many connections: closing a new one");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let broker = broker.clone();
                let cancel = cancel.clone();
                let request_tasks = tasks.clone();
                let queued = limits.queued.clone();
                let connection = Connection { peer, listener: listening.name.clone() };
                let tls = listening.tls.as_ref().map(|tls| tls.acceptor());
                let sasl = listening.sasl.clone().map(Authentication::new);
                tasks.spawn(async move {
                    broker.cluster.metrics.connections.inc();
                    let served = match tls {
                        None => {
                            let (reader, writer) = stream.into_split();
                            serve_connection(reader, writer, &connection, sasl, &broker, &request_tasks, &queued, cancel)
                                .await
                        }
                        Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => {
                                let (reader, writer) = tokio::io::split(stream);
                                serve_connection(
                                    reader,
                                    writer,
                                    &connection,
                                    sasl,
                                    &broker,
                                    &request_tasks,
                                    &queued,
                                    cancel,
                                )
                                .await
                            }
                            Ok(Err(error)) => {
                                broker.cluster.metrics.tls_handshakes_failed.inc();
                                tracing::info!(%peer, listener = %connection.listener, "TLS handshake failed: {error}");
                                Ok(())
                            }
                            Err(_) => {
                                broker.cluster.metrics.tls_handshakes_failed.inc();
                                tracing::info!(%peer, listener = %connection.listener, ?HANDSHAKE_TIMEOUT, "TLS handshake timed out");
                                Ok(())
                            }
                        },
                    };
                    if let Err(error) = served {
                        tracing::debug!(%peer, "connection closed: {error}");
                    }
                    broker.cluster.metrics.connections.dec();
                    drop(slot);
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

#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    mut reader: impl AsyncRead + Unpin + Send + 'static,
    mut writer: impl AsyncWrite + Unpin + Send + 'static,
    connection: &Connection,
    mut sasl: Option<Authentication>,
    broker: &Arc<Broker>,
    tasks: &TaskTracker,
    queued: &Arc<Semaphore>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let peer = connection.peer;
    let connection = Arc::new(connection.clone());
    // Cancelled when the connection ends, for the fetches still waiting.
    let closed = cancel.child_token();
    let _closing = closed.clone().drop_guard();
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
    let (broker, tasks, queued) = (broker.clone(), tasks.clone(), queued.clone());
    // Owns the sender of `answers`: when reading ends, the writer sends what
    // is still owed and then ends too.
    let read = async move {
        let max = broker.cluster.config.request_bytes_max;
        loop {
            let length = tokio::select! {
                _ = cancel.cancelled() => return anyhow::Ok(()),
                length = tokio::time::timeout(IDLE_TIMEOUT, reader.read_i32()) => match length {
                    Ok(Ok(length)) => length,
                    Ok(Err(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Ok(Err(error)) => return Err(error.into()),
                    Err(_) => {
                        tracing::debug!(%peer, ?IDLE_TIMEOUT, "closing an idle connection");
                        return Ok(());
                    }
                },
            };
            if length < 0 || length as u32 > max {
                tracing::info!(%peer, length, max, "closing a connection: request size out of bounds");
                return Ok(());
            }
            // Room for the request among all connections' unanswered ones.
            let kib = (length as u32).div_ceil(1024).max(1);
            let room = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                room = queued.clone().acquire_many_owned(kib) => room.expect("the semaphore is never closed"),
            };
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
            // On a SASL listener, authentication first, in request order.
            let gated = match sasl.as_mut() {
                None => Ok(Gate::Pass(request)),
                Some(sasl) => sasl.gate(&broker, request),
            };
            let request = match gated {
                Ok(Gate::Pass(request)) => request,
                Ok(Gate::Answer(frame)) => {
                    let (reply, answer) = oneshot::channel();
                    if answers.send(answer).await.is_err() {
                        return Ok(());
                    }
                    let _ = reply.send(Some(frame));
                    continue;
                }
                Ok(Gate::AnswerThenClose(frame, why)) => {
                    // The writer sends this answer, then the connection closes.
                    let (reply, answer) = oneshot::channel();
                    if answers.send(answer).await.is_ok() {
                        let _ = reply.send(Some(frame));
                    }
                    tracing::info!(%peer, client, listener = %connection.listener, "SASL authentication failed, closing the connection: {why}");
                    return Ok(());
                }
                Ok(Gate::Close(why)) => {
                    tracing::info!(%peer, client, listener = %connection.listener, "closing a connection: {why}");
                    return Ok(());
                }
                Err(error) => {
                    tracing::info!(%peer, client, "closing a connection: {error}");
                    return Ok(());
                }
            };
            let (reply, answer) = oneshot::channel();
            if answers.send(answer).await.is_err() {
                return Ok(());
            }
            let fetch = request.api == kafka_protocol::messages::ApiKey::Fetch;
            let admitted = request::admit(&broker, request).await;
            let broker = broker.clone();
            let closed = closed.clone();
            let connection = connection.clone();
            tasks.spawn(async move {
                let _room = room;
                let handled = async { request::handle(&broker, admitted?, &connection).await };
                // A fetch may wait long for records; nobody reads its answer
                // once the connection is gone. (A produce runs to the end: its
                // batches are appended already.)
                let handled = tokio::select! {
                    _ = closed.cancelled(), if fetch => return,
                    handled = handled => handled,
                };
                match handled {
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

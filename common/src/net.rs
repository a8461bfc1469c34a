//! Sockets as every Keel server wants them.

use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt};

/// The accepted connections of `listener`, with Nagle's algorithm off.
///
/// Servers are handed their connections from here rather than binding
/// themselves, so nothing sets the option for them: without it, small replies
/// (a WAL acknowledgement, a Raft vote) wait for the peer's delayed ACK, tens
/// of milliseconds.
pub fn incoming_nodelay(listener: TcpListener) -> impl Stream<Item = std::io::Result<TcpStream>> {
    TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

//! How every internal gRPC channel and server is set up, in one place.
//!
//! A silent peer (frozen, or behind a network that drops its packets) is the
//! common fault, and TCP alone notices it only after minutes. So every
//! channel and every server sends HTTP/2 keepalive pings, also while idle,
//! and closes a connection whose ping is not answered in time: a call or a
//! stream to a silent peer fails within `KEEPALIVE_INTERVAL +
//! KEEPALIVE_TIMEOUT` instead of hanging. Callers still put their own
//! deadline on each call.

use std::time::Duration;

use tonic::transport::{Endpoint, Server};

/// How often a connection is pinged.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a ping may go unanswered before the connection is closed.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// An endpoint for the internal gRPC server at `addr` (`host:port`), with
/// keepalive, `TCP_NODELAY` and a connect timeout.
pub fn endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true))
}

/// A server builder with keepalive, so that the streams of a silent client
/// (a watcher, a writer) are closed too.
pub fn server() -> Server {
    Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
}

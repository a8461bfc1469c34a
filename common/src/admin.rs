//! The admin HTTP server every binary runs: Prometheus `/metrics`, liveness
//! `/health` (the process answers) and readiness `/ready` (it can do its job).

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Serves the admin endpoints on `listener` until `cancel` fires.
///
/// `ready` says whether the process can do its job right now (for a
/// controller: it belongs to a quorum that has a leader).
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    ready: watch::Receiver<bool>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    serve_with(listener, registry, ready, Router::new(), cancel).await
}

/// `serve`, with the process's own `extra` routes beside the common ones.
pub async fn serve_with(
    listener: TcpListener,
    registry: Registry,
    ready: watch::Receiver<bool>,
    extra: Router,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let app = extra
        .route("/metrics", get(move || std::future::ready(render_metrics(&registry))))
        .route("/health", get(|| std::future::ready("ok\n")))
        .route(
            "/ready",
            get(move || {
                let is_ready = *ready.borrow();
                std::future::ready(if is_ready {
                    (StatusCode::OK, "ready\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                })
            }),
        );
    axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned()).await?;
    Ok(())
}

fn render_metrics(registry: &Registry) -> (StatusCode, String) {
    let mut buffer = Vec::new();
    match TextEncoder::new().encode(&registry.gather(), &mut buffer) {
        Ok(()) => (StatusCode::OK, String::from_utf8_lossy(&buffer).into_owned()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("failed to encode metrics: {e}\n")),
    }
}

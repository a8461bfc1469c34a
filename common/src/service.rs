//! What every Keel service binary's `main` does around the service itself.

use std::future::Future;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::logging::LogFormat;

/// Starts logging and a multi-threaded runtime, runs `run` on it, and turns
/// its result into the exit code; a failure is logged once, as one line.
pub fn main<Fut>(log_format: LogFormat, what: &str, run: impl FnOnce() -> Fut) -> ExitCode
where
    Fut: Future<Output = anyhow::Result<()>>,
{
    crate::logging::init(log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!("failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{what} failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Waits for SIGTERM or SIGINT, or for `cancel` (a fatal error inside the
/// service). Returns an error in the second case, for a non-zero exit.
/// Cancellation-safe: it only waits.
pub async fn until_stopped(what: &str, cancel: &CancellationToken) -> anyhow::Result<()> {
    tokio::select! {
        signal = crate::signal::shutdown_requested() => {
            tracing::info!(signal = signal?, "stopping");
            Ok(())
        }
        _ = cancel.cancelled() => anyhow::bail!("{what} stopped after a fatal error"),
    }
}

//! Disk faults a chaos run injects into a running WAL node through its admin
//! port, served only when the node was started with `--allow-disk-faults`:
//!
//! - `PUT /faults/sync-delay` with a number of milliseconds: every
//!   fdatasync takes that much longer (a slow or failing disk); 0 heals it.
//! - `POST /faults/power-cut`: a batch reaches the disk only in part, a
//!   random half of its pages in any order, and the process dies before the
//!   batch's fdatasync returns, as a host losing power does. Nothing of that
//!   batch was acknowledged, so none of it may be missed; what came before
//!   it was synced and must all be there after the restart. Once armed, the
//!   disk slows (`POWER_CUT_SYNC_MS` per fdatasync) so that appends gather
//!   into batches of several pages, and the cut comes at the first batch of
//!   `POWER_CUT_PAGES` pages, or at any batch after `POWER_CUT_WAIT`.

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::{post, put};
use axum::Router;

/// The faults armed on one node.
#[derive(Debug, Default)]
pub struct DiskFaults {
    sync_delay_ms: AtomicU64,
    power_cut: AtomicBool,
    armed_at: std::sync::Mutex<Option<std::time::Instant>>,
}

/// A disk page: what a power loss keeps or loses as a whole.
const PAGE_BYTES: u64 = 4096;
const POWER_CUT_SYNC_MS: u64 = 50;
const POWER_CUT_PAGES: u64 = 4;
const POWER_CUT_WAIT: Duration = Duration::from_secs(2);

impl DiskFaults {
    /// Called by the journal before each fdatasync.
    pub(crate) fn before_sync(&self) {
        let mut delay = self.sync_delay_ms.load(Ordering::Relaxed);
        if self.power_cut.load(Ordering::Relaxed) {
            delay = delay.max(POWER_CUT_SYNC_MS);
        }
        if delay > 0 {
            // The store's own thread, as a slow disk would hold it.
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(Duration::from_millis(delay));
        }
    }

    /// Called by the journal with a batch about to be written at `offset`:
    /// if a power cut is armed, writes a random half of its pages and ends
    /// the process without syncing.
    pub(crate) fn maybe_cut_power(&self, file: &File, pieces: &[&[u8]], offset: u64) {
        if !self.power_cut.load(Ordering::Relaxed) {
            return;
        }
        let len: u64 = pieces.iter().map(|piece| piece.len() as u64).sum();
        let end = offset + len;
        let first_page = offset - offset % PAGE_BYTES;
        let waited = self.armed_at.lock().map_or(true, |at| at.is_some_and(|at| at.elapsed() >= POWER_CUT_WAIT));
        if end - first_page < POWER_CUT_PAGES * PAGE_BYTES && !waited {
            return;
        }
        let batch: Vec<u8> = pieces.concat();
        let (mut kept, mut pages) = (0, 0);
        let mut page = first_page;
        while page < end {
            let (from, to) = (page.max(offset), (page + PAGE_BYTES).min(end));
            pages += 1;
            if rand::random::<bool>() {
                let bytes = &batch[(from - offset) as usize..(to - offset) as usize];
                // A write that fails is a page the power cut lost.
                if nix::sys::uio::pwrite(file, bytes, from as i64).is_ok() {
                    kept += 1;
                }
            }
            page += PAGE_BYTES;
        }
        tracing::error!(offset, bytes = batch.len(), pages, kept, "power cut (injected): ending before the fdatasync");
        // SIGKILL ends the process at once, running nothing else, as a power
        // loss does.
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        std::process::abort()
    }

    /// The admin routes that set these faults.
    pub fn routes(self: Arc<Self>) -> Router {
        let delay = self.clone();
        Router::new()
            .route(
                "/faults/sync-delay",
                put(move |body: String| {
                    let answer = match body.trim().parse::<u64>() {
                        Ok(ms) => {
                            delay.sync_delay_ms.store(ms, Ordering::Relaxed);
                            tracing::warn!(ms, "fdatasync delay set (injected fault)");
                            (StatusCode::OK, format!("every fdatasync now takes {ms} ms longer\n"))
                        }
                        Err(_) => (StatusCode::BAD_REQUEST, format!("expected milliseconds, got {body:?}\n")),
                    };
                    std::future::ready(answer)
                }),
            )
            .route(
                "/faults/power-cut",
                post(move || {
                    if let Ok(mut at) = self.armed_at.lock() {
                        at.get_or_insert_with(std::time::Instant::now);
                    }
                    self.power_cut.store(true, Ordering::Relaxed);
                    tracing::warn!("power cut armed (injected fault): the node dies inside a coming batch");
                    std::future::ready("the node dies inside a coming batch, before its fdatasync\n")
                }),
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_delay_slows_each_sync_until_it_is_cleared() {
        let faults = DiskFaults::default();
        faults.sync_delay_ms.store(30, Ordering::Relaxed);
        let start = std::time::Instant::now();
        faults.before_sync();
        assert!(start.elapsed() >= Duration::from_millis(30));
        faults.sync_delay_ms.store(0, Ordering::Relaxed);
        let start = std::time::Instant::now();
        faults.before_sync();
        assert!(start.elapsed() < Duration::from_millis(30));
    }
}

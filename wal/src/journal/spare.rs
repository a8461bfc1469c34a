//! Segment files prepared ahead of need. A helper thread creates the next
//! segment's file, zero-filled to full size and fsynced, while the journal
//! fills the current one; rolling over is then a rename instead of writing
//! the whole segment in the middle of an append batch.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

/// Creates `path` as a zero-filled file of `bytes`, via a staging name, and
/// fsyncs it. The caller fsyncs the directory when the name must be durable.
pub(super) fn create_zeroed(path: &Path, bytes: u64) -> std::io::Result<File> {
    let staging = path.with_extension("kseg.new");
    let created = fill_zeroed(&staging, bytes).and_then(|file| std::fs::rename(&staging, path).map(|()| file));
    if created.is_err() {
        // A partly written file (the disk filled up) must not keep its space.
        let _ = std::fs::remove_file(&staging);
    }
    created
}

fn fill_zeroed(staging: &Path, bytes: u64) -> std::io::Result<File> {
    let mut file = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(staging)?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let chunk = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..chunk])?;
        left -= chunk as u64;
    }
    file.sync_all()?;
    Ok(file)
}

/// The helper thread and the spares it has finished.
#[derive(Debug)]
pub(super) struct SparePreparer {
    requests: Option<mpsc::Sender<PathBuf>>,
    ready: Arc<Mutex<Vec<PathBuf>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SparePreparer {
    pub(super) fn start(segment_bytes: u64) -> std::io::Result<SparePreparer> {
        let (requests, receiver) = mpsc::channel::<PathBuf>();
        let ready = Arc::new(Mutex::new(Vec::new()));
        let finished = ready.clone();
        let thread = std::thread::Builder::new().name("wal-spare".into()).spawn(move || {
            for path in receiver {
                match create_zeroed(&path, segment_bytes) {
                    Ok(_) => finished.lock().expect("spare list lock poisoned").push(path),
                    // The journal falls back to creating the segment itself.
                    Err(error) => tracing::warn!(path = %path.display(), "failed to prepare a spare segment: {error}"),
                }
            }
        })?;
        Ok(SparePreparer { requests: Some(requests), ready, thread: Some(thread) })
    }

    /// Asks for `path` to be prepared.
    pub(super) fn request(&self, path: PathBuf) {
        if let Some(requests) = &self.requests {
            let _ = requests.send(path);
        }
    }

    /// Takes `path` if it is ready.
    pub(super) fn take(&self, path: &Path) -> bool {
        let mut ready = self.ready.lock().expect("spare list lock poisoned");
        match ready.iter().position(|prepared| prepared == path) {
            Some(index) => {
                ready.swap_remove(index);
                true
            }
            None => false,
        }
    }
}

impl Drop for SparePreparer {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

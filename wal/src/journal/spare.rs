//! Segment files prepared ahead of need. When the journal has no recycled
//! segment to reuse, a helper thread creates one spare, zero-filled to full
//! size and fsynced, while the journal fills the current segment; rolling
//! over is then a rename instead of writing the whole segment in the middle
//! of an append batch.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

/// Creates `path` as a file of `bytes` that starts with `first` and is zero
/// after it, via a staging name, and fsyncs it. The caller fsyncs the
/// directory when the name must be durable.
pub(super) fn create_zeroed(path: &Path, bytes: u64, first: &[u8]) -> std::io::Result<File> {
    let staging = path.with_extension("kseg.new");
    let created = fill_zeroed(&staging, bytes, first).and_then(|file| std::fs::rename(&staging, path).map(|()| file));
    if created.is_err() {
        // A partly written file (the disk filled up) must not keep its space.
        let _ = std::fs::remove_file(&staging);
    }
    created
}

/// Zeros written between two waits for the disk while filling a segment.
pub(super) const FILL_STEP: usize = 1 << 20;

/// Writes the zeros one step at a time and waits for each step to reach the
/// disk before writing the next. Writing the whole segment and then one
/// fsync would put tens of MiB in the disk's queue at once, and every
/// append's fdatasync on that disk would wait behind them: `keel-bench wal`
/// saw 30-70 ms fdatasyncs on all three nodes whenever they prepared spares
/// that way.
fn fill_zeroed(staging: &Path, bytes: u64, first: &[u8]) -> std::io::Result<File> {
    let mut file = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(staging)?;
    file.write_all(first)?;
    let zeros = vec![0u8; FILL_STEP];
    let mut offset = first.len() as u64;
    while offset < bytes {
        let chunk = (bytes - offset).min(FILL_STEP as u64) as usize;
        file.write_all(&zeros[..chunk])?;
        write_out(&file, offset, chunk)?;
        offset += chunk as u64;
    }
    file.sync_all()?;
    Ok(file)
}

/// Starts writeback of `len` bytes at `offset` and waits for it, without
/// the device cache flush or the metadata an fsync adds (the final
/// `sync_all` makes the whole file durable).
fn write_out(file: &File, offset: u64, len: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: sync_file_range only reads its integer arguments; the
    // descriptor is open for as long as `file` is borrowed.
    #[allow(unsafe_code)]
    let result = unsafe { libc::sync_file_range(file.as_raw_fd(), offset as i64, len as i64, flags) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[derive(Debug, Default)]
struct Spares {
    ready: Vec<PathBuf>,
    /// Asked for and not finished (or failed) yet.
    preparing: usize,
}

/// The helper thread and the spares it has finished.
#[derive(Debug)]
pub(super) struct SparePreparer {
    requests: Option<mpsc::Sender<PathBuf>>,
    spares: Arc<Mutex<Spares>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SparePreparer {
    pub(super) fn start(segment_bytes: u64) -> std::io::Result<SparePreparer> {
        let (requests, receiver) = mpsc::channel::<PathBuf>();
        let spares = Arc::new(Mutex::new(Spares::default()));
        let shared = spares.clone();
        let thread = std::thread::Builder::new().name("wal-spare".into()).spawn(move || {
            for path in receiver {
                let started = std::time::Instant::now();
                let created = create_zeroed(&path, segment_bytes, &[]);
                let mut spares = shared.lock().expect("spare list lock poisoned");
                spares.preparing -= 1;
                match created {
                    Ok(_) => {
                        let seconds = started.elapsed().as_secs_f64();
                        tracing::debug!(path = %path.display(), seconds, "prepared a spare segment");
                        spares.ready.push(path);
                    }
                    // The journal falls back to creating the segment itself.
                    Err(error) => tracing::warn!(path = %path.display(), "failed to prepare a spare segment: {error}"),
                }
            }
        })?;
        Ok(SparePreparer { requests: Some(requests), spares, thread: Some(thread) })
    }

    /// Asks for a spare at `path`, unless one is ready or being prepared.
    pub(super) fn prepare(&self, path: PathBuf) {
        let Some(requests) = &self.requests else { return };
        let mut spares = self.spares.lock().expect("spare list lock poisoned");
        if spares.ready.is_empty() && spares.preparing == 0 && requests.send(path).is_ok() {
            spares.preparing += 1;
        }
    }

    /// Takes a finished spare, if there is one.
    pub(super) fn take(&self) -> Option<PathBuf> {
        self.spares.lock().expect("spare list lock poisoned").ready.pop()
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

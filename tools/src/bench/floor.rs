//! The physical floors the benches compare Keel against, measured in the
//! same run: plain programs on this machine's disk and loopback that do the
//! least any design must do, so a ratio to them says what Keel's own work costs.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{micros_histogram, LatencySummary};

#[derive(Debug, Serialize)]
pub struct Floor {
    pub mb_per_second: f64,
    pub fdatasync: LatencySummary,
}

/// Fewest fdatasyncs a floor measurement takes, so its p99 means something.
const FLOOR_SYNCS_MIN: u64 = 256;

/// Appends entries of `entry_bytes` to a preallocated, zero-filled file of
/// `count` entries, with one fdatasync per `batch` entries: `count` entries,
/// or more (overwriting the file from its start again) until at least
/// `FLOOR_SYNCS_MIN` fdatasyncs were measured.
pub(super) fn measure_floor(dir: &Path, entry_bytes: usize, count: u64, batch: usize) -> anyhow::Result<Floor> {
    let barrier = std::sync::Barrier::new(1);
    let (mb_per_second, fdatasync) = floor_loop(&dir.join("floor.dat"), entry_bytes, count, batch, &barrier)?;
    Ok(Floor { mb_per_second, fdatasync: LatencySummary::from_micros(&fdatasync) })
}

/// `writers` floor loops at once, each on its own file, started together:
/// their MB/s summed and their fdatasyncs in one histogram.
pub(super) fn measure_floors_at_once(
    dir: &Path,
    writers: usize,
    entry_bytes: usize,
    count: u64,
    batch: usize,
) -> anyhow::Result<Floor> {
    let barrier = std::sync::Barrier::new(writers);
    let results: Vec<anyhow::Result<(f64, Histogram<u64>)>> = std::thread::scope(|scope| {
        let loops: Vec<_> = (0..writers)
            .map(|writer| {
                let path = dir.join(format!("floor-{writer}.dat"));
                let barrier = &barrier;
                scope.spawn(move || floor_loop(&path, entry_bytes, count, batch, barrier))
            })
            .collect();
        loops.into_iter().map(|writer| writer.join().expect("a floor writer panicked")).collect()
    });
    let mut total = 0.0;
    let mut fdatasync = micros_histogram();
    for result in results {
        let (mb_per_second, syncs) = result?;
        total += mb_per_second;
        fdatasync.add(&syncs)?;
    }
    Ok(Floor { mb_per_second: total, fdatasync: LatencySummary::from_micros(&fdatasync) })
}

/// Sends `count` entries of `entry_bytes` from one thread to each of
/// `connections` loopback TCP connections, whose receiving threads discard
/// them: MB/s per connection.
pub(super) fn measure_loopback(connections: usize, entry_bytes: usize, count: u64) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..connections {
        let sender = TcpStream::connect(addr)?;
        sender.set_nodelay(true)?;
        senders.push(sender);
        let (mut receiver, _) = listener.accept()?;
        receivers.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 20];
            while receiver.read(&mut buf).is_ok_and(|read| read > 0) {}
        }));
    }
    let payload = vec![0xA5u8; entry_bytes];
    let started = Instant::now();
    for _ in 0..count {
        for sender in &mut senders {
            sender.write_all(&payload)?;
        }
    }
    drop(senders);
    for receiver in receivers {
        receiver.join().expect("a loopback receiver panicked");
    }
    Ok((count * entry_bytes as u64) as f64 / started.elapsed().as_secs_f64() / 1e6)
}

/// One floor loop on `path` (see `measure_floor`), timed from when every
/// loop sharing `barrier` has its file ready: its MB/s and fdatasync times.
fn floor_loop(
    path: &Path,
    entry_bytes: usize,
    count: u64,
    batch: usize,
    barrier: &std::sync::Barrier,
) -> anyhow::Result<(f64, Histogram<u64>)> {
    let size = entry_bytes as u64 * count;
    let prepared = preallocate(path, size);
    // Every loop waits here, also one that failed, so none waits for ever.
    barrier.wait();
    let file = prepared?;
    let payload = vec![0xA5u8; entry_bytes];
    let writes = count.max(FLOOR_SYNCS_MIN * batch as u64);
    let mut fdatasync = micros_histogram();
    let started = Instant::now();
    let mut offset = 0;
    for written in 1..=writes {
        file.write_all_at(&payload, offset)?;
        offset = (offset + entry_bytes as u64) % size;
        if written % batch as u64 == 0 || written == writes {
            let sync_started = Instant::now();
            file.sync_data()?;
            fdatasync.record(sync_started.elapsed().as_micros().max(1) as u64)?;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    remove_and_settle(file, path)?;
    let bytes = writes * entry_bytes as u64;
    Ok((bytes as f64 / elapsed / 1e6, fdatasync))
}

/// Closes and removes a floor's file, then waits for the journal commit
/// that frees its blocks (closed first: an open file's blocks are freed
/// only when it closes). On a disk mounted with `discard` that commit
/// discards them, and that work must not fall on the next measurement.
fn remove_and_settle(file: std::fs::File, path: &Path) -> std::io::Result<()> {
    drop(file);
    std::fs::remove_file(path)?;
    std::fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}

/// Creates `path` as a zero-filled file of `size` bytes, fsynced.
fn preallocate(path: &Path, size: u64) -> std::io::Result<std::fs::File> {
    let mut file = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(path)?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let chunk = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..chunk])?;
        left -= chunk as u64;
    }
    file.sync_all()?;
    Ok(file)
}

/// The quorum-replicated floor at one rate: three nodes on this machine
/// with nothing but loopback TCP, the page cache and fdatasync (no framing,
/// checksums, index or RPC layer).
#[derive(Debug, Serialize)]
pub struct ReplicatedRun {
    pub appends_per_second: f64,
    pub mb_per_second: f64,
    pub ack_latency: LatencySummary,
}

/// How long the replicated floor waits for an acknowledgement, a write to
/// a receiver or a receiver's answer before it gives up on the run.
const REPLICATED_STALL_MAX: Duration = Duration::from_secs(60);

/// The acknowledgement bookkeeping the replicated floor's threads share.
struct Quorum {
    /// Bytes each receiver has answered as fdatasynced.
    durable: [u64; 3],
    /// Entries held by two receivers.
    acked: u64,
    latency: Histogram<u64>,
    /// Why the run cannot go on (a receiver or a connection failed).
    broken: Option<String>,
}

/// Sends `count` entries of `entry_bytes` to three receivers over loopback
/// TCP, at most `in_flight` unacknowledged and paced to `rate` appends per
/// second when given. Each receiver appends what arrives to its own
/// preallocated, zero-filled file, fdatasyncs, and answers with the bytes it
/// now holds durably, so its batches form as a node's group commit does. An
/// entry is acknowledged once two receivers hold it; its latency runs from
/// when the first of the three sender threads (one per connection) wrote it.
pub(super) fn measure_replicated(
    dir: &Path,
    entry_bytes: usize,
    count: u64,
    in_flight: usize,
    rate: Option<f64>,
) -> anyhow::Result<ReplicatedRun> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let size = entry_bytes as u64 * count;
    let mut connections = Vec::new();
    let mut receivers = Vec::new();
    for member in 0..3 {
        let path = dir.join(format!("replicated-{member}.dat"));
        let file = preallocate(&path, size)?;
        let sender = TcpStream::connect(addr)?;
        sender.set_nodelay(true)?;
        // Its clones share these: the sender thread's writes and the answer
        // reader's reads give up on a receiver that stopped reading or answering.
        sender.set_write_timeout(Some(REPLICATED_STALL_MAX))?;
        sender.set_read_timeout(Some(REPLICATED_STALL_MAX))?;
        let (receiver, _) = listener.accept()?;
        receiver.set_nodelay(true)?;
        let buffer_bytes = (in_flight * entry_bytes).max(64 << 10);
        receivers.push(std::thread::spawn(move || {
            let received = receive_and_sync(receiver, &file, buffer_bytes);
            let removed = remove_and_settle(file, &path);
            received.and(removed.map_err(anyhow::Error::from))
        }));
        connections.push(sender);
    }
    let quorum = Mutex::new(Quorum { durable: [0; 3], acked: 0, latency: micros_histogram(), broken: None });
    let changed = Condvar::new();
    // Nanoseconds from `started` to each entry's first write, plus one (0: not yet written).
    let written: Vec<AtomicU64> = (0..count).map(|_| AtomicU64::new(0)).collect();
    // A window's worth of entries, so that one write can carry many.
    let payload = vec![0xA5u8; entry_bytes * in_flight];
    // Cloned before the scoped threads start, so that no early return leaves one waiting.
    let answers = connections.iter().map(TcpStream::try_clone).collect::<Result<Vec<_>, _>>()?;
    let sending = connections.iter().map(TcpStream::try_clone).collect::<Result<Vec<_>, _>>()?;
    let started = Instant::now();
    let sent: anyhow::Result<f64> = std::thread::scope(|scope| {
        for (member, mut answers) in answers.into_iter().enumerate() {
            let (quorum, changed, written) = (&quorum, &changed, &written);
            scope.spawn(move || {
                let outcome = read_answers(&mut answers, member, entry_bytes, started, written, quorum, changed);
                if let Err(error) = outcome {
                    break_run(quorum, changed, format!("answers of receiver {member}: {error:#}"));
                }
            });
        }
        let mut senders = Vec::new();
        for (member, mut connection) in sending.into_iter().enumerate() {
            let (quorum, changed, written, payload) = (&quorum, &changed, &written, &payload);
            senders.push(scope.spawn(move || -> anyhow::Result<()> {
                let mut next = 0;
                while next < count {
                    // The entries due by now: all of them at the maximum rate.
                    let due = match rate {
                        None => count,
                        Some(rate) => {
                            let due = (started.elapsed().as_secs_f64() * rate) as u64 + 1;
                            if due <= next {
                                let at = started + Duration::from_secs_f64(next as f64 / rate);
                                // A plain thread, not a runtime's: it waits for its pace.
                                #[allow(clippy::disallowed_methods)]
                                std::thread::sleep(at.saturating_duration_since(Instant::now()));
                                continue;
                            }
                            due
                        }
                    };
                    let acked = wait_until(quorum, changed, |quorum| next < quorum.acked + in_flight as u64)?;
                    // Everything due and in the window goes in one write, as
                    // a node's client sends what queued while it waited.
                    let upto = due.min(acked + in_flight as u64).min(next + in_flight as u64).min(count);
                    let at = started.elapsed().as_nanos() as u64 + 1;
                    for entry in &written[next as usize..upto as usize] {
                        let _ = entry.compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed);
                    }
                    if let Err(error) = connection.write_all(&payload[..(upto - next) as usize * entry_bytes]) {
                        break_run(quorum, changed, format!("sending to receiver {member}: {error}"));
                        return Err(error.into());
                    }
                    next = upto;
                }
                Ok(())
            }));
        }
        let mut outcome = Ok(());
        for sender in senders {
            let sent = sender.join().map_err(|_| anyhow::anyhow!("a replicated floor sender panicked"));
            outcome = outcome.and(sent.and_then(|sent| sent));
        }
        let acked = outcome.and_then(|()| wait_until(&quorum, &changed, |quorum| quorum.acked == count));
        let elapsed = started.elapsed().as_secs_f64();
        // Closing the connections ends the receivers, then the answer readers.
        for connection in &connections {
            let _ = connection.shutdown(Shutdown::Write);
        }
        acked.map(|_| elapsed)
    });
    for receiver in receivers {
        receiver.join().expect("a replicated floor receiver panicked")?;
    }
    let elapsed = sent?;
    let quorum = quorum.into_inner().expect("quorum lock");
    Ok(ReplicatedRun {
        appends_per_second: count as f64 / elapsed,
        mb_per_second: size as f64 / elapsed / 1e6,
        ack_latency: LatencySummary::from_micros(&quorum.latency),
    })
}

/// Records why the run cannot go on and wakes every thread waiting on it.
fn break_run(quorum: &Mutex<Quorum>, changed: &Condvar, reason: String) {
    quorum.lock().expect("quorum lock").broken.get_or_insert(reason);
    changed.notify_all();
}

/// Waits until `ready` holds, the run broke, or nothing changed for
/// `REPLICATED_STALL_MAX`: the entries acknowledged by then.
fn wait_until(quorum: &Mutex<Quorum>, changed: &Condvar, ready: impl Fn(&Quorum) -> bool) -> anyhow::Result<u64> {
    let mut guard = quorum.lock().expect("quorum lock");
    loop {
        if let Some(reason) = &guard.broken {
            anyhow::bail!("the replicated floor broke: {reason}");
        }
        if ready(&guard) {
            return Ok(guard.acked);
        }
        let (next, waited) = changed.wait_timeout(guard, REPLICATED_STALL_MAX).expect("quorum lock");
        guard = next;
        anyhow::ensure!(!waited.timed_out() || ready(&guard), "no acknowledgement for {REPLICATED_STALL_MAX:?}");
    }
}

/// One receiver: appends what arrives to `file`, fdatasyncs, and answers
/// with the bytes it now holds durably, until the sender closes.
fn receive_and_sync(mut connection: TcpStream, file: &std::fs::File, buffer_bytes: usize) -> anyhow::Result<()> {
    let mut buffer = vec![0u8; buffer_bytes];
    let mut durable = 0u64;
    loop {
        let read = connection.read(&mut buffer)?;
        if read == 0 {
            return Ok(());
        }
        file.write_all_at(&buffer[..read], durable)?;
        file.sync_data()?;
        durable += read as u64;
        connection.write_all(&durable.to_le_bytes())?;
    }
}

/// Reads receiver `member`'s answers and acknowledges each entry that two
/// receivers now hold, recording its latency.
fn read_answers(
    answers: &mut TcpStream,
    member: usize,
    entry_bytes: usize,
    started: Instant,
    written: &[AtomicU64],
    quorum: &Mutex<Quorum>,
    changed: &Condvar,
) -> anyhow::Result<()> {
    let mut answer = [0u8; 8];
    loop {
        match answers.read_exact(&mut answer) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                let quorum = quorum.lock().expect("quorum lock");
                let all = quorum.durable[member] == (written.len() * entry_bytes) as u64;
                return if all { Ok(()) } else { Err(anyhow::anyhow!("closed before it held every entry")) };
            }
            Err(error) => return Err(error.into()),
        }
        let now = started.elapsed().as_nanos() as u64 + 1;
        let mut guard = quorum.lock().expect("quorum lock");
        guard.durable[member] = u64::from_le_bytes(answer);
        let mut durable = guard.durable;
        durable.sort_unstable();
        let acked = durable[1] / entry_bytes as u64;
        for entry in guard.acked..acked {
            let at = written[entry as usize].load(Ordering::Relaxed);
            guard.latency.record((now.saturating_sub(at) / 1000).max(1))?;
        }
        if acked > guard.acked {
            guard.acked = acked;
            changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replicated_floor_acknowledges_every_entry_once_and_removes_its_files() {
        let dir = tempfile::tempdir().unwrap();
        for rate in [None, Some(20_000.0)] {
            let run = measure_replicated(dir.path(), 1024, 3000, 64, rate).unwrap();
            assert_eq!(run.ack_latency.count, 3000, "rate {rate:?}");
            assert!(run.mb_per_second > 0.0 && run.ack_latency.p50_ms > 0.0, "rate {rate:?}: {run:?}");
            if let Some(rate) = rate {
                // Paced runs cannot go faster than their pace.
                assert!(run.appends_per_second <= rate * 1.05, "{run:?}");
            }
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the receivers' files are removed");
    }
}

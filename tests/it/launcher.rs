//! The launcher's processes die with it, also when it is killed -9: each
//! runs in a process group of its own (so that a terminal's Ctrl-C reaches
//! the launcher alone), where nothing else would ever end it.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};

/// A process as /proc/PID/stat shows it: its state, parent and start time
/// (which tells it from a later process given the same pid).
struct Stat {
    state: char,
    parent: i32,
    start: u64,
}

fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command's closing parenthesis, from field 3 on.
    let fields: Vec<&str> = text.rsplit_once(") ")?.1.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        parent: fields.get(1)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// `parent`'s children: their pids and start times.
fn children_of(parent: i32) -> Vec<(i32, u64)> {
    let pids = std::fs::read_dir("/proc").unwrap().filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok());
    pids.filter_map(|pid| stat(pid).filter(|stat| stat.parent == parent).map(|stat| (pid, stat.start))).collect()
}

/// Whether the process started at `start` as `pid` still runs (a zombie
/// waiting to be reaped does not).
fn runs((pid, start): (i32, u64)) -> bool {
    stat(pid).is_some_and(|stat| stat.start == start && stat.state != 'Z')
}

/// The killed launcher's data directory, removed when the test ends.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_launcher_killed_9_takes_its_processes_with_it() {
    // keel-bench wal launches three controllers and three WAL nodes on free
    // ports; a long warm-up keeps it busy while the test kills it.
    let bench = keel_tools::launcher::find_binary("keel-bench").unwrap();
    let mut launcher = tokio::process::Command::new(bench)
        .args(["wal", "--sizes", "1024", "--warm-up-bytes", "1073741824"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = launcher.id().unwrap() as i32;
    let mut lines = BufReader::new(launcher.stderr.take().unwrap()).lines();
    let mut data_dir = None;
    let started = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(dir) = line.strip_prefix("data and logs in ") {
                data_dir = Some(RemoveOnDrop(dir.into()));
            }
            if line.starts_with("warm-up") {
                return true;
            }
        }
        false
    })
    .await;
    assert!(data_dir.is_some(), "keel-bench names its data directory");
    assert!(started.expect("keel-bench's cluster is up within 120 s"), "keel-bench ended before its cluster was up");

    let children = children_of(pid);
    assert_eq!(children.len(), 6, "three controllers and three WAL nodes: {children:?}");
    assert!(launcher.try_wait().unwrap().is_none(), "the launcher still runs when it is killed");
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    launcher.wait().await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut left = children.clone();
    while !left.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        left.retain(|child| runs(*child));
    }
    for (child, _) in &left {
        let _ = kill(Pid::from_raw(*child), Signal::SIGKILL);
    }
    assert!(left.is_empty(), "processes of the killed launcher still ran 10 s later (now killed): {left:?}");
}

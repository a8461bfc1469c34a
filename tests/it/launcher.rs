//! The launcher's processes die with it, also when it is killed -9: each
//! runs in a process group of its own (so that a terminal's Ctrl-C reaches
//! the launcher alone), where nothing else would ever end it.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The pids of `pid`'s children, from /proc.
fn children_of(pid: u32) -> Vec<i32> {
    let mut children = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let list = std::fs::read_to_string(task.unwrap().path().join("children")).unwrap_or_default();
        children.extend(list.split_whitespace().map(|child| child.parse::<i32>().unwrap()));
    }
    children
}

/// Whether `pid` runs: it exists and is not a zombie waiting to be reaped.
fn runs(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
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
    let pid = launcher.id().unwrap();
    let mut lines = BufReader::new(launcher.stderr.take().unwrap()).lines();
    let mut data_dir = None;
    let started = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(dir) = line.strip_prefix("data and logs in ") {
                data_dir = Some(std::path::PathBuf::from(dir));
            }
            if line.starts_with("warm-up") {
                return;
            }
        }
        panic!("keel-bench ended before its cluster was up");
    })
    .await;
    let _remove_data = RemoveOnDrop(data_dir.expect("keel-bench names its data directory"));
    started.expect("keel-bench's cluster is up within 120 s");

    let children = children_of(pid);
    assert_eq!(children.len(), 6, "three controllers and three WAL nodes: {children:?}");
    assert!(launcher.try_wait().unwrap().is_none(), "the launcher still runs when it is killed");
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    launcher.wait().await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut left: Vec<i32> = children.clone();
    while !left.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        left.retain(|child| runs(*child));
    }
    for child in &left {
        let _ = kill(Pid::from_raw(*child), Signal::SIGKILL);
    }
    assert!(left.is_empty(), "processes of the killed launcher still ran 10 s later (now killed): {left:?}");
}

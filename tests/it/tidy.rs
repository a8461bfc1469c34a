//! Keeps the repository honest: what ARCHITECTURE.md names exists, every
//! crate says what it is, nothing stray is left behind, and the broker's
//! layers stay as ARCHITECTURE.md draws them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the repository").to_path_buf()
}

/// Every `.rs` file under `dir`, skipping build output.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if path.is_dir() {
                if !matches!(name, "target" | "node_modules" | ".git") {
                    pending.push(path);
                }
            } else if name.ends_with(".rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A file's code before its tests (by convention, `#[cfg(test)]` comes last),
/// without `//` comments.
fn code_before_tests(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    code.lines().map(|line| line.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

/// The backticked words of a line that look like repository paths.
fn named_paths(line: &str) -> Vec<&str> {
    let extensions = [".rs", ".md", ".toml", ".proto", ".json", ".py", ".sh"];
    line.split('`')
        .skip(1)
        .step_by(2)
        .filter(|word| word.chars().all(|c| c.is_ascii_alphanumeric() || "_./-".contains(c)))
        .filter(|word| !word.starts_with('/') && !word.starts_with("../"))
        .filter(|word| word.contains('/') || extensions.iter().any(|ext| word.ends_with(ext)))
        .collect()
}

#[test]
fn every_path_architecture_md_names_exists() {
    let root = root();
    let map = read(&root.join("ARCHITECTURE.md"));
    let mut bases: Vec<PathBuf> = vec![root.clone()];
    let mut missing = Vec::new();
    let mut checked = 0;
    for line in map.lines() {
        if line.starts_with("## ") {
            bases = vec![root.clone()];
        }
        if line.starts_with("### ") {
            // A crate's section: its paths may be relative to its folder or its `src/`.
            bases = vec![root.clone()];
            for dir in named_paths(line).into_iter().filter(|word| word.ends_with('/')) {
                bases.push(root.join(dir));
                bases.push(root.join(dir).join("src"));
            }
            continue;
        }
        for path in named_paths(line) {
            checked += 1;
            if !bases.iter().any(|base| base.join(path.trim_end_matches('/')).exists()) {
                missing.push(format!("{path} (in: {line})"));
            }
        }
    }
    assert!(checked > 50, "only {checked} paths found: the scan no longer reads ARCHITECTURE.md");
    assert!(missing.is_empty(), "ARCHITECTURE.md names paths that do not exist:\n{}", missing.join("\n"));
}

#[test]
fn every_crate_opens_with_a_module_doc_and_no_dbg_is_left() {
    let root = root();
    let manifest = read(&root.join("Cargo.toml"));
    let members: Vec<&str> = manifest
        .split("members = [")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .expect("the workspace lists its members")
        .split(',')
        .map(|member| member.trim().trim_matches('"'))
        .filter(|member| !member.is_empty())
        .collect();
    assert!(members.len() >= 10, "members: {members:?}");
    let mut undocumented = Vec::new();
    for member in &members {
        let dir = root.join(member);
        let mut roots: Vec<PathBuf> = ["src/lib.rs", "it/main.rs", "tests/it/main.rs"]
            .iter()
            .map(|file| dir.join(file))
            .filter(|path| path.exists())
            .collect();
        if let Ok(bins) = std::fs::read_dir(dir.join("src/bin")) {
            roots.extend(bins.map(|entry| entry.expect("a directory entry").path()));
        }
        assert!(!roots.is_empty(), "{member} has no crate root");
        for path in roots {
            if !read(&path).trim_start().starts_with("//!") {
                undocumented.push(path.strip_prefix(&root).unwrap_or(&path).display().to_string());
            }
        }
    }
    assert!(undocumented.is_empty(), "crate roots without a `//!` module doc:\n{}", undocumented.join("\n"));

    let mut stray = Vec::new();
    for member in members.iter().copied().chain(["fuzz"]) {
        for path in rust_files(&root.join(member)) {
            if read(&path).contains(concat!("dbg", "!(")) {
                stray.push(path.display().to_string());
            }
        }
    }
    assert!(stray.is_empty(), "stray debugging macros in:\n{}", stray.join("\n"));
}

/// The broker's layers as ARCHITECTURE.md draws them: a module may use
/// only modules of a lower rank (rank 0 modules may use one another).
const LAYERS: &[(&str, u32)] = &[
    ("config", 0),
    ("metrics", 0),
    ("error", 0),
    ("large_alloc", 0),
    ("cluster", 1),
    ("storage", 2),
    ("log", 3),
    ("coordinator", 4),
    ("broker", 5),
    ("kafka", 6),
    ("node", 7),
];

/// The top-level module of a file under `broker/src` (`log/append.rs` and `log.rs` are `log`).
fn module_of(relative: &Path) -> String {
    let first = relative.components().next().expect("a file").as_os_str().to_string_lossy().to_string();
    first.trim_end_matches(".rs").to_owned()
}

#[test]
fn the_broker_uses_only_lower_layers_and_only_its_edge_names_kafka_requests() {
    let src = root().join("broker/src");
    let rank = |module: &str| LAYERS.iter().find(|(name, _)| *name == module).map(|(_, rank)| *rank);
    let mut wrong = Vec::new();
    let mut uses = 0;
    let mut seen = BTreeSet::new();
    for path in rust_files(&src) {
        let relative = path.strip_prefix(&src).expect("under broker/src");
        let module = module_of(relative);
        if module == "bin" || module == "lib" {
            continue;
        }
        let Some(own) = rank(&module) else {
            wrong.push(format!("{}: module `{module}` has no layer in LAYERS", relative.display()));
            continue;
        };
        seen.insert(module.clone());
        let code = code_before_tests(&read(&path));
        for used in code.split("crate::").skip(1) {
            let target: String = used.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if target == module {
                continue;
            }
            uses += 1;
            match rank(&target) {
                Some(theirs) if theirs < own || (theirs == 0 && own == 0) => {}
                _ => wrong.push(format!("{}: `{module}` (layer {own}) uses `{target}`", relative.display())),
            }
        }
        let edge = module == "kafka";
        for line in code.lines().filter(|line| line.contains("kafka_protocol::messages")) {
            if !edge {
                wrong.push(format!("{}: names Kafka messages below the edge: {}", relative.display(), line.trim()));
            }
        }
    }
    assert!(uses > 100, "only {uses} uses of other modules found: the scan no longer reads the broker");
    assert_eq!(seen.len(), LAYERS.len(), "every layer has files: {seen:?}");
    assert!(wrong.is_empty(), "the broker's layering is broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_broker_core_does_no_io_and_only_its_wire_module_names_kafka_requests() {
    let core = root().join("broker/core");
    let manifest = read(&core.join("Cargo.toml"));
    let dependencies = manifest.split("[dependencies]").nth(1).and_then(|d| d.split("\n[").next()).expect("deps");
    for forbidden in ["tokio", "tonic", "keel-objects", "aws", "rocksdb", "keel-wal-client"] {
        assert!(
            !dependencies.lines().any(|line| line.trim_start().starts_with(forbidden)),
            "keel-broker-core must not depend on {forbidden}"
        );
    }
    let src = core.join("src");
    let mut wrong = Vec::new();
    for path in rust_files(&src) {
        let relative = path.strip_prefix(&src).expect("under src").to_path_buf();
        let code = code_before_tests(&read(&path));
        let io = ["std::fs", "std::net", "std::thread", "std::process", "Instant::now()", "SystemTime::now"];
        for pattern in io {
            let clock = relative == Path::new("clock.rs") && pattern == "SystemTime::now";
            if code.contains(pattern) && !clock {
                wrong.push(format!("{}: {pattern}", relative.display()));
            }
        }
        let wire = relative.starts_with("wire") || relative == Path::new("wire.rs");
        for line in code.lines().filter(|line| line.contains("kafka_protocol::messages")) {
            let request = line.contains("Request") || line.contains("Response") || line.contains("::*");
            if request && !wire {
                wrong.push(format!("{}: names Kafka requests: {}", relative.display(), line.trim()));
            }
        }
    }
    assert!(wrong.is_empty(), "keel-broker-core must stay free of I/O and of Kafka requests:\n{}", wrong.join("\n"));
}

/// Issue 23: the Python test clients run from a virtual environment, made
/// from Debian's own /usr/bin/python3 where the machine has one (externally
/// managed: pip refuses to install into it), so the set-up works on a stock
/// machine and never installs into a system Python.
#[test]
fn the_python_clients_run_from_a_virtual_environment_of_the_machines_python() {
    let python = keel_tools::launcher::python();
    let script = "import sys, confluent_kafka, kafka, moto; print(sys.prefix); print(sys.base_prefix)";
    let output = std::process::Command::new(&python)
        .args(["-c", script])
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e} (KEEL_SETUP=test scripts/setup makes it)", python.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{} lacks the clients: {}",
        python.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let (prefix, base) = stdout.trim().split_once('\n').expect("two lines");
    assert_ne!(prefix, base, "{} is a virtual environment, not a system Python", python.display());
    if Path::new("/usr/bin/python3").exists() {
        assert_eq!(base, "/usr", "the environment is made from Debian's /usr/bin/python3");
    }
}

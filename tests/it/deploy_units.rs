//! The systemd units in `deploy/systemd/` pass `systemd-analyze verify`
//! (unknown keys, bad values, a missing binary), with their binaries pointed
//! at the ones this build made.

use std::path::PathBuf;

use keel_tools::launcher::find_binary;

#[test]
#[allow(clippy::disallowed_methods)]
fn every_unit_passes_systemd_analyze_verify() {
    let units = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo")).join("../deploy/systemd");
    let dir = tempfile::tempdir().unwrap();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&units).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".service") {
            continue;
        }
        let mut text = std::fs::read_to_string(&path).unwrap();
        for binary in ["keel-controller", "keel-wal", "keel-broker"] {
            let built = find_binary(binary).unwrap();
            text = text.replace(&format!("/usr/local/bin/{binary}"), &built.to_string_lossy());
        }
        std::fs::write(dir.path().join(&name), text).unwrap();
        names.push(name);
    }
    names.sort();
    assert_eq!(names, ["keel-broker.service", "keel-controller.service", "keel-wal.service"]);
    let output = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&names)
        .current_dir(dir.path())
        .output()
        .expect("systemd-analyze is installed by scripts/setup");
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && said.trim().is_empty(), "systemd-analyze verify:\n{said}");
}

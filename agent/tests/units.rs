//! Every systemd unit shipped in `systemd/` passes `systemd-analyze verify` (the real one,
//! from Debian's `systemd` package): no unknown sections or keys, no unparsable values, and an
//! ExecStart that exists. `verify` checks the program on this machine, so the copy under test
//! points ExecStart at the `bosund` cargo just built.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const BOSUND: &str = env!("CARGO_BIN_EXE_bosund");
const INSTALLED_PATH: &str = "/usr/local/bin/bosund";

fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd")
}

/// Runs `systemd-analyze verify` on `unit` (a file); returns (exit code, stderr).
fn verify(unit: &Path) -> (i32, String) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect(
            "systemd-analyze not found: run scripts/test, which installs systemd (apt-get install systemd)",
        );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The lines of `stderr` that are about `unit` (systemd-analyze may also talk about units of
/// the machine it runs on, which are not ours to judge).
fn complaints_about(stderr: &str, unit: &Path) -> Vec<String> {
    let name = unit.file_name().unwrap().to_string_lossy().into_owned();
    stderr
        .lines()
        .filter(|l| {
            l.contains(&name)
                || l.contains("Unknown key")
                || l.contains("Unknown section")
                || l.contains("Failed to parse")
        })
        .map(str::to_string)
        .collect()
}

/// `text` with the installed path of bosund replaced by the one cargo built, in a fresh
/// directory under the unit's own name.
fn staged(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    fs::write(&path, text.replace(INSTALLED_PATH, BOSUND)).unwrap();
    (dir, path)
}

#[test]
fn shipped_units_pass_systemd_analyze_verify() {
    let mut checked = Vec::new();
    for entry in fs::read_dir(units_dir()).unwrap() {
        let path = entry.unwrap().path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "service" | "timer" | "socket" | "path") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let (_dir, unit) = staged(&name, &fs::read_to_string(&path).unwrap());
        let (rc, stderr) = verify(&unit);
        assert_eq!(rc, 0, "systemd-analyze verify {name} failed:\n{stderr}");
        let complaints = complaints_about(&stderr, &unit);
        assert!(
            complaints.is_empty(),
            "systemd-analyze verify {name} complains:\n{}",
            complaints.join("\n")
        );
        checked.push(name);
    }
    assert!(
        checked.iter().any(|n| n == "bosund.service"),
        "bosund.service not found in {}: {checked:?}",
        units_dir().display()
    );
}

#[test]
fn bosund_service_is_a_notify_unit_with_watchdog_and_restart() {
    let text = fs::read_to_string(units_dir().join("bosund.service")).unwrap();
    let has = |line: &str| text.lines().any(|l| l.trim() == line);
    for line in [
        "Type=notify",
        "Restart=on-failure",
        "ExecStart=/usr/local/bin/bosund run --config /etc/bosun/agent.toml",
        "StateDirectory=bosun",
        "RuntimeDirectory=bosun",
        "RuntimeDirectoryMode=0700",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "KillMode=mixed",
    ] {
        assert!(has(line), "bosund.service lacks `{line}`");
    }
    assert!(
        text.lines().any(|l| l.starts_with("WatchdogSec=")),
        "no WatchdogSec"
    );
    // Settings that would break package installs must stay out (see the unit's comments).
    for forbidden in [
        "ProtectSystem=",
        "RestrictSUIDSGID=",
        "ProtectKernelModules=",
        "ProtectKernelTunables=",
    ] {
        assert!(
            !text.lines().any(|l| l.starts_with(forbidden)),
            "bosund.service sets {forbidden}, which breaks what bosun does"
        );
    }
}

#[test]
fn the_verify_check_catches_unknown_keys_and_missing_programs() {
    // The same checks as above must fail on a broken unit, or they prove nothing.
    let text = fs::read_to_string(units_dir().join("bosund.service")).unwrap();
    let typo = text.replace("PrivateTmp=yes", "PrivateTmp=yes\nProtectFooBar=yes");
    let (_d1, unit) = staged("bosund.service", &typo);
    let (_rc, stderr) = verify(&unit);
    let complaints = complaints_about(&stderr, &unit);
    assert!(
        complaints.iter().any(|l| l.contains("ProtectFooBar")),
        "an unknown key went unnoticed: {stderr}"
    );

    let missing = text.replace(INSTALLED_PATH, "/nonexistent/bosund");
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("bosund.service");
    fs::write(&unit, missing).unwrap();
    let (rc, stderr) = verify(&unit);
    assert_ne!(rc, 0, "a missing ExecStart program passed: {stderr}");
}

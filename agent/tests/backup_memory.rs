//! The memory bound of `mysql_backup`, measured: a dump far larger than 64 MiB goes through
//! the real `bosund` into S3 (moto) while bosund's memory is watched.
//!
//! What is bounded is bosund's anonymous memory (heap, buffers, stacks: `RssAnon` in
//! /proc/PID/status, sampled every 2 ms; every buffer of the stream lives far longer than
//! that). Its whole RSS also counts the pages of its own binary that were run, which for this
//! debug build are ~40 MiB and for the shipped release build ~10 MiB: the release figure,
//! whole RSS, is measured by `scripts/bench-backup` (35 MiB for a 1 GiB dump).
//!
//! One test in its own binary, so nothing else runs beside it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use bosun_harness::{MariaDb, Moto};
use common::Sandbox;

/// Bytes the fake dump writes: incompressible, so the object is as large as the dump.
const DUMP_BYTES: u64 = 256 << 20;
/// The 64 MiB bound less room for a release binary's code pages.
const ANON_LIMIT_KIB: u64 = 48 << 10;

#[test]
fn a_dump_four_times_the_budget_streams_with_peak_rss_under_64_mib() {
    let db = MariaDb::start().unwrap();
    db.exec("CREATE DATABASE big; CREATE TABLE big.t (n INT); INSERT INTO big.t VALUES (1)")
        .unwrap();
    let moto = Moto::start().unwrap();
    let sb = Sandbox::new();
    let dump = sb.write(
        "dump.sh",
        &format!(
            "#!/bin/sh\ncase \"$1\" in --version) echo fake-dump; exit 0;; esac\nhead -c {DUMP_BYTES} /dev/urandom\n"
        ),
    );
    std::fs::set_permissions(&dump, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pb = sb.playbook(&format!(
        r#"name = "big"
[[step]]
name = "create bucket"
command = {{ argv = ["{venv}/bin/python3", "-c", "import urllib.request as u; u.urlopen(u.Request('{endpoint}/backups', method='PUT'))"] }}
[[step]]
name = "dump"
mysql_backup = {{ host = "127.0.0.1", port = {port}, user = "root", password = "env:DB_PASSWORD", databases = ["big"], bucket = "backups", dump_command = ["{dump}"] }}
"#,
        venv = moto_venv(),
        endpoint = moto.endpoint(),
        port = db.port(),
        dump = dump.display(),
    ));
    let stdout = std::fs::File::create(sb.path("events.jsonl")).unwrap();
    let mut cmd = sb.bosund();
    cmd.arg("apply")
        .arg(&pb)
        .args(["--output", "json"])
        .envs(moto.env())
        .env("DB_PASSWORD", db.password())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::inherit());
    let child = cmd.spawn().unwrap();
    let pid = child.id() as i32;
    // Largest RssAnon and the last VmHWM seen, until the process is reaped.
    let watcher = std::thread::spawn(move || {
        let field = |status: &str, name: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(name))?;
            line.split_whitespace().nth(1)?.parse().ok()
        };
        let (mut anon, mut hwm) = (0u64, 0u64);
        while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            anon = anon.max(field(&status, "RssAnon:").unwrap_or(0));
            hwm = hwm.max(field(&status, "VmHWM:").unwrap_or(0));
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        (anon, hwm)
    });

    // wait4 reports the child's own peak RSS (ru_maxrss, KiB).
    let mut status = 0;
    // SAFETY: plain FFI call with valid pointers to locals; `pid` is our unreaped child.
    let mut usage: nix::libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { nix::libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid);
    std::mem::forget(child);
    let (anon_kib, hwm_kib) = watcher.join().unwrap();

    let events = std::fs::read_to_string(sb.path("events.jsonl")).unwrap();
    assert!(
        nix::libc::WIFEXITED(status) && nix::libc::WEXITSTATUS(status) == 0,
        "bosund failed: {events}"
    );
    eprintln!(
        "bosund peak anonymous memory {anon_kib} KiB, whole RSS {hwm_kib} KiB (ru_maxrss {} KiB) for a {} MiB dump",
        usage.ru_maxrss,
        DUMP_BYTES >> 20
    );
    assert!(
        events.contains(&format!("{DUMP_BYTES} bytes of SQL")),
        "the whole dump was not uploaded: {events}"
    );
    assert!(anon_kib > 0, "bosund's memory was never sampled");
    assert!(
        anon_kib < ANON_LIMIT_KIB,
        "bosund's anonymous memory peaked at {anon_kib} KiB, over the {ANON_LIMIT_KIB} KiB bound"
    );
}

/// The venv moto runs from (it has Python; the test only needs `urllib`).
fn moto_venv() -> String {
    std::env::var("BOSUN_TEST_VENV")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| format!("{}/.cache/bosun/venv", std::env::var("HOME").unwrap()))
}

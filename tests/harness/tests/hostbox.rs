//! The [`HostBox`] contract: it boots a real systemd, runs commands inside, writes files as
//! the box sees them, and leaves nothing behind when dropped.

use std::path::Path;
use std::time::Instant;

use bosun_harness::HostBox;

#[test]
fn a_box_boots_systemd_runs_commands_and_is_gone_after_drop() {
    HostBox::available().expect("host box prerequisites");
    let started = Instant::now();
    let hb = HostBox::boot().expect("booting a host box");
    eprintln!(
        "hostbox: boot {:.1} s (extract + boot; tarball ready after {:.1} s)",
        hb.boot_time().as_secs_f64(),
        started.elapsed().as_secs_f64() - hb.boot_time().as_secs_f64()
    );

    // PID 1 inside is systemd, and it is up.
    let out = hb.exec(&["cat", "/proc/1/comm"]).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "systemd");
    let state = hb.sh("systemctl is-system-running || true").unwrap();
    assert!(
        matches!(state.trim(), "running" | "degraded"),
        "state {state:?}"
    );
    assert_eq!(hb.sh("hostname").unwrap().trim(), hb.machine());

    // A clean environment: nothing of the test process leaks in.
    let env = hb.sh("env").unwrap();
    assert!(!env.contains("CARGO"), "{env}");
    assert!(env.contains("HOME=/root"), "{env}");

    // Files written from the host land inside, with their mode, and exit codes come back.
    hb.write_file(
        "/opt/t/hello.sh",
        b"#!/bin/sh\necho hi from $(hostname)\nexit 7\n",
        0o750,
    )
    .unwrap();
    let out = hb.exec(&["/opt/t/hello.sh"]).unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("hi from {}", hb.machine())
    );
    assert_eq!(hb.sh("stat -c %a /opt/t/hello.sh").unwrap().trim(), "750");
    hb.copy_in(Path::new("/etc/os-release"), "/root/host-os-release")
        .unwrap();
    assert_eq!(
        std::fs::read(hb.path("/root/host-os-release")).unwrap(),
        std::fs::read("/etc/os-release").unwrap()
    );
    let err = hb.sh("echo oops >&2; exit 3").unwrap_err();
    assert!(format!("{err:#}").contains("oops"), "{err:#}");

    let root = hb.root().to_path_buf();
    let leader = hb.leader_pid();
    assert!(Path::new(&format!("/proc/{leader}")).exists());
    let halt = Instant::now();
    drop(hb);
    eprintln!(
        "hostbox: halt + remove {:.1} s",
        halt.elapsed().as_secs_f64()
    );
    assert!(!root.exists(), "{} is still there", root.display());
    assert!(
        !Path::new(&format!("/proc/{leader}")).exists(),
        "the box's systemd (pid {leader}) outlived the box"
    );
}

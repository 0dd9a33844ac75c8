//! The host-level step kinds (`package`, `service`, `swap`, `docker_install`) and the shipped
//! `bootstrap.toml`, run by the real `bosund` inside a real Debian bookworm host booted with
//! systemd ([`HostBox`]). Nothing is faked: apt installs from the package mirror, systemd
//! starts and stops units, dockerd runs.
//!
//! To prove that a second run runs *no package manager*, each box gets a wrapper
//! `/usr/local/sbin/apt-get` (first on PATH) that logs its arguments and execs the real one.
//!
//! Each test boots its own box (about 3 s once the rootfs tarball is cached; building that
//! tarball the first time takes one to two minutes) and shares it between its checks to keep
//! the number of boots small. Timings are printed (run with `--nocapture` to see them).
//!
//! Kernel-global state: the swap checks turn on a small swap file (32-48 MiB) inside the box,
//! which the kernel shares with the machine running the tests; the test turns it off again,
//! and so does dropping the box.

mod common;
mod daemon_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use bosun_harness::HostBox;
use bosun_model::event::StepStatus;
use common::{BOSUND, Run, summary};

/// Where the apt-get wrapper logs every call.
const APT_LOG: &str = "/var/log/bosun-test-apt-get.log";
/// Environment of every bosund run in a box: facts gathering never waits for an IMDS (a CI
/// machine on EC2 would otherwise look like one through the shared /sys).
const ENV: &[(&str, &str)] = &[("BOSUN_IMDS_ENDPOINT", "http://127.0.0.1:1")];

/// A booted box with bosund installed and the apt-get wrapper in place.
fn boot() -> HostBox {
    HostBox::available().expect("host box prerequisites");
    let started = Instant::now();
    let hb = HostBox::boot().expect("booting a host box");
    hb.copy_in(Path::new(BOSUND), "/usr/local/bin/bosund")
        .expect("copying bosund into the box");
    hb.write_file(
        "/usr/local/sbin/apt-get",
        format!("#!/bin/sh\necho \"$*\" >> {APT_LOG}\nexec /usr/bin/apt-get \"$@\"\n").as_bytes(),
        0o755,
    )
    .unwrap();
    eprintln!(
        "[{}] boot {:.1} s (rootfs ready + extract + boot: {:.1} s)",
        hb.machine(),
        hb.boot_time().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    hb
}

/// The apt-get calls logged so far.
fn apt_calls(hb: &HostBox) -> Vec<String> {
    std::fs::read_to_string(hb.path(APT_LOG))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Writes `text` as `/root/NAME.toml` in the box and runs `bosund apply` on it.
fn apply(hb: &HostBox, name: &str, text: &str, args: &[&str]) -> Run {
    let path = format!("/root/{name}.toml");
    hb.write_file(&path, text.as_bytes(), 0o644).unwrap();
    let mut argv = vec!["bosund", "apply", path.as_str(), "--output", "json"];
    argv.extend_from_slice(args);
    let run = Run::from_command(hb.command(&argv, ENV), None);
    eprintln!(
        "[{}] {name} {}: {:.1} s {:?}",
        hb.machine(),
        args.join(" "),
        run.elapsed.as_secs_f64(),
        run.statuses()
    );
    run
}

/// Runs `bosund apply` the way bosund.service would run it: as a transient service with the
/// unit's sandboxing (every `[Service]` setting of systemd/bosund.service except those about
/// the daemon's life cycle), its output piped back.
fn apply_hardened(hb: &HostBox, name: &str, text: &str) -> Run {
    let path = format!("/root/{name}.toml");
    hb.write_file(&path, text.as_bytes(), 0o644).unwrap();
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/bosund.service"),
    )
    .unwrap();
    let properties = sandbox_properties(&unit);
    assert!(
        properties.iter().any(|p| p == "NoNewPrivileges=yes"),
        "{properties:?}"
    );
    let mut argv: Vec<String> = [
        "systemd-run",
        "--wait",
        "--pipe",
        "--quiet",
        "--service-type=exec",
        "--setenv=BOSUN_IMDS_ENDPOINT=http://127.0.0.1:1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for p in &properties {
        argv.push("-p".into());
        argv.push(p.clone());
    }
    argv.extend(["/usr/local/bin/bosund", "apply", &path, "--output", "json"].map(str::to_string));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let run = Run::from_command(hb.command(&argv, &[]), None);
    eprintln!(
        "[{}] {name} (hardened): {:.1} s {:?}",
        hb.machine(),
        run.elapsed.as_secs_f64(),
        run.statuses()
    );
    run
}

/// `KEY=value` settings of the unit's `[Service]` section that apply to a one-off run.
fn sandbox_properties(unit: &str) -> Vec<String> {
    const LIFE_CYCLE: &[&str] = &[
        "Type",
        "NotifyAccess",
        "ExecStart",
        "ExecReload",
        "WatchdogSec",
        "Restart",
        "RestartSec",
        "TimeoutStopSec",
    ];
    let mut in_service = false;
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        if !in_service || line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((key, _)) = line.split_once('=')
            && !LIFE_CYCLE.contains(&key)
        {
            out.push(line.to_string());
        }
    }
    out
}

fn is_installed(hb: &HostBox, package: &str) -> bool {
    let out = hb
        .exec(&["dpkg-query", "-W", "-f=${db:Status-Abbrev}", package])
        .unwrap();
    String::from_utf8_lossy(&out.stdout).starts_with("ii")
}

fn unit_state(hb: &HostBox, unit: &str) -> (String, String) {
    let active = hb.exec(&["systemctl", "is-active", unit]).unwrap();
    let enabled = hb.exec(&["systemctl", "is-enabled", unit]).unwrap();
    (
        String::from_utf8_lossy(&active.stdout).trim().to_string(),
        String::from_utf8_lossy(&enabled.stdout).trim().to_string(),
    )
}

fn main_pid(hb: &HostBox, unit: &str) -> String {
    hb.sh(&format!("systemctl show -p MainPID --value {unit}"))
        .unwrap()
        .trim()
        .to_string()
}

fn message<'a>(run: &'a Run, step: &str) -> &'a str {
    run.step(step).message.as_deref().unwrap_or("")
}

const SLEEPER_UNIT: &str = "[Unit]\nDescription=bosun test sleeper\n\n[Service]\nExecStart=/bin/sleep infinity\n\n[Install]\nWantedBy=multi-user.target\n";

#[test]
fn packages_services_swap_and_bootstrap_check_on_a_booted_debian() {
    let test_started = Instant::now();
    let hb = boot();

    // --- bootstrap.toml --check: plans on a real Debian, changes nothing ---------------------
    let bootstrap = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks/bootstrap.toml"),
    )
    .unwrap();
    let fstab_before = std::fs::read(hb.path("/etc/fstab")).unwrap_or_default();
    // The box sees the test machine's memory: make the swap step apply whatever that is.
    let check = apply(
        &hb,
        "bootstrap",
        &bootstrap,
        &["--check", "--var", "swap_max_memory_mb=100000000"],
    );
    check.assert_success();
    assert_eq!(check.step("swap file").status, StepStatus::Changed);
    assert!(
        message(&check, "swap file").contains("create /swapfile (1GiB)"),
        "{check:#?}"
    );
    assert_ne!(
        check.step("base packages (apt)").status,
        StepStatus::Skipped
    );
    assert_eq!(
        check.step("base packages (dnf)").status,
        StepStatus::Skipped
    );
    assert_eq!(check.step("docker").status, StepStatus::Changed);
    assert!(
        message(&check, "docker").contains("install docker.io"),
        "{check:#?}"
    );
    assert!(
        !hb.path("/swapfile").exists(),
        "--check created the swap file"
    );
    assert!(
        !hb.path("/etc/docker").exists(),
        "--check wrote docker's config"
    );
    assert_eq!(
        std::fs::read(hb.path("/etc/fstab")).unwrap_or_default(),
        fstab_before
    );
    assert!(
        apt_calls(&hb).is_empty(),
        "--check ran apt-get: {:?}",
        apt_calls(&hb)
    );

    // --- package + service: first run installs, writes the unit, starts it ------------------
    // Lists two days old: the first install must refresh them first.
    hb.sh("rm -f /var/lib/apt/periodic/update-success-stamp /var/lib/apt/periodic/update-stamp; touch -d '2 days ago' /var/lib/apt/lists")
        .unwrap();
    let playbook = format!(
        r#"
name = "packages and services"

[[step]]
name = "jq"
package = {{ names = ["jq"] }}

[[step]]
name = "sleeper unit"
copy = {{ dest = "/etc/systemd/system/bosun-sleeper.service", content = """{SLEEPER_UNIT}""" }}

[[step]]
name = "sleeper"
service = {{ name = "bosun-sleeper", state = "started", enabled = true, daemon_reload = true }}
"#
    );
    let check = apply(&hb, "services", &playbook, &["--check"]);
    check.assert_success();
    assert_eq!(check.summary(), summary(0, 3, 0, 0), "{check:#?}");
    assert!(message(&check, "jq").contains("install jq"), "{check:#?}");
    assert!(message(&check, "jq").contains("days old"), "{check:#?}");
    assert!(!is_installed(&hb, "jq"));

    let first = apply(&hb, "services", &playbook, &[]);
    first.assert_success();
    assert_eq!(first.summary(), summary(0, 3, 0, 0), "{first:#?}");
    let calls = apt_calls(&hb);
    assert!(
        calls.iter().any(|c| c.starts_with("update")),
        "stale lists were not refreshed: {calls:?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.contains("install") && c.ends_with("-- jq")),
        "{calls:?}"
    );
    assert!(is_installed(&hb, "jq"));
    assert_eq!(
        hb.sh("echo '{\"a\": 41}' | jq '.a + 1'").unwrap().trim(),
        "42",
        "the installed jq does not work"
    );
    // systemd loads a unit it never saw on demand: no daemon-reload is needed, none is done.
    assert_eq!(
        message(&first, "sleeper"),
        "enable, start bosun-sleeper.service",
        "{first:#?}"
    );
    assert_eq!(
        unit_state(&hb, "bosun-sleeper.service"),
        ("active".into(), "enabled".into())
    );

    // --- second run: nothing changes, no apt-get at all --------------------------------------
    let calls_before = apt_calls(&hb).len();
    let second = apply(&hb, "services", &playbook, &[]);
    second.assert_success();
    assert_eq!(second.summary(), summary(3, 0, 0, 0), "{second:#?}");
    assert_eq!(
        apt_calls(&hb).len(),
        calls_before,
        "a second run ran apt-get: {:?}",
        apt_calls(&hb)
    );
    assert!(
        message(&second, "jq").contains("no package manager run"),
        "{second:#?}"
    );

    // --- under bosund.service's sandbox: fresh lists, so an install without a refresh; a ----
    // changed unit file makes systemd's copy stale, so daemon_reload reloads it.
    let edited_unit = SLEEPER_UNIT.replace("bosun test sleeper", "bosun test sleeper, edited");
    let stop = format!(
        r#"
name = "more packages, stop the service"

[[step]]
name = "tree"
package = {{ names = ["tree"] }}

[[step]]
name = "sleeper unit"
copy = {{ dest = "/etc/systemd/system/bosun-sleeper.service", content = """{edited_unit}""" }}

[[step]]
name = "sleeper stopped"
service = {{ name = "bosun-sleeper", state = "stopped", daemon_reload = true }}

[[step]]
name = "sandbox probe"
command = {{ run = "grep -E '^(NoNewPrivs|CapBnd):' /proc/self/status > /root/sandbox-probe", creates = "/root/sandbox-probe" }}
"#
    );
    let stop = stop.as_str();
    let hardened = apply_hardened(&hb, "stop", stop);
    hardened.assert_success();
    assert_eq!(hardened.summary(), summary(0, 4, 0, 0), "{hardened:#?}");
    // The run really was sandboxed: no new privileges, no CAP_SYS_TIME (bit 25) to bound.
    let probe = std::fs::read_to_string(hb.path("/root/sandbox-probe")).unwrap();
    assert!(probe.contains("NoNewPrivs:\t1"), "{probe}");
    let bounding = probe
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .expect("CapBnd in the probe");
    assert_eq!(
        bounding & (1 << 25),
        0,
        "CAP_SYS_TIME still in {bounding:x}"
    );
    assert_eq!(
        message(&hardened, "sleeper stopped"),
        "daemon-reload, stop bosun-sleeper.service",
        "{hardened:#?}"
    );
    assert_eq!(
        hb.sh("systemctl show -p Description --value bosun-sleeper")
            .unwrap()
            .trim(),
        "bosun test sleeper, edited"
    );
    let new_calls = apt_calls(&hb)[calls_before..].to_vec();
    assert!(
        new_calls.iter().all(|c| !c.starts_with("update")),
        "lists refreshed again though fresh: {new_calls:?}"
    );
    assert!(
        is_installed(&hb, "tree"),
        "tree was not installed under the sandbox"
    );
    assert_eq!(
        unit_state(&hb, "bosun-sleeper.service"),
        ("inactive".into(), "enabled".into())
    );
    let again = apply(&hb, "stop", stop, &[]);
    again.assert_success();
    assert_eq!(again.summary(), summary(4, 0, 0, 0), "{again:#?}");

    // --- restarted always acts; absent under --check only plans ------------------------------
    let restart = r#"
name = "restart"
[[step]]
name = "sleeper restarted"
service = { name = "bosun-sleeper", state = "restarted" }
"#;
    let r1 = apply(&hb, "restart", restart, &[]);
    r1.assert_success();
    let pid1 = main_pid(&hb, "bosun-sleeper.service");
    let r2 = apply(&hb, "restart", restart, &[]);
    r2.assert_success();
    let pid2 = main_pid(&hb, "bosun-sleeper.service");
    assert_eq!(r1.step("sleeper restarted").status, StepStatus::Changed);
    assert_eq!(r2.step("sleeper restarted").status, StepStatus::Changed);
    assert!(pid1 != "0" && pid2 != "0" && pid1 != pid2, "{pid1} {pid2}");

    let absent = r#"
name = "absent"
[[step]]
name = "no jq"
package = { names = ["jq"], state = "absent" }
"#;
    let calls_before = apt_calls(&hb).len();
    let plan = apply(&hb, "absent", absent, &["--check"]);
    plan.assert_success();
    assert_eq!(plan.step("no jq").status, StepStatus::Changed);
    assert!(message(&plan, "no jq").contains("remove jq"), "{plan:#?}");
    assert!(is_installed(&hb, "jq"), "--check removed jq");
    assert_eq!(apt_calls(&hb).len(), calls_before);
    let removed = apply(&hb, "absent", absent, &[]);
    removed.assert_success();
    assert_eq!(removed.step("no jq").status, StepStatus::Changed);
    assert!(!is_installed(&hb, "jq"), "jq is still installed");
    let calls_before = apt_calls(&hb).len();
    let again = apply(&hb, "absent", absent, &[]);
    assert_eq!(again.summary(), summary(1, 0, 0, 0), "{again:#?}");
    // `latest` on fresh lists asks apt-cache (not apt-get) and finds tree current.
    let latest = apply(
        &hb,
        "latest",
        "name = \"latest\"\n[[step]]\nname = \"tree\"\npackage = { names = [\"tree\"], state = \"latest\" }\n",
        &[],
    );
    assert_eq!(latest.summary(), summary(1, 0, 0, 0), "{latest:#?}");
    assert_eq!(apt_calls(&hb).len(), calls_before, "{:?}", apt_calls(&hb));

    // --- swap: create, idempotent, resize, absent --------------------------------------------
    let swap = |size: &str| {
        format!(
            "name = \"swap\"\n[[step]]\nname = \"swap\"\nswap = {{ path = \"/bosun-test.swap\", size = \"{size}\" }}\n"
        )
    };
    let swaps = || hb.sh("cat /proc/swaps").unwrap();
    let s1 = apply(&hb, "swap", &swap("32MiB"), &[]);
    s1.assert_success();
    assert_eq!(s1.step("swap").status, StepStatus::Changed);
    assert!(swaps().contains("/bosun-test.swap"), "{}", swaps());
    assert_eq!(
        hb.sh("stat -c %a:%s /bosun-test.swap").unwrap().trim(),
        "600:33554432"
    );
    let fstab = std::fs::read_to_string(hb.path("/etc/fstab")).unwrap();
    assert!(
        fstab.contains("/bosun-test.swap none swap sw 0 0\n"),
        "{fstab}"
    );
    let s2 = apply(&hb, "swap", &swap("32MiB"), &[]);
    s2.assert_success();
    assert_eq!(s2.step("swap").status, StepStatus::Ok, "{s2:#?}");
    let s3 = apply(&hb, "swap", &swap("48MiB"), &[]);
    s3.assert_success();
    assert!(
        message(&s3, "swap").starts_with("swapoff /bosun-test.swap, remove"),
        "{s3:#?}"
    );
    assert!(swaps().contains("/bosun-test.swap"), "{}", swaps());
    assert_eq!(
        hb.sh("stat -c %s /bosun-test.swap").unwrap().trim(),
        "50331648"
    );
    assert_eq!(
        std::fs::read_to_string(hb.path("/etc/fstab"))
            .unwrap()
            .matches("/bosun-test.swap")
            .count(),
        1,
        "the fstab line was duplicated"
    );
    // bosund killed (kill -9) after each move of a resize: the next run completes it (a
    // swap file of the asked size, in use, mode 0600, listed once in fstab).
    for (point, size, bytes) in [
        ("swap-off", "32MiB", 32 << 20),
        ("swap-removed", "48MiB", 48 << 20),
        ("swap-created", "32MiB", 32 << 20),
        ("swap-mkswap", "48MiB", 48 << 20),
    ] {
        hb.write_file("/root/swap-kill.toml", swap(size).as_bytes(), 0o644)
            .unwrap();
        let mut env = ENV.to_vec();
        env.push(("BOSUN_TEST_KILL_AT", point));
        let killed = hb
            .command(
                &[
                    "bosund",
                    "apply",
                    "/root/swap-kill.toml",
                    "--output",
                    "json",
                ],
                &env,
            )
            .output()
            .unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&killed.status),
            Some(9),
            "bosund was not killed at {point}: {killed:?}"
        );
        let again = apply(&hb, "swap", &swap(size), &[]);
        again.assert_success();
        assert!(swaps().contains("/bosun-test.swap"), "{point}: {}", swaps());
        assert_eq!(
            hb.sh("stat -c %a:%s /bosun-test.swap").unwrap().trim(),
            format!("600:{bytes}"),
            "{point}"
        );
        assert_eq!(
            std::fs::read_to_string(hb.path("/etc/fstab"))
                .unwrap()
                .matches("/bosun-test.swap")
                .count(),
            1,
            "{point}"
        );
        let settled = apply(&hb, "swap", &swap(size), &[]);
        assert_eq!(
            settled.summary(),
            summary(1, 0, 0, 0),
            "{point}: {settled:#?}"
        );
    }

    // /proc/sys is read-only in the box: asking for swappiness fails, and says why.
    let sw = apply(
        &hb,
        "swappiness",
        "name = \"s\"\n[[step]]\nname = \"swap\"\nswap = { path = \"/bosun-test.swap\", size = \"48MiB\", swappiness = 10 }\n",
        &[],
    );
    assert_eq!(sw.step("swap").status, StepStatus::Failed);
    assert!(
        message(&sw, "swap").contains("read-only /proc/sys"),
        "{sw:#?}"
    );
    let absent = "name = \"swap\"\n[[step]]\nname = \"swap\"\nswap = { path = \"/bosun-test.swap\", state = \"absent\" }\n";
    let s4 = apply(&hb, "swap-absent", absent, &[]);
    s4.assert_success();
    assert_eq!(s4.step("swap").status, StepStatus::Changed);
    assert!(!swaps().contains("/bosun-test.swap"), "{}", swaps());
    assert!(!hb.path("/bosun-test.swap").exists());
    assert!(
        !std::fs::read_to_string(hb.path("/etc/fstab"))
            .unwrap()
            .contains("bosun-test.swap")
    );
    let s5 = apply(&hb, "swap-absent", absent, &[]);
    assert_eq!(s5.summary(), summary(1, 0, 0, 0), "{s5:#?}");

    eprintln!(
        "[{}] packages/services/swap test: {:.1} s",
        hb.machine(),
        test_started.elapsed().as_secs_f64()
    );
}

#[test]
fn docker_install_brings_up_a_daemon_that_answers_and_converges() {
    let test_started = Instant::now();
    let hb = boot();
    // The box cannot let dockerd touch /proc/sys or iptables (TESTING.md): that is this
    // test's config, passed through the step's table, not one of bosun's defaults.
    let playbook = |max_size: &str| {
        format!(
            r#"
name = "docker"
[[step]]
name = "docker"
[step.docker_install]
daemon = {{ iptables = false, "ip-forward" = false, bridge = "none", "log-opts" = {{ max-size = "{max_size}", max-file = "2" }} }}
"#
        )
    };

    let first = apply(&hb, "docker", &playbook("10m"), &[]);
    first.assert_success();
    assert_eq!(first.step("docker").status, StepStatus::Changed);
    assert!(message(&first, "docker").contains("answers"), "{first:#?}");
    assert_eq!(
        unit_state(&hb, "docker.service"),
        ("active".into(), "enabled".into())
    );
    let info = hb
        .sh("docker info --format '{{.ServerVersion}} {{.LoggingDriver}} {{.LiveRestoreEnabled}}'")
        .unwrap();
    let words: Vec<&str> = info.split_whitespace().collect();
    assert_eq!(
        words.get(1..),
        Some(&["local", "true"][..]),
        "docker info: {info}"
    );
    let daemon: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&std::fs::read(hb.path("/etc/docker/daemon.json")).unwrap())
            .unwrap();
    assert_eq!(daemon["bridge"], "none");
    assert_eq!(daemon["live-restore"], true);
    assert_eq!(daemon["log-opts"]["max-size"], "10m");
    // iptables management is off in this config, so forwarding is left alone.
    assert!(!hb.path("/etc/sysctl.d/60-bosun-ip-forward.conf").exists());

    let calls = apt_calls(&hb).len();
    let second = apply(&hb, "docker", &playbook("10m"), &[]);
    second.assert_success();
    assert_eq!(second.summary(), summary(1, 0, 0, 0), "{second:#?}");
    assert_eq!(apt_calls(&hb).len(), calls, "a second run ran apt-get");

    // A settings change rewrites daemon.json and restarts the running daemon.
    let pid = main_pid(&hb, "docker.service");
    let check = apply(&hb, "docker", &playbook("20m"), &["--check", "--diff"]);
    check.assert_success();
    let diff = check.step("docker").diff.clone().unwrap_or_default();
    assert!(diff.contains("-    \"max-size\": \"10m\""), "{diff}");
    assert!(diff.contains("+    \"max-size\": \"20m\""), "{diff}");
    assert!(
        message(&check, "docker").contains("restart docker.service"),
        "{check:#?}"
    );
    let third = apply(&hb, "docker", &playbook("20m"), &[]);
    third.assert_success();
    assert!(
        message(&third, "docker").contains("restarted docker.service"),
        "{third:#?}"
    );
    assert_ne!(
        main_pid(&hb, "docker.service"),
        pid,
        "dockerd was not restarted"
    );
    assert_eq!(
        hb.sh("docker info --format '{{.ServerVersion}}'")
            .map(|s| !s.trim().is_empty())
            .ok(),
        Some(true)
    );
    let fourth = apply(&hb, "docker", &playbook("20m"), &[]);
    assert_eq!(fourth.summary(), summary(1, 0, 0, 0), "{fourth:#?}");

    eprintln!(
        "[{}] docker test: {:.1} s",
        hb.machine(),
        test_started.elapsed().as_secs_f64()
    );
}

/// `bosund run` under the shipped bosund.service, a run in flight and one queued; a new build
/// is renamed over /usr/local/bin/bosund and the service gets SIGUSR2, as `bosun run`'s install
/// does. The daemon refuses new runs, lets both accepted runs finish, then execs the new build
/// in place (same main PID, the new file's inode): the new build answers `/v1/health`, and
/// both runs are journaled `ok`.
#[test]
fn a_running_daemon_updates_itself_after_its_accepted_runs_and_loses_none() {
    use daemon_support::call_over;
    use hyper::{Method, StatusCode};
    use serde_json::{Value, json};
    use std::os::unix::fs::MetadataExt;

    let hb = boot();
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/bosund.service"),
    )
    .unwrap();
    hb.write_file("/etc/systemd/system/bosund.service", unit.as_bytes(), 0o644)
        .unwrap();
    hb.write_file(
        "/etc/systemd/system/bosund.service.d/test.conf",
        b"[Service]\nEnvironment=BOSUN_IMDS_ENDPOINT=http://127.0.0.1:1\n",
        0o644,
    )
    .unwrap();
    // The socket on the box's root file system (not its /run tmpfs), so this process can
    // reach it through the box's directory.
    let socket = "/var/lib/bosun-api/api.sock";
    hb.write_file(
        "/etc/bosun/agent.toml",
        format!("playbooks_dir = \"/etc/bosun/playbooks\"\n[api]\nsocket = \"{socket}\"\n")
            .as_bytes(),
        0o644,
    )
    .unwrap();
    hb.sh("mkfifo /root/gate").unwrap();
    hb.write_file(
        "/etc/bosun/playbooks/gated.toml",
        b"name = \"gated\"\n[[step]]\nname = \"wait for the gate\"\ncommand = { run = \"read line < /root/gate\" }\n",
        0o644,
    )
    .unwrap();
    hb.write_file(
        "/etc/bosun/playbooks/after.toml",
        b"name = \"after\"\n[[step]]\nname = \"queued behind\"\ncommand = { run = \"true\" }\n",
        0o644,
    )
    .unwrap();
    hb.sh("systemctl daemon-reload && systemctl start bosund.service")
        .unwrap();
    let pid = hb
        .sh("systemctl show -p MainPID --value bosund.service")
        .unwrap()
        .trim()
        .to_string();
    assert_ne!(pid, "0");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let host_socket = hb.path(socket);
    let call = |method: Method, path: &str, body: Option<Value>| {
        rt.block_on(async {
            let stream = tokio::net::UnixStream::connect(&host_socket).await?;
            Ok::<_, std::io::Error>(call_over(stream, method, path, body, None).await)
        })
    };
    let wait = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + daemon_support::PATIENCE;
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "never: {what}; bosund's journal:\n{}",
                hb.sh("journalctl -u bosund.service --no-pager | tail -40")
                    .unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    let submit =
        |name: &str| call(Method::POST, "/v1/runs", Some(json!({"playbook": name}))).unwrap();
    let (code, first) = submit("gated");
    assert_eq!(code, StatusCode::ACCEPTED, "{first}");
    let first = first["id"].as_str().unwrap().to_string();
    wait("the first run is running", &|| {
        call(Method::GET, &format!("/v1/runs/{first}"), None)
            .is_ok_and(|(_, r)| r["status"] == "running")
    });
    let (code, second) = submit("after");
    assert_eq!(code, StatusCode::ACCEPTED, "{second}");
    let second = second["id"].as_str().unwrap().to_string();

    // A new build (another digest: bytes after the ELF image change nothing it runs), put in
    // place as bosun's install does, and the service told.
    let mut build = std::fs::read(BOSUND).unwrap();
    build.extend_from_slice(b"\n#bosun-test-build-2\n");
    hb.write_file("/usr/local/bin/.bosund-new", &build, 0o755)
        .unwrap();
    hb.sh("mv -f /usr/local/bin/.bosund-new /usr/local/bin/bosund && systemctl kill --kill-whom=main --signal=USR2 bosund.service")
        .unwrap();
    let new_inode = std::fs::metadata(hb.path("/usr/local/bin/bosund"))
        .unwrap()
        .ino();
    wait("the update is announced", &|| {
        hb.sh("journalctl -u bosund.service --no-pager")
            .is_ok_and(|log| log.contains("a new build is installed"))
    });
    // While it finishes the accepted runs, it accepts no new one.
    let (code, refused) = submit("after");
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{refused}");

    std::fs::OpenOptions::new()
        .write(true)
        .open(hb.path("/root/gate"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"go\n"))
        .unwrap();
    // /proc inside the box is the box's own: read it there.
    let exe_inode = || -> Option<u64> {
        hb.sh(&format!("stat -L -c %i /proc/{pid}/exe"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    };
    wait(
        "the new build runs as the same main process and answers",
        &|| {
            exe_inode() == Some(new_inode)
                && call(Method::GET, "/v1/health", None)
                    .is_ok_and(|(c, h)| c == StatusCode::OK && h["status"] == "ok")
        },
    );
    assert_eq!(
        hb.sh("systemctl show -p MainPID --value bosund.service")
            .unwrap()
            .trim(),
        pid,
        "systemd restarted the service instead of bosund replacing itself"
    );
    assert_eq!(
        hb.sh("systemctl is-active bosund.service").unwrap().trim(),
        "active"
    );
    let (_, runs) = call(Method::GET, "/v1/runs", None).unwrap();
    for id in [&first, &second] {
        let run = runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id.as_str())
            .unwrap_or_else(|| panic!("run {id} was lost: {runs}"));
        assert_eq!(run["status"], "ok", "{run}");
    }
    // And it takes runs again.
    let (code, third) = submit("after");
    assert_eq!(code, StatusCode::ACCEPTED, "{third}");
}

//! `bosun run` and `bosun status` over SSH, end to end against a real OpenSSH sshd on
//! loopback (bosun-harness). The bosun process gets its own HOME, so `~/.ssh` (keys,
//! known_hosts, config) is exactly what each test writes; no ssh-agent is visible to it.
//! The "remote" host is this machine: the tests read what bosund did straight from disk.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use sha2::{Digest, Sha256};

mod common;

use common::{SshHost, bosund};

/// A self-contained playbook: a directory, a file naming `who`, and a step that fails when
/// `fail` is true.
const PLAYBOOK: &str = r#"
name = "remote-test"

[vars]
who = "world"
fail = false

[[step]]
name = "root directory"
file = { path = "{{ root }}", state = "directory", mode = "0755" }

[[step]]
name = "greeting"
copy = { dest = "{{ root }}/greeting", content = "hello {{ who }}\n", mode = "0644" }

[[step]]
name = "fail on request"
command = { run = "echo failing on purpose >&2; exit 3" }
when = "fail"
"#;

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// The loopback host, with `pb.toml` in its work directory (remote bosund, state and output
/// go there too).
struct Fixture(SshHost);

impl std::ops::Deref for Fixture {
    type Target = SshHost;
    fn deref(&self) -> &SshHost {
        &self.0
    }
}

impl Fixture {
    fn new() -> Fixture {
        let host = SshHost::start();
        std::fs::write(host.w("pb.toml"), PLAYBOOK).unwrap();
        Fixture(host)
    }

    fn remote_bosund(&self) -> PathBuf {
        self.w("remote/bin/bosund")
    }

    /// `bosun ARGS` with this fixture's HOME, from the work directory.
    fn bosun(&self, args: &[&str]) -> Output {
        let out = self
            .bosun_command()
            .args(args)
            .output()
            .expect("running bosun");
        eprintln!(
            "bosun {args:?} -> {}\n--- stdout\n{}--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `bosun run pb.toml` on the sshd with the client key, remote paths in the work dir.
    fn run(&self, extra: &[&str]) -> Output {
        let key = self.sshd.client_key_path();
        let remote = self.remote_bosund();
        let state = self.w("state");
        let root = self.w("out");
        let root_var = format!("root={}", root.display());
        let mut args = vec![
            "run",
            "pb.toml",
            "--host",
            Box::leak(self.host().into_boxed_str()),
            "-i",
            key.to_str().unwrap(),
            "--bosund",
            bosund().to_str().unwrap(),
            "--remote-bosund",
            remote.to_str().unwrap(),
            "--remote-state-dir",
            state.to_str().unwrap(),
            "--var",
            &root_var,
        ];
        args.extend_from_slice(extra);
        self.bosun(&args)
    }
}

/// `bosund history --output json` of the journal in `state`, as an array.
fn recent_runs(state: &Path) -> Value {
    let history = Command::new(bosund())
        .args(["history", "--output", "json", "--state-dir"])
        .arg(state)
        .output()
        .unwrap();
    // JSON Lines: one run per line, newest first.
    Value::Array(
        String::from_utf8_lossy(&history.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
    )
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn finished(lines: &[Value]) -> Vec<&Value> {
    lines
        .iter()
        .filter(|v| v["event"] == "host_finished")
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn run_uploads_bosund_when_missing_skips_it_when_current_and_replaces_it_when_stale() {
    let f = Fixture::new();
    f.trust_host();
    let local_sha = sha256_of(bosund());

    // 1. Missing: uploaded, then the playbook runs.
    let out = f.run(&["--output", "json", "--var", "who=remote"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = json_lines(&out);
    let rec = finished(&lines)[0];
    assert_eq!(rec["uploaded"], true, "{rec}");
    assert_eq!(rec["status"], "changed", "{rec}");
    assert_eq!(sha256_of(&f.remote_bosund()), local_sha);
    assert_eq!(
        std::fs::read_to_string(f.w("out/greeting")).unwrap(),
        "hello remote\n"
    );
    // The agent's events come through live, tagged with the host.
    assert!(
        lines.iter().any(|v| v["event"] == "step_finished"
            && v["name"] == "greeting"
            && v["status"] == "changed"
            && v["host"] == f.host()),
        "step events are passed through"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(f.remote_bosund()).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o755);
    // Nothing is left behind from the atomic upload; the build is kept by its SHA-256, and
    // bosund is that file (a hard link).
    let leftovers: Vec<_> = std::fs::read_dir(f.w("remote/bin"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "bosund" && n != ".bosund-builds")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let build = f.w("remote/bin/.bosund-builds").join(&local_sha);
    assert_eq!(
        std::fs::read_dir(f.w("remote/bin/.bosund-builds"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name() != ".lock")
            .count(),
        1,
        "one build (and the install lock)"
    );
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&build).unwrap()),
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(f.remote_bosund()).unwrap())
    );

    // 2. Current: no upload; idempotent run, human output.
    let before = std::fs::metadata(f.remote_bosund())
        .unwrap()
        .modified()
        .unwrap();
    let out = f.run(&["--var", "who=remote"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ok       greeting"), "{text}");
    assert!(text.contains("ok=2 changed=0 failed=0 skipped=1"), "{text}");
    assert!(!stderr(&out).contains("installing bosund"));
    assert_eq!(
        std::fs::metadata(f.remote_bosund())
            .unwrap()
            .modified()
            .unwrap(),
        before,
        "bosund was not rewritten"
    );

    // 3. Stale (another build, written over bosund in place): replaced.
    std::fs::write(f.remote_bosund(), b"\x7fELF an older bosund").unwrap();
    let out = f.run(&["--output", "json"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(finished(&json_lines(&out))[0]["uploaded"], true);
    assert_eq!(sha256_of(&f.remote_bosund()), local_sha);
    // ... and another build installed beside it (a new file at the path): replaced too.
    std::fs::remove_file(f.remote_bosund()).unwrap();
    std::fs::copy(bosund(), f.remote_bosund()).unwrap();
    let out = f.run(&["--output", "json"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(finished(&json_lines(&out))[0]["uploaded"], true);
    let out = f.run(&["--output", "json"]);
    assert_eq!(finished(&json_lines(&out))[0]["uploaded"], false);

    // A failing step: exit 1, the step's error shown.
    let out = f.run(&["--var", "fail=true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("failing on purpose"));

    // status: version and the runs just made, from the host's journal.
    let key = f.sshd.client_key_path();
    let out = f.bosun(&[
        "status",
        "--host",
        &f.host(),
        "-i",
        key.to_str().unwrap(),
        "--remote-bosund",
        f.remote_bosund().to_str().unwrap(),
        "--remote-state-dir",
        f.w("state").to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let h = &v["hosts"][0];
    assert!(
        h["bosund"]["version"]
            .as_str()
            .unwrap()
            .starts_with("bosund "),
        "{h}"
    );
    let runs = h["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 5, "{h}");
    assert_eq!(runs[0]["playbook"], "remote-test");
    assert_eq!(runs[0]["status"], "failed", "newest first: {h}");
}

#[test]
fn a_changed_host_key_is_refused_even_with_accept_new() {
    let f = Fixture::new();
    // Another ed25519 key recorded for [127.0.0.1]:PORT.
    let other = f.w("other_key");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(st.success());
    let pubkey = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let mut parts = pubkey.split_whitespace();
    let line = format!(
        "[127.0.0.1]:{} {} {}\n",
        f.sshd.port(),
        parts.next().unwrap(),
        parts.next().unwrap()
    );
    std::fs::write(f.known_hosts(), &line).unwrap();

    for extra in [&[][..], &["--accept-new-host-key"][..]] {
        let out = f.run(extra);
        assert_eq!(out.status.code(), Some(4), "unreachable exit code");
        let err = stderr(&out);
        assert!(err.contains("HAS CHANGED"), "{err}");
        assert!(err.contains("known_hosts:1"), "{err}");
        assert!(!f.remote_bosund().exists(), "nothing was uploaded");
        assert!(!f.w("out").exists(), "nothing ran");
        assert_eq!(std::fs::read_to_string(f.known_hosts()).unwrap(), line);
    }
}

#[test]
fn an_unknown_host_key_is_refused_without_the_flag_and_recorded_with_it() {
    let f = Fixture::new();
    let out = f.run(&[]);
    assert_eq!(out.status.code(), Some(4));
    let err = stderr(&out);
    assert!(
        err.contains("is not known") && err.contains("--accept-new-host-key"),
        "{err}"
    );
    assert!(err.contains("SHA256:"), "the fingerprint is shown: {err}");
    assert!(
        !f.known_hosts().exists(),
        "nothing recorded without the flag"
    );
    assert!(!f.w("out").exists());

    let out = f.run(&["--accept-new-host-key"]);
    assert_eq!(out.status.code(), Some(0));
    let recorded = std::fs::read_to_string(f.known_hosts()).unwrap();
    assert_eq!(recorded, format!("{}\n", f.sshd.known_hosts_line()));

    // Hashed by OpenSSH's own tool, the entry still vouches for the host.
    let st = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(f.known_hosts())
        .output()
        .unwrap();
    assert!(st.status.success());
    let hashed = std::fs::read_to_string(f.known_hosts()).unwrap();
    assert!(hashed.starts_with("|1|"), "{hashed}");
    let out = f.run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn ssh_config_aliases_and_unreachable_hosts() {
    let f = Fixture::new();
    // HostName, Port, User, IdentityFile and UserKnownHostsFile all come from the config.
    std::fs::write(
        f.home.path().join(".ssh/config"),
        format!(
            "Host other\n  User nobody\n\n{}",
            f.sshd.ssh_config_entry("box")
        ),
    )
    .unwrap();
    let out = f.bosun(&[
        "run",
        "pb.toml",
        "--host",
        "box",
        "--bosund",
        bosund().to_str().unwrap(),
        "--remote-bosund",
        f.remote_bosund().to_str().unwrap(),
        "--remote-state-dir",
        f.w("state").to_str().unwrap(),
        "--var",
        &format!("root={}", f.w("out").display()),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(f.w("out/greeting").is_file());

    // A closed port: unreachable (exit 4), said so.
    let port = bosun_harness::free_port().unwrap();
    let out = f.bosun(&[
        "run",
        "pb.toml",
        "--host",
        &format!("127.0.0.1:{port}"),
        "--bosund",
        bosund().to_str().unwrap(),
        "--var",
        "root=/nonexistent",
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert!(stderr(&out).contains("unreachable"), "{}", stderr(&out));

    // An invalid playbook: exit 2 before connecting anywhere, with line and column.
    std::fs::write(
        f.w("bad.toml"),
        "name = \"bad\"\n[[step]]\nname = \"x\"\nnope = {}\n",
    )
    .unwrap();
    let out = f.bosun(&[
        "run",
        "bad.toml",
        "--host",
        &format!("127.0.0.1:{port}"),
        "--bosund",
        bosund().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("bad.toml") && err.contains(":4:"), "{err}");
    assert!(!err.contains("unreachable"), "nothing connected: {err}");
}

/// 20 inventory hosts, all the one sshd, each writing to its own directory; `h07` fails.
fn fleet_inventory(f: &Fixture) -> PathBuf {
    let mut inv = String::new();
    let mut all = Vec::new();
    for i in 1..=20 {
        let name = format!("h{i:02}");
        inv.push_str(&format!(
            "[hosts.{name}]\naddress = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\nbosund_path = \"{}\"\nstate_dir = \"{}\"\nvars = {{ root = \"{}\"{} }}\n\n",
            f.sshd.port(),
            f.sshd.user(),
            f.remote_bosund().display(),
            f.w(&format!("state/{name}")).display(),
            f.w(&format!("fleet/{name}")).display(),
            if i == 7 { ", fail = true" } else { "" }
        ));
        all.push(format!("\"{name}\""));
    }
    inv.push_str(&format!(
        "[groups.all_web]\nhosts = [{}]\nvars = {{ who = \"fleet\" }}\n",
        all.join(", ")
    ));
    let path = f.w("inventory.toml");
    std::fs::write(&path, inv).unwrap();
    path
}

fn fleet_run(f: &Fixture, inv: &Path, max_fail: &str) -> (Output, Vec<Value>) {
    let key = f.sshd.client_key_path();
    let out = f.bosun(&[
        "run",
        "pb.toml",
        "--inventory",
        inv.to_str().unwrap(),
        "--limit",
        "all_web",
        "-i",
        key.to_str().unwrap(),
        "--bosund",
        bosund().to_str().unwrap(),
        "--serial",
        "5",
        "--forks",
        "10",
        "--max-fail",
        max_fail,
        "--output",
        "json",
    ]);
    let lines = json_lines(&out);
    (out, lines)
}

#[test]
fn fleet_runs_in_batches_and_max_fail_stops_new_batches() {
    let f = Fixture::new();
    f.trust_host();
    let inv = fleet_inventory(&f);

    // --max-fail 0: h07 fails in batch 1 (h06..h10); that batch finishes, batches 2 and 3
    // never start.
    let (out, lines) = fleet_run(&f, &inv, "0");
    assert_eq!(out.status.code(), Some(1));
    let pos = |event: &str, host: &str| {
        lines
            .iter()
            .position(|v| v["event"] == event && v["host"] == host)
    };
    for i in 1..=20 {
        let h = format!("h{i:02}");
        let started = pos("host_started", &h);
        let rec = &lines[pos("host_finished", &h).expect("every host has a record")];
        if i <= 10 {
            let s = &lines[started.expect("started")];
            assert_eq!(s["batch"], (i - 1) / 5, "{s}");
            assert_eq!(rec["batch"], (i - 1) / 5);
            let want = if i == 7 { "failed" } else { "changed" };
            assert_eq!(rec["status"], want, "{rec}");
            assert!(f.w(&format!("fleet/{h}")).is_dir());
        } else {
            assert!(started.is_none(), "{h} must not start");
            assert_eq!(rec["status"], "not_started", "{rec}");
            assert!(!f.w(&format!("fleet/{h}")).exists(), "{h} ran");
        }
        if i != 7 && i <= 10 {
            assert_eq!(
                std::fs::read_to_string(f.w(&format!("fleet/{h}/greeting"))).unwrap(),
                "hello fleet\n",
                "group vars reach the host"
            );
        }
    }
    // Rolling: every host of batch 0 finished before any host of batch 1 started.
    let last_finish_b0 = (1..=5)
        .map(|i| pos("host_finished", &format!("h{i:02}")).unwrap())
        .max()
        .unwrap();
    let first_start_b1 = (6..=10)
        .map(|i| pos("host_started", &format!("h{i:02}")).unwrap())
        .min()
        .unwrap();
    assert!(last_finish_b0 < first_start_b1);
    let summary = lines.last().unwrap();
    assert_eq!(summary["event"], "run_summary");
    assert_eq!(summary["exit_code"], 1);
    assert_eq!(summary["hosts"].as_array().unwrap().len(), 20);

    // --max-fail 10% (2 of 20 tolerated): one failure does not stop the rollout.
    let (out, lines) = fleet_run(&f, &inv, "10%");
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed host still fails the run"
    );
    let recs = finished(&lines);
    assert_eq!(recs.len(), 20);
    let count = |s: &str| recs.iter().filter(|r| r["status"] == s).count();
    assert_eq!(count("failed"), 1);
    assert_eq!(count("not_started"), 0);
    // Hosts 1..10 are unchanged now (ok); 11..20 ran for the first time (changed).
    assert_eq!(count("ok"), 9);
    assert_eq!(count("changed"), 10);
    let batches: Vec<u64> = (1..=20)
        .map(|i| {
            lines
                .iter()
                .find(|v| v["event"] == "host_started" && v["host"] == format!("h{i:02}"))
                .unwrap()["batch"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(batches, (0..20).map(|i| i / 5).collect::<Vec<u64>>());
}

/// A real `bosund run` daemon with its API socket in `dir`; killed and reaped on drop.
struct Daemon {
    child: std::process::Child,
    socket: PathBuf,
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        Daemon::start_with(dir, "")
    }

    /// With `tail` appended to its agent.toml (an `[api.tcp]` section).
    fn start_with(dir: &Path, tail: &str) -> Daemon {
        std::fs::create_dir_all(dir.join("playbooks")).unwrap();
        let socket = dir.join("run/api.sock");
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "playbooks_dir = \"{}\"\nstate_dir = \"{}\"\n[api]\nsocket = \"{}\"\n{tail}",
                dir.join("playbooks").display(),
                dir.join("state").display(),
                socket.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("bosund.log")).unwrap();
        let child = Command::new(bosund())
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env_remove("NOTIFY_SOCKET")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting bosund run");
        let mut d = Daemon { child, socket };
        // Ready when the socket accepts connections (polled, not slept for).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&d.socket).is_err() {
            assert!(
                d.child.try_wait().unwrap().is_none(),
                "bosund run exited: {}",
                std::fs::read_to_string(dir.join("bosund.log")).unwrap_or_default()
            );
            assert!(
                std::time::Instant::now() < deadline,
                "the API socket never came up"
            );
            std::thread::yield_now();
        }
        d
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn via_api_submits_to_the_daemon_through_the_ssh_connection() {
    let f = Fixture::new();
    f.trust_host();
    let daemon = Daemon::start(&f.w("agent"));
    let key = f.sshd.client_key_path();
    let root = format!("root={}", f.w("api-out").display());
    let args = |socket: &str| {
        vec![
            "run".to_string(),
            "pb.toml".into(),
            "--host".into(),
            f.host(),
            "-i".into(),
            key.display().to_string(),
            "--via".into(),
            "api".into(),
            "--api-socket".into(),
            socket.to_string(),
            "--var".into(),
            root.clone(),
            "--var".into(),
            "who=api".into(),
            "--output".into(),
            "json".into(),
        ]
    };
    let a = args(daemon.socket.to_str().unwrap());
    let out = f.bosun(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = json_lines(&out);
    assert!(
        lines
            .iter()
            .any(|v| v["event"] == "host_note"
                && v["message"].as_str().unwrap().contains("submitted")),
        "went through the API"
    );
    // The SSE stream reconstructs the run: start, three steps, summary.
    let kinds: Vec<&str> = lines
        .iter()
        .filter(|v| v["host"] == f.host() && v.get("run_id").is_some() || v["event"] == "summary")
        .map(|v| v["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["run_started", "summary"]);
    assert_eq!(
        lines
            .iter()
            .filter(|v| v["event"] == "step_finished")
            .count(),
        3
    );
    assert_eq!(finished(&lines)[0]["status"], "changed");
    assert_eq!(
        std::fs::read_to_string(f.w("api-out/greeting")).unwrap(),
        "hello api\n"
    );
    assert!(
        !f.remote_bosund().exists(),
        "nothing is installed over the API"
    );

    // No daemon at that socket: the host fails, saying what to check.
    let a = args(f.w("nowhere.sock").to_str().unwrap());
    let out = f.bosun(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(1));
    let rec = finished(&json_lines(&out))[0].clone();
    assert_eq!(rec["status"], "failed");
    assert!(
        rec["error"].as_str().unwrap().contains("bosund run"),
        "{rec}"
    );
}

#[test]
fn proxy_jump_goes_through_a_jump_host() {
    let f = Fixture::new();
    // The jump host and the target are the same sshd: the target is reached through a
    // direct-tcpip channel opened on the jump host's connection.
    let config = format!(
        "{}\nHost target\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  UserKnownHostsFile {}\n  ProxyJump jump\n",
        f.sshd.ssh_config_entry("jump"),
        f.sshd.port(),
        f.sshd.user(),
        f.sshd.client_key_path().display(),
        f.sshd.known_hosts_path().display()
    );
    std::fs::write(f.home.path().join(".ssh/config"), config).unwrap();
    let logins = || {
        std::fs::read_to_string(f.sshd.dir().join("sshd.log"))
            .unwrap_or_default()
            .matches("Accepted publickey")
            .count()
    };
    let before = logins();
    let out = f.bosun(&[
        "run",
        "pb.toml",
        "--host",
        "target",
        "--bosund",
        bosund().to_str().unwrap(),
        "--remote-bosund",
        f.remote_bosund().to_str().unwrap(),
        "--remote-state-dir",
        f.w("state").to_str().unwrap(),
        "--var",
        &format!("root={}", f.w("out").display()),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(f.w("out/greeting").is_file());
    // Two logins for one run: the jump host's, then the target's through it.
    assert_eq!(logins() - before, 2, "{}", f.sshd.log_tail());
}

/// A playbook whose one step writes its shell's pid to `{{ root }}/sleep.pid`, then sleeps.
const SLEEPER: &str = r#"
name = "sleeper"

[[step]]
name = "root"
file = { path = "{{ root }}", state = "directory" }

[[step]]
name = "sleep"
command = { run = "echo $$ > {{ root }}/sleep.pid && exec sleep 300" }
"#;

/// Polls `cond` until it holds or `secs` pass.
fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A process is gone (or a zombie nobody reaped yet: it runs nothing).
fn is_gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Starts `bosun ARGS` (its stdout into `out`), waits for the sleeper's pid, sends it SIGINT
/// (Ctrl-C), and checks that it exits 130 promptly with the step's process gone. Returns
/// bosun's JSON lines.
fn interrupt_a_sleeper(f: &Fixture, args: &[String], root: &Path) -> Vec<Value> {
    let out_path = f.w("interrupted.jsonl");
    let mut child = f
        .bosun_command()
        .args(args)
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(f.w("interrupted.err")).unwrap())
        .spawn()
        .expect("starting bosun");
    let pidfile = root.join("sleep.pid");
    let mut pid = String::new();
    wait_until(60, "the step's pid file", || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "bosun ended early ({status}): {}",
                std::fs::read_to_string(f.w("interrupted.err")).unwrap()
            );
        }
        pid = std::fs::read_to_string(&pidfile)
            .unwrap_or_default()
            .trim()
            .to_string();
        !pid.is_empty()
    });
    assert!(!is_gone(&pid), "the step runs");
    let interrupted = std::time::Instant::now();
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut status = None;
    wait_until(20, "bosun to exit after Ctrl-C", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let took = interrupted.elapsed();
    let err = std::fs::read_to_string(f.w("interrupted.err")).unwrap();
    assert_eq!(status.unwrap().code(), Some(130), "{err}");
    assert!(took.as_secs() < 10, "bosun took {took:?} to stop");
    assert!(err.contains("interrupted"), "{err}");
    wait_until(10, "the step's process to die", || is_gone(&pid));
    std::fs::read_to_string(&out_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The cancelled host as bosun reports it: status, the failed step, the exit code.
fn assert_cancelled(lines: &[Value]) {
    let rec = finished(lines)[0];
    assert_eq!(rec["status"], "cancelled", "{rec}");
    assert!(
        rec["error"]
            .as_str()
            .unwrap()
            .contains("processes were killed"),
        "the host confirmed: {rec}"
    );
    assert!(
        lines.iter().any(|v| v["event"] == "step_finished"
            && v["name"] == "sleep"
            && v["status"] == "failed"
            && v["message"].as_str().unwrap_or("").contains("cancel")),
        "the step is reported failed"
    );
    let summary = lines.last().unwrap();
    assert_eq!(summary["event"], "run_summary");
    assert_eq!(summary["exit_code"], 130);
}

#[test]
fn ctrl_c_cancels_a_run_over_ssh_and_kills_the_remote_step() {
    let f = Fixture::new();
    f.trust_host();
    std::fs::write(f.w("sleeper.toml"), SLEEPER).unwrap();
    let root = f.w("sleeper-out");
    let key = f.sshd.client_key_path();
    let args: Vec<String> = [
        "run",
        "sleeper.toml",
        "--host",
        &f.host(),
        "-i",
        key.to_str().unwrap(),
        "--bosund",
        bosund().to_str().unwrap(),
        "--remote-bosund",
        f.remote_bosund().to_str().unwrap(),
        "--remote-state-dir",
        f.w("state").to_str().unwrap(),
        "--var",
        &format!("root={}", root.display()),
        "--output",
        "json",
    ]
    .map(String::from)
    .to_vec();
    let lines = interrupt_a_sleeper(&f, &args, &root);
    assert_cancelled(&lines);
    // The remote bosund journaled the run as failed, and left no variables file behind.
    let runs = recent_runs(&f.w("state"));
    assert_eq!(runs[0]["playbook"], "sleeper", "{runs}");
    assert_eq!(runs[0]["status"], "failed", "{runs}");
    assert!(runs[0]["finished_at"].is_string(), "{runs}");
}

/// A TLS certificate for `localhost` (self-signed: it is its own CA), a token and its hash.
struct Tls {
    cert: PathBuf,
    key: PathBuf,
    token_file: PathBuf,
    token: String,
}

impl Tls {
    fn new(dir: &Path) -> Tls {
        std::fs::create_dir_all(dir).unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let tls = Tls {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            token_file: dir.join("token"),
            token: "tls-test-token-0123456789".into(),
        };
        std::fs::write(&tls.cert, cert.cert.pem()).unwrap();
        std::fs::write(&tls.key, cert.signing_key.serialize_pem()).unwrap();
        std::fs::write(&tls.token_file, format!("{}\n", tls.token)).unwrap();
        tls
    }

    /// The agent's `[api.tcp]` on `port`.
    fn section(&self, port: u16) -> String {
        format!(
            "[api.tcp]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntokens = [\"{}\"]\n",
            self.cert.display(),
            self.key.display(),
            hex::encode(Sha256::digest(self.token.as_bytes()))
        )
    }
}

/// A daemon with a TLS listener on a free port; returns it and its `https://` URL.
fn tls_daemon(f: &Fixture, tls: &Tls) -> (Daemon, String) {
    let port = bosun_harness::free_port().unwrap();
    let daemon = Daemon::start_with(&f.w("agent"), &tls.section(port));
    wait_until(30, "the TLS listener", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (daemon, format!("https://localhost:{port}"))
}

#[test]
fn via_api_straight_to_the_tls_listener_with_a_token() {
    let f = Fixture::new();
    let tls = Tls::new(&f.w("tls"));
    let (_daemon, url) = tls_daemon(&f, &tls);
    let root = format!("root={}", f.w("tls-out").display());
    let run = |extra: &[&str], env_token: Option<&str>| {
        let mut cmd = f.bosun_command();
        cmd.args([
            "run", "pb.toml", "--host", &url, "--via", "api", "--var", &root,
        ])
        .args(["--var", "who=tls", "--output", "json"])
        .args(extra)
        .env_remove("BOSUN_API_TOKEN");
        if let Some(t) = env_token {
            cmd.env("BOSUN_API_TOKEN", t);
        }
        let out = cmd.output().unwrap();
        eprintln!(
            "-> {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.contains(&tls.token), "the token was printed");
        out
    };
    let ca = tls.cert.to_str().unwrap();
    let token_file = tls.token_file.to_str().unwrap();

    // The right token (from a file), the agent's CA: the run goes through.
    let out = run(&["--api-ca", ca, "--api-token-file", token_file], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(finished(&lines)[0]["status"], "changed");
    assert_eq!(
        lines
            .iter()
            .filter(|v| v["event"] == "step_finished")
            .count(),
        3,
        "the events come back over SSE"
    );
    assert_eq!(
        std::fs::read_to_string(f.w("tls-out/greeting")).unwrap(),
        "hello tls\n"
    );

    // The token from the environment works too; a wrong one is refused with a clear message.
    let out = run(&["--api-ca", ca], Some(&tls.token));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(&["--api-ca", ca], Some("not-the-token"));
    assert_eq!(out.status.code(), Some(1));
    let rec = finished(&json_lines(&out))[0].clone();
    assert_eq!(rec["status"], "failed");
    let e = rec["error"].as_str().unwrap();
    assert!(e.contains("refused the token (HTTP 401)"), "{e}");
    assert!(!e.contains("not-the-token"), "{e}");

    // No token at all: nothing is tried.
    let out = run(&["--api-ca", ca], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--api-token-file"),
        "{}",
        stderr(&out)
    );

    // Without the agent's CA its certificate is not trusted; there is no --insecure.
    let out = run(&["--api-token-file", token_file], None);
    assert_eq!(out.status.code(), Some(1));
    let e = finished(&json_lines(&out))[0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(e.contains("certificate") && e.contains("--api-ca"), "{e}");

    // Plain HTTP is refused before anything is sent.
    let plain = url.replace("https://", "http://");
    let out = f
        .bosun_command()
        .args(["run", "pb.toml", "--host", &plain, "--via", "api"])
        .args(["--api-token-file", token_file, "--var", &root])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "invalid input: nothing ran");
    assert!(stderr(&out).contains("only https://"), "{}", stderr(&out));

    // An inventory host with `api_url`: `--via api` goes straight to that listener; its SSH
    // address (TEST-NET, unroutable) is never used.
    let inv = f.w("inv.toml");
    std::fs::write(
        &inv,
        format!("[hosts.agent]\naddress = \"192.0.2.1\"\napi_url = \"{url}\"\n"),
    )
    .unwrap();
    let out = f
        .bosun_command()
        .args(["run", "pb.toml", "--inventory"])
        .arg(&inv)
        .args([
            "--via",
            "api",
            "--api-ca",
            ca,
            "--api-token-file",
            token_file,
        ])
        .args(["--var", &root, "--var", "who=inventory", "--output", "json"])
        .env_remove("BOSUN_API_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rec = finished(&json_lines(&out))[0].clone();
    assert_eq!(
        (rec["host"].as_str(), rec["status"].as_str()),
        (Some("agent"), Some("changed"))
    );
    assert_eq!(
        std::fs::read_to_string(f.w("tls-out/greeting")).unwrap(),
        "hello inventory\n"
    );
}

#[test]
fn ctrl_c_cancels_a_run_over_the_api() {
    let f = Fixture::new();
    let tls = Tls::new(&f.w("tls"));
    let (_daemon, url) = tls_daemon(&f, &tls);
    std::fs::write(f.w("sleeper.toml"), SLEEPER).unwrap();
    let root = f.w("sleeper-out");
    let args: Vec<String> = [
        "run",
        "sleeper.toml",
        "--host",
        &url,
        "--via",
        "api",
        "--api-ca",
        tls.cert.to_str().unwrap(),
        "--api-token-file",
        tls.token_file.to_str().unwrap(),
        "--var",
        &format!("root={}", root.display()),
        "--output",
        "json",
    ]
    .map(String::from)
    .to_vec();
    let lines = interrupt_a_sleeper(&f, &args, &root);
    assert_cancelled(&lines);
    // The daemon recorded the run as cancelled.
    let runs = recent_runs(&f.w("agent/state"));
    assert_eq!(runs[0]["playbook"], "sleeper", "{runs}");
    assert_eq!(runs[0]["status"], "failed", "{runs}");
}

/// `bosun run` over SSH carries the playbook's files: a playbook that includes another from
/// a sibling directory, loops, and renders a template beside the included file gives the same
/// step events and the same files as `bosund apply` of it locally; the bundle's private
/// directory is gone after the run; a missing included file stops `bosun run` on the laptop
/// before any host is contacted.
#[test]
fn run_over_ssh_carries_includes_and_templates_in_a_bundle() {
    let f = Fixture::new();
    f.trust_host();
    std::fs::create_dir_all(f.w("proj/site")).unwrap();
    std::fs::create_dir_all(f.w("proj/roles/templates")).unwrap();
    std::fs::write(
        f.w("proj/site/site.toml"),
        r#"name = "site"
[[step]]
name = "root"
file = { path = "{{ root }}", state = "directory" }
[[step]]
name = "base"
include = { playbook = "../roles/base.toml", vars = { greeting = "hi" } }
"#,
    )
    .unwrap();
    std::fs::write(
        f.w("proj/roles/base.toml"),
        r#"name = "base"
[[step]]
name = "users"
template = { src = "templates/user.j2", dest = "{{ root }}/{{ item }}.txt" }
loop = ["ann", "bob"]
"#,
    )
    .unwrap();
    std::fs::write(
        f.w("proj/roles/templates/user.j2"),
        "{{ greeting }} {{ item }}\n",
    )
    .unwrap();

    let key = f.sshd.client_key_path();
    let remote = f.remote_bosund();
    let state = f.w("state");
    let run = |playbook: &str, root: &Path| {
        let root_var = format!("root={}", root.display());
        let host = f.host();
        f.bosun(&[
            "run",
            playbook,
            "--host",
            &host,
            "-i",
            key.to_str().unwrap(),
            "--bosund",
            bosund().to_str().unwrap(),
            "--remote-bosund",
            remote.to_str().unwrap(),
            "--remote-state-dir",
            state.to_str().unwrap(),
            "--var",
            &root_var,
            "--output",
            "json",
        ])
    };
    let out = run("proj/site/site.toml", &f.w("remote-out"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(f.w("remote-out/bob.txt")).unwrap(),
        "hi bob\n"
    );
    let remote_steps = steps_of(&out);
    // Nothing of the bundle's private directory is left on the host; the bundle itself is
    // cached there by digest, so an unchanged bundle is not sent again.
    let sent = |out: &std::process::Output| {
        json_lines(out).iter().any(|v| {
            v["event"] == "host_note"
                && v["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("bundle not cached"))
        })
    };
    let cached = || {
        let mut names: Vec<String> = std::fs::read_dir(state.join("bundles"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["cache"], "a bundle directory was left behind");
        std::fs::read_dir(state.join("bundles/cache"))
            .unwrap()
            .count()
    };
    assert!(sent(&out), "the first run sends the bundle");
    assert_eq!(cached(), 1);
    let again = run("proj/site/site.toml", &f.w("remote-out"));
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(!sent(&again), "an unchanged bundle is sent again");
    assert!(
        json_lines(&again)
            .iter()
            .any(|v| v["event"] == "step_finished" && v["name"] == "users [bob]"),
        "the cached bundle ran"
    );
    assert_eq!(cached(), 1);

    let local = Command::new(bosund())
        .args(["apply", "proj/site/site.toml", "--output", "json", "--var"])
        .arg(format!("root={}", f.w("local-out").display()))
        .arg("--state-dir")
        .arg(f.w("local-state"))
        .current_dir(f.w(""))
        .output()
        .unwrap();
    assert!(local.status.success(), "{}", stderr(&local));
    let local_steps = steps_of(&local);
    assert_eq!(remote_steps, local_steps);
    assert_eq!(
        remote_steps
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["root", "users [ann]", "users [bob]"]
    );
    for name in ["ann.txt", "bob.txt"] {
        assert_eq!(
            std::fs::read(f.w("remote-out").join(name)).unwrap(),
            std::fs::read(f.w("local-out").join(name)).unwrap()
        );
    }

    // A changed file makes another bundle, sent once.
    std::fs::write(
        f.w("proj/roles/templates/user.j2"),
        "{{ greeting }}, {{ item }}\n",
    )
    .unwrap();
    let changed = run("proj/site/site.toml", &f.w("remote-out"));
    assert_eq!(changed.status.code(), Some(0), "{}", stderr(&changed));
    assert!(sent(&changed));
    assert_eq!(cached(), 2);
    assert_eq!(
        std::fs::read_to_string(f.w("remote-out/bob.txt")).unwrap(),
        "hi, bob\n"
    );

    // A missing included file: refused on the laptop, the host never contacted.
    std::fs::remove_file(f.w("proj/roles/base.toml")).unwrap();
    let before = std::fs::metadata(&remote).unwrap().modified().unwrap();
    let out = run("proj/site/site.toml", &f.w("remote-out"));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot read the included playbook `../roles/base.toml`"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::metadata(&remote).unwrap().modified().unwrap(),
        before
    );
}

/// Every entry under `root`: path, kind, mode, and content (a link's target), with `root`
/// itself written `ROOT` so trees made under different roots compare.
fn tree(root: &Path) -> Vec<(String, String)> {
    use std::os::unix::fs::PermissionsExt;
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let root_text = root.display().to_string();
            let what = if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&p).unwrap().display().to_string();
                format!("link -> {}", target.replace(&root_text, "ROOT"))
            } else if meta.is_dir() {
                format!("dir {mode:o}")
            } else if rel.ends_with("reloaded-at") {
                // The demo's handler writes the time it ran.
                format!("file {mode:o} (a time)")
            } else {
                let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
                format!("file {mode:o} {}", text.replace(&root_text, "ROOT"))
            };
            out.push((rel, what));
            if meta.is_dir() {
                walk(&p, root, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

/// (name, status) of every finished step of a run's JSON lines.
fn steps_of(out: &Output) -> Vec<(String, String)> {
    json_lines(out)
        .iter()
        .filter(|v| v["event"] == "step_finished")
        .map(|v| {
            (
                v["name"].as_str().unwrap().into(),
                v["status"].as_str().unwrap().into(),
            )
        })
        .collect()
}

/// The proof that remote runs carry their files: the project's demo (a template beside it)
/// and a playbook with an include, a loop, a template and a helm values file (helm = the
/// fake-helm stand-in, one state directory per way of running) give the same step events and
/// the same files, and the same release values, whether run by `bosund apply` on the host, by
/// `bosun run` over sshd, or by `bosun run --via api` (the daemon's socket through the SSH
/// connection). Over the API the bundle is sent once: a second run finds it held and changes
/// nothing.
#[test]
fn the_demo_and_a_bundle_give_the_same_events_and_files_locally_over_ssh_and_over_the_api() {
    let f = Fixture::new();
    f.trust_host();
    let daemon = Daemon::start(&f.w("agent"));
    std::fs::create_dir_all(f.w("proj/site")).unwrap();
    std::fs::create_dir_all(f.w("proj/roles/templates")).unwrap();
    std::fs::create_dir_all(f.w("proj/roles/values")).unwrap();
    std::fs::write(
        f.w("proj/site/site.toml"),
        r#"name = "site"
[[step]]
name = "root"
file = { path = "{{ root }}", state = "directory", mode = "0750" }
[[step]]
name = "base"
include = { playbook = "../roles/base.toml", vars = { greeting = "hi" } }
"#,
    )
    .unwrap();
    std::fs::write(
        f.w("proj/roles/base.toml"),
        r#"name = "base"
[[step]]
name = "users"
template = { src = "templates/user.j2", dest = "{{ root }}/{{ item }}.txt", mode = "0640" }
loop = ["ann", "bob"]
[[step]]
name = "web release"
helm_release = { name = "web", chart = "example/nginx", version = "1.0.0", namespace = "web", create_namespace = true, kubeconfig = "{{ kubeconfig }}", helm = "{{ helm_bin }}", values_files = ["values/web.yaml"] }
"#,
    )
    .unwrap();
    std::fs::write(
        f.w("proj/roles/templates/user.j2"),
        "{{ greeting }} {{ item }} in {{ root }}\n",
    )
    .unwrap();
    std::fs::write(
        f.w("proj/roles/values/web.yaml"),
        "replicaCount: 2\nservice:\n  port: 8080\n",
    )
    .unwrap();
    let kubeconfig = f.w("kubeconfig.yaml");
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\n").unwrap();
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks/demo.toml");
    let fake_helm = bosun_fixtures::bin("fake-helm");

    // Each way of running gets its own roots and its own helm (a wrapper naming its state).
    let vars = |way: &str| -> Vec<String> {
        let helm = f.w(&format!("{way}-helm.sh"));
        let state = f.w(&format!("{way}-helm"));
        std::fs::write(
            &helm,
            format!(
                "#!/bin/sh\nFAKE_HELM_STATE='{}' exec '{}' \"$@\"\n",
                state.display(),
                fake_helm.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&helm, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        [
            format!("root={}", f.w(&format!("{way}-out")).display()),
            format!("kubeconfig={}", kubeconfig.display()),
            format!("helm_bin={}", helm.display()),
        ]
        .into_iter()
        .flat_map(|v| ["--var".to_string(), v])
        .collect()
    };
    let demo_root = |way: &str| format!("root={}", f.w(&format!("{way}-demo")).display());
    let local = |playbook: &Path, vars: &[String]| {
        let out = Command::new(bosund())
            .arg("apply")
            .arg(playbook)
            .args(["--output", "json", "--state-dir"])
            .arg(f.w("local-state"))
            .args(vars)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        out
    };
    let key = f.sshd.client_key_path();
    let remote = |playbook: &Path, via: &str, vars: &[String]| {
        let mut args: Vec<String> = vec![
            "run".into(),
            playbook.display().to_string(),
            "--host".into(),
            f.host(),
            "-i".into(),
            key.display().to_string(),
            "--output".into(),
            "json".into(),
        ];
        if via == "api" {
            args.extend([
                "--via".into(),
                "api".into(),
                "--api-socket".into(),
                daemon.socket.display().to_string(),
            ]);
        } else {
            args.extend([
                "--bosund".into(),
                bosund().display().to_string(),
                "--remote-bosund".into(),
                f.remote_bosund().display().to_string(),
                "--remote-state-dir".into(),
                f.w("state").display().to_string(),
            ]);
        }
        args.extend_from_slice(vars);
        let out = f.bosun(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        out
    };
    let site = f.w("proj/site/site.toml");
    let sent = |out: &Output| {
        json_lines(out).iter().any(|v| {
            v["event"] == "host_note"
                && v["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("bundle not held by the agent"))
        })
    };

    let mut runs = Vec::new();
    for way in ["local", "ssh", "api"] {
        let (site_out, demo_out) = match way {
            "local" => (
                local(&site, &vars(way)),
                local(&demo, &["--var".into(), demo_root(way)]),
            ),
            via => (
                remote(&site, via, &vars(way)),
                remote(&demo, via, &["--var".into(), demo_root(way)]),
            ),
        };
        if way == "api" {
            assert!(
                sent(&site_out) && sent(&demo_out),
                "the bundles went over the API"
            );
        }
        runs.push((way, steps_of(&site_out), steps_of(&demo_out)));
    }
    let (_, site_steps, demo_steps) = &runs[0];
    assert_eq!(
        site_steps
            .iter()
            .map(|(n, s)| format!("{n}: {s}"))
            .collect::<Vec<_>>(),
        [
            "root: changed",
            "users [ann]: changed",
            "users [bob]: changed",
            "web release: changed"
        ]
    );
    assert!(demo_steps.len() >= 9, "{demo_steps:?}");
    for (way, s, d) in &runs[1..] {
        assert_eq!(s, site_steps, "{way}: the site's events");
        assert_eq!(d, demo_steps, "{way}: the demo's events");
    }
    let local_tree = tree(&f.w("local-out"));
    let local_demo = tree(&f.w("local-demo"));
    assert!(
        local_tree.contains(&("bob.txt".into(), "file 640 hi bob in ROOT\n".into())),
        "{local_tree:?}"
    );
    assert!(
        local_demo.iter().any(|(p, _)| p == "etc/demo.env"),
        "{local_demo:?}"
    );
    let values = |way: &str| {
        let out = Command::new(&fake_helm)
            .args(["get", "values", "web", "-n", "web", "-o", "json"])
            .env("FAKE_HELM_STATE", f.w(&format!("{way}-helm")))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    assert_eq!(
        values("local"),
        serde_json::json!({"replicaCount": 2, "service": {"port": 8080}})
    );
    for way in ["ssh", "api"] {
        assert_eq!(tree(&f.w(&format!("{way}-out"))), local_tree, "{way}");
        assert_eq!(tree(&f.w(&format!("{way}-demo"))), local_demo, "{way}");
        assert_eq!(values(way), values("local"), "{way}");
    }

    // Again over the API: the agent holds the bundle, nothing is sent, nothing changes.
    let again = remote(&site, "api", &vars("api"));
    assert!(!sent(&again), "an unchanged bundle was sent again");
    assert!(
        steps_of(&again).iter().all(|(_, s)| s == "ok"),
        "{:?}",
        steps_of(&again)
    );
    // The daemon's private bundle directories went with their runs.
    let mut left: Vec<String> = std::fs::read_dir(f.w("agent/state/bundles"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["cache"]);
}

//! `bosund run` as systemd sees it: READY, the watchdog, SIGHUP reloads, SIGTERM drains; and
//! `bosund check-config`.

mod daemon_support;

use std::process::Command;
use std::time::Duration;

use daemon_support::{Agent, BOSUND, base_config, is_dead, sleeper, wait_pid};
use hyper::{Method, StatusCode};
use nix::sys::signal::Signal;
use serde_json::json;

fn check_config(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BOSUND)
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("running bosund check-config");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_refuses_a_public_listener_without_tls_at_its_line() {
    let hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let (code, _, err) = check_config(&format!(
        "queue_limit = 2\n[api.tcp]\nlisten = \"0.0.0.0:8443\"\ntokens = [\"{hash}\"]\n"
    ));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("agent.toml:3:10: error: refusing to listen on non-loopback address 0.0.0.0:8443 without TLS"), "{err}");
    assert!(err.contains("tls_cert"), "the error says what to do: {err}");

    let (code, out, err) = check_config(&format!(
        "[api.tcp]\nlisten = \"127.0.0.1:8443\"\ntokens = [\"{hash}\"]\n"
    ));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("ok") && out.contains("127.0.0.1:8443"),
        "{out}"
    );

    let (code, _, err) = check_config("[schedule]\nbackup = \"daily\"\n");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("agent.toml:1:") && err.contains("[[schedule]]"),
        "{err}"
    );
}

#[test]
fn an_invalid_config_stops_bosund_run_before_it_listens() {
    let mut agent = Agent::spawn("queue_limit = \"many\"", "", &[]);
    let status = agent
        .wait_exit(Duration::from_secs(30))
        .expect("bosund exits");
    assert_eq!(status.code(), Some(2));
    let log = agent.log_text();
    assert!(log.contains("agent.toml:3:15"), "{log}");
    assert!(!agent.socket.exists());
}

#[tokio::test]
async fn ready_comes_once_the_socket_accepts_and_the_watchdog_is_fed() {
    let mut agent = Agent::spawn("", "", &[("WATCHDOG_USEC", "300000")]);
    agent.expect_notify("READY=1");
    // READY=1 means serving: the socket accepts now, with no retry.
    let (status, health) = agent.call(Method::GET, "/v1/health", None).await;
    assert_eq!(
        (status, health["status"].as_str()),
        (StatusCode::OK, Some("ok")),
        "{health}"
    );
    // Twice, so this is a period and not a one-off.
    agent.expect_notify("WATCHDOG=1");
    agent.expect_notify("WATCHDOG=1");
}

#[tokio::test]
async fn a_stale_socket_is_replaced_and_a_live_one_refused() {
    let agent = Agent::start("", "");
    // A second bosund on the same socket fails and leaves the first one serving.
    let conf = agent.dir.path().join("second.toml");
    std::fs::write(&conf, base_config(agent.dir.path(), "")).unwrap();
    let out = Command::new(BOSUND)
        .arg("run")
        .arg("--config")
        .arg(&conf)
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a second bosund did not fail: {err}"
    );
    assert!(err.contains("another process is serving on"), "{err}");
    let (status, _) = agent.call(Method::GET, "/v1/health", None).await;
    assert_eq!(status, StatusCode::OK, "the first bosund lost its socket");

    // A socket file left by a killed bosund (nobody listening) is taken over.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("run/api.sock");
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(std::os::unix::net::UnixStream::connect(&sock).is_err());
    let mut second = Agent::spawn_in(dir, "", "", &[]);
    second.expect_notify("READY=1");
    let (status, _) = second.call(Method::GET, "/v1/health", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn sighup_reloads_a_valid_config_and_keeps_the_old_one_when_broken() {
    let mut agent = Agent::start("", "");
    let other = agent.dir.path().join("other-playbooks");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("noop.toml"), "name = \"noop\"\n").unwrap();
    let submit_noop = async |agent: &Agent| {
        agent
            .call(
                Method::POST,
                "/v1/runs",
                Some(json!({ "playbook": "noop" })),
            )
            .await
            .0
    };
    assert_eq!(submit_noop(&agent).await, StatusCode::NOT_FOUND);

    // Broken: logged with its location, the old config stays, bosund keeps serving.
    let good = std::fs::read_to_string(&agent.config).unwrap();
    std::fs::write(&agent.config, format!("{good}\nqueue_limt = 3\n")).unwrap();
    agent.signal(Signal::SIGHUP);
    agent.expect_notify("READY=1");
    agent.wait_for_log("still serving with the previous one");
    assert!(
        agent.log_text().contains("agent.toml:7:1"),
        "{}",
        agent.log_text()
    );
    let (status, _) = agent.call(Method::GET, "/v1/health", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(submit_noop(&agent).await, StatusCode::NOT_FOUND);

    // Valid: the new playbooks_dir is used at once.
    let playbooks = agent.playbooks.display().to_string();
    std::fs::write(
        &agent.config,
        good.replace(&playbooks, &other.display().to_string()),
    )
    .unwrap();
    agent.signal(Signal::SIGHUP);
    agent.wait_for_log("configuration reloaded");
    assert_eq!(submit_noop(&agent).await, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn sigterm_during_a_run_ends_it_journals_it_and_exits_zero() {
    let mut agent = Agent::start("shutdown_timeout = \"1s\"", "");
    let pidfile = agent.dir.path().join("sleep.pid");
    let id = agent.submit(&sleeper(&pidfile)).await;
    let pid = wait_pid(&pidfile);
    let queued = agent.submit("name = \"never\"\n").await;

    agent.signal(Signal::SIGTERM);
    agent.expect_notify("STOPPING=1");
    // 1 s of grace, then the cancel: well before the sleep's 30 s.
    let status = agent.wait_exit(Duration::from_secs(20)).unwrap_or_else(|| {
        panic!(
            "bosund did not exit after SIGTERM; log:\n{}",
            agent.log_text()
        )
    });
    assert!(
        status.success(),
        "exit {status}; log:\n{}",
        agent.log_text()
    );
    assert!(is_dead(pid), "the step's process outlived bosund");
    assert!(!agent.socket.exists(), "the socket file was left behind");

    let out = Command::new(BOSUND)
        .args(["history", "--output", "json", "--state-dir"])
        .arg(&agent.state)
        .output()
        .unwrap();
    let runs: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("history prints JSON Lines"))
        .collect();
    assert_eq!(runs.len(), 1, "only the started run is journaled: {runs:?}");
    assert_eq!(runs[0]["id"], id.as_str());
    assert_eq!(runs[0]["status"], "failed", "{runs:?}");
    assert!(runs[0]["finished_at"].is_string(), "{runs:?}");
    let log = agent.log_text();
    assert!(
        log.contains("cancelling it") && log.contains(&queued),
        "{log}"
    );
}

/// A `journal.db` with garbage written over its pages: `bosund run` finds it at start, moves
/// it aside with a message, starts a new journal and serves (READY, a run journaled); started
/// again, it finds nothing wrong and moves nothing: never a crash loop under systemd.
#[tokio::test]
async fn a_damaged_journal_is_moved_aside_and_the_daemon_serves_with_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let playbook = dir.path().join("first.toml");
    std::fs::write(
        &playbook,
        "name = \"first\"\n[[step]]\nname = \"say\"\ncommand = { run = \"true\" }\n",
    )
    .unwrap();
    let out = Command::new(BOSUND)
        .arg("--state-dir")
        .arg(&state)
        .arg("apply")
        .arg(&playbook)
        .env("BOSUN_IMDS_ENDPOINT", "http://127.0.0.1:1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let db = state.join("journal.db");
    let mut bytes = std::fs::read(&db).unwrap();
    for b in &mut bytes[4096..12288] {
        *b = 0x5A;
    }
    std::fs::write(&db, &bytes).unwrap();

    let mut agent = Agent::spawn_in(dir, "", "", &[]);
    agent.expect_notify("READY=1");
    let log = agent.log_text();
    assert!(
        log.contains("failed its integrity check") && log.contains("moved aside to"),
        "{log}"
    );
    let aside = |state: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(state)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| {
                n.starts_with("journal.db.corrupt-") && !n.ends_with("-wal") && !n.ends_with("-shm")
            })
            .collect()
    };
    assert_eq!(aside(&agent.state).len(), 1);
    let id = agent
        .submit("name = \"after\"\n[[step]]\nname = \"say\"\ncommand = { run = \"true\" }\n")
        .await;
    agent.wait_status(&id, &["ok"]).await;
    let (_, runs) = agent.call(Method::GET, "/v1/runs", None).await;
    assert!(runs.to_string().contains(&id), "{runs}");

    // Stopped and started again: the new journal is sound, nothing more is moved.
    agent.signal(Signal::SIGTERM);
    assert!(
        agent
            .wait_exit(Duration::from_secs(20))
            .is_some_and(|s| s.success())
    );
    let dir = std::mem::replace(&mut agent.dir, tempfile::tempdir().unwrap());
    drop(agent);
    std::fs::remove_file(dir.path().join("notify.sock")).unwrap();
    let mut again = Agent::spawn_in(dir, "", "", &[]);
    again.expect_notify("READY=1");
    assert!(
        !again.log_text().contains("integrity check"),
        "{}",
        again.log_text()
    );
    assert_eq!(aside(&again.state).len(), 1);
    let out = Command::new(BOSUND)
        .args(["history", "--output", "json", "--state-dir"])
        .arg(&again.state)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));
}

/// `bosund run` with its state dir on a 2 MiB tmpfs (a mount namespace of its own, entered with
/// nsenter to fill and empty it): a run journals; the file system filled, a run is refused with
/// "no space left on device" before any step while the daemon keeps serving; space freed, runs
/// go on and the journal reads.
#[tokio::test]
async fn a_full_state_disk_fails_runs_clearly_and_the_daemon_keeps_serving() {
    use daemon_support::{PATIENCE, call_over};
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    std::fs::create_dir_all(dir.path().join("playbooks")).unwrap();
    std::fs::write(
        dir.path().join("playbooks/touch.toml"),
        "name = \"touch\"\n[[step]]\nname = \"say\"\ncommand = { run = \"true\" }\n",
    )
    .unwrap();
    let socket = dir.path().join("run/api.sock");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "playbooks_dir = \"{}\"\nstate_dir = \"{}/state\"\n[api]\nsocket = \"{}\"\n",
            dir.path().join("playbooks").display(),
            mnt.display(),
            socket.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("bosund.log");
    /// Kills the daemon however the test ends.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let daemon = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "/bin/sh", "-c"])
        .arg("mount -t tmpfs -o size=2m tmpfs \"$MNT\" && exec \"$BOSUND\" run --config \"$CFG\"")
        .env("MNT", &mnt)
        .env("BOSUND", BOSUND)
        .env("CFG", &config)
        .env("BOSUN_IMDS_ENDPOINT", "http://127.0.0.1:1")
        .env("BOSUN_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("unshare (util-linux); the test needs root for its tmpfs");
    let daemon = Killed(daemon);
    let pid = daemon.0.id().to_string();
    let in_ns = |script: &str| {
        let out = Command::new("nsenter")
            .args(["-t", &pid, "-m", "/bin/sh", "-c", script])
            .env("MNT", &mnt)
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let call = |method: Method, path: String, body: Option<serde_json::Value>| {
        let socket = socket.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(&socket).await?;
            Ok::<_, std::io::Error>(call_over(stream, method, &path, body, None).await)
        }
    };
    let deadline = std::time::Instant::now() + PATIENCE;
    while call(Method::GET, "/v1/health".into(), None).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "bosund never answered: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let run = |check: &'static str| {
        let call = &call;
        async move {
            let (code, body) = call(
                Method::POST,
                "/v1/runs".into(),
                Some(json!({"playbook": "touch"})),
            )
            .await
            .unwrap();
            assert_eq!(code, StatusCode::ACCEPTED, "{body}");
            let id = body["id"].as_str().unwrap().to_string();
            let deadline = std::time::Instant::now() + PATIENCE;
            loop {
                let (_, r) = call(Method::GET, format!("/v1/runs/{id}"), None)
                    .await
                    .unwrap();
                if r["status"] == "ok" || r["status"] == "failed" {
                    assert_eq!(r["status"], check, "{r}");
                    let (_, events) = call(Method::GET, format!("/v1/runs/{id}/events"), None)
                        .await
                        .unwrap();
                    return events.to_string();
                }
                assert!(std::time::Instant::now() < deadline, "{r}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    run("ok").await;
    in_ns("dd if=/dev/zero of=\"$MNT/fill\" bs=64k 2>/dev/null; df -k \"$MNT\" | tail -1");
    let events = run("failed").await;
    assert!(
        events.contains("no space left on device for the state dir")
            && events.contains("Nothing was run"),
        "{events}"
    );
    assert!(
        !events.contains("step_started"),
        "a step started on a full disk: {events}"
    );
    let (code, health) = call(Method::GET, "/v1/health".into(), None).await.unwrap();
    assert_eq!(
        (code, health["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    in_ns("rm \"$MNT/fill\"");
    run("ok").await;
    let history = in_ns(&format!(
        "{BOSUND} --state-dir \"$MNT/state\" history --output json"
    ));
    // The refused run could not be journaled (the disk was full); the two others are there.
    assert_eq!(history.lines().count(), 2, "{history}");
}

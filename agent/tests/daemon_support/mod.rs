//! What the daemon and API tests share: a real `bosund run` in a temporary directory (socket,
//! state, playbooks and a NOTIFY_SOCKET of its own), and a small HTTP/1 client over its Unix
//! socket or over TLS.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bosun_model::event::RunEvent;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};

/// The `bosund` binary built by cargo for this test run.
pub const BOSUND: &str = env!("CARGO_BIN_EXE_bosund");

/// How long anything may take on a busy 2-core machine before a test calls it a failure.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A running `bosund run`, killed when dropped.
pub struct Agent {
    /// Holds every file of this agent.
    pub dir: tempfile::TempDir,
    /// The config file (tests rewrite it before SIGHUP).
    pub config: PathBuf,
    /// The API socket.
    pub socket: PathBuf,
    /// The journal's directory.
    pub state: PathBuf,
    /// Named playbooks.
    pub playbooks: PathBuf,
    /// What systemd would receive.
    pub notify: UnixDatagram,
    /// bosund's stderr (its logs).
    pub log: PathBuf,
    child: Option<Child>,
}

/// The config lines every test agent has; `extra` is appended (top-level keys first, then
/// tables).
pub fn base_config(dir: &Path, extra: &str) -> String {
    format!(
        "playbooks_dir = \"{}\"\nstate_dir = \"{}\"\n{extra}\n[api]\nsocket = \"{}\"\n",
        dir.join("playbooks").display(),
        dir.join("state").display(),
        dir.join("run/api.sock").display(),
    )
}

impl Agent {
    /// Starts `bosund run` with [`base_config`] plus `extra` and `tail` (TOML after `[api]`,
    /// e.g. `[api.tcp]`), and waits for READY=1.
    pub fn start(extra: &str, tail: &str) -> Agent {
        Agent::start_with_env(extra, tail, &[])
    }

    /// [`Agent::start`] with extra environment variables.
    pub fn start_with_env(extra: &str, tail: &str, env: &[(&str, &str)]) -> Agent {
        let mut agent = Agent::spawn(extra, tail, env);
        agent.expect_notify("READY=1");
        agent
    }

    /// Starts `bosund run` without waiting for anything.
    pub fn spawn(extra: &str, tail: &str, env: &[(&str, &str)]) -> Agent {
        Agent::spawn_in(
            tempfile::tempdir().expect("creating a temp dir"),
            extra,
            tail,
            env,
        )
    }

    /// [`Agent::spawn`] in a directory the test has prepared.
    pub fn spawn_in(
        dir: tempfile::TempDir,
        extra: &str,
        tail: &str,
        env: &[(&str, &str)],
    ) -> Agent {
        let config = dir.path().join("agent.toml");
        std::fs::write(&config, format!("{}{tail}", base_config(dir.path(), extra))).unwrap();
        std::fs::create_dir_all(dir.path().join("playbooks")).unwrap();
        let notify_path = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).expect("binding the notify socket");
        notify.set_read_timeout(Some(PATIENCE)).unwrap();
        let log = dir.path().join("bosund.log");
        // systemd sets WATCHDOG_PID to the service's pid; a shell that execs bosund has it.
        let mut cmd = if env.iter().any(|(k, _)| *k == "WATCHDOG_USEC") {
            let mut sh = Command::new("/bin/sh");
            sh.args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\"", BOSUND]);
            sh
        } else {
            Command::new(BOSUND)
        };
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .env("NOTIFY_SOCKET", &notify_path)
            .env("BOSUN_LOG", "info")
            .env_remove("BOSUN_STATE_DIR")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("starting bosund run");
        Agent {
            socket: dir.path().join("run/api.sock"),
            state: dir.path().join("state"),
            playbooks: dir.path().join("playbooks"),
            config,
            notify,
            log,
            dir,
            child: Some(child),
        }
    }

    /// Waits for a notify datagram that contains `want` (skipping others); panics with the
    /// agent's log after [`PATIENCE`].
    pub fn expect_notify(&mut self, want: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        let mut buf = [0u8; 4096];
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            match self.notify.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if msg.lines().any(|l| l == want) {
                        return msg;
                    }
                    seen.push(msg);
                }
                Err(e) => {
                    if let Some(status) = self
                        .child
                        .as_mut()
                        .and_then(|c| c.try_wait().ok().flatten())
                    {
                        panic!(
                            "bosund exited ({status}) before sending {want}; log:\n{}",
                            self.log_text()
                        );
                    }
                    if e.kind() != std::io::ErrorKind::WouldBlock
                        && e.kind() != std::io::ErrorKind::TimedOut
                    {
                        panic!("reading the notify socket: {e}");
                    }
                }
            }
        }
        panic!(
            "no {want} from bosund within {PATIENCE:?} (got {seen:?}); log:\n{}",
            self.log_text()
        )
    }

    /// bosund's log so far.
    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("bosund never logged {needle:?}; log:\n{}", self.log_text());
    }

    /// Sends a signal to bosund.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = self.child.as_ref().expect("bosund was started").id();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig)
            .expect("signalling bosund");
    }

    /// Waits for bosund to exit, at most `limit`; `None` if it is still running then.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("waiting for bosund") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// A request over the Unix socket.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.socket.display()));
        call_over(stream, method, path, body, None).await
    }

    /// A raw request over the Unix socket: status and body text.
    pub async fn call_text(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        content_type: &str,
    ) -> (StatusCode, String) {
        let stream = tokio::net::UnixStream::connect(&self.socket).await.unwrap();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "bosund")
            .header("content-type", content_type)
            .body(Full::new(body))
            .unwrap();
        let (status, body) = send(stream, req).await;
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Submits a playbook's text; returns the run id, panicking unless the answer is 202.
    pub async fn submit(&self, toml: &str) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/v1/runs",
                Some(serde_json::json!({ "playbook_toml": toml })),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body["id"].as_str().expect("an id").to_string()
    }

    /// Follows `/v1/runs/{id}/events` to its end; every event, in order.
    pub async fn follow(&self, id: &str) -> Vec<RunEvent> {
        let mut stream = self.events(id, None).await;
        let mut all = Vec::new();
        while let Some(e) = stream.next().await {
            all.push(e);
        }
        all
    }

    /// Opens `/v1/runs/{id}/events`, optionally resuming after event `last_event_id`.
    pub async fn events(&self, id: &str, last_event_id: Option<usize>) -> EventStream {
        let stream = tokio::net::UnixStream::connect(&self.socket).await.unwrap();
        let mut req = Request::builder()
            .uri(format!("/v1/runs/{id}/events"))
            .header("host", "bosund");
        if let Some(last) = last_event_id {
            req = req.header("last-event-id", last.to_string());
        }
        let req = req.body(Full::new(Bytes::new())).unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP handshake with bosund");
        tokio::spawn(conn);
        let response = sender.send_request(req).await.expect("sending the request");
        assert_eq!(response.status(), StatusCode::OK, "events of {id}");
        EventStream {
            body: response.into_body(),
            buf: String::new(),
            pending: VecDeque::new(),
        }
    }

    /// Polls `GET /v1/runs/{id}` until its status is one of `states`.
    pub async fn wait_status(&self, id: &str, states: &[&str]) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (_, run) = self
                .call(Method::GET, &format!("/v1/runs/{id}"), None)
                .await;
            if states.iter().any(|s| run["status"] == *s) {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} never reached {states:?}: {run}; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A run's SSE stream, read event by event.
pub struct EventStream {
    body: hyper::body::Incoming,
    buf: String,
    pending: VecDeque<RunEvent>,
}

impl EventStream {
    /// The next event; `None` when the stream has ended. Panics after [`PATIENCE`] without one.
    pub async fn next(&mut self) -> Option<RunEvent> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            let frame = tokio::time::timeout(PATIENCE, self.body.frame())
                .await
                .unwrap_or_else(|_| panic!("no event within {PATIENCE:?}"))?
                .expect("reading the event stream");
            if let Ok(data) = frame.into_data() {
                self.buf.push_str(&String::from_utf8_lossy(&data));
                while let Some(end) = self.buf.find("\n\n") {
                    let block: String = self.buf.drain(..end + 2).collect();
                    self.pending.extend(parse_sse(&block));
                }
            }
        }
    }
}

/// Sends one request over `io` with an optional bearer token; status and JSON body (or the
/// text as a JSON string when it is not JSON).
pub async fn call_over<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: S,
    method: Method,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "bosund");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(b.to_string()))),
        None => req.body(Full::new(Bytes::new())),
    }
    .unwrap();
    let (status, body) = send(io, req).await;
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    (status, value)
}

async fn send<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: S,
    req: Request<Full<Bytes>>,
) -> (StatusCode, Bytes) {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("HTTP handshake with bosund");
    tokio::spawn(conn);
    let response = sender.send_request(req).await.expect("sending the request");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("reading the body")
        .to_bytes();
    (status, body)
}

/// The events in an SSE body (`data:` lines).
pub fn parse_sse(text: &str) -> Vec<RunEvent> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).unwrap_or_else(|e| panic!("bad event {d}: {e}")))
        .collect()
}

/// A playbook whose first step records its shell's pid in `pidfile` and then sleeps 30 s.
pub fn sleeper(pidfile: &Path) -> String {
    format!(
        "name = \"sleeper\"\n[[step]]\nname = \"sleep\"\ncommand = {{ run = \"echo $$ > {} && exec sleep 30\" }}\n",
        pidfile.display()
    )
}

/// Waits for `pidfile` to hold a pid; returns it.
pub fn wait_pid(pidfile: &Path) -> i32 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(pid) = std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "the step never wrote {}",
            pidfile.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The process is gone (or a zombie waiting to be reaped).
pub fn is_dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

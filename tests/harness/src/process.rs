//! Shared machinery for peers that are separate processes: free ports, locating programs,
//! children that are killed and reaped on drop, and readiness polling with a deadline.

use std::fs::File;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// How long a peer may take to become ready before `start()` gives up.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two readiness checks.
const POLL_PAUSE: Duration = Duration::from_millis(50);
/// How many times a peer is started on a fresh port when it exits during start-up (the usual
/// cause being another test that took the port between our probe and the peer's bind).
pub(crate) const START_ATTEMPTS: usize = 3;
/// Lines of a peer's log quoted in errors.
const LOG_TAIL_LINES: usize = 40;

/// A port on 127.0.0.1 that was free a moment ago: bound to port 0, read back, released.
///
/// Another process can take it before the caller binds it; peers started by this crate retry
/// on a fresh port when that happens.
pub fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0 to find a free port")?;
    Ok(listener.local_addr()?.port())
}

/// True when something accepts TCP connections on 127.0.0.1:`port` (connect timeout 1 s).
pub fn port_is_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

/// `n` random bytes from the kernel, as lowercase hex.
pub(crate) fn random_hex(n: usize) -> Result<String> {
    let mut buf = vec![0u8; n];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("cannot read /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The name of the user this process runs as (`id -un`, else `$USER`).
pub fn current_user() -> Result<String> {
    if let Ok(out) = Command::new("id").arg("-un").output()
        && out.status.success()
    {
        let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !name.is_empty() {
            return Ok(name);
        }
    }
    match std::env::var("USER") {
        Ok(u) if !u.is_empty() => Ok(u),
        _ => bail!("cannot tell the current user name: `id -un` failed and $USER is unset"),
    }
}

/// True when this process runs as root (uid 0).
pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Finds `name` in `dirs` first, then on `PATH`. `hint` tells the user how to install it and
/// ends up in the error, e.g. "run scripts/test, which installs openssh-server".
pub(crate) fn find_program(name: &str, dirs: &[&str], hint: &str) -> Result<PathBuf> {
    let mut searched: Vec<PathBuf> = dirs.iter().map(PathBuf::from).collect();
    if let Some(path) = std::env::var_os("PATH") {
        searched.extend(std::env::split_paths(&path));
    }
    for dir in &searched {
        let candidate = dir.join(name);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    bail!(
        "{name} not found (looked in {} and PATH): {hint}",
        dirs.join(", ")
    )
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs a short helper command to completion; fails with its stderr when it exits non-zero.
pub(crate) fn run_checked(cmd: &mut Command, what: &str) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {what} ({cmd:?})"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(out)
}

/// The last `LOG_TAIL_LINES` lines of each file, labelled, for error messages.
pub(crate) fn log_tail(files: &[PathBuf]) -> String {
    let mut out = String::new();
    for file in files {
        let text = match std::fs::read(file) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => format!("(cannot read: {e})"),
        };
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(LOG_TAIL_LINES);
        out.push_str(&format!("--- last lines of {} ---\n", file.display()));
        for line in &lines[start..] {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Why one start attempt failed: an early exit is retried on a fresh port, anything else is
/// final.
pub(crate) enum StartFailure {
    /// The process exited before it was ready (often: its port was taken).
    Exited(anyhow::Error),
    /// Anything else (time-out, setup failure): not retried.
    Fatal(anyhow::Error),
}

impl From<anyhow::Error> for StartFailure {
    fn from(e: anyhow::Error) -> Self {
        StartFailure::Fatal(e)
    }
}

/// Runs `attempt` with a fresh free port up to [`START_ATTEMPTS`] times while it fails with
/// [`StartFailure::Exited`].
pub(crate) fn start_with_retries<T>(
    name: &str,
    mut attempt: impl FnMut(u16) -> std::result::Result<T, StartFailure>,
) -> Result<T> {
    let mut last = None;
    for _ in 0..START_ATTEMPTS {
        let port = free_port()?;
        match attempt(port) {
            Ok(peer) => return Ok(peer),
            Err(StartFailure::Fatal(e)) => return Err(e),
            Err(StartFailure::Exited(e)) => last = Some(e),
        }
    }
    let e = last.unwrap_or_else(|| anyhow!("no attempt was made"));
    Err(e.context(format!(
        "{name} failed to start {START_ATTEMPTS} times, each on a fresh port"
    )))
}

/// A peer process. Its stdout and stderr go to a log file; on drop it is killed (SIGKILL) and
/// reaped, so no zombie or stray server outlives the test.
#[derive(Debug)]
pub(crate) struct PeerProcess {
    name: String,
    child: Option<Child>,
    logs: Vec<PathBuf>,
}

impl PeerProcess {
    /// Spawns `cmd` with stdin from /dev/null and stdout+stderr appended to `log`. `extra_logs`
    /// are other files the program writes (quoted in errors).
    pub(crate) fn spawn(
        name: &str,
        mut cmd: Command,
        log: &Path,
        extra_logs: &[PathBuf],
    ) -> Result<Self> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name} ({cmd:?})"))?;
        let mut logs = vec![log.to_path_buf()];
        logs.extend_from_slice(extra_logs);
        Ok(PeerProcess {
            name: name.to_string(),
            child: Some(child),
            logs,
        })
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Some(status)` once the process has exited (or was stopped).
    pub(crate) fn try_wait(&mut self) -> Option<ExitStatus> {
        match self.child.as_mut() {
            Some(child) => child.try_wait().ok().flatten(),
            None => Some(ExitStatus::default()),
        }
    }

    /// Tails of the process's log files, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        log_tail(&self.logs)
    }

    /// Kills (SIGKILL) and reaps the process. Idempotent.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Polls `probe` until it succeeds, the process exits, or [`READY_TIMEOUT`] passes.
    /// `probe`'s last error and the log tail are in the returned error.
    pub(crate) fn wait_ready(
        &mut self,
        mut probe: impl FnMut() -> Result<()>,
    ) -> std::result::Result<(), StartFailure> {
        let started = Instant::now();
        let mut last_err = anyhow!("not checked yet");
        loop {
            if let Some(status) = self.try_wait() {
                return Err(StartFailure::Exited(anyhow!(
                    "{} exited ({status}) before it was ready; last check: {last_err:#}\n{}",
                    self.name,
                    self.log_tail()
                )));
            }
            match probe() {
                Ok(()) => return Ok(()),
                Err(e) => last_err = e,
            }
            if started.elapsed() >= READY_TIMEOUT {
                return Err(StartFailure::Fatal(anyhow!(
                    "{} was not ready after {:?}; last check: {last_err:#}\n{}",
                    self.name,
                    READY_TIMEOUT,
                    self.log_tail()
                )));
            }
            thread::sleep(POLL_PAUSE);
        }
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_program_names_the_fix() {
        let err = find_program(
            "bosun-no-such-program",
            &["/nonexistent"],
            "install it with X",
        )
        .expect_err("found a program that does not exist");
        let msg = format!("{err:#}");
        assert!(msg.contains("bosun-no-such-program not found"), "{msg}");
        assert!(msg.contains("install it with X"), "{msg}");
    }

    #[test]
    fn finds_programs_on_path() {
        assert!(find_program("sh", &[], "").is_ok());
    }

    #[test]
    fn free_ports_are_bindable_and_randomish() {
        let a = free_port().unwrap();
        assert!(TcpListener::bind(("127.0.0.1", a)).is_ok());
        assert_eq!(random_hex(8).unwrap().len(), 16);
    }

    #[test]
    fn early_exit_is_retried_then_reported() {
        let mut tries = 0;
        let r: Result<()> = start_with_retries("thing", |_port| {
            tries += 1;
            Err(StartFailure::Exited(anyhow!("port taken")))
        });
        assert_eq!(tries, START_ATTEMPTS);
        let msg = format!("{:#}", r.expect_err("should fail"));
        assert!(
            msg.contains("thing failed to start 3 times") && msg.contains("port taken"),
            "{msg}"
        );

        let mut tries = 0;
        let r: Result<()> = start_with_retries("thing", |_port| {
            tries += 1;
            Err(StartFailure::Fatal(anyhow!("no config")))
        });
        assert_eq!(tries, 1);
        assert!(r.is_err());
    }

    #[test]
    fn a_peer_that_dies_fails_fast_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo boom-from-peer >&2; exit 3"]);
        let mut p = PeerProcess::spawn("dier", cmd, &dir.path().join("log"), &[]).unwrap();
        let started = Instant::now();
        let Err(StartFailure::Exited(e)) = p.wait_ready(|| bail!("never ready")) else {
            panic!("expected an early-exit failure");
        };
        assert!(started.elapsed() < Duration::from_secs(10));
        let msg = format!("{e:#}");
        assert!(
            msg.contains("dier exited") && msg.contains("boom-from-peer"),
            "{msg}"
        );
    }
}

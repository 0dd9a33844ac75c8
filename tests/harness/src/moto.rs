//! [`Moto`]: a real moto server (AWS API emulator) on a free loopback port.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::http;
use crate::process::{PeerProcess, StartFailure, is_executable, start_with_retries};

const INSTALL_HINT: &str = "run scripts/test, which creates the Python venv with moto[server] \
     (or set BOSUN_TEST_VENV to a venv that has it)";

/// A `moto_server` process on `127.0.0.1:PORT`, in its own temporary working directory.
///
/// Contract:
/// - `start()` returns once the server answers HTTP; each instance has its own state, so
///   tests in parallel never see each other's resources.
/// - The binary is `$BOSUN_TEST_VENV/bin/moto_server`, else
///   `$HOME/.cache/bosun/venv/bin/moto_server`, else `moto_server` on `PATH`; missing, the
///   error says how to install it.
/// - Started with `MOTO_IAM_LOAD_MANAGED_POLICIES=true MOTO_ACM_VALIDATION_WAIT=1`.
/// - Dropping it kills and reaps the process and removes the directory; the port then
///   refuses connections.
#[derive(Debug)]
pub struct Moto {
    process: PeerProcess,
    port: u16,
    program: PathBuf,
    dir: TempDir,
}

impl Moto {
    /// Starts moto on a free port and waits (up to 30 s) until it answers.
    pub fn start() -> Result<Moto> {
        let program = find_moto_server()?;
        start_with_retries("moto_server", |port| {
            let dir = tempfile::Builder::new()
                .prefix("bosun-moto-")
                .tempdir()
                .context("cannot create a temporary directory for moto")?;
            let process = spawn(&program, &dir, port)?;
            let mut moto = Moto {
                process,
                port,
                program: program.clone(),
                dir,
            };
            moto.wait_ready()?;
            Ok(moto)
        })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PID of the server process, `None` while [`stop`](Self::stop)ped.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The environment an AWS SDK or CLI needs to talk to this server: fixed `test`
    /// credentials, region `us-east-1`, `AWS_ENDPOINT_URL` = [`endpoint`](Self::endpoint), and
    /// `AWS_EC2_METADATA_DISABLED=true` so no SDK goes looking for a real IMDS.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "test".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
            ("AWS_DEFAULT_REGION", "us-east-1".to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Wipes all state (`POST /moto-api/reset`).
    pub fn reset(&self) -> Result<()> {
        let resp = http::request(
            "POST",
            &format!("{}/moto-api/reset", self.endpoint()),
            &[],
            &[],
        )
        .context("moto reset")?;
        if resp.status != 200 {
            bail!("moto reset answered {}: {}", resp.status, resp.text());
        }
        Ok(())
    }

    /// Kills the server (an AWS outage, as the client sees it): connections to the port are
    /// refused until [`restart`](Self::restart). Idempotent.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts the server again on the same port, with empty state, and waits until it
    /// answers. Fails if another process took the port meanwhile.
    pub fn restart(&mut self) -> Result<()> {
        self.process.stop();
        self.process = spawn(&self.program, &self.dir, self.port)?;
        self.wait_ready().map_err(|e| match e {
            StartFailure::Exited(e) | StartFailure::Fatal(e) => {
                e.context(format!("moto restart on port {}", self.port))
            }
        })
    }

    /// The tail of the server's log (for a failing test's message).
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    fn wait_ready(&mut self) -> std::result::Result<(), StartFailure> {
        let url = format!("{}/", self.endpoint());
        self.process.wait_ready(|| {
            let resp = http::get(&url)?;
            if resp.status >= 500 {
                bail!("GET / answered {}", resp.status);
            }
            Ok(())
        })
    }
}

fn spawn(program: &PathBuf, dir: &TempDir, port: u16) -> Result<PeerProcess> {
    let mut cmd = Command::new(program);
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .current_dir(dir.path())
        .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
        .env("MOTO_ACM_VALIDATION_WAIT", "1")
        .env("PYTHONUNBUFFERED", "1");
    PeerProcess::spawn("moto_server", cmd, &dir.path().join("moto.log"), &[])
}

fn find_moto_server() -> Result<PathBuf> {
    if let Some(venv) = std::env::var_os("BOSUN_TEST_VENV").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(venv).join("bin/moto_server");
        if is_executable(&p) {
            return Ok(p);
        }
        bail!(
            "moto_server not found at {} (BOSUN_TEST_VENV is set): {INSTALL_HINT}",
            p.display()
        );
    }
    if let Some(home) = std::env::var_os("HOME") {
        let p = PathBuf::from(home).join(".cache/bosun/venv/bin/moto_server");
        if is_executable(&p) {
            return Ok(p);
        }
    }
    crate::process::find_program("moto_server", &[], INSTALL_HINT)
        .context("moto_server not in $HOME/.cache/bosun/venv either")
}

//! Running programs: captured output (capped), exit code, and no stray processes. Every child
//! process bosund starts is started here: [`run`] for a program whose output is collected,
//! [`Streaming`] for one whose stdin or stdout is a stream (a dump, a restore, `journalctl
//! --follow`), [`run_blocking`] for a destructor that has no runtime.
//!
//! Each program runs in its own process group. If the future running it, or the [`Streaming`]
//! handle, is dropped (a step's `timeout` fired, the run was cancelled) the whole group is
//! killed, so a shell line's children do not outlive the step.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;

use anyhow::Context;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use bosun_model::event::CommandOutput;

/// Most bytes of stdout and of stderr kept; the rest is read and dropped so the program never
/// blocks on a full pipe, and a marker says how much was cut.
pub const OUTPUT_CAP: usize = 1 << 20;

/// Kills a process group when dropped, unless disarmed after the program was reaped.
struct GroupGuard(Option<Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // The group may be gone already; there is nothing to do about an error here.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

/// Runs `argv` (program and arguments) with `cwd` and extra `env`, stdin closed, and returns
/// what it printed and its exit code. Errors only when the program cannot be started.
pub async fn run(
    argv: &[String],
    cwd: Option<&Path>,
    env: &BTreeMap<String, String>,
) -> anyhow::Result<CommandOutput> {
    let (program, args) = argv
        .split_first()
        .context("empty command: nothing to run")?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().with_context(|| match cwd {
        Some(dir) => format!("starting {program:?} in {}", dir.display()),
        None => format!("starting {program:?}"),
    })?;
    let mut guard = GroupGuard(
        child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw),
    );
    let stdout = child
        .stdout
        .take()
        .context("child stdout was not captured")?;
    let stderr = child
        .stderr
        .take()
        .context("child stderr was not captured")?;
    let (out, err, status) = tokio::join!(read_capped(stdout), read_capped(stderr), child.wait());
    let status = status.with_context(|| format!("waiting for {program:?}"))?;
    guard.0 = None;
    Ok(CommandOutput {
        stdout: out.context("reading stdout")?,
        stderr: err.context("reading stderr")?,
        rc: status
            .code()
            .unwrap_or_else(|| -status.signal().unwrap_or(1)),
    })
}

/// Like [`run`], blocking the thread, for cleanup from a destructor where no runtime may be
/// running. The child is not put in a group of its own: it is waited for here.
pub fn run_blocking(
    argv: &[String],
    env: &BTreeMap<String, String>,
) -> anyhow::Result<CommandOutput> {
    let (program, args) = argv
        .split_first()
        .context("empty command: nothing to run")?;
    let out = std::process::Command::new(program)
        .args(args)
        .envs(env)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {program}"))?;
    let keep = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(OUTPUT_CAP)]).into_owned();
    Ok(CommandOutput {
        stdout: keep(&out.stdout),
        stderr: keep(&out.stderr),
        rc: out
            .status
            .code()
            .unwrap_or_else(|| -out.status.signal().unwrap_or(1)),
    })
}

/// Kept of a streaming program's stderr, for its error message.
pub const STREAM_STDERR_CAP: usize = 64 * 1024;

/// What a streaming program's stdin and stdout are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipe {
    /// Closed (`/dev/null`).
    Null,
    /// A pipe to this process, taken with [`Streaming::take_stdin`] / [`Streaming::take_stdout`]
    /// (blocking files) or [`Streaming::take_async_stdout`].
    Piped,
}

impl Pipe {
    fn stdio(self) -> Stdio {
        match self {
            Pipe::Null => Stdio::null(),
            Pipe::Piped => Stdio::piped(),
        }
    }
}

/// A program whose stdin or stdout is a stream; its stderr is collected (capped) for its
/// error. The process group is killed when this is dropped before [`wait`](Self::wait)
/// finished.
pub struct Streaming {
    program: String,
    child: tokio::process::Child,
    pgid: Option<Pid>,
    stderr: Option<tokio::task::JoinHandle<String>>,
}

/// How a streaming program ended.
#[derive(Debug)]
pub struct Exit {
    /// Exit code; negative: killed by that signal.
    pub code: i32,
    /// Its stderr, the first [`STREAM_STDERR_CAP`] bytes.
    pub stderr: String,
}

impl Exit {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

impl Streaming {
    /// Starts `argv` with extra `env` in its own process group. Must be called inside a tokio
    /// runtime (stderr is read by a task).
    pub fn spawn(
        argv: &[String],
        env: &BTreeMap<String, String>,
        stdin: Pipe,
        stdout: Pipe,
    ) -> anyhow::Result<Streaming> {
        let (program, args) = argv.split_first().context("empty command")?;
        let mut child = Command::new(program)
            .args(args)
            .envs(env)
            .stdin(stdin.stdio())
            .stdout(stdout.stdio())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {program}: is it installed and on PATH?"))?;
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        let stderr = child.stderr.take().map(|mut err| {
            tokio::spawn(async move {
                let mut kept = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let room = STREAM_STDERR_CAP.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
                String::from_utf8_lossy(&kept).into_owned()
            })
        });
        Ok(Streaming {
            program: program.clone(),
            child,
            pgid,
            stderr,
        })
    }

    /// The program's name, for messages.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// The child's stdout as a blocking file (for a compressor thread).
    pub fn take_stdout(&mut self) -> anyhow::Result<std::fs::File> {
        let out = self
            .child
            .stdout
            .take()
            .context("stdout was not captured")?;
        Ok(std::fs::File::from(out.into_owned_fd()?))
    }

    /// The child's stdout for async reading (`journalctl --follow`).
    pub fn take_async_stdout(&mut self) -> anyhow::Result<tokio::process::ChildStdout> {
        self.child.stdout.take().context("stdout was not captured")
    }

    /// The child's stdin as a blocking file (for a decompressor thread).
    pub fn take_stdin(&mut self) -> anyhow::Result<std::fs::File> {
        let inp = self.child.stdin.take().context("stdin was not captured")?;
        Ok(std::fs::File::from(inp.into_owned_fd()?))
    }

    /// Kills the process group now.
    pub fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }

    /// Waits for the program to exit and returns its code and stderr (trimmed).
    pub async fn wait(mut self) -> anyhow::Result<Exit> {
        let status = self
            .child
            .wait()
            .await
            .with_context(|| format!("waiting for {}", self.program))?;
        // Reaped: the group id may be reused from now on, so never signal it again.
        self.pgid = None;
        let stderr = match self.stderr.take() {
            Some(h) => h.await.unwrap_or_default(),
            None => String::new(),
        };
        Ok(Exit {
            code: status
                .code()
                .unwrap_or_else(|| -status.signal().unwrap_or(1)),
            stderr: stderr.trim().to_string(),
        })
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn read_capped(mut r: impl AsyncRead + Unpin) -> std::io::Result<String> {
    let mut kept = Vec::new();
    let mut dropped = 0usize;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        let room = OUTPUT_CAP.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
        dropped += n.saturating_sub(room);
    }
    let mut s = String::from_utf8_lossy(&kept).into_owned();
    if dropped > 0 {
        s.push_str(&format!("\n[bosun: {dropped} more bytes not kept]"));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(line: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), line.into()]
    }

    #[tokio::test]
    async fn captures_output_and_exit_code() {
        let out = run(
            &sh("echo out; echo err >&2; exit 3"),
            None,
            &BTreeMap::new(),
        )
        .await
        .unwrap();
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert_eq!(out.rc, 3);
    }

    #[tokio::test]
    async fn caps_output_without_blocking_the_program() {
        let out = run(&sh("head -c 3000000 /dev/zero"), None, &BTreeMap::new())
            .await
            .unwrap();
        assert_eq!(out.rc, 0);
        assert!(out.stdout.ends_with(&format!(
            "[bosun: {} more bytes not kept]",
            3_000_000 - OUTPUT_CAP
        )));
    }

    #[tokio::test]
    async fn dropping_the_future_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let line = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let argv = sh(&line);
        let env = BTreeMap::new();
        let mut fut = Box::pin(run(&argv, None, &env));
        // Poll until the grandchild has written its pid, then drop the future.
        loop {
            tokio::select! {
                _ = &mut fut => panic!("finished early"),
                () = tokio::task::yield_now() => {}
            }
            if std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n')) {
                break;
            }
        }
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        drop(fut);
        // killpg delivered SIGKILL synchronously; wait for the kernel to reap or mark it.
        let gone = (0..200).any(|_| {
            let alive = nix::sys::signal::kill(Pid::from_raw(pid), None).is_ok()
                && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z "));
            if alive {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            !alive
        });
        assert!(gone, "grandchild {pid} survived");
    }
}

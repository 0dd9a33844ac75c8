//! Running programs: captured output (capped), exit code, and no stray processes.
//!
//! Each program runs in its own process group. If the future running it is dropped (a step's
//! `timeout` fired, the run was cancelled) the whole group is killed, so a shell line's
//! children do not outlive the step.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;

use anyhow::Context;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::steps::CommandOutput;

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

//! Running programs: captured output (capped), exit code, and no stray processes. Every child
//! process bosund starts is started here: [`run`] for a program whose output is collected,
//! [`Streaming`] for one whose stdin or stdout is a stream (a dump, a restore, `journalctl
//! --follow`), [`run_blocking`] for a destructor that has no runtime.
//!
//! Each program runs in its own process group. If the future running it, or the [`Streaming`]
//! handle, is dropped (a step's `timeout` fired, the run was cancelled) the whole group is
//! killed, so a shell line's children do not outlive the step.
//!
//! Error text has one rule, kept here: a message quotes a failed program's output from its
//! end, where the reason is, at most [`MESSAGE_QUOTE_CAP`] bytes, with a note of how much
//! was cut ([`quote_end`]). Collected stderr ([`run`]) and a streaming program's stderr keep
//! their end too; collected stdout keeps its start (it is the program's result).

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
/// blocks on a full pipe, and a marker says how much was cut (stdout keeps its first bytes,
/// stderr its last).
pub const OUTPUT_CAP: usize = 1 << 20;

/// Most bytes of a program's output an error message quotes ([`quote_end`]).
pub const MESSAGE_QUOTE_CAP: usize = 3 * 1024;

/// The end of `text` (a failed program's output, trimmed) for an error message: at most
/// [`MESSAGE_QUOTE_CAP`] bytes, starting at a line boundary when one is near, after a note of
/// how many bytes before it are not shown. `already_cut` counts bytes the caller dropped from
/// the start before (a capped stream), so the note gives the whole amount.
pub fn quote_end(text: &str, already_cut: usize) -> String {
    let text = text.trim();
    let mut start = text.len().saturating_sub(MESSAGE_QUOTE_CAP);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    // Start at a whole line when one begins within the first quarter of what is kept.
    if start > 0
        && let Some(nl) = text[start..].find('\n')
        && nl < MESSAGE_QUOTE_CAP / 4
    {
        start += nl + 1;
    }
    let cut = already_cut + start;
    if cut == 0 {
        text.to_string()
    } else {
        format!("[bosun: {cut} earlier bytes not shown] {}", &text[start..])
    }
}

/// A step's failure that carries a program's whole (capped) output besides its message. The
/// message quotes only what may be shown ([`quote_end`], or less for tools that echo data);
/// the engine hands `output` to `register` (never for a `no_log` step) and to nothing else:
/// not to events, the journal or the API.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failed {
    /// What the step reports.
    pub message: String,
    /// What `register` sees as stdout, stderr and rc.
    pub output: CommandOutput,
}

/// Replaces this process with the program at `path`, given this process's own arguments
/// and environment (`execv`): the PID stays, so systemd sees the same main process. Returns
/// only when the exec failed.
pub fn reexec(path: &Path) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| path.as_os_str().to_owned());
    std::process::Command::new(path)
        .arg0(argv0)
        .args(args)
        .exec()
}

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
    let (out, err, status) = tokio::join!(
        read_capped(stdout),
        read_end_capped(stderr, OUTPUT_CAP),
        child.wait()
    );
    let status = status.with_context(|| format!("waiting for {program:?}"))?;
    guard.0 = None;
    Ok(CommandOutput {
        stdout: out.context("reading stdout")?,
        stderr: err.context("reading stderr").map(|(kept, cut)| {
            if cut == 0 {
                kept
            } else {
                format!("[bosun: {cut} earlier bytes not kept]\n{kept}")
            }
        })?,
        rc: status
            .code()
            .unwrap_or_else(|| -status.signal().unwrap_or(1)),
    })
}

/// Runs `argv` (no shell, stdin closed) and fails unless it exits 0, quoting the end of its
/// stderr (or stdout when stderr is empty): for the system tools a step drives (`useradd`,
/// `sysctl`, `mount`), whose output is only interesting when they fail.
pub async fn run_ok(argv: &[String]) -> anyhow::Result<CommandOutput> {
    let out = run(argv, None, &BTreeMap::new()).await?;
    if out.rc != 0 {
        let said = if out.stderr.trim().is_empty() {
            &out.stdout
        } else {
            &out.stderr
        };
        anyhow::bail!(
            "`{}` failed (exit code {}): {}",
            argv.join(" "),
            out.rc,
            quote_end(said, 0)
        );
    }
    Ok(out)
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
    let keep_end =
        |b: &[u8]| String::from_utf8_lossy(&b[b.len().saturating_sub(OUTPUT_CAP)..]).into_owned();
    Ok(CommandOutput {
        stdout: keep(&out.stdout),
        stderr: keep_end(&out.stderr),
        rc: out
            .status
            .code()
            .unwrap_or_else(|| -out.status.signal().unwrap_or(1)),
    })
}

/// Kept of a streaming program's stderr (its last bytes): what `register` may see of it; an
/// error message quotes less ([`quote_end`]).
pub const STREAM_STDERR_CAP: usize = 64 * 1024;

/// Asked of the kernel for a streaming program's stdout pipe (the default is 64 KiB): a dump
/// tool then writes on while its reader is busy compressing. Best effort: an unprivileged
/// process may be held to a smaller `fs.pipe-max-size`.
pub const STREAM_PIPE_SIZE: usize = 1 << 20;

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
    stderr: Option<tokio::task::JoinHandle<(String, usize)>>,
}

/// How a streaming program ended.
#[derive(Debug)]
pub struct Exit {
    /// Exit code; negative: killed by that signal.
    pub code: i32,
    /// Its stderr, trimmed: the last [`STREAM_STDERR_CAP`] bytes.
    pub stderr: String,
    /// Bytes of stderr before those kept, dropped.
    pub stderr_cut: usize,
}

impl Exit {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// The end of its stderr for an error message ([`quote_end`]).
    pub fn stderr_for_message(&self) -> String {
        quote_end(&self.stderr, self.stderr_cut)
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
        let stderr = child.stderr.take().map(|err| {
            tokio::spawn(async move {
                read_end_capped(err, STREAM_STDERR_CAP)
                    .await
                    .unwrap_or_default()
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
        let file = std::fs::File::from(out.into_owned_fd()?);
        // Best effort (see STREAM_PIPE_SIZE): a smaller pipe only costs overlap.
        let _ = nix::fcntl::fcntl(
            &file,
            nix::fcntl::FcntlArg::F_SETPIPE_SZ(STREAM_PIPE_SIZE as nix::libc::c_int),
        );
        Ok(file)
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
        let (stderr, stderr_cut) = match self.stderr.take() {
            Some(h) => h.await.unwrap_or_default(),
            None => (String::new(), 0),
        };
        Ok(Exit {
            code: status
                .code()
                .unwrap_or_else(|| -status.signal().unwrap_or(1)),
            stderr: stderr.trim().to_string(),
            stderr_cut,
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

/// Reads `r` to its end keeping its last `cap` bytes (at a character boundary); returns them
/// and how many bytes before them were dropped. Memory stays within twice `cap`.
async fn read_end_capped(
    mut r: impl AsyncRead + Unpin,
    cap: usize,
) -> std::io::Result<(String, usize)> {
    let mut kept = Vec::new();
    let mut cut = 0usize;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * cap {
            let over = kept.len() - cap;
            kept.drain(..over);
            cut += over;
        }
    }
    if kept.len() > cap {
        let over = kept.len() - cap;
        kept.drain(..over);
        cut += over;
    }
    // Do not start inside a UTF-8 sequence (continuation bytes are 0b10xx_xxxx).
    let skip = kept
        .iter()
        .take(3)
        .take_while(|b| (**b & 0xC0) == 0x80)
        .count();
    if skip > 0 && cut > 0 {
        kept.drain(..skip);
        cut += skip;
    }
    Ok((String::from_utf8_lossy(&kept).into_owned(), cut))
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

    #[test]
    fn a_message_quotes_the_end_of_the_output_with_a_note_of_the_cut() {
        assert_eq!(quote_end("  short\n", 0), "short");
        assert_eq!(
            quote_end("short", 10),
            "[bosun: 10 earlier bytes not shown] short"
        );
        let long = format!(
            "{}ERROR 1064 at line 9: the reason",
            "row 1, 'a value'\n".repeat(1000)
        );
        let q = quote_end(&long, 0);
        assert!(q.len() <= MESSAGE_QUOTE_CAP + 64, "{}", q.len());
        assert!(q.ends_with("ERROR 1064 at line 9: the reason"));
        let cut = long.len() - (q.len() - q.find("] ").unwrap() - 2);
        assert!(
            q.starts_with(&format!("[bosun: {cut} earlier bytes not shown] row 1")),
            "{q}"
        );
        // Never split inside a character.
        let wide = "é".repeat(MESSAGE_QUOTE_CAP);
        assert!(quote_end(&wide, 0).ends_with('é'));
    }

    #[tokio::test]
    async fn collected_stderr_keeps_its_end() {
        let out = run(
            &sh("head -c 1100000 /dev/zero | tr '\\0' x >&2; echo; echo 'the reason' >&2; exit 1"),
            None,
            &BTreeMap::new(),
        )
        .await
        .unwrap();
        assert!(out.stderr.trim_end().ends_with("the reason"));
        assert!(out.stderr.starts_with("[bosun: "), "{}", &out.stderr[..40]);
        assert!(out.stderr.len() <= OUTPUT_CAP + 64);
    }

    #[tokio::test]
    async fn streaming_keeps_the_end_of_stderr_and_a_large_stdout_pipe() {
        // 200 KiB of statement echo, then the error: the end is kept, not the start.
        let line = "for i in $(seq 1 4000); do echo \"INSERT INTO t VALUES ($i,'customer $i')\" >&2; done; echo 'ERROR 1064 (42000) at line 7: bad' >&2; exit 1";
        let mut child =
            Streaming::spawn(&sh(line), &BTreeMap::new(), Pipe::Null, Pipe::Piped).unwrap();
        let stdout = child.take_stdout().unwrap();
        let size = nix::fcntl::fcntl(&stdout, nix::fcntl::FcntlArg::F_GETPIPE_SZ).unwrap();
        let max: usize = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        if max >= STREAM_PIPE_SIZE || nix::unistd::geteuid().is_root() {
            assert_eq!(size as usize, STREAM_PIPE_SIZE);
        }
        let exit = child.wait().await.unwrap();
        assert_eq!(exit.code, 1);
        assert!(exit.stderr.ends_with("ERROR 1064 (42000) at line 7: bad"));
        assert!(exit.stderr.len() <= STREAM_STDERR_CAP);
        assert!(exit.stderr_cut > 0);
        let msg = exit.stderr_for_message();
        assert!(msg.len() <= MESSAGE_QUOTE_CAP + 64, "{}", msg.len());
        assert!(msg.ends_with("ERROR 1064 (42000) at line 7: bad"));
        assert!(msg.starts_with("[bosun: "), "{msg}");
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

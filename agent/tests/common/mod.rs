//! What the integration tests share: a sandbox directory per test, running the real `bosund`
//! binary against it, and reading its JSON Lines events back as [`RunEvent`]s.
//!
//! Every path a test touches lives inside its own [`Sandbox`] (a fresh temporary directory),
//! and every run gets `--state-dir` inside it, so tests run in parallel without sharing state.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

pub mod s3;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bosun_model::event::{RunEvent, StepReport, StepStatus, Summary};

/// The `bosund` binary built by cargo for this test run.
pub const BOSUND: &str = env!("CARGO_BIN_EXE_bosund");

/// In playbooks and files written through a [`Sandbox`], this text becomes the sandbox's path.
pub const ROOT: &str = "@ROOT@";

/// Name of the state directory (the journal) inside a sandbox; [`Sandbox::snapshot`] skips it.
const STATE: &str = ".state";

/// A temporary directory owned by one test; removed when dropped.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    /// A fresh, empty sandbox.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("creating a temporary directory"),
        }
    }

    /// The sandbox's absolute path.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `rel` inside the sandbox.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    /// The journal's directory, passed as `--state-dir`.
    pub fn state_dir(&self) -> PathBuf {
        self.path(STATE)
    }

    /// `text` with every [`ROOT`] replaced by the sandbox's path.
    pub fn expand(&self, text: &str) -> String {
        text.replace(ROOT, &self.root().display().to_string())
    }

    /// Writes `text` (with [`ROOT`] expanded) to `rel`, creating parent directories.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.path(rel);
        fs::create_dir_all(
            path.parent()
                .expect("a path inside the sandbox has a parent"),
        )
        .unwrap();
        fs::write(&path, self.expand(text)).unwrap();
        path
    }

    /// Writes a playbook as `playbook.toml` at the sandbox's top.
    pub fn playbook(&self, text: &str) -> PathBuf {
        self.write("playbook.toml", text)
    }

    /// A `bosund` command with this sandbox's state directory and a deterministic environment:
    /// no inherited `BOSUN_*` settings, and an IMDS endpoint that refuses at once (so facts
    /// gathering is fast and has no `ec2` part on any machine).
    pub fn bosund(&self) -> Command {
        let mut cmd = self.command(BOSUND);
        cmd.arg("--state-dir").arg(self.state_dir());
        cmd
    }

    /// `program` with the environment of [`Sandbox::bosund`], run in the sandbox.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("BOSUN_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("BOSUN_IMDS_ENDPOINT", "http://127.0.0.1:1");
        cmd.current_dir(self.root());
        cmd.stdin(Stdio::null());
        cmd
    }

    /// `bosund apply PLAYBOOK --output json ARGS...`, its events parsed and checked.
    pub fn apply(&self, playbook: &Path, args: &[&str]) -> Run {
        let mut cmd = self.bosund();
        cmd.arg("apply")
            .arg(playbook)
            .args(["--output", "json"])
            .args(args);
        Run::from_command(cmd, None)
    }

    /// `bosund apply - --output json ARGS...` with the playbook text (expanded) on stdin.
    pub fn apply_stdin(&self, text: &str, args: &[&str]) -> Run {
        let mut cmd = self.bosund();
        cmd.args(["apply", "-", "--output", "json"]).args(args);
        Run::from_command(cmd, Some(self.expand(text)))
    }

    /// `bosund apply PLAYBOOK ARGS...` with human output: (exit code, stdout, stderr).
    pub fn apply_human(&self, playbook: &Path, args: &[&str]) -> (i32, String, String) {
        let out = self
            .bosund()
            .arg("apply")
            .arg(playbook)
            .args(args)
            .output()
            .expect("running bosund");
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).expect("bosund prints UTF-8");
        (
            out.status.code().expect("bosund exited normally"),
            text(&out.stdout),
            text(&out.stderr),
        )
    }

    /// `bosund history --output json ARGS...`, parsed.
    pub fn history(&self, args: &[&str]) -> serde_json::Value {
        let out = self
            .bosund()
            .args(["history", "--output", "json"])
            .args(args)
            .output()
            .expect("running bosund");
        assert!(
            out.status.success(),
            "bosund history failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        json_lines(&out.stdout)
    }

    /// Everything under the sandbox except the journal: path → what is there.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, Entry> {
        let mut all = BTreeMap::new();
        walk(self.root(), &mut all);
        all.retain(|p, _| !p.starts_with(self.state_dir()));
        all
    }
}

/// What a path holds, as [`Sandbox::snapshot`] records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory and its permission bits.
    Dir(u32),
    /// A regular file, its permission bits and content.
    File(u32, Vec<u8>),
    /// A symlink and its target.
    Link(PathBuf),
}

fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = fs::symlink_metadata(&path).unwrap();
        let bits = meta.mode() & 0o7777;
        if meta.file_type().is_symlink() {
            out.insert(path.clone(), Entry::Link(fs::read_link(&path).unwrap()));
        } else if meta.is_dir() {
            out.insert(path.clone(), Entry::Dir(bits));
            walk(&path, out);
        } else {
            out.insert(path.clone(), Entry::File(bits, fs::read(&path).unwrap()));
        }
    }
}

/// One finished `bosund apply --output json`.
#[derive(Debug)]
pub struct Run {
    /// The exit code.
    pub code: i32,
    /// Every event, in order.
    pub events: Vec<RunEvent>,
    /// What it wrote to stderr.
    pub stderr: String,
    /// Wall time of the whole process.
    pub elapsed: Duration,
}

impl Run {
    /// Runs `cmd` (feeding `stdin` when given), parses every stdout line as a [`RunEvent`] and
    /// checks the stream's shape: `run_started` first, `summary` last and equal to the counts
    /// of the `step_finished` events, each of which follows its own `step_started`.
    pub fn from_command(mut cmd: Command, stdin: Option<String>) -> Run {
        let started = Instant::now();
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().expect("starting bosund");
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(text.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let elapsed = started.elapsed();
        let stdout = String::from_utf8(out.stdout).expect("bosund prints UTF-8");
        let stderr = String::from_utf8(out.stderr).expect("bosund prints UTF-8");
        let events: Vec<RunEvent> = stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("not a RunEvent ({e}): {l}\nstderr: {stderr}"))
            })
            .collect();
        let run = Run {
            code: out.status.code().expect("bosund exited normally"),
            events,
            stderr,
            elapsed,
        };
        run.check_shape();
        run
    }

    fn check_shape(&self) {
        if let [RunEvent::Invalid { .. }] = self.events.as_slice() {
            return;
        }
        assert!(
            matches!(self.events.first(), Some(RunEvent::RunStarted { .. })),
            "first event is not run_started: {self:#?}"
        );
        let Some(RunEvent::Summary(summary)) = self.events.last() else {
            panic!("last event is not the summary: {self:#?}");
        };
        let mut counted = Summary::default();
        let mut open: Option<usize> = None;
        for e in &self.events {
            match e {
                RunEvent::StepStarted { index, .. } => {
                    assert_eq!(
                        open, None,
                        "step_started while another step is running: {self:#?}"
                    );
                    open = Some(*index);
                }
                RunEvent::StepFinished(r) => {
                    // `[secrets]`, `[vars]`, `[state]` and `[capacity]` failures are reported without a step_started.
                    if !["vars", "secrets", "state", "capacity"].contains(&r.action.as_str()) {
                        assert_eq!(
                            open.take(),
                            Some(r.index),
                            "step_finished without its step_started: {self:#?}"
                        );
                    }
                    counted.count(r.status);
                }
                _ => {}
            }
        }
        // A failure a block's `rescue` took over is reported failed, counted rescued.
        counted.failed -= summary.rescued;
        counted.rescued = summary.rescued;
        assert_eq!(&counted, summary, "summary does not match the step events");
    }

    /// The summary (the last event).
    pub fn summary(&self) -> Summary {
        match self.events.last() {
            Some(RunEvent::Summary(s)) => *s,
            _ => panic!("no summary: {self:#?}"),
        }
    }

    /// The `run_id` of `run_started`.
    pub fn run_id(&self) -> &str {
        match self.events.first() {
            Some(RunEvent::RunStarted { run_id, .. }) => run_id,
            _ => panic!("no run_started: {self:#?}"),
        }
    }

    /// Every `step_finished` report, in order.
    pub fn reports(&self) -> Vec<&StepReport> {
        self.events
            .iter()
            .filter_map(|e| match e {
                RunEvent::StepFinished(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    /// The report of the step (or handler) called `name`; panics listing the steps if none.
    pub fn step(&self, name: &str) -> &StepReport {
        let reports = self.reports();
        let found: Vec<_> = reports.iter().filter(|r| r.name == name).collect();
        match found.as_slice() {
            [one] => one,
            [] => panic!("no step {name:?} in this run: {:?}", self.statuses()),
            _ => panic!(
                "step {name:?} reported {} times: {:?}",
                found.len(),
                self.statuses()
            ),
        }
    }

    /// True when a step (or handler) called `name` was reported.
    pub fn ran(&self, name: &str) -> bool {
        self.reports().iter().any(|r| r.name == name)
    }

    /// (name, status) of every report, in order.
    pub fn statuses(&self) -> Vec<(String, StepStatus)> {
        self.reports()
            .iter()
            .map(|r| (r.name.clone(), r.status))
            .collect()
    }

    /// Asserts exit code 0 and no failed step, showing the whole run otherwise.
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.code == 0 && self.summary().failed == 0,
            "run failed: {self:#?}"
        );
        self
    }
}

/// Shorthand for a [`Summary`].
pub fn summary(ok: usize, changed: usize, failed: usize, skipped: usize) -> Summary {
    Summary {
        ok,
        changed,
        failed,
        skipped,
        rescued: 0,
    }
}

/// Permission bits of `path` (following symlinks).
pub fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
}

/// Content of `path` as text.
pub fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// True when something (even a dangling symlink) is at `path`.
pub fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// Sets the permission bits of `path`.
pub fn chmod(path: &Path, bits: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(bits)).unwrap();
}

/// Names of the entries of `dir`, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The three runs that show a playbook converges: `--check` on the fresh sandbox (asserted to
/// change nothing on disk and fail nothing), then a real run, then a second real run (asserted
/// to report nothing changed). Returns (check, first, second) for the caller's own assertions.
pub fn converge(sb: &Sandbox, playbook: &Path) -> (Run, Run, Run) {
    let before = sb.snapshot();
    let check = sb.apply(playbook, &["--check"]);
    check.assert_success();
    assert_eq!(
        sb.snapshot(),
        before,
        "--check changed the disk: {check:#?}"
    );
    let first = sb.apply(playbook, &[]);
    first.assert_success();
    let second = sb.apply(playbook, &[]);
    second.assert_success();
    assert_eq!(
        second.summary().changed,
        0,
        "second run changed something: {:?}",
        second.statuses()
    );
    (check, first, second)
}

/// `--output json` of a listing (JSON Lines: a record per line) as one array.
pub fn json_lines(stdout: &[u8]) -> serde_json::Value {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("{e}: {l:?} is not JSON"))
        })
        .collect()
}

/// The AWS SDK configuration for `moto` (us-east-1, moto's test credentials), loaded on `rt`:
/// what a test uses to look at or seed what a step left in moto.
pub fn moto_sdk_config(
    rt: &tokio::runtime::Runtime,
    moto: &bosun_harness::Moto,
) -> aws_config::SdkConfig {
    rt.block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(bosun_aws::https_client())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(moto.endpoint())
            .credentials_provider(aws_sdk_ssm::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .load(),
    )
}

/// A current-thread runtime for the SDK calls of a test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

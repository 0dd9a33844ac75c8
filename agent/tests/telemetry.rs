//! Telemetry end to end: the real `bosund run` ships files, CRI and journald-format logs and
//! host metrics to a real moto server; rotation both ways, kill -9, and an AWS outage.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_cloudwatchlogs::config::{Credentials, Region};
use bosun_harness::Moto;

const BOSUND: &str = env!("CARGO_BIN_EXE_bosund");
const GROUP: &str = "/bosun/test";

/// A `bosund run` over a directory that outlives it (restarts keep the journal).
struct Bosund {
    dir: PathBuf,
    child: Option<Child>,
    env: Vec<(String, String)>,
    starts: usize,
}

impl Bosund {
    /// Writes `agent.toml` (state and socket in `dir`, then `telemetry`) and starts bosund.
    fn start(dir: &Path, telemetry: &str, env: Vec<(String, String)>) -> Bosund {
        std::fs::create_dir_all(dir.join("playbooks")).unwrap();
        write_config(dir, telemetry);
        let mut b = Bosund {
            dir: dir.to_path_buf(),
            child: None,
            env,
            starts: 0,
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("bosund.log"))
            .unwrap();
        let child = Command::new(BOSUND)
            .arg("run")
            .arg("--config")
            .arg(self.dir.join("agent.toml"))
            .env_remove("BOSUN_STATE_DIR")
            .env("BOSUN_LOG", "info")
            // Hermetic AWS settings: only what the test gives (no ambient region or profile).
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .env_remove("AWS_PROFILE")
            .env_remove("BOSUN_IMDS_ENDPOINT")
            .env("AWS_CONFIG_FILE", self.dir.join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.dir.join("no-aws-credentials"),
            )
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting bosund run");
        self.child = Some(child);
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// kill -9 and reap.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for bosund to exit (after SIGTERM); panics past `limit`.
    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "bosund did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("bosund.log")).unwrap_or_default()
    }

    /// GET over the API socket (HTTP/1.0: the server closes after the answer).
    fn get(&self, path: &str) -> String {
        let sock = self.dir.join("run/api.sock");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut s) = std::os::unix::net::UnixStream::connect(&sock) {
                write!(s, "GET {path} HTTP/1.0\r\nHost: bosund\r\n\r\n").unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).unwrap();
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "the API socket never answered; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `agent.toml` in `dir`: state there, `telemetry` from line 5 (it may start with top-level
/// keys), then the socket there.
fn write_config(dir: &Path, telemetry: &str) {
    std::fs::write(
        dir.join("agent.toml"),
        format!(
            "playbooks_dir = \"{d}/playbooks\"\nstate_dir = \"{d}/state\"\nshutdown_timeout = \"5s\"\n\n{telemetry}\n\n[api]\nsocket = \"{d}/run/api.sock\"\n",
            d = dir.display()
        ),
    )
    .unwrap();
}

impl Drop for Bosund {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A CloudWatch Logs and CloudWatch client on moto.
struct Aws {
    rt: tokio::runtime::Runtime,
    logs: aws_sdk_cloudwatchlogs::Client,
    cw: aws_sdk_cloudwatch::Client,
}

impl Aws {
    fn new(moto: &Moto) -> Aws {
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(
                aws_sdk_cloudwatchlogs::config::SharedCredentialsProvider::new(Credentials::new(
                    "test", "test", None, None, "test",
                )),
            )
            .endpoint_url(moto.endpoint())
            .http_client(bosun_aws::https_client())
            .build();
        Aws {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            logs: aws_sdk_cloudwatchlogs::Client::new(&sdk),
            cw: aws_sdk_cloudwatch::Client::new(&sdk),
        }
    }

    /// Every message of a stream, oldest first (empty when the stream does not exist).
    fn messages(&self, group: &str, stream: &str) -> Vec<String> {
        self.rt.block_on(async {
            let mut out = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let res = self
                    .logs
                    .get_log_events()
                    .log_group_name(group)
                    .log_stream_name(stream)
                    .start_from_head(true)
                    .set_next_token(token.clone())
                    .send()
                    .await;
                let Ok(page) = res else { return Vec::new() };
                let events = page.events();
                out.extend(
                    events
                        .iter()
                        .filter_map(|e| e.message().map(str::to_string)),
                );
                let next = page.next_forward_token().map(str::to_string);
                if events.is_empty() || next == token {
                    return out;
                }
                token = next;
            }
        })
    }

    fn streams(&self, group: &str) -> Vec<String> {
        self.rt.block_on(async {
            match self
                .logs
                .describe_log_streams()
                .log_group_name(group)
                .send()
                .await
            {
                Ok(o) => o
                    .log_streams()
                    .iter()
                    .filter_map(|s| s.log_stream_name().map(str::to_string))
                    .collect(),
                Err(_) => Vec::new(),
            }
        })
    }
}

/// Polls `f` until it returns `Some`, failing with `what` (and bosund's log) at the deadline.
fn wait_for<T>(limit: Duration, what: &str, b: &Bosund, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {limit:?}; bosund log:\n{}",
            tail(&b.log(), 60)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until `stream` holds at least `want.len()` events; on timeout says which line is
/// missing first.
fn wait_all(aws: &Aws, stream: &str, want: &[String], b: &Bosund) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = aws.messages(GROUP, stream);
        if got.len() >= want.len() {
            return got;
        }
        if Instant::now() > deadline {
            let have: std::collections::HashSet<&String> = got.iter().collect();
            let missing: Vec<&String> = want.iter().filter(|w| !have.contains(w)).take(3).collect();
            panic!(
                "{} of {} lines arrived; first missing: {missing:?}; bosund log:\n{}",
                got.len(),
                want.len(),
                tail(&b.log(), 40)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Equal sequences, or a short account of the first difference.
fn assert_same(got: &[String], want: &[String]) {
    if let Some(i) = (0..got.len().max(want.len())).find(|&i| got.get(i) != want.get(i)) {
        panic!(
            "{} lines received, {} written; first difference at {i}: got {:?}, want {:?}",
            got.len(),
            want.len(),
            got.get(i.saturating_sub(1)..(i + 3).min(got.len())),
            want.get(i.saturating_sub(1)..(i + 3).min(want.len()))
        );
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn line(i: usize) -> String {
    format!("line {i:07} {}", "x".repeat(40))
}

/// Appends lines `range` to `path` (created when missing).
fn append(path: &Path, range: std::ops::Range<usize>) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut buf = String::new();
    for i in range {
        buf.push_str(&line(i));
        buf.push('\n');
    }
    f.write_all(buf.as_bytes()).unwrap();
}

fn file_source(dir: &Path, extra: &str) -> String {
    format!(
        "[[logs]]\npath = \"{}/app/app.log\"\nlog_group = \"{GROUP}\"\nlog_stream = \"{{instance_id}}/{{file}}\"\ninstance_id = \"i-test\"\nflush_interval = \"200ms\"\nretention_days = 7\n{extra}\n",
        dir.display()
    )
}

fn env(moto: &Moto) -> Vec<(String, String)> {
    moto.env()
}

#[test]
fn file_lines_arrive_in_order_through_rename_and_copytruncate() {
    let moto = Moto::start().expect("moto");
    let aws = Aws::new(&moto);
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    let log = app.join("app.log");
    // The file that becomes app.log at the rotation has the lower inode of two made now:
    // bosund must not read files in inode order (the old one's last lines went after the new
    // one's first ones whenever the new inode sorted first).
    let (x, y) = (app.join("x"), app.join("y"));
    std::fs::write(&x, "").unwrap();
    std::fs::write(&y, "").unwrap();
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let (spare, first) = if ino(&x) < ino(&y) { (x, y) } else { (y, x) };
    std::fs::rename(&first, &log).unwrap();
    append(&log, 0..2000);
    let b = Bosund::start(dir.path(), &file_source(dir.path(), ""), env(&moto));
    let stream = "i-test/app.log";
    wait_for(
        Duration::from_secs(60),
        "the first lines in CloudWatch",
        &b,
        || (aws.messages(GROUP, stream).len() >= 1000).then_some(()),
    );
    // Rotation by rename mid-stream: the writer keeps writing to the renamed file a little,
    // then reopens a new one (as a daemon does after logrotate's postrotate).
    append(&log, 2000..3000);
    std::fs::rename(&log, app.join("app.log.1")).unwrap();
    append(&app.join("app.log.1"), 3000..3500);
    std::fs::rename(&spare, &log).unwrap();
    append(&log, 3500..5000);
    // Rotation by copytruncate mid-stream: once bosund reads the new file, more lines are
    // appended and at once copied and truncated, so some of them are likely read only from
    // the copy.
    wait_for(
        Duration::from_secs(60),
        "lines of the new file in CloudWatch",
        &b,
        || (aws.messages(GROUP, stream).len() >= 4000).then_some(()),
    );
    append(&log, 5000..6000);
    std::fs::copy(&log, app.join("app.log.2")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, 6000..7000);
    let want: Vec<String> = (0..7000).map(line).collect();
    let got = wait_all(&aws, stream, &want, &b);
    assert_same(&got, &want);
    assert!(
        b.log().contains("file truncated"),
        "the copytruncate was seen as such"
    );
    assert_eq!(
        aws.streams(GROUP),
        vec![stream.to_string()],
        "one stream, named by the template"
    );
    let retention = aws.rt.block_on(async {
        aws.logs
            .describe_log_groups()
            .log_group_name_prefix(GROUP)
            .send()
            .await
            .unwrap()
            .log_groups()[0]
            .retention_in_days()
    });
    assert_eq!(
        retention,
        Some(7),
        "the group bosund created has the configured retention"
    );
    let metrics = b.get("/metrics");
    assert!(
        metrics.contains("bosun_log_events_shipped_total 7000"),
        "{metrics}"
    );
}

#[test]
fn multiline_events_and_filters_are_applied() {
    let moto = Moto::start().expect("moto");
    let aws = Aws::new(&moto);
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    let t = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string();
    std::fs::write(
        app.join("app.log"),
        format!("{t} ERROR boom\n  at a()\n  at b()\n{t} DEBUG healthz\n{t} INFO done\n"),
    )
    .unwrap();
    let extra = "multiline_start = '^\\d{4}-'\ntimestamp_regex = '^(\\S+ \\S+)'\ntimestamp_format = \"%Y-%m-%d %H:%M:%S\"\nexclude = [\"healthz\"]";
    let b = Bosund::start(dir.path(), &file_source(dir.path(), extra), env(&moto));
    let got = wait_for(Duration::from_secs(60), "two events", &b, || {
        let got = aws.messages(GROUP, "i-test/app.log");
        (got.len() >= 2).then_some(got)
    });
    assert_eq!(
        got,
        vec![
            format!("{t} ERROR boom\n  at a()\n  at b()"),
            format!("{t} INFO done")
        ]
    );
}

#[test]
fn cri_and_journald_logs_arrive_joined_and_named_by_pod() {
    let moto = Moto::start().expect("moto");
    let aws = Aws::new(&moto);
    let dir = tempfile::tempdir().unwrap();
    let pods = dir.path().join("pods/web_api-7d9f_0b1c-uid/server");
    std::fs::create_dir_all(&pods).unwrap();
    let t = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string();
    std::fs::write(
        pods.join("0.log"),
        format!(
            "{t}.000000001Z stdout F hello\n{t}.5Z stderr P part one, \n{t}.6Z stderr F part two\n"
        ),
    )
    .unwrap();
    // journalctl stand-in: prints journal JSON entries after --after-cursor, then follows.
    let entries = dir.path().join("journal.jsonl");
    let mut j = String::new();
    let now_us = chrono::Utc::now().timestamp_micros() as u64 - 60_000_000;
    for i in 0..50 {
        j.push_str(&format!(
            "{{\"__CURSOR\":\"c{i}\",\"__REALTIME_TIMESTAMP\":\"{}\",\"MESSAGE\":\"entry {i}\",\"SYSLOG_IDENTIFIER\":\"k3s\",\"_PID\":\"7\"}}\n",
            now_us + i as u64 * 1000
        ));
    }
    std::fs::write(&entries, j).unwrap();
    let fake = dir.path().join("journalctl");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nafter=\"\"\nfor a in \"$@\"; do case \"$a\" in --after-cursor=*) after=\"${{a#--after-cursor=}}\";; esac; done\necho \"$@\" >> {d}/journalctl.args\nif [ -z \"$after\" ]; then cat {e}; else awk -v c=\"\\\"__CURSOR\\\":\\\"$after\\\"\" 'found {{print}} index($0, c) {{found=1}}' {e}; fi\nexec sleep 3600\n",
            d = dir.path().display(),
            e = entries.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let telemetry = format!(
        "[[logs]]\nkind = \"cri\"\npath = \"{}/pods/*/*/*.log\"\nlog_group = \"{GROUP}\"\nlog_stream = \"{{namespace}}/{{pod}}/{{container}}\"\nflush_interval = \"200ms\"\n\n[[logs]]\nkind = \"journald\"\nlog_group = \"{GROUP}\"\nlog_stream = \"journal\"\nflush_interval = \"200ms\"\n",
        dir.path().display()
    );
    let mut env = env(&moto);
    env.push(("BOSUN_JOURNALCTL".into(), fake.display().to_string()));
    let mut b = Bosund::start(dir.path(), &telemetry, env);
    let got = wait_for(
        Duration::from_secs(60),
        "the container's two events",
        &b,
        || {
            let got = aws.messages(GROUP, "web/api-7d9f/server");
            (got.len() >= 2).then_some(got)
        },
    );
    assert_eq!(
        got,
        vec!["hello".to_string(), "part one, part two".to_string()]
    );
    let journal = wait_for(Duration::from_secs(60), "50 journal entries", &b, || {
        let got = aws.messages(GROUP, "journal");
        (got.len() >= 50).then_some(got)
    });
    assert_eq!(journal.len(), 50);
    assert_eq!(journal[0], "k3s[7]: entry 0");
    assert_eq!(journal[49], "k3s[7]: entry 49");
    // Stopped and started again, it resumes after the last accepted cursor.
    b.signal(nix::sys::signal::Signal::SIGTERM);
    b.wait_exit(Duration::from_secs(30));
    b.spawn();
    let args = dir.path().join("journalctl.args");
    let resumed = wait_for(
        Duration::from_secs(30),
        "journalctl started again",
        &b,
        || {
            let a = std::fs::read_to_string(&args).unwrap_or_default();
            (a.lines().count() >= 2).then_some(a)
        },
    );
    assert!(
        resumed.lines().next().unwrap().contains("--boot"),
        "{resumed}"
    );
    assert!(
        resumed
            .lines()
            .nth(1)
            .unwrap()
            .contains("--after-cursor=c49"),
        "the second journalctl starts after the last accepted entry: {resumed}"
    );
}

#[test]
fn every_line_survives_kill_9_during_writes_and_rotations() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    const TOTAL: usize = 200_000;
    const KILLS: usize = 5;
    let moto = Moto::start().expect("moto");
    let aws = Aws::new(&moto);
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    let log = app.join("app.log");
    let mut b = Bosund::start(dir.path(), &file_source(dir.path(), ""), env(&moto));
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (written, log, app) = (written.clone(), log.clone(), app.clone());
        std::thread::spawn(move || {
            for start in (0..TOTAL).step_by(1000) {
                append(&log, start..start + 1000);
                written.store(start + 1000, Ordering::SeqCst);
                if (start + 1000) % 30_000 == 0 {
                    std::fs::rename(&log, app.join(format!("app.log.{}", start + 1000))).unwrap();
                }
                // Pacing: the writes span the kills (a rate, not a synchronisation).
                std::thread::sleep(Duration::from_millis(40));
            }
        })
    };
    for k in 1..=KILLS {
        let at = k * TOTAL / (KILLS + 1);
        wait_for(
            Duration::from_secs(120),
            "the writer to progress",
            &b,
            || (written.load(Ordering::SeqCst) >= at).then_some(()),
        );
        b.kill9();
        b.spawn();
    }
    writer.join().unwrap();
    let want: Vec<String> = (0..TOTAL).map(line).collect();
    let deadline = Instant::now() + Duration::from_secs(240);
    let got = loop {
        let got = aws.messages(GROUP, "i-test/app.log");
        let unique: std::collections::HashSet<&String> = got.iter().collect();
        if unique.len() >= TOTAL {
            break got;
        }
        if Instant::now() >= deadline {
            let _ = std::fs::copy(
                b.dir.join("bosund.log"),
                std::env::temp_dir().join("bosun-crash-test.log"),
            );
        }
        assert!(
            Instant::now() < deadline,
            "{} of {TOTAL} distinct lines after {KILLS} kills; first missing: {:?}; log:\n{}",
            unique.len(),
            want.iter().find(|w| !unique.contains(w)),
            tail(&b.log(), 30)
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let unique: std::collections::HashSet<&String> = got.iter().collect();
    assert!(
        want.iter().all(|w| unique.contains(w)),
        "every line is in CloudWatch"
    );
    assert_eq!(unique.len(), TOTAL, "nothing but the written lines");
    let duplicates = got.len() - TOTAL;
    eprintln!("crash test: {TOTAL} lines, {KILLS} kills -9, {duplicates} duplicates");
    assert!(
        duplicates <= KILLS * 10_000,
        "at most one batch (10,000 events) sent twice per kill, got {duplicates} duplicates"
    );
}

#[test]
fn nothing_acknowledged_or_written_is_lost_through_an_outage_and_metrics_keep_their_time() {
    use nix::sys::signal::Signal;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    // The terms: CloudWatch and CloudWatch Logs gone for 30 s mid-stream.
    const OUTAGE: Duration = Duration::from_secs(30);
    let mut moto = Moto::start().expect("moto");
    let aws = Aws::new(&moto);
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    let log = app.join("app.log");
    let telemetry = format!(
        "{}\n[metrics]\ninterval = \"1s\"\ninstance_id = \"i-test\"\n",
        file_source(dir.path(), "")
    );
    let b = Bosund::start(dir.path(), &telemetry, env(&moto));
    let written = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (written, done, log) = (written.clone(), done.clone(), log.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !done.load(Ordering::SeqCst) {
                append(&log, n..n + 100);
                n += 100;
                written.store(n, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let stream = "i-test/app.log";
    wait_for(Duration::from_secs(60), "lines flowing", &b, || {
        (aws.messages(GROUP, stream).len() >= 2000).then_some(())
    });
    // Freeze bosund so no request is in flight, then read what moto acknowledged: moto's
    // restart loses its state, so this is the record of everything accepted before the
    // outage. Read until two reads agree (a request sent just before the freeze has landed).
    b.signal(Signal::SIGSTOP);
    let mut before = aws.messages(GROUP, stream);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let again = aws.messages(GROUP, stream);
        if again.len() == before.len() {
            break;
        }
        before = again;
    }
    moto.stop();
    let outage_start = chrono::Utc::now();
    b.signal(Signal::SIGCONT);
    // The outage itself: its length is the scenario, not a synchronisation.
    std::thread::sleep(OUTAGE);
    moto.restart().expect("moto restarts");
    let outage_end = chrono::Utc::now();
    let at_restart = written.load(Ordering::SeqCst);
    wait_for(Duration::from_secs(30), "the writer to go on", &b, || {
        (written.load(Ordering::SeqCst) >= at_restart + 1000).then_some(())
    });
    done.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let total = written.load(Ordering::SeqCst);
    let want: Vec<String> = (0..total).map(line).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let after = loop {
        let after = aws.messages(GROUP, stream);
        let have: std::collections::HashSet<&String> = before.iter().chain(&after).collect();
        if want.iter().all(|w| have.contains(w)) {
            break after;
        }
        assert!(
            Instant::now() < deadline,
            "lines missing after the outage: {} acknowledged before, {} after, {total} written; first missing: {:?}; log:\n{}",
            before.len(),
            after.len(),
            want.iter().find(|w| !have.contains(w)),
            tail(&b.log(), 30)
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!(
        "outage test: {total} lines, {} acknowledged before the outage, {} after, {} sent twice",
        before.len(),
        after.len(),
        before.len() + after.len() - total
    );
    // Metric points taken during the outage reach the new CloudWatch with their own time: one
    // per 1 s tick in every whole second of the outage. The restarted moto holds only what was
    // sent after the restart, so a point stamped inside the outage can only be a back-filled
    // one with its original timestamp.
    let (from, to) = (outage_start.timestamp() + 1, outage_end.timestamp());
    let ticks = (to - from) as f64;
    let counted = |aws: &Aws| -> (f64, Vec<i64>) {
        aws.rt.block_on(async {
            let out = aws
                .cw
                .get_metric_data()
                .metric_data_queries(
                    aws_sdk_cloudwatch::types::MetricDataQuery::builder()
                        .id("m")
                        .metric_stat(
                            aws_sdk_cloudwatch::types::MetricStat::builder()
                                .metric(
                                    aws_sdk_cloudwatch::types::Metric::builder()
                                        .namespace("Bosun/Host")
                                        .metric_name("mem_used_percent")
                                        .dimensions(
                                            aws_sdk_cloudwatch::types::Dimension::builder()
                                                .name("InstanceId")
                                                .value("i-test")
                                                .build(),
                                        )
                                        .build(),
                                )
                                .period(1)
                                .stat("SampleCount")
                                .build(),
                        )
                        .build(),
                )
                .start_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(from))
                .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(to))
                .send()
                .await;
            let Ok(out) = out else {
                return (0.0, Vec::new());
            };
            let mut n = 0.0;
            let mut secs = Vec::new();
            for r in out.metric_data_results() {
                for (t, v) in r.timestamps().iter().zip(r.values()) {
                    if (from..to).contains(&t.secs()) {
                        n += v;
                        secs.push(t.secs());
                    }
                }
            }
            secs.sort();
            (n, secs)
        })
    };
    // At most one tick of jitter: a sample stamped just across a window edge.
    let (points, secs) = wait_for(
        Duration::from_secs(120),
        "a back-filled metric point for every tick of the outage",
        &b,
        || {
            let (n, secs) = counted(&aws);
            (n >= ticks - 1.0).then_some((n, secs))
        },
    );
    let gaps: Vec<i64> = secs
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|g| *g > 2)
        .collect();
    eprintln!(
        "outage test: {ticks} whole seconds of outage ({outage_start}..{outage_end}), {points} metric points stamped inside, {} distinct seconds",
        secs.len()
    );
    assert!(
        gaps.is_empty(),
        "no run of missing ticks inside the outage: gaps {gaps:?} in {secs:?}"
    );
    let metrics = b.get("/metrics");
    assert!(
        metrics.contains("bosun_host_mem_used_percent "),
        "{}",
        tail(&metrics, 20)
    );
    assert!(
        metrics.contains("bosun_metric_errors_total"),
        "{}",
        tail(&metrics, 20)
    );
}

#[test]
fn a_bad_telemetry_config_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{d}/state\"\n[api]\nsocket = \"{d}/api.sock\"\n[metrics]\ninterval = \"10m\"\n[[logs]]\nlog_group = \"/g\"\nmultiline_start = \"(\"\n[[logs]]\nkind = \"syslog\"\npath = \"/var/log/x\"\nlog_group = \"/g\"\nlog_stream = \"{{pod}}\"\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let out = Command::new(BOSUND)
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for want in [
        "agent.toml:5:12",
        "`interval` is out of range",
        "a file log source needs `path`",
        "`multiline_start` is not a valid regular expression",
        "unknown log `kind` \"syslog\"",
        "unknown `{pod}` in `log_stream`",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    let run = Command::new(BOSUND)
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(!dir.path().join("api.sock").exists(), "nothing was started");
    assert!(!dir.path().join("state").exists(), "no journal was opened");
}

#[test]
fn sigterm_sends_what_was_read_before_exiting() {
    let moto = Moto::start().expect("moto");
    let aws = Aws::new(&moto);
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    append(&app.join("app.log"), 0..10);
    // A flush interval far longer than the test: only the drain can send these lines.
    let source = file_source(dir.path(), "")
        .replace("flush_interval = \"200ms\"", "flush_interval = \"60s\"");
    let mut b = Bosund::start(dir.path(), &source, env(&moto));
    wait_for(
        Duration::from_secs(30),
        "the lines read and queued",
        &b,
        || {
            let m = b.get("/metrics");
            m.lines()
                .any(|l| l.starts_with("bosun_log_queue_bytes{") && !l.ends_with(" 0"))
                .then_some(())
        },
    );
    assert!(
        aws.messages(GROUP, "i-test/app.log").is_empty(),
        "nothing sent before the drain"
    );
    b.signal(nix::sys::signal::Signal::SIGTERM);
    let status = b.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
    let want: Vec<String> = (0..10).map(line).collect();
    assert_same(&aws.messages(GROUP, "i-test/app.log"), &want);
}

#[test]
fn sighup_adds_a_source_and_the_others_resume_where_they_were() {
    let moto = Moto::start().expect("moto");
    let aws = Aws::new(&moto);
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    append(&app.join("app.log"), 0..100);
    let first = file_source(dir.path(), "");
    let b = Bosund::start(dir.path(), &first, env(&moto));
    wait_for(Duration::from_secs(60), "the first 100 lines", &b, || {
        (aws.messages(GROUP, "i-test/app.log").len() >= 100).then_some(())
    });
    let second = format!(
        "{first}\n[[logs]]\npath = \"{}/other.log\"\nlog_group = \"{GROUP}\"\nlog_stream = \"other\"\nflush_interval = \"200ms\"\n",
        app.display()
    );
    write_config(dir.path(), &second);
    b.signal(nix::sys::signal::Signal::SIGHUP);
    append(&app.join("other.log"), 0..50);
    append(&app.join("app.log"), 100..200);
    let other = wait_for(
        Duration::from_secs(60),
        "the new source's lines",
        &b,
        || {
            let got = aws.messages(GROUP, "other");
            (got.len() >= 50).then_some(got)
        },
    );
    assert_same(&other, &(0..50).map(line).collect::<Vec<_>>());
    let got = wait_for(
        Duration::from_secs(60),
        "the old source's new lines",
        &b,
        || {
            let got = aws.messages(GROUP, "i-test/app.log");
            (got.len() >= 200).then_some(got)
        },
    );
    assert_same(&got, &(0..200).map(line).collect::<Vec<_>>());
    assert!(
        b.log().contains("telemetry restarted"),
        "{}",
        tail(&b.log(), 20)
    );
}

#[test]
fn without_an_aws_region_bosund_refuses_to_start_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    append(&app.join("app.log"), 0..3);
    // `[metrics]` is on line 5 of agent.toml.
    let telemetry = format!(
        "[metrics]\ninterval = \"10s\"\n\n{}",
        file_source(dir.path(), "")
    );
    write_config(dir.path(), &telemetry);
    let config = std::fs::read_to_string(dir.path().join("agent.toml")).unwrap();
    assert_eq!(
        config.lines().position(|l| l == "[metrics]"),
        Some(4),
        "{config}"
    );
    let moto_less_env = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let out = Command::new(BOSUND)
        .args(["run", "--config"])
        .arg(dir.path().join("agent.toml"))
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env_remove("AWS_PROFILE")
        .env_remove("BOSUN_IMDS_ENDPOINT")
        .env_remove("BOSUN_STATE_DIR")
        .env("AWS_CONFIG_FILE", dir.path().join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.path().join("no-aws-credentials"),
        )
        .envs(moto_less_env)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for want in [
        "agent.toml:5:1",
        "`[metrics]` ships to CloudWatch, but no AWS region was found",
        "region = \"eu-west-1\"",
        "AWS_REGION",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert!(
        !dir.path().join("run/api.sock").exists(),
        "no listener was started"
    );
    assert!(!dir.path().join("state").exists(), "no journal was opened");

    // An invalid `region` is a config error, located at the value.
    write_config(dir.path(), &format!("region = \"Mars 1\"\n{telemetry}"));
    let out = Command::new(BOSUND)
        .args(["check-config", "--config"])
        .arg(dir.path().join("agent.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("agent.toml:5:10") && err.contains("is not an AWS region name"),
        "{err}"
    );

    // The same config with `region` written in it starts and ships (no region in the
    // environment: only the file can have given it).
    let moto = Moto::start().expect("moto");
    let aws = Aws::new(&moto);
    let env: Vec<(String, String)> = moto
        .env()
        .into_iter()
        .filter(|(k, _)| !k.ends_with("REGION"))
        .collect();
    let b = Bosund::start(
        dir.path(),
        &format!("region = \"us-east-1\"\n{telemetry}"),
        env,
    );
    let got = wait_for(
        Duration::from_secs(60),
        "the lines shipped to the configured region",
        &b,
        || {
            let got = aws.messages(GROUP, "i-test/app.log");
            (got.len() >= 3).then_some(got)
        },
    );
    assert_same(&got, &(0..3).map(line).collect::<Vec<_>>());
}

/// `systemd-journal-remote`, which writes real journal files from journal export format
/// (Debian: `apt-get install systemd-journal-remote`).
fn journal_remote() -> PathBuf {
    [
        "/lib/systemd/systemd-journal-remote",
        "/usr/lib/systemd/systemd-journal-remote",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("systemd-journal-remote is needed: apt-get install systemd-journal-remote")
}

/// Appends entries `range` to the real journal file in `dir` (written by systemd-journal-remote,
/// stamped with this machine's boot id, as journald would).
fn journal_append(dir: &Path, range: std::ops::Range<usize>) {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .replace('-', "");
    let now = chrono::Utc::now().timestamp_micros();
    let mut export = String::new();
    for i in range {
        export.push_str(&format!(
            "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID={boot}\nMESSAGE=entry {i}\nSYSLOG_IDENTIFIER=k3s\n_PID=7\n\n",
            now + i as i64,
            1_000_000 + i
        ));
    }
    let mut child = Command::new(journal_remote())
        .arg(format!("--output={}/remote.journal", dir.display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(export.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "systemd-journal-remote: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_real_journal_is_followed_and_resumed_by_its_cursor_after_kill_9() {
    let moto = Moto::start().expect("moto");
    let aws = Aws::new(&moto);
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().join("journal");
    std::fs::create_dir_all(&jdir).unwrap();
    journal_append(&jdir, 0..100);
    // The real journalctl, reading that directory instead of the host's journal.
    let wrapper = dir.path().join("journalctl");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec journalctl --directory='{}' \"$@\"\n",
            jdir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let telemetry = format!(
        "[[logs]]\nkind = \"journald\"\nlog_group = \"{GROUP}\"\nlog_stream = \"journal\"\nflush_interval = \"200ms\"\n"
    );
    let mut env = env(&moto);
    env.push(("BOSUN_JOURNALCTL".into(), wrapper.display().to_string()));
    let mut b = Bosund::start(dir.path(), &telemetry, env);
    let want = |n: usize| -> Vec<String> { (0..n).map(|i| format!("k3s[7]: entry {i}")).collect() };
    let count = |n: usize, what: &str, b: &Bosund| {
        wait_for(Duration::from_secs(60), what, b, || {
            let got = aws.messages(GROUP, "journal");
            (got.len() >= n).then_some(got)
        })
    };
    assert_same(
        &count(100, "the journal's first 100 entries", &b),
        &want(100),
    );
    // Followed: entries written while bosund runs arrive too.
    journal_append(&jdir, 100..200);
    assert_same(
        &count(200, "entries written while following", &b),
        &want(200),
    );
    // kill -9, more entries, restart: it resumes after the last accepted cursor.
    b.kill9();
    journal_append(&jdir, 200..300);
    b.spawn();
    let got = wait_for(
        Duration::from_secs(60),
        "entries written while bosund was down",
        &b,
        || {
            let got = aws.messages(GROUP, "journal");
            let unique: std::collections::HashSet<&String> = got.iter().collect();
            (unique.len() >= 300).then_some(got.clone())
        },
    );
    let mut seen = std::collections::HashSet::new();
    let firsts: Vec<String> = got.iter().filter(|m| seen.insert(*m)).cloned().collect();
    assert_same(&firsts, &want(300));
    assert!(
        got.len() - 300 <= 100,
        "at most the batch in flight at the kill is sent twice: {} duplicates",
        got.len() - 300
    );
}

/// A journal the disk damaged while bosund was down: it is moved aside at start and the file
/// source, having no checkpoint, sends the file again from its start. The cost of a lost
/// journal is duplicates, never a gap.
#[test]
fn a_damaged_journal_resends_from_the_start_rather_than_skipping() {
    let moto = Moto::start().expect("moto");
    let aws = Aws::new(&moto);
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    append(&app.join("app.log"), 0..20);
    let mut b = Bosund::start(dir.path(), &file_source(dir.path(), ""), env(&moto));
    let first: Vec<String> = (0..20).map(line).collect();
    assert_same(&wait_all(&aws, "i-test/app.log", &first, &b), &first);
    b.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(b.wait_exit(Duration::from_secs(30)).success());

    let db = dir.path().join("state/journal.db");
    let mut bytes = std::fs::read(&db).unwrap();
    for byte in &mut bytes[4096..12288] {
        *byte = 0xA5;
    }
    std::fs::write(&db, &bytes).unwrap();
    append(&app.join("app.log"), 20..30);
    b.spawn();
    let mut want = first.clone();
    want.extend((0..30).map(line));
    assert_same(&wait_all(&aws, "i-test/app.log", &want, &b), &want);
    let log = b.log();
    assert!(
        log.contains("failed its integrity check") && log.contains("moved aside to"),
        "{}",
        tail(&log, 20)
    );
}

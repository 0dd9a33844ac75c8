//! `[[schedule]]`: the daemon's scheduler driven by a [`ManualTimer`] (no test waits for the
//! real clock), with the real run queue, runner thread and journal; and `bosund run`,
//! `bosund check-config` and `bosund schedule list` as processes.

mod daemon_support;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bosun_agent::config::{self, AgentConfig};
use bosun_agent::daemon::schedule::{ManualTimer, ScheduleDriver, Timer};
use bosun_agent::journal::{Journal, ScheduleRow};
use bosun_agent::queue::{RunQueue, RunState, RunView};
use bosun_agent::scheduler::Clock;
use bosun_model::playbook::Source;
use chrono::{DateTime, TimeZone, Utc};
use daemon_support::{Agent, BOSUND, PATIENCE};
use hyper::Method;
use serde_json::Value;
use tokio::sync::watch;

fn at(d: u32, h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, d, h, m, 0).unwrap()
}

/// A directory with `playbooks/` and `state/`, and a scheduler over a real queue and journal.
struct Rig {
    dir: tempfile::TempDir,
    queue: Arc<RunQueue>,
    runner: Option<std::thread::JoinHandle<()>>,
    timer: Arc<ManualTimer>,
    config_tx: Option<watch::Sender<Arc<AgentConfig>>>,
    stop_tx: Option<watch::Sender<bool>>,
    evaluated: Option<watch::Receiver<Option<DateTime<Utc>>>>,
    driver: Option<tokio::task::JoinHandle<()>>,
}

impl Rig {
    /// `playbooks` are (name, TOML) written to `playbooks/NAME.toml`.
    fn new(queue_limit: usize, playbooks: &[(&str, &str)], now: DateTime<Utc>) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("playbooks")).unwrap();
        for (name, text) in playbooks {
            std::fs::write(dir.path().join(format!("playbooks/{name}.toml")), text).unwrap();
        }
        let (queue, runner) = RunQueue::start(queue_limit, dir.path().join("state")).unwrap();
        Rig {
            dir,
            queue,
            runner: Some(runner),
            timer: Arc::new(ManualTimer::new(now)),
            config_tx: None,
            stop_tx: None,
            evaluated: None,
            driver: None,
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn journal(&self) -> Journal {
        Journal::open(&self.state()).unwrap()
    }

    /// The config `[[schedule]]` entries in `schedules` make (it must be valid).
    fn config(&self, schedules: &str) -> AgentConfig {
        let text = format!(
            "playbooks_dir = \"{}\"\n{schedules}",
            self.dir.path().join("playbooks").display()
        );
        config::parse(Source::new("agent.toml", text))
            .unwrap_or_else(|d| panic!("{}", d.render(false)))
    }

    /// Starts the driver's loop (as `bosund run` does, with the manual timer).
    fn start(&mut self, schedules: &str) {
        let config = Arc::new(self.config(schedules));
        let driver = ScheduleDriver::new(
            self.queue.clone(),
            self.journal(),
            self.state(),
            &config.schedules,
            self.timer.now(),
        )
        .unwrap();
        let (config_tx, config_rx) = watch::channel(config);
        let (stop_tx, stop_rx) = watch::channel(false);
        self.evaluated = Some(driver.evaluations());
        let timer: Arc<dyn Timer> = self.timer.clone();
        self.driver = Some(tokio::spawn(driver.run(timer, config_rx, stop_rx)));
        self.config_tx = Some(config_tx);
        self.stop_tx = Some(stop_tx);
    }

    /// Stops the driver's loop and waits for it (a restart of bosund, for the scheduler).
    async fn stop(&mut self) {
        self.stop_tx.take().unwrap().send_replace(true);
        tokio::time::timeout(PATIENCE, self.driver.take().unwrap())
            .await
            .expect("the driver stops")
            .unwrap();
    }

    /// Moves the clock to `t` and waits until the driver has evaluated at `t` or later.
    async fn set_clock(&mut self, t: DateTime<Utc>) {
        self.timer.set(t);
        self.wait_evaluated(t).await;
    }

    async fn wait_evaluated(&mut self, t: DateTime<Utc>) {
        let rx = self.evaluated.as_mut().unwrap();
        tokio::time::timeout(PATIENCE, rx.wait_for(|e| e.is_some_and(|e| e >= t)))
            .await
            .unwrap_or_else(|_| panic!("the driver never evaluated at {t}"))
            .unwrap();
    }

    /// Runs in the queue's memory, oldest first.
    fn runs(&self) -> Vec<RunView> {
        let mut runs = self.queue.list();
        runs.reverse();
        runs
    }

    /// Polls until `cond` holds on the runs (deadline [`PATIENCE`]).
    async fn wait_runs(&self, what: &str, cond: impl Fn(&[RunView]) -> bool) -> Vec<RunView> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let runs = self.runs();
            if cond(&runs) {
                return runs;
            }
            assert!(Instant::now() < deadline, "never: {what}; runs: {runs:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls the journal's row of `name` until `cond` holds.
    async fn wait_row(&self, name: &str, cond: impl Fn(&ScheduleRow) -> bool) -> ScheduleRow {
        let deadline = Instant::now() + PATIENCE;
        let journal = self.journal();
        loop {
            let row = journal.schedule(name).unwrap();
            if let Some(r) = row.as_ref().filter(|r| cond(r)) {
                return r.clone();
            }
            assert!(Instant::now() < deadline, "row of {name} is {row:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(d) = self.driver.take() {
            d.abort();
        }
        // Closing the queue ends the runner thread once its run is over.
        let queue = self.queue.clone();
        let runner = self.runner.take();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(queue.drain(Duration::from_secs(5)));
            if let Some(r) = runner {
                let _ = r.join();
            }
        })
        .join()
        .unwrap();
    }
}

fn finished(r: &RunView) -> bool {
    r.state.is_finished()
}

const NOOP: &str = "name = \"nightly\"\n[[step]]\nname = \"hello\"\ncommand = { run = \"true\" }\n";

/// A playbook whose step blocks until something is written to the FIFO `gate`.
fn gated(name: &str, gate: &Path) -> String {
    nix::unistd::mkfifo(gate, nix::sys::stat::Mode::from_bits_truncate(0o600)).ok();
    format!(
        "name = \"{name}\"\n[[step]]\nname = \"wait for the gate\"\ncommand = {{ run = \"read line < {}\" }}\n",
        gate.display()
    )
}

/// Lets one reader of the FIFO `gate` through (waits, bounded, for a step to be reading).
async fn open_gate(gate: &Path) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        // Non-blocking: fails (ENXIO) until a reader has the FIFO open.
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(gate)
        {
            Ok(mut f) => {
                f.write_all(b"go\n").unwrap();
                return;
            }
            Err(e) => assert!(
                Instant::now() < deadline,
                "no step opened {}: {e}",
                gate.display()
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const DAILY: &str = "[[schedule]]\nplaybook = \"nightly\"\ncron = \"0 3 * * *\"\n";

#[tokio::test]
async fn a_due_slot_starts_exactly_one_run_through_the_queue_and_journals_it() {
    let mut rig = Rig::new(4, &[("nightly", NOOP)], at(1, 12, 0));
    rig.start(DAILY);
    rig.wait_evaluated(at(1, 12, 0)).await;
    // A schedule seen for the first time has missed nothing.
    assert!(rig.runs().is_empty());
    rig.set_clock(at(2, 2, 59)).await;
    assert!(rig.runs().is_empty());

    rig.set_clock(at(2, 3, 0)).await;
    let runs = rig.runs();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0].schedule.as_deref(), Some("nightly"));
    assert_eq!(runs[0].playbook, "nightly");
    let id = runs[0].id.clone();
    rig.wait_runs("the run ends", |r| r.iter().all(finished))
        .await;
    assert_eq!(rig.queue.get(&id).unwrap().state, RunState::Ok);

    let row = rig
        .wait_row("nightly", |r| r.last_outcome.as_deref() == Some("ok"))
        .await;
    assert_eq!(row.last_slot, Some(at(2, 3, 0)));
    assert_eq!(row.last_run_id.as_deref(), Some(id.as_str()));
    let journaled = rig.journal().recent_runs(10).unwrap();
    assert_eq!(journaled.len(), 1, "{journaled:?}");
    assert_eq!(
        (journaled[0].id.as_str(), journaled[0].status.as_str()),
        (id.as_str(), "ok")
    );
    assert_eq!(journaled[0].schedule.as_deref(), Some("nightly"));

    // Later the same day: nothing more; the next day: the next slot.
    rig.set_clock(at(2, 23, 0)).await;
    assert_eq!(rig.runs().len(), 1);
    rig.set_clock(at(3, 3, 0)).await;
    let runs = rig.runs();
    assert_eq!(runs.len(), 2, "{runs:#?}");
    rig.stop().await;
}

#[tokio::test]
async fn slots_missed_while_down_are_caught_up_once_at_start() {
    let mut rig = Rig::new(4, &[("nightly", NOOP)], at(5, 12, 0));
    // The journal as bosund left it on the 1st: the 03:00 slot ran, then it was down.
    let mut row = ScheduleRow::new("nightly", at(1, 0, 0));
    row.last_slot = Some(at(1, 3, 0));
    row.last_run_id = Some("old".into());
    row.last_outcome = Some("ok".into());
    rig.journal().put_schedule(&row).unwrap();

    rig.start(DAILY);
    rig.wait_evaluated(at(5, 12, 0)).await;
    let runs = rig
        .wait_runs("the catch-up ends", |r| r.iter().all(finished))
        .await;
    assert_eq!(runs.len(), 1, "four missed slots, one catch-up: {runs:#?}");
    let row = rig
        .wait_row("nightly", |r| r.last_outcome.as_deref() == Some("ok"))
        .await;
    assert_eq!(row.last_slot, Some(at(5, 3, 0)), "the newest missed slot");
    assert_eq!(row.last_run_id.as_deref(), Some(runs[0].id.as_str()));

    rig.set_clock(at(5, 18, 0)).await;
    assert_eq!(rig.runs().len(), 1, "no second catch-up");
    rig.set_clock(at(6, 3, 0)).await;
    assert_eq!(rig.runs().len(), 2);
    rig.stop().await;
}

#[tokio::test]
async fn a_slot_during_the_schedules_run_waits_for_it_and_runs_once_after() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let playbook = gated("slow", &gate);
    let mut rig = Rig::new(4, &[("slow", &playbook)], at(1, 0, 0));
    rig.start("[[schedule]]\nplaybook = \"slow\"\ncron = \"*/10 * * * *\"\n");
    rig.wait_evaluated(at(1, 0, 0)).await;

    rig.set_clock(at(1, 0, 10)).await;
    let first = rig
        .wait_runs("the first run is going", |r| {
            r.len() == 1 && r[0].state == RunState::Running
        })
        .await[0]
        .id
        .clone();
    // Two more slots pass while it runs: no second run of the schedule.
    rig.set_clock(at(1, 0, 20)).await;
    rig.set_clock(at(1, 0, 30)).await;
    assert_eq!(rig.runs().len(), 1, "{:#?}", rig.runs());

    open_gate(&gate).await;
    let runs = rig
        .wait_runs("the waiting slot starts once the run ended", |r| {
            r.len() == 2
        })
        .await;
    assert_eq!(runs[0].id, first);
    assert_eq!(runs[0].state, RunState::Ok);
    assert_eq!(runs[1].schedule.as_deref(), Some("slow"));
    let row = rig
        .wait_row("slow", |r| {
            r.last_run_id.as_deref() == Some(runs[1].id.as_str())
        })
        .await;
    assert_eq!(row.last_slot, Some(at(1, 0, 30)), "the newest slot, once");

    open_gate(&gate).await;
    rig.wait_runs("the second run ends", |r| r.iter().all(finished))
        .await;
    rig.wait_row("slow", |r| r.last_outcome.as_deref() == Some("ok"))
        .await;
    assert_eq!(rig.runs().len(), 2, "{:#?}", rig.runs());
    rig.stop().await;
}

#[tokio::test]
async fn a_restart_after_a_completed_slot_does_not_run_it_again() {
    let mut rig = Rig::new(4, &[("nightly", NOOP)], at(1, 12, 0));
    rig.start(DAILY);
    rig.set_clock(at(2, 3, 0)).await;
    rig.wait_row("nightly", |r| r.last_outcome.as_deref() == Some("ok"))
        .await;
    rig.stop().await;

    // bosund restarts a few minutes later, and again at noon.
    for t in [at(2, 3, 5), at(2, 12, 0)] {
        rig.timer.set(t);
        rig.start(DAILY);
        rig.wait_evaluated(t).await;
        assert_eq!(rig.runs().len(), 1, "restarted at {t}: {:#?}", rig.runs());
        rig.stop().await;
    }
    rig.start(DAILY);
    rig.set_clock(at(3, 3, 0)).await;
    assert_eq!(rig.runs().len(), 2);
    rig.stop().await;
}

#[tokio::test]
async fn a_slot_the_full_queue_cannot_take_waits_and_is_submitted_once() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let blocker = gated("blocker", &gate);
    // queue_limit 0: while a run goes, nothing else is accepted.
    let mut rig = Rig::new(0, &[("nightly", NOOP), ("blocker", &blocker)], at(1, 12, 0));
    rig.start(DAILY);
    rig.wait_evaluated(at(1, 12, 0)).await;
    // A run asked for through the API holds the queue.
    let pb =
        bosun_model::playbook::load(Source::new("blocker.toml", blocker.clone()), &[]).unwrap();
    let api_run = rig
        .queue
        .submit(
            pb,
            bosun_agent::engine::RunOptions {
                run_id: "api-run".into(),
                check: false,
                base_dir: dir.path().to_path_buf(),
                extra_vars: Default::default(),
                facts: Value::Null,
                state_dir: rig.state(),
                schedule: None,
                tags: Vec::new(),
                skip_tags: Vec::new(),
                skip_capacity: false,
            },
        )
        .unwrap();
    rig.wait_runs("the API run is going", |r| r[0].state == RunState::Running)
        .await;

    rig.set_clock(at(2, 3, 0)).await;
    assert_eq!(rig.runs().len(), 1, "the queue is full: {:#?}", rig.runs());
    let row = rig.journal().schedule("nightly").unwrap().unwrap();
    assert_eq!(row.last_slot, None, "a refused slot is not recorded");
    // More evaluations while it waits (the clock moves on): still nothing doubled.
    rig.set_clock(at(2, 3, 30)).await;

    open_gate(&gate).await;
    let runs = rig
        .wait_runs("the waiting slot runs after the API run", |r| {
            r.len() == 2 && r.iter().all(finished)
        })
        .await;
    assert_eq!(runs[0].id, api_run.id);
    assert_eq!(runs[1].schedule.as_deref(), Some("nightly"));
    let row = rig
        .wait_row("nightly", |r| r.last_outcome.as_deref() == Some("ok"))
        .await;
    assert_eq!(row.last_slot, Some(at(2, 3, 0)));
    rig.set_clock(at(2, 4, 0)).await;
    assert_eq!(rig.runs().len(), 2);
    rig.stop().await;
}

#[tokio::test]
async fn a_reload_keeps_state_by_name_and_an_invalid_playbook_consumes_its_slot() {
    let mut rig = Rig::new(4, &[("nightly", NOOP)], at(1, 12, 0));
    rig.start(DAILY);
    rig.set_clock(at(2, 3, 0)).await;
    rig.wait_row("nightly", |r| r.last_outcome.as_deref() == Some("ok"))
        .await;

    // SIGHUP with the same schedule and a new hourly one: nightly does not run again.
    let both = format!(
        "{DAILY}[[schedule]]\nname = \"hourly\"\nplaybook = \"nightly\"\ncron = \"0 * * * *\"\n"
    );
    let tx = rig.config_tx.take().unwrap();
    tx.send_replace(Arc::new(rig.config(&both)));
    rig.set_clock(at(2, 3, 30)).await;
    assert_eq!(rig.runs().len(), 1, "{:#?}", rig.runs());
    rig.set_clock(at(2, 4, 0)).await;
    let runs = rig
        .wait_runs("the hourly run ends", |r| {
            r.len() == 2 && r.iter().all(finished)
        })
        .await;
    assert_eq!(runs[1].schedule.as_deref(), Some("hourly"));

    // The playbook breaks after the config was loaded: the slot is consumed, logged, no run.
    std::fs::write(rig.dir.path().join("playbooks/nightly.toml"), "name = 1\n").unwrap();
    rig.set_clock(at(2, 5, 0)).await;
    assert_eq!(rig.runs().len(), 2);
    let row = rig.journal().schedule("hourly").unwrap().unwrap();
    assert_eq!(
        (
            row.last_slot,
            row.last_outcome.as_deref(),
            row.last_run_id.as_deref()
        ),
        (Some(at(2, 5, 0)), Some("invalid"), None)
    );
    assert!(row.last_error.unwrap().contains("nightly.toml:1:8"));
    rig.set_clock(at(2, 5, 30)).await;
    assert_eq!(rig.runs().len(), 2, "an invalid slot is not retried");

    // Removed from the config: forgotten.
    std::fs::write(rig.dir.path().join("playbooks/nightly.toml"), NOOP).unwrap();
    tx.send_replace(Arc::new(rig.config(DAILY)));
    rig.set_clock(at(2, 6, 0)).await;
    assert!(rig.journal().schedule("hourly").unwrap().is_none());
    rig.config_tx = Some(tx);
    rig.stop().await;
}

fn run_bosund(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BOSUND)
        .args(args)
        .env_remove("BOSUN_STATE_DIR")
        .output()
        .expect("running bosund");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_schedule_is_located_and_bosund_run_does_not_start() {
    let tail = "[[schedule]]\nplaybook = \"nightly\"\ncron = \"0 3 * * *\"\njitter = \"a while\"\n\
                [[schedule]]\nplaybook = \"missing\"\ncron = \"61 * * * *\"\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("playbooks")).unwrap();
    std::fs::write(dir.path().join("playbooks/nightly.toml"), NOOP).unwrap();
    let mut agent = Agent::spawn_in(dir, "", tail, &[]);
    let status = agent.wait_exit(PATIENCE).expect("bosund exits");
    assert_eq!(status.code(), Some(2), "{}", agent.log_text());
    let log = agent.log_text();
    // base_config is 5 lines; the tail starts on line 6.
    assert!(log.contains("agent.toml:9:10: error: `jitter`"), "{log}");
    assert!(
        log.contains("agent.toml:11:12: error: unknown playbook `missing`"),
        "{log}"
    );
    assert!(log.contains("agent.toml:12:8: error: `cron`"), "{log}");
    assert!(!agent.socket.exists(), "it listened");

    let (code, _, err) = run_bosund(&["check-config", "--config", agent.config.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("agent.toml:12:8"), "{err}");
    assert!(
        err.contains("minute hour day-of-month"),
        "the help says what is expected: {err}"
    );
}

#[tokio::test]
async fn bosund_run_catches_up_at_start_and_history_api_and_list_show_the_schedule() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("playbooks")).unwrap();
    std::fs::write(dir.path().join("playbooks/nightly.toml"), NOOP).unwrap();
    // The journal says the schedule last ran 3 days ago: one slot (at least) was missed.
    let now = Utc::now();
    {
        let j = Journal::open(&dir.path().join("state")).unwrap();
        let mut row = ScheduleRow::new("nightly", now - chrono::Duration::days(4));
        row.last_slot = Some(now - chrono::Duration::days(3));
        j.put_schedule(&row).unwrap();
    }
    let agent = Agent::spawn_in(
        dir,
        "",
        "[[schedule]]\nplaybook = \"nightly\"\ncron = \"0 3 * * *\"\njitter = \"15m\"\n",
        &[],
    );
    let mut agent = agent;
    agent.expect_notify("READY=1");
    let deadline = Instant::now() + PATIENCE;
    let run = loop {
        let (_, list) = agent.call(Method::GET, "/v1/runs", None).await;
        let found = list["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["schedule"] == "nightly" && r["status"] == "ok")
            .cloned();
        if let Some(r) = found {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "no catch-up run: {list}; log:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let id = run["id"].as_str().unwrap().to_string();
    let (_, list) = agent.call(Method::GET, "/v1/runs", None).await;
    assert_eq!(list["runs"].as_array().unwrap().len(), 1, "{list}");

    let state = agent.state.to_str().unwrap().to_string();
    let (code, out, err) = run_bosund(&["history", "--output", "json", "--state-dir", &state]);
    assert_eq!(code, 0, "{err}");
    let history = json_lines(&out);
    assert_eq!(history[0]["id"], id.as_str());
    assert_eq!(history[0]["schedule"], "nightly");

    let config = agent.config.to_str().unwrap().to_string();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (code, out, err) =
            run_bosund(&["schedule", "list", "--config", &config, "--output", "json"]);
        assert_eq!(code, 0, "{err}");
        let list = json_lines(&out);
        let last = &list[0]["last_run"];
        assert_eq!(last["run_id"], id.as_str(), "{list}");
        assert_eq!(list[0]["due"], false, "{list}");
        if last["outcome"] == "ok" {
            break;
        }
        assert!(Instant::now() < deadline, "{list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn schedule_list_shows_the_next_times_with_jitter_and_the_last_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("playbooks")).unwrap();
    std::fs::write(dir.path().join("playbooks/nightly.toml"), NOOP).unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "playbooks_dir = \"{}\"\nstate_dir = \"{}\"\n\
             [[schedule]]\nname = \"backup-rds\"\nplaybook = \"nightly\"\ncron = \"0 3 * * *\"\njitter = \"15m\"\n\
             [[schedule]]\nplaybook = \"nightly\"\ncron = \"30 */6 * * *\"\n",
            dir.path().join("playbooks").display(),
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    {
        let j = Journal::open(&dir.path().join("state")).unwrap();
        let mut row = ScheduleRow::new("backup-rds", at(1, 0, 0));
        // The slot of the 1st, jitter included.
        row.last_slot = Some(at(1, 3, 9) + chrono::Duration::seconds(47));
        row.last_run_id = Some("0190-run".into());
        row.last_started_at = Some(at(1, 3, 10));
        row.last_outcome = Some("failed".into());
        j.put_schedule(&row).unwrap();
    }
    let (code, out, err) = run_bosund(&[
        "schedule",
        "list",
        "--config",
        config.to_str().unwrap(),
        "--output",
        "json",
        "--after",
        "2026-03-01T12:00:00Z",
    ]);
    assert_eq!(code, 0, "{err}");
    let list = json_lines(&out);
    // backup-rds's jitter offset is derived from its name: 9 min 47 s (SHA-256 of the name, first 8 bytes big-endian, mod 900 s), the same on every host
    // and every start (changing it moves every fleet's backups).
    assert_eq!(
        list,
        serde_json::json!([
            {
                "name": "backup-rds",
                "playbook": "nightly",
                "cron": "0 3 * * *",
                "jitter": "15m",
                "due": false,
                "next": ["2026-03-02T03:09:47Z", "2026-03-03T03:09:47Z", "2026-03-04T03:09:47Z"],
                "last_run": {
                    "slot": "2026-03-01T03:09:47Z",
                    "started_at": "2026-03-01T03:10:00Z",
                    "outcome": "failed",
                    "run_id": "0190-run"
                }
            },
            {
                "name": "nightly",
                "playbook": "nightly",
                "cron": "30 */6 * * *",
                "jitter": "0s",
                "due": false,
                "next": ["2026-03-01T12:30:00Z", "2026-03-01T18:30:00Z", "2026-03-02T00:30:00Z"],
                "last_run": null
            }
        ])
    );

    // Two days later with bosund down: a missed slot is due.
    let (code, out, _) = run_bosund(&[
        "schedule",
        "list",
        "--config",
        config.to_str().unwrap(),
        "--after",
        "2026-03-03T12:00:00Z",
    ]);
    assert_eq!(code, 0);
    assert!(
        out.contains(
            "backup-rds: playbook nightly, cron \"0 3 * * *\", jitter 15m (a missed slot is due)"
        ),
        "{out}"
    );
    assert!(
        out.contains("last: slot 2026-03-01T03:09:47Z, failed, run 0190-run"),
        "{out}"
    );

    let (code, _, err) = run_bosund(&[
        "schedule",
        "list",
        "--config",
        config.to_str().unwrap(),
        "--after",
        "tomorrow",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("RFC 3339"), "{err}");
}

#[tokio::test]
async fn sighup_adds_a_schedule_and_bosund_runs_its_missed_slot() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("playbooks")).unwrap();
    std::fs::write(dir.path().join("playbooks/nightly.toml"), NOOP).unwrap();
    // A row from before the schedule was taken out of the config: its slot is long past.
    let now = Utc::now();
    {
        let j = Journal::open(&dir.path().join("state")).unwrap();
        let mut row = ScheduleRow::new("nightly", now - chrono::Duration::days(4));
        row.last_slot = Some(now - chrono::Duration::days(3));
        j.put_schedule(&row).unwrap();
    }
    let mut agent = Agent::spawn_in(dir, "", "", &[]);
    agent.expect_notify("READY=1");
    let (_, list) = agent.call(Method::GET, "/v1/runs", None).await;
    assert_eq!(
        list["runs"],
        serde_json::json!([]),
        "not configured: {list}"
    );

    let config = std::fs::read_to_string(&agent.config).unwrap();
    std::fs::write(&agent.config, format!("{config}{DAILY}")).unwrap();
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    agent.wait_for_log("configuration reloaded");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, list) = agent.call(Method::GET, "/v1/runs", None).await;
        let runs = list["runs"].as_array().unwrap();
        if runs
            .iter()
            .any(|r| r["schedule"] == "nightly" && r["status"] == "ok")
        {
            assert_eq!(runs.len(), 1, "{list}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no scheduled run after SIGHUP: {list}; log:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(agent.log_text().contains("scheduled run accepted"));
}

#[tokio::test]
async fn a_slot_whose_run_never_started_runs_at_the_next_start_but_a_started_one_does_not() {
    let mut rig = Rig::new(4, &[("nightly", NOOP)], at(5, 12, 0));
    // bosund stopped while the 03:00 run of the 5th was queued behind another run: the queue
    // was cancelled, the run never started (no row in `runs`).
    let mut row = ScheduleRow::new("nightly", at(1, 0, 0));
    row.last_slot = Some(at(5, 3, 0));
    row.last_run_id = Some("never-started".into());
    row.last_outcome = Some("queued".into());
    rig.journal().put_schedule(&row).unwrap();
    rig.start(DAILY);
    rig.wait_evaluated(at(5, 12, 0)).await;
    let runs = rig
        .wait_runs("the slot runs", |r| r.len() == 1 && r.iter().all(finished))
        .await;
    let row = rig
        .wait_row("nightly", |r| r.last_outcome.as_deref() == Some("ok"))
        .await;
    assert_eq!(row.last_slot, Some(at(5, 3, 0)));
    assert_eq!(row.last_run_id.as_deref(), Some(runs[0].id.as_str()));
    rig.stop().await;

    // bosund died during the run of the 6th: it started (its row says `running`), so the next
    // start does not run that slot again.
    let mut row = row;
    row.last_slot = Some(at(6, 3, 0));
    row.last_run_id = Some("died-during".into());
    row.last_outcome = Some("queued".into());
    let mut journal = rig.journal();
    journal.put_schedule(&row).unwrap();
    journal
        .record(&bosun_model::event::RunEvent::RunStarted {
            run_id: "died-during".into(),
            playbook: "nightly".into(),
            check: false,
            started_at: "2026-03-06T03:00:01Z".into(),
            schedule: Some("nightly".into()),
        })
        .unwrap();
    rig.timer.set(at(6, 12, 0));
    rig.start(DAILY);
    rig.wait_evaluated(at(6, 12, 0)).await;
    assert_eq!(rig.runs().len(), 1, "{:#?}", rig.runs());
    rig.stop().await;
}

#[tokio::test]
async fn a_schedule_removed_and_added_back_during_its_run_does_not_overlap_it() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let playbook = gated("slow", &gate);
    let every10 = "[[schedule]]\nplaybook = \"slow\"\ncron = \"*/10 * * * *\"\n";
    let mut rig = Rig::new(4, &[("slow", &playbook)], at(1, 0, 0));
    rig.start(every10);
    rig.set_clock(at(1, 0, 10)).await;
    rig.wait_runs("the run is going", |r| {
        r.len() == 1 && r[0].state == RunState::Running
    })
    .await;

    let tx = rig.config_tx.take().unwrap();
    tx.send_replace(Arc::new(rig.config("")));
    rig.set_clock(at(1, 0, 11)).await;
    tx.send_replace(Arc::new(rig.config(every10)));
    rig.set_clock(at(1, 0, 12)).await;
    rig.set_clock(at(1, 0, 20)).await;
    assert_eq!(rig.runs().len(), 1, "{:#?}", rig.runs());

    open_gate(&gate).await;
    let runs = rig
        .wait_runs("the slot of 00:20 runs after the old run", |r| r.len() == 2)
        .await;
    assert_eq!(runs[0].state, RunState::Ok);
    open_gate(&gate).await;
    rig.wait_runs("it ends", |r| r.iter().all(finished)).await;
    rig.config_tx = Some(tx);
    rig.stop().await;
}

/// `--output json` of a listing (JSON Lines: a record per line) as one array.
fn json_lines(out: &str) -> Value {
    out.lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("{e}: {l:?} is not JSON"))
        })
        .collect()
}

/// A `[[schedule]]` with `check = true` every second: a drift report. The file the playbook
/// manages is changed by hand: within a slot `/metrics` counts the step and `bosund drift`
/// names it, and the check changed nothing; restored, the count returns to 0.
#[tokio::test]
async fn a_scheduled_check_reports_drift_on_metrics_and_clears_when_restored() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("playbooks")).unwrap();
    let motd = dir.path().join("motd");
    std::fs::write(&motd, "hello\n").unwrap();
    std::fs::write(
        dir.path().join("playbooks/site.toml"),
        format!(
            "name = \"site\"\n[[step]]\nname = \"motd\"\ncopy = {{ dest = \"{}\", content = \"hello\\n\" }}\n[[step]]\nname = \"noop\"\ncommand = {{ run = \"true\" }}\nchanged_when = false\n",
            motd.display()
        ),
    )
    .unwrap();
    let mut agent = Agent::spawn_in(
        dir,
        "",
        "[[schedule]]\nplaybook = \"site\"\ncron = \"* * * * * *\"\ncheck = true\n",
        &[],
    );
    agent.expect_notify("READY=1");
    let metric = |n: usize| format!("bosun_drift_steps{{playbook=\"site\"}} {n}\n");
    let wait_metrics = |want: String| {
        let agent = &agent;
        async move {
            let deadline = Instant::now() + PATIENCE;
            loop {
                let (_, text) = agent
                    .call_text(Method::GET, "/metrics", Default::default(), "text/plain")
                    .await;
                if text.contains(&want) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "/metrics never showed {want:?}:\n{text}\nlog:\n{}",
                    agent.log_text()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_metrics(metric(0)).await;

    std::fs::write(&motd, "tampered\n").unwrap();
    wait_metrics(metric(1)).await;
    let state = agent.state.to_str().unwrap().to_string();
    let (code, out, err) = run_bosund(&["drift", "--output", "json", "--state-dir", &state]);
    assert_eq!(code, 0, "{err}");
    let rows = json_lines(&out);
    assert_eq!(rows[0]["playbook"], "site", "{rows}");
    assert_eq!(rows[0]["steps"], serde_json::json!(["motd"]), "{rows}");
    let (_, human, _) = run_bosund(&["drift", "--state-dir", &state]);
    assert!(
        human.contains("site: 1 steps would change: motd"),
        "{human}"
    );
    assert_eq!(
        std::fs::read_to_string(&motd).unwrap(),
        "tampered\n",
        "a check run changed the file"
    );
    let history = run_bosund(&["history", "--output", "json", "--state-dir", &state]).1;
    let history = json_lines(&history);
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["check"] == true),
        "{history}"
    );

    std::fs::write(&motd, "hello\n").unwrap();
    wait_metrics(metric(0)).await;
}

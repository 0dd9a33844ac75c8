//! The daemon's scheduler: starts the `[[schedule]]` playbooks of the config through the run
//! queue, at the slots [`crate::scheduler`] decides, with each schedule's state in the journal.
//!
//! Per schedule, on every evaluation ([`ScheduleDriver::tick`]):
//! - a run of it that ended is noted (outcome to the journal) and frees the schedule;
//! - a due slot (or the newest of several missed ones: one catch-up) is recorded in the
//!   journal *before* its run is submitted, so a restart never runs a slot twice; the run is
//!   journaled with `schedule = NAME` and shows in `bosund history` and `GET /v1/runs`;
//! - a slot that comes while the schedule's previous run is queued or running waits for it,
//!   then runs once (never two runs of one schedule at once);
//! - a slot the queue cannot take (`queue_limit`) waits, unrecorded, and is submitted when a
//!   run ends; if bosund stops meanwhile it is the missed slot caught up at the next start;
//! - a playbook that cannot be read or is invalid at its slot consumes the slot (outcome
//!   `invalid`, the problems logged): it is not retried every second.
//!
//! The loop ([`ScheduleDriver::run`]) evaluates at start (the catch-up), then whenever the next
//! slot comes ([`Timer`]), a run is accepted or ends ([`RunQueue::watch_runs`]), or the config
//! is reloaded (SIGHUP: schedules keep their state by name; one whose cron or jitter changed
//! catches up nothing from before the change; a removed one is forgotten). Time comes from the
//! [`Timer`], so tests move a [`ManualTimer`] instead of waiting.
//!
//! A slot whose run was queued but never started (bosund stopped and cancelled its queue, or
//! died before the runner began it) is due again at the next start; a run that started is never
//! run again for its slot, even if bosund died during it (it stays `running` in the journal,
//! like any run).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use tokio::sync::watch;

use crate::config::AgentConfig;
use crate::config::schedule::ScheduleConfig;
use crate::engine::RunOptions;
use crate::journal::{Journal, ScheduleRow};
use crate::queue::{RunQueue, SubmitError};
use crate::scheduler::{self, Clock, Decision, Schedule, ScheduleState};
use bosun_model::playbook::{self, Playbook, Source};

/// The longest the real timer sleeps before looking at the clock again, so a clock that jumps
/// (NTP, a suspended VM) delays a slot by at most this.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// When the journal cannot be written, how long before the slot is tried again.
const JOURNAL_RETRY: chrono::Duration = chrono::Duration::seconds(60);

/// Where the scheduler's time comes from, and how it waits for a time.
pub trait Timer: Clock + Send + Sync + 'static {
    /// Completes at `at` or later (sooner is allowed: the driver then looks again).
    fn sleep_until(&self, at: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The system clock, sleeping at most [`MAX_SLEEP`] at a time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemTimer;

impl Clock for SystemTimer {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

impl Timer for SystemTimer {
    fn sleep_until(&self, at: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let wait = (at - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(MAX_SLEEP);
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that moves only when told to, for tests: a sleep ends when the time is set (to any
/// time: the driver then evaluates at it, and sleeps again if nothing is due).
#[derive(Debug)]
pub struct ManualTimer {
    now: watch::Sender<DateTime<Utc>>,
}

impl ManualTimer {
    /// A clock standing at `t`.
    pub fn new(t: DateTime<Utc>) -> Self {
        ManualTimer {
            now: watch::channel(t).0,
        }
    }

    /// Moves the clock to `t` (waking the sleeps that end by then).
    pub fn set(&self, t: DateTime<Utc>) {
        self.now.send_replace(t);
    }
}

impl Clock for ManualTimer {
    fn now(&self) -> DateTime<Utc> {
        *self.now.borrow()
    }
}

impl Timer for ManualTimer {
    fn sleep_until(&self, at: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            // Any move of the clock ends the sleep (as the real timer's periodic look does), so
            // a test sees an evaluation at every time it sets.
            if *rx.borrow_and_update() < at {
                let _ = rx.changed().await;
            }
        })
    }
}

/// One configured schedule and where it stands.
struct Entry {
    config: ScheduleConfig,
    schedule: Schedule,
    state: ScheduleState,
    row: ScheduleRow,
    /// The id of this schedule's run while it is queued or running.
    in_flight: Option<String>,
}

/// What became of an attempt to start a slot.
enum Start {
    Submitted,
    /// The slot was consumed without a run (the playbook is missing or invalid).
    Invalid,
    /// The slot waits: the queue is full or bosund is stopping.
    Refused,
    /// The journal could not be written: try again later.
    JournalFailed,
}

/// Starts `[[schedule]]` runs through a [`RunQueue`]; see the module doc.
pub struct ScheduleDriver {
    queue: Arc<RunQueue>,
    journal: Journal,
    state_dir: PathBuf,
    entries: Vec<Entry>,
    /// Runs of schedules removed on reload, by name, while they may still go: a schedule
    /// added back meanwhile waits for its old run (no overlap across reloads).
    removed: Vec<(String, String)>,
    evaluated: watch::Sender<Option<DateTime<Utc>>>,
}

impl ScheduleDriver {
    /// A driver for `schedules`, its state read from (and new schedules recorded in) `journal`.
    pub fn new(
        queue: Arc<RunQueue>,
        journal: Journal,
        state_dir: PathBuf,
        schedules: &[ScheduleConfig],
        now: DateTime<Utc>,
    ) -> anyhow::Result<Self> {
        let mut driver = ScheduleDriver {
            queue,
            journal,
            state_dir,
            entries: Vec::new(),
            removed: Vec::new(),
            evaluated: watch::channel(None).0,
        };
        driver.apply(schedules, now, false)?;
        Ok(driver)
    }

    /// Changes `now` whenever an evaluation at `now` has completed (for tests and logs).
    pub fn evaluations(&self) -> watch::Receiver<Option<DateTime<Utc>>> {
        self.evaluated.subscribe()
    }

    /// Switches to a reloaded config's schedules: same name, same state; changed cron or
    /// jitter, no catch-up from before the change; removed, forgotten.
    pub fn reconfigure(&mut self, schedules: &[ScheduleConfig], now: DateTime<Utc>) {
        if let Err(e) = self.apply(schedules, now, true) {
            tracing::error!("schedules: {e:#}");
        }
    }

    fn apply(
        &mut self,
        schedules: &[ScheduleConfig],
        now: DateTime<Utc>,
        reload: bool,
    ) -> anyhow::Result<()> {
        let mut old: Vec<Entry> = std::mem::take(&mut self.entries);
        for config in schedules {
            let schedule = config
                .schedule()
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("a validated schedule did not parse")?;
            let kept = old
                .iter()
                .position(|e| e.config.name == config.name)
                .map(|i| old.swap_remove(i));
            let entry = match kept {
                Some(mut e) => {
                    if !e.config.same_times(config) {
                        e.state.since = Some(now);
                        e.row.since = now;
                        self.journal.put_schedule(&e.row)?;
                        tracing::info!(schedule = %config.name, "schedule times changed: slots before now are not caught up");
                    }
                    e.config = config.clone();
                    e.schedule = schedule;
                    e
                }
                None => {
                    let row = match self.journal.schedule(&config.name)? {
                        Some(row) => row,
                        None => {
                            let row = ScheduleRow::new(&config.name, now);
                            self.journal.put_schedule(&row)?;
                            row
                        }
                    };
                    let in_flight = self
                        .removed
                        .iter()
                        .position(|(n, _)| *n == config.name)
                        .map(|i| self.removed.swap_remove(i).1);
                    let state = ScheduleState {
                        last_slot: slot_done(&self.journal, &row),
                        since: Some(row.since),
                        running: in_flight.is_some(),
                    };
                    Entry {
                        config: config.clone(),
                        schedule,
                        state,
                        row,
                        in_flight,
                    }
                }
            };
            self.entries.push(entry);
        }
        if reload {
            for gone in old {
                // A run of it already queued goes on; its end is no longer recorded.
                tracing::info!(schedule = %gone.config.name, "schedule removed from the config");
                self.journal.forget_schedule(&gone.config.name)?;
                if let Some(id) = gone.in_flight {
                    self.removed.push((gone.config.name, id));
                }
            }
        }
        Ok(())
    }

    /// Evaluates every schedule at `now`: notes runs that ended, starts due slots. Returns the
    /// next time something is due (runs ending wake the loop separately).
    pub fn tick(&mut self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut next: Option<DateTime<Utc>> = None;
        let queue = &self.queue;
        self.removed
            .retain(|(_, id)| queue.get(id).is_some_and(|v| !v.state.is_finished()));
        for i in 0..self.entries.len() {
            self.note_end(i);
            let before = (self.entries[i].state, self.entries[i].row.clone());
            let decision = {
                let e = &mut self.entries[i];
                scheduler::decide(&e.schedule, &mut e.state, now)
            };
            let mut wait = match decision {
                Decision::Run { slot } => match self.start(i, slot, now) {
                    Start::Submitted => None,
                    Start::Invalid => {
                        scheduler::finished(&mut self.entries[i].state);
                        None
                    }
                    Start::Refused => {
                        // The queue moving wakes the loop; the next slot too (it replaces
                        // this one if the queue is still full then).
                        let e = &mut self.entries[i];
                        (e.state, e.row) = before;
                        e.schedule.next_after(now)
                    }
                    Start::JournalFailed => {
                        let e = &mut self.entries[i];
                        (e.state, e.row) = before;
                        Some(now + JOURNAL_RETRY)
                    }
                },
                Decision::Wait { until } => Some(until),
                // The run's end wakes the loop; the next slot too, to be decided then.
                Decision::Busy => self.entries[i].schedule.next_after(now),
                Decision::Never => None,
            };
            if matches!(decision, Decision::Run { .. }) && wait.is_none() {
                // The next slot after the one just started (or consumed).
                let mut probe = self.entries[i].state;
                probe.running = false;
                if let Decision::Wait { until } =
                    scheduler::decide(&self.entries[i].schedule, &mut probe, now)
                {
                    wait = Some(until);
                }
            }
            if let Some(w) = wait {
                next = Some(next.map_or(w, |n| n.min(w)));
            }
        }
        self.evaluated.send_replace(Some(now));
        next
    }

    /// Notes the end of entry `i`'s run, if it ended.
    fn note_end(&mut self, i: usize) {
        let Some(id) = self.entries[i].in_flight.clone() else {
            return;
        };
        let outcome = match self.queue.get(&id) {
            Some(v) if !v.state.is_finished() => return,
            Some(v) => v.state.as_str().to_string(),
            // Forgotten by the queue already: the journal has it.
            None => self
                .journal
                .run_status(&id)
                .ok()
                .flatten()
                .unwrap_or_else(|| "unknown".into()),
        };
        let e = &mut self.entries[i];
        e.in_flight = None;
        scheduler::finished(&mut e.state);
        if e.row.last_run_id.as_deref() == Some(id.as_str()) {
            e.row.last_outcome = Some(outcome.clone());
            if let Err(err) = self.journal.put_schedule(&e.row) {
                tracing::warn!(schedule = %e.config.name, "journaling the run's outcome: {err:#}");
            }
        }
        tracing::info!(schedule = %e.config.name, run = %id, outcome = %outcome, "scheduled run ended");
    }

    /// Records slot `slot` of entry `i` and submits its run.
    fn start(&mut self, i: usize, slot: DateTime<Utc>, now: DateTime<Utc>) -> Start {
        let e = &mut self.entries[i];
        let name = e.config.name.clone();
        let slot_text = slot.to_rfc3339_opts(SecondsFormat::Secs, true);
        let playbook = match load_playbook(&e.config) {
            Ok(p) => p,
            Err(problem) => {
                tracing::error!(schedule = %name, slot = %slot_text, "not run: {problem}");
                e.row.last_slot = Some(slot);
                e.row.last_run_id = None;
                e.row.last_started_at = Some(now);
                e.row.last_outcome = Some("invalid".into());
                e.row.last_error = Some(problem);
                return match self.journal.put_schedule(&e.row) {
                    Ok(()) => Start::Invalid,
                    Err(err) => {
                        tracing::error!(schedule = %name, "journaling the slot: {err:#}");
                        Start::JournalFailed
                    }
                };
            }
        };
        let run_id = uuid::Uuid::now_v7().to_string();
        let previous = e.row.clone();
        e.row.last_slot = Some(slot);
        e.row.last_run_id = Some(run_id.clone());
        e.row.last_started_at = Some(now);
        e.row.last_outcome = Some("queued".into());
        e.row.last_error = None;
        // The slot is in the journal before the run exists: a restart never runs it again.
        if let Err(err) = self.journal.put_schedule(&e.row) {
            tracing::error!(schedule = %name, slot = %slot_text, "journaling the slot: {err:#}; retrying in a minute");
            e.row = previous;
            return Start::JournalFailed;
        }
        let opts = RunOptions {
            run_id: run_id.clone(),
            check: e.config.check,
            base_dir: e
                .config
                .path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            extra_vars: e.config.vars.clone(),
            facts: serde_json::Value::Null,
            state_dir: self.state_dir.clone(),
            schedule: Some(name.clone()),
            tags: Vec::new(),
            skip_tags: Vec::new(),
            skip_capacity: false,
        };
        match self.queue.submit(playbook, opts) {
            Ok(_) => {
                e.in_flight = Some(run_id.clone());
                tracing::info!(schedule = %name, slot = %slot_text, run = %run_id, playbook = %e.config.playbook, "scheduled run accepted");
                Start::Submitted
            }
            Err(err) => {
                if matches!(err, SubmitError::QueueFull(_)) {
                    tracing::warn!(schedule = %name, slot = %slot_text, "{err}: the slot waits for a run to end");
                }
                if let Err(err) = self.journal.put_schedule(&previous) {
                    tracing::error!(schedule = %name, "restoring the schedule's journal row: {err:#}");
                }
                e.row = previous;
                Start::Refused
            }
        }
    }

    /// Evaluates now, then whenever the next slot comes, a run is accepted or ends, or `config`
    /// changes (SIGHUP); returns when `stop` becomes true.
    pub async fn run(
        mut self,
        timer: Arc<dyn Timer>,
        mut config: watch::Receiver<Arc<AgentConfig>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut runs = self.queue.watch_runs();
        loop {
            runs.borrow_and_update();
            let next = self.tick(timer.now());
            let sleep = async {
                match next {
                    Some(at) => timer.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            // Biased: a reloaded config applies before the slots it changes are evaluated.
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return,
                changed = config.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let c = config.borrow_and_update().clone();
                    self.reconfigure(&c.schedules, timer.now());
                }
                changed = runs.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = sleep => {}
            }
        }
    }
}

/// The last slot that counts as run: a slot whose run was queued but never started (bosund
/// stopped and cancelled the queue, or died before the runner began it) did not run, so it
/// is due again (once, as a catch-up).
fn slot_done(journal: &Journal, row: &ScheduleRow) -> Option<DateTime<Utc>> {
    let never_started = row.last_outcome.as_deref() == Some("queued")
        && row
            .last_run_id
            .as_deref()
            .is_some_and(|id| matches!(journal.run_status(id), Ok(None)));
    if never_started {
        tracing::info!(schedule = %row.name, "the last slot's run never started: it is due again");
        row.last_slot.map(|s| s - chrono::Duration::seconds(1))
    } else {
        row.last_slot
    }
}

/// Reads and validates a schedule's playbook with its variables; the problems as one line.
fn load_playbook(config: &ScheduleConfig) -> Result<Playbook, String> {
    let text = std::fs::read_to_string(&config.path)
        .map_err(|e| format!("reading playbook {}: {e}", config.path.display()))?;
    let names: Vec<String> = config.vars.keys().cloned().collect();
    let base = playbook::BaseDir {
        path: config
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
        origin: playbook::BaseOrigin::PlaybookDir,
    };
    let source = Source::new(config.path.display().to_string(), text);
    crate::config::load_playbook(source, &names, &base).map_err(|d| {
        let all: Vec<String> = d
            .located()
            .into_iter()
            .map(|l| format!("{}:{}:{}: {}", l.file, l.line, l.column, l.message))
            .collect();
        format!("the playbook is invalid: {}", all.join("; "))
    })
}

/// Starts the scheduler on the current runtime for `bosund run`, its first evaluation (the
/// catch-up of slots missed while bosund was down) at once. Send the reloaded config to the
/// returned sender. With schedules configured, a journal that cannot be opened is an error
/// (bosund refuses to start rather than run them without their state).
pub fn start(
    config: &Arc<AgentConfig>,
    queue: Arc<RunQueue>,
    state_dir: &Path,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<watch::Sender<Arc<AgentConfig>>> {
    let (tx, rx) = watch::channel(config.clone());
    let journal = match Journal::open(state_dir) {
        Ok(j) => j,
        Err(e) if config.schedules.is_empty() => {
            tracing::warn!(
                "no [[schedule]] can run until bosund is restarted with a usable journal: {e:#}"
            );
            return Ok(tx);
        }
        Err(e) => return Err(e.context("opening the journal for [[schedule]]")),
    };
    let driver = ScheduleDriver::new(
        queue,
        journal,
        state_dir.to_path_buf(),
        &config.schedules,
        Utc::now(),
    )?;
    if !config.schedules.is_empty() {
        tracing::info!(schedules = config.schedules.len(), "scheduler started");
    }
    tokio::spawn(driver.run(Arc::new(SystemTimer), rx, stop));
    Ok(tx)
}

/// One schedule as `bosund schedule list` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ScheduleListing {
    /// The schedule's name.
    pub name: String,
    /// Its playbook, as named in the config.
    pub playbook: String,
    /// The cron expression (UTC).
    pub cron: String,
    /// The jitter, e.g. `15m` (`0s` for none).
    pub jitter: String,
    /// A slot was missed (bosund was down or busy): the daemon runs it as soon as it can.
    pub due: bool,
    /// The next three slots, jitter applied (RFC 3339, UTC).
    pub next: Vec<String>,
    /// The last slot started, if any.
    pub last_run: Option<LastRun>,
}

/// The last slot of a schedule.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LastRun {
    /// The slot (RFC 3339).
    pub slot: String,
    /// When the run was submitted (RFC 3339).
    pub started_at: Option<String>,
    /// `queued`, `running`, `ok`, `failed`, `cancelled`, or `invalid` (the playbook could not
    /// be loaded; see `error`).
    pub outcome: String,
    /// The run's id (`bosund history --run ID`); none when it did not run.
    pub run_id: Option<String>,
    /// Why it did not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Every configured schedule at `now`, from the config and the journal (the daemon need not
/// run; no journal yet means no schedule has run).
pub fn list(
    config: &AgentConfig,
    journal: Option<&Journal>,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<ScheduleListing>> {
    let rfc = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut out = Vec::new();
    for c in &config.schedules {
        let schedule = c.schedule().map_err(|e| anyhow::anyhow!("{e}"))?;
        // No journal: nothing has run yet.
        let row = match journal {
            Some(j) => j.schedule(&c.name)?,
            None => None,
        };
        let due = row.as_ref().zip(journal).is_some_and(|(r, journal)| {
            let mut probe = ScheduleState {
                last_slot: slot_done(journal, r),
                since: Some(r.since),
                running: false,
            };
            matches!(
                scheduler::decide(&schedule, &mut probe, now),
                Decision::Run { .. }
            )
        });
        let last_run = match row {
            Some(r) => match r.last_slot {
                None => None,
                Some(slot) => {
                    let mut outcome = r.last_outcome.unwrap_or_else(|| "unknown".into());
                    // `queued` is all the scheduler wrote; the run's own row knows more.
                    if outcome == "queued"
                        && let (Some(id), Some(journal)) = (&r.last_run_id, journal)
                        && let Some(status) = journal.run_status(id)?
                    {
                        outcome = status;
                    }
                    Some(LastRun {
                        slot: rfc(slot),
                        started_at: r.last_started_at.map(rfc),
                        outcome,
                        run_id: r.last_run_id,
                        error: r.last_error,
                    })
                }
            },
            None => None,
        };
        out.push(ScheduleListing {
            name: c.name.clone(),
            playbook: c.playbook.clone(),
            cron: c.cron.clone(),
            jitter: humantime::format_duration(c.jitter).to_string(),
            due,
            next: schedule.upcoming(now, 3).into_iter().map(rfc).collect(),
            last_run,
        });
    }
    Ok(out)
}

//! The run queue: one run at a time per host, a bounded line of runs waiting behind it, and the
//! thread that executes them.
//!
//! Why a thread of its own: the engine's future is not `Send` (its event sink is a plain
//! `&mut dyn EventSink`), and steps do blocking work (file writes, hashing, SQLite), which must
//! not stall the API. So runs execute one after another on a dedicated thread with its own
//! current-thread runtime, while the API's runtime only moves requests and events.
//!
//! Every run's events are journaled (the journal is opened by that thread, the only one that
//! writes it) and kept in memory for the API: the SSE stream of a run replays them from the
//! start and then follows. Memory is bounded: at most [`KEEP_FINISHED`] finished runs keep
//! their events, and fewer when their events pass [`EVENT_BUDGET`] bytes (command output
//! counts); older runs are in the journal only.
//!
//! Cancelling the running run drops the engine's future, which kills the step's child
//! processes (they never outlive their step); the queue then emits the events the engine
//! could not: the interrupted step `failed` with the reason, and the summary. The journal so
//! never keeps a cancelled run as `running`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::engine::{self, RunOptions};
use crate::host::facts::Facts;
use crate::journal::Journal;
use bosun_model::event::{RunEvent, StepReport, StepStatus, Summary};
use bosun_model::playbook::Playbook;

/// Finished runs whose events stay in memory (for `GET /v1/runs/{id}/events`).
pub const KEEP_FINISHED: usize = 16;
/// Roughly how many bytes of events finished runs may keep in memory (a 1 GiB host).
pub const EVENT_BUDGET: usize = 32 * 1024 * 1024;

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Waiting behind the running run.
    Queued,
    /// Executing now.
    Running,
    /// Ended with no failed step.
    Ok,
    /// A step failed.
    Failed,
    /// Cancelled (through the API, or because bosund stopped) before it ended by itself.
    Cancelled,
}

impl RunState {
    /// The run will not change any more.
    pub fn is_finished(self) -> bool {
        matches!(self, RunState::Ok | RunState::Failed | RunState::Cancelled)
    }

    /// The word used in the API and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Ok => "ok",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }
}

/// What the API shows of a run.
#[derive(Debug, Clone)]
pub struct RunView {
    /// The run's id.
    pub id: String,
    /// The playbook's name.
    pub playbook: String,
    /// Check mode.
    pub check: bool,
    /// Where it is.
    pub state: RunState,
    /// RFC 3339 time it was accepted.
    pub submitted_at: String,
    /// Counts so far (final once finished).
    pub summary: Summary,
    /// Why it was cancelled.
    pub cancel_reason: Option<String>,
    /// The `[[schedule]]` that started it.
    pub schedule: Option<String>,
}

/// Why a submission was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue holds `queue_limit` runs already.
    #[error("{0} runs are already waiting (queue_limit); retry when one has finished")]
    QueueFull(usize),
    /// bosund is stopping.
    #[error("bosund is shutting down and accepts no new runs")]
    ShuttingDown,
}

/// Why a cancellation was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CancelError {
    /// No such run in memory.
    #[error("no run {0} is known to this bosund")]
    NotFound(String),
    /// It already ended.
    #[error("run {0} has already finished ({1})")]
    Finished(String, &'static str),
}

/// Counts of finished runs by outcome, since bosund started.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcomes {
    /// Runs that ended ok.
    pub ok: u64,
    /// Runs with a failed step.
    pub failed: u64,
    /// Runs cancelled.
    pub cancelled: u64,
    /// Submissions refused because the queue was full.
    pub rejected: u64,
}

struct Entry {
    view: RunView,
    events: Vec<RunEvent>,
    /// Number of events so far; SSE streams wait on it. Also wakes them when the run ends.
    progress: watch::Sender<usize>,
    /// Set to the reason to cancel.
    cancel: watch::Sender<Option<String>>,
    /// The work, until the runner takes it.
    job: Option<Job>,
    /// Approximate size of `events`.
    bytes: usize,
}

/// A run waiting for the runner.
struct Job {
    playbook: Playbook,
    opts: RunOptions,
    /// What the run reads while it runs and that goes away when dropped (a bundle's private
    /// directory): kept until the run has ended, or dropped when it is cancelled while queued.
    files: Option<Box<dyn Send>>,
}

struct Inner {
    /// Oldest first.
    runs: VecDeque<Entry>,
    limit: usize,
    outcomes: Outcomes,
    /// `None` once shutting down.
    jobs: Option<mpsc::UnboundedSender<String>>,
    idle: watch::Sender<bool>,
}

/// The queue of runs: shared by the API (submit, look, cancel) and the runner thread.
pub struct RunQueue {
    inner: Mutex<Inner>,
}

/// A run's events for a follower: from `from` on, and whether more may come.
pub struct EventsFrom {
    /// Events at index `from` and after.
    pub events: Vec<RunEvent>,
    /// The run has ended (or is no longer in memory): no more events will come.
    pub finished: bool,
}

impl RunQueue {
    /// A queue that lets `limit` runs wait, and the thread that executes them with its journal
    /// in `state_dir`. The thread ends after [`RunQueue::close`] once the queue is empty.
    pub fn start(
        limit: usize,
        state_dir: PathBuf,
    ) -> std::io::Result<(Arc<Self>, std::thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (idle, _) = watch::channel(true);
        let queue = Arc::new(RunQueue {
            inner: Mutex::new(Inner {
                runs: VecDeque::new(),
                limit,
                outcomes: Outcomes::default(),
                jobs: Some(tx),
                idle,
            }),
        });
        let q = queue.clone();
        let handle = std::thread::Builder::new()
            .name("bosun-runner".into())
            .spawn(move || runner(q, rx, state_dir))?;
        Ok((queue, handle))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes how many runs may wait (config reload); runs already queued stay.
    pub fn set_limit(&self, limit: usize) {
        self.lock().limit = limit;
    }

    /// Accepts a run: it starts when the runs before it have ended. `run_id` is taken from
    /// `opts`.
    pub fn submit(&self, playbook: Playbook, opts: RunOptions) -> Result<RunView, SubmitError> {
        self.submit_with_files(playbook, opts, None)
    }

    /// [`RunQueue::submit`] of a playbook whose files live in `files` (a bundle's private
    /// directory, removed when it is dropped): kept until the run has ended.
    pub fn submit_with_files(
        &self,
        playbook: Playbook,
        opts: RunOptions,
        files: Option<Box<dyn Send>>,
    ) -> Result<RunView, SubmitError> {
        let mut inner = self.lock();
        let Some(jobs) = inner.jobs.clone() else {
            return Err(SubmitError::ShuttingDown);
        };
        // Queued and running together: a run just accepted is `queued` until the runner
        // picks it up, yet it is the one about to run, not one waiting.
        let active = inner
            .runs
            .iter()
            .filter(|e| matches!(e.view.state, RunState::Queued | RunState::Running))
            .count();
        if active > inner.limit {
            inner.outcomes.rejected += 1;
            return Err(SubmitError::QueueFull(active - 1));
        }
        let view = RunView {
            id: opts.run_id.clone(),
            playbook: playbook.name.clone(),
            check: opts.check,
            state: RunState::Queued,
            submitted_at: now(),
            summary: Summary::default(),
            cancel_reason: None,
            schedule: opts.schedule.clone(),
        };
        let id = view.id.clone();
        inner.runs.push_back(Entry {
            view: view.clone(),
            events: Vec::new(),
            progress: watch::channel(0).0,
            cancel: watch::channel(None).0,
            job: Some(Job {
                playbook,
                opts,
                files,
            }),
            bytes: 0,
        });
        inner.idle.send_replace(false);
        if jobs.send(id).is_err() {
            // The runner thread is gone (it panicked): say so rather than queue forever.
            inner.runs.pop_back();
            inner.jobs = None;
            return Err(SubmitError::ShuttingDown);
        }
        Ok(view)
    }

    /// Every run in memory, newest first.
    pub fn list(&self) -> Vec<RunView> {
        self.lock()
            .runs
            .iter()
            .rev()
            .map(|e| e.view.clone())
            .collect()
    }

    /// One run, if in memory.
    pub fn get(&self, id: &str) -> Option<RunView> {
        self.lock()
            .runs
            .iter()
            .find(|e| e.view.id == id)
            .map(|e| e.view.clone())
    }

    /// Runs waiting, and the id of the running one.
    pub fn depth(&self) -> (usize, Option<String>) {
        let inner = self.lock();
        let waiting = inner
            .runs
            .iter()
            .filter(|e| e.view.state == RunState::Queued)
            .count();
        let running = inner
            .runs
            .iter()
            .find(|e| e.view.state == RunState::Running)
            .map(|e| e.view.id.clone());
        (waiting, running)
    }

    /// A receiver that changes whenever a run is accepted, ends or is cancelled (its value:
    /// nothing is queued or running). The scheduler waits on it for a slot that waits behind
    /// a run.
    pub fn watch_runs(&self) -> watch::Receiver<bool> {
        self.lock().idle.subscribe()
    }

    /// Finished runs by outcome since start.
    pub fn outcomes(&self) -> Outcomes {
        self.lock().outcomes
    }

    /// Events of run `id` from index `from`, and a receiver that changes when more arrive.
    /// `None` when the run is not in memory.
    pub fn events_from(
        &self,
        id: &str,
        from: usize,
    ) -> Option<(EventsFrom, watch::Receiver<usize>)> {
        let inner = self.lock();
        let e = inner.runs.iter().find(|e| e.view.id == id)?;
        let events = e.events.get(from..).map(<[_]>::to_vec).unwrap_or_default();
        Some((
            EventsFrom {
                events,
                finished: e.view.state.is_finished(),
            },
            e.progress.subscribe(),
        ))
    }

    /// Cancels a run: a queued one never starts; the running one is stopped (its step's
    /// processes killed) and ends `cancelled`.
    pub fn cancel(&self, id: &str, reason: &str) -> Result<RunView, CancelError> {
        let mut inner = self.lock();
        let Inner { runs, outcomes, .. } = &mut *inner;
        let e = runs
            .iter_mut()
            .find(|e| e.view.id == id)
            .ok_or_else(|| CancelError::NotFound(id.to_string()))?;
        // Dropped after the lock: a bundle's directory is removed then.
        let mut dropped = None;
        match e.view.state {
            RunState::Queued => {
                e.view.state = RunState::Cancelled;
                e.view.cancel_reason = Some(reason.to_string());
                dropped = e.job.take();
                outcomes.cancelled += 1;
                e.progress.send_modify(|_| {});
            }
            RunState::Running => {
                e.view.cancel_reason = Some(reason.to_string());
                e.cancel.send_replace(Some(reason.to_string()));
            }
            s => return Err(CancelError::Finished(id.to_string(), s.as_str())),
        }
        let view = e.view.clone();
        drop(inner);
        drop(dropped);
        self.update_idle();
        Ok(view)
    }

    /// Stops accepting runs (submissions get [`SubmitError::ShuttingDown`]) and waits until
    /// every run already accepted, queued or running, has ended: nothing is cancelled. For a
    /// restart into a new build that loses no run.
    pub async fn finish_accepted(&self) {
        let mut idle = {
            let mut inner = self.lock();
            inner.jobs = None;
            inner.idle.subscribe()
        };
        let _ = idle.wait_for(|i| *i).await;
    }

    /// Stops accepting runs, cancels the queued ones, lets the running one go on for `grace`,
    /// then cancels it too and waits (bounded) for its end to be journaled. Returns the ids of
    /// the queued runs that were dropped.
    pub async fn drain(&self, grace: Duration) -> Vec<String> {
        let (queued, mut idle) = {
            let mut inner = self.lock();
            inner.jobs = None;
            let queued: Vec<String> = inner
                .runs
                .iter()
                .filter(|e| e.view.state == RunState::Queued)
                .map(|e| e.view.id.clone())
                .collect();
            (queued, inner.idle.subscribe())
        };
        for id in &queued {
            let _ = self.cancel(id, "bosund stopped before the run started");
        }
        if tokio::time::timeout(grace, idle.wait_for(|i| *i))
            .await
            .is_err()
        {
            let running = self.depth().1;
            if let Some(id) = running {
                tracing::warn!(run = %id, "the run did not end within shutdown_timeout ({}); cancelling it", humantime::format_duration(grace));
                let _ = self.cancel(&id, "bosund is stopping (shutdown_timeout reached)");
            }
            // Cancelling drops the step's future: it ends at once unless a step blocks its
            // thread; do not hang the shutdown on that.
            if tokio::time::timeout(Duration::from_secs(10), idle.wait_for(|i| *i))
                .await
                .is_err()
            {
                tracing::error!("the running run did not stop within 10 s of its cancellation");
            }
        }
        queued
    }

    fn update_idle(&self) {
        let inner = self.lock();
        let idle = !inner
            .runs
            .iter()
            .any(|e| matches!(e.view.state, RunState::Queued | RunState::Running));
        inner.idle.send_replace(idle);
    }

    /// Takes the job of `id` and marks it running; `None` if it was cancelled meanwhile.
    fn begin(&self, id: &str) -> Option<(Job, watch::Receiver<Option<String>>)> {
        let mut inner = self.lock();
        let e = inner.runs.iter_mut().find(|e| e.view.id == id)?;
        let job = e.job.take()?;
        e.view.state = RunState::Running;
        Some((job, e.cancel.subscribe()))
    }

    fn push_event(&self, id: &str, event: &RunEvent) {
        let mut inner = self.lock();
        if let Some(e) = inner.runs.iter_mut().find(|e| e.view.id == id) {
            if let RunEvent::StepFinished(r) = event {
                e.view.summary.count(r.status);
            }
            e.bytes += approx_size(event);
            e.events.push(event.clone());
            e.progress.send_replace(e.events.len());
        }
    }

    fn finish(&self, id: &str, cancelled: bool) {
        let mut inner = self.lock();
        let Inner { runs, outcomes, .. } = &mut *inner;
        if let Some(e) = runs.iter_mut().find(|e| e.view.id == id) {
            e.view.state = if cancelled {
                outcomes.cancelled += 1;
                RunState::Cancelled
            } else if e.view.summary.failed > 0 {
                outcomes.failed += 1;
                RunState::Failed
            } else {
                outcomes.ok += 1;
                RunState::Ok
            };
            e.progress.send_modify(|_| {});
        }
        evict(runs, id);
        drop(inner);
        self.update_idle();
    }
}

/// Forgets the oldest finished runs (never `keep`, the one that just ended) while more than
/// [`KEEP_FINISHED`] are kept or their events pass [`EVENT_BUDGET`]. The journal keeps them.
fn evict(runs: &mut VecDeque<Entry>, keep: &str) {
    let mut finished = runs.iter().filter(|e| e.view.state.is_finished()).count();
    let mut bytes: usize = runs.iter().map(|e| e.bytes).sum();
    runs.retain(|e| {
        let evict = e.view.state.is_finished()
            && e.view.id != keep
            && (finished > KEEP_FINISHED || bytes > EVENT_BUDGET);
        if evict {
            finished -= 1;
            bytes -= e.bytes;
        }
        !evict
    });
}

/// What an event costs in memory, roughly: its texts plus a fixed overhead.
fn approx_size(event: &RunEvent) -> usize {
    let texts = match event {
        RunEvent::StepFinished(r) => {
            r.message.as_ref().map_or(0, String::len)
                + r.diff.as_ref().map_or(0, String::len)
                + r.output
                    .as_ref()
                    .map_or(0, |o| o.stdout.len() + o.stderr.len())
        }
        _ => 0,
    };
    256 + texts
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// What the engine said so far, to close a run it could not finish (the daemon's cancel, and
/// `bosund apply` stopped by a signal).
#[derive(Default)]
pub struct Progress {
    summary: Summary,
    /// A step that started and has not finished: (index, name, action, handler).
    open: Option<(usize, String, String, bool)>,
    next_index: usize,
    summary_seen: bool,
    run_started: bool,
}

impl Progress {
    /// Notes an event of the run.
    pub fn see(&mut self, event: &RunEvent) {
        match event {
            RunEvent::StepStarted {
                index,
                name,
                action,
                handler,
            } => {
                self.open = Some((*index, name.clone(), action.clone(), *handler));
                self.next_index = index + 1;
            }
            RunEvent::StepFinished(r) => {
                self.summary.count(r.status);
                self.open = None;
                self.next_index = self.next_index.max(r.index + 1);
            }
            RunEvent::Summary(_) => self.summary_seen = true,
            RunEvent::RunStarted { .. } => self.run_started = true,
            RunEvent::Invalid { .. } => {}
        }
    }

    /// The run has started (its `run_started` event was seen).
    pub fn started(&self) -> bool {
        self.run_started
    }

    /// The events that end a cancelled run: its open step failed with `reason`, the summary.
    pub fn closing(&self, reason: &str) -> Vec<RunEvent> {
        let (index, name, action, handler) = self.open.clone().unwrap_or((
            self.next_index,
            "(cancelled)".into(),
            "cancel".into(),
            false,
        ));
        let mut summary = self.summary;
        summary.count(StepStatus::Failed);
        vec![
            RunEvent::StepFinished(StepReport {
                index,
                name,
                action,
                handler,
                status: StepStatus::Failed,
                duration_ms: 0.0,
                attempts: 1,
                message: Some(format!("cancelled: {reason}")),
                diff: None,
                output: None,
            }),
            RunEvent::Summary(summary),
        ]
    }
}

fn runner(queue: Arc<RunQueue>, mut jobs: mpsc::UnboundedReceiver<String>, state_dir: PathBuf) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the runner's async runtime: {e}; no run will execute");
            return;
        }
    };
    runtime.block_on(async move {
        let mut journal = match Journal::open(&state_dir) {
            Ok(j) => Some(j),
            Err(e) => {
                tracing::error!("runs are not journaled: {e:#}");
                None
            }
        };
        // An upgrade bosund died in is finished or rolled back before any run may touch k3s.
        match engine::settle_interrupted(&state_dir).await {
            Ok(Some(settled)) => tracing::warn!("at start: {settled}"),
            Ok(None) => {}
            Err(e) => tracing::error!("at start: {e:#}"),
        }
        while let Some(id) = jobs.recv().await {
            let Some((job, mut cancel)) = queue.begin(&id) else {
                continue;
            };
            let Job {
                playbook,
                mut opts,
                files,
            } = job;
            opts.facts = serde_json::to_value(Facts::gather().await).unwrap_or(Value::Null);
            tracing::info!(run = %id, playbook = %playbook.name, check = opts.check, "run started");
            let progress = RefCell::new(Progress::default());
            let mut sink = |event: &RunEvent| {
                progress.borrow_mut().see(event);
                if let Some(j) = journal.as_mut()
                    && let Err(e) = j.record(event)
                {
                    if crate::journal::is_disk_full(&e) {
                        tracing::error!(run = %id, "journal write failed: no space left on device: {e:#}");
                    } else {
                        tracing::warn!(run = %id, "journal write failed: {e:#}");
                    }
                }
                queue.push_event(&id, event);
            };
            let cancelled = {
                let run = engine::run(&playbook, &opts, &mut sink);
                tokio::select! {
                    biased;
                    _ = run => None,
                    reason = cancel.wait_for(Option::is_some) => Some(
                        reason.ok().and_then(|r| r.clone()).unwrap_or_else(|| "cancelled".into()),
                    ),
                }
            };
            if let Some(reason) = &cancelled {
                let closing = progress.borrow().closing(reason);
                for event in &closing {
                    sink(event);
                }
                tracing::warn!(run = %id, "run cancelled: {reason}");
            }
            // The run's files (a bundle's directory) go before the run is seen to end.
            drop(files);
            queue.finish(&id, cancelled.is_some());
            if let Some(v) = queue.get(&id) {
                let s = v.summary;
                tracing::info!(run = %id, outcome = v.state.as_str(), ok = s.ok, changed = s.changed, failed = s.failed, skipped = s.skipped, "run ended");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_a_run_fails_its_open_step_and_counts_it() {
        let mut p = Progress::default();
        p.see(&RunEvent::StepStarted {
            index: 0,
            name: "a".into(),
            action: "command".into(),
            handler: false,
        });
        p.see(&RunEvent::StepFinished(StepReport {
            index: 0,
            name: "a".into(),
            action: "command".into(),
            handler: false,
            status: StepStatus::Changed,
            duration_ms: 1.0,
            attempts: 1,
            message: None,
            diff: None,
            output: None,
        }));
        p.see(&RunEvent::StepStarted {
            index: 1,
            name: "sleep".into(),
            action: "command".into(),
            handler: false,
        });
        let events = p.closing("operator");
        let RunEvent::StepFinished(r) = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(
            (r.index, r.name.as_str(), r.status),
            (1, "sleep", StepStatus::Failed)
        );
        assert_eq!(r.message.as_deref(), Some("cancelled: operator"));
        assert_eq!(
            events[1],
            RunEvent::Summary(Summary {
                ok: 0,
                changed: 1,
                failed: 1,
                skipped: 0,
                rescued: 0,
            })
        );
    }

    fn entry(id: &str, state: RunState, bytes: usize) -> Entry {
        Entry {
            view: RunView {
                id: id.into(),
                playbook: "p".into(),
                check: false,
                state,
                submitted_at: now(),
                summary: Summary::default(),
                cancel_reason: None,
                schedule: None,
            },
            events: Vec::new(),
            progress: watch::channel(0).0,
            cancel: watch::channel(None).0,
            job: None,
            bytes,
        }
    }

    #[test]
    fn eviction_keeps_unfinished_runs_and_bounds_count_and_bytes() {
        let mut runs: VecDeque<Entry> = (0..KEEP_FINISHED + 3)
            .map(|i| entry(&format!("f{i}"), RunState::Ok, 10))
            .collect();
        runs.push_front(entry("running", RunState::Running, EVENT_BUDGET * 2));
        evict(&mut runs, "f0");
        let ids: Vec<&str> = runs.iter().map(|e| e.view.id.as_str()).collect();
        // Over budget because of the running run: every finished run goes but the one kept.
        assert_eq!(ids, vec!["running", "f0"]);

        let mut runs: VecDeque<Entry> = (0..KEEP_FINISHED + 2)
            .map(|i| entry(&format!("f{i}"), RunState::Failed, 10))
            .collect();
        runs.push_back(entry("queued", RunState::Queued, 0));
        let last = format!("f{}", KEEP_FINISHED + 1);
        evict(&mut runs, &last);
        assert_eq!(runs.len(), KEEP_FINISHED + 1);
        assert_eq!(runs.front().unwrap().view.id, "f2", "the oldest go first");
        assert_eq!(runs.back().unwrap().view.id, "queued");
    }

    #[test]
    fn closing_between_steps_still_fails_the_run() {
        let p = Progress::default();
        let events = p.closing("stop");
        assert!(
            matches!(&events[1], RunEvent::Summary(s) if s.failed == 1),
            "{events:?}"
        );
    }
}

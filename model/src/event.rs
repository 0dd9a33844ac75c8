//! The events of a run: what `bosund apply --output json` prints one per line, what the
//! journal records, and what the control CLI renders. Adding a field is compatible; renaming
//! or removing one is not.

use serde::{Deserialize, Serialize};

use crate::playbook::LocatedDiagnostic;

/// One event of a run. Serialised with an `event` field naming the variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    /// The run began.
    RunStarted {
        /// Unique id of the run (a UUIDv7: sorts by start time).
        run_id: String,
        /// The playbook's `name`.
        playbook: String,
        /// `--check`: nothing is changed.
        check: bool,
        /// RFC 3339 time the run began.
        started_at: String,
        /// The `[[schedule]]` of the agent config that started the run; absent otherwise.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        schedule: Option<String>,
    },
    /// A step (or handler) began.
    StepStarted {
        /// Position among the steps (handlers continue the count).
        index: usize,
        /// The step's `name`.
        name: String,
        /// Its action key.
        action: String,
        /// It is a handler.
        handler: bool,
    },
    /// A step (or handler) ended.
    StepFinished(StepReport),
    /// The playbook is invalid; nothing ran.
    Invalid {
        /// Every problem found.
        diagnostics: Vec<LocatedDiagnostic>,
    },
    /// The run ended. Always the last event.
    Summary(Summary),
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Nothing needed changing.
    Ok,
    /// The host was changed (under `--check`: would be).
    Changed,
    /// The step failed; the run stops after it.
    Failed,
    /// `when` was false.
    Skipped,
}

impl StepStatus {
    /// The word shown in human output.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Ok => "ok",
            StepStatus::Changed => "changed",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
        }
    }
}

/// The result of one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// Position among the steps (handlers continue the count).
    pub index: usize,
    /// The step's `name`.
    pub name: String,
    /// Its action key.
    pub action: String,
    /// It is a handler.
    pub handler: bool,
    /// How it ended.
    pub status: StepStatus,
    /// Wall time, all attempts included.
    pub duration_ms: f64,
    /// Attempts made (1 unless `retries` was used).
    pub attempts: u32,
    /// What was done or found, or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Unified diff of a file's content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// A command's output and exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<CommandOutput>,
}

/// What a command printed and returned.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CommandOutput {
    /// Standard output, lossily decoded, capped (1 MiB; the agent's `host::process`).
    pub stdout: String,
    /// Standard error, lossily decoded, capped.
    pub stderr: String,
    /// Exit code; -1 when the process was killed by a signal.
    pub rc: i32,
}

/// Counts of step outcomes: the last event of every run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Steps that found nothing to change.
    pub ok: usize,
    /// Steps that changed something.
    pub changed: usize,
    /// Steps that failed.
    pub failed: usize,
    /// Steps skipped by `when`.
    pub skipped: usize,
    /// Steps that failed inside a block whose `rescue` then ran (the run went on).
    #[serde(default)]
    pub rescued: usize,
}

impl Summary {
    /// Counts one more step.
    pub fn count(&mut self, status: StepStatus) {
        match status {
            StepStatus::Ok => self.ok += 1,
            StepStatus::Changed => self.changed += 1,
            StepStatus::Failed => self.failed += 1,
            StepStatus::Skipped => self.skipped += 1,
        }
    }
}

/// Where a run's events go: a renderer, the journal, an API stream, or several.
pub trait EventSink {
    /// Receives one event, in order.
    fn emit(&mut self, event: &RunEvent);
}

impl<F: FnMut(&RunEvent)> EventSink for F {
    fn emit(&mut self, event: &RunEvent) {
        self(event)
    }
}

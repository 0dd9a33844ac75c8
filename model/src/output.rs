//! Rendering a run's events for a terminal (`--output human`) or a program (`--output json`,
//! JSON Lines). Both write each event as it arrives, so a run is followed live.

use std::io::Write;

use crate::event::{EventSink, RunEvent, StepStatus};

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A line per step, then `ok=N changed=N failed=N skipped=N`.
    Human,
    /// JSON Lines, as every `--output json` of bosund and bosun: one compact JSON value per
    /// line (a run: an event per line, the summary last; a listing: a record per line; a
    /// single result: one line).
    Json,
}

/// Writes events as one JSON object per line.
pub struct JsonLines<W: Write>(pub W);

impl<W: Write> EventSink for JsonLines<W> {
    fn emit(&mut self, event: &RunEvent) {
        // A closed stdout (the reader went away) must not abort the run on the host.
        if let Ok(line) = serde_json::to_string(event) {
            let _ = writeln!(self.0, "{line}");
            let _ = self.0.flush();
        }
    }
}

/// Writes events for a person: a line per step with its status and duration, diffs under
/// changed files when asked, the error under a failed step, and the counts at the end.
pub struct Human<W: Write> {
    out: W,
    diff: bool,
    /// The run is under `--check` (from its `RunStarted`).
    check: bool,
}

impl<W: Write> Human<W> {
    /// A renderer; `diff` shows file diffs.
    pub fn new(out: W, diff: bool) -> Self {
        Self {
            out,
            diff,
            check: false,
        }
    }
}

impl<W: Write> EventSink for Human<W> {
    fn emit(&mut self, event: &RunEvent) {
        let out = &mut self.out;
        let _ = match event {
            RunEvent::RunStarted {
                playbook, check, ..
            } => {
                self.check = *check;
                writeln!(
                    out,
                    "{playbook}{}",
                    if *check {
                        " (check mode: nothing is changed)"
                    } else {
                        ""
                    }
                )
            }
            RunEvent::StepStarted { .. } => Ok(()),
            RunEvent::StepFinished(r) => {
                let label = if r.handler {
                    format!("handler: {}", r.name)
                } else {
                    r.name.clone()
                };
                let mut line = format!(
                    "{:<8} {label} ({})",
                    r.status.as_str(),
                    duration(r.duration_ms)
                );
                if r.attempts > 1 {
                    line.push_str(&format!(" after {} attempts", r.attempts));
                }
                // Under --check an `ok` may be a step that did not run (a command whose
                // `changed_when = false` keeps it from counting as a change): its message says
                // so ("would run").
                let says = match r.status {
                    StepStatus::Changed | StepStatus::Skipped => true,
                    StepStatus::Ok => self.check,
                    StepStatus::Failed => false,
                };
                if let (true, Some(m)) = (says, &r.message) {
                    line.push_str(&format!(": {m}"));
                }
                let mut res = writeln!(out, "{line}");
                if r.status == StepStatus::Failed {
                    if let Some(m) = &r.message {
                        res = res.and_then(|()| writeln!(out, "         error: {m}"));
                    }
                    if let Some(o) = &r.output {
                        for l in o
                            .stderr
                            .lines()
                            .rev()
                            .take(10)
                            .collect::<Vec<_>>()
                            .into_iter()
                            .rev()
                        {
                            res = res.and_then(|()| writeln!(out, "         | {l}"));
                        }
                    }
                }
                if self.diff
                    && let Some(d) = &r.diff
                {
                    for l in d.lines() {
                        res = res.and_then(|()| writeln!(out, "    {l}"));
                    }
                }
                res
            }
            RunEvent::Invalid { diagnostics } => {
                let mut res = Ok(());
                for d in diagnostics {
                    res = res.and_then(|()| {
                        writeln!(
                            out,
                            "{}:{}:{}: error: {}",
                            d.file, d.line, d.column, d.message
                        )
                    });
                }
                res
            }
            RunEvent::Summary(s) => {
                let rescued = if s.rescued > 0 {
                    format!(" rescued={}", s.rescued)
                } else {
                    String::new()
                };
                writeln!(
                    out,
                    "ok={} changed={} failed={} skipped={}{rescued}",
                    s.ok, s.changed, s.failed, s.skipped
                )
            }
        };
        let _ = out.flush();
    }
}

fn duration(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1000.0)
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::StepReport;

    fn step(status: StepStatus, message: &str) -> RunEvent {
        RunEvent::StepFinished(StepReport {
            index: 0,
            name: "read the config back".into(),
            action: "command".into(),
            handler: false,
            status,
            duration_ms: 2.0,
            attempts: 1,
            message: Some(message.into()),
            diff: None,
            output: None,
        })
    }

    fn render(check: bool, events: &[RunEvent]) -> String {
        let mut out = Vec::new();
        let mut h = Human::new(&mut out, false);
        h.emit(&RunEvent::RunStarted {
            run_id: "r".into(),
            playbook: "demo".into(),
            check,
            started_at: "2026-12-07T00:00:00Z".into(),
            schedule: None,
        });
        for e in events {
            h.emit(e);
        }
        String::from_utf8(out).unwrap()
    }

    /// A command kept from counting as a change by `changed_when = false` did not run under
    /// --check: the line says "would run" instead of a bare `ok`.
    #[test]
    fn under_check_an_ok_step_that_did_not_run_says_so() {
        let out = render(true, &[step(StepStatus::Ok, "would run")]);
        assert!(
            out.contains("ok       read the config back (2.0 ms): would run\n"),
            "{out}"
        );
        let out = render(false, &[step(StepStatus::Ok, "ran")]);
        assert!(
            out.contains("ok       read the config back (2.0 ms)\n"),
            "{out}"
        );
    }
}

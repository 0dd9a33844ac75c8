//! What `bosun run` shows while hosts run and at the end. Human: the agent's own renderer
//! (`bosun_model::output::Human`) per host, lines prefixed with the host name when there are
//! several, a spinner per host on a terminal (indicatif), a summary table. JSON: JSON Lines —
//! every agent event with a `host` field added, plus bosun's own `host_started`, `host_note`,
//! `host_finished` and a final `run_summary`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bosun_model::event::{EventSink, RunEvent};
use bosun_model::output::Human;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::{Value, json};

use super::fleet::{HostStatus, Slot};

/// The outcome of one host, as printed in the summary and in `host_finished`.
#[derive(Debug, Clone, Serialize)]
pub struct HostRecord {
    /// Inventory name (or the --host argument).
    pub host: String,
    /// `user@host:port` connected to.
    pub address: String,
    /// How it ended.
    pub status: HostStatus,
    /// Its batch (0-based).
    pub batch: usize,
    /// Start order across the run; `None` when it never started.
    pub started: Option<usize>,
    /// Steps ok.
    pub ok: usize,
    /// Steps changed.
    pub changed: usize,
    /// Steps failed.
    pub failed: usize,
    /// Steps skipped.
    pub skipped: usize,
    /// bosund was uploaded first.
    pub uploaded: bool,
    /// bosund's exit code.
    pub exit_code: Option<u32>,
    /// Wall time for the host, connection included.
    pub duration_ms: f64,
    /// Why it failed or was unreachable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A `Write` that keeps bytes for the caller to take (the agent renderer writes here).
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct HostView {
    renderer: Human<Buffer>,
    buffer: Buffer,
    bar: Option<ProgressBar>,
}

/// Shared by every host task; each call prints whole lines.
pub struct Reporter {
    json: bool,
    diff: bool,
    prefix: bool,
    multi: Option<MultiProgress>,
    hosts: Mutex<HashMap<String, HostView>>,
    width: usize,
}

impl Reporter {
    /// `names` are the hosts of the run (for alignment and whether to prefix lines).
    pub fn new(json: bool, diff: bool, names: &[String]) -> Reporter {
        let multi = (!json && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Reporter {
            json,
            diff,
            prefix: names.len() > 1,
            multi,
            hosts: Mutex::new(HashMap::new()),
            width: names.iter().map(|n| n.len()).max().unwrap_or(0),
        }
    }

    fn out_json(&self, value: &Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{value}");
        let _ = out.flush();
    }

    /// Prints human lines to stdout (above the spinners).
    fn out_lines(&self, host: &str, text: &str) {
        if text.is_empty() {
            return;
        }
        let mut lines = String::new();
        for l in text.lines() {
            if self.prefix {
                lines.push_str(&format!("{host:<w$} | {l}\n", w = self.width));
            } else {
                lines.push_str(l);
                lines.push('\n');
            }
        }
        let print = || {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(lines.as_bytes());
            let _ = out.flush();
        };
        match &self.multi {
            Some(m) => m.suspend(print),
            None => print(),
        }
    }

    /// A host begins.
    pub fn host_started(&self, host: &str, address: &str, slot: Slot) {
        if self.json {
            self.out_json(
                &json!({"event": "host_started", "host": host, "address": address,
                "batch": slot.batch, "started": slot.started}),
            );
            return;
        }
        let bar = self.multi.as_ref().map(|m| {
            let b = m.add(ProgressBar::new_spinner());
            b.set_style(
                ProgressStyle::with_template("{spinner} {prefix} {wide_msg} {elapsed}")
                    .expect("valid template"),
            );
            b.set_prefix(format!("{host:<w$}", w = self.width));
            b.set_message("connecting");
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        let buffer = Buffer::default();
        self.hosts.lock().expect("not poisoned").insert(
            host.to_string(),
            HostView {
                renderer: Human::new(buffer.clone(), self.diff),
                buffer,
                bar,
            },
        );
    }

    /// Something bosun did or learned for a host (upload, host key recorded).
    pub fn note(&self, host: &str, message: &str) {
        if self.json {
            self.out_json(&json!({"event": "host_note", "host": host, "message": message}));
            return;
        }
        if let Some(bar) = self
            .hosts
            .lock()
            .expect("not poisoned")
            .get(host)
            .and_then(|v| v.bar.clone())
        {
            bar.set_message(message.to_string());
        }
        let line = format!("bosun: {host}: {message}");
        match &self.multi {
            Some(m) => m.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// One event from the host's bosund.
    pub fn event(&self, host: &str, event: &RunEvent) {
        if self.json {
            let mut value = serde_json::to_value(event).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut value {
                m.insert("host".into(), Value::String(host.to_string()));
            }
            self.out_json(&value);
            return;
        }
        let text = {
            let mut hosts = self.hosts.lock().expect("not poisoned");
            let Some(view) = hosts.get_mut(host) else {
                return;
            };
            if let (Some(bar), RunEvent::StepStarted { index, name, .. }) = (&view.bar, event) {
                bar.set_message(format!("[{}] {name}", index + 1));
            }
            view.renderer.emit(event);
            std::mem::take(&mut *view.buffer.0.lock().expect("not poisoned"))
        };
        self.out_lines(host, &String::from_utf8_lossy(&text));
    }

    /// One of several runs on a host ended (a rolling upgrade's): its spinner goes, nothing
    /// is printed; the host's end is [`Reporter::host_finished`].
    pub fn host_done(&self, host: &str) {
        if let Some(view) = self.hosts.lock().expect("not poisoned").remove(host)
            && let Some(bar) = view.bar
        {
            bar.finish_and_clear();
        }
    }

    /// A host ended (or never started).
    pub fn host_finished(&self, record: &HostRecord) {
        if self.json {
            let mut v = serde_json::to_value(record).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                m.insert("event".into(), "host_finished".into());
            }
            self.out_json(&v);
            return;
        }
        if let Some(view) = self
            .hosts
            .lock()
            .expect("not poisoned")
            .remove(&record.host)
            && let Some(bar) = view.bar
        {
            bar.finish_and_clear();
        }
        if let Some(e) = &record.error {
            let line = format!("bosun: {}: {}: {e}", record.host, record.status.as_str());
            match &self.multi {
                Some(m) => m.suspend(|| eprintln!("{line}")),
                None => eprintln!("{line}"),
            }
        }
    }

    /// The end: a table (human) or `run_summary` (JSON).
    pub fn summary(&self, records: &[HostRecord], exit_code: u8) {
        if self.json {
            self.out_json(
                &json!({"event": "run_summary", "hosts": records, "exit_code": exit_code}),
            );
            return;
        }
        if records.len() == 1 && records[0].status != HostStatus::NotStarted {
            // One host: the agent's own summary line already said it all.
            let r = &records[0];
            println!(
                "{}: {} in {}",
                r.host,
                r.status.as_str(),
                secs(r.duration_ms)
            );
            return;
        }
        let w = self.width.max(4);
        println!();
        println!(
            "{:<w$}  {:<11}  {:>4}  {:>7}  {:>6}  {:>11}  {:>8}",
            "host", "status", "ok", "changed", "failed", "unreachable", "duration"
        );
        for r in records {
            println!(
                "{:<w$}  {:<11}  {:>4}  {:>7}  {:>6}  {:>11}  {:>8}",
                r.host,
                r.status.as_str(),
                r.ok,
                r.changed,
                r.failed,
                usize::from(r.status == HostStatus::Unreachable),
                if r.started.is_some() {
                    secs(r.duration_ms)
                } else {
                    "-".into()
                }
            );
        }
        let count = |s: HostStatus| records.iter().filter(|r| r.status == s).count();
        println!(
            "hosts={} ok={} changed={} failed={} unreachable={} not_started={} cancelled={}",
            records.len(),
            count(HostStatus::Ok),
            count(HostStatus::Changed),
            count(HostStatus::Failed),
            count(HostStatus::Unreachable),
            count(HostStatus::NotStarted),
            count(HostStatus::Cancelled)
        );
    }
}

fn secs(ms: f64) -> String {
    format!("{:.2} s", ms / 1000.0)
}

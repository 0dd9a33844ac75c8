//! The journald source: the systemd journal, read through `journalctl -o json --follow`,
//! resumed after the cursor of the last accepted entry (`--after-cursor`). Without a cursor it
//! starts at this boot. `$BOSUN_JOURNALCTL` replaces the program (tests feed journal-format
//! JSON through it).
//!
//! journalctl is started through `host::process::Streaming` like every child of bosund: in
//! its own process group, killed when the source stops or the program is restarted.
//!
//! Invariant: the cursor saved in the journal is that of the last entry the sink accepted, so
//! after a restart nothing accepted is read again but one batch in flight.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncBufReadExt;
use tokio::time::Instant;

use super::batch::Acks;
use super::event::Origin;
use super::ship::{LogSink, Shipper};
use super::{Identity, POLL};
use crate::host::process::{Pipe, Streaming};
use crate::journal::Journal;
use crate::telemetry::config::{LogSourceConfig, render_stream};
use crate::telemetry::sinks;
use crate::telemetry::stats;
use crate::telemetry::stop::{Stop, pause};

/// One journal entry, as shipped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct JournalEntry {
    /// `__CURSOR`.
    pub cursor: String,
    /// `__REALTIME_TIMESTAMP` in milliseconds.
    pub timestamp_ms: Option<i64>,
    /// `IDENTIFIER[PID]: MESSAGE` (the identifier is SYSLOG_IDENTIFIER, else _COMM, else the
    /// unit).
    pub message: String,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        // journalctl writes non-UTF-8 or binary fields as arrays of bytes.
        Value::Array(bytes) => Some(
            String::from_utf8_lossy(
                &bytes
                    .iter()
                    .filter_map(|b| b.as_u64().map(|b| b as u8))
                    .collect::<Vec<_>>(),
            )
            .into_owned(),
        ),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Parses one line of `journalctl -o json`; `None` for a line that is not a journal entry.
pub(crate) fn parse(line: &str) -> Option<JournalEntry> {
    let v: Value = serde_json::from_str(line).ok()?;
    let cursor = v.get("__CURSOR")?.as_str()?.to_string();
    let timestamp_ms = v
        .get("__REALTIME_TIMESTAMP")
        .and_then(text)
        .and_then(|t| t.parse::<i64>().ok())
        .map(|us| us / 1000);
    let msg = v.get("MESSAGE").and_then(text).unwrap_or_default();
    let ident = ["SYSLOG_IDENTIFIER", "_COMM", "_SYSTEMD_UNIT"]
        .iter()
        .find_map(|k| v.get(*k).and_then(text));
    let pid = v.get("_PID").and_then(text);
    let message = match (ident, pid) {
        (Some(i), Some(p)) => format!("{i}[{p}]: {msg}"),
        (Some(i), None) => format!("{i}: {msg}"),
        _ => msg,
    };
    Some(JournalEntry {
        cursor,
        timestamp_ms,
        message,
    })
}

/// The journalctl arguments: follow, JSON, after `cursor` or from this boot.
pub(crate) fn args(cursor: Option<&str>) -> Vec<String> {
    let mut a = vec![
        "--output=json".to_string(),
        "--follow".to_string(),
        "--no-pager".to_string(),
        "--no-tail".to_string(),
    ];
    match cursor {
        Some(c) => a.push(format!("--after-cursor={c}")),
        None => a.push("--boot".to_string()),
    }
    a
}

/// The journalctl program: `$BOSUN_JOURNALCTL` or `journalctl`.
fn journalctl() -> PathBuf {
    std::env::var_os("BOSUN_JOURNALCTL")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("journalctl"))
}

/// The cursor of the last entry the acknowledged batches accepted (by reading order).
fn last_cursor(acks: Vec<Acks>) -> Option<String> {
    acks.into_iter()
        .filter_map(|a| a.cursor)
        .max_by_key(|(seq, _)| *seq)
        .map(|(_, cursor)| cursor)
}

/// Runs the journald source until stopped, sending to `sink` with about `budget` bytes of
/// events queued at most: `journalctl -o json --follow` after the last accepted cursor;
/// restarted (after the last cursor read) when it exits.
pub(crate) async fn run_journald<S: LogSink>(
    cfg: LogSourceConfig,
    ident: Identity,
    journal: Rc<RefCell<Journal>>,
    sink: S,
    budget: usize,
    mut stop: Stop,
) {
    let id = cfg.id.clone();
    let stream = render_stream(
        &cfg.log_stream,
        &[
            ("instance_id", &ident.instance_id),
            ("hostname", &ident.hostname),
        ],
    );
    let mut shipper = Shipper::new(cfg, sink, budget);
    let mut last_read = journal.borrow().log_cursor(&id).unwrap_or_else(|e| {
        tracing::error!(source = %id, "reading the journald cursor: {e:#}");
        None
    });
    let mut seq = 0u64;
    let mut restarts = sinks::backoff();
    'outer: while stop.borrow().is_none() {
        let program = journalctl();
        let mut argv = vec![program.to_string_lossy().into_owned()];
        argv.extend(args(last_read.as_deref()));
        let started = Streaming::spawn(&argv, &BTreeMap::new(), Pipe::Null, Pipe::Piped)
            .and_then(|mut child| child.take_async_stdout().map(|out| (child, out)));
        let (mut child, stdout) = match started {
            Ok(c) => c,
            Err(e) => {
                let d = restarts.next().unwrap_or(Duration::from_secs(30));
                tracing::error!(source = %id, "{e:#}; retrying in {d:?} (is systemd's journalctl installed?)");
                if !pause(d, &mut stop).await {
                    break;
                }
                continue;
            }
        };
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        loop {
            let now = Instant::now();
            let stopping = stop.borrow().is_some();
            shipper.publish_gauges();
            match shipper.send_ready(&mut stop).await {
                Some(acks) => {
                    if let Some(cursor) = last_cursor(acks)
                        && let Err(e) = journal.borrow().save_log_cursor(&id, &cursor)
                    {
                        tracing::error!(source = %id, "saving the journald cursor: {e:#}");
                    }
                }
                None => break 'outer,
            }
            if stopping {
                break 'outer;
            }
            let wait = shipper.until_flush(now).unwrap_or(POLL * 4);
            if shipper.full() {
                if !pause(wait.max(Duration::from_millis(10)), &mut stop).await {
                    break 'outer;
                }
                continue;
            }
            tokio::select! {
                line = lines.next_line() => match line {
                    Ok(Some(line)) => {
                        if let Some(entry) = parse(&line) {
                            seq += 1;
                            last_read = Some(entry.cursor.clone());
                            let origin = Origin::Journal { seq, cursor: entry.cursor };
                            shipper.emit(&stream, entry.message, entry.timestamp_ms, origin);
                        }
                    }
                    Ok(None) | Err(_) => {
                        let d = restarts.next().unwrap_or(Duration::from_secs(30));
                        // Its end (and stderr) is known only once it is reaped; kill the group
                        // first, as a journalctl that closed its stdout may still be running.
                        child.kill();
                        let ended = match child.wait().await {
                            Ok(exit) if exit.stderr.is_empty() => format!("exit code {}", exit.code),
                            Ok(exit) => format!("exit code {}: {}", exit.code, exit.stderr_for_message()),
                            Err(e) => format!("{e:#}"),
                        };
                        tracing::warn!(source = %id, "journalctl ended ({ended}); restarting in {d:?}");
                        // Flush what was read before restarting after it.
                        if let Some(acks) = shipper.send_ready(&mut stop).await
                            && let Some(cursor) = last_cursor(acks)
                        {
                            let _ = journal.borrow().save_log_cursor(&id, &cursor);
                        }
                        if !pause(d, &mut stop).await {
                            break 'outer;
                        }
                        break;
                    }
                },
                _ = tokio::time::sleep(wait) => {}
                changed = stop.changed() => if changed.is_err() { break 'outer },
            }
        }
    }
    stats::set_source(&id, 0, Duration::ZERO);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_with_text_and_byte_messages() {
        let e = parse(r#"{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"1767323045123456","MESSAGE":"started","SYSLOG_IDENTIFIER":"k3s","_PID":"77"}"#).unwrap();
        assert_eq!(e.cursor, "s=1;i=2");
        assert_eq!(e.timestamp_ms, Some(1767323045123));
        assert_eq!(e.message, "k3s[77]: started");
        let b = parse(r#"{"__CURSOR":"c","MESSAGE":[104,105]}"#).unwrap();
        assert_eq!(b.message, "hi");
        assert_eq!(b.timestamp_ms, None);
        assert!(parse("{}").is_none());
        assert!(parse("garbage").is_none());
    }

    #[test]
    fn resumes_after_the_cursor() {
        assert!(args(Some("s=1")).contains(&"--after-cursor=s=1".to_string()));
        assert!(args(None).contains(&"--boot".to_string()));
    }
}

//! Log events and the pure steps from lines to events: multi-line assembly, timestamps,
//! include/exclude, and splitting events CloudWatch would refuse as too large.

use std::time::{Duration, Instant};

use crate::telemetry::config::{Pattern, TimestampRule};

/// Bytes CloudWatch Logs counts per event on top of its message.
pub(crate) const EVENT_OVERHEAD: usize = 26;
/// Largest event message sent. CloudWatch documented 256 KiB per event (events and overhead);
/// newer documentation allows 1 MB, but 256 KiB is accepted everywhere.
pub(crate) const MAX_EVENT_BYTES: usize = 256 * 1024 - EVENT_OVERHEAD;
/// Largest multi-line event assembled before it is cut (memory bound).
pub(crate) const MAX_ASSEMBLED_BYTES: usize = 4 * MAX_EVENT_BYTES;

/// Where an event came from: what to checkpoint once CloudWatch accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Bytes of a file up to `end` (exclusive), in its `generation` (bumped on truncation).
    File {
        /// The file's device and inode.
        id: FileId,
        /// Bumped when the file was truncated: older positions no longer apply.
        generation: u32,
        /// Offset just past the event's last byte.
        end: u64,
    },
    /// A journald entry.
    Journal {
        /// Order of reading.
        seq: u64,
        /// `__CURSOR`.
        cursor: String,
    },
}

/// A file's identity on this host: device and inode (with a fingerprint kept beside it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct FileId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

/// One event, ready for a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogEvent {
    /// Milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// The text (UTF-8, at most [`MAX_EVENT_BYTES`]).
    pub message: String,
    /// What it acknowledges.
    pub origin: Origin,
}

impl LogEvent {
    /// Bytes counted against a batch's limit.
    pub fn cost(&self) -> usize {
        self.message.len() + EVENT_OVERHEAD
    }
}

/// Milliseconds since the epoch, now.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Splits a message larger than `max` bytes into parts that each fit, every part prefixed with
/// `[bosun: part i/n] ` so a reader can join them; smaller messages are returned as they are.
pub(crate) fn split_oversize(message: String, max: usize) -> Vec<String> {
    if message.len() <= max {
        return vec![message];
    }
    // The marker is at most 32 bytes ("[bosun: part 99999/99999] ").
    let room = max.saturating_sub(32).max(1);
    let mut chunks = Vec::new();
    let mut rest = message.as_str();
    while !rest.is_empty() {
        let mut cut = room.min(rest.len());
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        chunks.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    let n = chunks.len();
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| format!("[bosun: part {}/{n}] {c}", i + 1))
        .collect()
}

/// The event's time from its text, by `rule`; `None` when it does not match or parse.
/// A format without a year (syslog's `%b %d %H:%M:%S`) is read in the current year; a format
/// without a zone is UTC.
pub(crate) fn extract_timestamp(rule: &TimestampRule, text: &str) -> Option<i64> {
    let caps = rule.regex.0.captures(text)?;
    let s = caps.get(1).or_else(|| caps.get(0))?.as_str();
    if let Ok(t) = chrono::DateTime::parse_from_str(s, &rule.format) {
        return Some(t.timestamp_millis());
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, &rule.format) {
        return Some(t.and_utc().timestamp_millis());
    }
    let year = chrono::Datelike::year(&chrono::Utc::now());
    let with_year = format!("{year} {s}");
    let fmt = format!("%Y {}", rule.format);
    chrono::NaiveDateTime::parse_from_str(&with_year, &fmt)
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

/// Include and exclude patterns of a source.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    /// Keep only matches of one of these (all when empty).
    pub include: Vec<Pattern>,
    /// Drop matches of any of these.
    pub exclude: Vec<Pattern>,
}

impl Filter {
    /// Whether an event with this text is shipped.
    pub fn keeps(&self, text: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| p.0.is_match(text)))
            && !self.exclude.iter().any(|p| p.0.is_match(text))
    }
}

/// A multi-line event being assembled.
#[derive(Debug)]
struct Partial {
    text: String,
    end: u64,
    last: Instant,
}

/// Joins lines into events: without a start pattern every line is an event; with one, a line
/// matching it starts an event and the others continue the current one. An event is complete
/// when the next one starts, when it has waited `idle` for more lines, or when it reached
/// [`MAX_ASSEMBLED_BYTES`].
#[derive(Debug)]
pub(crate) struct Assembler {
    start: Option<Pattern>,
    current: Option<Partial>,
}

impl Assembler {
    /// An assembler; `start` is the multi-line start pattern.
    pub fn new(start: Option<Pattern>) -> Self {
        Self {
            start,
            current: None,
        }
    }

    /// Adds a line (without its newline) ending at file offset `end`; returns the event it
    /// completed, as (text, end offset).
    pub fn push(&mut self, line: String, end: u64, now: Instant) -> Option<(String, u64)> {
        let Some(start) = &self.start else {
            return Some((line, end));
        };
        let starts = start.0.is_match(&line);
        match &mut self.current {
            Some(cur) if !starts && cur.text.len() + line.len() < MAX_ASSEMBLED_BYTES => {
                cur.text.push('\n');
                cur.text.push_str(&line);
                cur.end = end;
                cur.last = now;
                None
            }
            _ => {
                let done = self.current.take().map(|p| (p.text, p.end));
                self.current = Some(Partial {
                    text: line,
                    end,
                    last: now,
                });
                done
            }
        }
    }

    /// The current event, if it has waited `idle` (or always when `idle` is zero).
    pub fn flush_idle(&mut self, idle: Duration, now: Instant) -> Option<(String, u64)> {
        if self
            .current
            .as_ref()
            .is_some_and(|c| now.duration_since(c.last) >= idle)
        {
            self.current.take().map(|p| (p.text, p.end))
        } else {
            None
        }
    }

    /// Whether an event is being assembled.
    pub fn holds(&self) -> bool {
        self.current.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> Pattern {
        Pattern(regex::Regex::new(s).unwrap())
    }

    #[test]
    fn oversize_messages_are_split_with_markers_and_nothing_lost() {
        let msg: String = "é".repeat(1000); // 2000 bytes
        let parts = split_oversize(msg.clone(), 300);
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| p.len() <= 300), "{parts:?}");
        let n = parts.len();
        let mut joined = String::new();
        for (i, p) in parts.iter().enumerate() {
            let marker = format!("[bosun: part {}/{n}] ", i + 1);
            assert!(p.starts_with(&marker), "{p}");
            joined.push_str(&p[marker.len()..]);
        }
        assert_eq!(joined, msg);
        assert_eq!(split_oversize("short".into(), 300), vec!["short"]);
    }

    #[test]
    fn multiline_events_join_until_the_next_start() {
        let now = Instant::now();
        let mut a = Assembler::new(Some(pat(r"^\d{4}-")));
        assert_eq!(a.push("2026-01-01 boom".into(), 16, now), None);
        assert_eq!(a.push("  at foo".into(), 25, now), None);
        assert_eq!(
            a.push("2026-01-01 next".into(), 41, now),
            Some(("2026-01-01 boom\n  at foo".into(), 25))
        );
        assert_eq!(a.flush_idle(Duration::from_secs(1), now), None);
        assert_eq!(
            a.flush_idle(Duration::from_secs(1), now + Duration::from_secs(2)),
            Some(("2026-01-01 next".into(), 41))
        );
        let mut plain = Assembler::new(None);
        assert_eq!(plain.push("x".into(), 2, now), Some(("x".into(), 2)));
    }

    #[test]
    fn timestamps_are_read_with_and_without_zone_or_year() {
        let rule = |r: &str, f: &str| TimestampRule {
            regex: pat(r),
            format: f.into(),
        };
        let t = extract_timestamp(
            &rule(r"^(\S+ \S+)", "%Y-%m-%d %H:%M:%S%.f"),
            "2026-03-01 10:00:00.250 hello",
        );
        assert_eq!(t, Some(1772359200250));
        let z = extract_timestamp(
            &rule(r"^(\S+)", "%Y-%m-%dT%H:%M:%S%z"),
            "2026-03-01T11:00:00+0100 x",
        );
        assert_eq!(z, Some(1772359200000));
        let syslog = extract_timestamp(
            &rule(r"^(\w{3} +\d+ \S+)", "%b %d %H:%M:%S"),
            "Mar  1 10:00:00 host x",
        );
        assert!(syslog.is_some());
        assert_eq!(extract_timestamp(&rule(r"^(\S+)", "%Y"), "nope"), None);
    }

    #[test]
    fn filters_include_then_exclude() {
        let f = Filter {
            include: vec![pat("ERROR|WARN")],
            exclude: vec![pat("healthz")],
        };
        assert!(f.keeps("ERROR disk"));
        assert!(!f.keeps("INFO ok"));
        assert!(!f.keeps("WARN healthz slow"));
        assert!(Filter::default().keeps("anything"));
    }
}

//! Kubernetes CRI container log lines (what kubelet/k3s write under /var/log/pods):
//! `<RFC 3339 nano timestamp> <stdout|stderr> <P|F> <message>`. `P` marks a partial line (the
//! runtime split a long line); the parts up to the next `F` make one event.

/// One parsed line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CriLine<'a> {
    /// Milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// `stdout` or `stderr`.
    pub stream: &'a str,
    /// `P`: more parts follow.
    pub partial: bool,
    /// The text.
    pub message: &'a str,
}

/// Parses one line; `None` when it is not in CRI format.
pub(crate) fn parse(line: &str) -> Option<CriLine<'_>> {
    let mut it = line.splitn(4, ' ');
    let ts = it.next()?;
    let stream = it.next()?;
    let tag = it.next()?;
    let message = it.next().unwrap_or("");
    if stream != "stdout" && stream != "stderr" {
        return None;
    }
    let partial = match tag.split(':').next()? {
        "P" => true,
        "F" => false,
        _ => return None,
    };
    let timestamp_ms = chrono::DateTime::parse_from_rfc3339(ts)
        .ok()?
        .timestamp_millis();
    Some(CriLine {
        timestamp_ms,
        stream,
        partial,
        message,
    })
}

/// Joins partial lines. Memory is bounded by the caller's line limit times the parts it holds;
/// a joined message past `max` bytes is returned as is (the source splits it with markers).
#[derive(Debug, Default)]
pub(crate) struct CriJoiner {
    held: Option<(i64, String)>,
}

impl CriJoiner {
    /// Feeds a line; returns a complete event `(timestamp, message)`. A line not in CRI format
    /// is returned whole with `None` as its time (the read time is used).
    pub fn push(&mut self, line: &str) -> Option<(Option<i64>, String)> {
        let Some(l) = parse(line) else {
            return Some((None, line.to_string()));
        };
        match (&mut self.held, l.partial) {
            (Some((_, text)), true) => {
                text.push_str(l.message);
                None
            }
            (None, true) => {
                self.held = Some((l.timestamp_ms, l.message.to_string()));
                None
            }
            (Some(_), false) => {
                let (ts, mut text) = self.held.take()?;
                text.push_str(l.message);
                Some((Some(ts), text))
            }
            (None, false) => Some((Some(l.timestamp_ms), l.message.to_string())),
        }
    }

    /// Whether a partial event is held.
    pub fn holds(&self) -> bool {
        self.held.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_and_partial_lines() {
        let l = parse("2026-01-02T03:04:05.123456789Z stderr F oops: failed").unwrap();
        assert_eq!(l.stream, "stderr");
        assert!(!l.partial);
        assert_eq!(l.message, "oops: failed");
        assert_eq!(l.timestamp_ms, 1767323045123);
        assert!(parse("not a cri line").is_none());
        assert_eq!(parse("2026-01-02T03:04:05Z stdout F ").unwrap().message, "");
    }

    #[test]
    fn partial_lines_are_joined_with_the_first_timestamp() {
        let mut j = CriJoiner::default();
        assert_eq!(j.push("2026-01-02T03:04:05.000Z stdout P hello "), None);
        assert!(j.holds());
        assert_eq!(j.push("2026-01-02T03:04:06.000Z stdout P big "), None);
        assert_eq!(
            j.push("2026-01-02T03:04:07.000Z stdout F world"),
            Some((Some(1767323045000), "hello big world".into()))
        );
        assert_eq!(j.push("garbage"), Some((None, "garbage".into())));
    }
}

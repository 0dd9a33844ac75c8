//! The systemd journal, read through `journalctl -o json --follow`, resumed after the cursor
//! of the last accepted entry (`--after-cursor`). Without a cursor it starts at this boot.
//! `$BOSUN_JOURNALCTL` replaces the program (tests feed journal-format JSON through it).

use serde_json::Value;

/// One journal entry, as shipped.
#[derive(Debug, PartialEq, Eq)]
pub struct JournalEntry {
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
pub fn parse(line: &str) -> Option<JournalEntry> {
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
pub fn args(cursor: Option<&str>) -> Vec<String> {
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

//! Object keys of backups: a template with the database and the date, rendered once per backup.
//!
//! Placeholders (single braces, so they pass through Jinja untouched): `{db}`, `{YYYY}`, `{MM}`,
//! `{DD}`, `{hh}`, `{mm}`, `{ss}` (UTC) and `{timestamp}` (`20261128T030000Z`). The timestamp is
//! what [`time_in_key`] reads back when a manifest is missing.

use chrono::{DateTime, NaiveDateTime, Utc};

/// The default template: one folder per database and day.
pub const DEFAULT_KEY_TEMPLATE: &str =
    "backups/mysql/{db}/{YYYY}/{MM}/{DD}/{db}-{timestamp}.sql.zst";

const TIMESTAMP_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// Renders `template` for database `db` at `at`. Errors name an unknown or unclosed placeholder.
pub fn render_key(template: &str, db: &str, at: DateTime<Utc>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("key template {template:?}: `{{` without a closing `}}`"))?;
        let name = &after[..close];
        let value = match name {
            "db" => db.to_string(),
            "YYYY" => at.format("%Y").to_string(),
            "MM" => at.format("%m").to_string(),
            "DD" => at.format("%d").to_string(),
            "hh" => at.format("%H").to_string(),
            "mm" => at.format("%M").to_string(),
            "ss" => at.format("%S").to_string(),
            "timestamp" => at.format(TIMESTAMP_FORMAT).to_string(),
            other => {
                return Err(format!(
                    "key template {template:?}: unknown placeholder {{{other}}}; use {{db}}, {{YYYY}}, {{MM}}, {{DD}}, {{hh}}, {{mm}}, {{ss}} or {{timestamp}}"
                ));
            }
        };
        out.push_str(&value);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    if out.is_empty() || out.starts_with('/') {
        return Err(format!(
            "key template {template:?} renders to {out:?}: an S3 key must be non-empty and not start with `/`"
        ));
    }
    Ok(out)
}

/// The last `YYYYMMDDThhmmssZ` timestamp in `key`, if any.
pub fn time_in_key(key: &str) -> Option<DateTime<Utc>> {
    let bytes = key.as_bytes();
    (0..bytes.len().saturating_sub(15)).rev().find_map(|i| {
        let cand = key.get(i..i + 16)?;
        NaiveDateTime::parse_from_str(cand, TIMESTAMP_FORMAT)
            .ok()
            .map(|t| t.and_utc())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn default_template_renders_and_reads_back() {
        let at = Utc.with_ymd_and_hms(2026, 3, 7, 3, 4, 5).unwrap();
        let key = render_key(DEFAULT_KEY_TEMPLATE, "shop", at).unwrap();
        assert_eq!(
            key,
            "backups/mysql/shop/2026/03/07/shop-20260307T030405Z.sql.zst"
        );
        assert_eq!(time_in_key(&key), Some(at));
        assert_eq!(time_in_key("backups/x.sql.zst"), None);
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        let at = Utc::now();
        assert!(
            render_key("a/{day}", "d", at)
                .unwrap_err()
                .contains("unknown placeholder {day}")
        );
        assert!(
            render_key("a/{db", "d", at)
                .unwrap_err()
                .contains("closing")
        );
        assert!(
            render_key("/{db}", "d", at)
                .unwrap_err()
                .contains("not start with")
        );
    }
}

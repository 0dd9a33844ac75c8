//! The documents stored next to a backup: its [`Manifest`] and its [`VerifyRecord`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use bosun_model::backup::report::TableStats;

/// Suffix of a backup's manifest object.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";
/// Suffix of the record of a successful verification.
pub const VERIFIED_SUFFIX: &str = ".verified.json";
/// Suffix of the record of a failed verification.
pub const VERIFY_FAILED_SUFFIX: &str = ".verify-failed.json";

/// What a backup holds, written as `<key>.manifest.json` after the object itself is complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version of this document.
    pub format: u32,
    /// The database dumped.
    pub database: String,
    /// The backup object's key.
    pub key: String,
    /// `zstd`.
    pub compression: String,
    /// Bytes of the object (compressed).
    pub size: u64,
    /// Bytes of SQL before compression.
    pub uncompressed_size: u64,
    /// SHA-256 of the object's bytes, lowercase hex.
    pub sha256: String,
    /// When the dump started.
    pub started_at: DateTime<Utc>,
    /// When the upload completed.
    pub finished_at: DateTime<Utc>,
    /// `SELECT VERSION()` of the source server.
    pub server_version: String,
    /// First line of the dump tool's `--version`.
    pub tool_version: String,
    /// The base tables, sorted by name, with their row counts and digests as the dump holds
    /// them (format 2, [`crate::backup::dump_scan`]); format 1 had `COUNT(*)` and
    /// `CHECKSUM TABLE` values read from the source beside the dump.
    pub tables: Vec<TableStats>,
    /// Which server's dump: `postgres` for `postgres_backup`; absent for MySQL/MariaDB (every
    /// manifest written before PostgreSQL was backed up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
}

/// The manifest layout written now: tables with dump digests.
pub const MANIFEST_FORMAT: u32 = 2;

impl Manifest {
    /// The tables carry dump digests (format 2): a restore is checked by dumping it again.
    /// Otherwise (format 1) by `COUNT(*)` and `CHECKSUM TABLE` on the server.
    pub fn has_digests(&self) -> bool {
        self.tables.iter().all(|t| t.digest.is_some())
    }
}

/// The result of `backup_verify`, written as `<key>.verified.json` (or `.verify-failed.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRecord {
    /// When the verification finished.
    pub verified_at: DateTime<Utc>,
    /// Everything matched.
    pub ok: bool,
    /// SHA-256 of the object as fetched.
    pub sha256: String,
    /// `SELECT VERSION()` of the server restored into.
    pub server_version: String,
    /// Tables compared.
    pub tables: usize,
    /// What did not match (empty when `ok`).
    pub problems: Vec<String>,
}

/// Differences between the tables a manifest lists and those restored, one line each, in
/// table order. Empty when every table is there with the same row count and checksum.
pub fn compare_tables(expected: &[TableStats], restored: &[TableStats]) -> Vec<String> {
    let mut problems = Vec::new();
    for e in expected {
        match restored.iter().find(|r| r.name == e.name) {
            None => problems.push(format!("table {} is missing after restore", e.name)),
            Some(r) => {
                if r.rows != e.rows {
                    problems.push(format!(
                        "table {}: {} rows in the manifest, {} restored",
                        e.name, e.rows, r.rows
                    ));
                }
                match &e.digest {
                    Some(d) if r.digest.as_ref() != Some(d) => problems.push(format!(
                        "table {}: content digest {d} in the manifest, {} restored",
                        e.name,
                        r.digest.as_deref().unwrap_or("none")
                    )),
                    Some(_) => {}
                    None if r.checksum != e.checksum => problems.push(format!(
                        "table {}: checksum {} in the manifest, {} restored",
                        e.name,
                        show(e.checksum),
                        show(r.checksum)
                    )),
                    None => {}
                }
            }
        }
    }
    for r in restored {
        if !expected.iter().any(|e| e.name == r.name) {
            problems.push(format!(
                "table {} was restored but is not in the manifest",
                r.name
            ));
        }
    }
    problems
}

fn show(c: Option<u64>) -> String {
    c.map_or_else(|| "NULL".into(), |c| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, rows: u64, checksum: Option<u64>) -> TableStats {
        TableStats {
            name: name.into(),
            rows,
            checksum,
            digest: None,
        }
    }

    fn d(name: &str, rows: u64, digest: &str) -> TableStats {
        TableStats {
            name: name.into(),
            rows,
            checksum: None,
            digest: Some(digest.into()),
        }
    }

    #[test]
    fn digests_are_compared_when_the_manifest_has_them() {
        let expected = vec![d("a", 2, "01"), d("b", 1, "02")];
        let restored = vec![d("a", 2, "01"), d("b", 1, "03")];
        assert_eq!(
            compare_tables(&expected, &restored),
            vec!["table b: content digest 02 in the manifest, 03 restored"]
        );
        // A format 1 manifest is read as before: no digest, a `checksum` (or null).
        let old: TableStats =
            serde_json::from_str(r#"{"name":"a","rows":2,"checksum":null}"#).unwrap();
        assert_eq!(old, t("a", 2, None));
        let new = serde_json::to_string(&d("a", 2, "01")).unwrap();
        assert_eq!(new, r#"{"name":"a","rows":2,"digest":"01"}"#);
    }

    #[test]
    fn identical_tables_have_no_problems() {
        let a = vec![t("a", 1, Some(9)), t("b", 0, None)];
        assert!(compare_tables(&a, &a).is_empty());
    }

    #[test]
    fn every_difference_is_named() {
        let expected = vec![
            t("a", 10, Some(1)),
            t("b", 5, Some(2)),
            t("gone", 1, Some(3)),
        ];
        let restored = vec![t("a", 9, Some(1)), t("b", 5, Some(7)), t("extra", 0, None)];
        assert_eq!(
            compare_tables(&expected, &restored),
            vec![
                "table a: 10 rows in the manifest, 9 restored",
                "table b: checksum 2 in the manifest, 7 restored",
                "table gone is missing after restore",
                "table extra was restored but is not in the manifest",
            ]
        );
    }
}

//! The documents `bosund backups list|restore --output json` print and `bosun backups` reads
//! back, their human rendering (one for both ends), and the table figures a backup's manifest
//! records.

use std::io::Write;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One table's size and content checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableStats {
    /// Table name.
    pub name: String,
    /// Rows: in the dump (format 2) or `SELECT COUNT(*)` (format 1).
    pub rows: u64,
    /// Format 1: `CHECKSUM TABLE` (`None` when the server gives NULL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<u64>,
    /// Format 2: the sum of the rows' XXH3-128 as dumped, 32 hex digits
    /// (the agent's `backup::dump_scan`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// Whether a backup was proved to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verification {
    /// `<key>.verified.json` exists.
    Verified,
    /// Only `<key>.verify-failed.json` exists.
    Failed,
    /// Never verified.
    None,
}

/// One backup as `backups list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedBackup {
    /// Key of the backup object.
    pub key: String,
    /// The database dumped.
    pub database: String,
    /// When it was taken (the key's timestamp, else the manifest's `started_at`).
    pub time: DateTime<Utc>,
    /// Bytes of the object (compressed).
    pub size: u64,
    /// Bytes of SQL inside.
    pub uncompressed_size: u64,
    /// SHA-256 of the object, from the manifest.
    pub sha256: String,
    /// Tables in the manifest.
    pub tables: usize,
    /// Rows over all tables, from the manifest.
    pub rows: u64,
    /// Verified, failed verification, or neither.
    pub verification: Verification,
    /// When the latest verification record says it was verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<DateTime<Utc>>,
}

/// `backups list`: the backups under a prefix, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// The bucket listed.
    pub bucket: String,
    /// The prefix listed.
    pub prefix: String,
    /// The backups, oldest first.
    pub backups: Vec<ListedBackup>,
    /// Objects under the prefix that belong to no backup (left alone).
    pub others: usize,
}

/// `1.5 GiB`, `312 KiB`, `17 B`.
pub fn human_size(n: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The listing as a table: time, database, size, SHA-256 (first 16 digits), verification, key.
pub fn render_listing(listing: &Listing, out: &mut impl Write) -> std::io::Result<()> {
    if listing.backups.is_empty() {
        writeln!(
            out,
            "no backups under s3://{}/{}",
            listing.bucket, listing.prefix
        )?;
    } else {
        writeln!(
            out,
            "{:<20} {:<16} {:>10} {:<16} {:<8} key",
            "time (UTC)", "database", "size", "sha256", "verified"
        )?;
        for b in &listing.backups {
            let verified = match b.verification {
                Verification::Verified => "yes",
                Verification::Failed => "FAILED",
                Verification::None => "no",
            };
            writeln!(
                out,
                "{:<20} {:<16} {:>10} {:<16} {:<8} {}",
                b.time.format("%Y-%m-%d %H:%M:%S"),
                b.database,
                human_size(b.size),
                &b.sha256[..b.sha256.len().min(16)],
                verified,
                b.key
            )?;
        }
    }
    if listing.others > 0 {
        writeln!(
            out,
            "({} other objects under the prefix are not backups)",
            listing.others
        )?;
    }
    Ok(())
}

/// `backups restore`: what was restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    /// Bucket of the backup.
    pub bucket: String,
    /// Key of the backup object.
    pub key: String,
    /// The database restored into.
    pub database: String,
    /// `host:port` of the server.
    pub server: String,
    /// `SELECT VERSION()` there.
    pub server_version: String,
    /// SHA-256 of the object, equal to the manifest's.
    pub sha256: String,
    /// Bytes of SQL restored.
    pub sql_bytes: u64,
    /// An existing database was replaced (`--force`).
    pub replaced: bool,
    /// Every table with its row count and checksum, as restored (equal to the manifest's).
    pub tables: Vec<TableStats>,
}

/// Renders a restore's result for a person.
pub fn render_restored(r: &Restored, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "restored s3://{}/{} into {} on {}{} (sha256 {} matches the manifest, {} of SQL)",
        r.bucket,
        r.key,
        r.database,
        r.server,
        if r.replaced { ", replacing it" } else { "" },
        r.sha256,
        human_size(r.sql_bytes)
    )?;
    for t in &r.tables {
        writeln!(out, "  {:<32} {:>12} rows", t.name, t.rows)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn bytes_read_as_binary_units() {
        assert_eq!(human_size(20), "20 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 << 20), "3.0 MiB");
    }
}

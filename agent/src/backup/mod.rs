//! Backups: what the `mysql_backup`, `postgres_backup`, `backup_verify`, `backup_prune`, `rds_snapshot` and
//! `s3_sync` steps share.
//!
//! - [`key`]: object keys from a template with the date, and the date back from a key;
//! - [`manifest`]: the JSON documents stored next to a backup (`<key>.manifest.json`,
//!   `<key>.verified.json`);
//! - [`retention`]: which backups a keep-last/daily/weekly/monthly policy keeps (pure);
//! - [`catalogue`]: the backups under an S3 prefix, with their manifests and verification;
//! - [`upload`]: a byte stream compressed with zstd into an S3 multipart upload, in bounded
//!   memory, completed only on success and aborted otherwise;
//! - [`dump_scan`]: each table's row count and content digest, read off a dump as it streams;
//! - [`mysql`]: the MySQL/MariaDB client and dump tools (queries, dump, restore), password in
//!   `MYSQL_PWD` only;
//! - [`postgres`]: the PostgreSQL tools (`psql`, `pg_dump`), the password in `PGPASSWORD` only;
//!   [`pg_dump_scan`]: row counts and digests read off a plain-format `pg_dump`;
//! - [`iam`]: RDS IAM authentication tokens and the client options they need;
//! - [`rds`]: RDS manual snapshots (identifiers, bosun's tag, listing, waiting), for
//!   `rds_snapshot` and `backup_prune`.
//! - [`read_ahead`]: a reader on its own thread, a bounded number of chunks ahead (the dump
//!   read and scanned beside zstd);
//! - [`restore`]: an object streamed from S3 through SHA-256 and zstd into the client;
//! - [`cli`]: `bosund backups list` and `bosund backups restore`.
//!
//! Layout in a bucket, for one backup at `K`: `K` (the zstd-compressed SQL dump), `K.manifest.json`
//! (written only after `K` is complete: a backup without a manifest is not a backup) and, once
//! verified, `K.verified.json` (or `K.verify-failed.json`).

pub mod catalogue;
pub mod cli;
pub mod dump_scan;
pub mod iam;
pub mod key;
pub mod manifest;
pub mod mysql;
pub mod pg_dump_scan;
pub mod postgres;
pub mod rds;
pub mod read_ahead;
pub mod restore;
pub mod retention;
pub mod upload;

pub use bosun_model::backup::{Number, parse_size};

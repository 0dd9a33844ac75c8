//! `bosund backups list` and `bosund backups restore`: what an operator does with the backups
//! `mysql_backup` made. `bosun backups` runs the same commands on a host over SSH with
//! `--output json` and renders the documents defined here ([`Listing`], [`Restored`]), so
//! both ends share one shape and one human rendering.
//!
//! Restore, and why it never leaves a half-restored database:
//! 1. The target database is looked at first: one that exists and holds tables, views,
//!    routines or events is refused unless `--force`. System schemas are always refused.
//! 2. With `--force` over such a database, the backup is first restored into a scratch
//!    database (`bosun_restore_<random>`) on the same server and checked there like in 3: a
//!    damaged backup, SQL the server refuses, or a table that does not match is found before
//!    the old data is touched, and the scratch database is dropped.
//! 3. The database is (re)created and the object streamed into it through SHA-256 and zstd
//!    (the same path as `backup_verify`); then every table's row count and content digest are
//!    compared with the manifest (the restored database dumped again; `CHECKSUM TABLE` for
//!    format 1 manifests).
//! 4. Any failure in 3 (SHA-256 mismatch, corrupt data, the client failing, a table that
//!    differs, a timeout or interruption dropping the future) drops the database: it is either
//!    fully restored and checked, or absent. After a rehearsal (2) that can only be the server
//!    or the network failing, and the checked copy in the scratch database is kept and named.
//!
//! We restore twice rather than restore into a scratch name and rename: MariaDB and MySQL
//! cannot move tables with triggers, nor views, nor routines and events, to another database,
//! and a backup holds all of those. The price of `--force`: twice the time, and room for a
//! second copy on the server while it runs.

use std::io::Write;

use anyhow::{Context, bail};

pub use bosun_model::backup::report::{
    ListedBackup, Listing, Restored, Verification, human_size, render_listing, render_restored,
};

use super::catalogue;
use super::manifest::{
    MANIFEST_SUFFIX, Manifest, TableStats, VERIFY_FAILED_SUFFIX, VerifyRecord, compare_tables,
};
use super::mysql::{Client, Connection, find_tool, quote_ident, quote_str};
use super::restore;
use crate::aws::{Aws, AwsTarget};
use crate::secrets::{Secret, SecretSource};
use bosun_model::output::OutputFormat;

/// `bosund backups ...`.
#[derive(Debug, clap::Subcommand)]
pub enum BackupsCommand {
    /// List the backups under an S3 prefix: key, database, size, time, SHA-256, verified.
    List(ListArgs),
    /// Restore a backup into a database: SHA-256 checked against the manifest, row counts and
    /// content digests compared (the restored database is dumped again); an existing non-empty database only with --force; a failed restore
    /// drops what it created.
    Restore(RestoreArgs),
}

/// Where S3 is (both subcommands).
#[derive(Debug, clap::Args)]
pub struct S3Args {
    /// The bucket.
    #[arg(long)]
    pub bucket: String,
    /// AWS region [default: from the environment, profile or instance].
    #[arg(long)]
    pub region: Option<String>,
    /// S3 (and SSM) endpoint instead of AWS's [default: AWS_ENDPOINT_URL if set].
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
}

impl S3Args {
    fn target(&self) -> AwsTarget {
        AwsTarget {
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
        }
    }
}

/// `bosund backups list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub s3: S3Args,
    /// Only backups under this prefix (e.g. `backups/mysql/shop/`).
    #[arg(long, default_value = "")]
    pub prefix: String,
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
}

/// `bosund backups restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub s3: S3Args,
    /// Key of the backup object (as `backups list` shows it).
    #[arg(long)]
    pub key: String,
    /// Server to restore into.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Its port.
    #[arg(long, default_value_t = 3306)]
    pub port: u16,
    /// Account that may create and drop the database.
    #[arg(long)]
    pub user: String,
    /// Where the password is: `env:NAME`, `file:/path` or `ssm:/parameter/name` (never the
    /// password itself).
    #[arg(long, value_name = "SOURCE")]
    pub password_source: String,
    /// Database to restore into.
    #[arg(long)]
    pub database: String,
    /// Replace the database if it exists and holds tables, views, routines or events. The
    /// backup is first restored and checked in a scratch database on the same server (twice
    /// the time, room for a second copy), so a backup that does not restore leaves it untouched.
    #[arg(long)]
    pub force: bool,
    /// The client program [default: `mariadb`, else `mysql`, from PATH].
    #[arg(long, value_name = "PROGRAM")]
    pub client_command: Option<String>,
    /// The dump program that reads the restored tables back for their digests [default:
    /// `mariadb-dump`, else `mysqldump`, from PATH].
    #[arg(long, value_name = "PROGRAM")]
    pub dump_command: Option<String>,
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
}

/// Runs a `bosund backups` command; returns the exit code (0 done, 1 failed or refused). With
/// `--output json` the result, or `{"error": "..."}`, is one JSON document on one line of stdout (JSON Lines, as every `--output json`); errors
/// also go to stderr.
pub fn run(command: BackupsCommand) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (output, result) = match command {
        BackupsCommand::List(a) => {
            let r = runtime.block_on(list(&a.s3.target(), &a.s3.bucket, &a.prefix));
            (a.output, r.map(|l| Rendered::Listing(Box::new(l))))
        }
        BackupsCommand::Restore(a) => {
            let req = RestoreRequest {
                aws: a.s3.target(),
                bucket: a.s3.bucket,
                key: a.key,
                host: a.host,
                port: a.port,
                user: a.user,
                password_source: a.password_source,
                database: a.database,
                force: a.force,
                client_command: a.client_command.map(|c| vec![c]),
                dump_command: a.dump_command.map(|c| vec![c]),
                extra_args: Vec::new(),
            };
            (
                a.output,
                runtime
                    .block_on(restore(&req))
                    .map(|r| Rendered::Restored(Box::new(r))),
            )
        }
    };
    let mut out = std::io::stdout().lock();
    match (result, output) {
        (Ok(r), OutputFormat::Json) => {
            let v = match r {
                Rendered::Listing(l) => serde_json::to_value(l)?,
                Rendered::Restored(r) => serde_json::to_value(r)?,
            };
            writeln!(out, "{}", serde_json::to_string(&v)?)?;
            Ok(0)
        }
        (Ok(Rendered::Listing(l)), OutputFormat::Human) => {
            render_listing(&l, &mut out)?;
            Ok(0)
        }
        (Ok(Rendered::Restored(r)), OutputFormat::Human) => {
            render_restored(&r, &mut out)?;
            Ok(0)
        }
        (Err(e), format) => {
            let msg = format!("{e:#}");
            if format == OutputFormat::Json {
                writeln!(out, "{}", serde_json::json!({ "error": msg }))?;
            }
            eprintln!("bosund: error: {msg}");
            Ok(1)
        }
    }
}

enum Rendered {
    Listing(Box<Listing>),
    Restored(Box<Restored>),
}

/// Schemas a restore never writes into.
const SYSTEM_SCHEMAS: &[&str] = &["mysql", "information_schema", "performance_schema", "sys"];

/// Lists the backups under `s3://bucket/prefix` with what their manifests and verification
/// records say.
pub async fn list(target: &AwsTarget, bucket: &str, prefix: &str) -> anyhow::Result<Listing> {
    let aws = Aws::connect(target).await?;
    let s3 = aws.s3();
    let cat = catalogue::list(&s3, bucket, prefix).await?;
    let mut backups = Vec::with_capacity(cat.backups.len());
    for b in cat.backups {
        let manifest: Manifest =
            catalogue::get_json(&s3, bucket, &format!("{}{MANIFEST_SUFFIX}", b.key))
                .await
                .with_context(|| format!("reading the manifest of {}", b.key))?;
        let (verification, verified_at) = if b.verified {
            let record: Option<VerifyRecord> = catalogue::get_json(
                &s3,
                bucket,
                &format!("{}{}", b.key, super::manifest::VERIFIED_SUFFIX),
            )
            .await
            .ok();
            (Verification::Verified, record.map(|r| r.verified_at))
        } else if b.objects.iter().any(|o| o.ends_with(VERIFY_FAILED_SUFFIX)) {
            (Verification::Failed, None)
        } else {
            (Verification::None, None)
        };
        backups.push(ListedBackup {
            key: b.key,
            database: manifest.database,
            time: b.time,
            size: manifest.size,
            uncompressed_size: manifest.uncompressed_size,
            sha256: manifest.sha256,
            tables: manifest.tables.len(),
            rows: manifest.tables.iter().map(|t| t.rows).sum(),
            verification,
            verified_at,
        });
    }
    Ok(Listing {
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
        backups,
        others: cat.others,
    })
}

/// Where and how to restore.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    /// Where S3 is.
    pub aws: AwsTarget,
    /// Bucket of the backup.
    pub bucket: String,
    /// Key of the backup object.
    pub key: String,
    /// Server to restore into.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Account that may create and drop the database.
    pub user: String,
    /// `env:NAME`, `file:/path` or `ssm:/name`.
    pub password_source: String,
    /// Database to restore into.
    pub database: String,
    /// Replace an existing database that holds objects.
    pub force: bool,
    /// The client program and leading arguments (default: `mariadb`, else `mysql`).
    pub client_command: Option<Vec<String>>,
    /// The dump program, to read the restored tables back (default: `mariadb-dump`, else
    /// `mysqldump`).
    pub dump_command: Option<Vec<String>>,
    /// Extra client options (`--ssl-ca=...`).
    pub extra_args: Vec<String>,
}

/// Drops the database when dropped, unless disarmed: a failed restore leaves nothing behind,
/// also when its future is dropped (timeout, Ctrl-C handled by the runtime).
struct DropOnFailure {
    client: Client,
    name: String,
    armed: bool,
}

impl Drop for DropOnFailure {
    fn drop(&mut self) {
        if self.armed {
            match self.client.drop_database_blocking(&self.name) {
                Ok(()) => tracing::warn!(
                    "dropped database {} after the failed restore: nothing half-restored is left",
                    self.name
                ),
                Err(e) => tracing::error!("{e:#}"),
            }
        }
    }
}

/// Problems with the request that need no server: said before anything is fetched.
pub fn request_problems(req: &RestoreRequest) -> Vec<String> {
    let mut problems = Vec::new();
    if req.bucket.is_empty() {
        problems.push("--bucket is empty".into());
    }
    if req.key.is_empty() {
        problems.push("--key is empty: give the key of a backup (see `backups list`)".into());
    } else if req.key.ends_with(MANIFEST_SUFFIX) {
        problems.push(format!(
            "--key {} is a manifest: give the backup object's key (without {MANIFEST_SUFFIX})",
            req.key
        ));
    }
    let db = req.database.as_str();
    if db.is_empty() || db.len() > 64 || db.ends_with(' ') {
        problems.push(format!(
            "--database {db:?} is not a valid database name (1 to 64 characters, no trailing space)"
        ));
    }
    if SYSTEM_SCHEMAS.contains(&db.to_ascii_lowercase().as_str()) {
        problems.push(format!(
            "--database {db} is a system schema: restore into another database"
        ));
    }
    // Not echoed: a password typed where its source belongs must not reach a terminal or log.
    if req.password_source.parse::<SecretSource>().is_err() {
        problems.push(
            "--password-source must be `env:NAME`, `file:/path` or `ssm:/parameter/name`, never the password itself (what was given is not shown)".into(),
        );
    }
    problems
}

/// Tables, views, routines and events in `database`; `None` when it does not exist.
async fn objects_in(client: &Client, database: &str) -> anyhow::Result<Option<u64>> {
    let name = quote_str(database);
    let rows = client
        .query(
            None,
            &format!(
                "SELECT (SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = {name}),
                        (SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = {name})
                      + (SELECT COUNT(*) FROM information_schema.routines WHERE routine_schema = {name})
                      + (SELECT COUNT(*) FROM information_schema.events WHERE event_schema = {name})"
            ),
        )
        .await?;
    let row = rows.first().context("the server did not answer")?;
    let parse = |i: usize| -> anyhow::Result<u64> {
        row.get(i)
            .context("short answer")?
            .parse()
            .context("not a number")
    };
    (parse(0)? > 0).then(|| parse(1)).transpose()
}

/// Restores a backup into `req.database` (see the module documentation for the guarantees).
pub async fn restore(req: &RestoreRequest) -> anyhow::Result<Restored> {
    let problems = request_problems(req);
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    let aws = Aws::connect(&req.aws).await?;
    let s3 = aws.s3();
    let manifest: Manifest =
        catalogue::get_json(&s3, &req.bucket, &format!("{}{MANIFEST_SUFFIX}", req.key))
            .await
            .with_context(|| {
                format!(
                    "s3://{}/{} has no readable manifest: is it the key of a bosun backup whose upload finished? (see `backups list`)",
                    req.bucket, req.key
                )
            })?;
    let source: SecretSource = req.password_source.parse()?;
    let password: Secret = crate::secrets::read(&source, Some(&aws)).await?;
    let client = Client {
        argv: match &req.client_command {
            Some(argv) if !argv.is_empty() => argv.clone(),
            _ => find_tool(&["mariadb", "mysql"]).map(|p| vec![p]).context(
                "neither `mariadb` nor `mysql` is on PATH: install the client (apt-get install mariadb-client) or pass --client-command",
            )?,
        },
        conn: Connection {
            host: req.host.clone(),
            port: req.port,
            user: req.user.clone(),
            password,
            extra_args: req.extra_args.clone(),
            cleartext: false,
        },
    };
    let server = client.conn.endpoint();
    let server_version = client
        .server_version()
        .await
        .with_context(|| format!("connecting to {server}"))?;
    let db = &req.database;
    let existing = objects_in(&client, db)
        .await
        .with_context(|| format!("looking at database {db} on {server}"))?;
    if let Some(n) = existing
        && n > 0
        && !req.force
    {
        bail!(
            "database {db} on {server} already exists and holds {n} tables, views, routines or events: refusing to overwrite it (nothing was changed); pass --force to replace it, or restore into another --database"
        );
    }
    let replacing = existing.is_some_and(|n| n > 0);
    let mut rehearsal = None;
    if replacing {
        // Prove the backup restores, on this server, before the old data goes.
        let scratch = format!(
            "bosun_restore_{}",
            &uuid::Uuid::now_v7().simple().to_string()[20..]
        );
        if let Err(e) = restore_checked(&client, &s3, req, &manifest, &scratch).await {
            bail!(
                "restoring s3://{}/{} failed in a rehearsal (scratch database {scratch}, dropped): {e:#}; database {db} was not touched",
                req.bucket,
                req.key
            );
        }
        rehearsal = Some(DropOnFailure {
            client: client.clone(),
            name: scratch,
            armed: true,
        });
    }
    let quoted = quote_ident(db);
    if existing.is_some() {
        client
            .query(None, &format!("DROP DATABASE {quoted}"))
            .await
            .with_context(|| format!("dropping database {db} on {server} to replace it"))?;
    }
    let (streamed, tables) = match restore_checked(&client, &s3, req, &manifest, db).await {
        Ok(done) => done,
        Err(e) => {
            let kept = rehearsal.as_mut().map(|r| {
                r.armed = false;
                format!(
                    "; the backup restored and checked in database {} is kept for you",
                    r.name
                )
            });
            bail!(
                "restoring s3://{}/{} into {db} failed: {e:#}; database {db} was dropped, nothing half-restored is left{}",
                req.bucket,
                req.key,
                kept.unwrap_or_default()
            );
        }
    };
    if let Some(mut r) = rehearsal {
        r.armed = false;
        client
            .query(None, &format!("DROP DATABASE {}", quote_ident(&r.name)))
            .await
            .with_context(|| format!("dropping the rehearsal database {}", r.name))?;
    }
    Ok(Restored {
        bucket: req.bucket.clone(),
        key: req.key.clone(),
        database: db.clone(),
        server,
        server_version,
        sha256: streamed.sha256,
        sql_bytes: streamed.sql_bytes,
        replaced: existing.is_some(),
        tables,
    })
}

/// Creates `database`, streams the backup into it and compares its tables with the manifest.
/// On any failure the database is dropped before this returns (also when the future is
/// dropped).
async fn restore_checked(
    client: &Client,
    s3: &aws_sdk_s3::Client,
    req: &RestoreRequest,
    manifest: &Manifest,
    database: &str,
) -> anyhow::Result<(restore::Streamed, Vec<TableStats>)> {
    client
        .query(None, &format!("CREATE DATABASE {}", quote_ident(database)))
        .await
        .with_context(|| format!("creating database {database} on {}", client.conn.endpoint()))?;
    let mut guard = DropOnFailure {
        client: client.clone(),
        name: database.to_string(),
        armed: true,
    };
    let streamed = restore::stream_into(
        s3,
        &req.bucket,
        &req.key,
        &manifest.sha256,
        client,
        database,
    )
    .await?;
    let mut problems = streamed.problems.clone();
    let mut tables = Vec::new();
    if problems.is_empty() {
        tables = restore::restored_tables(manifest, client, &req.dump_command, database).await?;
        problems = compare_tables(&manifest.tables, &tables);
    }
    if !problems.is_empty() {
        drop(guard);
        bail!("{}", problems.join("; "));
    }
    guard.armed = false;
    Ok((streamed, tables))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> RestoreRequest {
        RestoreRequest {
            aws: AwsTarget::default(),
            bucket: "b".into(),
            key: "k.sql.zst".into(),
            host: "127.0.0.1".into(),
            port: 3306,
            user: "root".into(),
            password_source: "env:PW".into(),
            database: "shop".into(),
            force: false,
            client_command: None,
            dump_command: None,
            extra_args: vec![],
        }
    }

    #[test]
    fn bad_requests_are_refused_before_any_io() {
        assert!(request_problems(&req()).is_empty());
        let mut r = req();
        r.database = "MySQL".into();
        r.password_source = "hunter2".into();
        r.key = "k.sql.zst.manifest.json".into();
        let p = request_problems(&r).join("\n");
        assert!(p.contains("system schema"), "{p}");
        assert!(p.contains("--password-source"), "{p}");
        assert!(p.contains("is a manifest"), "{p}");
        assert!(!p.contains("hunter2"), "the password leaked: {p}");
    }

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_size(17), "17 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
    }

    #[test]
    fn the_listing_renders_one_line_per_backup() {
        let listing = Listing {
            bucket: "b".into(),
            prefix: "p/".into(),
            backups: vec![ListedBackup {
                key: "p/shop-20260101T030000Z.sql.zst".into(),
                database: "shop".into(),
                time: "2026-01-01T03:00:00Z".parse().unwrap(),
                size: 2048,
                uncompressed_size: 8192,
                sha256: "ab".repeat(32),
                tables: 3,
                rows: 100,
                verification: Verification::Failed,
                verified_at: None,
            }],
            others: 1,
        };
        let mut out = Vec::new();
        render_listing(&listing, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("2026-01-01 03:00:00  shop"), "{text}");
        assert!(text.contains("2.0 KiB abababababababab FAILED"), "{text}");
        assert!(text.contains("1 other objects"), "{text}");
        let json = serde_json::to_value(&listing).unwrap();
        assert_eq!(json["backups"][0]["verification"], "failed");
        let back: Listing = serde_json::from_value(json).unwrap();
        assert_eq!(back, listing);
    }
}

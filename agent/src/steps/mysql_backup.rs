//! `mysql_backup`: dump MySQL/MariaDB databases, compressed, into S3, with a manifest.
//!
//! ```toml
//! mysql_backup = { host = "db.internal", user = "backup", password = "ssm:/prod/db/backup-password",
//!                  databases = ["shop"], bucket = "acme-backups" }
//! ```
//! Per database: `mariadb-dump` (or `mysqldump`) runs with `--single-transaction --quick
//! --routines --events --triggers --hex-blob`; its output is read for every table's row count
//! and content digest ([`crate::backup::dump_scan`]), compressed with zstd and uploaded as an
//! S3 multipart upload in bounded memory (see [`crate::backup::upload`]) while its SHA-256 is
//! computed. The upload is completed only when the dump exited 0, and aborted otherwise, so no
//! partial object is ever visible; then `<key>.manifest.json` is written beside it.
//!
//! The password comes from `password = "env:NAME" | "file:/path" | "ssm:/param"` and reaches
//! the tools in `MYSQL_PWD` only. Like `command`, the step always reports `changed` (a backup
//! was made); `--check` says what it would dump and where. `register` gets the keys of the new
//! backups, one per line, in `stdout`.

use anyhow::Context;
use chrono::Utc;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ActionArgs, Check, CommandOutput, Outcome, StepContext, StepKind};
use crate::aws::{Aws, AwsTarget, describe_error};
use crate::backup::Number;
use crate::backup::dump_scan::Scanning;
use crate::backup::key::{DEFAULT_KEY_TEMPLATE, render_key};
use crate::backup::manifest::{MANIFEST_FORMAT, MANIFEST_SUFFIX, Manifest};
use crate::backup::mysql::{Client, Connection, Dumper, dump_argv, find_tool};
use crate::backup::read_ahead::read_ahead;
use crate::backup::upload::{MEMORY_BUDGET, MultipartUpload, plan_parts};
use crate::backup::{parse_size, upload};
use crate::jinja::is_templated;
use crate::secrets::{Secret, SecretSource};

/// Bytes per chunk read ahead of the compressor (one zstd frame each), and chunks that may
/// wait: with the chunk being filled and the one being compressed, 8 MiB at most.
const READ_AHEAD_CHUNK: usize = upload::FRAME_SIZE;
const READ_AHEAD_DEPTH: usize = 2;

/// Default of `port`.
pub(crate) fn default_port() -> Number {
    Number::Int(3306)
}
fn default_key() -> String {
    DEFAULT_KEY_TEMPLATE.to_string()
}
fn default_level() -> Number {
    Number::Int(3)
}
fn default_max_size() -> String {
    "50GiB".to_string()
}

/// Arguments of `mysql_backup`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MysqlBackupArgs {
    /// Server host name or address (always reached over TCP).
    pub host: String,
    /// Server port.
    #[serde(default = "default_port")]
    pub port: Number,
    /// Account to dump as (needs SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES; PROCESS on
    /// MySQL 8).
    pub user: String,
    /// Where the password is: `env:NAME`, `file:/path` or `ssm:/parameter/name`. Never the
    /// password itself.
    pub password: String,
    /// Databases to back up, one object each.
    pub databases: Vec<String>,
    /// Bucket to upload to.
    pub bucket: String,
    /// Object key template: `{db}`, `{YYYY}`, `{MM}`, `{DD}`, `{hh}`, `{mm}`, `{ss}`,
    /// `{timestamp}` (UTC).
    #[serde(default = "default_key")]
    pub key: String,
    /// AWS region (default: from the environment, profile or instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// S3 (and SSM) endpoint instead of AWS's (default: `AWS_ENDPOINT_URL` if set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// The dump program and leading arguments (default: `mariadb-dump`, else `mysqldump`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump_command: Option<Vec<String>>,
    /// The client program (default: `mariadb`, else `mysql`), for the server's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_command: Option<Vec<String>>,
    /// Extra connection options for both tools, e.g. `["--ssl-ca=/etc/rds-ca.pem"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
    /// zstd level, 1 (fast) to 19 (small).
    #[serde(default = "default_level")]
    pub compression_level: Number,
    /// Largest compressed backup to expect (`50GiB`): sets the part size so S3's 10,000 parts
    /// suffice. At most 117GiB: larger parts would not fit the memory bound.
    #[serde(default = "default_max_size")]
    pub max_size: String,
}

/// The `host`/`port`/`user`/`password`/`extra_args` of a MySQL step, checked.
pub(crate) fn connection_problems(port: &Number, password: &str) -> Vec<String> {
    let mut problems = Vec::new();
    problems.extend(port.problem("port"));
    if !is_templated(password)
        && let Err(e) = password.parse::<SecretSource>()
    {
        problems.push(format!("`password`: {e}"));
    }
    problems
}

/// Builds a [`Connection`], reading the password.
pub(crate) async fn connect(
    host: &str,
    port: &Number,
    user: &str,
    password: &str,
    extra_args: &[String],
    aws: &Aws,
) -> anyhow::Result<Connection> {
    let port = u16::try_from(port.value("port")?).context("`port` must be at most 65535")?;
    let source: SecretSource = password.parse()?;
    let password: Secret = source.read(Some(aws)).await?;
    Ok(Connection {
        host: host.to_string(),
        port,
        user: user.to_string(),
        password,
        extra_args: extra_args.to_vec(),
    })
}

/// The client argv: as given, or `mariadb`/`mysql` from `PATH`.
pub(crate) fn client_argv(given: &Option<Vec<String>>) -> anyhow::Result<Vec<String>> {
    match given {
        Some(argv) if !argv.is_empty() => Ok(argv.clone()),
        _ => find_tool(&["mariadb", "mysql"]).map(|p| vec![p]).context(
            "neither `mariadb` nor `mysql` is on PATH: install the client (apt-get install mariadb-client) or set client_command",
        ),
    }
}

impl MysqlBackupArgs {
    fn target(&self) -> AwsTarget {
        AwsTarget {
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
        }
    }
}

impl ActionArgs for MysqlBackupArgs {
    fn validate(&self) -> Vec<String> {
        let mut problems = connection_problems(&self.port, &self.password);
        problems.extend(self.compression_level.problem("compression_level"));
        if let Ok(level) = self.compression_level.value("compression_level")
            && !(1..=19).contains(&level)
        {
            problems.push(format!("`compression_level` must be 1 to 19, got {level}"));
        }
        if self.databases.is_empty() {
            problems.push("`databases` is empty: name at least one database to back up".into());
        }
        if self.bucket.is_empty() {
            problems.push("`bucket` is empty".into());
        }
        if !is_templated(&self.key)
            && let Err(e) = render_key(&self.key, "db", Utc::now())
        {
            problems.push(e);
        }
        if !is_templated(&self.max_size) {
            match parse_size(&self.max_size) {
                Ok(n) => problems.extend(plan_parts(n, MEMORY_BUDGET).err()),
                Err(e) => problems.push(format!("`max_size`: {e}")),
            }
        }
        problems
    }
}

impl StepKind for MysqlBackupArgs {
    type Change = ();

    async fn check(&self, _ctx: &StepContext<'_>) -> anyhow::Result<Check<()>> {
        let now = Utc::now();
        let keys: Vec<String> = self
            .databases
            .iter()
            .map(|db| render_key(&self.key, db, now).map(|k| format!("s3://{}/{k}", self.bucket)))
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::msg)?;
        Ok(Check::change(
            (),
            format!(
                "would dump {} from {}:{} to {}",
                self.databases.join(", "),
                self.host,
                self.port.value("port")?,
                keys.join(", ")
            ),
        ))
    }

    async fn apply(&self, _ctx: &StepContext<'_>, (): ()) -> anyhow::Result<Outcome> {
        let level = i32::try_from(self.compression_level.value("compression_level")?)?;
        let plan = plan_parts(
            parse_size(&self.max_size).map_err(anyhow::Error::msg)?,
            MEMORY_BUDGET,
        )
        .map_err(anyhow::Error::msg)?;
        let aws = Aws::connect(&self.target()).await?;
        let conn = connect(
            &self.host,
            &self.port,
            &self.user,
            &self.password,
            &self.extra_args,
            &aws,
        )
        .await?;
        let client = Client {
            argv: client_argv(&self.client_command)?,
            conn: conn.clone(),
        };
        let dumper = Dumper {
            argv: dump_argv(&self.dump_command)?,
            conn,
        };
        let server_version = client
            .server_version()
            .await
            .context("connecting to the database server")?;
        let tool_version = dumper.version().await?;
        let mut lines = Vec::new();
        let mut keys = Vec::new();
        for db in &self.databases {
            let m = self
                .backup_one(
                    &aws,
                    &dumper,
                    db,
                    level,
                    plan,
                    &server_version,
                    &tool_version,
                )
                .await
                .with_context(|| format!("backing up database {db}"))?;
            lines.push(format!(
                "{db}: {} tables, {} bytes of SQL as {} bytes to s3://{}/{} (sha256 {})",
                m.tables.len(),
                m.uncompressed_size,
                m.size,
                self.bucket,
                m.key,
                m.sha256
            ));
            keys.push(m.key);
        }
        Ok(Outcome {
            changed: true,
            diff: None,
            message: Some(lines.join("; ")),
            output: Some(CommandOutput {
                stdout: keys.join("\n"),
                stderr: String::new(),
                rc: 0,
            }),
        })
    }
}

impl MysqlBackupArgs {
    #[allow(clippy::too_many_arguments)]
    async fn backup_one(
        &self,
        aws: &Aws,
        dumper: &Dumper,
        db: &str,
        level: i32,
        plan: upload::PartPlan,
        server_version: &str,
        tool_version: &str,
    ) -> anyhow::Result<Manifest> {
        let started_at = Utc::now();
        let key = render_key(&self.key, db, started_at).map_err(anyhow::Error::msg)?;
        // A backup is never overwritten (two runs in the same second render the same key).
        if let Ok(existing) = aws
            .s3()
            .head_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            anyhow::bail!(
                "s3://{}/{key} already exists ({} bytes): a backup is never overwritten; nothing was stored (another backup of {db} started in the same second? run again, or give `key` a template that differs)",
                self.bucket,
                existing.content_length().unwrap_or(0)
            );
        }
        let mut upload = MultipartUpload::create(aws, &self.bucket, &key).await?;
        let mut dump = dumper.spawn(db)?;
        // Row counts and digests are read off the dump as it streams (dump_scan), from the
        // dump's own snapshot; asking the server beside the dump cost 8.6 s of 37 for 1 GiB of
        // SQL (scripts/bench-backup) and could disagree with the dump on a live database.
        // Read (and scanned) on a thread of its own, ahead of zstd: the dump tool, the scan
        // and the compressor overlap like the processes of `mysqldump | zstd`.
        let (stdout, reader) = read_ahead(
            Scanning::new(dump.take_stdout()?),
            READ_AHEAD_CHUNK,
            READ_AHEAD_DEPTH,
        )?;
        let streamed = upload.stream(stdout, level, plan).await.and_then(|(s, _)| {
            // The compressor read to the end, so the reader thread has returned.
            let scanned = reader
                .join()
                .map_err(|_| anyhow::anyhow!("the dump reader thread panicked"))?;
            Ok((s, scanned.finish()?))
        });
        let streamed = match streamed {
            Ok(s) => s,
            Err(e) => {
                dump.kill();
                let aborted = upload.abort().await;
                let e = e.context("uploading the dump; nothing was stored");
                return Err(match aborted {
                    Ok(()) => e,
                    Err(a) => e.context(format!("{a:#}")),
                });
            }
        };
        let (streamed, tables) = streamed;
        let program = dump.program().to_string();
        let exit = dump.wait().await?;
        if !exit.success() {
            let aborted = upload.abort().await;
            let mut msg = format!(
                "{program} exited with code {} while dumping {db}; nothing was stored (the upload was aborted): {}",
                exit.code, exit.stderr
            );
            if let Err(a) = aborted {
                msg.push_str(&format!("; {a:#}"));
            }
            anyhow::bail!(msg);
        }
        upload.complete().await?;
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            database: db.to_string(),
            key: key.clone(),
            compression: "zstd".into(),
            size: streamed.size,
            uncompressed_size: streamed.raw_size,
            sha256: streamed.sha256,
            started_at,
            finished_at: Utc::now(),
            server_version: server_version.to_string(),
            tool_version: tool_version.to_string(),
            tables,
        };
        let s3 = aws.s3();
        let body = serde_json::to_vec_pretty(&manifest)?;
        let manifest_key = format!("{key}{MANIFEST_SUFFIX}");
        if let Err(e) = s3
            .put_object()
            .bucket(&self.bucket)
            .key(&manifest_key)
            .content_type("application/json")
            .body(body.into())
            .send()
            .await
        {
            // Without its manifest the object is not a backup; do not leave it looking like one.
            let _ = s3
                .delete_object()
                .bucket(&self.bucket)
                .key(&key)
                .send()
                .await;
            anyhow::bail!(
                "writing s3://{}/{manifest_key}: {}; the backup object was removed",
                self.bucket,
                describe_error(&e)
            );
        }
        Ok(manifest)
    }
}

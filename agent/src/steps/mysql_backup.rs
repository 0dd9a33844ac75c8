//! Runs `mysql_backup` on the host; its arguments and their validation are the model's
//! (`bosun_model::steps::mysql_backup`).

use anyhow::Context;
use bosun_model::backup::key::render_key;
use bosun_model::backup::parts::{MEMORY_BUDGET, PartPlan, plan_parts};
use bosun_model::backup::{Number, parse_size};
use bosun_model::secret_source::SecretSource;
use bosun_model::steps::mysql_backup::{MysqlAuth, MysqlBackupArgs};
use chrono::Utc;

use super::{Check, CommandOutput, Outcome, StepContext, StepKind};
use crate::aws::{Aws, AwsTarget, describe_error};
use crate::backup::dump_scan::{DumpScanner, Scan, Scanning};
use crate::backup::iam;
use crate::backup::manifest::{MANIFEST_FORMAT, MANIFEST_SUFFIX, Manifest};
use crate::backup::mysql::{Client, Connection, Dumper, StreamingChild, dump_argv, find_tool};
use crate::backup::read_ahead::read_ahead;
use crate::backup::upload::{self, MultipartUpload};
use crate::secrets;

/// Bytes per chunk read ahead of the compressor (one zstd frame each), and chunks that may
/// wait: with the chunk being filled and the one being compressed, 8 MiB at most.
const READ_AHEAD_CHUNK: usize = upload::FRAME_SIZE;
const READ_AHEAD_DEPTH: usize = 2;

/// How a MySQL step logs in, as its arguments say.
pub(crate) struct Login<'a> {
    pub host: &'a str,
    pub port: &'a Number,
    pub user: &'a str,
    pub password: &'a str,
    pub auth: MysqlAuth,
    pub ssl_ca: Option<&'a str>,
    pub extra_args: &'a [String],
}

impl Login<'_> {
    /// Whether logging in needs AWS: an IAM token, or a password kept in SSM or Secrets Manager.
    pub fn needs_aws(&self) -> bool {
        self.auth == MysqlAuth::Iam
            || matches!(
                self.password.parse::<SecretSource>(),
                Ok(SecretSource::Ssm(_) | SecretSource::SecretsManager { .. })
            )
    }
}

/// Builds a [`Connection`]: the password read from its source, or (`auth = "iam"`) an RDS IAM
/// token signed with `aws`'s credentials and region, with TLS and the cleartext plugin. `aws`
/// may be `None` when neither the login nor the password's source needs AWS
/// ([`Login::needs_aws`]).
pub(crate) async fn connect(login: &Login<'_>, aws: Option<&Aws>) -> anyhow::Result<Connection> {
    let port = u16::try_from(login.port.value("port")?).context("`port` must be at most 65535")?;
    let mut extra_args = login.extra_args.to_vec();
    let (password, cleartext) = match login.auth {
        MysqlAuth::Password => {
            let source: SecretSource = login.password.parse()?;
            (secrets::read(&source, aws).await?, false)
        }
        MysqlAuth::Iam => {
            let ca = login
                .ssl_ca
                .context("auth = \"iam\" needs `ssl_ca` (the RDS CA bundle)")?;
            extra_args.extend(iam::client_args(ca));
            let aws = aws.context("auth = \"iam\" needs the AWS configuration")?;
            let token = iam::auth_token(aws.sdk_config(), login.host, port, login.user).await?;
            (token, true)
        }
    };
    Ok(Connection {
        host: login.host.to_string(),
        port,
        user: login.user.to_string(),
        password,
        extra_args,
        cleartext,
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

/// Where the step's S3 (and SSM) requests go.
fn target(args: &MysqlBackupArgs) -> AwsTarget {
    AwsTarget {
        region: args.region.clone(),
        endpoint_url: args.endpoint_url.clone(),
    }
}

impl StepKind for MysqlBackupArgs {
    type Change = ();

    async fn check(&self, _ctx: &StepContext<'_>) -> anyhow::Result<Check<()>> {
        let port = self.port.value("port")?;
        would_dump(&self.databases, &self.key, &self.bucket, &self.host, port)
    }

    async fn apply(&self, _ctx: &StepContext<'_>, (): ()) -> anyhow::Result<Outcome> {
        let level = i32::try_from(self.compression_level.value("compression_level")?)?;
        let plan = plan_parts(
            parse_size(&self.max_size).map_err(anyhow::Error::msg)?,
            MEMORY_BUDGET,
        )
        .map_err(anyhow::Error::msg)?;
        let aws = Aws::connect(&target(self)).await?;
        let conn = connect(
            &Login {
                host: &self.host,
                port: &self.port,
                user: &self.user,
                password: &self.password,
                auth: self.auth,
                ssl_ca: self.ssl_ca.as_deref(),
                extra_args: &self.extra_args,
            },
            Some(&aws),
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
        let mut made = Vec::new();
        for db in &self.databases {
            made.push(
                backup_one(
                    self,
                    &aws,
                    &dumper,
                    db,
                    level,
                    plan,
                    &server_version,
                    &tool_version,
                )
                .await
                .with_context(|| format!("backing up database {db}"))?,
            );
        }
        Ok(backed_up(&self.bucket, made))
    }
}

/// `--check`'s message for a dump step: what it would dump from where to which keys.
pub(crate) fn would_dump(
    databases: &[String],
    key: &str,
    bucket: &str,
    host: &str,
    port: u64,
) -> anyhow::Result<Check<()>> {
    let now = Utc::now();
    let keys: Vec<String> = databases
        .iter()
        .map(|db| render_key(key, db, now).map(|k| format!("s3://{bucket}/{k}")))
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    Ok(Check::change(
        (),
        format!(
            "would dump {} from {host}:{port} to {}",
            databases.join(", "),
            keys.join(", ")
        ),
    ))
}

/// A dump step's outcome: a line per backup made, their keys (one a line) for `register`.
pub(crate) fn backed_up(bucket: &str, made: Vec<Manifest>) -> Outcome {
    let lines: Vec<String> = made
        .iter()
        .map(|m| {
            format!(
                "{}: {} tables, {} bytes of SQL as {} bytes to s3://{bucket}/{} (sha256 {})",
                m.database,
                m.tables.len(),
                m.uncompressed_size,
                m.size,
                m.key,
                m.sha256
            )
        })
        .collect();
    let keys: Vec<String> = made.into_iter().map(|m| m.key).collect();
    Outcome {
        changed: true,
        diff: None,
        message: Some(lines.join("; ")),
        output: Some(CommandOutput {
            stdout: keys.join("\n"),
            stderr: String::new(),
            rc: 0,
        }),
    }
}

#[allow(clippy::too_many_arguments)]
async fn backup_one(
    args: &MysqlBackupArgs,
    aws: &Aws,
    dumper: &Dumper,
    db: &str,
    level: i32,
    plan: PartPlan,
    server_version: &str,
    tool_version: &str,
) -> anyhow::Result<Manifest> {
    let job = DumpJob {
        aws,
        bucket: &args.bucket,
        key_template: &args.key,
        db,
        level,
        plan,
        server_version,
        tool_version,
        engine: None,
    };
    dump_to_s3(&job, || dumper.spawn(db), DumpScanner::new()).await
}

/// One database's dump on its way to S3: where, how compressed, and what the manifest says of
/// the server and the tool. Shared by `mysql_backup` and `postgres_backup`.
pub(crate) struct DumpJob<'a> {
    pub aws: &'a Aws,
    pub bucket: &'a str,
    pub key_template: &'a str,
    pub db: &'a str,
    pub level: i32,
    pub plan: PartPlan,
    pub server_version: &'a str,
    pub tool_version: &'a str,
    /// The manifest's `engine` (`None`: MySQL/MariaDB).
    pub engine: Option<&'static str>,
}

/// The backup pipeline: a dump tool's stdout (started by `spawn`), read ahead and scanned by
/// `scanner` for the tables' row counts and digests, through zstd into an S3 multipart upload
/// that is completed only when the tool exited 0 (aborted otherwise: no partial object is ever
/// visible), then `<key>.manifest.json` beside it.
pub(crate) async fn dump_to_s3<S: Scan + Send + 'static>(
    job: &DumpJob<'_>,
    spawn: impl FnOnce() -> anyhow::Result<StreamingChild>,
    scanner: S,
) -> anyhow::Result<Manifest> {
    let DumpJob {
        aws,
        bucket,
        db,
        level,
        plan,
        server_version,
        tool_version,
        ..
    } = *job;
    let started_at = Utc::now();
    let key = render_key(job.key_template, db, started_at).map_err(anyhow::Error::msg)?;
    // A backup is never overwritten (two runs in the same second render the same key).
    if let Ok(existing) = aws.s3().head_object().bucket(bucket).key(&key).send().await {
        anyhow::bail!(
            "s3://{bucket}/{key} already exists ({} bytes): a backup is never overwritten; nothing was stored (another backup of {db} started in the same second? run again, or give `key` a template that differs)",
            existing.content_length().unwrap_or(0)
        );
    }
    let mut upload = MultipartUpload::create(aws, bucket, &key).await?;
    let mut dump = match spawn() {
        Ok(d) => d,
        Err(e) => {
            let _ = upload.abort().await;
            return Err(e);
        }
    };
    // Row counts and digests are read off the dump as it streams (dump_scan), from the
    // dump's own snapshot; asking the server beside the dump cost 8.6 s of 37 for 1 GiB of
    // SQL (scripts/bench-backup) and could disagree with the dump on a live database.
    // Read (and scanned) on a thread of its own, ahead of zstd: the dump tool, the scan
    // and the compressor overlap like the processes of `mysqldump | zstd`.
    let (stdout, reader) = read_ahead(
        Scanning::with(dump.take_stdout()?, scanner),
        READ_AHEAD_CHUNK,
        READ_AHEAD_DEPTH,
    )?;
    let streamed = upload.stream(stdout, level, plan).await.and_then(|(s, _)| {
        // The compressor read to the end, so the reader thread has returned.
        let scanned = reader
            .join()
            .map_err(|_| anyhow::anyhow!("the dump reader thread panicked"))?;
        Ok((s, scanned))
    });
    let (streamed, scanned) = match streamed {
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
    // The whole output was read: the tool's exit says more than a dump that ended early.
    let program = dump.program().to_string();
    let exit = dump.wait().await?;
    let tables = match (exit.success(), scanned.finish()) {
        (true, Ok(tables)) => tables,
        (ok, scan) => {
            let aborted = upload.abort().await;
            let mut msg = match scan {
                Err(e) if ok => format!(
                    "reading the dump of {db}: {e:#}; nothing was stored (the upload was aborted)"
                ),
                _ => format!(
                    "{program} exited with code {} while dumping {db}; nothing was stored (the upload was aborted): {}",
                    exit.code(),
                    exit.dump_message()
                ),
            };
            if let Err(a) = aborted {
                msg.push_str(&format!("; {a:#}"));
            }
            anyhow::bail!(msg);
        }
    };
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
        engine: job.engine.map(str::to_string),
    };
    let s3 = aws.s3();
    let body = serde_json::to_vec_pretty(&manifest)?;
    let manifest_key = format!("{key}{MANIFEST_SUFFIX}");
    if let Err(e) = s3
        .put_object()
        .bucket(bucket)
        .key(&manifest_key)
        .content_type("application/json")
        .body(body.into())
        .send()
        .await
    {
        // Without its manifest the object is not a backup; do not leave it looking like one.
        let _ = s3.delete_object().bucket(bucket).key(&key).send().await;
        anyhow::bail!(
            "writing s3://{bucket}/{manifest_key}: {}; the backup object was removed",
            describe_error(&e)
        );
    }
    Ok(manifest)
}

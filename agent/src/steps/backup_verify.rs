//! Runs `backup_verify` on the host; its arguments and their validation are the model's
//! (`bosun_model::steps::backup_verify`).

use anyhow::{Context, bail};
use bosun_model::steps::backup_verify::{BackupVerifyArgs, Engine};
use chrono::Utc;

use super::mysql_backup::{Login, client_argv, connect};
use super::postgres_backup as pg;
use super::{Check, CommandOutput, Outcome, StepContext, StepKind};
use crate::aws::{Aws, AwsTarget, describe_error};
use crate::backup::manifest::{
    MANIFEST_SUFFIX, Manifest, VERIFIED_SUFFIX, VERIFY_FAILED_SUFFIX, VerifyRecord, compare_tables,
};
use crate::backup::mysql::{Client, quote_ident};
use crate::backup::{catalogue, postgres, restore};
use crate::host::process;

/// Where the step's S3 (and SSM) requests go.
fn target(args: &BackupVerifyArgs) -> AwsTarget {
    AwsTarget {
        region: args.region.clone(),
        endpoint_url: args.endpoint_url.clone(),
    }
}

/// Drops the scratch database when dropped, unless disarmed (done already).
struct ScratchDatabase {
    client: Client,
    name: String,
    armed: bool,
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = self.client.drop_database_blocking(&self.name)
        {
            tracing::error!("{e:#}");
        }
    }
}

impl StepKind for BackupVerifyArgs {
    type Change = ();

    async fn check(&self, _ctx: &StepContext<'_>) -> anyhow::Result<Check<()>> {
        Ok(Check::change(
            (),
            format!(
                "would restore {} into a scratch database on {}:{} and compare it with its manifest",
                self.what(),
                self.host,
                self.port().value("port")?
            ),
        ))
    }

    async fn apply(&self, _ctx: &StepContext<'_>, (): ()) -> anyhow::Result<Outcome> {
        let aws = Aws::connect(&target(self)).await?;
        let s3 = aws.s3();
        let key = match (&self.key, &self.prefix) {
            (Some(k), _) if k.trim().is_empty() => {
                bail!("`key` is empty: give the key of a backup, or `prefix` to verify the newest")
            }
            (Some(k), _) => k.trim().to_string(),
            (None, Some(prefix)) => catalogue::list(&s3, &self.bucket, prefix)
                .await?
                .backups
                .pop()
                .map(|b| b.key)
                .with_context(|| {
                    format!(
                        "no backup under s3://{}/{prefix} (an object with a {MANIFEST_SUFFIX} beside it): nothing to verify",
                        self.bucket
                    )
                })?,
            (None, None) => bail!("missing `key` or `prefix`"),
        };
        let manifest: Manifest =
            catalogue::get_json(&s3, &self.bucket, &format!("{key}{MANIFEST_SUFFIX}"))
                .await
                .context("reading the manifest: is this a bosun backup whose upload finished?")?;
        let found = manifest.engine.as_deref().unwrap_or("mysql");
        if found != self.engine.name() {
            bail!(
                "s3://{}/{key} is a {found} backup (its manifest says so): verify it with `engine = \"{found}\"`",
                self.bucket
            );
        }
        let (server_version, sha256, problems, client_output) = match self.engine {
            Engine::Mysql => verify_mysql(self, &aws, &s3, &key, &manifest).await?,
            Engine::Postgres => verify_postgres(self, &aws, &s3, &key, &manifest).await?,
        };

        let record = VerifyRecord {
            verified_at: Utc::now(),
            ok: problems.is_empty(),
            sha256,
            server_version,
            tables: manifest.tables.len(),
            problems: problems.clone(),
        };
        let suffix = if record.ok {
            VERIFIED_SUFFIX
        } else {
            VERIFY_FAILED_SUFFIX
        };
        let record_key = format!("{key}{suffix}");
        s3.put_object()
            .bucket(&self.bucket)
            .key(&record_key)
            .content_type("application/json")
            .body(serde_json::to_vec_pretty(&record)?.into())
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "recording the result at s3://{}/{record_key}: {}",
                    self.bucket,
                    describe_error(&e)
                )
            })?;
        if !problems.is_empty() {
            let message = format!(
                "verification of s3://{}/{key} failed: {}",
                self.bucket,
                problems.join("; ")
            );
            return Err(match client_output {
                Some(output) => process::Failed { message, output }.into(),
                None => anyhow::anyhow!(message),
            });
        }
        Ok(Outcome {
            changed: true,
            diff: None,
            message: Some(format!(
                "s3://{}/{key} restores: {} tables with matching row counts and checksums",
                self.bucket,
                manifest.tables.len()
            )),
            output: Some(CommandOutput {
                stdout: key,
                stderr: String::new(),
                rc: 0,
            }),
        })
    }
}

/// Streams the object into the scratch database. Returns the object's SHA-256 and the
/// problems found (a SHA-256 mismatch first, then decompression and restore errors), and the
/// client's whole output when it failed (for `register`).
async fn restore(
    args: &BackupVerifyArgs,
    s3: &aws_sdk_s3::Client,
    key: &str,
    manifest: &Manifest,
    client: &Client,
    database: &str,
) -> anyhow::Result<(String, Vec<String>, Option<CommandOutput>)> {
    let streamed =
        restore::stream_into(s3, &args.bucket, key, &manifest.sha256, client, database).await?;
    Ok((streamed.sha256, streamed.problems, streamed.client_output))
}

/// What verifying found: the scratch server's version, the object's SHA-256, the problems,
/// and the client's output when it failed.
type Verified = (String, String, Vec<String>, Option<CommandOutput>);

async fn verify_mysql(
    args: &BackupVerifyArgs,
    aws: &Aws,
    s3: &aws_sdk_s3::Client,
    key: &str,
    manifest: &Manifest,
) -> anyhow::Result<Verified> {
    let port = args.port();
    let conn = connect(
        &Login {
            host: &args.host,
            port: &port,
            user: &args.user,
            password: &args.password,
            auth: args.auth,
            ssl_ca: args.ssl_ca.as_deref(),
            extra_args: &args.extra_args,
        },
        Some(aws),
    )
    .await?;
    let client = Client {
        argv: client_argv(&args.client_command)?,
        conn,
    };
    let server_version = client
        .server_version()
        .await
        .context("connecting to the scratch server")?;
    let name = scratch_name(args);
    // CREATE DATABASE without IF NOT EXISTS: an existing database is never restored over.
    client
        .query(None, &format!("CREATE DATABASE {}", quote_ident(&name)))
        .await
        .with_context(|| format!("creating scratch database {name}"))?;
    let mut scratch = ScratchDatabase {
        client: client.clone(),
        name: name.clone(),
        armed: true,
    };

    let (sha256, mut problems, client_output) =
        restore(args, s3, key, manifest, &client, &name).await?;
    if problems.is_empty() {
        let restored =
            restore::restored_tables(manifest, &client, &args.dump_command, &name).await?;
        problems = compare_tables(&manifest.tables, &restored);
    }
    client
        .query(None, &format!("DROP DATABASE {}", quote_ident(&name)))
        .await
        .with_context(|| format!("dropping scratch database {name}"))?;
    scratch.armed = false;
    Ok((server_version, sha256, problems, client_output))
}

async fn verify_postgres(
    args: &BackupVerifyArgs,
    aws: &Aws,
    s3: &aws_sdk_s3::Client,
    key: &str,
    manifest: &Manifest,
) -> anyhow::Result<Verified> {
    let port = args.port();
    let login = pg::Login {
        host: &args.host,
        port: &port,
        user: &args.user,
        password: &args.password,
        settings: &args.settings,
    };
    let conn = pg::connect(&login, Some(aws)).await?;
    let client = postgres::Client {
        argv: postgres::client_argv(&args.client_command)?,
        conn,
    };
    let maintenance = args.maintenance_database();
    let server_version = client
        .server_version(maintenance)
        .await
        .context("connecting to the scratch server")?;
    let name = scratch_name(args);
    // CREATE DATABASE without IF NOT EXISTS: an existing database is never restored over.
    client
        .query(
            maintenance,
            &format!("CREATE DATABASE {}", postgres::quote_ident(&name)),
        )
        .await
        .with_context(|| format!("creating scratch database {name}"))?;
    let mut scratch = PgScratch {
        client: client.clone(),
        maintenance: maintenance.to_string(),
        name: name.clone(),
        armed: true,
    };
    let streamed = restore::stream_into_child(
        s3,
        &args.bucket,
        key,
        &manifest.sha256,
        client.spawn_restore(&name)?,
        postgres::exit_message,
    )
    .await?;
    let mut problems = streamed.problems;
    if problems.is_empty() {
        let dumper = postgres::Dumper {
            argv: postgres::dump_argv(&args.dump_command)?,
            conn: client.conn.clone(),
        };
        let restored = dumper
            .table_digests(&name)
            .await
            .context("reading the restored tables")?;
        problems = compare_tables(&manifest.tables, &restored);
    }
    client
        .query(maintenance, &postgres::drop_database_sql(&name))
        .await
        .with_context(|| format!("dropping scratch database {name}"))?;
    scratch.armed = false;
    Ok((
        server_version,
        streamed.sha256,
        problems,
        streamed.client_output,
    ))
}

/// `scratch_database`, or `bosun_verify_` and a random suffix.
fn scratch_name(args: &BackupVerifyArgs) -> String {
    match &args.scratch_database {
        Some(n) => n.clone(),
        None => format!(
            "bosun_verify_{}",
            &uuid::Uuid::now_v7().simple().to_string()[20..]
        ),
    }
}

/// A PostgreSQL scratch database, dropped when this is dropped armed (an error or a timeout
/// between its creation and the normal drop).
struct PgScratch {
    client: postgres::Client,
    maintenance: String,
    name: String,
    armed: bool,
}

impl Drop for PgScratch {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = self
                .client
                .drop_database_blocking(&self.maintenance, &self.name)
        {
            tracing::error!("{e:#}");
        }
    }
}

//! `backup_verify`: prove a backup restores.
//!
//! ```toml
//! backup_verify = { bucket = "acme-backups", prefix = "backups/mysql/shop/",
//!                   host = "127.0.0.1", user = "root", password = "file:/etc/bosun/scratch-db" }
//! ```
//! Fetches the backup (`key`, or the newest under `prefix`) and its manifest, streams the object
//! through SHA-256 and zstd into the `mariadb` client restoring into a scratch database on the
//! given server, then compares every table's row count and content digest with the manifest:
//! the scratch database is dumped again and read like the backup was
//! ([`crate::backup::dump_scan`]). Older manifests (format 1) are compared by `COUNT(*)` and
//! `CHECKSUM TABLE`.
//! The scratch database is dropped afterwards, whatever happened (also on timeout). The result
//! is recorded beside the backup as `<key>.verified.json`, or `<key>.verify-failed.json` with the
//! problems; `backup_prune` never deletes the newest verified backup.
//!
//! A SHA-256 that differs from the manifest fails with `sha256 mismatch: manifest says X,
//! object is Y`, even when the damage also breaks decompression. Always `changed` (it creates
//! and drops a database and writes a record); `--check` says what it would verify.

use anyhow::{Context, bail};
use chrono::Utc;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::mysql_backup::{client_argv, connect, connection_problems, default_port};
use super::{ActionArgs, Check, CommandOutput, Outcome, StepContext, StepKind};
use crate::aws::{Aws, AwsTarget, describe_error};
use crate::backup::Number;
use crate::backup::manifest::{
    MANIFEST_SUFFIX, Manifest, VERIFIED_SUFFIX, VERIFY_FAILED_SUFFIX, VerifyRecord, compare_tables,
};
use crate::backup::mysql::{Client, quote_ident};
use crate::backup::{catalogue, restore};

/// Arguments of `backup_verify`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupVerifyArgs {
    /// Bucket holding the backup.
    pub bucket: String,
    /// Key of the backup object. Exactly one of `key` and `prefix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Verify the newest backup under this prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// AWS region (default: from the environment, profile or instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// S3 (and SSM) endpoint instead of AWS's (default: `AWS_ENDPOINT_URL` if set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// Server to restore into (a scratch server, not production).
    pub host: String,
    /// Its port.
    #[serde(default = "default_port")]
    pub port: Number,
    /// Account that may create and drop databases there.
    pub user: String,
    /// Where the password is: `env:NAME`, `file:/path` or `ssm:/parameter/name`.
    pub password: String,
    /// The client program (default: `mariadb`, else `mysql`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_command: Option<Vec<String>>,
    /// The dump program (default: `mariadb-dump`, else `mysqldump`), to read the restored
    /// tables back for their digests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump_command: Option<Vec<String>>,
    /// Extra connection options for the client and the dump program.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
    /// Name of the scratch database (default: `bosun_verify_` and a random suffix). It must not
    /// exist: the step refuses to restore over a database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch_database: Option<String>,
}

impl BackupVerifyArgs {
    fn target(&self) -> AwsTarget {
        AwsTarget {
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
        }
    }

    fn what(&self) -> String {
        match (&self.key, &self.prefix) {
            (Some(k), _) if k.trim().is_empty() => {
                "the new backup (its key is known once the dump has run)".into()
            }
            (Some(k), _) => format!("s3://{}/{k}", self.bucket),
            (None, Some(p)) => format!("the newest backup under s3://{}/{p}", self.bucket),
            (None, None) => "nothing".into(),
        }
    }
}

impl ActionArgs for BackupVerifyArgs {
    fn validate(&self) -> Vec<String> {
        let mut problems = connection_problems(&self.port, &self.password);
        match (&self.key, &self.prefix) {
            (Some(_), Some(_)) => problems.push("give either `key` or `prefix`, not both".into()),
            (None, None) => problems.push(
                "missing `key` (one backup) or `prefix` (its newest backup): what to verify?"
                    .into(),
            ),
            _ => {}
        }
        if self.bucket.is_empty() {
            problems.push("`bucket` is empty".into());
        }
        problems
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
                self.port.value("port")?
            ),
        ))
    }

    async fn apply(&self, _ctx: &StepContext<'_>, (): ()) -> anyhow::Result<Outcome> {
        let aws = Aws::connect(&self.target()).await?;
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
            conn,
        };
        let server_version = client
            .server_version()
            .await
            .context("connecting to the scratch server")?;
        let name = match &self.scratch_database {
            Some(n) => n.clone(),
            None => format!(
                "bosun_verify_{}",
                &uuid::Uuid::now_v7().simple().to_string()[20..]
            ),
        };
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

        let (sha256, mut problems) = self.restore(&s3, &key, &manifest, &client, &name).await?;
        if problems.is_empty() {
            let restored =
                restore::restored_tables(&manifest, &client, &self.dump_command, &name).await?;
            problems = compare_tables(&manifest.tables, &restored);
        }
        client
            .query(None, &format!("DROP DATABASE {}", quote_ident(&name)))
            .await
            .with_context(|| format!("dropping scratch database {name}"))?;
        scratch.armed = false;

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
            bail!(
                "verification of s3://{}/{key} failed: {}",
                self.bucket,
                problems.join("; ")
            );
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

impl BackupVerifyArgs {
    /// Streams the object into the scratch database. Returns the object's SHA-256 and the
    /// problems found (a SHA-256 mismatch first, then decompression and restore errors).
    async fn restore(
        &self,
        s3: &aws_sdk_s3::Client,
        key: &str,
        manifest: &Manifest,
        client: &Client,
        database: &str,
    ) -> anyhow::Result<(String, Vec<String>)> {
        let streamed =
            restore::stream_into(s3, &self.bucket, key, &manifest.sha256, client, database).await?;
        Ok((streamed.sha256, streamed.problems))
    }
}

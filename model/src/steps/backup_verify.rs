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
//! (`bosun_agent::backup::dump_scan`). Older manifests (format 1) are compared by `COUNT(*)` and
//! `CHECKSUM TABLE`.
//! With `engine = "postgres"` (backups of `postgres_backup`) the object goes through psql
//! (`ON_ERROR_STOP`) into a scratch database created from `maintenance_database` (`postgres`),
//! which is dumped again with pg_dump and read like the backup was
//! (`bosun_agent::backup::pg_dump_scan`); a manifest of the other engine is refused.
//! The scratch database is dropped afterwards, whatever happened (also on timeout). The result
//! is recorded beside the backup as `<key>.verified.json`, or `<key>.verify-failed.json` with the
//! problems; `backup_prune` never deletes the newest verified backup.
//!
//! A SHA-256 that differs from the manifest fails with `sha256 mismatch: manifest says X,
//! object is Y`, even when the damage also breaks decompression. Always `changed` (it creates
//! and drops a database and writes a record); `--check` says what it would verify.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ActionArgs;
use super::mysql_backup::{MysqlAuth, connection_problems, default_port};
use crate::backup::Number;

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
    /// Its port (default: 3306, or 5432 with `engine = "postgres"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Number>,
    /// `mysql` (default: MySQL/MariaDB, backups of `mysql_backup`) or `postgres` (backups of
    /// `postgres_backup`, restored with psql; `host` may be a socket directory).
    #[serde(default)]
    pub engine: Engine,
    /// PostgreSQL: the database to connect to for creating and dropping the scratch database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_database: Option<String>,
    /// PostgreSQL: libpq settings (`sslmode`, `sslrootcert`, `options`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
    /// Account that may create and drop databases there.
    pub user: String,
    /// Where the password is: `env:NAME`, `file:/path`, `ssm:/parameter/name` or
    /// `secretsmanager:<id>[#key]`. Not with `auth = "iam"`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub password: String,
    /// `password` (default) or `iam`: an RDS IAM token instead of a stored password.
    #[serde(default)]
    pub auth: MysqlAuth,
    /// CA bundle the server's certificate is verified against; required with `auth = "iam"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_ca: Option<String>,
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

/// Which database server a backup came from and is restored into.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// MySQL or MariaDB (`mariadb`/`mysql` client).
    #[default]
    Mysql,
    /// PostgreSQL (`psql`, `pg_dump`).
    Postgres,
}

impl Engine {
    /// The name a manifest records (`postgres_backup`'s manifests say `"postgres"`; older ones
    /// say nothing and are MySQL's).
    pub fn name(self) -> &'static str {
        match self {
            Engine::Mysql => "mysql",
            Engine::Postgres => "postgres",
        }
    }
}

impl BackupVerifyArgs {
    /// `port`, or the engine's default port.
    pub fn port(&self) -> Number {
        self.port.clone().unwrap_or_else(|| match self.engine {
            Engine::Mysql => default_port(),
            Engine::Postgres => super::postgres_backup::default_port(),
        })
    }

    /// PostgreSQL's maintenance database (default `postgres`).
    pub fn maintenance_database(&self) -> &str {
        self.maintenance_database.as_deref().unwrap_or("postgres")
    }

    /// What the step verifies, for messages: the backup's URL, the newest under the prefix, or
    /// the new backup when `key` rendered empty.
    pub fn what(&self) -> String {
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
        let mut problems = match self.engine {
            Engine::Mysql => {
                let mut p = connection_problems(
                    &self.port(),
                    &self.password,
                    self.auth,
                    self.ssl_ca.as_deref(),
                );
                if !self.settings.is_empty() || self.maintenance_database.is_some() {
                    p.push(
                        "`settings` and `maintenance_database` are for `engine = \"postgres\"`"
                            .into(),
                    );
                }
                p
            }
            Engine::Postgres => {
                let mut p = super::postgres_backup::connection_problems(
                    &self.port(),
                    &self.password,
                    &self.settings,
                );
                if self.auth != MysqlAuth::Password || self.ssl_ca.is_some() {
                    p.push(
                        "`auth` and `ssl_ca` are MySQL's: for PostgreSQL use `settings = { sslmode = \"verify-full\", sslrootcert = \"/path\" }`"
                            .into(),
                    );
                }
                p.extend(
                    self.scratch_database
                        .iter()
                        .chain(&self.maintenance_database)
                        .filter_map(|d| super::postgres_backup::database_problem(d)),
                );
                p
            }
        };
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

//! `mysql_backup`: dump MySQL/MariaDB databases, compressed, into S3, with a manifest.
//!
//! ```toml
//! mysql_backup = { host = "db.internal", user = "backup", password = "ssm:/prod/db/backup-password",
//!                  databases = ["shop"], bucket = "acme-backups" }
//! ```
//! Per database: `mariadb-dump` (or `mysqldump`) runs with `--single-transaction --quick
//! --routines --events --triggers --hex-blob`; its output is read for every table's row count
//! and content digest (`bosun_agent::backup::dump_scan`), compressed with zstd and uploaded as an
//! S3 multipart upload in bounded memory (see `bosun_agent::backup::upload`) while its SHA-256 is
//! computed. The upload is completed only when the dump exited 0, and aborted otherwise, so no
//! partial object is ever visible; then `<key>.manifest.json` is written beside it.
//!
//! The password comes from `password = "env:NAME" | "file:/path" | "ssm:/param" |
//! "secretsmanager:<id>#key"` and reaches the tools in `MYSQL_PWD` only. With `auth = "iam"`
//! (RDS IAM database authentication) there is no password: bosund signs a 15-minute token with
//! the host's role for `host`, `port`, `user` and the step's region, and the tools connect over
//! TLS, verifying the server against `ssl_ca` (the RDS CA bundle), with the cleartext plugin
//! the token needs:
//!
//! ```toml
//! mysql_backup = { host = "prod.abc.eu-west-1.rds.amazonaws.com", user = "bosun_backup",
//!                  auth = "iam", ssl_ca = "/etc/bosun/rds-global-bundle.pem",
//!                  databases = ["shop"], bucket = "acme-backups" }
//! ```
//! Like `command`, the step always reports `changed` (a backup
//! was made); `--check` says what it would dump and where. `register` gets the keys of the new
//! backups, one per line, in `stdout`.

use chrono::Utc;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ActionArgs;
use crate::backup::key::{DEFAULT_KEY_TEMPLATE, render_key};
use crate::backup::parts::{MEMORY_BUDGET, plan_parts};
use crate::backup::{Number, parse_size};
use crate::jinja::is_templated;
use crate::secret_source::SecretSource;

/// Default of `port`.
pub fn default_port() -> Number {
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

/// How a MySQL step authenticates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MysqlAuth {
    /// A password read from `password`'s source.
    #[default]
    Password,
    /// An RDS IAM authentication token (15 minutes), signed with the host's AWS credentials;
    /// needs `ssl_ca` and no `password`.
    Iam,
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
    /// Where the password is: `env:NAME`, `file:/path`, `ssm:/parameter/name` or
    /// `secretsmanager:<id>[#key]`. Never the password itself. Not with `auth = "iam"`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub password: String,
    /// `password` (default) or `iam`: an RDS IAM token instead of a stored password.
    #[serde(default)]
    pub auth: MysqlAuth,
    /// CA bundle the server's certificate is verified against (the RDS bundle,
    /// `global-bundle.pem`); required with `auth = "iam"`, which sends the token in clear text
    /// inside TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_ca: Option<String>,
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

/// The `host`/`port`/`user`/`password`/`auth`/`ssl_ca` of a MySQL step, checked.
pub fn connection_problems(
    port: &Number,
    password: &str,
    auth: MysqlAuth,
    ssl_ca: Option<&str>,
) -> Vec<String> {
    let mut problems = Vec::new();
    problems.extend(port.problem("port"));
    match auth {
        MysqlAuth::Password if password.is_empty() => problems.push(
            "missing `password`: where the password is (`ssm:/...`, `secretsmanager:...`), or \
             `auth = \"iam\"` for an RDS IAM token"
                .into(),
        ),
        MysqlAuth::Password => {
            if !is_templated(password)
                && let Err(e) = password.parse::<SecretSource>()
            {
                problems.push(format!("`password`: {e}"));
            }
        }
        MysqlAuth::Iam => {
            if !password.is_empty() {
                problems.push(
                    "`auth = \"iam\"` connects with a token from the host's role: remove `password`"
                        .into(),
                );
            }
            match ssl_ca {
                None => problems.push(
                    "`auth = \"iam\"` needs `ssl_ca`: the RDS CA bundle (global-bundle.pem from \
                     truststore.pki.rds.amazonaws.com), since the token travels in clear text \
                     inside TLS"
                        .into(),
                ),
                Some(ca) if !is_templated(ca) && !ca.starts_with('/') => {
                    problems.push(format!("`ssl_ca` must be an absolute path, got {ca:?}"))
                }
                Some(_) => {}
            }
        }
    }
    problems
}

/// What `mysql_backup` and `postgres_backup` check alike: the zstd level, that there are
/// databases and a bucket, the key template, and `max_size` against the part plan.
pub fn dump_problems(
    level: &Number,
    databases: &[String],
    bucket: &str,
    key: &str,
    max_size: &str,
) -> Vec<String> {
    let mut problems: Vec<String> = level.problem("compression_level").into_iter().collect();
    if let Ok(level) = level.value("compression_level")
        && !(1..=19).contains(&level)
    {
        problems.push(format!("`compression_level` must be 1 to 19, got {level}"));
    }
    if databases.is_empty() {
        problems.push("`databases` is empty: name at least one database to back up".into());
    }
    if bucket.is_empty() {
        problems.push("`bucket` is empty".into());
    }
    if !is_templated(key)
        && let Err(e) = render_key(key, "db", Utc::now())
    {
        problems.push(e);
    }
    if !is_templated(max_size) {
        match parse_size(max_size) {
            Ok(n) => problems.extend(plan_parts(n, MEMORY_BUDGET).err()),
            Err(e) => problems.push(format!("`max_size`: {e}")),
        }
    }
    problems
}

impl ActionArgs for MysqlBackupArgs {
    fn validate(&self) -> Vec<String> {
        let mut problems = connection_problems(
            &self.port,
            &self.password,
            self.auth,
            self.ssl_ca.as_deref(),
        );
        problems.extend(dump_problems(
            &self.compression_level,
            &self.databases,
            &self.bucket,
            &self.key,
            &self.max_size,
        ));
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(password: &str, auth: MysqlAuth, ssl_ca: Option<&str>) -> String {
        connection_problems(&default_port(), password, auth, ssl_ca).join("\n")
    }

    #[test]
    fn iam_needs_a_ca_bundle_and_no_password_and_a_password_login_needs_its_source() {
        assert_eq!(problems("ssm:/db/pw", MysqlAuth::Password, None), "");
        assert!(problems("", MysqlAuth::Password, None).contains("missing `password`"));
        assert_eq!(problems("", MysqlAuth::Iam, Some("/etc/rds.pem")), "");
        let p = problems("ssm:/db/pw", MysqlAuth::Iam, None);
        assert!(
            p.contains("remove `password`") && p.contains("ssl_ca"),
            "{p}"
        );
        assert!(problems("", MysqlAuth::Iam, Some("rds.pem")).contains("absolute"));
        let args: MysqlBackupArgs = serde_json::from_value(serde_json::json!({
            "host": "db", "user": "bosun_backup", "auth": "iam", "ssl_ca": "/etc/rds.pem",
            "databases": ["shop"], "bucket": "b"
        }))
        .unwrap();
        assert_eq!(args.auth, MysqlAuth::Iam);
        assert_eq!(args.validate(), Vec::<String>::new());
    }
}

//! `postgres_backup`: dump PostgreSQL databases, compressed, into S3, with a manifest — the
//! same pipeline, object layout and manifest as `mysql_backup`.
//!
//! ```toml
//! postgres_backup = { host = "/run/postgresql", user = "backup",
//!                     password = "file:/etc/bosun/secrets/sonarqube-db",
//!                     databases = ["sonarqube"], bucket = "acme-backups",
//!                     key = "backups/postgres/{db}/{timestamp}.sql.zst" }
//! ```
//! Per database: `pg_dump -w --format=plain --no-owner --no-privileges` (one consistent
//! snapshot; restores as any account into any database), read for every table's row count and
//! content digest off its `COPY` data (`bosun_agent::backup::pg_dump_scan`), compressed with
//! zstd into an S3 multipart upload in bounded memory, completed only when pg_dump exited 0 and
//! aborted otherwise; then `<key>.manifest.json`. `backup_verify` with `engine = "postgres"`
//! restores it with psql into a scratch database and compares.
//!
//! `host` is a host name or the directory of the server's Unix socket (libpq's rule);
//! `password` is where the password is (`env:`, `file:`, `ssm:`, `secretsmanager:`), handed to
//! the tools in `PGPASSWORD` only. Always `changed`; `--check` says what it would dump.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ActionArgs;
use super::mysql_backup::dump_problems;
use crate::backup::Number;
use crate::backup::key::DEFAULT_KEY_TEMPLATE;
use crate::jinja::is_templated;
use crate::secret_source::SecretSource;

/// Default of `port`.
pub fn default_port() -> Number {
    Number::Int(5432)
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

/// libpq environment settings a step may set (`sslmode = "verify-full"` → `PGSSLMODE`).
pub const SETTINGS: &[(&str, &str)] = &[
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("options", "PGOPTIONS"),
];

/// Arguments of `postgres_backup`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresBackupArgs {
    /// Server host name or address, or the directory holding its Unix socket (`/run/postgresql`).
    pub host: String,
    /// Server port (for a socket directory: which socket, `.s.PGSQL.<port>`).
    #[serde(default = "default_port")]
    pub port: Number,
    /// Account to dump as (needs to read every table: `pg_read_all_data` or the owner).
    pub user: String,
    /// Where the password is: `env:NAME`, `file:/path`, `ssm:/parameter/name` or
    /// `secretsmanager:<id>[#key]`. Never the password itself.
    pub password: String,
    /// libpq settings: `sslmode`, `sslrootcert`, `options`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
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
    /// The dump program and leading arguments (default: `pg_dump`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump_command: Option<Vec<String>>,
    /// The client program (default: `psql`), for the server's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_command: Option<Vec<String>>,
    /// zstd level, 1 (fast) to 19 (small).
    #[serde(default = "default_level")]
    pub compression_level: Number,
    /// Largest compressed backup to expect (`50GiB`): sets the part size so S3's 10,000 parts
    /// suffice. At most 117GiB: larger parts would not fit the memory bound.
    #[serde(default = "default_max_size")]
    pub max_size: String,
}

/// Why `name` cannot be given to libpq as a database name, if it cannot: libpq reads a name
/// holding `=`, or starting `postgres://`/`postgresql://`, as a connection string, which could
/// point the tools at another server.
pub fn database_problem(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    if name.is_empty() {
        Some("a database name is empty".into())
    } else if name.contains('=')
        || lower.starts_with("postgres://")
        || lower.starts_with("postgresql://")
    {
        Some(format!(
            "database {name:?} would be read as a connection string by libpq: give a plain database name"
        ))
    } else {
        None
    }
}

/// `password` and `settings` of a PostgreSQL step, checked.
pub fn connection_problems(
    port: &Number,
    password: &str,
    settings: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut problems: Vec<String> = port.problem("port").into_iter().collect();
    if password.is_empty() {
        problems.push("missing `password`: where the password is (`file:/...`, `ssm:/...`)".into());
    } else if !is_templated(password)
        && let Err(e) = password.parse::<SecretSource>()
    {
        problems.push(format!("`password`: {e}"));
    }
    for key in settings.keys() {
        if !SETTINGS.iter().any(|(k, _)| k == key) {
            let known: Vec<&str> = SETTINGS.iter().map(|(k, _)| *k).collect();
            problems.push(format!(
                "`settings`: unknown libpq setting {key:?} (known: {})",
                known.join(", ")
            ));
        }
    }
    problems
}

impl ActionArgs for PostgresBackupArgs {
    fn validate(&self) -> Vec<String> {
        let mut problems = connection_problems(&self.port, &self.password, &self.settings);
        problems.extend(dump_problems(
            &self.compression_level,
            &self.databases,
            &self.bucket,
            &self.key,
            &self.max_size,
        ));
        problems.extend(
            self.databases
                .iter()
                .filter(|d| !is_templated(d))
                .filter_map(|d| database_problem(d)),
        );
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings_and_unknown_settings_are_refused() {
        let args: PostgresBackupArgs = serde_json::from_value(serde_json::json!({
            "host": "/run/postgresql", "user": "backup", "password": "file:/etc/pw",
            "databases": ["sonarqube", "host=evil dbname=x", "postgresql://evil/x"],
            "settings": {"sslmode": "verify-full", "sslcert": "/x"},
            "bucket": "b"
        }))
        .unwrap();
        let p = args.validate().join("\n");
        assert!(
            p.contains("\"host=evil dbname=x\" would be read as a connection string"),
            "{p}"
        );
        assert!(p.contains("\"postgresql://evil/x\""), "{p}");
        assert!(p.contains("unknown libpq setting \"sslcert\""), "{p}");
        assert!(!p.contains("sonarqube"), "{p}");
        assert_eq!(args.port.value("port").unwrap(), 5432);
    }
}

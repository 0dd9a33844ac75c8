//! `mysql_user`: a MySQL/MariaDB account, its authentication plugin and its grants.
//!
//! ```toml
//! # First boot with [rds]: the backup user logs in with an RDS IAM token (no password).
//! mysql_user = { host = "prod.abc.eu-west-1.rds.amazonaws.com", user = "bosun_admin",
//!                password = "secretsmanager:{{ db_secret_arn }}#password",
//!                ssl_ca = "/etc/bosun/rds-global-bundle.pem",
//!                name = "bosun_backup", grants = ["SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES ON *.*"] }
//! ```
//!
//! The step logs in as `user` (with `password`'s source, or `auth = "iam"`, as `mysql_backup`
//! does) and makes account `name`@`user_host` exist with `plugin` (default
//! `AWSAuthenticationPlugin` `AS 'RDS'`, RDS's IAM authentication) and exactly `grants` (each
//! `PRIVILEGES ON object`), or not exist (`state = "absent"`). A second run finds nothing to
//! do and reports `ok`.
//!
//! Accounts that log in with a password are not managed here: the password would have to
//! reach the server in a statement, and bosun puts no secret on a command line. Names and
//! grants are checked to be plain identifiers and privilege words, since they are written into
//! SQL.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ActionArgs;
use super::mysql_backup::{MysqlAuth, connection_problems, default_port};
use crate::backup::Number;
use crate::jinja::is_templated;

fn default_user_host() -> String {
    "%".into()
}
fn default_plugin() -> String {
    IAM_PLUGIN.into()
}

/// RDS's IAM authentication plugin (MySQL); its `AS` string is `RDS`.
pub const IAM_PLUGIN: &str = "AWSAuthenticationPlugin";

/// `present` or `absent`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserState {
    /// The account exists with the plugin and the grants.
    #[default]
    Present,
    /// The account does not exist.
    Absent,
}

/// Arguments of `mysql_user`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MysqlUserArgs {
    /// Server host name or address (always reached over TCP).
    pub host: String,
    /// Server port.
    #[serde(default = "default_port")]
    pub port: Number,
    /// The account the step logs in as (needs CREATE USER and GRANT OPTION).
    pub user: String,
    /// Where that account's password is (`secretsmanager:<arn>#password` for RDS's managed
    /// master password). Not with `auth = "iam"`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub password: String,
    /// How the step logs in: `password` (default) or `iam`.
    #[serde(default)]
    pub auth: MysqlAuth,
    /// CA bundle the server's certificate is verified against (required with `auth = "iam"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_ca: Option<String>,
    /// Extra client options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
    /// The client program (default: `mariadb`, else `mysql`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_command: Option<Vec<String>>,
    /// AWS region (for `auth = "iam"` and `secretsmanager:`/`ssm:` sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// AWS endpoint instead of AWS's (default: `AWS_ENDPOINT_URL` if set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// The account to manage: letters, digits and underscores.
    pub name: String,
    /// Its host part (default `%`: from anywhere the server's network allows).
    #[serde(default = "default_user_host")]
    pub user_host: String,
    /// Its authentication plugin (default `AWSAuthenticationPlugin`, RDS IAM tokens).
    #[serde(default = "default_plugin")]
    pub plugin: String,
    /// The plugin's `AS` string (default: `RDS` for `AWSAuthenticationPlugin`, none otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_as: Option<String>,
    /// Exactly the privileges the account has, each `PRIVILEGES ON object`, e.g.
    /// `"SELECT, LOCK TABLES ON *.*"`, `"ALL PRIVILEGES ON shop.*"`. Others are revoked.
    #[serde(default)]
    pub grants: Vec<String>,
    /// `present` (default) or `absent`.
    #[serde(default)]
    pub state: UserState,
}

/// One grant: the privileges (upper case, sorted) on an object (`*.*`, `shop.*`, `shop.t`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    /// The object, without backticks.
    pub object: String,
    /// The privileges, upper case, sorted, without `USAGE`.
    pub privileges: Vec<String>,
}

impl Grant {
    /// Parses `PRIVILEGES ON object` (as written in `grants`) or a `SHOW GRANTS` line
    /// (`GRANT ... ON ... TO ...`).
    pub fn parse(text: &str) -> Result<Grant, String> {
        let t = text.trim();
        let t = t
            .strip_prefix("GRANT ")
            .or_else(|| t.strip_prefix("grant "))
            .unwrap_or(t);
        let upper = t.to_ascii_uppercase();
        let on = upper.find(" ON ").ok_or_else(|| {
            format!("grant {text:?}: write `PRIVILEGES ON object`, e.g. `SELECT ON shop.*`")
        })?;
        let rest = &t[on + 4..];
        let object = match rest.to_ascii_uppercase().find(" TO ") {
            Some(i) => &rest[..i],
            None => rest,
        }
        .trim()
        .replace('`', "");
        let mut privileges: Vec<String> = upper[..on]
            .split(',')
            .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|p| p != "USAGE")
            .map(|p| {
                if p == "ALL" {
                    "ALL PRIVILEGES".into()
                } else {
                    p
                }
            })
            .collect();
        privileges.sort();
        privileges.dedup();
        let object_ok = !object.is_empty()
            && object.contains('.')
            && object
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '*' | '$'));
        if !object_ok {
            return Err(format!(
                "grant {text:?}: the object must be `*.*`, `db.*` or `db.table` (letters, digits, _)"
            ));
        }
        if privileges.iter().any(|p| {
            p.is_empty()
                || !p
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c == ' ' || c == '_')
        }) {
            return Err(format!(
                "grant {text:?}: privileges are words like SELECT, LOCK TABLES, separated by commas"
            ));
        }
        Ok(Grant { object, privileges })
    }
}

/// A name bosun writes into SQL unquoted-safe: letters, digits, `_` (and for hosts `.`, `-`, `%`).
pub fn is_account_part(s: &str, host: bool) -> bool {
    !s.is_empty()
        && s.len() <= 80
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || c == '_' || (host && matches!(c, '.' | '-' | '%'))
        })
}

impl MysqlUserArgs {
    /// The plugin's `AS` string: as given, or `RDS` for RDS's IAM plugin.
    pub fn plugin_string(&self) -> Option<String> {
        self.plugin_as
            .clone()
            .or_else(|| (self.plugin == IAM_PLUGIN).then(|| "RDS".to_string()))
    }
}

impl ActionArgs for MysqlUserArgs {
    fn validate(&self) -> Vec<String> {
        let mut problems = connection_problems(
            &self.port,
            &self.password,
            self.auth,
            self.ssl_ca.as_deref(),
        );
        if !is_templated(&self.name) && !is_account_part(&self.name, false) {
            problems.push(format!(
                "`name` {:?}: use letters, digits and underscores (at most 80)",
                self.name
            ));
        }
        if !is_templated(&self.user_host) && !is_account_part(&self.user_host, true) {
            problems.push(format!(
                "`user_host` {:?}: use letters, digits, `.`, `-`, `_` and `%`",
                self.user_host
            ));
        }
        if !is_templated(&self.plugin) && !is_account_part(&self.plugin, false) {
            problems.push(format!("`plugin` {:?} is not a plugin name", self.plugin));
        }
        if let Some(s) = &self.plugin_as
            && (s.contains('\'') || s.contains('\\'))
        {
            problems.push("`plugin_as` must not contain quotes or backslashes".into());
        }
        for g in self.grants.iter().filter(|g| !is_templated(g)) {
            problems.extend(Grant::parse(g).err());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_parse_from_the_step_and_from_show_grants_alike() {
        let mine = Grant::parse("select, lock tables on shop.*").unwrap();
        let shown =
            Grant::parse("GRANT LOCK TABLES, SELECT ON `shop`.* TO `bosun_backup`@`%`").unwrap();
        assert_eq!(mine, shown);
        assert_eq!(mine.privileges, ["LOCK TABLES", "SELECT"]);
        let usage =
            Grant::parse("GRANT USAGE ON *.* TO `u`@`%` IDENTIFIED VIA unix_socket").unwrap();
        assert!(usage.privileges.is_empty());
        assert_eq!(
            Grant::parse("ALL ON *.*").unwrap().privileges,
            ["ALL PRIVILEGES"]
        );
        for bad in ["SELECT", "SELECT ON shop;drop", "SEL'ECT ON *.*"] {
            assert!(Grant::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_and_grants_that_would_not_be_safe_in_sql_are_refused() {
        let args: MysqlUserArgs = serde_json::from_value(serde_json::json!({
            "host": "db", "user": "admin", "password": "env:PW",
            "name": "x'; DROP USER root; --", "user_host": "a b",
            "grants": ["SELECT ON *.*", "DROP ON x"]
        }))
        .unwrap();
        let p = args.validate().join("\n");
        assert!(
            p.contains("`name`") && p.contains("`user_host`") && p.contains("DROP ON x"),
            "{p}"
        );
        assert_eq!(args.plugin, IAM_PLUGIN);
        assert_eq!(args.plugin_string().as_deref(), Some("RDS"));
    }
}

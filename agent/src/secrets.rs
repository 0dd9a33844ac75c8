//! Secrets for steps (database passwords): where a playbook says to get them, and a value type
//! that does not print.
//!
//! A playbook never holds a secret, only its source:
//! - `env:NAME`: bosund's environment variable `NAME`;
//! - `file:/path`: the file's content, one trailing newline removed;
//! - `ssm:/param/name`: an SSM Parameter Store parameter, decrypted (`SecureString`).
//!
//! Invariant: a [`Secret`]'s value reaches only what it is for (a child's `MYSQL_PWD`). Its
//! `Debug` prints `<redacted>`, it has no `Display`, and no error of this module contains it.
//! Text that may echo it (a tool's stderr) goes through [`Secret::redact`] before it is shown.

use std::path::PathBuf;

use crate::aws::{Aws, describe_error};

/// Where a secret comes from, parsed from `env:…`, `file:…` or `ssm:…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable of bosund.
    Env(String),
    /// A file; one trailing newline is not part of the secret.
    File(PathBuf),
    /// An SSM Parameter Store parameter name (decrypted on read).
    Ssm(String),
}

/// Why a secret could not be read. Never contains the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The source text is not `env:`, `file:` or `ssm:`.
    #[error(
        "secret source {0:?} is not understood: write `env:NAME`, `file:/path` or `ssm:/parameter` (a password never goes in the playbook itself)"
    )]
    Syntax(String),
    /// The environment variable is not set (or not UTF-8).
    #[error("environment variable {0} is not set in bosund's environment")]
    EnvMissing(String),
    /// The file cannot be read.
    #[error("cannot read secret file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What reading it said.
        source: std::io::Error,
    },
    /// SSM refused or could not be reached.
    #[error(
        "cannot read SSM parameter {name}: {reason} (check the name, the region and the role's ssm:GetParameter and kms:Decrypt permissions)"
    )]
    Ssm {
        /// The parameter.
        name: String,
        /// What SSM said.
        reason: String,
    },
    /// The source gave an empty value.
    #[error("secret from {0} is empty")]
    Empty(String),
}

impl std::str::FromStr for SecretSource {
    type Err = SecretError;

    fn from_str(s: &str) -> Result<Self, SecretError> {
        let bad = || SecretError::Syntax(s.to_string());
        let (scheme, rest) = s.split_once(':').ok_or_else(bad)?;
        if rest.is_empty() {
            return Err(bad());
        }
        match scheme {
            "env" => Ok(SecretSource::Env(rest.to_string())),
            "file" => Ok(SecretSource::File(PathBuf::from(rest))),
            "ssm" => Ok(SecretSource::Ssm(rest.to_string())),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Env(n) => write!(f, "env:{n}"),
            SecretSource::File(p) => write!(f, "file:{}", p.display()),
            SecretSource::Ssm(n) => write!(f, "ssm:{n}"),
        }
    }
}

impl SecretSource {
    /// Reads the secret. `aws` is only connected for `ssm:` sources.
    pub async fn read(&self, aws: Option<&Aws>) -> Result<Secret, SecretError> {
        let value = match self {
            SecretSource::Env(name) => {
                std::env::var(name).map_err(|_| SecretError::EnvMissing(name.clone()))?
            }
            SecretSource::File(path) => {
                let mut text =
                    std::fs::read_to_string(path).map_err(|source| SecretError::File {
                        path: path.clone(),
                        source,
                    })?;
                if text.ends_with('\n') {
                    text.pop();
                    if text.ends_with('\r') {
                        text.pop();
                    }
                }
                text
            }
            SecretSource::Ssm(name) => {
                let fail = |reason: String| SecretError::Ssm {
                    name: name.clone(),
                    reason,
                };
                let aws = aws.ok_or_else(|| fail("no AWS configuration".into()))?;
                let out = aws
                    .ssm()
                    .get_parameter()
                    .name(name)
                    .with_decryption(true)
                    .send()
                    .await
                    .map_err(|e| fail(describe_error(&e)))?;
                out.parameter
                    .and_then(|p| p.value)
                    .ok_or_else(|| fail("the parameter has no value".into()))?
            }
        };
        if value.is_empty() {
            return Err(SecretError::Empty(self.to_string()));
        }
        Ok(Secret(value))
    }
}

/// A secret value. Prints as `<redacted>`; [`expose`](Self::expose) is the one way to it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Secret {
    /// A secret from a value (tests, and sources outside this module).
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The value, for the one place it is meant for.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the value replaced by `********`.
    pub fn redact(&self, text: &str) -> String {
        if self.0.is_empty() {
            text.to_string()
        } else {
            text.replace(&self.0, "********")
        }
    }
}

/// Masks the values of a run's secrets in any text: every occurrence becomes `********`.
/// Longer values are replaced first, so a secret containing another is masked whole.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    values: Vec<Secret>,
}

impl Redactor {
    /// Adds a value to mask (empty values are ignored).
    pub fn add(&mut self, secret: Secret) {
        if !secret.0.is_empty() && !self.values.contains(&secret) {
            self.values.push(secret);
            self.values.sort_by_key(|v| std::cmp::Reverse(v.0.len()));
        }
    }

    /// True when there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every secret masked.
    pub fn redact(&self, text: &str) -> String {
        self.values
            .iter()
            .fold(text.to_string(), |acc, secret| secret.redact(&acc))
    }

    /// Masks every string inside a JSON value, in place.
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        if self.is_empty() {
            return;
        }
        match value {
            serde_json::Value::String(s) if self.values.iter().any(|v| s.contains(v.expose())) => {
                *s = self.redact(s);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            serde_json::Value::Object(map) => map.values_mut().for_each(|v| self.redact_json(v)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_sources_and_rejects_the_rest() {
        assert_eq!(
            "env:DB_PW".parse::<SecretSource>().unwrap(),
            SecretSource::Env("DB_PW".into())
        );
        assert_eq!(
            "file:/etc/bosun/pw".parse::<SecretSource>().unwrap(),
            SecretSource::File("/etc/bosun/pw".into())
        );
        assert_eq!(
            "ssm:/prod/db/password".parse::<SecretSource>().unwrap(),
            SecretSource::Ssm("/prod/db/password".into())
        );
        for bad in ["hunter2", "env:", "vault:x", ""] {
            let err = bad.parse::<SecretSource>().unwrap_err().to_string();
            assert!(err.contains("env:NAME"), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn file_source_drops_one_trailing_newline_and_errors_name_the_file_not_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret value\n").unwrap();
        let src = SecretSource::File(path.clone());
        assert_eq!(src.read(None).await.unwrap().expose(), "s3cret value");

        let missing = SecretSource::File(dir.path().join("nope"));
        let err = missing.read(None).await.unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");

        std::fs::write(&path, "\n").unwrap();
        let err = src.read(None).await.unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
    }

    #[tokio::test]
    async fn missing_env_var_is_named() {
        let err = SecretSource::Env("BOSUN_TEST_SURELY_UNSET_VAR".into())
            .read(None)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("BOSUN_TEST_SURELY_UNSET_VAR"), "{err}");
    }

    #[test]
    fn secret_never_prints_and_redacts_text() {
        let s = Secret::new("p4ss".into());
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(
            s.redact("user p4ss failed p4ss"),
            "user ******** failed ********"
        );
    }

    #[test]
    fn redactor_masks_every_value_longest_first_inside_nested_json() {
        let mut r = Redactor::default();
        r.add(Secret::new("abc".into()));
        r.add(Secret::new("abcdef".into()));
        r.add(Secret::new(String::new()));
        assert_eq!(r.redact("x abcdef y abc"), "x ******** y ********");
        let mut v = serde_json::json!({"a": ["token=abcdef"], "b": {"c": "abc!"}, "n": 1});
        r.redact_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"a": ["token=********"], "b": {"c": "********!"}, "n": 1})
        );
    }
}

//! Secrets for steps (database passwords): where a playbook says to get them, and a value type
//! that does not print.
//!
//! A playbook never holds a secret, only its source:
//! - `env:NAME`: bosund's environment variable `NAME`;
//! - `file:/path`: the file's content, one trailing newline removed;
//! - `ssm:/param/name`: an SSM Parameter Store parameter, decrypted (`SecureString`);
//! - `secretsmanager:<name or ARN>[#key]`: a Secrets Manager secret's string, or one field of
//!   it when it is JSON (`#password` of the master password RDS manages).
//!
//! Invariant: a [`Secret`]'s value reaches only what it is for (a child's `MYSQL_PWD`). Its
//! `Debug` prints `<redacted>`, it has no `Display`, and no error of this module contains it.
//! Text that may echo it (a tool's stderr) goes through [`Secret::redact`] before it is shown.

use std::path::PathBuf;

pub use bosun_model::secret_source::SecretSource;

use crate::aws::Aws;

/// Why a secret could not be read. Never contains the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The source text is not `env:`, `file:` or `ssm:`.
    #[error(transparent)]
    Syntax(#[from] bosun_model::secret_source::SourceSyntax),
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
    /// Secrets Manager refused, could not be reached, or the secret is not what `#key` says.
    #[error(
        "cannot read Secrets Manager secret {id}: {reason} (check the id, the region and the role's secretsmanager:GetSecretValue permission)"
    )]
    SecretsManager {
        /// The secret's name or ARN.
        id: String,
        /// What went wrong (never the value).
        reason: String,
    },
    /// The source gave an empty value.
    #[error("secret from {0} is empty")]
    Empty(String),
}

/// Reads the secret `source` names. `aws` is only connected for `ssm:` sources.
pub async fn read(source: &SecretSource, aws: Option<&Aws>) -> Result<Secret, SecretError> {
    let value = match source {
        SecretSource::Env(name) => {
            std::env::var(name).map_err(|_| SecretError::EnvMissing(name.clone()))?
        }
        SecretSource::File(path) => {
            let mut text = std::fs::read_to_string(path).map_err(|source| SecretError::File {
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
            aws.ssm_parameter(name).await.map_err(fail)?
        }
        SecretSource::SecretsManager { id, key } => {
            let fail = |reason: String| SecretError::SecretsManager {
                id: id.clone(),
                reason,
            };
            let aws = aws.ok_or_else(|| fail("no AWS configuration".into()))?;
            let text = aws.secret_string(id).await.map_err(fail)?;
            match key {
                None => text,
                Some(key) => json_field(&text, key).map_err(fail)?,
            }
        }
    };
    if value.is_empty() {
        return Err(SecretError::Empty(source.to_string()));
    }
    Ok(Secret(value))
}

/// The string field `key` of a JSON object. Errors never quote the text (it is the secret).
fn json_field(text: &str, key: &str) -> Result<String, String> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|_| format!("#{key} was asked for but the secret is not JSON"))?;
    match value.get(key) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("field {key:?} of the secret is not a string")),
        None => Err(format!("the secret's JSON has no field {key:?}")),
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
/// Values are added while a run goes on (a secret a step read for later steps), hence the
/// lock: everything holding the run's redactor sees every value added so far.
#[derive(Debug, Default)]
pub struct Redactor {
    values: std::sync::RwLock<Vec<Secret>>,
}

impl Redactor {
    /// Adds a value to mask (empty values are ignored).
    pub fn add(&self, secret: Secret) {
        let Ok(mut values) = self.values.write() else {
            return;
        };
        if !secret.0.is_empty() && !values.contains(&secret) {
            values.push(secret);
            values.sort_by_key(|v| std::cmp::Reverse(v.0.len()));
        }
    }

    fn values(&self) -> Vec<Secret> {
        self.values.read().map(|v| v.clone()).unwrap_or_default()
    }

    /// True when there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.values.read().map(|v| v.is_empty()).unwrap_or(true)
    }

    /// `text` with every secret masked.
    pub fn redact(&self, text: &str) -> String {
        self.values()
            .iter()
            .fold(text.to_string(), |acc, secret| secret.redact(&acc))
    }

    /// Masks every string inside a JSON value, in place.
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        if self.is_empty() {
            return;
        }
        match value {
            serde_json::Value::String(s)
                if self.values().iter().any(|v| s.contains(v.expose())) =>
            {
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

    #[tokio::test]
    async fn file_source_drops_one_trailing_newline_and_errors_name_the_file_not_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret value\n").unwrap();
        let src = SecretSource::File(path.clone());
        assert_eq!(read(&src, None).await.unwrap().expose(), "s3cret value");

        let missing = SecretSource::File(dir.path().join("nope"));
        let err = read(&missing, None).await.unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");

        std::fs::write(&path, "\n").unwrap();
        let err = read(&src, None).await.unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
    }

    #[tokio::test]
    async fn missing_env_var_is_named() {
        let err = read(
            &SecretSource::Env("BOSUN_TEST_SURELY_UNSET_VAR".into()),
            None,
        )
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
        let r = Redactor::default();
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

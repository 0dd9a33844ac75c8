//! Where a secret comes from, as a playbook writes it: `env:NAME`, `file:/path`,
//! `ssm:/parameter` or `secretsmanager:<secret id>[#json-key]`. A playbook never holds a secret,
//! only its source; reading it is the agent's (`bosun_agent::secrets`).
//!
//! `secretsmanager:` takes a secret's name or ARN (ARNs hold colons; everything after the
//! scheme is the id), and optionally `#key` to pick one field of a JSON secret: RDS keeps a
//! managed master password as `{"username": ..., "password": ...}`, read with
//! `secretsmanager:<arn>#password`.

use std::path::PathBuf;

/// Where a secret comes from, parsed from `env:…`, `file:…` or `ssm:…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable of bosund.
    Env(String),
    /// A file; one trailing newline is not part of the secret.
    File(PathBuf),
    /// An SSM Parameter Store parameter name (decrypted on read).
    Ssm(String),
    /// A Secrets Manager secret (name or ARN), and the field of its JSON value to use.
    SecretsManager {
        /// The secret's name or ARN.
        id: String,
        /// `#key`: the field of a JSON secret string (the whole string when `None`).
        key: Option<String>,
    },
}

/// A secret source that is not `env:`, `file:`, `ssm:` or `secretsmanager:`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "secret source {0:?} is not understood: write `env:NAME`, `file:/path`, `ssm:/parameter` or `secretsmanager:<secret id>[#json-key]` (a password never goes in the playbook itself)"
)]
pub struct SourceSyntax(pub String);

impl std::str::FromStr for SecretSource {
    type Err = SourceSyntax;

    fn from_str(s: &str) -> Result<Self, SourceSyntax> {
        let bad = || SourceSyntax(s.to_string());
        let (scheme, rest) = s.split_once(':').ok_or_else(bad)?;
        if rest.is_empty() {
            return Err(bad());
        }
        match scheme {
            "env" => Ok(SecretSource::Env(rest.to_string())),
            "file" => Ok(SecretSource::File(PathBuf::from(rest))),
            "ssm" => Ok(SecretSource::Ssm(rest.to_string())),
            "secretsmanager" => {
                let (id, key) = match rest.rsplit_once('#') {
                    Some((id, key)) if !id.is_empty() && !key.is_empty() => {
                        (id, Some(key.to_string()))
                    }
                    Some(_) => return Err(bad()),
                    None => (rest, None),
                };
                Ok(SecretSource::SecretsManager {
                    id: id.to_string(),
                    key,
                })
            }
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
            SecretSource::SecretsManager { id, key: None } => write!(f, "secretsmanager:{id}"),
            SecretSource::SecretsManager { id, key: Some(k) } => {
                write!(f, "secretsmanager:{id}#{k}")
            }
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
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!db-1a2b";
        let source: SecretSource = format!("secretsmanager:{arn}#password").parse().unwrap();
        assert_eq!(
            source,
            SecretSource::SecretsManager {
                id: arn.into(),
                key: Some("password".into())
            }
        );
        assert_eq!(source.to_string(), format!("secretsmanager:{arn}#password"));
        assert_eq!(
            "secretsmanager:prod/db".parse::<SecretSource>().unwrap(),
            SecretSource::SecretsManager {
                id: "prod/db".into(),
                key: None
            }
        );
        for bad in [
            "hunter2",
            "env:",
            "vault:x",
            "",
            "secretsmanager:x#",
            "secretsmanager:#password",
        ] {
            let err = bad.parse::<SecretSource>().unwrap_err().to_string();
            assert!(err.contains("env:NAME"), "{bad}: {err}");
        }
    }
}

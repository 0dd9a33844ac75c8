//! Where a secret comes from, as a playbook writes it: `env:NAME`, `file:/path` or
//! `ssm:/parameter`. A playbook never holds a secret, only its source; reading it is the
//! agent's (`bosun_agent::secrets`).

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
}

/// A secret source that is not `env:`, `file:` or `ssm:`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "secret source {0:?} is not understood: write `env:NAME`, `file:/path` or `ssm:/parameter` (a password never goes in the playbook itself)"
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
}

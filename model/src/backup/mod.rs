//! What the backup steps' arguments and documents need, without doing a backup: numbers
//! written as digits or templates, sizes with units, object key templates ([`key`]), RDS
//! snapshot identifiers ([`rds`]), the retention policy's shape ([`retention`]), multipart part
//! planning ([`parts`]), and the documents of `bosund backups` ([`report`]). Dumps, uploads,
//! manifests on S3 and the retention plan over real backups run in the agent.

pub mod key;
pub mod parts;
pub mod rds;
pub mod report;
pub mod retention;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A whole number written as a number, or as a string that may hold a template
/// (`port = 3306`, `keep_last = "{{ keep }}"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Number {
    /// A number.
    Int(u64),
    /// Digits, or a template that renders to digits.
    Text(String),
}

impl Number {
    /// The value, once rendered; the error names the argument.
    pub fn value(&self, name: &str) -> anyhow::Result<u64> {
        match self {
            Number::Int(n) => Ok(*n),
            Number::Text(t) => t
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("`{name}` must be a whole number, got {t:?}")),
        }
    }

    /// A problem with an unrendered value, for `validate`.
    pub fn problem(&self, name: &str) -> Option<String> {
        match self {
            Number::Text(t) if !crate::jinja::is_templated(t) => {
                self.value(name).err().map(|e| e.to_string())
            }
            _ => None,
        }
    }
}

impl From<u64> for Number {
    fn from(n: u64) -> Self {
        Number::Int(n)
    }
}

/// Parses a size: bytes (`1048576`) or a number with `KiB`, `MiB`, `GiB`, `TiB` (or `K`, `M`,
/// `G`, `T`, all powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        format!("size {text:?} must be a number with an optional unit, e.g. 100GiB")
    })?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        other => {
            return Err(format!(
                "size {text:?} has unknown unit {other:?}: use B, KiB, MiB, GiB or TiB"
            ));
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_powers_of_1024() {
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("8MiB").unwrap(), 8 << 20);
        assert_eq!(parse_size("100 GiB").unwrap(), 100 << 30);
        assert_eq!(parse_size("2T").unwrap(), 2 << 40);
        assert!(parse_size("1.5GiB").unwrap_err().contains("unknown unit"));
        assert!(parse_size("GiB").unwrap_err().contains("e.g. 100GiB"));
    }

    #[test]
    fn numbers_from_text_or_int() {
        assert_eq!(Number::Int(3).value("n").unwrap(), 3);
        assert_eq!(Number::Text(" 7 ".into()).value("n").unwrap(), 7);
        assert!(
            Number::Text("x".into())
                .problem("n")
                .unwrap()
                .contains("`n`")
        );
        assert!(Number::Text("{{ n }}".into()).problem("n").is_none());
    }
}

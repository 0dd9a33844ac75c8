//! `ssm_parameter`: an SSM Parameter Store parameter written (`state = "put"`) or read for
//! later steps (`state = "get"`).
//!
//! ```toml
//! # The server publishes its join token: read inside the step, never a template value.
//! ssm_parameter = { name = "/bosun/prod-1/k3s-token", from_file = "/var/lib/rancher/k3s/server/node-token", overwrite = true }
//! # An agent reads it; `register` keeps it as `join.value`, masked in every event.
//! ssm_parameter = { name = "/bosun/prod-1/k3s-token", state = "get", wait = "15m" }
//! ```
//!
//! **put** writes `value` or the content of `from_file` (one trailing newline removed, as
//! `file:` secrets are read) as `type` (`SecureString`, the default, or `String`). The
//! parameter is read first: an equal value of the same type is `ok` and nothing is written;
//! another value is replaced only with `overwrite = true` (else the step fails and writes
//! nothing). `--check` reads and says what would be written.
//!
//! **get** reads the parameter, decrypted. `register` stores its value as `value` (beside the
//! usual `changed`, `msg`, ...), and the run masks it in every event from then on, as it masks
//! `[secrets]`: pass it on with `{{ name.value }}`. With `wait`, a parameter that does not
//! exist yet is polled for until it does or `wait` passes (an agent booting before its server
//! has published the token). A get changes nothing, so it also runs under `--check`.
//!
//! The value is never in the step's message, diff, error or any event. AWS is reached as for
//! the other AWS kinds: `region` and `endpoint_url`, else the environment.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ActionArgs;
use super::k3s::parse_timeout;
use crate::jinja::is_templated;

fn default_state() -> String {
    "put".into()
}
fn default_type() -> String {
    "SecureString".into()
}

/// Arguments of `ssm_parameter`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SsmParameterArgs {
    /// The parameter's name (`/bosun/<stack>/k3s-token`).
    pub name: String,
    /// "put" (default) or "get".
    #[serde(default = "default_state")]
    pub state: String,
    /// put: the value to write (give this or `from_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// put: an absolute path on the host whose content is the value, read inside the step so
    /// that the value is never a template variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_file: Option<String>,
    /// put: "SecureString" (default) or "String".
    #[serde(default = "default_type", rename = "type")]
    pub kind: String,
    /// put: replace a parameter that holds another value (default false: fail instead).
    #[serde(default)]
    pub overwrite: bool,
    /// put: the KMS key of a SecureString (default: the account's `alias/aws/ssm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// put: the parameter's description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// get: how long to wait for a parameter that does not exist yet, e.g. "15m" (default:
    /// not at all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<String>,
    /// AWS region (default: from the environment, profile or instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// SSM endpoint instead of AWS's (default: `AWS_ENDPOINT_URL` if set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
}

/// What the step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SsmState {
    /// Write the parameter.
    Put,
    /// Read it for later steps.
    Get,
}

impl SsmParameterArgs {
    /// The rendered `state`.
    pub fn state(&self) -> anyhow::Result<SsmState> {
        match self.state.trim() {
            "put" => Ok(SsmState::Put),
            "get" => Ok(SsmState::Get),
            other => anyhow::bail!("`state` must be \"put\" or \"get\", got {other:?}"),
        }
    }
}

/// The problem with a parameter name, if any (SSM's rules: letters, digits and `_.-/`, at
/// most 2048 characters; a hierarchy starts with `/`; `aws`/`ssm` prefixes are reserved).
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 2048 {
        return Some(format!("`name` {name:?} must be 1 to 2048 characters long"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c))
    {
        return Some(format!(
            "`name` {name:?} may hold only letters, digits and `_`, `.`, `-`, `/` (SSM's rule)"
        ));
    }
    let first = name.trim_start_matches('/').split('/').next().unwrap_or("");
    if first.to_ascii_lowercase().starts_with("aws")
        || first.to_ascii_lowercase().starts_with("ssm")
    {
        return Some(format!(
            "`name` {name:?}: names starting with aws or ssm are reserved by SSM"
        ));
    }
    if name.contains('/') && !name.starts_with('/') {
        return Some(format!(
            "`name` {name:?}: a hierarchical name starts with `/` (as in /bosun/prod-1/k3s-token)"
        ));
    }
    None
}

impl ActionArgs for SsmParameterArgs {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !is_templated(&self.name) {
            problems.extend(name_problem(&self.name));
        }
        let state = if is_templated(&self.state) {
            None
        } else {
            match self.state() {
                Ok(s) => Some(s),
                Err(e) => {
                    problems.push(e.to_string());
                    None
                }
            }
        };
        if !is_templated(&self.kind) && !matches!(self.kind.as_str(), "SecureString" | "String") {
            problems.push(format!(
                "`type` must be \"SecureString\" or \"String\", got {:?} (StringList is not supported)",
                self.kind
            ));
        }
        if let Some(f) = self.from_file.as_deref().filter(|f| !is_templated(f))
            && !f.starts_with('/')
        {
            problems.push(format!("`from_file` must be an absolute path, got {f:?}"));
        }
        if let Some(w) = self.wait.as_deref().filter(|w| !is_templated(w)) {
            problems.extend(parse_timeout("wait", w).err());
        }
        match state {
            Some(SsmState::Put) => {
                if self.value.is_some() == self.from_file.is_some() {
                    problems
                        .push("state \"put\" needs exactly one of `value` and `from_file`".into());
                }
                if self.wait.is_some() {
                    problems.push("`wait` is for state \"get\"".into());
                }
            }
            Some(SsmState::Get) => {
                for (given, key) in [
                    (self.value.is_some(), "value"),
                    (self.from_file.is_some(), "from_file"),
                    (self.overwrite, "overwrite"),
                    (self.key_id.is_some(), "key_id"),
                    (self.description.is_some(), "description"),
                ] {
                    if given {
                        problems.push(format!("`{key}` is for state \"put\", not \"get\""));
                    }
                }
            }
            None => {}
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(toml_text: &str) -> SsmParameterArgs {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn put_and_get_take_their_own_arguments() {
        assert!(
            args("name = \"/bosun/a/k3s-token\"\nvalue = \"x\"")
                .validate()
                .is_empty()
        );
        assert!(
            args("name = \"/bosun/a/t\"\nstate = \"get\"\nwait = \"15m\"")
                .validate()
                .is_empty()
        );
        let p = args("name = \"/bosun/a/t\"").validate();
        assert!(
            p[0].contains("exactly one of `value` and `from_file`"),
            "{p:?}"
        );
        let p = args("name = \"/bosun/a/t\"\nstate = \"get\"\nvalue = \"x\"\noverwrite = true")
            .validate();
        assert_eq!(p.len(), 2, "{p:?}");
        let p =
            args("name = \"bad name\"\nstate = \"fetch\"\ntype = \"StringList\"\nvalue = \"x\"")
                .validate();
        assert_eq!(p.len(), 3, "{p:?}");
        let p = args("name = \"/x\"\nvalue = \"v\"\nfrom_file = \"rel/path\"").validate();
        assert!(p.iter().any(|m| m.contains("absolute")), "{p:?}");
        assert!(name_problem("/aws/reserved").is_some());
        assert!(name_problem("a/b").is_some());
        assert!(name_problem("plain_name").is_none());
    }
}

//! `command`: run a program, as a shell line or as an argument list.
//!
//! ```toml
//! command = { run = "k3s kubectl get nodes", cwd = "/tmp" }
//! command = { argv = ["/usr/bin/systemctl", "daemon-reload"] }
//! command = { run = "mkswap /swapfile", creates = "/etc/bosun/swap.done" }
//! ```
//! A command reports `changed` (use `changed_when` to say otherwise) and fails on a non-zero
//! exit code (use `failed_when` to say otherwise). `creates` skips it when that path exists,
//! `removes` when that path does not. Under `--check` it does not run.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ActionArgs;

/// Arguments of `command`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandArgs {
    /// A shell line, run with `/bin/sh -c`. Exactly one of `run` and `argv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// The program and its arguments, run without a shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Skip the command when this path exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creates: Option<String>,
    /// Skip the command when this path does not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removes: Option<String>,
}

impl CommandArgs {
    /// The program and its arguments: `run` through `/bin/sh -c`, or `argv` as given.
    pub fn argv(&self) -> Vec<String> {
        match (&self.run, &self.argv) {
            (Some(line), _) => vec!["/bin/sh".into(), "-c".into(), line.clone()],
            (None, Some(argv)) => argv.clone(),
            (None, None) => Vec::new(),
        }
    }
}

impl ActionArgs for CommandArgs {
    fn validate(&self) -> Vec<String> {
        match (&self.run, &self.argv) {
            (Some(_), Some(_)) => {
                vec!["give either `run` (a shell line) or `argv` (a list), not both".into()]
            }
            (None, None) => {
                vec!["missing `run` (a shell line) or `argv` (a list): what should run?".into()]
            }
            (None, Some(a)) if a.is_empty() => {
                vec!["`argv` is empty: it needs at least the program".into()]
            }
            _ => Vec::new(),
        }
    }
}

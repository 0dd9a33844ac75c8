//! `copy`: a file holds given content (inline or from a file), written atomically.
//!
//! ```toml
//! copy = { dest = "/etc/bosun/agent.toml", content = "interval = 60\n", mode = "0644" }
//! copy = { dest = "/etc/motd", src = "files/motd" }   # relative to the playbook
//! ```
//!
//! Compared with Ansible's `copy` on generated cases (`agent/tests/ansible.rs`): same bytes,
//! modes and status. Deliberate differences: `dest` must name a file (Ansible copies into a
//! directory); `src` is one file (no directory trees, no `remote_src`: relative is the
//! playbook's file, absolute the host's); no `backup`, `validate`, `force = false`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ActionArgs;

/// Arguments of `copy`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CopyArgs {
    /// The file to write.
    pub dest: String,
    /// The content, inline (Jinja is rendered). Exactly one of `content` and `src`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// A file whose bytes are copied as they are (relative paths: from the playbook's directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    /// Octal permission bits, e.g. "0644" (default: kept for an existing file, 0644 for a new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Owner, by name or numeric id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Group, by name or numeric id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl ActionArgs for CopyArgs {
    const LOCAL_FILES: &'static [(&'static str, super::LocalFileRole)] =
        &[("src", super::LocalFileRole::CopySource)];

    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match (&self.content, &self.src) {
            (Some(_), Some(_)) => problems.push("give either `content` or `src`, not both".into()),
            (None, None) => {
                problems.push("missing `content` or `src`: what should the file hold?".into())
            }
            _ => {}
        }
        problems.extend(super::mode_problem(self.mode.as_deref()));
        problems
    }
}

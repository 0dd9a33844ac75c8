//! `file`: a path is a directory, a regular file, a symlink, or absent, with a mode, owner and
//! group.
//!
//! ```toml
//! file = { path = "/etc/bosun", state = "directory", mode = "0755" }
//! file = { path = "/usr/local/bin/kubectl", state = "link", src = "/usr/local/bin/k3s" }
//! ```
//! `state = "file"` makes sure a regular file exists (created empty when missing) and sets its
//! attributes; to give it content use `copy` or `template`. `state = "touch"` is the same.
//!
//! Compared with Ansible's `file` on generated cases (`agent/tests/ansible.rs`). Deliberate
//! differences: `state = "file"` creates a missing file (Ansible fails and asks for `touch`);
//! `state = "file"` on a symlink fails (Ansible follows it and changes the target);
//! `state = "touch"` on an existing path changes nothing (Ansible updates its times and reports
//! `changed` on every run).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ActionArgs;

/// Arguments of `file`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileArgs {
    /// The path to manage.
    pub path: String,
    /// What the path must be (default `file`).
    #[serde(default)]
    pub state: FileState,
    /// Octal permission bits, e.g. "0755".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Owner, by name or numeric id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Group, by name or numeric id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// For `state = "link"`: what the link points to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    /// For `state = "link"`: replace a file or directory that stands where the link goes.
    #[serde(default)]
    pub force: bool,
}

/// What `path` must be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileState {
    /// A directory (parents created as needed).
    Directory,
    /// A regular file.
    #[default]
    File,
    /// Nothing: removed if present (directories with their content).
    Absent,
    /// A symbolic link to `src`.
    Link,
    /// A regular file, created empty when missing; an existing one keeps its times (unlike
    /// Ansible's `touch`, which updates them and always reports a change).
    Touch,
}

impl ActionArgs for FileArgs {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match (self.state, &self.src) {
            (FileState::Link, None) => {
                problems.push("`state = \"link\"` needs `src`, the link's target".into())
            }
            (FileState::Link, Some(_)) => {}
            (_, Some(_)) => problems.push("`src` is only for `state = \"link\"`".into()),
            (_, None) => {}
        }
        if self.state == FileState::Absent
            && (self.mode.is_some() || self.owner.is_some() || self.group.is_some())
        {
            problems
                .push("`mode`, `owner` and `group` mean nothing with `state = \"absent\"`".into());
        }
        if self.state == FileState::Link && self.mode.is_some() {
            problems.push("a symlink has no mode of its own; set `mode` on its target".into());
        }
        problems.extend(super::mode_problem(self.mode.as_deref()));
        problems
    }
}

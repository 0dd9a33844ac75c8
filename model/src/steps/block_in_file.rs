//! `block_in_file`: a block of lines between two marker lines, kept in a file (or removed).
//!
//! ```toml
//! block_in_file = { path = "/etc/hosts", block = "10.0.0.5 db\n10.0.0.6 cache\n" }
//! block_in_file = { path = "/etc/ssh/sshd_config", block = "Match User deploy\n  PasswordAuthentication no", insert_before = "^Match ", marker = "# {mark} deploy user" }
//! block_in_file = { path = "/etc/hosts", state = "absent" }
//! ```
//! The block sits between `marker` with `{mark}` as `BEGIN` and as `END` (default
//! `# {mark} MANAGED BY BOSUN`). When both markers are there, what is between them is
//! replaced; else the block is added after the last line matching `insert_after` (`EOF`, the
//! default) or before the last line matching `insert_before` (`BOF`: at the start), at the end
//! when nothing matches. `state = "absent"` (or an empty `block`) removes the block and its
//! markers.
//!
//! This is Ansible's `blockinfile` (the same algorithm, compared byte for byte on generated
//! cases in `agent/tests/ansible.rs`). Deliberate differences: the default marker names bosun;
//! regular expressions are Rust `regex` syntax, searched line by line (a `(?m)` pattern is not
//! searched across the whole file); `backup`, `validate`, `append_newline` and
//! `prepend_newline` are not offered.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ActionArgs;
use super::line_in_file::insert_position_problems;
use crate::jinja::is_templated;

/// The default `marker`.
pub const DEFAULT_MARKER: &str = "# {mark} MANAGED BY BOSUN";

/// Arguments of `block_in_file`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockInFileArgs {
    /// The file to edit.
    pub path: String,
    /// The lines between the markers (a final newline is added when missing).
    #[serde(default)]
    pub block: String,
    /// `present` (default) or `absent`.
    #[serde(default)]
    pub state: super::line_in_file::LineState,
    /// The marker line; `{mark}` becomes `marker_begin` / `marker_end`.
    #[serde(default = "default_marker")]
    pub marker: String,
    /// What `{mark}` is in the first marker (default `BEGIN`).
    #[serde(default = "default_begin")]
    pub marker_begin: String,
    /// What `{mark}` is in the last marker (default `END`).
    #[serde(default = "default_end")]
    pub marker_end: String,
    /// Where a new block goes: after the last line matching this regular expression, or `EOF`
    /// (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insert_after: Option<String>,
    /// Where a new block goes: before the last line matching this regular expression, or `BOF`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insert_before: Option<String>,
    /// Create the file when it does not exist (default false: a missing file is an error).
    #[serde(default)]
    pub create: bool,
    /// Octal permission bits of the file (default: kept; 0644 for a created file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Owner, by name or numeric id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Group, by name or numeric id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

fn default_marker() -> String {
    DEFAULT_MARKER.into()
}

fn default_begin() -> String {
    "BEGIN".into()
}

fn default_end() -> String {
    "END".into()
}

impl ActionArgs for BlockInFileArgs {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        problems.extend(insert_position_problems(
            &self.insert_after,
            &self.insert_before,
        ));
        if !is_templated(&self.marker) && !self.marker.contains("{mark}") {
            problems.push(
                "`marker` must contain `{mark}`: the begin and end markers must differ".into(),
            );
        }
        if self.marker.contains('\n') {
            problems.push("`marker` must be a single line".into());
        }
        if self.marker_begin == self.marker_end {
            problems.push("`marker_begin` and `marker_end` must differ".into());
        }
        problems.extend(super::mode_problem(self.mode.as_deref()));
        problems
    }
}

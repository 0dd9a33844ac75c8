//! `line_in_file`: one line present in (or absent from) a file, found by a regular expression or
//! by its exact text.
//!
//! ```toml
//! line_in_file = { path = "/etc/sysctl.d/90-k3s.conf", regexp = "^vm.swappiness", line = "vm.swappiness=10", create = true }
//! line_in_file = { path = "/etc/hosts", regexp = "\\sold-name$", state = "absent" }
//! ```
//! Present: the last line matching `regexp` is replaced by `line`; with no match, `line` is
//! appended unless it is already there. Absent: every line matching `regexp` (or equal to
//! `line`) is removed.

use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ActionArgs;
use crate::jinja::is_templated;

/// Arguments of `line_in_file`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LineInFileArgs {
    /// The file to edit.
    pub path: String,
    /// The line, without its newline. Needed for `state = "present"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    /// A regular expression (Rust `regex` syntax) finding the line to replace or remove.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regexp: Option<String>,
    /// `present` (default) or `absent`.
    #[serde(default)]
    pub state: LineState,
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

/// Whether the line must be there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LineState {
    /// The line is in the file.
    #[default]
    Present,
    /// No matching line is in the file.
    Absent,
}

impl ActionArgs for LineInFileArgs {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match self.state {
            LineState::Present if self.line.is_none() => {
                problems.push("`state = \"present\"` needs `line`".into());
            }
            LineState::Absent if self.line.is_none() && self.regexp.is_none() => {
                problems.push("`state = \"absent\"` needs `regexp` or `line`".into());
            }
            _ => {}
        }
        if self.line.as_deref().is_some_and(|l| l.contains('\n')) {
            problems.push("`line` must be a single line (no newline)".into());
        }
        if let Some(r) = self.regexp.as_deref().filter(|r| !is_templated(r))
            && let Err(e) = Regex::new(r)
        {
            problems.push(format!("`regexp` is not a valid regular expression: {e}"));
        }
        problems.extend(super::mode_problem(self.mode.as_deref()));
        problems
    }
}

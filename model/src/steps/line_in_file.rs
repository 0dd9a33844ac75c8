//! `line_in_file`: one line present in (or absent from) a file, found by a regular expression or
//! by its exact text.
//!
//! ```toml
//! line_in_file = { path = "/etc/sysctl.d/90-k3s.conf", regexp = "^vm.swappiness", line = "vm.swappiness=10", create = true }
//! line_in_file = { path = "/etc/hosts", regexp = "\\sold-name$", state = "absent" }
//! ```
//! Present: the last line matching `regexp` (the first with `firstmatch`) is replaced by
//! `line`; with no match, `line` is added unless it is already there: after the last line
//! matching `insert_after` (`EOF`: at the end, the default), or before the last line matching
//! `insert_before` (`BOF`: at the start), else at the end. With `backrefs = true`, `\1` or
//! `\g<name>` in `line` are the groups of the match, and nothing is added when `regexp` matches
//! no line. Absent: every line matching `regexp` (or equal to `line`) is removed.
//!
//! ```toml
//! line_in_file = { path = "/etc/ssh/sshd_config", regexp = "^#?PermitRootLogin", line = "PermitRootLogin no", insert_after = "^#?Port " }
//! line_in_file = { path = "/etc/default/grub", regexp = "^(GRUB_CMDLINE_LINUX=\"[^\"]*)\"$", line = "\\1 quiet\"", backrefs = true }
//! ```
//!
//! This is Ansible's `lineinfile` (the same algorithm, compared byte for byte on generated
//! cases in `agent/tests/ansible.rs`). Deliberate differences: regular expressions are Rust
//! `regex` syntax (no look-around or backreferences inside the pattern), searched in each line
//! without its line ending; `search_string` and `backup` are not offered.

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
    /// Where a new line goes: after the last line matching this regular expression, or `EOF`
    /// (the default). Only when `regexp` (or `line` itself) matches nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insert_after: Option<String>,
    /// Where a new line goes: before the last line matching this regular expression, or `BOF`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insert_before: Option<String>,
    /// `line` may use the groups of `regexp`'s match (`\1`, `\g<name>`); when `regexp`
    /// matches nothing, the file is left alone.
    #[serde(default)]
    pub backrefs: bool,
    /// Use the first line matching `regexp` / `insert_after` / `insert_before`, not the last.
    #[serde(default)]
    pub firstmatch: bool,
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

/// What is wrong with an `insert_after` / `insert_before` pair (Ansible's meaning: a regular
/// expression, or `EOF` / `BOF`): both given, or one that is neither its keyword nor a valid
/// regular expression. Shared with `block_in_file`.
pub(crate) fn insert_position_problems(
    insert_after: &Option<String>,
    insert_before: &Option<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    if insert_after.is_some() && insert_before.is_some() {
        problems.push("give `insert_after` or `insert_before`, not both".into());
    }
    for (key, value, keyword) in [
        ("insert_after", insert_after, "EOF"),
        ("insert_before", insert_before, "BOF"),
    ] {
        if let Some(r) = value
            .as_deref()
            .filter(|r| *r != keyword && !is_templated(r))
            && let Err(e) = Regex::new(r)
        {
            problems.push(format!(
                "`{key}` is neither {keyword} nor a valid regular expression: {e}"
            ));
        }
    }
    problems
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
        problems.extend(insert_position_problems(
            &self.insert_after,
            &self.insert_before,
        ));
        for (key, value) in [
            ("insert_after", &self.insert_after),
            ("insert_before", &self.insert_before),
        ] {
            if value.is_some() && self.state == LineState::Absent {
                problems.push(format!("`{key}` means nothing with `state = \"absent\"`"));
            }
        }
        if self.backrefs && self.regexp.is_none() {
            problems.push("`backrefs = true` needs `regexp` (its groups fill `line`)".into());
        }
        problems.extend(super::mode_problem(self.mode.as_deref()));
        problems
    }
}

//! `template`: a file rendered from a Jinja template file with the run's variables, written
//! atomically.
//!
//! ```toml
//! template = { src = "templates/config.yaml.j2", dest = "/etc/rancher/k3s/config.yaml", mode = "0600" }
//! ```
//!
//! Compared with Ansible's `template` on generated cases (`agent/tests/ansible.rs`), in the
//! subset both engines render alike. Deliberate differences: the engine is minijinja, not
//! Jinja2 (Ansible's own filters and lookups are not there); `trim_blocks` is off, so the line
//! end after a `{% ... %}` tag is kept (Ansible removes it); an undefined variable fails the
//! step in both.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ActionArgs;

/// Arguments of `template`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateArgs {
    /// The template file (relative paths: from the playbook's directory).
    pub src: String,
    /// The file to write.
    pub dest: String,
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

impl ActionArgs for TemplateArgs {
    const LOCAL_FILES: &'static [(&'static str, super::LocalFileRole)] =
        &[("src", super::LocalFileRole::TemplateSource)];

    fn validate(&self) -> Vec<String> {
        super::mode_problem(self.mode.as_deref())
            .into_iter()
            .collect()
    }
}

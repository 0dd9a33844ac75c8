//! `hostname`: the machine's host name, now and at boot.
//!
//! ```toml
//! hostname = { name = "web-1" }
//! hostname = { name = "{{ inventory_name }}" }
//! ```
//! Read from the kernel (`gethostname`) and `/etc/hostname`; when either differs, set with
//! `hostnamectl set-hostname NAME` where systemd runs (it writes `/etc/hostname` and tells the
//! kernel), else `/etc/hostname` is written atomically and the kernel told with
//! `sethostname(2)`, as Ansible's `hostname` does with its systemd and generic strategies.
//! `/etc/hosts` is not edited (use `line_in_file`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ActionArgs;
use crate::jinja::is_templated;

/// Arguments of `hostname`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostnameArgs {
    /// The host name: dot-separated labels of letters, digits and `-` (not first or last),
    /// at most 64 characters.
    pub name: String,
}

/// The problem with a host name, if any (RFC 1123 labels; Linux keeps at most 64 bytes).
pub fn hostname_problem(name: &str) -> Option<String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    (!valid).then(|| {
        format!(
            "`name` {name:?} is not a host name: dot-separated labels of letters, digits and `-` (not first or last), at most 64 characters"
        )
    })
}

impl ActionArgs for HostnameArgs {
    fn validate(&self) -> Vec<String> {
        if is_templated(&self.name) {
            return Vec::new();
        }
        hostname_problem(&self.name).into_iter().collect()
    }
}

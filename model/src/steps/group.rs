//! `group`: a local group exists (with a given id), or does not exist.
//!
//! ```toml
//! group = { name = "docker" }
//! group = { name = "deploy", gid = 1500 }
//! group = { name = "metrics", system = true }
//! group = { name = "old", state = "absent" }
//! ```
//! Read from `/etc/group` (through the C library); changed with `groupadd` (`-g`, `-r`),
//! `groupmod -g` and `groupdel`, called with an argument vector, as Ansible's `group` does.
//! An existing group with another `gid` gets the new one; `system` only matters when the group
//! is created. Compared with Ansible's `group` on 36 generated cases in a booted Debian box
//! (`agent/tests/ansible_system.rs`: the same account files and changed/ok/failed, two runs).
//! Deliberate differences: `gid`/`system` with
//! `state = "absent"` are refused at validation; `non_unique`, `local` and `force` are not
//! offered.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ActionArgs;
use super::common::Presence;
use super::user::account_name_problem;

/// Arguments of `group`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupArgs {
    /// The group's name.
    pub name: String,
    /// `present` (default) or `absent`.
    #[serde(default)]
    pub state: Presence,
    /// The numeric group id (default for a new group: the next free one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// A system group (id from the system range); only when creating.
    #[serde(default)]
    pub system: bool,
}

impl ActionArgs for GroupArgs {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        problems.extend(account_name_problem("name", &self.name));
        if self.state == Presence::Absent {
            if self.gid.is_some() {
                problems.push("`gid` means nothing with `state = \"absent\"`".into());
            }
            if self.system {
                problems.push("`system` means nothing with `state = \"absent\"`".into());
            }
        }
        problems
    }
}

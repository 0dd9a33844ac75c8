//! `user`: a local account exists with the given attributes, or does not exist.
//!
//! ```toml
//! user = { name = "deploy", uid = 1500, group = "deploy", groups = ["docker", "adm"], shell = "/bin/bash" }
//! user = { name = "prometheus", system = true, create_home = false, shell = "/usr/sbin/nologin" }
//! user = { name = "olduser", state = "absent", remove = true }
//! ```
//! What is there is read from the account databases (`/etc/passwd`, `/etc/group`, through the
//! C library); changes are made by the tools Ansible's `user` module uses, called with an
//! argument vector (never a shell): `useradd`, `usermod`, `userdel`. Only what is written is
//! managed: an attribute left out is left as it is. `groups` lists the supplementary groups;
//! without `append = true` the user is removed from every other one (`groups = []` removes
//! them all). A new user gets a home directory (`useradd -m`) unless `create_home = false`;
//! changing `home` of an existing user does not move its files (Ansible's `move_home`
//! default). `state = "absent"` runs `userdel`, with `-r` (home and mail spool) when
//! `remove = true`.
//!
//! The command lines are Ansible's (`create_user_useradd`, `modify_user_usermod`); compared
//! with Ansible's `user` on 36 generated cases in a booted Debian box
//! (`agent/tests/ansible_system.rs`): the same `/etc/passwd`, `/etc/group`, `/etc/shadow`,
//! `/etc/gshadow`, `/etc/subuid`, `/etc/subgid` and homes, the same changed/ok/failed, on the
//! first and the second run. Under `--check` a group an earlier step would create is not an
//! error. Deliberate differences: keys that mean nothing for the state (`uid` with `absent`, `append` without
//! `groups`, `remove` with `present`) are refused at validation (Ansible ignores them);
//! passwords, expiry, SSH key generation, `non_unique`, `local` and `move_home` are not
//! offered.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ActionArgs;
use super::common::Presence;
use crate::jinja::is_templated;

/// Arguments of `user`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserArgs {
    /// The login name.
    pub name: String,
    /// `present` (default) or `absent`.
    #[serde(default)]
    pub state: Presence,
    /// The numeric user id (default: the next free one, from the system range with `system`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The primary group, by name or id; it must exist (default for a new user: a group named
    /// after it, or `users`, as `useradd` decides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Supplementary groups, by name or id; each must exist. Left alone when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    /// With `groups`: add these and keep the user's other groups (default false: exactly
    /// these).
    #[serde(default)]
    pub append: bool,
    /// The login shell (absolute path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    /// The home directory (absolute path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
    /// The GECOS field (full name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// A system account (uid from the system range, no aging); only when creating.
    #[serde(default)]
    pub system: bool,
    /// Create the home directory of a new user (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_home: Option<bool>,
    /// With `state = "absent"`: remove the home directory and mail spool too.
    #[serde(default)]
    pub remove: bool,
}

/// The problem with an account (user or group) name, if any: what `useradd`/`groupadd`
/// accept (letters, digits, `_`, `.`, `-`, a final `$`; not starting with `-`; not only
/// digits; at most 32 characters). Shared by `user`, `group` and `authorized_key`.
pub fn account_name_problem(key: &str, name: &str) -> Option<String> {
    if is_templated(name) {
        return None;
    }
    let body = name.strip_suffix('$').unwrap_or(name);
    let valid = !body.is_empty()
        && name.len() <= 32
        && !body.starts_with('-')
        && body != "."
        && body != ".."
        && !body.bytes().all(|b| b.is_ascii_digit())
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    (!valid).then(|| {
        format!(
            "`{key}` {name:?} is not a valid account name: letters, digits, `_`, `.`, `-` (not first), at most 32 characters, not only digits"
        )
    })
}

/// The problem with a group given by name or numeric id, if any.
pub(crate) fn group_ref_problem(key: &str, group: &str) -> Option<String> {
    if group.bytes().all(|b| b.is_ascii_digit()) && !group.is_empty() {
        return None;
    }
    account_name_problem(key, group)
}

/// The problem with a path that must be absolute, if any.
pub(crate) fn absolute_path_problem(key: &str, path: &str) -> Option<String> {
    (!is_templated(path) && (!path.starts_with('/') || path.contains(['\n', ':'])))
        .then(|| format!("`{key}` {path:?} must be an absolute path (no `:` or newline)"))
}

impl ActionArgs for UserArgs {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        problems.extend(account_name_problem("name", &self.name));
        if let Some(g) = &self.group {
            problems.extend(group_ref_problem("group", g));
        }
        for g in self.groups.iter().flatten() {
            problems.extend(group_ref_problem("groups", g));
        }
        if let Some(s) = &self.shell {
            problems.extend(absolute_path_problem("shell", s));
        }
        if let Some(h) = &self.home {
            problems.extend(absolute_path_problem("home", h));
        }
        if let Some(c) = self.comment.as_deref().filter(|c| c.contains([':', '\n'])) {
            problems.push(format!("`comment` {c:?} may not hold `:` or a newline"));
        }
        if self.append && self.groups.is_none() {
            problems.push("`append = true` needs `groups` (the groups to add)".into());
        }
        match self.state {
            Presence::Present => {
                if self.remove {
                    problems.push("`remove` is only for `state = \"absent\"`".into());
                }
            }
            Presence::Absent => {
                let set = [
                    ("uid", self.uid.is_some()),
                    ("group", self.group.is_some()),
                    ("groups", self.groups.is_some()),
                    ("shell", self.shell.is_some()),
                    ("home", self.home.is_some()),
                    ("comment", self.comment.is_some()),
                    ("system", self.system),
                    ("create_home", self.create_home.is_some()),
                ];
                for (key, _) in set.iter().filter(|(_, given)| *given) {
                    problems.push(format!("`{key}` means nothing with `state = \"absent\"`"));
                }
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_follow_useradd() {
        for ok in ["deploy", "svc-web", "a.b", "_x", "host$", "u1"] {
            assert_eq!(account_name_problem("name", ok), None, "{ok}");
        }
        for bad in [
            "",
            "-x",
            "123",
            "a b",
            "a:b",
            "ä",
            &"x".repeat(33),
            "..",
            "$",
        ] {
            assert!(account_name_problem("name", bad).is_some(), "{bad:?}");
        }
        assert_eq!(group_ref_problem("group", "1000"), None);
    }
}

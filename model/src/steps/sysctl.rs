//! `sysctl`: a kernel setting has a value now and at boot (a line in a file under
//! `/etc/sysctl.d`), or its line is gone from that file.
//!
//! ```toml
//! sysctl = { name = "net.ipv4.ip_forward", value = 1 }
//! sysctl = { name = "vm.max_map_count", value = 262144, file = "/etc/sysctl.d/60-elastic.conf" }
//! sysctl = { name = "net.ipv4.tcp_keepalive_time", state = "absent" }
//! ```
//! This is Ansible's `ansible.posix.sysctl` with `sysctl_file` defaulting to
//! `/etc/sysctl.d/99-bosun.conf`: the file is rewritten (atomically) only when the setting's
//! line is missing or has another value, and a rewrite normalises the file as Ansible does
//! (each line trimmed, `key = value` written `key=value`, a key's repeated lines dropped).
//! The running value is read from `/proc/sys`; with `reload = true` (the default) the step
//! also runs `sysctl -p FILE` when the file changed or the running value differs (values are
//! compared word by word, so `"4096 87380"` equals `"4096\t87380"`). `true`/`false` and
//! Ansible's other boolean words (`yes`, `on`, ...) are written `1`/`0`. `state = "absent"`
//! removes the line and leaves the running value alone.
//!
//! Compared with `ansible.posix.sysctl` on 36 generated cases in a booted Debian box, in a
//! network namespace per tool (`agent/tests/ansible_system.rs`: the same file bytes and modes,
//! running values and changed/ok/failed, two runs). Deliberate differences: a key the kernel does not have fails the step (Ansible reports `changed` and
//! then fails to reload); `sysctl_set` and `ignoreerrors` are not offered.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ActionArgs;
use super::common::Presence;
use crate::jinja::is_templated;

/// The default `file`.
pub const DEFAULT_FILE: &str = "/etc/sysctl.d/99-bosun.conf";

/// Arguments of `sysctl`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SysctlArgs {
    /// The setting, dotted as `sysctl` names it (`net.ipv4.ip_forward`).
    pub name: String,
    /// Its value: a string, a number or a boolean (written 1/0). Required with
    /// `state = "present"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<SysctlValue>,
    /// `present` (default) or `absent`.
    #[serde(default)]
    pub state: Presence,
    /// The file that holds the setting for boot (default `/etc/sysctl.d/99-bosun.conf`).
    #[serde(default = "default_file")]
    pub file: String,
    /// Apply the file (`sysctl -p FILE`) when it changed or the running value differs
    /// (default true). `false`: only the file is managed.
    #[serde(default = "yes")]
    pub reload: bool,
}

fn default_file() -> String {
    DEFAULT_FILE.into()
}

fn yes() -> bool {
    true
}

/// A value as written: `value = 1`, `value = "4096 87380 6291456"`, `value = true`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SysctlValue {
    /// A boolean: 1 or 0.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// Text, written as it is once trimmed (boolean words become 1/0).
    Text(String),
}

impl SysctlValue {
    /// The value as it goes in the file: trimmed; booleans and Ansible's boolean words
    /// (`yes`, `on`, `true`, `y`, `t` and their negatives) as `1`/`0`.
    pub fn normalized(&self) -> String {
        match self {
            SysctlValue::Bool(b) => if *b { "1" } else { "0" }.to_string(),
            SysctlValue::Int(n) => n.to_string(),
            SysctlValue::Text(s) => match s.to_lowercase().as_str() {
                "y" | "yes" | "on" | "1" | "true" | "t" => "1".into(),
                "n" | "no" | "off" | "0" | "false" | "f" => "0".into(),
                _ => s.trim().to_string(),
            },
        }
    }
}

impl SysctlArgs {
    /// The value to write, normalised ([`SysctlValue::normalized`]); empty when absent.
    pub fn value_text(&self) -> String {
        self.value
            .as_ref()
            .map(SysctlValue::normalized)
            .unwrap_or_default()
    }
}

impl ActionArgs for SysctlArgs {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let name = self.name.as_str();
        if !is_templated(name) {
            let valid = !name.is_empty()
                && !name.starts_with(['.', '/'])
                && !name
                    .split(['.', '/'])
                    .any(|part| part.is_empty() || part == "..")
                && name.bytes().all(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'_' | b'.' | b'-' | b'/' | b':' | b'@' | b'+')
                });
            if !valid {
                problems.push(format!(
                    "`name` {name:?} is not a sysctl key such as \"net.ipv4.ip_forward\""
                ));
            }
        }
        match (&self.state, &self.value) {
            (Presence::Present, None) => {
                problems.push("`state = \"present\"` needs `value`".into())
            }
            (Presence::Present, Some(SysctlValue::Text(t))) if !is_templated(t) => {
                if t.trim().is_empty() {
                    problems.push("`value` is empty".into());
                }
                if t.contains(['\n', '\r']) {
                    problems.push("`value` must be one line".into());
                }
            }
            (Presence::Absent, Some(_)) => {
                problems.push("`value` means nothing with `state = \"absent\"`".into())
            }
            _ => {}
        }
        if !is_templated(&self.file)
            && (!self.file.starts_with('/') || !self.file.ends_with(".conf"))
        {
            problems.push(format!(
                "`file` {:?} must be an absolute path ending in .conf (systemd-sysctl reads only *.conf)",
                self.file
            ));
        }
        problems
    }
}

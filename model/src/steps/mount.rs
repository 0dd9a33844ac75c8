//! `mount`: a file system is listed in `/etc/fstab` and mounted (or not).
//!
//! ```toml
//! mount = { path = "/data", src = "/dev/nvme1n1", fstype = "ext4", opts = "noatime", state = "mounted" }
//! mount = { path = "/mnt/nfs", src = "fs-1.efs.internal:/", fstype = "nfs4", opts = "_netdev", state = "present" }
//! mount = { path = "/mnt/old", state = "absent" }
//! ```
//! `state` (required), as in Ansible's `ansible.posix.mount`:
//! - `present`: the fstab line is there (nothing is mounted or unmounted);
//! - `mounted`: the line is there and the file system mounted at `path` (the directory is
//!   created when missing); when the line changed while mounted, it is unmounted and mounted
//!   again with the new line;
//! - `unmounted`: not mounted at `path` (fstab untouched);
//! - `absent`: not mounted and no line for `path` (the mount point directory is left; Ansible
//!   removes it).
//!
//! The fstab line is `src path fstype opts dump passno`, separated by single spaces, found by
//! its second field; a line for the same path with other fields is replaced in place, else the
//! line is appended. Every other line is kept byte for byte, and the file is written
//! atomically. What is mounted is read from `/proc/self/mountinfo`; `mount PATH` / `umount
//! PATH` are run only when that differs from what is asked. Deliberate differences from
//! Ansible: fields may not hold spaces (Ansible escapes them as `\040`); `boot`, `backup`,
//! `remounted` and `ephemeral` are not offered.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ActionArgs;
use crate::jinja::is_templated;

/// The default `fstab`.
pub const DEFAULT_FSTAB: &str = "/etc/fstab";

/// Arguments of `mount`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MountArgs {
    /// The mount point (absolute path).
    pub path: String,
    /// What must be true (see the kind's documentation).
    pub state: MountState,
    /// The device, `UUID=...`, `LABEL=...`, `server:/export` or a file system's name
    /// (`tmpfs`). Required with `present` and `mounted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    /// The file system type (`ext4`, `xfs`, `nfs4`, `tmpfs`). Required with `present` and
    /// `mounted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fstype: Option<String>,
    /// Mount options (default `defaults`).
    #[serde(default = "default_opts")]
    pub opts: String,
    /// The fstab dump field (default 0).
    #[serde(default)]
    pub dump: u8,
    /// The fstab pass field: fsck order at boot (default 0: not checked).
    #[serde(default)]
    pub passno: u8,
    /// The fstab file (default `/etc/fstab`).
    #[serde(default = "default_fstab")]
    pub fstab: String,
}

/// What `mount` makes true.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MountState {
    /// In fstab and mounted.
    Mounted,
    /// In fstab; mounted or not as it is.
    Present,
    /// Not mounted; fstab as it is.
    Unmounted,
    /// Not mounted and not in fstab.
    Absent,
}

fn default_opts() -> String {
    "defaults".into()
}

fn default_fstab() -> String {
    DEFAULT_FSTAB.into()
}

impl MountArgs {
    /// The fstab line for these arguments (without its newline).
    pub fn fstab_line(&self) -> String {
        format!(
            "{} {} {} {} {} {}",
            self.src.as_deref().unwrap_or_default(),
            self.path,
            self.fstype.as_deref().unwrap_or_default(),
            self.opts,
            self.dump,
            self.passno
        )
    }
}

impl ActionArgs for MountArgs {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (key, path) in [("path", &self.path), ("fstab", &self.fstab)] {
            if !is_templated(path)
                && (!path.starts_with('/')
                    || (key == "path" && path.len() > 1 && path.ends_with('/')))
            {
                problems.push(format!("`{key}` {path:?} must be an absolute path"));
            }
        }
        let fields = [
            ("path", Some(&self.path)),
            ("src", self.src.as_ref()),
            ("fstype", self.fstype.as_ref()),
            ("opts", Some(&self.opts)),
        ];
        for (key, value) in fields {
            if let Some(v) = value.filter(|v| !is_templated(v))
                && (v.is_empty() || v.contains(char::is_whitespace) || v.starts_with('#'))
            {
                problems.push(format!(
                    "`{key}` {v:?} must be one non-empty word (no spaces, not starting with #)"
                ));
            }
        }
        let needs_line = matches!(self.state, MountState::Mounted | MountState::Present);
        for (key, given) in [
            ("src", self.src.is_some()),
            ("fstype", self.fstype.is_some()),
        ] {
            if needs_line && !given {
                problems.push(format!(
                    "`state = \"{}\"` needs `{key}`",
                    if self.state == MountState::Mounted {
                        "mounted"
                    } else {
                        "present"
                    }
                ));
            }
        }
        problems
    }
}

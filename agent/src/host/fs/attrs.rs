//! Attributes a step asks for (mode, owner, group): resolved from names, compared with what a
//! path has, and applied.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, bail};
use nix::unistd::{Gid, Group, Uid, User};

use bosun_model::mode::parse_mode;

/// Wanted attributes as written in a step; `None` leaves that attribute alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs {
    /// Permission bits, e.g. `0o644`.
    pub mode: Option<u32>,
    /// Owner's user id.
    pub uid: Option<u32>,
    /// Group id.
    pub gid: Option<u32>,
}

impl Attrs {
    /// Resolves the strings of a step (`mode = "0644"`, `owner = "root"`, `group = "adm"`).
    pub fn resolve(
        mode: Option<&str>,
        owner: Option<&str>,
        group: Option<&str>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            mode: mode
                .map(parse_mode)
                .transpose()
                .map_err(anyhow::Error::msg)?,
            uid: owner.map(resolve_user).transpose()?,
            gid: group.map(resolve_group).transpose()?,
        })
    }

    /// What differs between `meta` and these attributes, as short phrases ("mode 0600 → 0644").
    pub fn differences(&self, meta: &Metadata) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(mode) = self.mode {
            let have = meta.mode() & 0o7777;
            if have != mode {
                out.push(format!("mode {have:04o} → {mode:04o}"));
            }
        }
        if let Some(uid) = self.uid.filter(|u| *u != meta.uid()) {
            out.push(format!("owner {} → {uid}", meta.uid()));
        }
        if let Some(gid) = self.gid.filter(|g| *g != meta.gid()) {
            out.push(format!("group {} → {gid}", meta.gid()));
        }
        out
    }

    /// Applies the attributes to an existing path (without following a final symlink for
    /// ownership).
    pub fn apply(&self, path: &Path) -> anyhow::Result<()> {
        if self.uid.is_some() || self.gid.is_some() {
            nix::unistd::fchownat(
                nix::fcntl::AT_FDCWD,
                path,
                self.uid.map(Uid::from_raw),
                self.gid.map(Gid::from_raw),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .with_context(|| format!("setting owner/group of {}", path.display()))?;
        }
        if let Some(mode) = self.mode {
            super::set_mode(path, mode)
                .with_context(|| format!("setting mode {mode:04o} on {}", path.display()))?;
        }
        Ok(())
    }
}

fn resolve_user(name: &str) -> anyhow::Result<u32> {
    if let Ok(id) = name.parse::<u32>() {
        return Ok(id);
    }
    match User::from_name(name).with_context(|| format!("looking up user {name:?}"))? {
        Some(u) => Ok(u.uid.as_raw()),
        None => bail!("no user named {name:?} on this host"),
    }
}

fn resolve_group(name: &str) -> anyhow::Result<u32> {
    if let Ok(id) = name.parse::<u32>() {
        return Ok(id);
    }
    match Group::from_name(name).with_context(|| format!("looking up group {name:?}"))? {
        Some(g) => Ok(g.gid.as_raw()),
        None => bail!("no group named {name:?} on this host"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_what_changes_and_apply_makes_them_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "").unwrap();
        super::super::set_mode(&path, 0o600).unwrap();
        let want = Attrs::resolve(Some("0644"), None, None).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(want.differences(&meta), ["mode 0600 → 0644"]);
        want.apply(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert!(want.differences(&meta).is_empty());
        // Numeric ids resolve without a lookup; our own ids are no difference.
        let mine = Attrs::resolve(
            None,
            Some(&meta.uid().to_string()),
            Some(&meta.gid().to_string()),
        )
        .unwrap();
        assert!(mine.differences(&meta).is_empty());
        assert!(Attrs::resolve(Some("banana"), None, None).is_err());
    }
}

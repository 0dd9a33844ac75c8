//! Local accounts: users and groups as the account databases (`/etc/passwd`, `/etc/group`,
//! read through the C library's `getpwnam`/`getgrnam`/`getgrouplist`) have them, home
//! directories made as `useradd -m` makes them, and the shadow tools (`useradd`, `usermod`,
//! `userdel`, `groupadd`, `groupmod`, `groupdel`) run with an argument vector.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::unistd::{Gid, Group, Uid, User};

use super::fs as host_fs;
use super::process;

/// What `/etc/passwd` says of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The login name.
    pub name: String,
    /// The user id.
    pub uid: u32,
    /// The primary group's id.
    pub gid: u32,
    /// The GECOS field.
    pub comment: String,
    /// The home directory.
    pub home: PathBuf,
    /// The login shell.
    pub shell: String,
}

/// What `/etc/group` says of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    /// The group's name.
    pub name: String,
    /// Its id.
    pub gid: u32,
    /// Its listed members (not the users whose primary group it is).
    pub members: Vec<String>,
}

/// The user named `name`, if any.
pub fn user(name: &str) -> anyhow::Result<Option<Account>> {
    let found = User::from_name(name).with_context(|| format!("looking up user {name:?}"))?;
    Ok(found.map(|u| Account {
        name: u.name,
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
        comment: u.gecos.to_string_lossy().into_owned(),
        home: u.dir,
        shell: u.shell.to_string_lossy().into_owned(),
    }))
}

fn entry(g: Group) -> GroupEntry {
    GroupEntry {
        name: g.name,
        gid: g.gid.as_raw(),
        members: g.mem,
    }
}

/// The group written as `reference`: by name, else (when it is a number) by id, as
/// `useradd -g` reads it.
pub fn group(reference: &str) -> anyhow::Result<Option<GroupEntry>> {
    if let Some(g) =
        Group::from_name(reference).with_context(|| format!("looking up group {reference:?}"))?
    {
        return Ok(Some(entry(g)));
    }
    match reference.parse::<u32>() {
        Ok(gid) => group_by_id(gid),
        Err(_) => Ok(None),
    }
}

/// The group with id `gid`, if any.
pub fn group_by_id(gid: u32) -> anyhow::Result<Option<GroupEntry>> {
    Ok(Group::from_gid(Gid::from_raw(gid))
        .with_context(|| format!("looking up group {gid}"))?
        .map(entry))
}

/// The groups that list `account` as a member (`/etc/group`'s fourth field), by name. Its
/// primary group is among them only when it lists the user too.
pub fn memberships(account: &Account) -> anyhow::Result<BTreeSet<String>> {
    let name = CString::new(account.name.as_str()).context("a user name holds a NUL byte")?;
    let gids = nix::unistd::getgrouplist(&name, Gid::from_raw(account.gid))
        .with_context(|| format!("listing the groups of {:?}", account.name))?;
    let mut out = BTreeSet::new();
    for gid in gids {
        if let Some(g) = group_by_id(gid.as_raw())?
            && g.members.contains(&account.name)
        {
            out.insert(g.name);
        }
    }
    Ok(out)
}

/// Runs one of the shadow tools (`argv[0]` found on PATH, as `useradd` is in `/usr/sbin`).
pub async fn run_tool(argv: &[String]) -> anyhow::Result<()> {
    process::run_ok(argv)
        .await
        .with_context(|| format!("running {} (the shadow tools: package `passwd`)", argv[0]))?;
    Ok(())
}

/// `/etc/login.defs`.
const LOGIN_DEFS: &str = "/etc/login.defs";
/// What a new home directory is filled from.
const SKELETON: &str = "/etc/skel";

/// The mode of a new home directory per `login.defs`: `HOME_MODE`, else `0777 & !UMASK`, else
/// 0755 (what `useradd` does, and Ansible's `user` when it makes a missing home).
pub fn home_mode(login_defs: &str) -> u32 {
    let mut mode = 0o755;
    for line in login_defs.lines() {
        let mut words = line.split_whitespace();
        let (Some(key), Some(value), None) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        if !line.starts_with(key) || !value.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(v) = u32::from_str_radix(value, 8) else {
            continue;
        };
        match key {
            "HOME_MODE" => return v,
            "UMASK" => mode = 0o777 & !v,
            _ => {}
        }
    }
    mode
}

/// Makes `home` for a user that has none: a copy of `/etc/skel` (or an empty directory),
/// parents created, with the mode `login.defs` asks for; then, when `owner` is known, gives it
/// (with everything in it) to that `uid`:`gid`. What Ansible's `user` does for a missing home.
pub fn create_home(home: &Path, owner: Option<(u32, u32)>) -> anyhow::Result<()> {
    let skel = Path::new(SKELETON);
    if let Some(parent) = home.parent() {
        host_fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    if skel.is_dir() {
        host_fs::copy_tree(skel, home)?;
    } else {
        fs::create_dir(home).with_context(|| format!("creating {}", home.display()))?;
    }
    let defs = fs::read_to_string(LOGIN_DEFS).unwrap_or_default();
    host_fs::set_mode(home, home_mode(&defs))
        .with_context(|| format!("setting the mode of {}", home.display()))?;
    match owner {
        Some((uid, gid)) => chown_tree(home, uid, gid),
        None => Ok(()),
    }
}

/// Gives `path` and everything under it (links themselves, not their targets) to `uid`:`gid`.
pub fn chown_tree(path: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .with_context(|| format!("giving {} to {uid}:{gid}", path.display()))?;
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for child in fs::read_dir(path).with_context(|| format!("reading {}", path.display()))? {
            chown_tree(&child?.path(), uid, gid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_mode_prefers_home_mode_then_umask() {
        assert_eq!(home_mode(""), 0o755);
        assert_eq!(home_mode("UMASK\t\t022\n"), 0o755);
        assert_eq!(home_mode("UMASK 027\n"), 0o750);
        assert_eq!(home_mode("UMASK 022\nHOME_MODE\t0700\n"), 0o700);
        assert_eq!(home_mode("#HOME_MODE 0700\nUMASK 077\n"), 0o700);
        assert_eq!(home_mode("# UMASK 002\n"), 0o755);
    }

    #[test]
    fn root_reads_from_the_account_databases() {
        let root = user("root").unwrap().expect("root exists");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(
            group("0").unwrap().unwrap().name,
            group("root").unwrap().unwrap().name
        );
        assert!(user("no-such-user-bosun").unwrap().is_none());
        assert!(group("no-such-group-bosun").unwrap().is_none());
    }
}

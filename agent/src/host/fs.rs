//! Files: attributes (mode, owner, group) and atomic writes.
//!
//! Invariant: a file written through [`write_atomic`] is either its old content or its new
//! content, never a mix, whatever happens mid-write: the new content goes to a temporary file in
//! the same directory, is flushed to disk, and is renamed over the old one; the directory is
//! then flushed so the rename itself survives a crash.

use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};
use nix::unistd::{Gid, Group, Uid, User, fchown};

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
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
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

/// Metadata of `path` without following a final symlink; `None` when nothing is there.
pub fn lstat(path: &Path) -> anyhow::Result<Option<Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Reads a file whole; `None` when it does not exist.
pub fn read_if_exists(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Replaces `path` with `content` atomically (see the module doc), with `mode` and, when
/// given, the owner and group in `attrs`. The file never exists with the wrong mode, even
/// briefly: the temporary file has its final mode before it is renamed into place.
pub fn write_atomic(path: &Path, content: &[u8], mode: u32, attrs: &Attrs) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.bosun-"))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(content)
        .and_then(|()| {
            tmp.as_file()
                .set_permissions(fs::Permissions::from_mode(mode))
        })
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    if attrs.uid.is_some() || attrs.gid.is_some() {
        fchown(
            tmp.as_file(),
            attrs.uid.map(Uid::from_raw),
            attrs.gid.map(Gid::from_raw),
        )
        .with_context(|| format!("setting owner/group of {}", path.display()))?;
    }
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("flushing {}", tmp.path().display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming into {}", path.display()))?;
    sync_dir(dir)
}

/// Flushes a directory so that a rename or creation inside it survives a crash.
pub fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("flushing directory {}", dir.display()))
}

/// Copies the regular file `src` to `dest` with its permission bits, flushed to disk. `dest`
/// is replaced atomically (temporary file beside it, then renamed), so a crash leaves the old
/// file or the full copy.
pub fn copy_file_atomic(src: &Path, dest: &Path) -> anyhow::Result<()> {
    let mode = fs::metadata(src)
        .with_context(|| format!("reading {}", src.display()))?
        .mode()
        & 0o7777;
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.bosun-"))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let mut from = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    io::copy(&mut from, &mut tmp)
        .with_context(|| format!("copying {} to {}", src.display(), tmp.path().display()))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("flushing {}", tmp.path().display()))?;
    tmp.persist(dest)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming into {}", dest.display()))?;
    sync_dir(dir)
}

/// Copies the directory tree `src` to `dest`, which must not exist: directories, regular
/// files (with their permission bits, flushed to disk) and symlinks (as links). Other kinds
/// (sockets, fifos) are refused: a datastore directory holds none.
pub fn copy_tree(src: &Path, dest: &Path) -> anyhow::Result<()> {
    let meta = fs::symlink_metadata(src).with_context(|| format!("reading {}", src.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", src.display());
    }
    fs::create_dir(dest).with_context(|| format!("creating {}", dest.display()))?;
    for entry in fs::read_dir(src).with_context(|| format!("listing {}", src.display()))? {
        let entry = entry.with_context(|| format!("listing {}", src.display()))?;
        let (from, to) = (entry.path(), dest.join(entry.file_name()));
        let kind = entry
            .file_type()
            .with_context(|| format!("reading {}", from.display()))?;
        if kind.is_dir() {
            copy_tree(&from, &to)?;
        } else if kind.is_symlink() {
            let target =
                fs::read_link(&from).with_context(|| format!("reading link {}", from.display()))?;
            std::os::unix::fs::symlink(&target, &to)
                .with_context(|| format!("creating link {}", to.display()))?;
        } else if kind.is_file() {
            fs::copy(&from, &to)
                .and_then(|_| File::open(&to)?.sync_all())
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        } else {
            bail!(
                "{} is neither a file, a directory nor a link; not copied",
                from.display()
            );
        }
    }
    fs::set_permissions(dest, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .with_context(|| format!("setting the mode of {}", dest.display()))?;
    sync_dir(dest)
}

/// Replaces the directory `dest` with a copy of the tree `src`, as close to atomically as
/// directories allow: the copy is made beside `dest`, then `dest` is moved aside, the copy
/// renamed into place, and the old tree removed. A crash leaves either tree at `dest` (and
/// possibly a `.bosun-*` sibling to remove).
pub fn replace_tree(src: &Path, dest: &Path) -> anyhow::Result<()> {
    let parent = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let incoming = parent.join(format!(".{name}.bosun-incoming"));
    let outgoing = parent.join(format!(".{name}.bosun-outgoing"));
    for stale in [&incoming, &outgoing] {
        if lstat(stale)?.is_some() {
            fs::remove_dir_all(stale).with_context(|| format!("removing {}", stale.display()))?;
        }
    }
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    copy_tree(src, &incoming)?;
    let had_old = lstat(dest)?.is_some();
    if had_old {
        fs::rename(dest, &outgoing).with_context(|| format!("moving {} aside", dest.display()))?;
    }
    fs::rename(&incoming, dest).with_context(|| format!("renaming into {}", dest.display()))?;
    sync_dir(parent)?;
    if had_old {
        fs::remove_dir_all(&outgoing)
            .with_context(|| format!("removing the replaced tree {}", outgoing.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_sets_mode_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.conf");
        fs::write(&path, "old").unwrap();
        write_atomic(&path, b"new\n", 0o600, &Attrs::default()).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new\n");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn trees_are_copied_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("db");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("state.db"), "v1").unwrap();
        fs::set_permissions(src.join("state.db"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(src.join("sub/wal"), "w").unwrap();
        std::os::unix::fs::symlink("state.db", src.join("link")).unwrap();
        let backup = dir.path().join("backup");
        copy_tree(&src, &backup).unwrap();
        assert_eq!(fs::read(backup.join("state.db")).unwrap(), b"v1");
        assert_eq!(
            fs::metadata(backup.join("state.db")).unwrap().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read(backup.join("sub/wal")).unwrap(), b"w");
        assert_eq!(
            fs::read_link(backup.join("link")).unwrap(),
            Path::new("state.db")
        );

        fs::write(src.join("state.db"), "v2").unwrap();
        fs::write(src.join("new-file"), "x").unwrap();
        replace_tree(&backup, &src).unwrap();
        assert_eq!(fs::read(src.join("state.db")).unwrap(), b"v1");
        assert!(
            !src.join("new-file").exists(),
            "replace_tree keeps nothing of the old tree"
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "no .bosun-* leftovers: {names:?}");

        let file = dir.path().join("k3s");
        fs::write(&file, "bin").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o755)).unwrap();
        copy_file_atomic(&file, &dir.path().join("k3s.copy")).unwrap();
        assert_eq!(
            fs::metadata(dir.path().join("k3s.copy")).unwrap().mode() & 0o777,
            0o755
        );
    }
}

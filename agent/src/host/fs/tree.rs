//! Directory trees copied and replaced whole (k3s's datastore backup and restore).

use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};

use super::{lstat, name_of, parent_of, sync_dir};

/// Copies the directory tree `src` to `dest`, which must not exist: directories, regular
/// files (with their permission bits, flushed to disk) and symlinks (as links). Other kinds
/// (sockets, fifos) are refused: a datastore directory holds none.
pub(crate) fn copy_tree(src: &Path, dest: &Path) -> anyhow::Result<()> {
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
pub(crate) fn replace_tree(src: &Path, dest: &Path) -> anyhow::Result<()> {
    let parent = parent_of(dest);
    let name = name_of(dest);
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
    }

    #[test]
    fn a_tree_is_not_copied_over_one_that_exists() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dest) = (dir.path().join("src"), dir.path().join("dest"));
        fs::create_dir(&src).unwrap();
        fs::create_dir(&dest).unwrap();
        assert!(copy_tree(&src, &dest).is_err());
        assert!(copy_tree(&dir.path().join("missing"), &dir.path().join("x")).is_err());
    }
}

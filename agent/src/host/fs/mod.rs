//! Files: attributes (mode, owner, group), atomic writes, directory entries (create, remove,
//! rename, link) and whole trees. Every file a step writes, links, renames, removes or creates
//! goes through here.
//!
//! Invariant: a file written through [`write_atomic`] is either its old content or its new
//! content, never a mix, whatever happens mid-write: the new content goes to a temporary file in
//! the same directory, is flushed to disk, and is renamed over the old one; the directory is
//! then flushed so the rename itself survives a crash. The other functions that create, rename
//! or remove an entry flush its directory too, so what they did is still there after a crash.
//!
//! Errors: a function that is one operation on one path ([`create_dir_all`], [`remove`],
//! [`rename`], ...) returns the operating system's [`io::Error`], as `std::fs` does, and the
//! caller says what it was doing ("creating /etc/docker: Permission denied"). A function of
//! several stages ([`write_atomic`], [`replace_symlink`], [`copy_tree`], ...) names the stage
//! that failed itself.
//!
//! - [`attrs`]: wanted attributes, what differs, applying them
//! - [`write`]: one file's content, replaced atomically (or created empty)
//! - [`entries`]: directories, removal, renames, links, temporary files
//! - [`tree`]: directory trees copied and replaced whole

use std::fs::{self, File, Metadata};
use std::io;
use std::path::Path;

use anyhow::Context;

mod attrs;
mod entries;
mod tree;
mod write;

pub(crate) use attrs::Attrs;
pub(crate) use entries::{
    create_dir, create_dir_all, create_symlink, remove, rename, replace_symlink, set_mode,
    staging_dir, temp_file,
};
pub(crate) use tree::{copy_tree, replace_tree};
pub(crate) use write::{copy_file_atomic, create_empty, install_temp, write_atomic};

/// Metadata of `path` without following a final symlink; `None` when nothing is there.
/// Bytes an unprivileged writer may still use on the file system holding `path`, or its
/// nearest existing ancestor (a state dir not created yet).
pub(crate) fn free_space(path: &Path) -> io::Result<u64> {
    let mut at = path;
    while !at.exists() {
        match at.parent() {
            Some(p) => at = p,
            None => break,
        }
    }
    let st = nix::sys::statvfs::statvfs(at).map_err(io::Error::from)?;
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}

pub(crate) fn lstat(path: &Path) -> anyhow::Result<Option<Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Reads a file whole; `None` when it does not exist.
pub(crate) fn read_if_exists(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Flushes a directory so that a rename or creation inside it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    flush_dir(dir).with_context(|| format!("flushing directory {}", dir.display()))
}

/// [`sync_dir`] with the bare OS error, for the one-operation functions.
fn flush_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all())
}

/// The directory holding `path` (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// The last component of `path` as text, for naming a temporary sibling (`.NAME.bosun-...`).
fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lstat_and_read_say_none_for_nothing_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        assert!(lstat(&path).unwrap().is_none());
        assert_eq!(read_if_exists(&path).unwrap(), None);
        fs::write(&path, "x").unwrap();
        assert!(lstat(&path).unwrap().unwrap().is_file());
        assert_eq!(read_if_exists(&path).unwrap().as_deref(), Some(&b"x"[..]));
        std::os::unix::fs::symlink("missing", dir.path().join("l")).unwrap();
        assert!(
            lstat(&dir.path().join("l"))
                .unwrap()
                .unwrap()
                .file_type()
                .is_symlink(),
            "a dangling link is there"
        );
    }

    #[test]
    fn parent_and_name_of_a_bare_name() {
        assert_eq!(parent_of(Path::new("a")), Path::new("."));
        assert_eq!(parent_of(Path::new("/etc/a")), Path::new("/etc"));
        assert_eq!(name_of(Path::new("/etc/a.conf")), "a.conf");
    }
}

//! One file's content: replaced atomically (a temporary file beside it, flushed, renamed over
//! it, the directory flushed), or created empty.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;
use nix::unistd::{Gid, Uid, fchown};

use super::{Attrs, flush_dir, name_of, parent_of, sync_dir};

/// Replaces `path` with `content` atomically (see the module doc), with `mode` and, when
/// given, the owner and group in `attrs`. The file never exists with the wrong mode, even
/// briefly: the temporary file has its final mode before it is renamed into place.
pub(crate) fn write_atomic(
    path: &Path,
    content: &[u8],
    mode: u32,
    attrs: &Attrs,
) -> anyhow::Result<()> {
    let dir = parent_of(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.bosun-", name_of(path)))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(content)
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    install_temp(tmp, path, mode, attrs)
}

/// Renames `tmp` (a temporary file in `path`'s directory, fully written) over `path` with
/// `mode` and the owner and group in `attrs`, set before the rename; flushes the file and the
/// directory. The second half of [`write_atomic`], for content written elsewhere (a download
/// streamed to its temporary file).
pub(crate) fn install_temp(
    tmp: tempfile::NamedTempFile,
    path: &Path,
    mode: u32,
    attrs: &Attrs,
) -> anyhow::Result<()> {
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode of {}", tmp.path().display()))?;
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
    sync_dir(parent_of(path))
}

/// Copies the regular file `src` to `dest` with its permission bits, flushed to disk. `dest`
/// is replaced atomically (temporary file beside it, then renamed), so a crash leaves the old
/// file or the full copy.
pub(crate) fn copy_file_atomic(src: &Path, dest: &Path) -> anyhow::Result<()> {
    let mode = fs::metadata(src)
        .with_context(|| format!("reading {}", src.display()))?
        .mode()
        & 0o7777;
    let dir = parent_of(dest);
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.bosun-", name_of(dest)))
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

/// Creates an empty regular file at `path` with `mode` (less the process umask; set the exact
/// mode afterwards with [`Attrs::apply`]). Fails with [`io::ErrorKind::AlreadyExists`] when
/// anything is at `path`, a symlink included (it is not followed), so an existing file is never
/// truncated. Durable: the file and its directory are flushed. There is no content to tear, so
/// no temporary file is needed for atomicity.
pub(crate) fn create_empty(path: &Path, mode: u32) -> io::Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.sync_all()?;
    flush_dir(parent_of(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_in(dir: &Path) -> Vec<std::ffi::OsString> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    }

    #[test]
    fn atomic_write_sets_mode_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.conf");
        fs::write(&path, "old").unwrap();
        write_atomic(&path, b"new\n", 0o600, &Attrs::default()).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new\n");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
        let names = names_in(dir.path());
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_copied_file_keeps_its_mode_and_replaces_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k3s");
        fs::write(&file, "bin").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o755)).unwrap();
        let copy = dir.path().join("k3s.copy");
        fs::write(&copy, "an older, longer binary").unwrap();
        copy_file_atomic(&file, &copy).unwrap();
        assert_eq!(fs::read(&copy).unwrap(), b"bin");
        assert_eq!(fs::metadata(&copy).unwrap().mode() & 0o777, 0o755);
        assert_eq!(names_in(dir.path()).len(), 2, "no temporary file left");
    }

    #[test]
    fn an_empty_file_is_created_once_and_never_over_something_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("marker");
        create_empty(&path, 0o600).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 0);
        assert_eq!(meta.mode() & 0o077, 0, "mode 0600 less the umask");

        fs::write(&path, "content").unwrap();
        let again = create_empty(&path, 0o600).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"content", "not truncated");

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &link).unwrap();
        let through = create_empty(&link, 0o600).unwrap_err();
        assert_eq!(through.kind(), io::ErrorKind::AlreadyExists);
        assert!(
            !dir.path().join("elsewhere").exists(),
            "the link was not followed"
        );
    }
}

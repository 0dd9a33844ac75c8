//! Directory entries: directories created, entries removed and renamed, symlinks made or
//! repointed, permission bits set, and the temporary files and directories steps stage in.
//!
//! Each function that adds, removes or renames an entry flushes the directory holding it
//! before it returns, so the change survives a crash; an error from that flush is returned like
//! one from the operation itself (the change happened but may not be durable).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;

use super::{flush_dir, name_of, parent_of, sync_dir};

/// Creates the directory `path` and any missing parents, as `mkdir -p` does; a directory
/// already there (or a symlink to one) is left as it is. Something else at `path` is an error.
/// New directories get mode 0777 less the process umask: set attributes afterwards. Durable:
/// each directory created is flushed into its parent.
pub(crate) fn create_dir_all(path: &Path) -> io::Result<()> {
    // What does not exist yet, deepest first; each one's parent gets flushed once it does.
    let missing: Vec<&Path> = path
        .ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && fs::metadata(p).is_err())
        .collect();
    fs::create_dir_all(path)?;
    for dir in missing.iter().rev() {
        flush_dir(parent_of(dir))?;
    }
    Ok(())
}

/// Creates the one directory `path` (mode 0777 less the umask); its parent must exist.
/// Fails with [`io::ErrorKind::AlreadyExists`] when anything is at `path`, so the caller knows
/// the directory is new and its own. Durable: the parent is flushed.
pub(crate) fn create_dir(path: &Path) -> io::Result<()> {
    fs::create_dir(path)?;
    flush_dir(parent_of(path))
}

/// Removes what is at `path`, never following a final symlink: with `directory`, the
/// directory and everything in it (`rm -r`); without, one entry that is not a directory (a
/// file, a symlink, a socket). Nothing there is an error ([`io::ErrorKind::NotFound`]). Not
/// atomic: a directory whose removal fails part way keeps what was not removed yet. Durable:
/// the parent is flushed.
pub(crate) fn remove(path: &Path, directory: bool) -> io::Result<()> {
    if directory {
        fs::remove_dir_all(path)?;
    } else {
        fs::remove_file(path)?;
    }
    flush_dir(parent_of(path))
}

/// Renames `from` to `to` on one file system, atomically replacing what is at `to` (a file or
/// a symlink; an empty directory when `from` is a directory): readers see the old entry or the
/// new one, never neither. Durable: the directory of `to` (and of `from`, when another) is
/// flushed, so the rename survives a crash.
pub(crate) fn rename(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    let (old_dir, new_dir) = (parent_of(from), parent_of(to));
    flush_dir(new_dir)?;
    if old_dir != new_dir {
        flush_dir(old_dir)?;
    }
    Ok(())
}

/// Sets the permission bits of `path` (a final symlink is followed, as `chmod` does). Not
/// flushed: the mode is metadata the next run checks again.
pub(crate) fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Makes `link` a new symlink to `target` (stored as given: a relative target is relative to
/// the link's directory). Fails with [`io::ErrorKind::AlreadyExists`] when anything is at
/// `link`: what is there is never replaced (see [`replace_symlink`] for that). Durable: the
/// parent is flushed.
pub(crate) fn create_symlink(link: &Path, target: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link)?;
    flush_dir(parent_of(link))
}

/// Points `link` at `target` atomically: a new link beside it (`.NAME.bosun-link-PID`) is
/// renamed over it, so readers see the old entry or the new link, never nothing. Whatever is
/// at `link` and is not a directory (an older link, a file) is replaced; a directory there
/// makes it fail (remove it first). Durable: the directory is flushed.
pub(crate) fn replace_symlink(link: &Path, target: &Path) -> anyhow::Result<()> {
    let dir = parent_of(link);
    let tmp = dir.join(format!(
        ".{}.bosun-link-{}",
        name_of(link),
        std::process::id()
    ));
    // A leftover of an interrupted run of this process id; usually nothing is there.
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .with_context(|| format!("creating link {}", tmp.display()))?;
    fs::rename(&tmp, link).with_context(|| format!("renaming link into {}", link.display()))?;
    sync_dir(dir)
}

/// A new directory inside `dir` named `prefix` and a random suffix (mode 0777 less the umask),
/// removed with everything in it when the returned handle is dropped. For staging files beside
/// their destination: the final [`rename`] then stays on one file system, so it is atomic.
pub(crate) fn staging_dir(dir: &Path, prefix: &str) -> io::Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix(prefix).tempdir_in(dir)
}

/// A new file holding `content` in the system's temporary directory, named `prefix`, random
/// characters and `suffix`, mode 0600 (it may hold secrets: helm's values), removed when the
/// returned handle is dropped. For handing a program data by path. Not flushed to disk: it
/// does not outlive the run.
pub(crate) fn temp_file(
    prefix: &str,
    suffix: &str,
    content: &[u8],
) -> io::Result<tempfile::NamedTempFile> {
    let mut file = tempfile::Builder::new()
        .prefix(prefix)
        .suffix(suffix)
        .tempfile()?;
    file.write_all(content)?;
    file.flush()?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn directories_are_created_with_their_parents_and_existing_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        assert!(deep.is_dir());
        fs::write(deep.join("kept"), "x").unwrap();
        create_dir_all(&deep).unwrap();
        assert!(
            deep.join("kept").exists(),
            "an existing directory is left alone"
        );

        let file = dir.path().join("file");
        fs::write(&file, "").unwrap();
        assert!(create_dir_all(&file).is_err(), "a file is not a directory");
        assert!(create_dir_all(&file.join("under")).is_err());
    }

    #[test]
    fn one_directory_is_created_only_where_nothing_is() {
        let dir = tempfile::tempdir().unwrap();
        let one = dir.path().join("one");
        create_dir(&one).unwrap();
        assert!(one.is_dir());
        assert_eq!(
            create_dir(&one).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(
            create_dir(&dir.path().join("no/parent"))
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn removal_takes_the_entry_itself_never_what_a_link_points_at() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("sub")).unwrap();
        fs::write(tree.join("sub/f"), "x").unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("link")).unwrap();

        remove(&tree, true).unwrap();
        assert!(!tree.exists());
        assert!(
            outside.join("keep").exists(),
            "a link in the tree is not followed"
        );

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        remove(&link, false).unwrap();
        assert!(fs::symlink_metadata(&link).is_err());
        assert!(outside.join("keep").exists());

        assert!(
            remove(&outside, false).is_err(),
            "a directory needs `directory`"
        );
        assert_eq!(
            remove(&dir.path().join("missing"), false)
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn a_rename_replaces_the_destination_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (staged, binary) = (dir.path().join(".staged"), dir.path().join("bin"));
        fs::write(&staged, "new").unwrap();
        fs::write(&binary, "old").unwrap();
        rename(&staged, &binary).unwrap();
        assert_eq!(fs::read(&binary).unwrap(), b"new");
        assert_eq!(names_in(dir.path()), ["bin"]);

        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        rename(&binary, &sub.join("bin")).unwrap();
        assert_eq!(fs::read(sub.join("bin")).unwrap(), b"new");
        assert!(rename(&dir.path().join("missing"), &binary).is_err());
    }

    #[test]
    fn modes_are_set_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("private");
        fs::create_dir(&path).unwrap();
        set_mode(&path, 0o700).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o700);
        set_mode(&path, 0o1755).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o1755);
    }

    #[test]
    fn a_new_link_never_replaces_anything() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("kubectl");
        create_symlink(&link, Path::new("k3s")).unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("k3s"));
        assert_eq!(
            create_symlink(&link, Path::new("other"))
                .unwrap_err()
                .kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("k3s"));
    }

    #[test]
    fn a_replaced_link_points_at_the_new_target_and_leaves_nothing_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("current");
        replace_symlink(&link, Path::new("v1")).unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("v1"));
        replace_symlink(&link, Path::new("v2")).unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("v2"));
        assert_eq!(names_in(dir.path()), ["current"]);

        let taken = dir.path().join("taken");
        fs::create_dir(&taken).unwrap();
        assert!(replace_symlink(&taken, Path::new("v1")).is_err());
        assert!(taken.is_dir(), "a directory is not replaced");
    }

    #[test]
    fn staging_directories_and_temporary_files_go_away_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let staging = staging_dir(dir.path(), ".bosun-test-").unwrap();
        fs::write(staging.path().join("f"), "x").unwrap();
        assert!(
            names_in(dir.path())[0].starts_with(".bosun-test-"),
            "inside the given directory"
        );
        drop(staging);
        assert!(names_in(dir.path()).is_empty());

        let file = temp_file("bosun-test-", ".json", b"{\"secret\": 1}").unwrap();
        let path = file.path().to_path_buf();
        assert!(path.to_string_lossy().ends_with(".json"));
        assert_eq!(fs::read(&path).unwrap(), b"{\"secret\": 1}");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        drop(file);
        assert!(!path.exists());
    }
}

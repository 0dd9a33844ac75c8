//! The source directory: walked without following symlinks, each regular file with its size
//! and stamp; files hashed (SHA-256) and stamped again around their upload. Reads only.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use bosun_model::steps::s3_sync::Filter;
use sha2::{Digest, Sha256};

use super::record::FileStamp;

/// A regular file found under `src`.
#[derive(Debug, Clone)]
pub(super) struct LocalFile {
    pub path: PathBuf,
    pub size: u64,
    pub stamp: FileStamp,
}

/// What [`walk`] found: regular files by relative `/`-path, skipped entries (with why),
/// entries that could not be read (each with its error).
pub(super) type Walked = (
    BTreeMap<String, LocalFile>,
    Vec<(String, &'static str)>,
    Vec<String>,
);

/// Walks `root` without following symlinks. Only paths `filter` selects are listed (or
/// skipped); directories are always entered, since a glob may select files below them.
pub(super) fn walk(root: &Path, filter: &Filter) -> Walked {
    let mut files = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut unreadable = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                unreadable.push(format!("{} ({e})", dir.display()));
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    unreadable.push(format!("{} ({e})", dir.display()));
                    continue;
                }
            };
            let path = entry.path();
            let Ok(rel) = path.strip_prefix(root) else {
                continue;
            };
            let Some(rel) = rel.to_str().map(str::to_string) else {
                unreadable.push(format!(
                    "{} (the name is not UTF-8, so it cannot be an S3 key)",
                    path.display()
                ));
                continue;
            };
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    unreadable.push(format!("{} ({e})", path.display()));
                    continue;
                }
            };
            let kind = meta.file_type();
            if kind.is_dir() {
                dirs.push(path);
                continue;
            }
            if !filter.selects(&rel) {
                continue;
            }
            if kind.is_symlink() {
                skipped.push((rel, "symlink, not followed"));
            } else if !kind.is_file() {
                skipped.push((rel, "not a regular file"));
            } else {
                files.insert(
                    rel,
                    LocalFile {
                        path,
                        size: meta.len(),
                        stamp: FileStamp::of(&meta),
                    },
                );
            }
        }
    }
    skipped.sort();
    unreadable.sort();
    (files, skipped, unreadable)
}

/// SHA-256 (hex) of the file at `path`, read in 256 KiB chunks on a blocking thread.
pub(super) async fn sha256_file(path: PathBuf) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let mut file =
            std::fs::File::open(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file
                .read(&mut buf)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hex::encode(hasher.finalize()))
    })
    .await
    .context("the hashing thread failed")?
}

/// The file's stamp now.
pub(super) fn stamp(path: &Path) -> anyhow::Result<FileStamp> {
    let m = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(FileStamp::of(&m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::write(root.join("top.txt"), "top").unwrap();
        std::fs::write(root.join("sub/deeper/d.log"), "dddd").unwrap();
        std::fs::write(root.join("sub/x.tmp"), "x").unwrap();
        std::os::unix::fs::symlink("top.txt", root.join("link")).unwrap();
        std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
        dir
    }

    #[test]
    fn the_walk_lists_regular_files_and_names_what_it_skips() {
        let dir = tree();
        let all = Filter::new(&[], &[]).unwrap();
        let (files, skipped, unreadable) = walk(dir.path(), &all);
        assert_eq!(
            files.keys().collect::<Vec<_>>(),
            ["sub/deeper/d.log", "sub/x.tmp", "top.txt"]
        );
        assert_eq!(files["sub/deeper/d.log"].size, 4);
        assert_eq!(files["top.txt"].path, dir.path().join("top.txt"));
        assert_eq!(
            skipped,
            [
                ("link".to_string(), "symlink, not followed"),
                ("sock".to_string(), "not a regular file")
            ]
        );
        assert!(unreadable.is_empty(), "{unreadable:?}");
    }

    #[test]
    fn the_walk_lists_only_what_the_filter_selects() {
        let dir = tree();
        let filter = Filter::new(
            &["**/*.log".into(), "sock".into()],
            &["sub/deeper/**".into()],
        )
        .unwrap();
        let (files, skipped, _) = walk(dir.path(), &filter);
        assert!(files.is_empty(), "{:?}", files.keys());
        assert_eq!(skipped, [("sock".to_string(), "not a regular file")]);
        let logs = Filter::new(&["**/*.log".into()], &[]).unwrap();
        assert_eq!(
            walk(dir.path(), &logs).0.keys().collect::<Vec<_>>(),
            ["sub/deeper/d.log"]
        );
    }

    #[tokio::test]
    async fn files_are_hashed_and_a_replaced_file_has_another_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "abc").unwrap();
        assert_eq!(
            sha256_file(path.clone()).await.unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let before = stamp(&path).unwrap();
        assert_eq!(before, stamp(&path).unwrap());
        // Same size, another file (as an editor's save-by-rename makes it): the inode differs,
        // whatever the granularity of the file system's clock.
        let other = dir.path().join("g");
        std::fs::write(&other, "abd").unwrap();
        std::fs::rename(&other, &path).unwrap();
        let after = stamp(&path).unwrap();
        assert_eq!(after.size, before.size);
        assert_ne!(after, before);
        assert!(sha256_file(dir.path().join("missing")).await.is_err());
    }
}

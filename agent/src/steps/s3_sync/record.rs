//! The quick-check record of one sync (bucket, prefix and source directory): per file, its
//! stamp and the ETag of the object known to hold its content, kept at
//! `<state dir>/s3-sync/<id>.json` and written atomically through `host::fs`. A missing or
//! unreadable record only makes a run slower (every same-size file is hashed), never wrong.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::host::fs::{self as host_fs, read_if_exists, write_atomic};

/// What must not change while a file is uploaded, and what says it did not change since the
/// last sync (ctime moves on every write, even one that restores the mtime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct FileStamp {
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub inode: u64,
}

impl FileStamp {
    /// The stamp of a file with metadata `m`.
    pub fn of(m: &std::fs::Metadata) -> FileStamp {
        FileStamp {
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            inode: m.ino(),
        }
    }
}

/// The record: relative path → what was last known.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Seen {
    pub files: BTreeMap<String, SeenFile>,
}

/// A file's stamp and the ETag of the object that held its content then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SeenFile {
    pub stamp: FileStamp,
    pub etag: String,
}

/// Where the record of `bucket`, `prefix` and the source directory `root` lives: named by a
/// hash of the three, so another prefix or directory never reads this one's record.
pub(super) fn record_path(state_dir: &Path, bucket: &str, prefix: &str, root: &Path) -> PathBuf {
    let id = Sha256::digest(format!("{bucket}\0{prefix}\0{}", root.display()).as_bytes());
    state_dir
        .join("s3-sync")
        .join(format!("{}.json", &hex::encode(id)[..32]))
}

impl Seen {
    /// The record at `path`; empty when there is none or it cannot be read (a slower run, no
    /// wrong one).
    pub fn load(path: &Path) -> Seen {
        match read_if_exists(path) {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!("ignoring {}: {e}", path.display());
                Seen::default()
            }),
            Ok(None) | Err(_) => Seen::default(),
        }
    }

    /// Replaces the record at `path` (mode 0600), creating its directory.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            host_fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let json = serde_json::to_vec(self)?;
        write_atomic(path, &json, 0o600, &Default::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen() -> Seen {
        Seen {
            files: BTreeMap::from([(
                "a/b.txt".to_string(),
                SeenFile {
                    stamp: FileStamp {
                        size: 5,
                        mtime: (1_700_000_000, 1),
                        ctime: (1_700_000_001, 2),
                        inode: 42,
                    },
                    etag: "\"0123\"".into(),
                },
            )]),
        }
    }

    #[test]
    fn the_record_is_saved_privately_and_loaded_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = record_path(dir.path(), "b", "p/", Path::new("/srv/up"));
        assert_eq!(Seen::load(&path), Seen::default(), "no record yet");
        seen().save(&path).unwrap();
        assert_eq!(Seen::load(&path), seen());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn the_format_on_disk_is_kept() {
        // Records written by an earlier bosund must still read: this is their shape.
        let json = serde_json::to_string(&seen()).unwrap();
        assert_eq!(
            json,
            r#"{"files":{"a/b.txt":{"stamp":{"size":5,"mtime":[1700000000,1],"ctime":[1700000001,2],"inode":42},"etag":"\"0123\""}}}"#
        );
    }

    #[test]
    fn an_unreadable_record_counts_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        std::fs::write(&path, "{not json").unwrap();
        assert_eq!(Seen::load(&path), Seen::default());
        // A directory where the file should be: read fails, still no record.
        assert_eq!(Seen::load(dir.path()), Seen::default());
    }

    #[test]
    fn each_bucket_prefix_and_source_has_its_own_record() {
        let state = Path::new("/var/lib/bosun");
        let path = record_path(state, "b", "p/", Path::new("/srv/up"));
        // The name is part of the format: another name would orphan existing records.
        assert_eq!(
            path,
            Path::new("/var/lib/bosun/s3-sync/6ec539cab12eb976a823622ae22a271a.json")
        );
        assert_ne!(record_path(state, "b", "q/", Path::new("/srv/up")), path);
        assert_ne!(record_path(state, "c", "p/", Path::new("/srv/up")), path);
        assert_ne!(record_path(state, "b", "p/", Path::new("/srv/other")), path);
    }
}

//! Reading the files of a file source ([`Tail`]: one file, by its open descriptor) and finding
//! them (globs, identity, a checkpointed file after a rotation). The source that drives the
//! tails is `file.rs`; together they follow rotation by rename and by copytruncate.
//!
//! A file is known by its identity: device + inode, with a fingerprint (SHA-256 of its first
//! bytes, up to [`FP_LEN`]) that tells a reused inode or a truncated-and-rewritten file from
//! the one checkpointed. Each [`Tail`] reads from its own open descriptor, so a file renamed
//! or deleted under it is still read to its end.
//!
//! - Rename (logrotate's default): the path now names another inode; the old tail drains its
//!   descriptor and is closed once at its end, quiet for [`ROTATE_GRACE`] and fully accepted;
//!   the new file is read from its start.
//! - Copytruncate: the same inode shrinks below the read position. What was not yet read is in
//!   the copy: a sibling file with the same fingerprint and at least that many bytes is read
//!   from the old position; then the truncated file is read from its start.
//! - Deleted: the descriptor is drained and closed.
//! - After a restart, each checkpoint is matched to the file with its identity and fingerprint
//!   in the same directory (at its path or renamed), or to a copy with its fingerprint.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::event::FileId;
use crate::journal::FileCheckpoint;

/// Bytes of a file's start that make its fingerprint.
pub(crate) const FP_LEN: u64 = 512;
/// How long a rotated file must stay quiet at its end before it is closed.
pub(crate) const ROTATE_GRACE: Duration = Duration::from_secs(2);
/// Bytes read per call.
const CHUNK: usize = 64 * 1024;
/// Longest line kept before it is cut (memory bound; the cut part is shipped as its own line).
const MAX_LINE: usize = 1024 * 1024;

/// A fingerprint: digest of the first `len` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    /// Bytes covered (0: an empty file, matches anything).
    pub len: u64,
    /// Hex SHA-256 (first 16 bytes).
    pub hex: String,
}

impl Fingerprint {
    /// The fingerprint of `file`'s first min(size, [`FP_LEN`]) bytes.
    pub fn of(file: &File, size: u64) -> io::Result<Fingerprint> {
        Self::of_len(file, size.min(FP_LEN))
    }

    /// The digest of exactly `len` leading bytes (fewer when the file is shorter).
    pub fn of_len(file: &File, len: u64) -> io::Result<Fingerprint> {
        let mut buf = vec![0u8; len as usize];
        let mut got = 0;
        while got < buf.len() {
            let n = file.read_at(&mut buf[got..], got as u64)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        buf.truncate(got);
        Ok(Fingerprint {
            len: got as u64,
            hex: hex::encode(&Sha256::digest(&buf)[..16]),
        })
    }

    /// Whether `file` starts with the bytes this fingerprint covers.
    pub fn matches(&self, file: &File) -> bool {
        if self.len == 0 {
            return true;
        }
        Self::of_len(file, self.len).is_ok_and(|f| f == *self)
    }
}

/// The identity of an open file.
pub(crate) fn file_id(meta: &std::fs::Metadata) -> FileId {
    FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    }
}

/// One file being read.
#[derive(Debug)]
pub(crate) struct Tail {
    /// Where it was found (for the stream name and the checkpoint).
    pub path: PathBuf,
    /// Its identity.
    pub id: FileId,
    /// Bumped on truncation: older positions no longer apply.
    pub generation: u32,
    file: File,
    /// Its fingerprint (recomputed while shorter than [`FP_LEN`]).
    pub fp: Fingerprint,
    /// Bytes consumed (complete lines plus `partial`).
    pub read_pos: u64,
    partial: Vec<u8>,
    /// Bytes CloudWatch accepted.
    pub acked: u64,
    /// Set when the path no longer names this file: drain, then close.
    pub rotated: Option<Instant>,
    /// The last time bytes were read.
    pub last_growth: Instant,
    /// Stream name (filled by the source).
    pub stream: String,
}

/// A line read: its text (without the newline) and the offset just past it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Line {
    /// Text, lossily UTF-8.
    pub text: String,
    /// Offset after its newline.
    pub end: u64,
}

/// What [`Tail::read`] found besides lines.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ReadOutcome {
    /// The file is now shorter than what was read: it was truncated.
    pub truncated: bool,
    /// More bytes are waiting (the byte budget ran out).
    pub more: bool,
}

impl Tail {
    /// Opens `path` and starts at `offset` (clamped to the file's size).
    pub fn open(path: &Path, offset: u64, now: Instant) -> io::Result<Tail> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        let fp = Fingerprint::of(&file, meta.len())?;
        let offset = offset.min(meta.len());
        Ok(Tail {
            path: path.to_path_buf(),
            id: file_id(&meta),
            generation: 0,
            file,
            fp,
            read_pos: offset,
            partial: Vec::new(),
            acked: offset,
            rotated: None,
            last_growth: now,
            stream: String::new(),
        })
    }

    /// Offset where the unread complete-line data starts (before the partial line).
    pub fn line_start(&self) -> u64 {
        self.read_pos - self.partial.len() as u64
    }

    /// Size of the open file.
    pub fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Reads complete lines, at most about `budget` bytes. A final line without a newline is
    /// held until its newline arrives, or returned when `at_end` (a drained rotated file).
    pub fn read(
        &mut self,
        budget: usize,
        now: Instant,
        lines: &mut Vec<Line>,
    ) -> io::Result<ReadOutcome> {
        let size = self.size()?;
        if size < self.read_pos {
            return Ok(ReadOutcome {
                truncated: true,
                more: false,
            });
        }
        if size == self.read_pos {
            return Ok(ReadOutcome::default());
        }
        // Truncated and rewritten past the old size before this poll: the start changed.
        if self.fp.len > 0 && !self.fp.matches(&self.file) {
            return Ok(ReadOutcome {
                truncated: true,
                more: false,
            });
        }
        if self.fp.len < FP_LEN && size > self.fp.len {
            self.fp = Fingerprint::of(&self.file, size)?;
        }
        let mut buf = vec![0u8; CHUNK.min(budget.max(1))];
        let mut read = 0usize;
        while read < budget {
            let n = self.file.read_at(&mut buf, self.read_pos)?;
            if n == 0 {
                break;
            }
            read += n;
            self.last_growth = now;
            let start_of_chunk = self.read_pos;
            self.read_pos += n as u64;
            let mut from = 0;
            for (i, b) in buf[..n].iter().enumerate() {
                if *b == b'\n' {
                    let mut bytes = std::mem::take(&mut self.partial);
                    bytes.extend_from_slice(&buf[from..i]);
                    if bytes.last() == Some(&b'\r') {
                        bytes.pop();
                    }
                    lines.push(Line {
                        text: String::from_utf8_lossy(&bytes).into_owned(),
                        end: start_of_chunk + i as u64 + 1,
                    });
                    from = i + 1;
                }
            }
            self.partial.extend_from_slice(&buf[from..n]);
            if self.partial.len() >= MAX_LINE {
                let bytes = std::mem::take(&mut self.partial);
                lines.push(Line {
                    text: String::from_utf8_lossy(&bytes).into_owned(),
                    end: self.read_pos,
                });
            }
        }
        let more = read >= budget && self.read_pos < self.size()?;
        Ok(ReadOutcome {
            truncated: false,
            more,
        })
    }

    /// The held partial line as a line (a rotated file ends without a newline).
    pub fn take_partial(&mut self) -> Option<Line> {
        if self.partial.is_empty() {
            return None;
        }
        let bytes = std::mem::take(&mut self.partial);
        Some(Line {
            text: String::from_utf8_lossy(&bytes).into_owned(),
            end: self.read_pos,
        })
    }

    /// Starts over at offset 0 after a truncation.
    pub fn restart(&mut self) -> io::Result<()> {
        self.generation += 1;
        self.read_pos = 0;
        self.acked = 0;
        self.partial.clear();
        self.fp = Fingerprint::of(&self.file, self.size()?)?;
        Ok(())
    }

    /// The checkpoint to store for an accepted `offset`.
    pub fn checkpoint(&mut self) -> FileCheckpoint {
        if self.fp.len < FP_LEN
            && let Ok(size) = self.size()
            && size > self.fp.len
            && let Ok(fp) = Fingerprint::of(&self.file, size)
        {
            self.fp = fp;
        }
        FileCheckpoint {
            dev: self.id.dev,
            ino: self.id.ino,
            path: self.path.display().to_string(),
            fp_len: self.fp.len,
            fp: self.fp.hex.clone(),
            offset: self.acked,
        }
    }

    /// Whether the file can be closed: rotated away, read to its end, quiet, all accepted.
    pub fn finished(&self, now: Instant) -> bool {
        self.rotated.is_some()
            && self.partial.is_empty()
            && self.acked >= self.read_pos
            && now.duration_since(self.last_growth) >= ROTATE_GRACE
            && self.size().is_ok_and(|s| s <= self.read_pos)
    }
}

/// Paths matching `pattern`: `*` and `?` in any component (no `**`), sorted.
pub(crate) fn glob(pattern: &str) -> Vec<PathBuf> {
    let mut current = vec![PathBuf::from("/")];
    for comp in pattern.split('/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        for dir in &current {
            if comp.contains(['*', '?']) {
                let Ok(rd) = std::fs::read_dir(dir) else {
                    continue;
                };
                for e in rd.flatten() {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    if !name.starts_with('.') && wildcard(comp, &name) {
                        next.push(dir.join(&*name));
                    }
                }
            } else {
                let p = dir.join(comp);
                if p.exists() {
                    next.push(p);
                }
            }
        }
        current = next;
    }
    current.retain(|p| p.is_file());
    current.sort();
    current
}

/// `*` (any run) and `?` (one character) matching.
pub(crate) fn wildcard(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Where a checkpoint's bytes are now: the file with its identity and fingerprint in its
/// directory (preferred), else a file with its fingerprint and at least `offset` bytes (a
/// copytruncate copy). Files in `exclude` (already tracked) are skipped.
pub(crate) fn locate(
    cp: &FileCheckpoint,
    exclude: &BTreeMap<FileId, ()>,
) -> Option<(PathBuf, FileId)> {
    let dir = Path::new(&cp.path).parent()?;
    let want = Fingerprint {
        len: cp.fp_len,
        hex: cp.fp.clone(),
    };
    let mut by_fp = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let path = e.path();
        let Ok(file) = File::open(&path) else {
            continue;
        };
        let Ok(meta) = file.metadata() else { continue };
        if !meta.is_file() || meta.len() < cp.offset {
            continue;
        }
        let id = file_id(&meta);
        if exclude.contains_key(&id) || !want.matches(&file) {
            continue;
        }
        if id.dev == cp.dev && id.ino == cp.ino {
            return Some((path, id));
        }
        if want.len > 0 && by_fp.is_none() {
            by_fp = Some((path, id));
        }
    }
    by_fp
}

/// `namespace`, `pod`, `container` of a CRI log path
/// (`/var/log/pods/<namespace>_<pod>_<uid>/<container>/<n>.log`).
pub(crate) fn pod_of(path: &Path) -> Option<(String, String, String)> {
    let container = path.parent()?;
    let pod_dir = container.parent()?.file_name()?.to_str()?;
    let container = container.file_name()?.to_str()?;
    let (ns, rest) = pod_dir.split_once('_')?;
    let (pod, _uid) = rest.rsplit_once('_')?;
    Some((ns.to_string(), pod.to_string(), container.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn wildcards_match_like_a_shell() {
        assert!(wildcard("*.log", "app.log"));
        assert!(!wildcard("*.log", "app.log.1"));
        assert!(wildcard("a?c*", "abcdef"));
        assert!(wildcard("*", ""));
        assert!(!wildcard("?", ""));
    }

    #[test]
    fn globs_walk_wildcard_components() {
        let d = tempfile::tempdir().unwrap();
        for p in ["x_a_1/c1/0.log", "x_b_2/c2/0.log", "x_b_2/c2/0.log.gz"] {
            let f = d.path().join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, "l\n").unwrap();
        }
        let found = glob(&format!("{}/*/*/*.log", d.path().display()));
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(
            pod_of(&found[1]),
            Some(("x".into(), "b".into(), "c2".into()))
        );
    }

    #[test]
    fn tail_reads_complete_lines_and_holds_the_partial_one() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        let mut f = File::create(&p).unwrap();
        f.write_all(b"one\r\ntwo\nthr").unwrap();
        let now = Instant::now();
        let mut t = Tail::open(&p, 0, now).unwrap();
        let mut lines = Vec::new();
        t.read(1 << 20, now, &mut lines).unwrap();
        assert_eq!(
            lines,
            vec![
                Line {
                    text: "one".into(),
                    end: 5
                },
                Line {
                    text: "two".into(),
                    end: 9
                }
            ]
        );
        assert_eq!(t.line_start(), 9);
        f.write_all(b"ee\n").unwrap();
        lines.clear();
        t.read(1 << 20, now, &mut lines).unwrap();
        assert_eq!(
            lines,
            vec![Line {
                text: "three".into(),
                end: 15
            }]
        );
        // copytruncate: the file shrinks below what was read.
        f.set_len(0).unwrap();
        let out = t.read(1 << 20, now, &mut lines).unwrap();
        assert!(out.truncated);
    }

    #[test]
    fn a_checkpoint_is_found_after_rename_and_in_a_copy() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.log");
        std::fs::write(&p, "first line of the file\nsecond\n").unwrap();
        let mut t = Tail::open(&p, 0, Instant::now()).unwrap();
        t.acked = 23;
        let cp = t.checkpoint();
        std::fs::rename(&p, d.path().join("a.log.1")).unwrap();
        std::fs::write(&p, "new file\n").unwrap();
        let (found, id) = locate(&cp, &BTreeMap::new()).unwrap();
        assert_eq!(found, d.path().join("a.log.1"));
        assert_eq!((id.dev, id.ino), (cp.dev, cp.ino));
        // A copy (another inode) with the same first bytes is found by fingerprint.
        std::fs::remove_file(d.path().join("a.log.1")).unwrap();
        std::fs::write(
            d.path().join("a.log.copy"),
            "first line of the file\nsecond\nthird\n",
        )
        .unwrap();
        let (found, _) = locate(&cp, &BTreeMap::new()).unwrap();
        assert_eq!(found, d.path().join("a.log.copy"));
    }
}

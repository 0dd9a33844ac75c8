//! What a sync does, decided without I/O from the local listing, the remote listing and the
//! last run's record: which files go up (no object, another size, or other content), which
//! the record shows unchanged, which need their content compared (a HeadObject and a hash),
//! and which objects are deleted. Also the plan's one-line summary.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use bosun_model::backup::report::human_size;
use bosun_model::steps::s3_sync::Filter;

use super::local::LocalFile;
use super::record::{FileStamp, Seen, SeenFile};

/// Most names listed in a message; the rest are counted.
const LISTED: usize = 50;

/// An object under the prefix, as listed.
#[derive(Debug, Clone)]
pub(super) struct RemoteObject {
    pub size: u64,
    pub etag: Option<String>,
}

/// One file to upload.
#[derive(Debug, Clone)]
pub(super) struct Upload {
    pub rel: String,
    pub path: PathBuf,
    pub key: String,
    pub size: u64,
    /// No object had its key.
    pub new: bool,
}

/// What `check` found to do.
#[derive(Debug, Default)]
pub struct SyncPlan {
    pub(super) uploads: Vec<Upload>,
    /// Keys and sizes of objects to delete.
    pub(super) deletes: Vec<(String, u64)>,
    /// Paths skipped (relative) and why: a symlink, not a regular file.
    pub(super) skipped: Vec<(String, &'static str)>,
    /// The quick-check record for the files found unchanged; uploads are added after apply.
    pub(super) seen: Seen,
    /// Where it is kept; `None` under `--check` (nothing is written).
    pub(super) seen_path: Option<PathBuf>,
}

/// The local files sorted by what the listings and the record say.
#[derive(Debug, Default)]
pub(super) struct Triage {
    /// No object has the key, or it has another size: upload.
    pub uploads: Vec<Upload>,
    /// Same size, not known from the record: compare the content, then upload or keep.
    pub compare: Vec<(Upload, FileStamp)>,
    /// Unchanged by the record (same stamp, same listed ETag), and, after [`settle`], by
    /// content.
    ///
    /// [`settle`]: Triage::settle
    pub seen: Seen,
}

/// Sorts `files` (relative path → file) against the objects under `prefix` (key → object)
/// and the `last` record. A file is unchanged by the record only when the object has an ETag
/// and the record holds both the file's current stamp and that ETag.
pub(super) fn triage(
    prefix: &str,
    files: &BTreeMap<String, LocalFile>,
    remote: &BTreeMap<String, RemoteObject>,
    last: &Seen,
) -> Triage {
    let mut out = Triage::default();
    for (rel, f) in files {
        let key = format!("{prefix}{rel}");
        let up = Upload {
            rel: rel.clone(),
            path: f.path.clone(),
            key: key.clone(),
            size: f.size,
            new: !remote.contains_key(&key),
        };
        match remote.get(&key) {
            Some(r) if r.size == f.size => {
                let known = SeenFile {
                    stamp: f.stamp,
                    etag: r.etag.clone().unwrap_or_default(),
                };
                if r.etag.is_some() && last.files.get(rel) == Some(&known) {
                    out.seen.files.insert(rel.clone(), known);
                } else {
                    out.compare.push((up, f.stamp));
                }
            }
            _ => out.uploads.push(up),
        }
    }
    out
}

impl Triage {
    /// Takes in the content comparisons of the files in `compare` (each with the object's
    /// ETag when the content is the same, `None` when it differs) and returns the uploads,
    /// sorted by path, and the record of the files found unchanged.
    pub fn settle(
        mut self,
        compared: Vec<(Upload, FileStamp, Option<String>)>,
    ) -> (Vec<Upload>, Seen) {
        for (up, stamp, etag) in compared {
            match etag {
                Some(etag) => {
                    self.seen.files.insert(up.rel, SeenFile { stamp, etag });
                }
                None => self.uploads.push(up),
            }
        }
        self.uploads.sort_by(|a, b| a.rel.cmp(&b.rel));
        (self.uploads, self.seen)
    }
}

/// The objects under `prefix` with no local file, as (key, size): only those `filter`
/// selects (an excluded path is neither uploaded nor deleted), and never the object of a
/// skipped path (a symlink is not followed, but what it stands for is not gone).
pub(super) fn deletes(
    prefix: &str,
    files: &BTreeMap<String, LocalFile>,
    skipped: &[(String, &'static str)],
    remote: &BTreeMap<String, RemoteObject>,
    filter: &Filter,
) -> Vec<(String, u64)> {
    let kept: HashSet<&str> = skipped.iter().map(|(rel, _)| rel.as_str()).collect();
    remote
        .iter()
        .filter_map(|(key, object)| {
            let rel = key.strip_prefix(prefix)?;
            (!files.contains_key(rel) && !kept.contains(rel) && filter.selects(rel))
                .then(|| (key.clone(), object.size))
        })
        .collect()
}

/// Up to [`LISTED`] names, then "and N more".
pub(super) fn listing(names: impl Iterator<Item = String>) -> String {
    let all: Vec<String> = names.collect();
    let mut shown: Vec<String> = all.iter().take(LISTED).cloned().collect();
    if all.len() > LISTED {
        shown.push(format!("and {} more", all.len() - LISTED));
    }
    shown.join(", ")
}

/// Whether [`summary`] says what would be done or what was.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Tense {
    Planned,
    Done,
}

/// "upload 2 file(s) (1.0 KiB: 1 new, 1 changed) and delete 1 object(s) (5 B) in s3://b/p/:
/// + a, ~ b, - p/c" (or "uploaded ... deleted ...").
pub(super) fn summary(plan: &SyncPlan, dest: &str, tense: Tense) -> String {
    let (upload, delete) = match tense {
        Tense::Planned => ("upload", "delete"),
        Tense::Done => ("uploaded", "deleted"),
    };
    let new = plan.uploads.iter().filter(|u| u.new).count();
    let up_bytes: u64 = plan.uploads.iter().map(|u| u.size).sum();
    let del_bytes: u64 = plan.deletes.iter().map(|d| d.1).sum();
    let mut parts = Vec::new();
    if !plan.uploads.is_empty() {
        parts.push(format!(
            "{upload} {} file(s) ({}: {new} new, {} changed)",
            plan.uploads.len(),
            human_size(up_bytes),
            plan.uploads.len() - new
        ));
    }
    if !plan.deletes.is_empty() {
        parts.push(format!(
            "{delete} {} object(s) ({})",
            plan.deletes.len(),
            human_size(del_bytes)
        ));
    }
    let names = plan
        .uploads
        .iter()
        .map(|u| format!("{} {}", if u.new { "+" } else { "~" }, u.rel))
        .chain(plan.deletes.iter().map(|(k, _)| format!("- {k}")));
    format!("{} in {dest}: {}", parts.join(" and "), listing(names))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(size: u64, inode: u64) -> FileStamp {
        FileStamp {
            size,
            mtime: (1_700_000_000, 0),
            ctime: (1_700_000_000, 0),
            inode,
        }
    }

    fn local(entries: &[(&str, u64, u64)]) -> BTreeMap<String, LocalFile> {
        entries
            .iter()
            .map(|(rel, size, inode)| {
                (
                    rel.to_string(),
                    LocalFile {
                        path: PathBuf::from("/src").join(rel),
                        size: *size,
                        stamp: stamp(*size, *inode),
                    },
                )
            })
            .collect()
    }

    fn remote(entries: &[(&str, u64, Option<&str>)]) -> BTreeMap<String, RemoteObject> {
        entries
            .iter()
            .map(|(key, size, etag)| {
                (
                    key.to_string(),
                    RemoteObject {
                        size: *size,
                        etag: etag.map(str::to_string),
                    },
                )
            })
            .collect()
    }

    fn rels(uploads: &[Upload]) -> Vec<&str> {
        uploads.iter().map(|u| u.rel.as_str()).collect()
    }

    #[test]
    fn files_are_sorted_into_upload_compare_and_known() {
        let files = local(&[
            ("new.txt", 3, 1),
            ("resized.txt", 5, 2),
            ("known.txt", 7, 3),
            ("touched.txt", 7, 4),
            ("no-etag.txt", 7, 5),
        ]);
        let objects = remote(&[
            ("p/resized.txt", 4, Some("\"r\"")),
            ("p/known.txt", 7, Some("\"k\"")),
            ("p/touched.txt", 7, Some("\"t\"")),
            ("p/no-etag.txt", 7, None),
        ]);
        let mut last = Seen::default();
        for (rel, inode, etag) in [
            ("known.txt", 3, "\"k\""),
            ("touched.txt", 40, "\"t\""),
            ("no-etag.txt", 5, ""),
        ] {
            last.files.insert(
                rel.into(),
                SeenFile {
                    stamp: stamp(7, inode),
                    etag: etag.into(),
                },
            );
        }
        let t = triage("p/", &files, &objects, &last);
        assert_eq!(rels(&t.uploads), ["new.txt", "resized.txt"]);
        assert!(t.uploads[0].new && !t.uploads[1].new);
        assert_eq!(t.uploads[0].key, "p/new.txt");
        let compare: Vec<&str> = t.compare.iter().map(|(u, _)| u.rel.as_str()).collect();
        assert_eq!(
            compare,
            ["no-etag.txt", "touched.txt"],
            "a stamp that moved, or no ETag to vouch for the object, means comparing"
        );
        assert_eq!(t.seen.files.keys().collect::<Vec<_>>(), ["known.txt"]);
    }

    #[test]
    fn a_changed_etag_sends_a_known_file_back_to_comparison() {
        let files = local(&[("a", 7, 1)]);
        let mut last = Seen::default();
        last.files.insert(
            "a".into(),
            SeenFile {
                stamp: stamp(7, 1),
                etag: "\"old\"".into(),
            },
        );
        let t = triage("", &files, &remote(&[("a", 7, Some("\"new\""))]), &last);
        assert_eq!(t.compare.len(), 1);
        assert!(t.seen.files.is_empty());
    }

    #[test]
    fn settling_records_same_content_and_uploads_the_rest_in_path_order() {
        let files = local(&[("b", 1, 1), ("c", 2, 2), ("d", 2, 3)]);
        let objects = remote(&[("c", 2, Some("\"c\"")), ("d", 2, Some("\"d\""))]);
        let mut t = triage("", &files, &objects, &Seen::default());
        let compared = std::mem::take(&mut t.compare)
            .into_iter()
            .map(|(up, stamp)| {
                let same = (up.rel == "d").then(|| "\"d\"".to_string());
                (up, stamp, same)
            })
            .collect();
        let (uploads, seen) = t.settle(compared);
        assert_eq!(rels(&uploads), ["b", "c"]);
        assert_eq!(seen.files["d"].etag, "\"d\"");
        assert_eq!(seen.files["d"].stamp, stamp(2, 3));
        assert_eq!(seen.files.len(), 1);
    }

    #[test]
    fn deletes_spare_local_skipped_and_unselected_paths() {
        let files = local(&[("here", 1, 1)]);
        let skipped = [("link".to_string(), "symlink, not followed")];
        let objects = remote(&[
            ("p/here", 1, None),
            ("p/gone", 5, None),
            ("p/link", 1, None),
            ("p/x.tmp", 2, None),
        ]);
        let filter = Filter::new(&[], &["*.tmp".into()]).unwrap();
        assert_eq!(
            deletes("p/", &files, &skipped, &objects, &filter),
            [("p/gone".to_string(), 5)]
        );
    }

    #[test]
    fn listings_are_capped() {
        let l = listing((0..60).map(|i| i.to_string()));
        assert!(l.ends_with("49, and 10 more"), "{l}");
    }

    #[test]
    fn the_summary_names_counts_sizes_and_paths() {
        let up = |rel: &str, size, new| Upload {
            rel: rel.into(),
            path: PathBuf::from(rel),
            key: format!("p/{rel}"),
            size,
            new,
        };
        let plan = SyncPlan {
            uploads: vec![up("a", 1000, true), up("b", 24, false)],
            deletes: vec![("p/c".into(), 5)],
            ..SyncPlan::default()
        };
        assert_eq!(
            summary(&plan, "s3://b/p/", Tense::Planned),
            "upload 2 file(s) (1.0 KiB: 1 new, 1 changed) and delete 1 object(s) (5 B) in \
             s3://b/p/: + a, ~ b, - p/c"
        );
        let only_deletes = SyncPlan {
            deletes: vec![("p/c".into(), 5)],
            ..SyncPlan::default()
        };
        assert_eq!(
            summary(&only_deletes, "s3://b/p/", Tense::Done),
            "deleted 1 object(s) (5 B) in s3://b/p/: - p/c"
        );
    }
}

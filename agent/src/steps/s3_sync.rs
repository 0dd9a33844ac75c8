//! Runs `s3_sync` on the host; its arguments and their validation are the model's
//! (`bosun_model::steps::s3_sync`).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier, StorageClass};
use bosun_model::backup::parts::MAX_PARTS;
use bosun_model::steps::ActionArgs;
use bosun_model::steps::s3_sync::{Filter, S3SyncArgs};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Check, CommandOutput, Outcome, StepContext, StepKind};
use crate::aws::{Aws, AwsTarget, describe_error};
use crate::backup::upload::{MultipartUpload, ObjectOptions};

/// Files larger than this go up as multipart uploads.
pub const MULTIPART_THRESHOLD: u64 = 16 << 20;
/// Smallest part of a multipart upload here (S3's minimum is 5 MiB).
const MIN_PART: u64 = 16 << 20;
/// User metadata key holding the content's SHA-256 (`x-amz-meta-sha256`).
pub const SHA256_METADATA: &str = "sha256";
/// Most names listed in a message; the rest are counted.
const LISTED: usize = 50;

/// One file to upload.
#[derive(Debug, Clone)]
pub struct Upload {
    rel: String,
    path: PathBuf,
    key: String,
    size: u64,
    /// No object had its key.
    new: bool,
}

/// What `check` found to do.
#[derive(Debug, Default)]
pub struct SyncPlan {
    uploads: Vec<Upload>,
    /// Keys and sizes of objects to delete.
    deletes: Vec<(String, u64)>,
    /// Paths skipped (relative) and why: a symlink, not a regular file.
    skipped: Vec<(String, &'static str)>,
    /// The quick-check record for the files found unchanged; uploads are added after apply.
    seen: Seen,
    /// Where it is kept; `None` under `--check` (nothing is written).
    seen_path: Option<PathBuf>,
}

/// A regular file found under `src`.
struct LocalFile {
    path: PathBuf,
    size: u64,
    stamp: FileStamp,
}

/// What must not change while a file is uploaded, and what says it did not change since the
/// last sync (ctime moves on every write, even one that restores the mtime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct FileStamp {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    inode: u64,
}

impl FileStamp {
    fn of(m: &std::fs::Metadata) -> FileStamp {
        FileStamp {
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            inode: m.ino(),
        }
    }
}

/// A file's stamp as uploaded and the new object's ETag.
type Uploaded = (FileStamp, Option<String>);

/// An object under the prefix, as listed.
struct RemoteObject {
    size: u64,
    etag: Option<String>,
}

/// The quick-check record (see the module doc): relative path → what was last known.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Seen {
    files: BTreeMap<String, SeenFile>,
}

/// A file's stamp and the ETag of the object that held its content then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SeenFile {
    stamp: FileStamp,
    etag: String,
}

impl Seen {
    /// The record at `path`; empty when there is none or it cannot be read (a slower run, no
    /// wrong one).
    fn load(path: &Path) -> Seen {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!("ignoring {}: {e}", path.display());
                Seen::default()
            }),
            Err(_) => Seen::default(),
        }
    }

    fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let json = serde_json::to_vec(self)?;
        crate::host::fs::write_atomic(path, &json, 0o600, &Default::default())
    }
}

/// "1.5 MiB", "20 B".
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Up to [`LISTED`] names, then "and N more".
fn listing(names: impl Iterator<Item = String>) -> String {
    let all: Vec<String> = names.collect();
    let mut shown: Vec<String> = all.iter().take(LISTED).cloned().collect();
    if all.len() > LISTED {
        shown.push(format!("and {} more", all.len() - LISTED));
    }
    shown.join(", ")
}

/// What [`walk`] found: regular files by relative `/`-path, skipped entries (with why),
/// entries that could not be read (each with its error).
type Walked = (
    BTreeMap<String, LocalFile>,
    Vec<(String, &'static str)>,
    Vec<String>,
);

/// Walks `root` without following symlinks.
fn walk(root: &Path, filter: &Filter) -> Walked {
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
async fn sha256_file(path: PathBuf) -> anyhow::Result<String> {
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
fn stamp(path: &Path) -> anyhow::Result<FileStamp> {
    let m = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(FileStamp::of(&m))
}

async fn aws(args: &S3SyncArgs) -> anyhow::Result<Aws> {
    Aws::connect(&AwsTarget {
        region: args.region.clone(),
        endpoint_url: args.endpoint_url.clone(),
    })
    .await
}

/// Where the quick-check record of this bucket, prefix and source directory lives.
fn seen_path(args: &S3SyncArgs, state_dir: &Path, root: &Path) -> PathBuf {
    let id = Sha256::digest(
        format!("{}\0{}\0{}", args.bucket, args.prefix(), root.display()).as_bytes(),
    );
    state_dir
        .join("s3-sync")
        .join(format!("{}.json", &hex::encode(id)[..32]))
}

/// Objects under the prefix: key → size and ETag.
async fn remote(
    args: &S3SyncArgs,
    s3: &aws_sdk_s3::Client,
) -> anyhow::Result<BTreeMap<String, RemoteObject>> {
    let prefix = args.prefix();
    let mut out = BTreeMap::new();
    let mut pages = s3
        .list_objects_v2()
        .bucket(&args.bucket)
        .prefix(&prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            anyhow::anyhow!(
                "listing {}: {} (check the bucket name, region and the role's s3:ListBucket permission)",
                args.dest(),
                describe_error(&e)
            )
        })?;
        for o in page.contents() {
            if let Some(key) = o.key()
                && !key.ends_with('/')
            {
                out.insert(
                    key.to_string(),
                    RemoteObject {
                        size: u64::try_from(o.size().unwrap_or(0)).unwrap_or(0),
                        etag: o.e_tag().map(str::to_string),
                    },
                );
            }
        }
    }
    Ok(out)
}

/// `None` when the object's recorded SHA-256 differs from the file's (or is missing);
/// else `Some` of the object's ETag (empty when S3 gave none).
async fn same_content(
    args: &S3SyncArgs,
    s3: &aws_sdk_s3::Client,
    key: &str,
    path: PathBuf,
) -> anyhow::Result<Option<String>> {
    let head = s3
        .head_object()
        .bucket(&args.bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "looking at s3://{}/{key}: {}",
                args.bucket,
                describe_error(&e)
            )
        })?;
    let Some(recorded) = head
        .metadata()
        .and_then(|m| m.get(SHA256_METADATA))
        .cloned()
    else {
        return Ok(None);
    };
    Ok((sha256_file(path).await? == recorded).then(|| head.e_tag().unwrap_or("").to_string()))
}

/// Uploads one file.
async fn upload(
    args: &S3SyncArgs,
    aws: &Aws,
    up: &Upload,
    class: &Option<StorageClass>,
) -> anyhow::Result<Uploaded> {
    let before = stamp(&up.path)?;
    let sha = sha256_file(up.path.clone()).await?;
    let options = ObjectOptions {
        content_type: None,
        storage_class: class.clone(),
        metadata: HashMap::from([(SHA256_METADATA.to_string(), sha)]),
    };
    let changed = |what: &str| {
        anyhow::anyhow!(
            "{} changed while it was being uploaded ({what}): run the sync again once it is quiet",
            up.path.display()
        )
    };
    if before.size <= MULTIPART_THRESHOLD {
        let body = ByteStream::read_from()
            .path(&up.path)
            .length(aws_sdk_s3::primitives::Length::Exact(before.size))
            .build()
            .await
            .with_context(|| format!("reading {}", up.path.display()))?;
        let out = aws
            .s3()
            .put_object()
            .bucket(&args.bucket)
            .key(&up.key)
            .body(body)
            .set_storage_class(options.storage_class)
            .set_metadata(Some(options.metadata))
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "uploading {} to s3://{}/{}: {}",
                    up.path.display(),
                    args.bucket,
                    up.key,
                    describe_error(&e)
                )
            })?;
        if stamp(&up.path)? != before {
            // The object holds a mix or a newer version with the old SHA-256: the next
            // sync sees the mismatch and uploads it again.
            return Err(changed("uploaded as it was; the next sync corrects it"));
        }
        return Ok((before, out.e_tag));
    }
    let size = before.size;
    let part = size.div_ceil(MAX_PARTS).div_ceil(1 << 20) * (1 << 20);
    let part = part.max(MIN_PART);
    let mut upload = MultipartUpload::create_with(aws, &args.bucket, &up.key, &options).await?;
    let mut offset = 0u64;
    let mut number = 1i32;
    while offset < size {
        let len = part.min(size - offset);
        upload
            .upload_file_part(number, &up.path, offset, len)
            .await?;
        offset += len;
        number += 1;
    }
    if stamp(&up.path)? != before {
        // Dropping `upload` aborts it: the old object (if any) stays.
        return Err(changed("the upload was aborted"));
    }
    Ok((before, upload.complete().await?))
}

impl StepKind for S3SyncArgs {
    type Change = SyncPlan;

    async fn check(&self, ctx: &StepContext<'_>) -> anyhow::Result<Check<SyncPlan>> {
        // Arguments that held templates are judged now, rendered.
        let problems = self.validate();
        if !problems.is_empty() {
            anyhow::bail!(problems.join("; "));
        }
        let concurrency = self.concurrency()?;
        self.storage_class()?;
        let delete = self.delete.value("delete")?;
        let filter = Filter::new(&self.include, &self.exclude).map_err(anyhow::Error::msg)?;
        let root = ctx.resolve(Path::new(&self.src));
        let meta = std::fs::metadata(&root)
            .with_context(|| format!("`src` {}: cannot read it", root.display()))?;
        if !meta.is_dir() {
            anyhow::bail!("`src` {} is not a directory", root.display());
        }
        let filter = std::sync::Arc::new(filter);
        let (walk_root, walk_filter) = (root.clone(), std::sync::Arc::clone(&filter));
        let (files, skipped, mut unreadable) =
            tokio::task::spawn_blocking(move || walk(&walk_root, &walk_filter))
                .await
                .context("the directory walk failed")?;
        // A file that cannot be opened fails the step now, before anything is uploaded.
        for f in files.values() {
            if let Err(e) = std::fs::File::open(&f.path) {
                unreadable.push(format!("{} ({e})", f.path.display()));
            }
        }
        if !unreadable.is_empty() {
            anyhow::bail!(
                "cannot read {} path(s) under {}: {}; fix their permissions or leave them out with `exclude`",
                unreadable.len(),
                root.display(),
                listing(unreadable.into_iter())
            );
        }

        let aws = aws(self).await?;
        let s3 = aws.s3();
        let remote = remote(self, &s3).await?;
        let prefix = self.prefix();

        let seen_path = seen_path(self, ctx.state_dir, &root);
        let last = Seen::load(&seen_path);
        let mut seen = Seen::default();
        let mut uploads = Vec::new();
        let mut same_size = Vec::new();
        let mut quick = 0usize;
        for (rel, f) in &files {
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
                        quick += 1;
                        seen.files.insert(rel.clone(), known);
                    } else {
                        same_size.push((up, f.stamp));
                    }
                }
                _ => uploads.push(up),
            }
        }
        let hashed = same_size.len();
        let compared: Vec<anyhow::Result<(Upload, FileStamp, Option<String>)>> =
            futures_util::stream::iter(same_size)
                .map(|(up, stamp)| {
                    let s3 = &s3;
                    async move {
                        let etag = same_content(self, s3, &up.key, up.path.clone()).await?;
                        Ok((up, stamp, etag))
                    }
                })
                .buffer_unordered(concurrency)
                .collect()
                .await;
        for c in compared {
            match c? {
                (up, stamp, Some(etag)) => {
                    seen.files.insert(up.rel, SeenFile { stamp, etag });
                }
                (up, _, None) => uploads.push(up),
            }
        }
        uploads.sort_by(|a, b| a.rel.cmp(&b.rel));

        let mut deletes = Vec::new();
        if delete {
            let kept: std::collections::HashSet<&str> =
                skipped.iter().map(|(rel, _)| rel.as_str()).collect();
            for (key, object) in &remote {
                let rel = &key[prefix.len()..];
                if !files.contains_key(rel) && !kept.contains(rel) && filter.selects(rel) {
                    deletes.push((key.clone(), object.size));
                }
            }
        }

        let plan = SyncPlan {
            uploads,
            deletes,
            skipped,
            seen,
            seen_path: (!ctx.check).then_some(seen_path),
        };
        let skipped_note = if plan.skipped.is_empty() {
            String::new()
        } else {
            format!(
                "; skipped {}: {}",
                plan.skipped.len(),
                listing(
                    plan.skipped
                        .iter()
                        .map(|(rel, why)| format!("{rel} ({why})"))
                )
            )
        };
        if plan.uploads.is_empty() && plan.deletes.is_empty() {
            if let Some(path) = &plan.seen_path {
                plan.seen.save(path)?;
            }
            return Ok(Check::unchanged(Some(format!(
                "{} files ({}) in {} are in {} ({quick} known unchanged by their stamp and ETag, {hashed} hashed and compared){skipped_note}",
                files.len(),
                human_bytes(files.values().map(|f| f.size).sum()),
                root.display(),
                self.dest()
            ))));
        }
        let message = format!(
            "would {}{skipped_note}",
            summary(&plan, &self.dest(), Tense::Planned)
        );
        Ok(Check::change(plan, message))
    }

    async fn apply(&self, _ctx: &StepContext<'_>, mut plan: SyncPlan) -> anyhow::Result<Outcome> {
        let concurrency = self.concurrency()?;
        let class = self.storage_class()?.map(StorageClass::from);
        let aws = aws(self).await?;
        let results: Vec<(String, anyhow::Result<Uploaded>)> =
            futures_util::stream::iter(plan.uploads.clone())
                .map(|up| {
                    let (aws, class) = (&aws, &class);
                    async move { (up.rel.clone(), upload(self, aws, &up, class).await) }
                })
                .buffer_unordered(concurrency)
                .collect()
                .await;
        let failed: Vec<String> = results
            .iter()
            .filter_map(|(_, r)| r.as_ref().err().map(|e| format!("{e:#}")))
            .collect();
        if !failed.is_empty() {
            anyhow::bail!(
                "{} of {} uploads to {} failed (the others are complete; nothing was deleted): {}",
                failed.len(),
                plan.uploads.len(),
                self.dest(),
                failed.join("; ")
            );
        }
        for (rel, result) in &results {
            if let Ok((stamp, Some(etag))) = result {
                plan.seen.files.insert(
                    rel.clone(),
                    SeenFile {
                        stamp: *stamp,
                        etag: etag.clone(),
                    },
                );
            }
        }
        let s3 = aws.s3();
        for chunk in plan.deletes.chunks(1000) {
            let objects: Vec<ObjectIdentifier> = chunk
                .iter()
                .map(|(k, _)| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<_, _>>()
                .context("building the delete request")?;
            let out = s3
                .delete_objects()
                .bucket(&self.bucket)
                .delete(
                    Delete::builder()
                        .set_objects(Some(objects))
                        .quiet(true)
                        .build()
                        .context("building the delete request")?,
                )
                .send()
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "deleting objects under {}: {} (all uploads are complete)",
                        self.dest(),
                        describe_error(&e)
                    )
                })?;
            if !out.errors().is_empty() {
                let errs: Vec<String> = out
                    .errors()
                    .iter()
                    .map(|e| {
                        format!(
                            "{}: {}",
                            e.key().unwrap_or("?"),
                            e.message().or(e.code()).unwrap_or("failed")
                        )
                    })
                    .collect();
                anyhow::bail!(
                    "could not delete {} object(s) under {}: {}",
                    errs.len(),
                    self.dest(),
                    listing(errs.into_iter())
                );
            }
        }
        if let Some(path) = &plan.seen_path {
            plan.seen.save(path)?;
        }
        let mut lines: Vec<String> = plan
            .uploads
            .iter()
            .map(|u| format!("+ {}", u.key))
            .collect();
        lines.extend(plan.deletes.iter().map(|(k, _)| format!("- {k}")));
        Ok(Outcome {
            changed: true,
            diff: None,
            message: Some(summary(&plan, &self.dest(), Tense::Done)),
            // `register` gets one line per object: `+ key` uploaded, `- key` deleted.
            output: Some(CommandOutput {
                stdout: lines.join("\n"),
                stderr: String::new(),
                rc: 0,
            }),
        })
    }
}

/// Whether [`summary`] says what would be done or what was.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tense {
    Planned,
    Done,
}

/// "upload 2 file(s) (1.0 KiB: 1 new, 1 changed) and delete 1 object(s) (5 B) in s3://b/p/:
/// + a, ~ b, - p/c" (or "uploaded ... deleted ...").
fn summary(plan: &SyncPlan, dest: &str, tense: Tense) -> String {
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
            human_bytes(up_bytes),
            plan.uploads.len() - new
        ));
    }
    if !plan.deletes.is_empty() {
        parts.push(format!(
            "{delete} {} object(s) ({})",
            plan.deletes.len(),
            human_bytes(del_bytes)
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
    use bosun_model::steps::s3_sync::STORAGE_CLASSES;

    use super::*;

    #[test]
    fn bytes_read_as_binary_units() {
        assert_eq!(human_bytes(20), "20 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    }

    #[test]
    fn the_model_knows_every_storage_class_of_the_sdk() {
        assert_eq!(STORAGE_CLASSES, StorageClass::values());
    }

    #[test]
    fn listings_are_capped() {
        let l = listing((0..60).map(|i| i.to_string()));
        assert!(l.ends_with("49, and 10 more"), "{l}");
    }
}

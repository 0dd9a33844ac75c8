//! Runs `s3_sync` on the host; its arguments and their validation are the model's
//! (`bosun_model::steps::s3_sync`, whose doc says what a sync does).
//!
//! - [`local`]: the source directory walked, files stamped and hashed (reads only)
//! - [`plan`]: pure: which files go up and which objects go, from the two listings and the
//!   last run's record; the plan's summary
//! - [`record`]: the quick-check record, `<state dir>/s3-sync/*.json`
//! - here: the step, and its S3 calls (listing, HeadObject, uploads, deletes)

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Context;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier, StorageClass};
use bosun_model::backup::parts::MAX_PARTS;
use bosun_model::steps::ActionArgs;
use bosun_model::steps::s3_sync::{Filter, S3SyncArgs};
use futures_util::StreamExt;

use super::{Check, CommandOutput, Outcome, StepContext, StepKind};
use crate::aws::{Aws, AwsTarget, describe_error};
use crate::backup::upload::{MultipartUpload, ObjectOptions};

mod local;
mod plan;
mod record;

use bosun_model::backup::report::human_size;
use local::{sha256_file, stamp, walk};
pub use plan::SyncPlan;
use plan::{RemoteObject, Tense, Upload, listing, summary};
use record::{FileStamp, Seen, SeenFile, record_path};

/// Files larger than this go up as multipart uploads.
pub(crate) const MULTIPART_THRESHOLD: u64 = 16 << 20;
/// Smallest part of a multipart upload here (S3's minimum is 5 MiB).
const MIN_PART: u64 = 16 << 20;
/// User metadata key holding the content's SHA-256 (`x-amz-meta-sha256`).
pub(crate) const SHA256_METADATA: &str = "sha256";
/// A file's stamp as uploaded and the new object's ETag.
type Uploaded = (FileStamp, Option<String>);

async fn aws(args: &S3SyncArgs) -> anyhow::Result<Aws> {
    Aws::connect(&AwsTarget {
        region: args.region.clone(),
        endpoint_url: args.endpoint_url.clone(),
    })
    .await
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

        let seen_path = record_path(ctx.state_dir, &self.bucket, &prefix, &root);
        let last = Seen::load(&seen_path);
        let mut triage = plan::triage(&prefix, &files, &remote, &last);
        let quick = triage.seen.files.len();
        let same_size = std::mem::take(&mut triage.compare);
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
        let compared = compared.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        let (uploads, seen) = triage.settle(compared);

        let deletes = if delete {
            plan::deletes(&prefix, &files, &skipped, &remote, &filter)
        } else {
            Vec::new()
        };

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
                human_size(files.values().map(|f| f.size).sum()),
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

#[cfg(test)]
mod tests {
    use bosun_model::steps::s3_sync::STORAGE_CLASSES;

    use super::*;

    #[test]
    fn the_model_knows_every_storage_class_of_the_sdk() {
        assert_eq!(STORAGE_CLASSES, StorageClass::values());
    }
}

//! `s3_sync`: a local directory to an S3 bucket prefix, uploading only new or changed files.
//!
//! ```toml
//! s3_sync = { src = "/srv/uploads", bucket = "acme-backups", prefix = "uploads/",
//!             delete = true, storage_class = "STANDARD_IA", exclude = ["**/*.tmp"] }
//! ```
//! The change test, compared without downloading anything: a file is uploaded when no object
//! has its key, when the object's size differs, or when the object's `x-amz-meta-sha256` (the
//! SHA-256 of the content, hex, which this step writes on every upload) differs from the file's
//! SHA-256. So only files whose size matches an object are hashed in `check`, and each costs
//! one HeadObject. Objects without that metadata (uploaded by another tool) count as changed and
//! are uploaded once. S3's own checksums are not used: a multipart object's ChecksumSHA256 is a
//! checksum of part checksums, which depends on the part size, not on the content alone.
//!
//! The quick check, so a warm sync of a large tree reads nothing: at the end of a run (not
//! under `--check`) the step records, per file, its stamp (size, mtime, ctime, inode) and the
//! ETag of the object known to hold its content (uploaded, or compared by SHA-256), in
//! `<state dir>/s3-sync/<hash of bucket, prefix and src>.json` (written atomically). A file
//! whose stamp and whose object's listed ETag both match the record is unchanged without a
//! HeadObject or a read. Any write to the file changes its ctime, and any write to the object
//! its ETag, so either sends it back to the full comparison. A missing or unreadable record
//! only makes the run slower.
//!
//! Uploads: files up to `MULTIPART_THRESHOLD` with one PutObject, larger ones as a multipart
//! upload (`bosun_agent::backup::upload::MultipartUpload`: aborted when anything fails), both
//! streamed from the file, so memory does not grow with file size; at most `concurrency` files
//! at once. A file is hashed just before its upload and its size and mtime are compared before
//! and after: a file that changed meanwhile fails the step (a multipart upload is aborted, so
//! nothing half-written becomes visible).
//!
//! `delete = true` then removes objects under the prefix with no local file (only those the
//! include/exclude globs select: an excluded path is neither uploaded nor deleted). Symlinks are
//! not followed and other non-regular files (sockets, FIFOs) are skipped; both are named in
//! the message and their objects are never deleted. An unreadable file or directory fails
//! `check`, naming every one, before anything is uploaded. The storage class applies to
//! uploads: an unchanged object keeps the class it has.

use globset::{Glob, GlobSet, GlobSetBuilder};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ActionArgs;
use super::k3s::Toggle;
use crate::backup::Number;
use crate::jinja::is_templated;

/// S3's storage classes, as `storage_class` may name them (the values of the AWS SDK's
/// `StorageClass`; the agent's tests hold the two lists equal).
pub const STORAGE_CLASSES: &[&str] = &[
    "DEEP_ARCHIVE",
    "EXPRESS_ONEZONE",
    "FSX_ONTAP",
    "FSX_OPENZFS",
    "GLACIER",
    "GLACIER_IR",
    "INTELLIGENT_TIERING",
    "ONEZONE_IA",
    "OUTPOSTS",
    "REDUCED_REDUNDANCY",
    "SNOW",
    "STANDARD",
    "STANDARD_IA",
];

fn default_concurrency() -> Number {
    Number::Int(4)
}

/// Arguments of `s3_sync`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3SyncArgs {
    /// Local directory to upload (relative: to the playbook's directory).
    pub src: String,
    /// Destination bucket.
    pub bucket: String,
    /// Key prefix; a `/` is added when missing. Empty: the bucket's top.
    #[serde(default)]
    pub prefix: String,
    /// Delete objects under the prefix that have no local file (default false).
    #[serde(default)]
    pub delete: Toggle,
    /// Storage class of uploaded objects: STANDARD, STANDARD_IA, ONEZONE_IA,
    /// INTELLIGENT_TIERING, GLACIER_IR, GLACIER, DEEP_ARCHIVE, ... (default: the bucket's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// Only paths (relative to `src`, `/`-separated) matching one of these globs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Skip paths matching one of these globs (wins over `include`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Files uploaded (or hashed and compared) at once, 1 to 16.
    #[serde(default = "default_concurrency")]
    pub concurrency: Number,
    /// AWS region (default: from the environment, profile or instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// S3 endpoint instead of AWS's (default: `AWS_ENDPOINT_URL` if set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
}

/// The glob filter: include (empty: all), then exclude.
pub struct Filter {
    include: Option<GlobSet>,
    exclude: GlobSet,
}

impl Filter {
    /// The filter of `include` and `exclude`; the error names the argument and the bad glob.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Filter, String> {
        let set = |globs: &[String], name: &str| -> Result<GlobSet, String> {
            let mut b = GlobSetBuilder::new();
            for g in globs {
                b.add(Glob::new(g).map_err(|e| format!("`{name}`: glob {g:?} is not valid: {e}"))?);
            }
            b.build().map_err(|e| format!("`{name}`: {e}"))
        };
        Ok(Filter {
            include: (!include.is_empty())
                .then(|| set(include, "include"))
                .transpose()?,
            exclude: set(exclude, "exclude")?,
        })
    }

    /// Whether the relative `/`-path `rel` is synced.
    pub fn selects(&self, rel: &str) -> bool {
        self.include.as_ref().is_none_or(|s| s.is_match(rel)) && !self.exclude.is_match(rel)
    }
}

impl S3SyncArgs {
    /// The key prefix, without a leading `/` and ending in one unless empty (the bucket's top).
    pub fn prefix(&self) -> String {
        let p = self.prefix.trim_start_matches('/');
        if p.is_empty() || p.ends_with('/') {
            p.to_string()
        } else {
            format!("{p}/")
        }
    }

    /// `concurrency`, once rendered, checked to be 1 to 16.
    pub fn concurrency(&self) -> anyhow::Result<usize> {
        let n = self.concurrency.value("concurrency")?;
        if !(1..=16).contains(&n) {
            anyhow::bail!("`concurrency` must be 1 to 16, got {n}");
        }
        Ok(n as usize)
    }

    /// `storage_class`, checked to be one of [`STORAGE_CLASSES`].
    pub fn storage_class(&self) -> anyhow::Result<Option<&str>> {
        let Some(text) = &self.storage_class else {
            return Ok(None);
        };
        if STORAGE_CLASSES.contains(&text.as_str()) {
            Ok(Some(text.as_str()))
        } else {
            anyhow::bail!(
                "`storage_class` {text:?} is not an S3 storage class: use one of {}",
                STORAGE_CLASSES.join(", ")
            )
        }
    }

    /// `s3://bucket/prefix/`, for messages.
    pub fn dest(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix())
    }
}

impl ActionArgs for S3SyncArgs {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.src.is_empty() {
            problems.push("`src` is empty: name the directory to upload".into());
        }
        if self.bucket.is_empty() {
            problems.push("`bucket` is empty".into());
        }
        problems.extend(self.delete.problem("delete"));
        problems.extend(self.concurrency.problem("concurrency"));
        if matches!(self.concurrency, Number::Int(_))
            && let Err(e) = self.concurrency()
        {
            problems.push(e.to_string());
        }
        if let Some(c) = &self.storage_class
            && !is_templated(c)
            && let Err(e) = self.storage_class()
        {
            problems.push(e.to_string());
        }
        let globs: Vec<&String> = self.include.iter().chain(&self.exclude).collect();
        if !globs.iter().any(|g| is_templated(g))
            && let Err(e) = Filter::new(&self.include, &self.exclude)
        {
            problems.push(e);
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclude_wins_over_include_and_globs_cross_directories() {
        let f = Filter::new(&["**/*.bin".into(), "top.txt".into()], &["tmp/**".into()]).unwrap();
        assert!(f.selects("models/a/b.bin"));
        assert!(f.selects("top.txt"));
        assert!(!f.selects("tmp/x.bin"));
        assert!(!f.selects("notes.md"));
        let all = Filter::new(&[], &[]).unwrap();
        assert!(all.selects("anything/at/all"));
        assert!(
            Filter::new(&["a[".into()], &[])
                .err()
                .unwrap()
                .contains("`include`: glob \"a[\"")
        );
    }
}

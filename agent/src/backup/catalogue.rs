//! The backups under an S3 prefix, as listed: what exists, when each was taken, whether it was
//! verified, and which objects belong to it.
//!
//! A backup is an object `K` with a `K.manifest.json` beside it; an object without a manifest
//! (an upload that crashed between completing and writing its manifest, or somebody else's
//! file) is not a backup and is never touched. The time of a backup is the timestamp in its key
//! (see [`super::key`]) or else its manifest's `started_at`.

use std::collections::BTreeSet;

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::key::time_in_key;
use super::manifest::{MANIFEST_SUFFIX, Manifest, VERIFIED_SUFFIX, VERIFY_FAILED_SUFFIX};
use crate::aws::describe_error;

/// One backup in a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// Key of the backup object.
    pub key: String,
    /// When it was taken.
    pub time: DateTime<Utc>,
    /// `K.verified.json` exists.
    pub verified: bool,
    /// Every object of this backup (the dump, its manifest, verification records).
    pub objects: Vec<String>,
}

/// A listing: backups oldest first, and how many other objects were seen.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    /// The backups, oldest first.
    pub backups: Vec<Backup>,
    /// Objects under the prefix that belong to no backup.
    pub others: usize,
}

/// Every key under `prefix`.
pub async fn list_keys(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> anyhow::Result<BTreeSet<String>> {
    let mut keys = BTreeSet::new();
    let mut token = None;
    loop {
        let out = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "listing s3://{bucket}/{prefix}: {} (check the bucket, region and s3:ListBucket permission)",
                    describe_error(&e)
                )
            })?;
        keys.extend(out.contents().iter().filter_map(|o| o.key.clone()));
        match out.next_continuation_token {
            Some(t) if out.is_truncated == Some(true) => token = Some(t),
            _ => break,
        }
    }
    Ok(keys)
}

/// Reads and parses `key` as JSON.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> anyhow::Result<T> {
    let out = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("reading s3://{bucket}/{key}: {}", describe_error(&e)))?;
    let bytes = out
        .body
        .collect()
        .await
        .with_context(|| format!("reading s3://{bucket}/{key}"))?
        .into_bytes();
    serde_json::from_slice(&bytes).with_context(|| format!("s3://{bucket}/{key} is not valid JSON"))
}

/// Lists the backups under `prefix`.
pub async fn list(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> anyhow::Result<Catalogue> {
    let keys = list_keys(s3, bucket, prefix).await?;
    let mut cat = Catalogue::default();
    let mut owned = 0usize;
    for manifest_key in keys.iter().filter(|k| k.ends_with(MANIFEST_SUFFIX)) {
        let key = &manifest_key[..manifest_key.len() - MANIFEST_SUFFIX.len()];
        if !keys.contains(key) {
            continue;
        }
        let time = match time_in_key(key) {
            Some(t) => t,
            None => {
                get_json::<Manifest>(s3, bucket, manifest_key)
                    .await?
                    .started_at
            }
        };
        let objects: Vec<String> = [
            key.to_string(),
            manifest_key.clone(),
            format!("{key}{VERIFIED_SUFFIX}"),
            format!("{key}{VERIFY_FAILED_SUFFIX}"),
        ]
        .into_iter()
        .filter(|k| keys.contains(k))
        .collect();
        owned += objects.len();
        cat.backups.push(Backup {
            key: key.to_string(),
            time,
            verified: keys.contains(&format!("{key}{VERIFIED_SUFFIX}")),
            objects,
        });
    }
    cat.backups
        .sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.key.cmp(&b.key)));
    cat.others = keys.len() - owned;
    Ok(cat)
}

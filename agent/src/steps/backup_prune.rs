//! `backup_prune`: delete old backups under an S3 prefix by a retention policy.
//!
//! ```toml
//! backup_prune = { bucket = "acme-backups", prefix = "backups/mysql/shop/",
//!                  keep_last = 3, daily = 7, weekly = 4, monthly = 12 }
//! ```
//! The policy is [`crate::backup::retention`]'s: the newest `keep_last`, the newest of each of
//! the newest `daily` days, `weekly` ISO weeks and `monthly` months, and always the newest
//! verified backup. Only backups (objects with a manifest) are considered; a deleted backup
//! takes its manifest and verification records with it. `--check` lists what would go; nothing
//! to delete is `ok`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ActionArgs, Check, Outcome, StepContext, StepKind};
use crate::aws::{Aws, AwsTarget, describe_error};
use crate::backup::Number;
use crate::backup::catalogue::{self, Backup};
use crate::backup::retention::{Candidate, Policy, plan};

fn zero() -> Number {
    Number::Int(0)
}

/// Arguments of `backup_prune`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupPruneArgs {
    /// Bucket holding the backups.
    pub bucket: String,
    /// Prefix the backups are under (one database's backups, usually).
    pub prefix: String,
    /// Keep the newest N backups.
    #[serde(default = "zero")]
    pub keep_last: Number,
    /// Keep the newest backup of each of this many days.
    #[serde(default = "zero")]
    pub daily: Number,
    /// Keep the newest backup of each of this many ISO weeks.
    #[serde(default = "zero")]
    pub weekly: Number,
    /// Keep the newest backup of each of this many months.
    #[serde(default = "zero")]
    pub monthly: Number,
    /// AWS region (default: from the environment, profile or instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// S3 endpoint instead of AWS's (default: `AWS_ENDPOINT_URL` if set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
}

impl BackupPruneArgs {
    fn policy(&self) -> anyhow::Result<Policy> {
        let n =
            |v: &Number, name: &str| -> anyhow::Result<u32> { Ok(u32::try_from(v.value(name)?)?) };
        Ok(Policy {
            keep_last: n(&self.keep_last, "keep_last")?,
            daily: n(&self.daily, "daily")?,
            weekly: n(&self.weekly, "weekly")?,
            monthly: n(&self.monthly, "monthly")?,
        })
    }
}

impl ActionArgs for BackupPruneArgs {
    fn validate(&self) -> Vec<String> {
        let mut problems: Vec<String> = [
            (&self.keep_last, "keep_last"),
            (&self.daily, "daily"),
            (&self.weekly, "weekly"),
            (&self.monthly, "monthly"),
        ]
        .into_iter()
        .filter_map(|(v, name)| v.problem(name))
        .collect();
        if problems.is_empty()
            && let Ok(p) = self.policy()
        {
            problems.extend(p.problem());
        }
        if self.bucket.is_empty() {
            problems.push("`bucket` is empty".into());
        }
        problems
    }
}

impl StepKind for BackupPruneArgs {
    /// The backups to delete.
    type Change = Vec<Backup>;

    async fn check(&self, _ctx: &StepContext<'_>) -> anyhow::Result<Check<Vec<Backup>>> {
        let policy = self.policy()?;
        if let Some(p) = policy.problem() {
            anyhow::bail!(p);
        }
        let aws = Aws::connect(&AwsTarget {
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
        })
        .await?;
        let cat = catalogue::list(&aws.s3(), &self.bucket, &self.prefix).await?;
        let candidates: Vec<Candidate> = cat
            .backups
            .iter()
            .map(|b| Candidate {
                id: b.key.clone(),
                time: b.time,
                verified: b.verified,
            })
            .collect();
        let planned = plan(&policy, &candidates);
        let total = cat.backups.len();
        if planned.delete.is_empty() {
            return Ok(Check::unchanged(Some(format!(
                "keeps all {total} backups under s3://{}/{}",
                self.bucket, self.prefix
            ))));
        }
        let doomed: Vec<Backup> = planned
            .delete
            .iter()
            .filter_map(|c| cat.backups.iter().find(|b| b.key == c.id).cloned())
            .collect();
        let names: Vec<&str> = doomed.iter().map(|b| b.key.as_str()).collect();
        Ok(Check::change(
            doomed.clone(),
            format!(
                "would delete {} of {total} backups: {}",
                doomed.len(),
                names.join(", ")
            ),
        ))
    }

    async fn apply(&self, _ctx: &StepContext<'_>, doomed: Vec<Backup>) -> anyhow::Result<Outcome> {
        let aws = Aws::connect(&AwsTarget {
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
        })
        .await?;
        let s3 = aws.s3();
        let mut deleted = Vec::new();
        for backup in &doomed {
            // The dump first, the manifest last: a failure midway leaves small JSON, never an
            // unlisted dump.
            let mut objects = backup.objects.clone();
            objects.sort_by_key(|k| k.ends_with(crate::backup::manifest::MANIFEST_SUFFIX));
            for key in &objects {
                s3.delete_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "deleting s3://{}/{key}: {} (deleted so far: {})",
                            self.bucket,
                            describe_error(&e),
                            deleted.join(", ")
                        )
                    })?;
            }
            deleted.push(backup.key.clone());
        }
        Ok(Outcome {
            changed: true,
            diff: None,
            message: Some(format!(
                "deleted {} backups: {}",
                deleted.len(),
                deleted.join(", ")
            )),
            output: None,
        })
    }
}

//! `backup_prune`: delete old backups under an S3 prefix, or old RDS manual snapshots of a DB
//! instance, by a retention policy.
//!
//! ```toml
//! backup_prune = { bucket = "acme-backups", prefix = "backups/mysql/shop/",
//!                  keep_last = 3, daily = 7, weekly = 4, monthly = 12 }
//! backup_prune = { db_instance = "platform", keep_last = 3, daily = 7 }
//! ```
//! The policy is [`crate::backup::retention`]'s: the newest `keep_last`, the newest of each of
//! the newest `daily` days, `weekly` ISO weeks and `monthly` months, and always the newest
//! verified backup. Only backups (objects with a manifest) are considered; a deleted backup
//! takes its manifest and verification records with it. `--check` lists what would go; nothing
//! to delete is `ok`.
//!
//! With `db_instance` (instead of `bucket` and `prefix`) the candidates are the instance's
//! *manual* snapshots that `rds_snapshot` made (tag `bosun:managed = true`) and that are
//! `available`; each counts as verified, so the newest available snapshot is never deleted.
//! Automated snapshots, snapshots made by hand and snapshots still being created are never
//! touched.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ActionArgs, Check, Outcome, StepContext, StepKind};
use crate::aws::{Aws, AwsTarget, describe_error};
use crate::backup::Number;
use crate::backup::catalogue::{self, Backup};
use crate::backup::rds;
use crate::backup::retention::{Candidate, Policy, plan};

fn zero() -> Number {
    Number::Int(0)
}

/// Arguments of `backup_prune`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupPruneArgs {
    /// Bucket holding the backups (S3 backups; with `prefix`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Prefix the backups are under (one database's backups, usually).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// RDS DB instance whose manual snapshots made by bosun are pruned (instead of `bucket`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_instance: Option<String>,
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
    /// S3 (or RDS) endpoint instead of AWS's (default: `AWS_ENDPOINT_URL` if set).
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
        match (&self.bucket, &self.prefix, &self.db_instance) {
            (Some(b), Some(_), None) if b.is_empty() => problems.push("`bucket` is empty".into()),
            (Some(_), Some(_), None) => {}
            (None, None, Some(i)) if i.is_empty() => {
                problems.push("`db_instance` is empty".into())
            }
            (None, None, Some(_)) => {}
            _ => problems.push(
                "give either `bucket` and `prefix` (backups in S3) or `db_instance` (RDS manual snapshots), not both and not one of `bucket`/`prefix` alone".into(),
            ),
        }
        problems
    }
}

/// What `check` found to delete.
#[derive(Debug)]
pub enum Doomed {
    /// S3 backups (each with its manifest and records).
    S3 {
        /// Their bucket.
        bucket: String,
        /// The backups.
        backups: Vec<Backup>,
    },
    /// RDS manual snapshot ids.
    Rds(Vec<String>),
}

impl BackupPruneArgs {
    async fn aws(&self) -> anyhow::Result<Aws> {
        Aws::connect(&AwsTarget {
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
        })
        .await
    }

    async fn check_s3(
        &self,
        bucket: &str,
        prefix: &str,
        policy: &Policy,
    ) -> anyhow::Result<Check<Doomed>> {
        let aws = self.aws().await?;
        let cat = catalogue::list(&aws.s3(), bucket, prefix).await?;
        let candidates: Vec<Candidate> = cat
            .backups
            .iter()
            .map(|b| Candidate {
                id: b.key.clone(),
                time: b.time,
                verified: b.verified,
            })
            .collect();
        let planned = plan(policy, &candidates);
        let total = cat.backups.len();
        if planned.delete.is_empty() {
            return Ok(Check::unchanged(Some(format!(
                "keeps all {total} backups under s3://{bucket}/{prefix}"
            ))));
        }
        let doomed: Vec<Backup> = planned
            .delete
            .iter()
            .filter_map(|c| cat.backups.iter().find(|b| b.key == c.id).cloned())
            .collect();
        let names: Vec<&str> = doomed.iter().map(|b| b.key.as_str()).collect();
        let message = format!(
            "would delete {} of {total} backups: {}",
            doomed.len(),
            names.join(", ")
        );
        Ok(Check::change(
            Doomed::S3 {
                bucket: bucket.to_string(),
                backups: doomed,
            },
            message,
        ))
    }

    async fn check_rds(&self, instance: &str, policy: &Policy) -> anyhow::Result<Check<Doomed>> {
        let aws = self.aws().await?;
        let snapshots = rds::manual_snapshots(&aws.rds(), instance).await?;
        let candidates = rds::candidates(&snapshots);
        let total = candidates.len();
        let planned = plan(policy, &candidates);
        if planned.delete.is_empty() {
            return Ok(Check::unchanged(Some(format!(
                "keeps all {total} bosun snapshots of RDS instance {instance}"
            ))));
        }
        let ids: Vec<String> = planned.delete.into_iter().map(|c| c.id).collect();
        let message = format!(
            "would delete {} of {total} bosun snapshots of RDS instance {instance}: {}",
            ids.len(),
            ids.join(", ")
        );
        Ok(Check::change(Doomed::Rds(ids), message))
    }
}

impl StepKind for BackupPruneArgs {
    /// The backups or snapshots to delete.
    type Change = Doomed;

    async fn check(&self, _ctx: &StepContext<'_>) -> anyhow::Result<Check<Doomed>> {
        // Arguments that held templates are judged now, rendered.
        let problems = self.validate();
        if !problems.is_empty() {
            anyhow::bail!(problems.join("; "));
        }
        let policy = self.policy()?;
        if let Some(p) = policy.problem() {
            anyhow::bail!(p);
        }
        match (&self.bucket, &self.prefix, &self.db_instance) {
            (Some(bucket), Some(prefix), None) => self.check_s3(bucket, prefix, &policy).await,
            (None, None, Some(instance)) => self.check_rds(instance, &policy).await,
            _ => {
                anyhow::bail!("give either `bucket` and `prefix` or `db_instance` to backup_prune")
            }
        }
    }

    async fn apply(&self, _ctx: &StepContext<'_>, doomed: Doomed) -> anyhow::Result<Outcome> {
        let aws = self.aws().await?;
        let (deleted, what) = match doomed {
            Doomed::S3 { bucket, backups } => {
                (delete_s3(&aws, &bucket, &backups).await?, "backups")
            }
            Doomed::Rds(ids) => (delete_rds(&aws, &ids).await?, "RDS snapshots"),
        };
        Ok(Outcome {
            changed: true,
            diff: None,
            message: Some(format!(
                "deleted {} {what}: {}",
                deleted.len(),
                deleted.join(", ")
            )),
            output: None,
        })
    }
}

async fn delete_s3(aws: &Aws, bucket: &str, doomed: &[Backup]) -> anyhow::Result<Vec<String>> {
    let s3 = aws.s3();
    let mut deleted = Vec::new();
    for backup in doomed {
        // The dump first, the manifest last: a failure midway leaves small JSON, never an
        // unlisted dump.
        let mut objects = backup.objects.clone();
        objects.sort_by_key(|k| k.ends_with(crate::backup::manifest::MANIFEST_SUFFIX));
        for key in &objects {
            s3.delete_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "deleting s3://{bucket}/{key}: {} (deleted so far: {})",
                        describe_error(&e),
                        deleted.join(", ")
                    )
                })?;
        }
        deleted.push(backup.key.clone());
    }
    Ok(deleted)
}

async fn delete_rds(aws: &Aws, ids: &[String]) -> anyhow::Result<Vec<String>> {
    let client = aws.rds();
    let mut deleted = Vec::new();
    for id in ids {
        client
            .delete_db_snapshot()
            .db_snapshot_identifier(id)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "deleting RDS snapshot {id}: {} (check the role's rds:DeleteDBSnapshot permission; deleted so far: {})",
                    describe_error(&e),
                    deleted.join(", ")
                )
            })?;
        deleted.push(id.clone());
    }
    Ok(deleted)
}

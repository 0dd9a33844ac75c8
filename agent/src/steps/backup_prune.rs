//! Runs `backup_prune` against S3 or RDS; its arguments and their validation are the model's
//! (`bosun_model::steps::backup_prune`).

use bosun_model::backup::retention::Policy;
use bosun_model::steps::ActionArgs;
use bosun_model::steps::backup_prune::BackupPruneArgs;

use super::{Check, Outcome, StepContext, StepKind};
use crate::aws::{Aws, AwsTarget, describe_error};
use crate::backup::catalogue::{self, Backup};
use crate::backup::rds;
use crate::backup::retention::{Candidate, plan};

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

async fn aws(args: &BackupPruneArgs) -> anyhow::Result<Aws> {
    Aws::connect(&AwsTarget {
        region: args.region.clone(),
        endpoint_url: args.endpoint_url.clone(),
    })
    .await
}

async fn check_s3(
    args: &BackupPruneArgs,
    bucket: &str,
    prefix: &str,
    policy: &Policy,
) -> anyhow::Result<Check<Doomed>> {
    let aws = aws(args).await?;
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

async fn check_rds(
    args: &BackupPruneArgs,
    instance: &str,
    policy: &Policy,
) -> anyhow::Result<Check<Doomed>> {
    let aws = aws(args).await?;
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
            (Some(bucket), Some(prefix), None) => check_s3(self, bucket, prefix, &policy).await,
            (None, None, Some(instance)) => check_rds(self, instance, &policy).await,
            _ => {
                anyhow::bail!("give either `bucket` and `prefix` or `db_instance` to backup_prune")
            }
        }
    }

    async fn apply(&self, _ctx: &StepContext<'_>, doomed: Doomed) -> anyhow::Result<Outcome> {
        let aws = aws(self).await?;
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

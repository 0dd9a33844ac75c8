//! Runs `rds_snapshot` against RDS; its arguments and their validation are the model's
//! (`bosun_model::steps::rds_snapshot`).

use bosun_model::steps::ActionArgs;
use bosun_model::steps::rds_snapshot::RdsSnapshotArgs;

use super::{Check, CommandOutput, Outcome, StepContext, StepKind};
use crate::aws::{Aws, AwsTarget, describe_error};
use crate::backup::rds::{self, Snapshot};

/// What `check` found to do.
#[derive(Debug)]
pub struct SnapshotWork {
    id: String,
    /// Create it (else it exists: maybe still `creating`).
    create: bool,
    /// Wait for it in the source region.
    wait: bool,
    /// Copy it (else the copy exists or none is wanted).
    copy: bool,
    /// Wait for the copy.
    wait_copy: bool,
}

async fn aws(args: &RdsSnapshotArgs) -> anyhow::Result<Aws> {
    Aws::connect(&AwsTarget {
        region: args.region.clone(),
        endpoint_url: args.endpoint_url.clone(),
    })
    .await
}

/// The snapshot `id`, checked to be of our instance.
async fn existing(
    args: &RdsSnapshotArgs,
    rds_client: &aws_sdk_rds::Client,
    id: &str,
    region: &str,
) -> anyhow::Result<Option<Snapshot>> {
    let found = rds::describe(rds_client, id).await?;
    if let Some(s) = &found
        && !s.instance.eq_ignore_ascii_case(&args.db_instance)
    {
        anyhow::bail!(
            "RDS snapshot {id} in {region} already exists but is of instance {:?}, not {:?}: choose another snapshot_id",
            s.instance,
            args.db_instance
        );
    }
    Ok(found)
}

/// A failed snapshot (or copy) is not something waiting fixes.
fn usable(s: &Snapshot, region: &str) -> anyhow::Result<()> {
    match s.status.as_str() {
        "failed" | "deleting" | "incompatible-restore" | "incompatible-parameters" => {
            anyhow::bail!(
                "RDS snapshot {} in {region} is {}: delete it or choose another snapshot_id",
                s.id,
                s.status
            )
        }
        _ => Ok(()),
    }
}

impl StepKind for RdsSnapshotArgs {
    type Change = SnapshotWork;

    async fn check(&self, _ctx: &StepContext<'_>) -> anyhow::Result<Check<SnapshotWork>> {
        // Arguments that held templates are judged now, rendered.
        let problems = self.validate();
        if !problems.is_empty() {
            anyhow::bail!(problems.join("; "));
        }
        let id = self.snapshot_id()?;
        self.timeout()?;
        let aws = aws(self).await?;
        let region = aws.region().unwrap_or_default().to_string();
        let source = existing(self, &aws.rds(), &id, &region).await?;
        match &source {
            Some(s) => usable(s, &region)?,
            // A typo in the instance name shows under --check, not only at the real run.
            None => rds::instance_exists(&aws.rds(), &self.db_instance, &region).await?,
        }
        let copy = match self.copy_region() {
            Some(dest) => {
                let found = existing(self, &aws.rds_in(dest), &id, dest).await?;
                if let Some(s) = &found {
                    usable(s, dest)?;
                }
                Some((dest, found))
            }
            None => None,
        };
        let work = SnapshotWork {
            id: id.clone(),
            create: source.is_none(),
            wait: source.as_ref().is_none_or(|s| s.status != "available"),
            copy: matches!(&copy, Some((_, None))),
            wait_copy: matches!(&copy, Some((_, f)) if f.as_ref().is_none_or(|s| s.status != "available")),
        };
        if !work.wait && !work.wait_copy {
            let also = copy
                .map(|(d, _)| format!(" (and in {d})"))
                .unwrap_or_default();
            return Ok(Check::unchanged(Some(format!(
                "snapshot {id} of {} is available in {region}{also}",
                self.db_instance
            ))));
        }
        let mut parts = Vec::new();
        match &source {
            None => parts.push(format!(
                "would snapshot {} as {id} in {region}",
                self.db_instance
            )),
            Some(s) if work.wait => parts.push(format!(
                "would wait for snapshot {id} ({}) in {region}",
                s.status
            )),
            Some(_) => {}
        }
        if let Some((dest, found)) = &copy {
            match found {
                None => parts.push(format!("would copy {id} to {dest}")),
                Some(s) if work.wait_copy => {
                    parts.push(format!("would wait for the copy in {dest} ({})", s.status))
                }
                Some(_) => {}
            }
        }
        Ok(Check::change(work, parts.join("; ")))
    }

    async fn apply(&self, _ctx: &StepContext<'_>, work: SnapshotWork) -> anyhow::Result<Outcome> {
        let timeout = self.timeout()?;
        let aws = aws(self).await?;
        let region = aws.region().unwrap_or_default().to_string();
        let rds_client = aws.rds();
        let id = &work.id;
        let mut done = Vec::new();
        if work.create {
            rds_client
                .create_db_snapshot()
                .db_instance_identifier(&self.db_instance)
                .db_snapshot_identifier(id)
                .set_tags(Some(rds::tags(&self.tags)))
                .send()
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "creating RDS snapshot {id} of {} in {region}: {} (check the instance name and the role's rds:CreateDBSnapshot and rds:AddTagsToResource permissions)",
                        self.db_instance,
                        describe_error(&e)
                    )
                })?;
            done.push(format!("created {id} of {} in {region}", self.db_instance));
        }
        if work.wait {
            rds::wait_available(&rds_client, id, timeout, &region).await?;
        }
        let mut arns = Vec::new();
        if let Some(dest) = self.copy_region() {
            let dest_client = aws.rds_in(dest);
            if work.copy {
                // The source is named by ARN: the destination's RDS fetches it across regions.
                let source = rds::describe(&rds_client, id)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("RDS snapshot {id} vanished in {region}"))?;
                dest_client
                    .copy_db_snapshot()
                    .source_db_snapshot_identifier(&source.arn)
                    .target_db_snapshot_identifier(id)
                    .set_tags(Some(rds::tags(&self.tags)))
                    .set_kms_key_id(self.copy_kms_key_id.clone())
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "copying RDS snapshot {id} from {region} to {dest}: {} (check the role's rds:CopyDBSnapshot permission in {dest}; encrypted snapshots need copy_kms_key_id)",
                            describe_error(&e)
                        )
                    })?;
                done.push(format!("copied it to {dest}"));
            }
            if work.wait_copy {
                rds::wait_available(&dest_client, id, timeout, dest).await?;
            }
            if let Some(s) = rds::describe(&dest_client, id).await? {
                arns.push(s.arn);
            }
        }
        if let Some(s) = rds::describe(&rds_client, id).await? {
            arns.insert(0, s.arn);
        }
        if done.is_empty() {
            done.push(format!("snapshot {id} is available"));
        }
        Ok(Outcome {
            changed: true,
            diff: None,
            message: Some(done.join("; ")),
            // `register` gets the ARNs, source first, one per line.
            output: Some(CommandOutput {
                stdout: arns.join("\n"),
                stderr: String::new(),
                rc: 0,
            }),
        })
    }
}

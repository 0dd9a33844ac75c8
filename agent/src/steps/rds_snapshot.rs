//! `rds_snapshot`: a manual snapshot of an RDS DB instance, tagged, waited for, optionally
//! copied to another region.
//!
//! ```toml
//! rds_snapshot = { db_instance = "platform", snapshot_id = "bosun-{db}-{YYYY}{MM}{DD}",
//!                  tags = { env = "prod" }, timeout = "1h", copy_to_region = "eu-west-1" }
//! ```
//! `snapshot_id` takes the placeholders of backup keys (`{db}` is the instance, `{YYYY}`,
//! `{MM}`, `{DD}`, `{hh}`, `{mm}`, `{ss}`, `{timestamp}`, UTC) after Jinja, is lower-cased (RDS
//! stores identifiers so) and must satisfy RDS's naming rules. Every snapshot gets the given
//! tags plus `bosun:managed = true`, which is how `backup_prune` tells bosun's snapshots from
//! others. The step waits (the SDK's `DBSnapshotAvailable` waiter) until the snapshot is
//! `available`, within `timeout`; with `copy_to_region` the destination region's RDS copies it
//! (same id, same tags) and the step waits there too.
//!
//! Idempotent: a snapshot with that id already `available` (and its copy, if asked for) is
//! `ok`; one still `creating` is waited for. A snapshot with that id of *another* instance is
//! an error, never silently accepted. `--check` says what would be created or copied.
//!
//! Encrypted snapshots copied across regions need `copy_kms_key_id` (a key of the destination
//! region); RDS also wants a pre-signed URL for those, which this step does not generate yet.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::k3s::parse_timeout;
use super::{ActionArgs, Check, CommandOutput, Outcome, StepContext, StepKind};
use crate::aws::{Aws, AwsTarget, describe_error};
use crate::backup::key::render_key;
use crate::backup::rds::{self, Snapshot};
use crate::jinja::is_templated;

fn default_timeout() -> String {
    "1h".to_string()
}

/// Arguments of `rds_snapshot`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RdsSnapshotArgs {
    /// The DB instance identifier to snapshot.
    pub db_instance: String,
    /// Snapshot identifier; placeholders `{db}` (the instance), `{YYYY}`, `{MM}`, `{DD}`,
    /// `{hh}`, `{mm}`, `{ss}`, `{timestamp}` (UTC). Lower-cased. A daily id
    /// (`bosun-{db}-{YYYY}{MM}{DD}`) makes a second run on the same day `ok`.
    pub snapshot_id: String,
    /// Tags for the snapshot (and its copy); `bosun:managed = "true"` is always added.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Longest wait for the snapshot (and, separately, its copy) to become available.
    #[serde(default = "default_timeout")]
    pub timeout: String,
    /// Copy the snapshot to this region too (same id, same tags). Empty: no copy, so a
    /// playbook variable can switch it off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_to_region: Option<String>,
    /// KMS key (in the destination region) for the copy of an encrypted snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_kms_key_id: Option<String>,
    /// AWS region of the instance (default: from the environment, profile or instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// RDS endpoint instead of AWS's (default: `AWS_ENDPOINT_URL` if set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
}

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

impl RdsSnapshotArgs {
    /// The rendered, lower-cased, checked snapshot id.
    fn snapshot_id(&self) -> anyhow::Result<String> {
        let id = render_key(&self.snapshot_id, &self.db_instance, Utc::now())
            .map_err(|e| anyhow::anyhow!("`snapshot_id`: {e}"))?
            .to_ascii_lowercase();
        if let Some(p) = rds::snapshot_id_problem(&id) {
            anyhow::bail!("`snapshot_id`: {p}");
        }
        Ok(id)
    }

    fn timeout(&self) -> anyhow::Result<Duration> {
        parse_timeout("timeout", &self.timeout).map_err(anyhow::Error::msg)
    }

    /// The region to copy to, if any.
    fn copy_region(&self) -> Option<&str> {
        self.copy_to_region
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
    }

    async fn aws(&self) -> anyhow::Result<Aws> {
        Aws::connect(&AwsTarget {
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
        })
        .await
    }

    /// The snapshot `id`, checked to be of our instance.
    async fn existing(
        &self,
        rds_client: &aws_sdk_rds::Client,
        id: &str,
        region: &str,
    ) -> anyhow::Result<Option<Snapshot>> {
        let found = rds::describe(rds_client, id).await?;
        if let Some(s) = &found
            && !s.instance.eq_ignore_ascii_case(&self.db_instance)
        {
            anyhow::bail!(
                "RDS snapshot {id} in {region} already exists but is of instance {:?}, not {:?}: choose another snapshot_id",
                s.instance,
                self.db_instance
            );
        }
        Ok(found)
    }
}

impl ActionArgs for RdsSnapshotArgs {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.db_instance.is_empty() {
            problems.push("`db_instance` is empty".into());
        }
        if !is_templated(&self.snapshot_id) && !is_templated(&self.db_instance) {
            problems.extend(self.snapshot_id().err().map(|e| e.to_string()));
        }
        if !is_templated(&self.timeout) {
            problems.extend(parse_timeout("timeout", &self.timeout).err());
        }
        problems
    }
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
        let aws = self.aws().await?;
        let region = aws.region().unwrap_or_default().to_string();
        let source = self.existing(&aws.rds(), &id, &region).await?;
        match &source {
            Some(s) => usable(s, &region)?,
            // A typo in the instance name shows under --check, not only at the real run.
            None => rds::instance_exists(&aws.rds(), &self.db_instance, &region).await?,
        }
        let copy = match self.copy_region() {
            Some(dest) => {
                let found = self.existing(&aws.rds_in(dest), &id, dest).await?;
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
        let aws = self.aws().await?;
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

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

use super::ActionArgs;
use crate::backup::Number;
use crate::backup::retention::Policy;

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
    /// The retention policy, once the counts are rendered; the error names the argument.
    pub fn policy(&self) -> anyhow::Result<Policy> {
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

//! RDS manual snapshots: the tag that marks bosun's own, listing and waiting. The rules of
//! snapshot identifiers are the model's ([`bosun_model::backup::rds`]).
//!
//! Shared by `rds_snapshot` (create, copy) and `backup_prune` (retention over the snapshots of
//! one DB instance). Only snapshots carrying [`MANAGED_TAG`] = `true` are bosun's: pruning never
//! touches a snapshot someone took by hand or another tool made.

use std::time::Duration;

use anyhow::Context;
use aws_sdk_rds::client::Waiters;
use aws_sdk_rds::types::{DbSnapshot, Tag};
use chrono::{DateTime, Utc};

use super::retention::Candidate;
use crate::aws::describe_error;

/// The tag key `rds_snapshot` puts on every snapshot it makes (value `true`).
pub const MANAGED_TAG: &str = "bosun:managed";

/// One DB snapshot, as bosun looks at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Identifier (lower case, as RDS stores it).
    pub id: String,
    /// ARN (what a copy to another region names as its source).
    pub arn: String,
    /// The DB instance it was taken of.
    pub instance: String,
    /// `creating`, `available`, `failed`, ...
    pub status: String,
    /// When RDS took it (`None` while RDS has not said).
    pub created: Option<DateTime<Utc>>,
    /// Carries [`MANAGED_TAG`] = `true`.
    pub managed: bool,
}

impl From<&DbSnapshot> for Snapshot {
    fn from(s: &DbSnapshot) -> Self {
        let text = |v: Option<&str>| v.unwrap_or_default().to_string();
        Snapshot {
            id: text(s.db_snapshot_identifier()),
            arn: text(s.db_snapshot_arn()),
            instance: text(s.db_instance_identifier()),
            status: text(s.status()),
            created: s
                .snapshot_create_time()
                .and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos())),
            managed: s
                .tag_list()
                .iter()
                .any(|t| t.key() == Some(MANAGED_TAG) && t.value() == Some("true")),
        }
    }
}

/// Tags for a new snapshot: the given ones (sorted by key) and [`MANAGED_TAG`].
pub fn tags(given: &std::collections::BTreeMap<String, String>) -> Vec<Tag> {
    given
        .iter()
        .filter(|(k, _)| k.as_str() != MANAGED_TAG)
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .chain(std::iter::once(
            Tag::builder().key(MANAGED_TAG).value("true").build(),
        ))
        .collect()
}

/// The snapshot called `id`, if there is one.
pub async fn describe(rds: &aws_sdk_rds::Client, id: &str) -> anyhow::Result<Option<Snapshot>> {
    match rds
        .describe_db_snapshots()
        .db_snapshot_identifier(id)
        .send()
        .await
    {
        Ok(out) => Ok(out.db_snapshots().first().map(Snapshot::from)),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_db_snapshot_not_found_fault()) =>
        {
            Ok(None)
        }
        Err(e) => anyhow::bail!(
            "looking up RDS snapshot {id}: {} (check the region and the role's rds:DescribeDBSnapshots permission)",
            describe_error(&e)
        ),
    }
}

/// Fails, saying so, when DB instance `instance` does not exist in the client's region.
pub async fn instance_exists(
    rds: &aws_sdk_rds::Client,
    instance: &str,
    region: &str,
) -> anyhow::Result<()> {
    match rds
        .describe_db_instances()
        .db_instance_identifier(instance)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_db_instance_not_found_fault()) =>
        {
            anyhow::bail!(
                "there is no RDS instance {instance:?} in {region}: check db_instance and region"
            )
        }
        Err(e) => anyhow::bail!(
            "looking up RDS instance {instance}: {} (check the region and the role's rds:DescribeDBInstances permission)",
            describe_error(&e)
        ),
    }
}

/// Every manual snapshot of DB instance `instance`, in whatever order RDS lists them.
pub async fn manual_snapshots(
    rds: &aws_sdk_rds::Client,
    instance: &str,
) -> anyhow::Result<Vec<Snapshot>> {
    let mut out = Vec::new();
    let mut pages = rds
        .describe_db_snapshots()
        .db_instance_identifier(instance)
        .snapshot_type("manual")
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            anyhow::anyhow!(
                "listing the manual snapshots of RDS instance {instance}: {}",
                describe_error(&e)
            )
        })?;
        out.extend(page.db_snapshots().iter().map(Snapshot::from));
    }
    // DescribeDBSnapshots filters by instance already; a second look costs nothing and keeps
    // a lenient endpoint from handing another instance's snapshots to the pruner.
    out.retain(|s| s.instance == instance);
    Ok(out)
}

/// Waits until snapshot `id` is `available`, polling with the SDK's waiter (30 s apart at
/// first, backing off); fails at once when it becomes `failed` or is deleted, and after
/// `timeout` otherwise.
pub async fn wait_available(
    rds: &aws_sdk_rds::Client,
    id: &str,
    timeout: Duration,
    region: &str,
) -> anyhow::Result<()> {
    rds.wait_until_db_snapshot_available()
        .db_snapshot_identifier(id)
        .wait(timeout)
        .await
        .map(|_| ())
        .with_context(|| {
            format!(
                "RDS snapshot {id} in {region} did not become available within {}",
                humantime::format_duration(timeout)
            )
        })
}

/// The snapshots retention may consider: bosun's own (tagged) and `available`. Every one counts
/// as "verified", so the policy's "always the newest verified" keeps the newest available
/// snapshot whatever the counts say. Snapshots without a creation time are left out.
pub fn candidates(snapshots: &[Snapshot]) -> Vec<Candidate> {
    snapshots
        .iter()
        .filter(|s| s.managed && s.status == "available")
        .filter_map(|s| {
            Some(Candidate {
                id: s.id.clone(),
                time: s.created?,
                verified: true,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_managed_tag_is_always_added_once() {
        let mut given = std::collections::BTreeMap::new();
        given.insert("env".to_string(), "prod".to_string());
        given.insert(MANAGED_TAG.to_string(), "false".to_string());
        let t = tags(&given);
        let pairs: Vec<(&str, &str)> = t
            .iter()
            .map(|t| (t.key().unwrap(), t.value().unwrap()))
            .collect();
        assert_eq!(pairs, [("env", "prod"), (MANAGED_TAG, "true")]);
    }

    #[test]
    fn candidates_are_managed_available_snapshots_all_verified() {
        let at = |d| Some(Utc.with_ymd_and_hms(2026, 1, d, 3, 0, 0).unwrap());
        let snap = |id: &str, status: &str, managed, created| Snapshot {
            id: id.into(),
            arn: format!("arn:aws:rds:us-east-1:123456789012:snapshot:{id}"),
            instance: "db".into(),
            status: status.into(),
            created,
            managed,
        };
        let all = [
            snap("mine-1", "available", true, at(1)),
            snap("mine-2", "creating", true, at(2)),
            snap("by-hand", "available", false, at(3)),
            snap("mine-3", "available", true, None),
            snap("mine-4", "available", true, at(4)),
        ];
        let ids: Vec<(String, bool)> = candidates(&all)
            .into_iter()
            .map(|c| (c.id, c.verified))
            .collect();
        assert_eq!(
            ids,
            [("mine-1".to_string(), true), ("mine-4".to_string(), true)]
        );
    }
}

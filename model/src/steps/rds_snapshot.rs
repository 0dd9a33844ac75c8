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

use super::ActionArgs;
use super::k3s::parse_timeout;
use crate::backup::key::render_key;
use crate::backup::rds::snapshot_id_problem;
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

impl RdsSnapshotArgs {
    /// The rendered, lower-cased, checked snapshot id.
    pub fn snapshot_id(&self) -> anyhow::Result<String> {
        let id = render_key(&self.snapshot_id, &self.db_instance, Utc::now())
            .map_err(|e| anyhow::anyhow!("`snapshot_id`: {e}"))?
            .to_ascii_lowercase();
        if let Some(p) = snapshot_id_problem(&id) {
            anyhow::bail!("`snapshot_id`: {p}");
        }
        Ok(id)
    }

    /// `timeout`, once rendered.
    pub fn timeout(&self) -> anyhow::Result<Duration> {
        parse_timeout("timeout", &self.timeout).map_err(anyhow::Error::msg)
    }

    /// The region to copy to, if any.
    pub fn copy_region(&self) -> Option<&str> {
        self.copy_to_region
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
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

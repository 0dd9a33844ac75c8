//! `k3s_upgrade`: the installed k3s moved to `version`, with a datastore backup first and a
//! rollback when the new version is not healthy.
//!
//! ```toml
//! k3s_upgrade = { version = "v1.31.4+k3s1" }
//! k3s_upgrade = { version = "{{ version }}", step_through_minors = true, health_timeout = "10m" }
//! ```
//!
//! Kubernetes supports upgrading one minor version at a time. A `version` more than one minor
//! ahead of the installed one is refused, unless `step_through_minors` is set: then the step goes
//! through the latest patch of each minor in between (from the update server's channel list,
//! `channel_url`, whose per-minor channels `v1.30`, `v1.31`, ... name their latest patch) and
//! then to `version`, each hop a full upgrade as below. Downgrades are refused: restore a backup.
//!
//! One hop, from the installed `A` to `B`:
//! 1. Download `B` and its checksum list from `mirror` into a staging file beside the binary and
//!    check its digest and the version it reports. A failure here changes nothing (k3s keeps
//!    running `A`).
//! 2. Stop k3s and back up into `<state dir>/k3s-backups/<UTC time>-<A>/`: the binary (`k3s`),
//!    the datastore directory `<data_dir>/server/db` (SQLite by default; copied while k3s is
//!    stopped, so it is consistent) and the token `<data_dir>/server/token`.
//! 3. Swap the binary (atomic rename) and start k3s.
//! 4. Health check, polled until `health_timeout`: the unit is active, `/readyz` answers `ok`,
//!    this host's node is Ready and runs kubelet `B`, and every kube-system pod that should be
//!    serving is Ready.
//! 5. When it fails: stop k3s, restore the binary, the datastore and the token from the backup,
//!    start k3s and check `A`'s health the same way; the step fails with "rolled back to A"
//!    (or says the rollback did not bring `A` back, and where the backup is).
//!
//! The newest `keep_backups` backups are kept (default 3); older ones are removed after a
//! successful upgrade. The step is `ok` when k3s already runs `version`.
//!
//! An agent (the installation has `k3s-agent.service`, not `k3s.service`) has no datastore: its
//! backup holds the binary only, and its health check is its unit active and its own node Ready
//! at `B`, read with the kubelet's credentials (`<data_dir>/agent/kubelet.kubeconfig`; an agent
//! holds no admin kubeconfig). `bosun run k3s-upgrade` on an inventory also waits for the node
//! from the server (`kube_node` `state = "ready"`) before it uncordons it.
//!
//! Do not give this step a `timeout` shorter than two health checks: cancelling it between
//! the swap and the health check leaves the new binary in place with its backup beside it.

use std::path::Path;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ActionArgs;
use super::k3s::{
    self, K3sPaths, K3sRelease, Toggle, default_bin_dir, default_channel_url, default_config_dir,
    default_data_dir, default_mirror, default_unit_dir,
};
use crate::jinja::is_templated;

/// Default of `health_timeout`.
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(300);

fn default_health_timeout() -> String {
    humantime::format_duration(DEFAULT_HEALTH_TIMEOUT).to_string()
}
fn default_keep_backups() -> u32 {
    3
}

/// Arguments of `k3s_upgrade`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct K3sUpgradeArgs {
    /// The release to run, e.g. "v1.31.4+k3s1".
    pub version: String,
    /// When `version` is more than one minor ahead, go through the latest patch of each minor
    /// in between instead of refusing (default false).
    #[serde(default)]
    pub step_through_minors: Toggle,
    /// Base URL of the releases: files are at `<mirror>/<version>/<file>`.
    #[serde(default = "default_mirror")]
    pub mirror: String,
    /// The update server's channel list (JSON), read only when stepping through minors.
    #[serde(default = "default_channel_url")]
    pub channel_url: String,
    /// Release architecture: "amd64", "arm64" or "arm" (default: this machine's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Directory of the binary.
    #[serde(default = "default_bin_dir")]
    pub bin_dir: String,
    /// Directory of the kubeconfig `k3s.yaml` the health check uses.
    #[serde(default = "default_config_dir")]
    pub config_dir: String,
    /// k3s's data directory (the datastore is `server/db`, the token `server/token`).
    #[serde(default = "default_data_dir")]
    pub data_dir: String,
    /// How long the new version has to become healthy (and, on rollback, the old one): a
    /// duration such as "90s" (default "5m").
    #[serde(default = "default_health_timeout")]
    pub health_timeout: String,
    /// How many datastore backups to keep in the state dir (at least the newest is kept).
    #[serde(default = "default_keep_backups")]
    pub keep_backups: u32,
}

impl ActionArgs for K3sUpgradeArgs {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !is_templated(&self.version) {
            problems.extend(K3sRelease::parse(&self.version).err());
        }
        problems.extend(self.step_through_minors.problem("step_through_minors"));
        if !is_templated(&self.health_timeout) {
            problems.extend(k3s::parse_timeout("health_timeout", &self.health_timeout).err());
        }
        if let Some(a) = self.arch.as_deref().filter(|a| !is_templated(a)) {
            problems.extend(k3s::arch_files(Some(a)).err());
        }
        for (name, dir) in [
            ("bin_dir", &self.bin_dir),
            ("config_dir", &self.config_dir),
            ("data_dir", &self.data_dir),
        ] {
            if !is_templated(dir) && !Path::new(dir).is_absolute() {
                problems.push(format!("`{name}` must be an absolute path, got {dir:?}"));
            }
        }
        problems
    }
}

impl K3sUpgradeArgs {
    /// Where the installation lives (its unit in the default unit directory).
    pub fn paths(&self) -> K3sPaths {
        K3sPaths {
            bin_dir: self.bin_dir.clone().into(),
            config_dir: self.config_dir.clone().into(),
            unit_dir: default_unit_dir().into(),
            data_dir: self.data_dir.clone().into(),
        }
    }
}

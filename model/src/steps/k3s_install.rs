//! `k3s_install`: k3s installed, configured, running as `k3s.service`, its node Ready.
//!
//! ```toml
//! k3s_install = { version = "v1.31.4+k3s1" }
//! k3s_install = { channel = "stable", config = { node-label = ["role=platform"] } }
//! k3s_install = { version = "{{ k3s_version }}", mirror = "https://mirror.internal/k3s", env = { K3S_TOKEN = "{{ token }}" } }
//! ```
//!
//! When no k3s binary is installed, the release (`version`, or the latest of `channel`, default
//! `stable`, from the update server's channel list) is downloaded with its `sha256sum-<arch>.txt`
//! from `mirror` (default: GitHub's release downloads); a digest mismatch installs nothing and
//! fails the step before any file is touched. The binary goes to `<bin_dir>/k3s` by an atomic
//! rename, with `kubectl`, `crictl` and `ctr` links beside it (unless something else already
//! has those names). Then:
//! - `<config_dir>/config.yaml` (0600): the `config` table over the small-host defaults
//!   ([`small_host_defaults`]: traefik, servicelb and metrics-server disabled; kubelet
//!   reservations and eviction thresholds for a 1 GiB machine). A key in `config` replaces the
//!   default of the same key, except the `*-arg` lists (`kubelet-arg`, ...), which are merged
//!   flag by flag: `kubelet-arg = ["max-pods=50"]` adds a flag and keeps the defaults, and
//!   `kubelet-arg = ["eviction-hard=memory.available<200Mi"]` replaces that one flag. Set
//!   `small_host_defaults = false` to start from nothing.
//! - `<unit_dir>/k3s.service` (Type=notify, as the official installer writes it) and its env
//!   file `k3s.service.env` (0600, from `env`; its content is never shown in diffs). Put
//!   secrets there (`env = { K3S_TOKEN = "..." }`), not in `config`: config.yaml is diffed.
//! - daemon-reload when the unit changed, enable, start (or restart when it was running and
//!   anything it reads changed), then wait up to `ready_timeout` until the unit is active and
//!   the node is Ready at the installed version.
//!
//! Nothing changes, and nothing is restarted, when the binary, the files and the links are as
//! wanted and the unit is enabled and active.
//!
//! **Versions.** This kind installs k3s where there is none; it never changes the version of an
//! installed k3s. When the installed version differs from `version`, the step stays `ok` and
//! says so: version changes go through `k3s_upgrade` (datastore backup, one minor at a time,
//! health check, rollback), so that re-running a bootstrap playbook after an upgrade neither
//! downgrades the cluster nor upgrades it without a backup.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ActionArgs;
use super::k3s::{
    self, K3sPaths, K3sRelease, default_bin_dir, default_channel_url, default_config_dir,
    default_data_dir, default_mirror, default_unit_dir,
};
use crate::jinja::is_templated;

/// Default of `ready_timeout`: k3s's first start on a t2.micro takes a minute or two.
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(300);

fn yes() -> bool {
    true
}
fn default_ready_timeout() -> String {
    humantime::format_duration(DEFAULT_READY_TIMEOUT).to_string()
}

/// Arguments of `k3s_install`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct K3sInstallArgs {
    /// The release to install, e.g. "v1.31.4+k3s1". At most one of `version` and `channel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// A release channel ("stable", "latest", "v1.31"), resolved through `channel_url` when k3s
    /// is not installed yet (default: "stable" when `version` is not given either).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Base URL of the releases: files are at `<mirror>/<version>/<file>`.
    #[serde(default = "default_mirror")]
    pub mirror: String,
    /// The update server's channel list (JSON).
    #[serde(default = "default_channel_url")]
    pub channel_url: String,
    /// Release architecture: "amd64", "arm64" or "arm" (default: this machine's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// k3s configuration (the keys of `config.yaml`, e.g. `node-label`, `tls-san`), over the
    /// small-host defaults. `*-arg` lists are merged with the defaults flag by flag.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, Value>,
    /// Start from the small-host defaults (traefik, servicelb, metrics-server off; kubelet
    /// reservations and eviction thresholds for 1 GiB). Default true.
    #[serde(default = "yes")]
    pub small_host_defaults: bool,
    /// Environment of the k3s service (`K3S_TOKEN`, proxies), written to
    /// `k3s.service.env` with mode 0600.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Link `kubectl`, `crictl` and `ctr` to k3s in `bin_dir` (default true).
    #[serde(default = "yes")]
    pub symlinks: bool,
    /// Directory of the binary.
    #[serde(default = "default_bin_dir")]
    pub bin_dir: String,
    /// Directory of `config.yaml` and the kubeconfig `k3s.yaml`.
    #[serde(default = "default_config_dir")]
    pub config_dir: String,
    /// Directory of `k3s.service` and its env file.
    #[serde(default = "default_unit_dir")]
    pub unit_dir: String,
    /// k3s's data directory (written to `config.yaml` as `data-dir` when not the default).
    #[serde(default = "default_data_dir")]
    pub data_dir: String,
    /// How long to wait for the node to be Ready after a start: a duration such as "90s"
    /// (default "5m").
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout: String,
}

impl K3sInstallArgs {
    /// Where this installation lives.
    pub fn paths(&self) -> K3sPaths {
        K3sPaths {
            bin_dir: self.bin_dir.clone().into(),
            config_dir: self.config_dir.clone().into(),
            unit_dir: self.unit_dir.clone().into(),
            data_dir: self.data_dir.clone().into(),
        }
    }

    /// The pinned `version`, parsed; `None` when the step names a channel (or nothing).
    pub fn pinned(&self) -> anyhow::Result<Option<K3sRelease>> {
        self.version
            .as_deref()
            .map(K3sRelease::parse)
            .transpose()
            .map_err(anyhow::Error::msg)
    }
}

impl ActionArgs for K3sInstallArgs {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.version.is_some() && self.channel.is_some() {
            problems.push("give `version` (a pinned release) or `channel`, not both".into());
        }
        if let Some(v) = self.version.as_deref().filter(|v| !is_templated(v)) {
            problems.extend(K3sRelease::parse(v).err());
        }
        if let Some(a) = self.arch.as_deref().filter(|a| !is_templated(a)) {
            problems.extend(k3s::arch_files(Some(a)).err());
        }
        if !is_templated(&self.ready_timeout) {
            problems.extend(k3s::parse_timeout("ready_timeout", &self.ready_timeout).err());
        }
        problems.extend(config_problems(&self.config));
        problems.extend(env_problems(&self.env));
        for (name, dir) in [
            ("bin_dir", &self.bin_dir),
            ("config_dir", &self.config_dir),
            ("unit_dir", &self.unit_dir),
            ("data_dir", &self.data_dir),
        ] {
            if !is_templated(dir) && !Path::new(dir).is_absolute() {
                problems.push(format!("`{name}` must be an absolute path, got {dir:?}"));
            }
        }
        problems
    }
}

// ---------------------------------------------------------------------------------------------
// The config table and the environment
// ---------------------------------------------------------------------------------------------

/// The configuration for a small (1 GiB) host. Bundled add-ons a single small node does not
/// need are off (an ingress, a load balancer and metrics cost ~150 MiB between them); the
/// kubelet keeps memory back for the system and for Kubernetes itself and evicts pods before
/// the kernel's OOM killer has to act.
pub fn small_host_defaults() -> BTreeMap<String, Value> {
    let mut d = BTreeMap::new();
    d.insert(
        "disable".into(),
        serde_json::json!(["traefik", "servicelb", "metrics-server"]),
    );
    d.insert(
        "kubelet-arg".into(),
        serde_json::json!([
            "kube-reserved=cpu=100m,memory=128Mi,ephemeral-storage=512Mi",
            "system-reserved=cpu=100m,memory=128Mi,ephemeral-storage=512Mi",
            "eviction-hard=memory.available<100Mi,nodefs.available<10%,imagefs.available<15%",
            "image-gc-high-threshold=80",
            "image-gc-low-threshold=60",
        ]),
    );
    d.insert("write-kubeconfig-mode".into(), Value::String("0600".into()));
    d
}

/// Keys of the config table that the step's own arguments decide.
const RESERVED_KEYS: &[(&str, &str)] = &[
    ("data-dir", "set the step's `data_dir` instead"),
    (
        "write-kubeconfig",
        "bosun reads the kubeconfig from `<config_dir>/k3s.yaml`; set `config_dir` instead",
    ),
];

fn config_problems(config: &BTreeMap<String, Value>) -> Vec<String> {
    let mut problems = Vec::new();
    for key in config.keys() {
        if let Some((_, help)) = RESERVED_KEYS.iter().find(|(k, _)| k == key) {
            problems.push(format!(
                "config key `{key}` is managed by this step: {help}"
            ));
        } else if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            problems.push(format!(
                "config key {key:?} is not a k3s option name (lowercase, digits and `-`, as \
                 in `node-label`)"
            ));
        }
    }
    problems
}

fn env_problems(env: &BTreeMap<String, String>) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, value) in env {
        let mut chars = key.chars();
        let ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            problems.push(format!("env name {key:?} is not a valid variable name"));
        }
        if value.contains(['\n', '\r', '\0']) {
            problems.push(format!("env {key}: a value must be one line"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_and_malformed_keys_are_refused() {
        let mut config = BTreeMap::new();
        config.insert("data-dir".into(), Value::String("/x".into()));
        config.insert("Node_Label".into(), Value::String("x".into()));
        let problems = config_problems(&config);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("data_dir") || problems[1].contains("data_dir"));
        let mut env = BTreeMap::new();
        env.insert("K3S_TOKEN".to_string(), "a\nb".to_string());
        env.insert("1BAD".to_string(), "x".to_string());
        assert_eq!(env_problems(&env).len(), 2);
    }
}

//! `docker_install`: Docker Engine is installed, configured for a small host, enabled, running
//! and answering.
//!
//! ```toml
//! docker_install = {}                                   # Debian's docker.io, defaults
//! docker_install = { source = "docker" }                # Docker's own apt repository
//! [step.docker_install.daemon]                          # merged over the defaults
//! log-opts = { max-size = "20m", max-file = "5" }
//! ```
//! Packages: on Debian and Ubuntu `docker.io` (`source = "distro"`, the default) or
//! `docker-ce`, `docker-ce-cli` and `containerd.io` from Docker's apt repository
//! (`source = "docker"`: its key is downloaded and checked against a pinned SHA-256, then a
//! deb822 source is written); on Amazon Linux 2023 `dnf install docker` (Docker's repository
//! has no packages for it).
//!
//! `/etc/docker/daemon.json` is the step's `daemon` table merged over [`DEFAULT_DAEMON`] key by
//! key (a key given replaces the default of that name whole): the `local` log driver with a
//! size limit, so container logs cannot fill a small disk, and `live-restore`, so restarting
//! dockerd (an upgrade, a config change) leaves containers running. It is written *before*
//! the package is installed, so the daemon's first start already uses it.
//!
//! Docker and k3s on one host: when dockerd turns on IP forwarding itself it also sets the
//! iptables FORWARD policy to DROP, which cuts k3s pods off from each other and the outside.
//! It does so only when it finds `net.ipv4.ip_forward` off (that is Docker's code in every
//! version; Docker 28 adds `ip-forward-no-drop` for the same purpose). So, unless the daemon
//! config turns Docker's iptables or IP forwarding management off (`"iptables": false` or
//! `"ip-forward": false`: then Docker touches neither), the step turns forwarding on before
//! Docker starts, now and at boot (`/etc/sysctl.d/60-bosun-ip-forward.conf`; systemd-sysctl
//! runs before docker.service). k3s needs forwarding on anyway. A host where Docker already set
//! DROP before bosun ran keeps it until the next boot, or `iptables -P FORWARD ACCEPT`.
//!
//! Then docker.service is enabled and started (restarted when daemon.json changed under a
//! running daemon) and the step waits, up to `wait_timeout`, until `docker info` answers.
//! A second run finds all of it in place, runs no package manager and changes nothing.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ActionArgs;
use super::package::{DEFAULT_UPDATE_CACHE_MAX_AGE, Manager};
use crate::jinja::is_templated;

/// The daemon settings for a small host, under the step's `daemon` table.
pub const DEFAULT_DAEMON: &str = r#"{
  "log-driver": "local",
  "log-opts": { "max-size": "10m", "max-file": "3" },
  "live-restore": true
}"#;

/// Arguments of `docker_install`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DockerInstallArgs {
    /// Where Docker comes from on Debian and Ubuntu: `distro` (`docker.io`, default) or
    /// `docker` (Docker's apt repository). Amazon Linux: `distro` only.
    #[serde(default)]
    pub source: DockerSource,
    /// daemon.json settings, merged over the small-host defaults (a key given replaces the
    /// default of that name).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub daemon: Map<String, Value>,
    /// How long to wait for `docker info` to answer after a start (default "60s").
    #[serde(default = "default_wait")]
    pub wait_timeout: String,
    /// apt only: refresh the package lists before installing when older than this (default "1h").
    #[serde(default = "default_max_age")]
    pub update_cache_max_age: String,
    /// `source = "docker"`: the repository's base URL (default https://download.docker.com/linux;
    /// the OS id is appended), e.g. a mirror.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_url: Option<String>,
    /// `source = "docker"`: SHA-256 of the repository key (default: Docker's current key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_key_sha256: Option<String>,
    /// `apt` or `dnf`; default: chosen from the fact `os_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<Manager>,
}

fn default_wait() -> String {
    "60s".to_string()
}

fn default_max_age() -> String {
    DEFAULT_UPDATE_CACHE_MAX_AGE.to_string()
}

/// Where Docker's packages come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DockerSource {
    /// The distribution's own package (`docker.io` on Debian/Ubuntu, `docker` on Amazon Linux).
    #[default]
    Distro,
    /// Docker's apt repository (`docker-ce`).
    Docker,
}

impl ActionArgs for DockerInstallArgs {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, value) in [
            ("wait_timeout", &self.wait_timeout),
            ("update_cache_max_age", &self.update_cache_max_age),
        ] {
            if !is_templated(value) && humantime::parse_duration(value.trim()).is_err() {
                problems.push(format!(
                    "{name} {value:?} is not a duration such as \"60s\" or \"2m\""
                ));
            }
        }
        if let Some(sha) = self.repo_key_sha256.as_deref().filter(|s| !is_templated(s))
            && (sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()))
        {
            problems.push(format!("repo_key_sha256 {sha:?} is not 64 hex digits"));
        }
        if self.source == DockerSource::Distro
            && (self.repo_url.is_some() || self.repo_key_sha256.is_some())
        {
            problems
                .push("`repo_url` and `repo_key_sha256` are for source = \"docker\"".to_string());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validation() {
        let args: DockerInstallArgs = serde_json::from_value(json!({
            "wait_timeout": "soon",
            "repo_key_sha256": "abc"
        }))
        .unwrap();
        let p = args.validate().join("\n");
        assert!(p.contains("\"soon\""), "{p}");
        assert!(p.contains("64 hex"), "{p}");
        assert!(p.contains("source = \"docker\""), "{p}");
    }
}

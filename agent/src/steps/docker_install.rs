//! Runs `docker_install` on the host; its arguments and their validation are the model's
//! (`bosun_model::steps::docker_install`).

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use bosun_model::steps::docker_install::{DEFAULT_DAEMON, DockerInstallArgs, DockerSource};
use bosun_model::steps::package::{Manager, parse_max_age};
use serde_json::{Map, Value};

use super::content::unified_diff;
use super::{Check, Outcome, StepContext, StepKind};
use crate::host::fs::{self as host_fs, Attrs, read_if_exists, write_atomic};
use crate::host::packages::{self, InstallOptions, Verb};
use crate::host::{download, process, sysctl, systemd};

/// Where dockerd reads its settings.
pub(crate) const DAEMON_JSON: &str = "/etc/docker/daemon.json";
/// Keeps IPv4 forwarding on at boot (see `bosun_model::steps::docker_install`).
pub(crate) const IP_FORWARD_SYSCTL_FILE: &str = "/etc/sysctl.d/60-bosun-ip-forward.conf";
/// The kernel setting Docker needs for published ports (see `needs_ip_forward`).
const IP_FORWARD: &str = "net.ipv4.ip_forward";
const UNIT: &str = "docker.service";
/// Docker's apt repository (the OS id is appended: `/debian`, `/ubuntu`).
pub(crate) const DOCKER_REPO_URL: &str = "https://download.docker.com/linux";
/// SHA-256 of Docker's repository signing key as served at `{repo_url}/{debian,ubuntu}/gpg`
/// (fingerprint 9DC8 5822 9FC7 DD38 854A E2D8 8D81 803C 0EBF CD88).
pub(crate) const DOCKER_KEY_SHA256: &str =
    "1500c1f56fa9e26b9b8f42452a553675796ade0807cdce11975eb98170b3a570";
const KEYRING: &str = "/etc/apt/keyrings/docker.asc";
const SOURCES: &str = "/etc/apt/sources.list.d/docker.sources";

/// The packages for a source on a manager.
pub(crate) fn packages_for(manager: Manager, source: DockerSource) -> Result<Vec<String>, String> {
    let list: &[&str] = match (manager, source) {
        (Manager::Apt, DockerSource::Distro) => &["docker.io"],
        (Manager::Apt, DockerSource::Docker) => &["docker-ce", "docker-ce-cli", "containerd.io"],
        (Manager::Dnf, DockerSource::Distro) => &["docker"],
        (Manager::Dnf, DockerSource::Docker) => {
            return Err(
                "Docker's repository has no packages for Amazon Linux: use source = \"distro\""
                    .to_string(),
            );
        }
    };
    Ok(list.iter().map(|s| s.to_string()).collect())
}

/// daemon.json content: `overrides` merged over [`DEFAULT_DAEMON`], pretty-printed, keys sorted
/// (serde_json's map), with a final newline.
pub(crate) fn daemon_json(overrides: &Map<String, Value>) -> String {
    let mut config: Map<String, Value> = serde_json::from_str(DEFAULT_DAEMON).unwrap_or_default();
    for (k, v) in overrides {
        config.insert(k.clone(), v.clone());
    }
    let mut text =
        serde_json::to_string_pretty(&Value::Object(config)).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    text
}

/// Whether the step must turn IPv4 forwarding on before Docker starts: only when Docker
/// manages both iptables and forwarding (the defaults), i.e. when it would set FORWARD DROP.
pub(crate) fn needs_ip_forward(overrides: &Map<String, Value>) -> bool {
    let off = |key: &str| overrides.get(key) == Some(&Value::Bool(false));
    !off("iptables") && !off("ip-forward")
}

/// The deb822 source for Docker's repository.
pub(crate) fn docker_sources(repo: &str, codename: &str, arch: &str) -> String {
    format!(
        "# Written by bosun (docker_install, source = \"docker\").\nTypes: deb\nURIs: {repo}\nSuites: {codename}\nComponents: stable\nArchitectures: {arch}\nSigned-By: {KEYRING}\n"
    )
}

/// What `apply` has to do.
#[derive(Debug, Default)]
pub struct DockerChange {
    manager: Option<Manager>,
    /// (url, sha256) of the repository key to fetch.
    repo_key: Option<(String, String)>,
    /// New content of the repository's sources file.
    repo_sources: Option<String>,
    /// New daemon.json.
    daemon_json: Option<String>,
    /// New content of the forwarding sysctl file.
    ip_forward_file: Option<String>,
    /// `net.ipv4.ip_forward` must be turned on now.
    ip_forward_now: bool,
    /// Packages to install.
    install: Vec<String>,
    /// apt lists need a refresh first.
    refresh: bool,
    /// docker.service must be enabled.
    enable: bool,
    /// docker.service must be started (it is not running).
    start: bool,
    /// docker.service runs with the old daemon.json: restart it.
    restart: bool,
}

impl DockerChange {
    fn is_empty(&self) -> bool {
        self.repo_key.is_none()
            && self.repo_sources.is_none()
            && self.daemon_json.is_none()
            && self.ip_forward_file.is_none()
            && !self.ip_forward_now
            && self.install.is_empty()
            && !self.enable
            && !self.start
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.repo_key.is_some() || self.repo_sources.is_some() {
            parts.push("add Docker's apt repository".to_string());
        }
        if self.daemon_json.is_some() {
            parts.push(format!("write {DAEMON_JSON}"));
        }
        if self.ip_forward_file.is_some() || self.ip_forward_now {
            parts.push("turn on net.ipv4.ip_forward".to_string());
        }
        if self.refresh {
            parts.push("refresh the package lists".to_string());
        }
        if !self.install.is_empty() {
            parts.push(format!("install {}", self.install.join(", ")));
        }
        if self.enable {
            parts.push(format!("enable {UNIT}"));
        }
        if self.start {
            parts.push(format!("start {UNIT}"));
        }
        if self.restart {
            parts.push(format!("restart {UNIT}"));
        }
        parts.join(", ")
    }
}

/// The package manager: `manager`, else the one of the fact `os_id`.
fn manager(args: &DockerInstallArgs, ctx: &StepContext<'_>) -> anyhow::Result<Manager> {
    if let Some(m) = args.manager {
        return Ok(m);
    }
    Manager::for_os(&os_id(ctx))
}

fn os_id(ctx: &StepContext<'_>) -> String {
    ctx.vars
        .get_attr("facts")
        .and_then(|f| f.get_attr("os_id"))
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

impl StepKind for DockerInstallArgs {
    type Change = DockerChange;

    async fn check(&self, ctx: &StepContext<'_>) -> anyhow::Result<Check<DockerChange>> {
        let manager = manager(self, ctx)?;
        let names = packages_for(manager, self.source).map_err(anyhow::Error::msg)?;
        let mut change = DockerChange {
            manager: Some(manager),
            ..DockerChange::default()
        };
        let mut diff = None;

        if self.source == DockerSource::Docker {
            let os = os_id(ctx);
            let base = self.repo_url.as_deref().unwrap_or(DOCKER_REPO_URL);
            let repo = format!("{}/{os}", base.trim_end_matches('/'));
            let sha = self
                .repo_key_sha256
                .clone()
                .unwrap_or_else(|| DOCKER_KEY_SHA256.to_string())
                .to_ascii_lowercase();
            if download::sha256_file(Path::new(KEYRING))?.as_deref() != Some(sha.as_str()) {
                change.repo_key = Some((format!("{repo}/gpg"), sha));
            }
            let sources = docker_sources(
                &repo,
                &packages::os_codename()?,
                &packages::dpkg_architecture().await?,
            );
            if read_if_exists(Path::new(SOURCES))?.as_deref() != Some(sources.as_bytes()) {
                change.repo_sources = Some(sources);
            }
        }

        let wanted = daemon_json(&self.daemon);
        let current = read_if_exists(Path::new(DAEMON_JSON))?;
        if current.as_deref() != Some(wanted.as_bytes()) {
            diff = Some(unified_diff(
                Path::new(DAEMON_JSON),
                current.as_deref(),
                wanted.as_bytes(),
            ));
            change.daemon_json = Some(wanted);
        }

        if needs_ip_forward(&self.daemon) {
            let file = "# Written by bosun (docker_install): Docker then leaves the iptables FORWARD policy alone.\nnet.ipv4.ip_forward = 1\n";
            if read_if_exists(Path::new(IP_FORWARD_SYSCTL_FILE))?.as_deref()
                != Some(file.as_bytes())
            {
                change.ip_forward_file = Some(file.to_string());
            }
            let now = sysctl::read(IP_FORWARD).unwrap_or_default();
            change.ip_forward_now = now.trim() != "1";
        }

        let installed = packages::installed(manager, &names).await?;
        change.install = names
            .iter()
            .filter(|n| installed.get(*n).is_none_or(Option::is_none))
            .cloned()
            .collect();
        if manager == Manager::Apt && (!change.install.is_empty()) {
            let max_age = parse_max_age(&self.update_cache_max_age).map_err(anyhow::Error::msg)?;
            change.refresh = change.repo_sources.is_some()
                || change.repo_key.is_some()
                || packages::apt_lists_stale(packages::apt_lists_age(SystemTime::now()), max_age);
        }

        if change.install.is_empty() {
            let enabled = systemd::enabled_state(UNIT).await?;
            change.enable = !matches!(enabled.as_str(), "enabled" | "enabled-runtime");
            let active = systemd::active_state(UNIT).await?;
            change.start = !matches!(active.as_str(), "active" | "activating" | "reloading");
            change.restart = !change.start && change.daemon_json.is_some();
        } else {
            // Not installed: the unit appears with the package.
            change.enable = true;
            change.start = true;
        }

        Ok(if change.is_empty() {
            Check::unchanged(Some(format!(
                "{} installed, {DAEMON_JSON} as wanted, {UNIT} enabled and active",
                names.join(", ")
            )))
        } else {
            let message = change.describe();
            Check::change(change, message).with_diff(diff)
        })
    }

    async fn apply(&self, _ctx: &StepContext<'_>, change: DockerChange) -> anyhow::Result<Outcome> {
        let manager = change.manager.context("no package manager chosen")?;
        let wait = humantime::parse_duration(self.wait_timeout.trim())
            .with_context(|| format!("wait_timeout {:?}", self.wait_timeout))?;
        let mut done = Vec::new();

        if let Some((url, sha)) = &change.repo_key {
            mkdir(Path::new(KEYRING).parent())?;
            let client = download::client()?;
            download::fetch_verified(&client, url, sha, Path::new(KEYRING), 0o644).await?;
            done.push("fetched Docker's repository key".to_string());
        }
        if let Some(sources) = &change.repo_sources {
            write_atomic(
                Path::new(SOURCES),
                sources.as_bytes(),
                0o644,
                &Attrs::default(),
            )?;
            done.push(format!("wrote {SOURCES}"));
        }
        if let Some(json) = &change.daemon_json {
            mkdir(Path::new(DAEMON_JSON).parent())?;
            write_atomic(
                Path::new(DAEMON_JSON),
                json.as_bytes(),
                0o644,
                &Attrs::default(),
            )?;
            done.push(format!("wrote {DAEMON_JSON}"));
        }
        if let Some(file) = &change.ip_forward_file {
            mkdir(Path::new(IP_FORWARD_SYSCTL_FILE).parent())?;
            write_atomic(
                Path::new(IP_FORWARD_SYSCTL_FILE),
                file.as_bytes(),
                0o644,
                &Attrs::default(),
            )?;
            done.push(format!("wrote {IP_FORWARD_SYSCTL_FILE}"));
        }
        if change.ip_forward_now {
            sysctl::write(IP_FORWARD, "1").with_context(|| {
                format!("turning on {} (read-only /proc/sys, in a container? set \"iptables\": false or \"ip-forward\": false in `daemon` there)", sysctl::path(IP_FORWARD).display())
            })?;
            done.push("turned on net.ipv4.ip_forward".to_string());
        }

        // Running with the old settings before this apply: a new daemon.json needs a restart.
        // A daemon started by the package's own scripts below already read the new file.
        let was_running = systemd::active_state(UNIT).await? == "active";
        if !change.install.is_empty() {
            if change.refresh {
                packages::apt_update().await?;
                done.push("refreshed the package lists".to_string());
            }
            packages::change(
                manager,
                Verb::Install,
                &change.install,
                InstallOptions::default(),
            )
            .await?;
            done.push(format!("installed {}", change.install.join(", ")));
        }

        let enabled = systemd::enabled_state(UNIT).await?;
        if !matches!(enabled.as_str(), "enabled" | "enabled-runtime") {
            unit_verb("enable").await?;
            done.push(format!("enabled {UNIT}"));
        }
        let active = systemd::active_state(UNIT).await?;
        if was_running && change.daemon_json.is_some() {
            unit_verb("restart").await?;
            done.push(format!("restarted {UNIT} (new {DAEMON_JSON})"));
        } else if active != "active" {
            unit_verb("start").await?;
            done.push(format!("started {UNIT}"));
        }

        let version = wait_for_docker(wait).await?;
        done.push(format!("docker {version} answers"));
        Ok(Outcome {
            changed: true,
            message: Some(done.join(", ")),
            ..Outcome::default()
        })
    }
}

fn mkdir(dir: Option<&Path>) -> anyhow::Result<()> {
    match dir {
        Some(d) => host_fs::create_dir_all(d).with_context(|| format!("creating {}", d.display())),
        None => Ok(()),
    }
}

async fn unit_verb(verb: &str) -> anyhow::Result<()> {
    if let Err(e) = systemd::systemctl_ok(&[verb, UNIT]).await {
        let status = systemd::status_tail(UNIT).await;
        bail!(
            "{e:#}\n{status}\n(more: journalctl -u {UNIT}; is {DAEMON_JSON} valid for this Docker version?)"
        );
    }
    Ok(())
}

/// Polls `docker info` until it answers or `timeout` passes; returns the server version.
async fn wait_for_docker(timeout: Duration) -> anyhow::Result<String> {
    let argv: Vec<String> = ["docker", "info", "--format", "{{.ServerVersion}}"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let deadline = Instant::now() + timeout;
    loop {
        let out = process::run(&argv, None, &Default::default())
            .await
            .context("running `docker info`")?;
        if out.rc == 0 && !out.stdout.trim().is_empty() {
            return Ok(out.stdout.trim().to_string());
        }
        if Instant::now() >= deadline {
            let status = systemd::status_tail(UNIT).await;
            bail!(
                "`docker info` did not answer within {}: {}\n{status}\n(more: journalctl -u {UNIT})",
                humantime::format_duration(timeout),
                crate::host::process::quote_end(&out.stderr, 0)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn defaults_suit_a_small_host_and_overrides_replace_keys_whole() {
        let d: Value = serde_json::from_str(&daemon_json(&Map::new())).unwrap();
        assert_eq!(d["log-driver"], "local");
        assert_eq!(d["log-opts"]["max-size"], "10m");
        assert_eq!(d["live-restore"], true);
        let d: Value = serde_json::from_str(&daemon_json(&map(json!({
            "log-opts": {"max-size": "50m"},
            "iptables": false
        }))))
        .unwrap();
        assert_eq!(d["log-opts"], json!({"max-size": "50m"}));
        assert_eq!(d["iptables"], false);
        assert_eq!(d["log-driver"], "local");
        assert!(daemon_json(&Map::new()).ends_with("}\n"));
        // Stable output: the same table gives the same bytes (no spurious changes).
        assert_eq!(
            daemon_json(&map(json!({"b": 1, "a": 2}))),
            daemon_json(&map(json!({"a": 2, "b": 1})))
        );
    }

    #[test]
    fn forwarding_is_only_managed_when_docker_would_set_forward_drop() {
        assert!(needs_ip_forward(&Map::new()));
        assert!(needs_ip_forward(&map(json!({"iptables": true}))));
        assert!(!needs_ip_forward(&map(json!({"iptables": false}))));
        assert!(!needs_ip_forward(&map(json!({"ip-forward": false}))));
    }

    #[test]
    fn packages_per_source_and_manager() {
        assert_eq!(
            packages_for(Manager::Apt, DockerSource::Distro).unwrap(),
            ["docker.io"]
        );
        assert_eq!(
            packages_for(Manager::Apt, DockerSource::Docker).unwrap(),
            ["docker-ce", "docker-ce-cli", "containerd.io"]
        );
        assert_eq!(
            packages_for(Manager::Dnf, DockerSource::Distro).unwrap(),
            ["docker"]
        );
        assert!(
            packages_for(Manager::Dnf, DockerSource::Docker)
                .unwrap_err()
                .contains("Amazon Linux")
        );
    }

    #[test]
    fn docker_repository_source_is_deb822_signed_by_the_pinned_key() {
        let s = docker_sources(
            "https://download.docker.com/linux/debian",
            "bookworm",
            "amd64",
        );
        assert!(s.contains("URIs: https://download.docker.com/linux/debian\n"));
        assert!(s.contains("Suites: bookworm\n"));
        assert!(s.contains("Architectures: amd64\n"));
        assert!(s.contains("Signed-By: /etc/apt/keyrings/docker.asc\n"));
    }
}

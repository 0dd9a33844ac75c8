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
//! Do not give this step a `timeout` shorter than two health checks: cancelling it between
//! the swap and the health check leaves the new binary in place with its backup beside it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::k3s::{
    self, Channels, Health, K3sPaths, K3sRelease, SERVICE, Toggle, default_bin_dir,
    default_channel_url, default_config_dir, default_data_dir, default_mirror, default_unit_dir,
};
use super::{ActionArgs, Check, Outcome, StepContext, StepKind};
use crate::host::fs::{copy_file_atomic, copy_tree, lstat, replace_tree, sync_dir, write_atomic};
use crate::host::{download, systemd};
use crate::jinja::is_templated;

/// Default of `health_timeout`.
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(300);
/// Directory of the backups inside the state dir.
pub const BACKUP_DIR: &str = "k3s-backups";

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

/// What `apply` has to do.
#[derive(Debug)]
pub struct UpgradePlan {
    from: K3sRelease,
    hops: Vec<K3sRelease>,
    timeout: Duration,
}

/// A finished hop.
struct Hop {
    from: K3sRelease,
    backup: PathBuf,
    healthy_after: Duration,
}

impl K3sUpgradeArgs {
    fn paths(&self) -> K3sPaths {
        K3sPaths {
            bin_dir: self.bin_dir.clone().into(),
            config_dir: self.config_dir.clone().into(),
            unit_dir: default_unit_dir().into(),
            data_dir: self.data_dir.clone().into(),
        }
    }

    /// One hop from `from` to `to` (see the module doc). On error, k3s runs `from` again, or the
    /// error says that the rollback failed.
    async fn upgrade_once(
        &self,
        client: &reqwest::Client,
        paths: &K3sPaths,
        backup_root: &Path,
        from: &K3sRelease,
        to: &K3sRelease,
        timeout: Duration,
    ) -> anyhow::Result<Hop> {
        let timeout_text = humantime::format_duration(timeout);
        let unit = format!("{SERVICE}.service");
        let staged = k3s::stage_release(
            client,
            &self.mirror,
            self.arch.as_deref(),
            to,
            &paths.bin_dir,
        )
        .await
        .map_err(|e| anyhow!("{e:#}; k3s {from} was left running, untouched"))?;
        let staged = Staged(Some(staged));

        systemd::systemctl_ok(&["stop", &unit]).await?;
        let backup = match back_up(paths, backup_root, from, to) {
            Ok(b) => b,
            Err(e) => {
                let restart = systemd::systemctl_ok(&["start", "--no-block", &unit]).await;
                let then = match restart {
                    Ok(_) => format!("k3s {from} was started again"),
                    Err(r) => format!("starting k3s {from} again failed too: {r:#}"),
                };
                bail!(
                    "backing up before the upgrade to {to} failed: {e:#}; nothing was changed and {then}"
                );
            }
        };

        let swapped: anyhow::Result<Duration> = async {
            staged.install(&paths.binary())?;
            systemd::systemctl_ok(&["start", "--no-block", &unit]).await?;
            k3s::wait_healthy(paths, to, Health::Full, timeout)
                .await
                .map_err(|reason| {
                    anyhow!("k3s {to} failed its health check within {timeout_text}: {reason}")
                })
        }
        .await;
        match swapped {
            Ok(healthy_after) => Ok(Hop {
                from: from.clone(),
                backup,
                healthy_after,
            }),
            Err(failure) => match roll_back(paths, &backup, from, timeout).await {
                Ok(()) => Err(anyhow!(
                    "{failure:#}; rolled back to {from}: binary, datastore and token restored \
                     from {}, and {from} is healthy again",
                    backup.display()
                )),
                Err(e) => Err(anyhow!(
                    "{failure:#}; rolling back to {from} from the backup {} did not bring it \
                     back: {e:#}. The backup is kept; look at `journalctl -u {SERVICE}`",
                    backup.display()
                )),
            },
        }
    }
}

/// Puts the binary, datastore and token of `backup` back and checks that `from` is healthy.
async fn roll_back(
    paths: &K3sPaths,
    backup: &Path,
    from: &K3sRelease,
    timeout: Duration,
) -> anyhow::Result<()> {
    let unit = format!("{SERVICE}.service");
    systemd::systemctl_ok(&["stop", &unit]).await?;
    copy_file_atomic(&backup.join("k3s"), &paths.binary())?;
    replace_tree(&backup.join("db"), &paths.db_dir())?;
    if backup.join("token").exists() {
        copy_file_atomic(&backup.join("token"), &paths.token())?;
    }
    // A crash-looping new version may have hit the start rate limit.
    let _ = systemd::systemctl(&["reset-failed", &unit]).await;
    systemd::systemctl_ok(&["start", "--no-block", &unit]).await?;
    k3s::wait_healthy(paths, from, Health::Full, timeout)
        .await
        .map(|_| ())
        .map_err(|reason| {
            anyhow!(
                "{from} is not healthy {} after the restore: {reason}",
                humantime::format_duration(timeout)
            )
        })
}

/// The downloaded binary until it is renamed into place; removed if dropped before.
struct Staged(Option<PathBuf>);

impl Staged {
    fn install(&self, binary: &Path) -> anyhow::Result<()> {
        let staged = self.0.as_deref().context("the staged binary is gone")?;
        std::fs::rename(staged, binary)
            .with_context(|| format!("renaming {} into {}", staged.display(), binary.display()))?;
        sync_dir(binary.parent().unwrap_or(Path::new("/")))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            // Gone already when it was installed.
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Copies the binary, the datastore and the token into a new backup directory under `root`
/// (mode 0700: the token is a secret). The copy is made under a `.partial` name and renamed
/// when complete, so a directory without that prefix is always a whole backup.
fn back_up(
    paths: &K3sPaths,
    root: &Path,
    from: &K3sRelease,
    to: &K3sRelease,
) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("setting the mode of {}", root.display()))?;
    let now = chrono::Utc::now();
    let name = format!("{}-{from}", now.format("%Y%m%dT%H%M%S%.3fZ"));
    let dir = root.join(&name);
    let partial = root.join(format!(".{name}.partial"));
    if lstat(&partial)?.is_some() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("removing {}", partial.display()))?;
    }
    std::fs::create_dir(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let copied = (|| {
        copy_file_atomic(&paths.binary(), &partial.join("k3s"))?;
        copy_tree(&paths.db_dir(), &partial.join("db"))?;
        if paths.token().exists() {
            copy_file_atomic(&paths.token(), &partial.join("token"))?;
        }
        let manifest = serde_json::json!({
            "from": from.to_string(),
            "to": to.to_string(),
            "created_at": now.to_rfc3339(),
            "binary": paths.binary(),
            "data_dir": paths.data_dir,
        });
        write_atomic(
            &partial.join("manifest.json"),
            format!("{manifest:#}\n").as_bytes(),
            0o600,
            &Default::default(),
        )?;
        std::fs::rename(&partial, &dir).with_context(|| format!("renaming into {}", dir.display()))
    })();
    if let Err(e) = copied {
        // A half backup is worth nothing and takes the space a small disk lacks.
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e);
    }
    sync_dir(root)?;
    Ok(dir)
}

/// Removes all but the newest `keep` backups (names start with a UTC time, so they sort by
/// age). Returns what it could not remove.
fn prune(root: &Path, keep: usize) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(keep.max(1));
    names
        .iter()
        .take(excess)
        .filter_map(|n| {
            std::fs::remove_dir_all(root.join(n))
                .err()
                .map(|e| format!("could not remove old backup {n}: {e}"))
        })
        .collect()
}

impl StepKind for K3sUpgradeArgs {
    type Change = UpgradePlan;

    async fn check(&self, _ctx: &StepContext<'_>) -> anyhow::Result<Check<UpgradePlan>> {
        let paths = self.paths();
        if self.version.trim().is_empty() {
            bail!("`version` is empty: name the release to run, e.g. --var version=v1.31.4+k3s1");
        }
        let to = K3sRelease::parse(&self.version).map_err(anyhow::Error::msg)?;
        let timeout = k3s::parse_timeout("health_timeout", &self.health_timeout)
            .map_err(anyhow::Error::msg)?;
        let from = k3s::installed_version(&paths.binary())
            .await?
            .with_context(|| {
                format!(
                    "no k3s at {}: install it first (k3s_install), or set `bin_dir`",
                    paths.binary().display()
                )
            })?;
        if from == to {
            return Ok(Check::unchanged(Some(format!("k3s is at {to}"))));
        }
        if !paths.db_dir().is_dir() {
            bail!(
                "no datastore at {}: k3s_upgrade backs up the embedded datastore before it \
                 upgrades; is `data_dir` right (k3s's `data-dir`)?",
                paths.db_dir().display()
            );
        }
        let step = self.step_through_minors.value("step_through_minors")?;
        let skips = to.major == from.major && to.minor > from.minor + 1;
        let channels = if skips && step {
            Some(Channels::fetch(&download::client()?, &self.channel_url).await?)
        } else {
            None
        };
        let hops =
            k3s::upgrade_path(&from, &to, step, channels.as_ref()).map_err(anyhow::Error::msg)?;
        let via: Vec<String> = hops[..hops.len() - 1]
            .iter()
            .map(ToString::to_string)
            .collect();
        let mut msg = format!("upgrade k3s {from} → {to}");
        if !via.is_empty() {
            msg.push_str(&format!(" via {}", via.join(", ")));
        }
        msg.push_str(" (datastore backup, health check, rollback on failure)");
        Ok(Check::change(
            UpgradePlan {
                from,
                hops,
                timeout,
            },
            msg,
        ))
    }

    async fn apply(&self, ctx: &StepContext<'_>, plan: UpgradePlan) -> anyhow::Result<Outcome> {
        let paths = self.paths();
        let client = download::client()?;
        let backup_root = ctx.state_dir.join(BACKUP_DIR);
        let mut current = plan.from.clone();
        let mut last: Option<Hop> = None;
        for to in &plan.hops {
            match self
                .upgrade_once(&client, &paths, &backup_root, &current, to, plan.timeout)
                .await
            {
                Ok(hop) => {
                    last = Some(hop);
                    current = to.clone();
                }
                Err(e) if current != plan.from => {
                    return Err(e.context(format!(
                        "the upgrade from {} stopped at {current}, which is healthy",
                        plan.from
                    )));
                }
                Err(e) => return Err(e),
            }
        }
        let hop = last.context("an upgrade plan has at least one hop")?;
        let mut message = format!(
            "upgraded k3s {} → {current}; healthy after {:.1}s; backup of {}'s datastore in {}",
            plan.from,
            hop.healthy_after.as_secs_f64(),
            hop.from,
            hop.backup.display()
        );
        for problem in prune(&backup_root, self.keep_backups as usize) {
            message.push_str(&format!("; {problem}"));
        }
        Ok(Outcome {
            changed: true,
            message: Some(message),
            ..Outcome::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_keeps_the_newest_backups_and_partial_ones_alone() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "20250101T000000.000Z-v1.29.1+k3s1",
            "20250201T000000.000Z-v1.30.1+k3s1",
            "20250301T000000.000Z-v1.31.1+k3s1",
            ".20250401T000000.000Z-v1.31.4+k3s1.partial",
        ] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        assert!(prune(dir.path(), 2).is_empty());
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".20250401T000000.000Z-v1.31.4+k3s1.partial",
                "20250201T000000.000Z-v1.30.1+k3s1",
                "20250301T000000.000Z-v1.31.1+k3s1"
            ]
        );
        assert!(prune(dir.path(), 0).is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_backup_holds_binary_datastore_and_token() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let paths = K3sPaths {
            bin_dir: root.join("bin"),
            config_dir: root.join("etc"),
            unit_dir: root.join("units"),
            data_dir: root.join("data"),
        };
        std::fs::create_dir_all(&paths.bin_dir).unwrap();
        std::fs::create_dir_all(paths.db_dir()).unwrap();
        std::fs::write(paths.binary(), "binary").unwrap();
        std::fs::write(paths.db_dir().join("state.db"), "rows").unwrap();
        std::fs::write(paths.token(), "K10secret").unwrap();
        let from = K3sRelease::parse("v1.30.6+k3s1").unwrap();
        let to = K3sRelease::parse("v1.31.4+k3s1").unwrap();
        let backup = back_up(&paths, &root.join("state/k3s-backups"), &from, &to).unwrap();
        assert!(
            backup
                .file_name()
                .unwrap()
                .to_string_lossy()
                .ends_with("-v1.30.6+k3s1")
        );
        assert_eq!(std::fs::read(backup.join("k3s")).unwrap(), b"binary");
        assert_eq!(std::fs::read(backup.join("db/state.db")).unwrap(), b"rows");
        assert_eq!(std::fs::read(backup.join("token")).unwrap(), b"K10secret");
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(backup.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(manifest["to"], "v1.31.4+k3s1");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root.join("state/k3s-backups"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}

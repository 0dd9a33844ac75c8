//! Runs `k3s_upgrade` on the host; its arguments and their validation are the model's
//! (`bosun_model::steps::k3s_upgrade`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bosun_model::steps::k3s::{K3sPaths, K3sRelease, parse_timeout};
use bosun_model::steps::k3s_install::K3sRole;
use bosun_model::steps::k3s_upgrade::K3sUpgradeArgs;

use super::k3s::{self, Channels, Health, K3sNode};
use super::k3s_interrupted::{self as interrupted, Phase};
use super::{Check, Outcome, StepContext, StepKind};
use crate::host::fs::{self as host_fs, copy_file_atomic, copy_tree, lstat, write_atomic};
use crate::host::{download, k3s as host_k3s, systemd};

/// Directory of the backups inside the state dir.
pub(crate) const BACKUP_DIR: &str = "k3s-backups";

/// What `apply` has to do: settle an interrupted upgrade first, or upgrade.
#[derive(Debug)]
pub enum UpgradePlan {
    /// A phase record is on disk ([`interrupted`]): finish or roll back that upgrade, then
    /// look again.
    Resume,
    /// Hops from the running version.
    Upgrade(Hops),
}

/// The hops from the running version to the one asked for.
#[derive(Debug)]
pub struct Hops {
    from: K3sRelease,
    hops: Vec<K3sRelease>,
    timeout: Duration,
    role: K3sRole,
}

/// A finished hop.
struct Hop {
    from: K3sRelease,
    backup: PathBuf,
    healthy_after: Duration,
}

/// One hop from `from` to `to` (see `bosun_model::steps::k3s_upgrade`). On error, k3s runs
/// `from` again, or the error says that the rollback failed. Each move is announced in the
/// phase record first ([`interrupted`]), so a bosund killed at any point leaves a record the
/// next start or run settles.
#[allow(clippy::too_many_arguments)]
async fn upgrade_once(
    args: &K3sUpgradeArgs,
    client: &reqwest::Client,
    paths: &K3sPaths,
    state_dir: &Path,
    backup_root: &Path,
    from: &K3sRelease,
    to: &K3sRelease,
    timeout: Duration,
    role: K3sRole,
) -> anyhow::Result<Hop> {
    let timeout_text = humantime::format_duration(timeout);
    let service = role.service();
    let unit = format!("{service}.service");
    let staged = k3s::stage_release(
        client,
        &args.mirror,
        args.arch.as_deref(),
        to,
        &paths.bin_dir,
    )
    .await
    .map_err(|e| anyhow!("{e:#}; k3s {from} was left running, untouched"))?;
    let mut record = interrupted::Interrupted::new(paths, from, to, &staged, timeout);
    let staged = Staged(Some(staged));

    interrupted::enter(state_dir, &mut record, Phase::Stopping)?;
    systemd::systemctl_ok(&["stop", &unit]).await?;
    interrupted::reached("stopped");
    let backup = match back_up(paths, backup_root, from, to, role) {
        Ok(b) => b,
        Err(e) => {
            let restart = systemd::systemctl_ok(&["start", "--no-block", &unit]).await;
            let then = match restart {
                Ok(_) => {
                    interrupted::clear(state_dir)?;
                    format!("k3s {from} was started again")
                }
                Err(r) => format!("starting k3s {from} again failed too: {r:#}"),
            };
            bail!(
                "backing up before the upgrade to {to} failed: {e:#}; nothing was changed and {then}"
            );
        }
    };
    record.backup = Some(backup.clone());
    interrupted::enter(state_dir, &mut record, Phase::BackedUp)?;
    interrupted::reached("backed-up");

    let swapped: anyhow::Result<Duration> = async {
        interrupted::enter(state_dir, &mut record, Phase::Swapping)?;
        staged.install(&paths.binary())?;
        interrupted::reached("swapped");
        interrupted::enter(state_dir, &mut record, Phase::Started)?;
        systemd::systemctl_ok(&["start", "--no-block", &unit]).await?;
        interrupted::reached("started");
        k3s::wait_healthy(paths, to, Health::Full, timeout)
            .await
            .map_err(|reason| {
                anyhow!("k3s {to} failed its health check within {timeout_text}: {reason}")
            })
    }
    .await;
    match swapped {
        Ok(healthy_after) => {
            interrupted::clear(state_dir)?;
            Ok(Hop {
                from: from.clone(),
                backup,
                healthy_after,
            })
        }
        Err(failure) => {
            match interrupted::roll_back(state_dir, &record, paths, &backup, from, timeout).await {
                Ok(()) => {
                    interrupted::clear(state_dir)?;
                    Err(anyhow!(
                        "{failure:#}; rolled back to {from}: {} restored from {}, and {from} is \
                         healthy again",
                        match role {
                            K3sRole::Server => "binary, datastore and token",
                            K3sRole::Agent => "binary",
                        },
                        backup.display()
                    ))
                }
                Err(e) => Err(anyhow!(
                    "{failure:#}; rolling back to {from} from the backup {} did not bring it \
                     back: {e:#}. The backup is kept; look at `journalctl -u {service}`",
                    backup.display()
                )),
            }
        }
    }
}

/// The downloaded binary until it is renamed into place; removed if dropped before.
struct Staged(Option<PathBuf>);

impl Staged {
    fn install(&self, binary: &Path) -> anyhow::Result<()> {
        let staged = self.0.as_deref().context("the staged binary is gone")?;
        host_fs::rename(staged, binary)
            .with_context(|| format!("renaming {} into {}", staged.display(), binary.display()))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            // Gone already when it was installed.
            let _ = host_fs::remove(&p, false);
        }
    }
}

/// Copies the binary, and on a server the datastore and the token, into a new backup
/// directory under `root` (mode 0700: the token is a secret). The copy is made under a `.partial` name and renamed
/// when complete, so a directory without that prefix is always a whole backup.
fn back_up(
    paths: &K3sPaths,
    root: &Path,
    from: &K3sRelease,
    to: &K3sRelease,
    role: K3sRole,
) -> anyhow::Result<PathBuf> {
    host_fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    host_fs::set_mode(root, 0o700)
        .with_context(|| format!("setting the mode of {}", root.display()))?;
    let now = chrono::Utc::now();
    let name = format!("{}-{from}", now.format("%Y%m%dT%H%M%S%.3fZ"));
    let dir = root.join(&name);
    let partial = root.join(format!(".{name}.partial"));
    if lstat(&partial)?.is_some() {
        host_fs::remove(&partial, true)
            .with_context(|| format!("removing {}", partial.display()))?;
    }
    host_fs::create_dir(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let copied = (|| {
        copy_file_atomic(&paths.binary(), &partial.join("k3s"))?;
        if role == K3sRole::Server {
            copy_tree(&paths.db_dir(), &partial.join("db"))?;
        }
        if role == K3sRole::Server && paths.token().exists() {
            copy_file_atomic(&paths.token(), &partial.join("token"))?;
        }
        let manifest = serde_json::json!({
            "from": from.to_string(),
            "to": to.to_string(),
            "role": role.as_str(),
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
        host_fs::rename(&partial, &dir).with_context(|| format!("renaming into {}", dir.display()))
    })();
    if let Err(e) = copied {
        // A half backup is worth nothing and takes the space a small disk lacks.
        let _ = host_fs::remove(&partial, true);
        return Err(e);
    }
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
            host_fs::remove(&root.join(n), true)
                .err()
                .map(|e| format!("could not remove old backup {n}: {e}"))
        })
        .collect()
}

impl StepKind for K3sUpgradeArgs {
    type Change = UpgradePlan;

    async fn check(&self, ctx: &StepContext<'_>) -> anyhow::Result<Check<UpgradePlan>> {
        if let Some(record) = interrupted::load(ctx.state_dir)? {
            return Ok(Check::change(
                UpgradePlan::Resume,
                format!(
                    "an interrupted upgrade {} is settled first: finished if the new version \
                     is healthy, else rolled back from its backup",
                    record.describe()
                ),
            ));
        }
        Ok(match plan_hops(self).await? {
            None => Check::unchanged(Some(format!("k3s is at {}", self.version.trim()))),
            Some((hops, msg)) => Check::change(UpgradePlan::Upgrade(hops), msg),
        })
    }

    async fn apply(&self, ctx: &StepContext<'_>, change: UpgradePlan) -> anyhow::Result<Outcome> {
        let hops = match change {
            UpgradePlan::Upgrade(hops) => hops,
            UpgradePlan::Resume => {
                let settled = interrupted::resume(ctx.state_dir)
                    .await?
                    .unwrap_or_else(|| "an interrupted upgrade was settled meanwhile".into());
                let Some((hops, _)) = plan_hops(self).await? else {
                    return Ok(Outcome {
                        changed: true,
                        message: Some(format!("{settled}; k3s is at {}", self.version.trim())),
                        ..Outcome::default()
                    });
                };
                let mut outcome = upgrade(self, ctx, hops)
                    .await
                    .map_err(|e| e.context(settled.clone()))?;
                outcome.message = outcome.message.map(|m| format!("{settled}; then {m}"));
                return Ok(outcome);
            }
        };
        upgrade(self, ctx, hops).await
    }
}

/// The hops to the version asked for and the check's message, or `None` when k3s runs it.
async fn plan_hops(args: &K3sUpgradeArgs) -> anyhow::Result<Option<(Hops, String)>> {
    let paths = args.paths();
    if args.version.trim().is_empty() {
        bail!("`version` is empty: name the release to run, e.g. --var version=v1.31.4+k3s1");
    }
    let to = K3sRelease::parse(&args.version).map_err(anyhow::Error::msg)?;
    let timeout =
        parse_timeout("health_timeout", &args.health_timeout).map_err(anyhow::Error::msg)?;
    let from = host_k3s::installed_version(&paths.binary())
        .await?
        .with_context(|| {
            format!(
                "no k3s at {}: install it first (k3s_install), or set `bin_dir`",
                paths.binary().display()
            )
        })?;
    if from == to {
        return Ok(None);
    }
    let role = K3sNode::installed(&paths).role;
    if role == K3sRole::Server && !paths.db_dir().is_dir() {
        bail!(
            "no datastore at {}: k3s_upgrade backs up the embedded datastore before it \
             upgrades; is `data_dir` right (k3s's `data-dir`)?",
            paths.db_dir().display()
        );
    }
    let step = args.step_through_minors.value("step_through_minors")?;
    let skips = to.major == from.major && to.minor > from.minor + 1;
    let channels = if skips && step {
        Some(Channels::fetch(&download::client()?, &args.channel_url).await?)
    } else {
        None
    };
    let hops =
        k3s::upgrade_path(&from, &to, step, channels.as_ref()).map_err(anyhow::Error::msg)?;
    let via: Vec<String> = hops[..hops.len() - 1]
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut msg = format!("upgrade k3s {} {from} → {to}", role.as_str());
    if !via.is_empty() {
        msg.push_str(&format!(" via {}", via.join(", ")));
    }
    msg.push_str(match role {
        K3sRole::Server => " (datastore backup, health check, rollback on failure)",
        K3sRole::Agent => " (binary backup, health check, rollback on failure)",
    });
    Ok(Some((
        Hops {
            from,
            hops,
            timeout,
            role,
        },
        msg,
    )))
}

async fn upgrade(
    args: &K3sUpgradeArgs,
    ctx: &StepContext<'_>,
    plan: Hops,
) -> anyhow::Result<Outcome> {
    let paths = args.paths();
    let client = download::client()?;
    let backup_root = ctx.state_dir.join(BACKUP_DIR);
    let mut current = plan.from.clone();
    let mut last: Option<Hop> = None;
    for to in &plan.hops {
        match upgrade_once(
            args,
            &client,
            &paths,
            ctx.state_dir,
            &backup_root,
            &current,
            to,
            plan.timeout,
            plan.role,
        )
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
        "upgraded k3s {} → {current}; healthy after {:.1}s; backup of {} in {}",
        plan.from,
        hop.healthy_after.as_secs_f64(),
        hop.from,
        hop.backup.display()
    );
    for problem in prune(&backup_root, args.keep_backups as usize) {
        message.push_str(&format!("; {problem}"));
    }
    Ok(Outcome {
        changed: true,
        message: Some(message),
        ..Outcome::default()
    })
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
        let backup = back_up(
            &paths,
            &root.join("state/k3s-backups"),
            &from,
            &to,
            K3sRole::Server,
        )
        .unwrap();
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

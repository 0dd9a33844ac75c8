//! `k3s_upgrade`'s phase record: what an upgrade was doing when bosund died (`kill -9`, power
//! loss) or the step's `timeout` dropped it, and how such an upgrade is finished or rolled
//! back afterwards.
//!
//! Invariants:
//! - Before each move that changes the host (stopping k3s, swapping the binary, starting the
//!   new version, restoring a backup) the phase is written atomically to
//!   `<state dir>/k3s-upgrade.json` (0600), and removed only once the upgrade is healthy or
//!   rolled back. So a record on disk means an upgrade nobody checked.
//! - [`resume`] runs before anything else may touch k3s: when the daemon's runner starts,
//!   when a `k3s_upgrade` step starts (its check reports it; its apply resumes before it plans),
//!   and when the step's own `timeout` fired. It never leaves a swapped binary unchecked: the
//!   new version is started and health-checked, and rolled back from the backup if it fails.
//! - A record whose resumption failed is kept, so the next attempt tries again.
//!
//! Tests kill bosund at a phase with `BOSUN_TEST_KILL_AT=<phase>` ([`super::kill_point`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use bosun_model::steps::k3s::{K3sPaths, K3sRelease};
use serde::{Deserialize, Serialize};

use super::k3s::{self, Health, K3sNode};
use crate::host::fs::{
    self as host_fs, copy_file_atomic, read_if_exists, replace_tree, write_atomic,
};
use crate::host::{k3s as host_k3s, systemd};

/// The record's file name in the state dir.
pub(crate) const RECORD: &str = "k3s-upgrade.json";

/// Where an upgrade was: the last move it announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Phase {
    /// About to stop k3s for the backup; the binary is the old one.
    Stopping,
    /// The backup is complete; k3s is stopped, the binary is the old one.
    BackedUp,
    /// About to rename the new binary into place: either binary may be there.
    Swapping,
    /// The new binary is in place and being started, not yet checked.
    Started,
    /// Restoring binary, datastore and token from the backup.
    RollingBack,
}

/// What is on disk while an upgrade runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Interrupted {
    /// The version running before.
    pub from: String,
    /// The version being installed.
    pub to: String,
    /// The last move announced.
    pub phase: Phase,
    /// The backup, once made.
    pub backup: Option<PathBuf>,
    /// The downloaded binary waiting to be swapped in (removed when resuming).
    pub staged: Option<PathBuf>,
    /// The installation.
    pub bin_dir: PathBuf,
    pub config_dir: PathBuf,
    pub unit_dir: PathBuf,
    pub data_dir: PathBuf,
    /// How long a version may take to become healthy.
    pub health_timeout_secs: u64,
}

impl Interrupted {
    pub(crate) fn new(
        paths: &K3sPaths,
        from: &K3sRelease,
        to: &K3sRelease,
        staged: &Path,
        timeout: Duration,
    ) -> Interrupted {
        Interrupted {
            from: from.to_string(),
            to: to.to_string(),
            phase: Phase::Stopping,
            backup: None,
            staged: Some(staged.to_path_buf()),
            bin_dir: paths.bin_dir.clone(),
            config_dir: paths.config_dir.clone(),
            unit_dir: paths.unit_dir.clone(),
            data_dir: paths.data_dir.clone(),
            health_timeout_secs: timeout.as_secs().max(1),
        }
    }

    /// The unit of the installation (`k3s-agent.service` on an agent).
    fn unit(&self) -> String {
        format!(
            "{}.service",
            K3sNode::installed(&self.paths()).role.service()
        )
    }

    fn paths(&self) -> K3sPaths {
        K3sPaths {
            bin_dir: self.bin_dir.clone(),
            config_dir: self.config_dir.clone(),
            unit_dir: self.unit_dir.clone(),
            data_dir: self.data_dir.clone(),
        }
    }

    /// `v1.30.6+k3s1 → v1.31.4+k3s1 (phase started)`, for messages.
    pub(crate) fn describe(&self) -> String {
        let phase = serde_json::to_value(self.phase)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        format!("{} → {} (phase {phase})", self.from, self.to)
    }
}

/// The record in `state_dir`, if an upgrade left one. A record that cannot be read is an
/// error naming the file: guessing what an unreadable record meant could roll back a healthy
/// cluster.
pub(crate) fn load(state_dir: &Path) -> anyhow::Result<Option<Interrupted>> {
    let path = state_dir.join(RECORD);
    let Some(bytes) = read_if_exists(&path)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes).map(Some).with_context(|| {
        format!(
            "{} is not a k3s upgrade record ({} bytes); look at k3s by hand, then remove the file",
            path.display(),
            bytes.len()
        )
    })
}

/// Writes `record` at `phase` (atomic, 0600), then honours `BOSUN_TEST_KILL_AT`.
pub(crate) fn enter(
    state_dir: &Path,
    record: &mut Interrupted,
    phase: Phase,
) -> anyhow::Result<()> {
    record.phase = phase;
    host_fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let text = serde_json::to_vec_pretty(record)?;
    write_atomic(&state_dir.join(RECORD), &text, 0o600, &Default::default())
        .context("recording the upgrade's phase")?;
    Ok(())
}

/// Removes the record: the upgrade is healthy or rolled back.
pub(crate) fn clear(state_dir: &Path) -> anyhow::Result<()> {
    match host_fs::remove(&state_dir.join(RECORD), false) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(anyhow!(
            "removing {}: {e}",
            state_dir.join(RECORD).display()
        )),
        _ => Ok(()),
    }
}

/// A test hook ([`super::kill_point`]): `stopped`, `backed-up`, `swapped`, `started`.
pub(crate) fn reached(point: &str) {
    super::kill_point(point);
}

/// Finishes or rolls back the upgrade recorded in `state_dir`, if any, and says which. The
/// record is removed when the host is back in a checked state, kept when not.
pub(crate) async fn resume(state_dir: &Path) -> anyhow::Result<Option<String>> {
    let Some(record) = load(state_dir)? else {
        return Ok(None);
    };
    let what = record.describe();
    let done = resume_record(state_dir, &record).await.with_context(|| {
        format!(
            "the interrupted k3s upgrade {what} is not settled; the record {} is kept",
            state_dir.join(RECORD).display()
        )
    })?;
    clear(state_dir)?;
    Ok(Some(format!("the interrupted k3s upgrade {what} {done}")))
}

async fn resume_record(state_dir: &Path, record: &Interrupted) -> anyhow::Result<String> {
    let paths = record.paths();
    let from = K3sRelease::parse(&record.from).map_err(anyhow::Error::msg)?;
    let to = K3sRelease::parse(&record.to).map_err(anyhow::Error::msg)?;
    let timeout = Duration::from_secs(record.health_timeout_secs);
    if let Some(staged) = &record.staged
        && staged.exists()
    {
        let _ = host_fs::remove(staged, false);
    }
    let unit = record.unit();
    if record.phase == Phase::RollingBack {
        let backup = record
            .backup
            .as_deref()
            .context("the record names no backup")?;
        roll_back(state_dir, record, &paths, backup, &from, timeout).await?;
        return Ok(format!(
            "was rolled back: {from} restored from {} and healthy",
            backup.display()
        ));
    }
    let installed = host_k3s::installed_version(&paths.binary()).await?;
    if installed.as_ref() == Some(&to) {
        // The swap happened: the new version gets its health check, as if never interrupted.
        let _ = systemd::systemctl(&["reset-failed", &unit]).await;
        systemd::systemctl_ok(&["start", "--no-block", &unit]).await?;
        return match k3s::wait_healthy(&paths, &to, Health::Full, timeout).await {
            Ok(after) => Ok(format!(
                "was finished: {to} is healthy (after {:.1}s)",
                after.as_secs_f64()
            )),
            Err(reason) => {
                let backup = record
                    .backup
                    .as_deref()
                    .context("the new binary is in place but the record names no backup")?;
                roll_back(state_dir, record, &paths, backup, &from, timeout)
                    .await
                    .with_context(|| format!("{to} failed its health check ({reason}) and"))?;
                Ok(format!(
                    "was rolled back: {to} failed its health check within {} ({reason}); {from} restored from {} and healthy",
                    humantime::format_duration(timeout),
                    backup.display()
                ))
            }
        };
    }
    // Not swapped: the old binary and its untouched datastore only need k3s running again
    // (after a reset: stops and starts in quick succession may have hit the start limit).
    let _ = systemd::systemctl(&["reset-failed", &unit]).await;
    systemd::systemctl_ok(&["start", "--no-block", &unit]).await?;
    k3s::wait_healthy(&paths, &from, Health::Full, timeout)
        .await
        .map_err(|reason| anyhow!("{from} is not healthy after starting it again: {reason}"))?;
    Ok(format!(
        "stopped before the swap: {from} (unchanged) was started again and is healthy"
    ))
}

/// Puts the binary, datastore and token of `backup` back (an agent's backup holds the binary
/// only) and checks that `from` is healthy, recording the phase first.
pub(crate) async fn roll_back(
    state_dir: &Path,
    record: &Interrupted,
    paths: &K3sPaths,
    backup: &Path,
    from: &K3sRelease,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut record = record.clone();
    record.backup = Some(backup.to_path_buf());
    enter(state_dir, &mut record, Phase::RollingBack)?;
    let unit = record.unit();
    systemd::systemctl_ok(&["stop", &unit]).await?;
    copy_file_atomic(&backup.join("k3s"), &paths.binary())?;
    // An agent's backup has no datastore (it has none).
    if backup.join("db").is_dir() {
        replace_tree(&backup.join("db"), &paths.db_dir())?;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_round_trips_and_an_unreadable_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let paths = K3sPaths {
            bin_dir: "/usr/local/bin".into(),
            config_dir: "/etc/rancher/k3s".into(),
            unit_dir: "/etc/systemd/system".into(),
            data_dir: "/var/lib/rancher/k3s".into(),
        };
        let from = K3sRelease::parse("v1.30.6+k3s1").unwrap();
        let to = K3sRelease::parse("v1.31.4+k3s1").unwrap();
        let mut r = Interrupted::new(
            &paths,
            &from,
            &to,
            Path::new("/usr/local/bin/.k3s.new"),
            Duration::from_secs(30),
        );
        enter(dir.path(), &mut r, Phase::Started).unwrap();
        let back = load(dir.path()).unwrap().unwrap();
        assert_eq!(back, r);
        assert_eq!(
            back.describe(),
            "v1.30.6+k3s1 → v1.31.4+k3s1 (phase started)"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(RECORD))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        clear(dir.path()).unwrap();
        clear(dir.path()).unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        std::fs::write(dir.path().join(RECORD), "{half").unwrap();
        let err = format!("{:#}", load(dir.path()).unwrap_err());
        assert!(
            err.contains("k3s-upgrade.json is not a k3s upgrade record (5 bytes)"),
            "{err}"
        );
    }
}

//! Runs `k3s_install` on the host; its arguments and their validation are the model's
//! (`bosun_model::steps::k3s_install`).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bosun_model::steps::k3s::{DEFAULT_DATA_DIR, K3sPaths, K3sRelease, SERVICE, parse_timeout};
use bosun_model::steps::k3s_install::{K3sInstallArgs, small_host_defaults};
use serde_json::Value;

use super::content::unified_diff;
use super::k3s::{self, Channels, Health};
use super::{Check, Outcome, StepContext, StepKind};
use crate::host::fs::{self as host_fs, Attrs, lstat, read_if_exists, write_atomic};
use crate::host::{download, k3s as host_k3s, systemd};

/// Links made beside the binary (k3s is a multi-call binary), when nothing else has the name.
const LINKS: &[&str] = &["kubectl", "crictl", "ctr"];

/// The release to install: the pinned version, or the channel's latest.
async fn target(args: &K3sInstallArgs, client: &reqwest::Client) -> anyhow::Result<K3sRelease> {
    if let Some(v) = args.pinned()? {
        return Ok(v);
    }
    let channel = args.channel.as_deref().unwrap_or("stable");
    let channels = Channels::fetch(client, &args.channel_url).await?;
    channels.latest(channel).with_context(|| {
        format!(
            "the channel list at {} has no channel {channel:?} with a release",
            args.channel_url
        )
    })
}

// ---------------------------------------------------------------------------------------------
// What the files hold
// ---------------------------------------------------------------------------------------------

/// Merges `*-arg` flag lists: a flag of `ours` replaces the default flag of the same name
/// (the text before `=`), other flags are appended.
fn merge_flags(defaults: &[Value], ours: &[Value]) -> Vec<Value> {
    let name = |v: &Value| {
        v.as_str()
            .map(|s| s.split('=').next().unwrap_or(s).to_string())
    };
    let mut merged: Vec<Value> = defaults
        .iter()
        .filter(|d| !ours.iter().any(|o| name(o).is_some() && name(o) == name(d)))
        .cloned()
        .collect();
    merged.extend(ours.iter().cloned());
    merged
}

/// The content of `config.yaml`: the defaults (unless off), the step's table over them, and
/// the paths that differ from k3s's own defaults.
pub(crate) fn render_config(
    config: &BTreeMap<String, Value>,
    small_host: bool,
    paths: &K3sPaths,
) -> anyhow::Result<String> {
    let mut merged = if small_host {
        small_host_defaults()
    } else {
        BTreeMap::new()
    };
    for (key, value) in config {
        let combined = match (merged.get(key), value) {
            (Some(Value::Array(d)), Value::Array(o)) if key.ends_with("-arg") => {
                Value::Array(merge_flags(d, o))
            }
            _ => value.clone(),
        };
        merged.insert(key.clone(), combined);
    }
    if paths.data_dir != Path::new(DEFAULT_DATA_DIR) {
        merged.insert(
            "data-dir".into(),
            Value::String(paths.data_dir.display().to_string()),
        );
    }
    if !paths.default_config_dir() {
        merged.insert(
            "write-kubeconfig".into(),
            Value::String(paths.kubeconfig().display().to_string()),
        );
    }
    let yaml = serde_norway::to_string(&merged).context("rendering config.yaml")?;
    Ok(format!(
        "# Written by bosun (k3s_install); edits here are replaced on its next run.\n{yaml}"
    ))
}

/// The content of `k3s.service.env`.
pub(crate) fn render_env(env: &BTreeMap<String, String>) -> String {
    let mut out = String::from(
        "# Written by bosun (k3s_install): the environment of k3s.service. Mode 0600: it may \
         hold the cluster token.\n",
    );
    for (key, value) in env {
        let quoted = value.replace('\\', "\\\\").replace('"', "\\\"");
        out.push_str(&format!("{key}=\"{quoted}\"\n"));
    }
    out
}

/// The content of `k3s.service`, as the official installer writes it for a server: Type=notify
/// (k3s tells systemd when it is up), KillMode=process (stopping k3s leaves the containers'
/// shims running, so a restart does not restart every pod), no resource limits on the
/// container tree.
pub(crate) fn render_unit(paths: &K3sPaths) -> String {
    let env_file = paths.env_file();
    let mut exec = format!("{} \\\n    server", paths.binary().display());
    if !paths.default_config_dir() {
        exec.push_str(&format!(
            " \\\n    --config {}",
            paths.config_file().display()
        ));
    }
    format!(
        "# Written by bosun (k3s_install); edits here are replaced on its next run.
[Unit]
Description=Lightweight Kubernetes
Documentation=https://k3s.io
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=notify
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-/etc/sysconfig/%N
EnvironmentFile=-{env_file}
KillMode=process
Delegate=yes
User=root
# Limits cost accounting overhead in the kernel; containers are accounted by cgroups.
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart={exec}
",
        env_file = env_file.display(),
    )
}

// ---------------------------------------------------------------------------------------------
// check and apply
// ---------------------------------------------------------------------------------------------

/// One file to (re)write.
#[derive(Debug)]
pub(crate) struct PlannedFile {
    path: PathBuf,
    content: Vec<u8>,
    mode: u32,
}

/// What `apply` has to do.
#[derive(Debug)]
pub struct InstallPlan {
    /// Download and install this release (no k3s binary yet).
    install: Option<K3sRelease>,
    /// The version that runs once applied.
    version: K3sRelease,
    /// Files to write.
    files: Vec<PlannedFile>,
    /// Links to create beside the binary.
    links: Vec<PathBuf>,
    /// The unit file changes: daemon-reload.
    unit_changed: bool,
    /// The unit is not enabled.
    enable: bool,
    /// k3s runs and something it reads changed.
    restart: bool,
    /// k3s does not run.
    start: bool,
}

/// Compares `path` with the wanted content and mode; `None` when it matches.
fn plan_file(path: PathBuf, content: Vec<u8>, mode: u32) -> anyhow::Result<Option<PlannedFile>> {
    let same_content = read_if_exists(&path)?.as_deref() == Some(content.as_slice());
    let same_mode = lstat(&path)?.is_some_and(|m| m.mode() & 0o7777 == mode);
    Ok((!(same_content && same_mode)).then_some(PlannedFile {
        path,
        content,
        mode,
    }))
}

impl StepKind for K3sInstallArgs {
    type Change = InstallPlan;

    async fn check(&self, _ctx: &StepContext<'_>) -> anyhow::Result<Check<InstallPlan>> {
        let paths = self.paths();
        let mut todo: Vec<String> = Vec::new();
        let mut notes: Vec<String> = Vec::new();
        let installed = host_k3s::installed_version(&paths.binary()).await?;
        let (version, install) = match installed {
            Some(v) => {
                if let Some(pinned) = self.pinned()?.filter(|p| p != &v) {
                    notes.push(format!(
                        "k3s {v} is installed and this step names {pinned}: left at {v} \
                         (versions change only through k3s_upgrade)"
                    ));
                }
                (v, None)
            }
            None => {
                let client = download::client()?;
                let target = target(self, &client).await?;
                todo.push(format!("install k3s {target}"));
                (target.clone(), Some(target))
            }
        };

        let config = render_config(&self.config, self.small_host_defaults, &paths)?;
        let unit = render_unit(&paths);
        let mut files = Vec::new();
        let mut diff = String::new();
        let old_config = read_if_exists(&paths.config_file())?;
        if let Some(f) = plan_file(paths.config_file(), config.into_bytes(), 0o600)? {
            todo.push("write config.yaml".into());
            diff.push_str(&unified_diff(&f.path, old_config.as_deref(), &f.content));
            files.push(f);
        }
        if let Some(f) = plan_file(paths.env_file(), render_env(&self.env).into_bytes(), 0o600)? {
            // Its values may be secrets: say that it changes, never show them.
            todo.push(format!("write {SERVICE}.service.env"));
            files.push(f);
        }
        let old_unit = read_if_exists(&paths.unit_file())?;
        let unit_changed = match plan_file(paths.unit_file(), unit.into_bytes(), 0o644)? {
            Some(f) => {
                todo.push(format!("write {SERVICE}.service"));
                diff.push_str(&unified_diff(&f.path, old_unit.as_deref(), &f.content));
                files.push(f);
                true
            }
            None => false,
        };

        let mut links = Vec::new();
        if self.symlinks {
            for name in LINKS {
                let link = paths.bin_dir.join(name);
                // Something else already called kubectl (a distribution's package) is left
                // alone, as the official installer does.
                if lstat(&link)?.is_none() {
                    links.push(link);
                }
            }
            if !links.is_empty() {
                todo.push(format!("link {}", LINKS.join(", ")));
            }
        }

        let enabled = systemd::enabled_state(SERVICE).await? == "enabled";
        let active = systemd::active_state(SERVICE).await? == "active";
        let touched = install.is_some() || !files.is_empty();
        let restart = active && touched;
        if !enabled {
            todo.push(format!("enable {SERVICE}.service"));
        }
        if restart {
            todo.push(format!("restart {SERVICE}.service"));
        } else if !active {
            todo.push(format!("start {SERVICE}.service"));
        }

        if todo.is_empty() {
            let mut msg = format!("k3s {version} running; config, unit and env file as wanted");
            for n in notes {
                msg = format!("{msg}; {n}");
            }
            return Ok(Check::unchanged(Some(msg)));
        }
        let mut msg = todo.join(", ");
        for n in notes {
            msg = format!("{msg}; {n}");
        }
        let plan = InstallPlan {
            install,
            version,
            files,
            links,
            unit_changed,
            enable: !enabled,
            restart,
            start: !active,
        };
        Ok(Check::change(plan, msg).with_diff((!diff.is_empty()).then_some(diff)))
    }

    async fn apply(&self, _ctx: &StepContext<'_>, plan: InstallPlan) -> anyhow::Result<Outcome> {
        let paths = self.paths();
        let mut done = Vec::new();
        // The download comes first: a checksum mismatch must leave every file as it was.
        if let Some(release) = &plan.install {
            host_fs::create_dir_all(&paths.bin_dir)
                .with_context(|| format!("creating {}", paths.bin_dir.display()))?;
            let client = download::client()?;
            let arch = self.arch.as_deref();
            let staged =
                k3s::stage_release(&client, &self.mirror, arch, release, &paths.bin_dir).await?;
            host_fs::rename(&staged, &paths.binary())
                .with_context(|| format!("renaming into {}", paths.binary().display()))?;
            done.push(format!("installed k3s {release}"));
        }
        for dir in [&paths.config_dir, &paths.unit_dir] {
            host_fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        for f in &plan.files {
            write_atomic(&f.path, &f.content, f.mode, &Attrs::default())?;
            done.push(format!(
                "wrote {}",
                f.path.file_name().unwrap_or_default().to_string_lossy()
            ));
        }
        for link in &plan.links {
            host_fs::create_symlink(link, Path::new("k3s"))
                .with_context(|| format!("linking {} to k3s", link.display()))?;
        }
        if plan.unit_changed {
            systemd::daemon_reload().await?;
        }
        let unit = format!("{SERVICE}.service");
        if plan.enable {
            systemd::systemctl_ok(&["enable", &unit]).await?;
            done.push("enabled".into());
        }
        // --no-block: a k3s that never reports READY (TimeoutStartSec=0, as upstream) must not
        // hang the step; readiness is waited for below, with a deadline.
        if plan.restart {
            systemd::systemctl_ok(&["restart", "--no-block", &unit]).await?;
            done.push("restarted".into());
        } else if plan.start {
            systemd::systemctl_ok(&["start", "--no-block", &unit]).await?;
            done.push("started".into());
        }
        if plan.restart || plan.start {
            let timeout =
                parse_timeout("ready_timeout", &self.ready_timeout).map_err(anyhow::Error::msg)?;
            match k3s::wait_healthy(&paths, &plan.version, Health::NodeReady, None, timeout).await {
                Ok(took) => done.push(format!("node Ready after {:.1}s", took.as_secs_f64())),
                Err(reason) => bail!(
                    "{}; but k3s {} is not ready after {}: {reason}. Look at `journalctl -u \
                     {SERVICE}` on the host; raise `ready_timeout` if it is only slow",
                    done.join(", "),
                    plan.version,
                    humantime::format_duration(timeout)
                ),
            }
        }
        Ok(Outcome {
            changed: true,
            message: Some(done.join(", ")),
            ..Outcome::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_model::steps::k3s::{DEFAULT_BIN_DIR, DEFAULT_CONFIG_DIR, DEFAULT_UNIT_DIR};

    fn paths(root: &str) -> K3sPaths {
        K3sPaths {
            bin_dir: format!("{root}/bin").into(),
            config_dir: format!("{root}/etc").into(),
            unit_dir: format!("{root}/units").into(),
            data_dir: format!("{root}/data").into(),
        }
    }

    fn default_paths() -> K3sPaths {
        K3sPaths {
            bin_dir: DEFAULT_BIN_DIR.into(),
            config_dir: DEFAULT_CONFIG_DIR.into(),
            unit_dir: DEFAULT_UNIT_DIR.into(),
            data_dir: DEFAULT_DATA_DIR.into(),
        }
    }

    fn yaml(text: &str) -> Value {
        serde_norway::from_str(text).unwrap()
    }

    #[test]
    fn config_is_the_table_over_the_small_host_defaults() {
        let mut config = BTreeMap::new();
        config.insert("disable".into(), serde_json::json!(["traefik"]));
        config.insert(
            "kubelet-arg".into(),
            serde_json::json!(["max-pods=50", "eviction-hard=memory.available<200Mi"]),
        );
        config.insert("node-label".into(), serde_json::json!(["role=platform"]));
        let text = render_config(&config, true, &default_paths()).unwrap();
        assert!(text.starts_with("# Written by bosun"), "{text}");
        let got = yaml(&text);
        assert_eq!(got["disable"], serde_json::json!(["traefik"]));
        assert_eq!(got["node-label"], serde_json::json!(["role=platform"]));
        assert_eq!(got["write-kubeconfig-mode"], "0600");
        let args: Vec<&str> = got["kubelet-arg"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(args.contains(&"max-pods=50"), "{args:?}");
        assert!(
            args.contains(&"eviction-hard=memory.available<200Mi"),
            "{args:?}"
        );
        assert_eq!(
            args.iter()
                .filter(|a| a.starts_with("eviction-hard="))
                .count(),
            1
        );
        assert!(
            args.iter().any(|a| a.starts_with("kube-reserved=")),
            "{args:?}"
        );
        // Default paths are k3s's own: not written.
        assert!(got.get("data-dir").is_none() && got.get("write-kubeconfig").is_none());
    }

    #[test]
    fn config_without_defaults_holds_only_the_table_and_moved_paths() {
        let mut config = BTreeMap::new();
        config.insert("tls-san".into(), serde_json::json!("k3s.example"));
        let got = yaml(&render_config(&config, false, &paths("/srv")).unwrap());
        assert_eq!(
            got,
            serde_json::json!({
                "tls-san": "k3s.example",
                "data-dir": "/srv/data",
                "write-kubeconfig": "/srv/etc/k3s.yaml",
            })
        );
    }

    #[test]
    fn env_file_quotes_values_for_systemd() {
        let mut env = BTreeMap::new();
        env.insert("K3S_TOKEN".to_string(), r#"se"cr\et"#.to_string());
        let text = render_env(&env);
        assert!(text.ends_with("K3S_TOKEN=\"se\\\"cr\\\\et\"\n"), "{text}");
    }

    #[test]
    fn unit_runs_the_server_with_the_config_it_was_given() {
        let unit = render_unit(&default_paths());
        assert!(unit.contains("Type=notify\n"));
        assert!(unit.contains("EnvironmentFile=-/etc/systemd/system/k3s.service.env\n"));
        assert!(
            unit.contains("ExecStart=/usr/local/bin/k3s \\\n    server\n"),
            "{unit}"
        );
        let moved = render_unit(&paths("/srv"));
        assert!(
            moved.contains(
                "ExecStart=/srv/bin/k3s \\\n    server \\\n    --config /srv/etc/config.yaml\n"
            ),
            "{moved}"
        );
    }

    /// The unit k3s_install writes passes systemd's own checks (not in a box: `systemd-analyze
    /// verify` only reads files).
    #[test]
    fn the_k3s_unit_passes_systemd_analyze_verify() {
        use bosun_model::steps::k3s::K3sPaths;
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().unwrap();
        let paths = K3sPaths {
            bin_dir: dir.path().join("bin"),
            config_dir: dir.path().join("etc"),
            unit_dir: dir.path().join("units"),
            data_dir: dir.path().join("data"),
        };
        std::fs::create_dir_all(&paths.bin_dir).unwrap();
        std::fs::create_dir_all(&paths.unit_dir).unwrap();
        std::fs::write(paths.binary(), bosun_fixtures::k3s_release("v1.31.4+k3s1")).unwrap();
        std::fs::set_permissions(paths.binary(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(paths.unit_file(), render_unit(&paths)).unwrap();
        let out = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(paths.unit_file())
            .env("SYSTEMD_LOG_LEVEL", "warning")
            .output()
            .expect("systemd-analyze (Debian package systemd; scripts/test installs it)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "systemd-analyze verify failed:\n{stderr}"
        );
        let own: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("k3s.service"))
            .collect();
        assert!(own.is_empty(), "warnings about the unit:\n{stderr}");
        // Not a tautology: a broken unit does fail the same check.
        std::fs::write(
            paths.unit_file(),
            render_unit(&paths).replace(&paths.binary().display().to_string(), "/nonexistent/k3s"),
        )
        .unwrap();
        let broken = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(paths.unit_file())
            .output()
            .unwrap();
        assert!(
            !broken.status.success(),
            "verify accepted a unit whose binary is missing"
        );
    }
}

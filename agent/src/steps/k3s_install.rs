//! Runs `k3s_install` on the host; its arguments and their validation are the model's
//! (`bosun_model::steps::k3s_install`).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bosun_model::steps::k3s::{DEFAULT_DATA_DIR, K3sPaths, K3sRelease, parse_timeout};
use bosun_model::steps::k3s_install::{K3sInstallArgs, K3sRole, small_host_defaults};
use serde_json::Value;

use super::content::unified_diff;
use super::k3s::{self, Channels, K3sNode};
use super::k3s_unit;
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

/// Keys of the small-host defaults that only `k3s server` takes (an agent runs no add-ons and
/// writes no admin kubeconfig).
const SERVER_ONLY_DEFAULTS: &[&str] = &["disable", "write-kubeconfig-mode"];

/// The content of `config.yaml`: the defaults (unless off; an agent gets only the kubelet's),
/// the step's table over them, and the paths that differ from k3s's own defaults.
pub(crate) fn render_config(
    config: &BTreeMap<String, Value>,
    small_host: bool,
    paths: &K3sPaths,
    role: K3sRole,
) -> anyhow::Result<String> {
    let mut merged = if small_host {
        small_host_defaults()
    } else {
        BTreeMap::new()
    };
    if role == K3sRole::Agent {
        merged.retain(|k, _| !SERVER_ONLY_DEFAULTS.contains(&k.as_str()));
    }
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
    if !paths.default_config_dir() && role == K3sRole::Server {
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

/// A link to make beside the binary; `replace` when something has the name already (forced).
#[derive(Debug)]
pub(crate) struct PlannedLink {
    path: PathBuf,
    replace: bool,
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
    links: Vec<PlannedLink>,
    /// The unit file changes: daemon-reload.
    unit_changed: bool,
    /// The unit is not enabled.
    enable: bool,
    /// k3s runs and something it reads changed.
    restart: bool,
    /// k3s does not run.
    start: bool,
    /// The node to wait for.
    node: K3sNode,
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

/// The mode of `path` is `mode` (false when it does not exist).
fn has_mode(path: &Path, mode: u32) -> anyhow::Result<bool> {
    Ok(lstat(path)?.is_some_and(|m| m.mode() & 0o7777 == mode))
}

/// Where `name` is found on bosund's `PATH`, outside `bin_dir` (the installer's `command -v`).
fn on_path(name: &str, bin_dir: &Path) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| dir != bin_dir)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Plans the `kubectl`/`crictl`/`ctr` links as install.sh's `create_symlinks` does: a name
/// already in `bin_dir` is left alone, and so is a command already on `PATH`, unless forced.
/// Returns the links and notes on the names skipped.
fn plan_links(bin_dir: &Path, force: bool) -> anyhow::Result<(Vec<PlannedLink>, Vec<String>)> {
    let mut links = Vec::new();
    let mut skipped = Vec::new();
    for name in LINKS {
        let link = bin_dir.join(name);
        let ours = std::fs::read_link(&link).is_ok_and(|t| t == Path::new("k3s"));
        if ours {
            continue;
        }
        let exists = lstat(&link)?.is_some();
        if exists && !force {
            continue;
        }
        if !force && let Some(other) = on_path(name, bin_dir) {
            skipped.push(format!("{name} not linked: {} is on PATH", other.display()));
            continue;
        }
        links.push(PlannedLink {
            path: link,
            replace: exists,
        });
    }
    Ok((links, skipped))
}

/// The unit and env file the step wants, adopting what is there.
struct Wanted {
    /// The unit's content and its diff.
    unit: Option<(Vec<u8>, String)>,
    env: Option<Vec<u8>>,
    node_flag: Option<String>,
    env_entries: BTreeMap<String, String>,
}

/// Plans the unit and its env file for `role`: the existing unit's flags and the existing env
/// file's entries are kept, the step's arguments laid over them. `unit`/`env` are `None` when
/// the file is as wanted (an installer's unit running the same command is).
fn plan_unit_files(
    args: &K3sInstallArgs,
    paths: &K3sPaths,
    role: K3sRole,
) -> anyhow::Result<Wanted> {
    let service = role.service();
    let unit_path = paths.unit_file_of(service);
    let env_path = paths.env_file_of(service);
    let old_unit = read_if_exists(&unit_path)?.map(|b| String::from_utf8_lossy(&b).into_owned());
    let existing = old_unit.as_deref().and_then(k3s_unit::parse_unit);
    let flags = existing
        .as_ref()
        .map(k3s_unit::UnitCommand::kept_flags)
        .unwrap_or_default();
    let rendered = k3s_unit::render_unit(paths, role, &flags);
    let unit = match (&old_unit, &existing) {
        (Some(text), _) if text == &rendered => None,
        (Some(text), Some(cmd)) if !k3s_unit::written_by_bosun(text) => {
            let wanted = k3s_unit::parse_unit(&rendered).unwrap_or_default();
            if k3s_unit::runs_the_same(cmd, &wanted, &env_path) {
                None
            } else {
                Some(rendered)
            }
        }
        _ => Some(rendered),
    };
    let unit = unit.map(|u| {
        let diff: String = unified_diff(
            &unit_path,
            old_unit.as_deref().map(str::as_bytes),
            u.as_bytes(),
        );
        (u.into_bytes(), diff)
    });

    let old_env = read_if_exists(&env_path)?
        .map(|b| k3s_unit::parse_env(&String::from_utf8_lossy(&b)))
        .unwrap_or_default();
    let mut entries = old_env.clone();
    entries.extend(args.env.clone());
    if role == K3sRole::Agent {
        if let Some(url) = &args.server_url {
            entries.insert("K3S_URL".into(), url.trim().to_string());
        }
        if let Some(token) = &args.token {
            entries.insert("K3S_TOKEN".into(), token.trim().to_string());
        }
    }
    let env_same = entries == old_env && has_mode(&env_path, 0o600)? && env_path.exists();
    let env = (!env_same).then(|| k3s_unit::render_env(service, &entries).into_bytes());
    Ok(Wanted {
        unit,
        env,
        node_flag: existing.and_then(|c| c.flag("--node-name")),
        env_entries: entries,
    })
}

impl StepKind for K3sInstallArgs {
    type Change = InstallPlan;

    async fn check(&self, _ctx: &StepContext<'_>) -> anyhow::Result<Check<InstallPlan>> {
        let paths = self.paths();
        let role = self.role()?;
        let service = role.service();
        // One host, one k3s: an agent beside a server (or the reverse) would fight over the
        // data dir, the ports and the containers.
        let other = role.other().service();
        if paths.unit_file_of(other).exists() || systemd::active_state(other).await? == "active" {
            bail!(
                "this host already has {other}.service (a k3s {}); this step asks for a k3s {}. \
                 A host is a server or an agent, not both: remove the other first (the \
                 installer's {other}-uninstall.sh), or change `role`",
                role.other().as_str(),
                role.as_str()
            );
        }
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

        let mut config_table = self.config.clone();
        if let Some(name) = self.node_name.as_deref().filter(|n| !n.trim().is_empty()) {
            config_table.insert("node-name".into(), Value::String(name.trim().to_string()));
        }
        let config = render_config(&config_table, self.small_host_defaults, &paths, role)?;
        let mut files = Vec::new();
        let mut diff = String::new();
        let old_config = read_if_exists(&paths.config_file())?;
        if let Some(f) = plan_file(paths.config_file(), config.into_bytes(), 0o600)? {
            todo.push("write config.yaml".into());
            diff.push_str(&unified_diff(&f.path, old_config.as_deref(), &f.content));
            files.push(f);
        }
        let wanted = plan_unit_files(self, &paths, role)?;
        if let Some(content) = wanted.env {
            // Its values may be secrets: say that it changes, never show them.
            todo.push(format!("write {service}.service.env"));
            files.push(PlannedFile {
                path: paths.env_file_of(service),
                content,
                mode: 0o600,
            });
        }
        let unit_changed = match wanted.unit {
            Some((content, unit_diff)) => {
                todo.push(format!("write {service}.service"));
                diff.push_str(&unit_diff);
                files.push(PlannedFile {
                    path: paths.unit_file_of(service),
                    content,
                    mode: 0o644,
                });
                true
            }
            None => false,
        };

        let mut links = Vec::new();
        if self.symlinks {
            let (planned, skipped) = plan_links(&paths.bin_dir, self.force_symlinks)?;
            if !planned.is_empty() {
                let names: Vec<String> = planned
                    .iter()
                    .map(|l| {
                        l.path
                            .file_name()
                            .unwrap_or_default()
                            .to_string_lossy()
                            .into_owned()
                    })
                    .collect();
                todo.push(format!("link {}", names.join(", ")));
            }
            links = planned;
            // Only worth saying when something else changes too (it is true on every run).
            if !todo.is_empty() {
                notes.extend(skipped);
            }
        }

        let enabled = systemd::enabled_state(service).await? == "enabled";
        let state = systemd::active_state(service).await?;
        let active = state == "active";
        // An agent still trying to join (Type=notify: `activating` until READY) runs with
        // what it read at start: a new token or URL needs a restart, not a start.
        let running = active || state == "activating" || state == "reloading";
        let touched = install.is_some() || !files.is_empty();
        let restart = running && touched;
        if !enabled {
            todo.push(format!("enable {service}.service"));
        }
        if restart {
            todo.push(format!("restart {service}.service"));
        } else if !active {
            todo.push(format!("start {service}.service"));
        }
        let node = K3sNode {
            role,
            name: k3s_unit::node_name(
                self.node_name.as_deref(),
                wanted.node_flag.as_deref(),
                &config_table,
                &wanted.env_entries,
                k3s::hostname,
            ),
        };

        if todo.is_empty() {
            let mut msg = format!(
                "k3s {version} {} running as {service}.service; config, unit and env file as \
                 wanted",
                role.as_str()
            );
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
            node,
        };
        Ok(Check::change(plan, msg).with_diff((!diff.is_empty()).then_some(diff)))
    }

    async fn apply(&self, _ctx: &StepContext<'_>, plan: InstallPlan) -> anyhow::Result<Outcome> {
        let paths = self.paths();
        let service = plan.node.role.service();
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
            if link.replace {
                host_fs::remove(&link.path, false)
                    .with_context(|| format!("replacing {}", link.path.display()))?;
            }
            host_fs::create_symlink(&link.path, Path::new("k3s"))
                .with_context(|| format!("linking {} to k3s", link.path.display()))?;
        }
        if plan.unit_changed {
            systemd::daemon_reload().await?;
        }
        let unit = format!("{service}.service");
        if plan.enable {
            systemd::systemctl_ok(&["enable", &unit]).await?;
            done.push("enabled".into());
        }
        // The run before this (re)start: its journal must not count as this run's refusal.
        let previous = systemd::invocation_id(service).await.ok().flatten();
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
            let secret = self.token.as_deref().unwrap_or_default();
            match k3s::wait_joined(
                &paths,
                &plan.version,
                &plan.node,
                timeout,
                previous.as_deref(),
                secret,
            )
            .await
            {
                Ok(took) => done.push(format!(
                    "node Ready after {:.1}s ({})",
                    took.as_secs_f64(),
                    plan.node.name
                )),
                Err(k3s::NotReady::Refused(reason)) => bail!(
                    "{}; but the server refused this agent: {reason}. Check the join token \
                     (the server's <data_dir>/server/node-token) and `server_url`",
                    done.join(", ")
                ),
                Err(k3s::NotReady::Timeout(reason)) => bail!(
                    "{}; but k3s {} is not ready after {}: {reason}. Look at `journalctl -u \
                     {service}` on the host; raise `ready_timeout` if it is only slow",
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

    fn paths(root: &str) -> K3sPaths {
        K3sPaths {
            bin_dir: format!("{root}/bin").into(),
            config_dir: format!("{root}/etc").into(),
            unit_dir: format!("{root}/units").into(),
            data_dir: format!("{root}/data").into(),
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
        let text = render_config(&config, true, &K3sPaths::default(), K3sRole::Server).unwrap();
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
    fn an_agent_gets_only_the_kubelet_defaults() {
        let got =
            yaml(&render_config(&BTreeMap::new(), true, &paths("/srv"), K3sRole::Agent).unwrap());
        assert!(got.get("disable").is_none() && got.get("write-kubeconfig-mode").is_none());
        assert!(got.get("write-kubeconfig").is_none(), "{got}");
        assert_eq!(got["data-dir"], "/srv/data");
        assert!(got["kubelet-arg"].as_array().is_some_and(|a| !a.is_empty()));
    }

    #[test]
    fn config_without_defaults_holds_only_the_table_and_moved_paths() {
        let mut config = BTreeMap::new();
        config.insert("tls-san".into(), serde_json::json!("k3s.example"));
        let got = yaml(&render_config(&config, false, &paths("/srv"), K3sRole::Server).unwrap());
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
        let text = k3s_unit::render_env("k3s", &env);
        assert!(text.ends_with("K3S_TOKEN=\"se\\\"cr\\\\et\"\n"), "{text}");
    }

    #[test]
    fn unit_runs_the_server_with_the_config_it_was_given() {
        let unit = k3s_unit::render_unit(&K3sPaths::default(), K3sRole::Server, &[]);
        assert!(unit.contains("Type=notify\n"));
        assert!(unit.contains("EnvironmentFile=-/etc/systemd/system/k3s.service.env\n"));
        assert!(
            unit.contains("ExecStart=/usr/local/bin/k3s \\\n    server\n"),
            "{unit}"
        );
        let moved = k3s_unit::render_unit(&paths("/srv"), K3sRole::Server, &[]);
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
        std::fs::write(
            paths.unit_file(),
            k3s_unit::render_unit(&paths, K3sRole::Server, &[]),
        )
        .unwrap();
        // The agent's unit, with flags kept from an installer's unit, in the same run.
        let agent_unit = paths.unit_file_of(K3sRole::Agent.service());
        let flags = [
            "--node-label=tier=web".to_string(),
            "--node-name".into(),
            "w 1".into(),
        ];
        std::fs::write(
            &agent_unit,
            k3s_unit::render_unit(&paths, K3sRole::Agent, &flags),
        )
        .unwrap();
        let out = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(paths.unit_file())
            .arg(&agent_unit)
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
            .filter(|l| l.contains("k3s.service") || l.contains("k3s-agent.service"))
            .collect();
        assert!(own.is_empty(), "warnings about the unit:\n{stderr}");
        // Not a tautology: a broken unit does fail the same check.
        std::fs::write(
            paths.unit_file(),
            k3s_unit::render_unit(&paths, K3sRole::Server, &[])
                .replace(&paths.binary().display().to_string(), "/nonexistent/k3s"),
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

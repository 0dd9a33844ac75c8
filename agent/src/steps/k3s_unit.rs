//! The two files systemd runs k3s from, as the official installer (`install.sh`,
//! `create_systemd_service_file` and `create_env_file`) writes them: the unit
//! (`k3s.service` for a server, `k3s-agent.service` for an agent) and its env file
//! (`<unit>.env`, mode 0600, `K3S_*` variables and proxies). `k3s_install` renders them, and
//! reads them back to adopt a host the installer set up: the unit's command-line flags (what
//! `INSTALL_K3S_EXEC` put after `server`/`agent`) and the env file's entries are kept.
//!
//! Pure functions: no I/O here.

use std::collections::BTreeMap;
use std::path::Path;

use bosun_model::steps::k3s::K3sPaths;
use bosun_model::steps::k3s_install::K3sRole;

/// The first line of every file bosun writes for k3s.
const HEADER: &str = "# Written by bosun (k3s_install)";

/// True when bosun wrote `text` (else the installer, or a hand).
pub(crate) fn written_by_bosun(text: &str) -> bool {
    text.starts_with(HEADER)
}

/// What a unit runs: `ExecStart`'s program, k3s's subcommand and the flags after it, and the
/// env files it reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct UnitCommand {
    /// The program (`/usr/local/bin/k3s`).
    pub binary: String,
    /// `server` or `agent` (the first word after the program that is not a flag).
    pub subcommand: Option<String>,
    /// Every word after the subcommand.
    pub flags: Vec<String>,
    /// `EnvironmentFile=` paths, without systemd's `-` (optional) prefix.
    pub env_files: Vec<String>,
}

impl UnitCommand {
    /// The flags to keep when bosun rewrites the unit: all but `--config`/`-c` (bosun decides
    /// where config.yaml is).
    pub(crate) fn kept_flags(&self) -> Vec<String> {
        let mut kept = Vec::new();
        let mut skip_next = false;
        for f in &self.flags {
            if skip_next {
                skip_next = false;
                continue;
            }
            if f == "--config" || f == "-c" {
                skip_next = true;
            } else if !f.starts_with("--config=") {
                kept.push(f.clone());
            }
        }
        kept
    }

    /// The value of flag `name` (`--node-name X` or `--node-name=X`), the last one given.
    pub(crate) fn flag(&self, name: &str) -> Option<String> {
        let mut found = None;
        let mut it = self.flags.iter();
        while let Some(f) = it.next() {
            if f == name {
                found = it.next().cloned();
            } else if let Some(v) = f.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
                found = Some(v.to_string());
            }
        }
        found
    }
}

/// Reads `ExecStart` (continuation lines joined, words split as systemd quotes them) and the
/// `EnvironmentFile`s of a unit. `None` when there is no `ExecStart`.
pub(crate) fn parse_unit(text: &str) -> Option<UnitCommand> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.starts_with('#') || trimmed.starts_with(';')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.is_empty() {
        logical.push(current);
    }
    let mut cmd = UnitCommand::default();
    let mut exec = None;
    for line in &logical {
        if let Some(v) = line.strip_prefix("ExecStart=") {
            exec = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("EnvironmentFile=") {
            cmd.env_files
                .push(v.trim().trim_start_matches('-').to_string());
        }
    }
    // systemd's prefixes (`-`, `@`, `+`, `!`) are not part of the program.
    let exec = exec?;
    let words = shlex::split(exec.trim_start_matches(['-', '@', '+', '!']))?;
    let mut words = words.into_iter();
    cmd.binary = words.next()?;
    let rest: Vec<String> = words.collect();
    match rest.first() {
        Some(first) if !first.starts_with('-') => {
            cmd.subcommand = Some(first.clone());
            cmd.flags = rest[1..].to_vec();
        }
        _ => cmd.flags = rest,
    }
    Some(cmd)
}

/// Quotes one ExecStart word for systemd: bare when it needs nothing, else in double quotes
/// with `\` and `"` escaped (systemd.service(5), "Command lines").
fn quote_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=./:,@%+".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("\"{}\"", word.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// The unit, as the official installer writes it (Type=notify for both roles: the installer
/// does so since k3s PR #5851, k3s agents notify systemd since #3430), with `flags` after the
/// subcommand and `--config` when config.yaml is not in k3s's default place.
/// KillMode=process: stopping k3s leaves the containers' shims running, so a restart does not
/// restart every pod.
pub(crate) fn render_unit(paths: &K3sPaths, role: K3sRole, flags: &[String]) -> String {
    let env_file = paths.env_file_of(role.service());
    let mut exec = format!("{} \\\n    {}", paths.binary().display(), role.as_str());
    for flag in flags {
        exec.push_str(&format!(" \\\n    {}", quote_word(flag)));
    }
    if !paths.default_config_dir() {
        exec.push_str(&format!(
            " \\\n    --config {}",
            quote_word(&paths.config_file().display().to_string())
        ));
    }
    format!(
        "{HEADER}; edits here are replaced on its next run.
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

/// True when `existing` (a unit not written by bosun) already runs what `wanted` runs: the
/// same program, subcommand and flags, reading `env_file`. Such a unit is adopted as it is.
pub(crate) fn runs_the_same(existing: &UnitCommand, wanted: &UnitCommand, env_file: &Path) -> bool {
    existing.binary == wanted.binary
        && existing.subcommand == wanted.subcommand
        && existing.flags == wanted.flags
        && existing.env_files.iter().any(|f| Path::new(f) == env_file)
}

/// The entries of an env file: `KEY=value`, `KEY="value"` or `KEY='value'` lines (systemd's
/// EnvironmentFile syntax, which the installer's `export`-derived lines follow). Comments and
/// lines that are not assignments are skipped.
pub(crate) fn parse_env(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let value = if let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            inner.replace("\\\"", "\"").replace("\\\\", "\\")
        } else if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            inner.to_string()
        } else {
            value.to_string()
        };
        out.insert(key.trim().to_string(), value);
    }
    out
}

/// The content of the env file for `service`.
pub(crate) fn render_env(service: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = format!(
        "{HEADER}: the environment of {service}.service. Mode 0600: it may hold the cluster \
         token.\n"
    );
    for (key, value) in env {
        let quoted = value.replace('\\', "\\\\").replace('"', "\\\"");
        out.push_str(&format!("{key}=\"{quoted}\"\n"));
    }
    out
}

/// The name k3s gives the node: `explicit` (the step's `node_name`), else, as k3s resolves
/// its settings, a `--node-name` flag on the command line, `node-name` in config.yaml,
/// `K3S_NODE_NAME` in the environment, and last the host name (`hostname`, lowercased).
pub(crate) fn node_name(
    explicit: Option<&str>,
    flag: Option<&str>,
    config: &BTreeMap<String, serde_json::Value>,
    env: &BTreeMap<String, String>,
    hostname: impl FnOnce() -> String,
) -> String {
    explicit
        .filter(|n| !n.trim().is_empty())
        .map(str::to_string)
        .or_else(|| flag.map(str::to_string))
        .or_else(|| {
            config
                .get("node-name")
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
        })
        .or_else(|| env.get("K3S_NODE_NAME").cloned())
        .unwrap_or_else(hostname)
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An agent unit exactly as install.sh writes it for
    /// `INSTALL_K3S_EXEC="agent --node-label=tier=web --node-name worker-7"`.
    const INSTALLER_AGENT_UNIT: &str = "[Unit]
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
EnvironmentFile=-/etc/systemd/system/k3s-agent.service.env
KillMode=process
Delegate=yes
User=root
# Having non-zero Limit*s causes performance problems due to accounting overhead
# in the kernel. We recommend using cgroups to do container-local accounting.
LimitNOFILE=1048576
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/local/bin/k3s \\
    agent \\
\t'--node-label=tier=web' \\
\t'--node-name' \\
\t'worker-7' \\

";

    #[test]
    fn an_installer_unit_is_read_back_with_its_flags() {
        let cmd = parse_unit(INSTALLER_AGENT_UNIT).unwrap();
        assert_eq!(cmd.binary, "/usr/local/bin/k3s");
        assert_eq!(cmd.subcommand.as_deref(), Some("agent"));
        assert_eq!(
            cmd.flags,
            ["--node-label=tier=web", "--node-name", "worker-7"]
        );
        assert_eq!(cmd.flag("--node-name").as_deref(), Some("worker-7"));
        assert_eq!(cmd.flag("--node-ip"), None);
        assert!(
            cmd.env_files
                .contains(&"/etc/systemd/system/k3s-agent.service.env".to_string())
        );
        assert!(!written_by_bosun(INSTALLER_AGENT_UNIT));
        // bosun's own rendering of the same role and flags runs the same command.
        let ours = render_unit(&K3sPaths::default(), K3sRole::Agent, &cmd.kept_flags());
        assert!(written_by_bosun(&ours));
        let back = parse_unit(&ours).unwrap();
        assert!(runs_the_same(
            &cmd,
            &back,
            Path::new("/etc/systemd/system/k3s-agent.service.env")
        ));
        // A server unit does not.
        let server = parse_unit(&render_unit(&K3sPaths::default(), K3sRole::Server, &[])).unwrap();
        assert!(!runs_the_same(
            &cmd,
            &server,
            Path::new("/etc/systemd/system/k3s-agent.service.env")
        ));
    }

    #[test]
    fn config_flags_are_not_kept_and_odd_words_are_quoted() {
        let cmd = UnitCommand {
            flags: vec![
                "--config".into(),
                "/x.yaml".into(),
                "--config=/y".into(),
                "--kubelet-arg=eviction-hard=memory.available<100Mi".into(),
            ],
            ..Default::default()
        };
        let kept = cmd.kept_flags();
        assert_eq!(kept, ["--kubelet-arg=eviction-hard=memory.available<100Mi"]);
        let unit = render_unit(&K3sPaths::default(), K3sRole::Server, &kept);
        assert!(
            unit.contains("\"--kubelet-arg=eviction-hard=memory.available<100Mi\""),
            "{unit}"
        );
        assert_eq!(parse_unit(&unit).unwrap().flags, kept);
    }

    #[test]
    fn the_node_name_is_resolved_as_k3s_does() {
        let host = || "box-1".to_string();
        let mut config = BTreeMap::new();
        let mut env = BTreeMap::new();
        assert_eq!(node_name(None, None, &config, &env, host), "box-1");
        env.insert("K3S_NODE_NAME".to_string(), "from-env".to_string());
        assert_eq!(node_name(None, None, &config, &env, host), "from-env");
        config.insert("node-name".to_string(), serde_json::json!("from-config"));
        assert_eq!(node_name(None, None, &config, &env, host), "from-config");
        assert_eq!(
            node_name(None, Some("from-flag"), &config, &env, host),
            "from-flag"
        );
        assert_eq!(
            node_name(Some("mine"), Some("from-flag"), &config, &env, host),
            "mine"
        );
    }

    #[test]
    fn env_files_of_either_writer_are_read() {
        let installer = "K3S_TOKEN='K10abc::server:s3cr\"et'\nK3S_URL='https://10.0.0.1:6443'\nHTTPS_PROXY=http://proxy:3128\n";
        let env = parse_env(installer);
        assert_eq!(env["K3S_TOKEN"], "K10abc::server:s3cr\"et");
        assert_eq!(env["K3S_URL"], "https://10.0.0.1:6443");
        assert_eq!(env["HTTPS_PROXY"], "http://proxy:3128");
        let ours = render_env("k3s-agent", &env);
        assert!(written_by_bosun(&ours));
        assert_eq!(parse_env(&ours), env);
    }
}

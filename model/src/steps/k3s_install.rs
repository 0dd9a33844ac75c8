//! `k3s_install`: k3s installed, configured, running as `k3s.service` (a server) or
//! `k3s-agent.service` (an agent joined to a server), its node Ready.
//!
//! ```toml
//! k3s_install = { version = "v1.31.4+k3s1" }
//! k3s_install = { channel = "stable", config = { node-label = ["role=platform"] } }
//! k3s_install = { version = "{{ k3s_version }}", mirror = "https://mirror.internal/k3s", env = { K3S_TOKEN = "{{ token }}" } }
//! k3s_install = { role = "agent", server_url = "https://10.0.1.10:6443", token = "{{ join.value }}", node_name = "worker-1" }
//! ```
//!
//! **Roles.** `role = "server"` (the default) runs `k3s server` as `k3s.service`; `role =
//! "agent"` runs `k3s agent` as `k3s-agent.service`, the names the official installer gives
//! them. An agent needs `server_url` (`https://…:6443`) and `token`, the server's join token
//! (the content of `<data_dir>/server/node-token` on the server). Take the token from a secret
//! (`[secrets]` or a registered `ssm_parameter` get), never write it in a playbook: it goes
//! to the unit's env file as `K3S_TOKEN` (0600, never diffed, never in events or errors),
//! next to `K3S_URL`. A host that runs the other role's unit is refused: one host, one k3s.
//!
//! **Node name.** The node is looked up (the Ready wait) by `node_name` when given (it is also
//! written to config.yaml as `node-name`), else by what k3s itself would use: a
//! `--node-name` flag on the unit's command line, `node-name` in `config`, `K3S_NODE_NAME` in
//! the env file, and last the host name. An agent asks the API server about its own node
//! with the kubelet's credentials (`<data_dir>/agent/kubelet.kubeconfig`): agents have no
//! admin kubeconfig.
//!
//! **Adopting a host set up by the official installer.** The unit's command-line flags (what
//! `INSTALL_K3S_EXEC` put after `server`/`agent`) and its env file's entries are kept; the
//! step's arguments are laid over them (`env`, and an agent's `K3S_URL`/`K3S_TOKEN`). An
//! installer-written unit that already runs the right binary and role, with the flags kept,
//! is left as it is (no rewrite, no restart).
//!
//! **Command links.** `kubectl`, `crictl` and `ctr` are linked to k3s in `bin_dir` only where
//! the installer would: not when a file of that name is already in `bin_dir`, and not when a
//! command of that name is already on `PATH` (a distribution's kubectl), unless
//! `force_symlinks = true`; `symlinks = false` makes none.
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
//! - `<unit_dir>/k3s.service` or `k3s-agent.service` (Type=notify for both, as the official
//!   installer writes them) and its env file `<unit>.env` (0600; its content is never shown
//!   in diffs). Put secrets there (`env`, `token`), not in `config`: config.yaml is diffed.
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
fn default_role() -> String {
    K3sRole::Server.as_str().into()
}

/// What a k3s host is in its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum K3sRole {
    /// Runs the control plane (and a kubelet): `k3s server`, `k3s.service`.
    Server,
    /// Runs a kubelet joined to a server: `k3s agent`, `k3s-agent.service`.
    Agent,
}

impl K3sRole {
    /// Parses `server` / `agent`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "server" => Ok(K3sRole::Server),
            "agent" => Ok(K3sRole::Agent),
            other => Err(format!(
                "`role` must be \"server\" or \"agent\", got {other:?}"
            )),
        }
    }
    /// `server` / `agent`: also k3s's subcommand.
    pub fn as_str(self) -> &'static str {
        match self {
            K3sRole::Server => "server",
            K3sRole::Agent => "agent",
        }
    }
    /// The systemd unit's name without `.service`, as the official installer names it.
    pub fn service(self) -> &'static str {
        match self {
            K3sRole::Server => k3s::SERVICE,
            K3sRole::Agent => k3s::AGENT_SERVICE,
        }
    }
    /// The other role.
    pub fn other(self) -> Self {
        match self {
            K3sRole::Server => K3sRole::Agent,
            K3sRole::Agent => K3sRole::Server,
        }
    }
}
fn default_ready_timeout() -> String {
    humantime::format_duration(DEFAULT_READY_TIMEOUT).to_string()
}

/// Arguments of `k3s_install`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct K3sInstallArgs {
    /// "server" (default) or "agent" (may be a template: `"{{ k3s_role }}"`).
    #[serde(default = "default_role")]
    pub role: String,
    /// An agent's server: `https://<server>:6443` (`K3S_URL`). Agents only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_url: Option<String>,
    /// An agent's join token (`K3S_TOKEN`), from a secret: the content of the server's
    /// `<data_dir>/server/node-token`. Agents only; written to the env file, never shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The node's name in the cluster (default: k3s's own choice, the host name); written to
    /// config.yaml as `node-name` and used to find the node when waiting for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
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
    /// Link `kubectl`, `crictl` and `ctr` to k3s in `bin_dir` (default true) where the
    /// official installer would: no file of that name in `bin_dir`, no such command on `PATH`.
    #[serde(default = "yes")]
    pub symlinks: bool,
    /// Link even when a command of that name is on `PATH` or a file has the name in `bin_dir`
    /// (the installer's `INSTALL_K3S_SYMLINK=force`). Default false.
    #[serde(default)]
    pub force_symlinks: bool,
    /// Directory of the binary.
    #[serde(default = "default_bin_dir")]
    pub bin_dir: String,
    /// Directory of `config.yaml` and the kubeconfig `k3s.yaml`.
    #[serde(default = "default_config_dir")]
    pub config_dir: String,
    /// Directory of the unit (`k3s.service` / `k3s-agent.service`) and its env file.
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

    /// The role, once rendered.
    pub fn role(&self) -> anyhow::Result<K3sRole> {
        K3sRole::parse(&self.role).map_err(anyhow::Error::msg)
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
        problems.extend(role_problems(self));
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

/// Environment names the step's own arguments decide.
const RESERVED_ENV: &[(&str, &str)] = &[
    ("K3S_URL", "set `server_url` instead"),
    ("K3S_TOKEN", "set `token` instead"),
];

/// What is wrong with `role`, `server_url`, `token` and `node_name` together (templated
/// values are judged once rendered).
fn role_problems(args: &K3sInstallArgs) -> Vec<String> {
    let mut problems = Vec::new();
    let role = if is_templated(&args.role) {
        None
    } else {
        match K3sRole::parse(&args.role) {
            Ok(r) => Some(r),
            Err(e) => {
                problems.push(e);
                None
            }
        }
    };
    // An empty string (a variable left at its default "") is not given.
    let given = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
    match role {
        Some(K3sRole::Agent) => {
            if !given(&args.server_url) {
                problems.push(
                    "an agent needs `server_url`, the server's https://<address>:6443".into(),
                );
            }
            if !given(&args.token) {
                problems.push(
                    "an agent needs `token`, the server's join token (its \
                     <data_dir>/server/node-token), from a secret such as \
                     `{{ secrets.k3s_token }}` or a registered ssm_parameter get"
                        .into(),
                );
            }
        }
        Some(K3sRole::Server) if given(&args.server_url) || given(&args.token) => {
            problems.push(
                "`server_url` and `token` are for `role = \"agent\"`: a server makes its own \
                 token (to join a server to another one, use config `server`/`token`)"
                    .into(),
            );
        }
        Some(K3sRole::Server) | None => {}
    }
    if let Some(url) = args.server_url.as_deref().filter(|u| !is_templated(u)) {
        // k3s and its installer accept only https:// (install.sh verify_k3s_url).
        if !url.trim().is_empty() && !url.trim().starts_with("https://") {
            problems.push(format!(
                "`server_url` must be an https:// URL such as https://10.0.1.10:6443, got {url:?}"
            ));
        }
    }
    if let Some(token) = args.token.as_deref().filter(|t| !is_templated(t)) {
        // Never quote the token itself.
        if token.contains(['\n', '\r', '\0']) {
            problems.push("`token` must be one line".into());
        }
    }
    if let Some(name) = args
        .node_name
        .as_deref()
        .filter(|n| !is_templated(n) && !n.trim().is_empty())
    {
        problems.extend(node_name_problem(name));
    }
    if args.config.contains_key("node-name") && given(&args.node_name) {
        problems.push("give the node name once: `node_name` or config `node-name`".into());
    }
    for key in args.env.keys() {
        if let Some((_, help)) = RESERVED_ENV.iter().find(|(k, _)| k == key) {
            problems.push(format!("env {key} is managed by this step: {help}"));
        }
    }
    problems
}

/// A Kubernetes node name is a DNS subdomain: lowercase letters, digits, `-` and `.`, at most
/// 253 characters, starting and ending with a letter or digit.
pub fn node_name_problem(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    (!ok).then(|| {
        format!(
            "`node_name` {name:?} is not a Kubernetes node name (lowercase letters, digits, `-` \
             and `.`, starting and ending with a letter or digit)"
        )
    })
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

    fn args(text: &str) -> K3sInstallArgs {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn roles_take_their_own_arguments() {
        assert!(args("").validate().is_empty());
        assert!(
            args("role = \"agent\"\nserver_url = \"https://10.0.0.1:6443\"\ntoken = \"{{ t }}\"")
                .validate()
                .is_empty()
        );
        // Left at "" by a bootstrap variable: not given.
        assert!(
            args("server_url = \"\"\ntoken = \"\"\nnode_name = \"\"")
                .validate()
                .is_empty()
        );
        let p = args("role = \"agent\"").validate();
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].contains("server_url") && p[1].contains("token"),
            "{p:?}"
        );
        let p = args("role = \"worker\"").validate();
        assert!(p[0].contains("\"server\" or \"agent\""), "{p:?}");
        let p = args("server_url = \"https://x:6443\"").validate();
        assert!(p[0].contains("are for `role = \"agent\"`"), "{p:?}");
        let p = args(
            "role = \"agent\"\nserver_url = \"http://x:6443\"\ntoken = \"K10::server:secret-pw\"\nnode_name = \"Bad_Name\"\nenv = { K3S_TOKEN = \"x\" }",
        )
        .validate();
        assert_eq!(p.len(), 3, "{p:?}");
        // No problem ever quotes the token.
        assert!(p.iter().all(|m| !m.contains("secret-pw")), "{p:?}");
    }

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

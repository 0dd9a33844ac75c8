//! `kube_node`: a Kubernetes node of the cluster this host serves is cordoned, drained,
//! schedulable again, or Ready (at a kubelet version), asked of the server's API with the
//! installation's admin kubeconfig (`k3s kubectl --kubeconfig <config_dir>/k3s.yaml`). It runs
//! on a k3s server; the node it names may be any node of the cluster (an agent on another host).
//!
//! ```toml
//! kube_node = { node = "agent-1", state = "cordoned" }
//! kube_node = { node = "agent-1", state = "drained", timeout = "10m" }
//! kube_node = { node = "agent-1", state = "ready", version = "v1.31.4+k3s1", timeout = "5m" }
//! kube_node = { node = "agent-1", state = "schedulable" }
//! ```
//!
//! - `cordoned`: `kubectl cordon NODE` unless the node is already unschedulable.
//! - `drained`: cordoned, then `kubectl drain NODE --ignore-daemonsets --delete-emptydir-data
//!   --timeout=<timeout>`, unless the node is unschedulable and runs no pod a drain would
//!   evict (DaemonSet pods, mirror pods and finished pods stay, as drain leaves them). Drain
//!   evicts through the Eviction API, so PodDisruptionBudgets hold: an eviction a budget
//!   refuses is retried until `timeout`, then the step fails with kubectl's reason and the
//!   node stays cordoned.
//! - `schedulable`: `kubectl uncordon NODE` unless it is schedulable already.
//! - `ready`: waits up to `timeout` for the node's Ready condition (and, with `version`, for
//!   its kubelet to report that version); changes nothing, so it is never `changed`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ActionArgs;
use super::k3s::{self, default_bin_dir, default_config_dir};
use crate::jinja::is_templated;

fn default_timeout() -> String {
    "5m".into()
}

/// Arguments of `kube_node`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubeNodeArgs {
    /// The node's name in the cluster (`kubectl get nodes`), which may differ from a host name.
    pub node: String,
    /// `cordoned`, `drained`, `schedulable` or `ready`.
    pub state: KubeNodeState,
    /// With `ready`: the kubelet version the node must report, e.g. "v1.31.4+k3s1".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// How long a drain may take, or how long to wait for Ready: a duration such as "90s"
    /// (default "5m").
    #[serde(default = "default_timeout")]
    pub timeout: String,
    /// Directory of the `k3s` binary whose `kubectl` is used.
    #[serde(default = "default_bin_dir")]
    pub bin_dir: String,
    /// Directory of the admin kubeconfig `k3s.yaml`.
    #[serde(default = "default_config_dir")]
    pub config_dir: String,
}

/// What `kube_node` makes true of the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KubeNodeState {
    /// Unschedulable (`kubectl cordon`).
    Cordoned,
    /// Unschedulable and its evictable pods evicted (`kubectl drain`).
    Drained,
    /// Schedulable (`kubectl uncordon`).
    Schedulable,
    /// Ready (at `version`, when given); a wait, never a change.
    Ready,
}

impl ActionArgs for KubeNodeArgs {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !is_templated(&self.node) && !valid_node_name(&self.node) {
            problems.push(format!(
                "`node` = {:?} is not a Kubernetes node name (lower-case letters, digits, '-' \
                 and '.', starting and ending with a letter or digit, at most 253 characters)",
                self.node
            ));
        }
        match (&self.version, self.state) {
            (Some(v), KubeNodeState::Ready) if !is_templated(v) => {
                problems.extend(k3s::K3sRelease::parse(v).err());
            }
            (Some(_), KubeNodeState::Ready) | (None, _) => {}
            (Some(_), other) => problems.push(format!(
                "`version` only goes with state = \"ready\" (this step makes the node {})",
                serde_json::to_value(other)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            )),
        }
        if !is_templated(&self.timeout) {
            problems.extend(k3s::parse_timeout("timeout", &self.timeout).err());
        }
        for (name, dir) in [("bin_dir", &self.bin_dir), ("config_dir", &self.config_dir)] {
            if !is_templated(dir) && !std::path::Path::new(dir).is_absolute() {
                problems.push(format!("`{name}` must be an absolute path, got {dir:?}"));
            }
        }
        problems
    }
}

impl KubeNodeArgs {
    /// The installation whose `k3s kubectl` and admin kubeconfig are used.
    pub fn paths(&self) -> k3s::K3sPaths {
        k3s::K3sPaths {
            bin_dir: self.bin_dir.clone().into(),
            config_dir: self.config_dir.clone().into(),
            unit_dir: k3s::default_unit_dir().into(),
            data_dir: k3s::default_data_dir().into(),
        }
    }

    /// `timeout`, once rendered.
    pub fn timeout(&self) -> anyhow::Result<std::time::Duration> {
        k3s::parse_timeout("timeout", &self.timeout).map_err(anyhow::Error::msg)
    }

    /// `version`, once rendered.
    pub fn want(&self) -> anyhow::Result<Option<k3s::K3sRelease>> {
        self.version
            .as_deref()
            .map(|v| k3s::K3sRelease::parse(v).map_err(anyhow::Error::msg))
            .transpose()
    }
}

/// A DNS subdomain name (RFC 1123), what Kubernetes accepts as a node name. Also keeps
/// anything that could read as a kubectl flag (`-x`) out of its command line.
pub fn valid_node_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !name.is_empty()
        && name.len() <= 253
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> KubeNodeArgs {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn node_names_states_and_versions_are_checked() {
        assert!(
            args("node = \"agent-1\"\nstate = \"drained\"")
                .validate()
                .is_empty()
        );
        assert!(
            args("node = \"a.b\"\nstate = \"ready\"\nversion = \"v1.31.4+k3s1\"")
                .validate()
                .is_empty()
        );
        let p = args("node = \"-x\"\nstate = \"cordoned\"").validate();
        assert!(p[0].contains("not a Kubernetes node name"), "{p:?}");
        let p =
            args("node = \"Agent\"\nstate = \"cordoned\"\nversion = \"v1.31.4+k3s1\"").validate();
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[1].contains("only goes with state = \"ready\""), "{p:?}");
        let p = args("node = \"a\"\nstate = \"ready\"\nversion = \"1.31\"\ntimeout = \"soon\"")
            .validate();
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(toml::from_str::<KubeNodeArgs>("node = \"a\"\nstate = \"gone\"").is_err());
        assert!(
            args("node = \"{{ n }}\"\nstate = \"ready\"\nversion = \"{{ v }}\"")
                .validate()
                .is_empty()
        );
    }
}

//! `helm_release`: a Helm release at a pinned chart version with given values.
//!
//! ```toml
//! [[step]]
//! name = "ingress controller"
//! helm_release = { name = "ingress", chart = "ingress-nginx/ingress-nginx", repo_url = "https://kubernetes.github.io/ingress-nginx", version = "4.11.3", namespace = "ingress", create_namespace = true, values_files = ["values/ingress.yaml"], values = { controller = { replicaCount = 1 } } }
//! ```
//!
//! Check reads `helm list --all -o json` and `helm get values -o json`: the release is
//! unchanged when its latest revision is `deployed`, at the wanted chart version, with
//! user-supplied values equal to the wanted ones (the `values_files` deep-merged in order, then
//! the inline `values`, as helm merges `-f` files). Otherwise it runs `helm upgrade --install
//! --reset-values` (so values removed from the playbook are removed from the release too) and
//! shows the change of values as a unified diff of their YAML.
//!
//! Failure: when the upgrade fails, the release is rolled back to its last deployed revision
//! and the step fails saying "rolled back to revision N"; a failed first install is
//! uninstalled (as `helm --atomic` would; bosun does the rollback itself so it can say what it
//! did). A release stuck in `pending-install`, `pending-upgrade` or `pending-rollback` (a helm
//! that was killed mid-operation leaves it so, and helm then refuses every operation on it) is
//! recovered first: rolled back to its last deployed revision, or uninstalled when it has none.
//!
//! helm talks to the cluster through `kubeconfig` (default: k3s's). Under `--check`, a cluster
//! that is not there yet (no kubeconfig: k3s is installed by an earlier step of the same run)
//! is reported as "would install" rather than as an error.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::anyhow;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ActionArgs;
use crate::jinja::is_templated;

/// k3s writes its admin kubeconfig here.
pub const DEFAULT_KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";

/// Arguments of `helm_release`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HelmReleaseArgs {
    /// Release name (lower-case letters, digits and `-`, at most 53 characters).
    pub name: String,
    /// The chart: `repo/name` (a repository added with `helm repo add`, or any prefix when
    /// `repo_url` is given), `oci://registry/path/name`, or a local chart directory.
    pub chart: String,
    /// URL of the chart repository; the chart is fetched from it by name (`helm --repo`),
    /// so no `helm repo add` is needed. Not for `oci://` charts. Empty means none (so a
    /// playbook can take it from a variable that may be left empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_url: Option<String>,
    /// The chart version, pinned (e.g. "4.11.3").
    pub version: String,
    /// Namespace of the release.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Create the namespace when it does not exist.
    #[serde(default)]
    pub create_namespace: bool,
    /// Values files (YAML), merged in order; relative paths are from the playbook's directory.
    /// Empty entries are skipped (so a playbook can take one from a variable left empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values_files: Vec<String>,
    /// Values given inline, merged over `values_files` (Jinja is rendered in its strings).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schemars(with = "BTreeMap<String, Value>")]
    pub values: Map<String, Value>,
    /// Wait until the release's resources are ready before reporting success (`helm --wait`).
    #[serde(default = "yes")]
    pub wait: bool,
    /// How long one helm operation (upgrade, rollback) may take, e.g. "5m" or "90s".
    #[serde(default = "default_timeout")]
    pub timeout: String,
    /// The kubeconfig helm reaches the cluster with.
    #[serde(default = "default_kubeconfig")]
    pub kubeconfig: String,
    /// The helm program: a path, or a name looked up in `PATH`.
    #[serde(default = "default_helm")]
    pub helm: String,
}

fn default_namespace() -> String {
    "default".into()
}

fn yes() -> bool {
    true
}

fn default_timeout() -> String {
    "5m".into()
}

fn default_kubeconfig() -> String {
    DEFAULT_KUBECONFIG.into()
}

fn default_helm() -> String {
    "helm".into()
}

impl HelmReleaseArgs {
    /// `timeout` as helm takes it: whole seconds (`300s`).
    pub fn timeout_arg(&self) -> anyhow::Result<String> {
        let d: Duration = humantime::parse_duration(&self.timeout)
            .map_err(|e| anyhow!("timeout {:?}: {e}", self.timeout))?;
        // helm takes Go durations; whole seconds are enough.
        Ok(format!("{}s", d.as_secs().max(1)))
    }

    /// The chart's name as it appears in `helm list` (`name` of `repo/name` or `oci://r/p/name`).
    pub fn chart_name(&self) -> &str {
        self.chart
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(&self.chart)
    }

    /// `repo_url`, unless empty.
    pub fn repo(&self) -> Option<&str> {
        self.repo_url.as_deref().filter(|u| !u.trim().is_empty())
    }

    /// The chart as `helm list` names the wanted release: `name-version`.
    pub fn wanted_chart(&self) -> String {
        format!("{}-{}", self.chart_name(), self.version)
    }
}

impl ActionArgs for HelmReleaseArgs {
    const LOCAL_FILES: &'static [(&'static str, super::LocalFileRole)] =
        &[("values_files", super::LocalFileRole::ValuesFile)];

    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !is_templated(&self.name) && !is_dns_label(&self.name, 53) {
            problems.push(format!(
                "name {:?} is not a release name: lower-case letters, digits and '-', starting and ending with a letter or digit, at most 53 characters",
                self.name
            ));
        }
        if !is_templated(&self.namespace) && !is_dns_label(&self.namespace, 63) {
            problems.push(format!(
                "namespace {:?} is not a Kubernetes namespace name: lower-case letters, digits and '-', at most 63 characters",
                self.namespace
            ));
        }
        if self.chart.trim().is_empty() {
            problems
                .push("chart is empty: give `repo/name`, `oci://...` or a chart directory".into());
        }
        if self.version.trim().is_empty() {
            problems.push("version is empty: pin the chart version, e.g. \"4.11.3\"".into());
        }
        if self.repo().is_some() && self.chart.starts_with("oci://") {
            problems.push("`repo_url` does not apply to an oci:// chart: remove it".into());
        }
        if !is_templated(&self.timeout)
            && let Err(e) = humantime::parse_duration(&self.timeout)
        {
            problems.push(format!(
                "timeout {:?} is not a duration such as \"5m\" or \"90s\": {e}",
                self.timeout
            ));
        }
        problems
    }
}

fn is_dns_label(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validation_names_each_bad_argument() {
        let args: HelmReleaseArgs = serde_json::from_value(json!({
            "name": "Web_App", "chart": "oci://r/x", "repo_url": "https://charts", "version": "",
            "namespace": "-x", "timeout": "soon"
        }))
        .unwrap();
        let problems = args.validate().join("\n");
        for needle in [
            "name \"Web_App\"",
            "namespace \"-x\"",
            "version is empty",
            "`repo_url` does not apply",
            "timeout \"soon\"",
        ] {
            assert!(
                problems.contains(needle),
                "{needle} missing in:\n{problems}"
            );
        }
    }
}

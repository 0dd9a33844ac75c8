//! What `k3s_install` and `k3s_upgrade` share when they run: a release downloaded and verified,
//! the update server's channel list, and the probes that say whether k3s is up and healthy
//! (asked of `k3s kubectl` through `host::k3s`, which also reads an installed binary's
//! version). Versions, release file names, the paths of an installation and the shared
//! argument types are the model's (`bosun_model::steps::k3s`).
//!
//! Channels (`stable`, `latest`, and one per minor, `v1.31`) are read from the update server's
//! channel list, the JSON document at `https://update.k3s.io/v1-release/channels`: `{"data":
//! [{"id": "stable", "latest": "v1.31.4+k3s1"}, {"id": "v1.30", "latest": "v1.30.8+k3s1"},
//! ...]}`. The same document gives the latest patch of every minor, which is what stepping
//! through minors needs, so one request serves both and a mirror of it is one static file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bosun_model::steps::k3s::{K3sPaths, K3sRelease, arch_files, release_url};
use bosun_model::steps::k3s_install::K3sRole;
use serde_json::Value;

use super::k3s_unit;
use crate::host::k3s::{installed_version, kubectl, kubectl_as, kubectl_error};
use crate::host::{download, fs as host_fs, systemd};

/// Pause between two health probes while waiting.
const POLL: Duration = Duration::from_millis(500);

/// The releases to install, in order, to go from `from` to `to`: just `to` when it is in the
/// same or the next minor; otherwise, only when `step_through` is set, the latest patch of each
/// minor in between (from `channels`) and then `to`. Kubernetes supports upgrading one minor
/// at a time (the version skew policy), so skipping is refused, as are downgrades.
pub(crate) fn upgrade_path(
    from: &K3sRelease,
    to: &K3sRelease,
    step_through: bool,
    channels: Option<&Channels>,
) -> Result<Vec<K3sRelease>, String> {
    if to < from {
        return Err(format!(
            "{to} is older than the installed {from}: Kubernetes does not support downgrades; \
             to go back, restore a datastore backup taken before the upgrade"
        ));
    }
    if to.major != from.major {
        return Err(format!(
            "{from} → {to} changes the major version; bosun only upgrades within a major version"
        ));
    }
    if to.minor <= from.minor + 1 {
        return Ok(vec![to.clone()]);
    }
    let between: Vec<String> = (from.minor + 1..to.minor)
        .map(|m| format!("v{}.{m}", to.major))
        .collect();
    if !step_through {
        return Err(format!(
            "{from} → {to} skips minor version(s) {}: Kubernetes supports upgrading one minor \
             at a time. Upgrade to the latest {} first, or set `step_through_minors = true` to \
             go through the latest patch of each minor in turn",
            between.join(", "),
            between[0]
        ));
    }
    let channels = channels.ok_or("stepping through minors needs the channel list")?;
    let mut path = Vec::new();
    for name in &between {
        let latest = channels.latest(name).ok_or_else(|| {
            format!(
                "the channel list has no channel {name}, needed to step through it; \
                 check `channel_url` or upgrade one minor at a time with explicit versions"
            )
        })?;
        path.push(latest);
    }
    path.push(to.clone());
    Ok(path)
}

/// The update server's channel list.
#[derive(Debug, Clone, Default)]
pub(crate) struct Channels(Vec<(String, String)>);

impl Channels {
    /// Parses the channel list document (`{"data": [{"id": ..., "latest": ...}]}`).
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let doc: Value =
            serde_json::from_str(text).map_err(|e| format!("the channel list is not JSON: {e}"))?;
        let data = doc["data"]
            .as_array()
            .ok_or("the channel list has no `data` array")?;
        Ok(Channels(
            data.iter()
                .filter_map(|c| {
                    let name = c["id"].as_str().or(c["name"].as_str())?;
                    let latest = c["latest"].as_str()?;
                    Some((name.to_string(), latest.to_string()))
                })
                .collect(),
        ))
    }

    /// Downloads and parses the channel list at `url`.
    pub(crate) async fn fetch(client: &reqwest::Client, url: &str) -> anyhow::Result<Self> {
        let text = download::fetch_text(client, url)
            .await
            .context("fetching the k3s channel list (set `channel_url` for a mirror)")?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{url}: {e}"))
    }

    /// The latest release of channel `name` (`stable`, `v1.30`).
    pub(crate) fn latest(&self, name: &str) -> Option<K3sRelease> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| K3sRelease::parse(v).ok())
    }
}

/// Downloads the k3s binary of `version` into a staging file in `bin_dir` (so that the final
/// rename is atomic), verified against the release's checksum list, and checks that it reports
/// `version`. Returns the staged path; the caller renames it into place. On any failure nothing
/// is left behind.
pub(crate) async fn stage_release(
    client: &reqwest::Client,
    mirror: &str,
    arch: Option<&str>,
    version: &K3sRelease,
    bin_dir: &Path,
) -> anyhow::Result<PathBuf> {
    let files = arch_files(arch).map_err(anyhow::Error::msg)?;
    let list_url = release_url(mirror, version, files.checksums);
    let list = download::fetch_text(client, &list_url)
        .await
        .with_context(|| format!("fetching the checksums of k3s {version}"))?;
    let digest = download::digest_in_list(&list, files.binary).with_context(|| {
        format!(
            "{list_url} lists no SHA-256 for {}: refusing to install an unverified binary",
            files.binary
        )
    })?;
    let staged = bin_dir.join(format!(".k3s-{version}.bosun-staged"));
    let url = release_url(mirror, version, files.binary);
    download::fetch_verified(client, &url, &digest, &staged, 0o755).await?;
    let reported = installed_version(&staged).await;
    match reported {
        Ok(Some(v)) if &v == version => Ok(staged),
        other => {
            let _ = host_fs::remove(&staged, false);
            let said = match other {
                Ok(Some(v)) => v.to_string(),
                Ok(None) => "nothing".into(),
                Err(e) => format!("an error ({e:#})"),
            };
            bail!(
                "{url} passed its checksum but reports version {said}, not {version}: the \
                 mirror serves the wrong file; nothing was installed"
            )
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Health
// ---------------------------------------------------------------------------------------------

/// How much of the cluster a health check asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    /// Unit active and the node Ready at the version: what an install waits for.
    NodeReady,
    /// Also `/readyz` and every kube-system pod Ready: what an upgrade must show.
    Full,
}

/// The node a health check looks at: this host's, in its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct K3sNode {
    /// Server or agent: which unit runs k3s and which credentials can see the node.
    pub role: K3sRole,
    /// The node's name in the cluster.
    pub name: String,
}

impl K3sNode {
    /// This host's node as an installation says: the role from the unit present
    /// (`k3s-agent.service` makes an agent), the name as k3s resolves it (a `--node-name`
    /// flag, config.yaml's `node-name`, `K3S_NODE_NAME` in the env file, the host name).
    pub(crate) fn installed(paths: &K3sPaths) -> Self {
        let read = |p: &Path| {
            host_fs::read_if_exists(p)
                .ok()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        let role = if paths.unit_file_of(K3sRole::Agent.service()).exists()
            && !paths.unit_file().exists()
        {
            K3sRole::Agent
        } else {
            K3sRole::Server
        };
        let flag = read(&paths.unit_file_of(role.service()))
            .as_deref()
            .and_then(k3s_unit::parse_unit)
            .and_then(|c| c.flag("--node-name"));
        let config: BTreeMap<String, Value> = read(&paths.config_file())
            .and_then(|t| serde_norway::from_str(&t).ok())
            .unwrap_or_default();
        let env = read(&paths.env_file_of(role.service()))
            .map(|t| k3s_unit::parse_env(&t))
            .unwrap_or_default();
        K3sNode {
            role,
            name: k3s_unit::node_name(None, flag.as_deref(), &config, &env, hostname),
        }
    }
}

/// Why a node did not come up.
#[derive(Debug)]
pub(crate) enum NotReady {
    /// The server refused the agent (a wrong token): waiting longer cannot help.
    Refused(String),
    /// Not ready by the deadline: the last reason seen.
    Timeout(String),
}

/// What k3s logs when a server refuses an agent's join token (k3s pkg/clientaccess/token.go
/// and pkg/agent/config: the CA hash part does not match, or the password is refused with
/// 401 Unauthorized). A line with one of these means the token is wrong.
const REFUSALS: &[&str] = &[
    "token CA hash does not match",
    "401 Unauthorized",
    "invalid token format",
    "invalid token CA hash length",
];

/// The last journal line of the current run of `service` saying the server refused the join,
/// with `secret` masked should it appear. A run whose InvocationID is `previous` (the one
/// before this step restarted the unit: a restart with `--no-block` has not happened yet) is
/// not looked at.
async fn join_refusal(service: &str, previous: Option<&str>, secret: &str) -> Option<String> {
    let id = systemd::invocation_id(service).await.ok().flatten()?;
    if Some(id.as_str()) == previous {
        return None;
    }
    let text = systemd::journal_of_invocation(&id).await.ok()?;
    let line = text
        .lines()
        .rev()
        .find(|l| REFUSALS.iter().any(|r| l.contains(r)))?;
    // k3s logs through logrus: `time=... level=error msg="..."`; the message is what counts.
    let msg = line
        .split_once("msg=")
        .map(|(_, m)| m.trim().trim_matches('"').replace("\\\"", "\""))
        .unwrap_or_else(|| line.trim().to_string());
    let msg = if secret.is_empty() {
        msg
    } else {
        msg.replace(secret, "********")
    };
    Some(msg.chars().take(1024).collect())
}

/// Waits until `node` is Ready at `want` (a server: also its unit active), or the run of an
/// agent's unit started after `previous` (its InvocationID before the start) logged that the
/// server refused it, or `timeout` passes. `secret` (the join token) is masked in anything
/// quoted.
pub(crate) async fn wait_joined(
    paths: &K3sPaths,
    want: &K3sRelease,
    node: &K3sNode,
    timeout: Duration,
    previous: Option<&str>,
    secret: &str,
) -> Result<Duration, NotReady> {
    let begun = Instant::now();
    loop {
        match probe(paths, want, Health::NodeReady, node).await {
            Ok(()) => return Ok(begun.elapsed()),
            Err(reason) => {
                if node.role == K3sRole::Agent
                    && let Some(refused) = join_refusal(node.role.service(), previous, secret).await
                {
                    return Err(NotReady::Refused(refused));
                }
                if begun.elapsed() >= timeout {
                    return Err(NotReady::Timeout(reason));
                }
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

/// One look at the installation: `Ok` when healthy at `want`, else what is not yet right.
/// An agent's node is read with the kubelet's own credentials (agents have no admin
/// kubeconfig), and `Health::Full` asks of an agent no more than its node: the API server's
/// health and the kube-system pods are the servers' to show.
pub(crate) async fn probe(
    paths: &K3sPaths,
    want: &K3sRelease,
    level: Health,
    node: &K3sNode,
) -> Result<(), String> {
    let service = node.role.service();
    let active = systemd::active_state(service)
        .await
        .map_err(|e| format!("{e:#}"))?;
    if active != "active" {
        return Err(format!("unit {service}.service is {active}"));
    }
    if node.role == K3sRole::Agent {
        let kubeconfig = paths.kubelet_kubeconfig();
        if !kubeconfig.exists() {
            return Err(format!(
                "the agent has not joined yet ({} does not exist)",
                kubeconfig.display()
            ));
        }
        let out = kubectl_as(
            paths,
            &kubeconfig,
            &["get", "node", &node.name, "-o", "json"],
        )
        .await
        .map_err(|e| format!("{e:#}"))?;
        if out.rc != 0 {
            return Err(format!("get node {}: {}", node.name, kubectl_error(&out)));
        }
        return node_ready(&out.stdout, &node.name, want);
    }
    if level == Health::Full {
        let out = kubectl(paths, &["get", "--raw", "/readyz"])
            .await
            .map_err(|e| format!("{e:#}"))?;
        if out.rc != 0 || out.stdout.trim() != "ok" {
            return Err(format!("/readyz: {}", kubectl_error(&out)));
        }
    }
    let out = kubectl(paths, &["get", "nodes", "-o", "json"])
        .await
        .map_err(|e| format!("{e:#}"))?;
    if out.rc != 0 {
        return Err(format!("get nodes: {}", kubectl_error(&out)));
    }
    node_ready(&out.stdout, &node.name, want)?;
    if level == Health::Full {
        let out = kubectl(paths, &["get", "pods", "-n", "kube-system", "-o", "json"])
            .await
            .map_err(|e| format!("{e:#}"))?;
        if out.rc != 0 {
            return Err(format!("get pods: {}", kubectl_error(&out)));
        }
        pods_ready(&out.stdout)?;
    }
    Ok(())
}

/// Probes until healthy or `timeout` passes; returns how long it took, or the last reason.
pub(crate) async fn wait_healthy(
    paths: &K3sPaths,
    want: &K3sRelease,
    level: Health,
    timeout: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    let node = K3sNode::installed(paths);
    loop {
        match probe(paths, want, level, &node).await {
            Ok(()) => return Ok(started.elapsed()),
            Err(reason) if started.elapsed() >= timeout => return Err(reason),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// This host's name as k3s names a node after it: lowercased.
pub(crate) fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().to_lowercase())
        .unwrap_or_default()
}

/// Judges `kubectl get nodes -o json` (a List) or `get node NAME -o json` (one Node): the
/// node named `name` must be Ready and run kubelet `want`.
pub(crate) fn node_ready(nodes_json: &str, name: &str, want: &K3sRelease) -> Result<(), String> {
    let doc: Value =
        serde_json::from_str(nodes_json).map_err(|e| format!("get nodes: not JSON: {e}"))?;
    let items = if doc["kind"] == "Node" {
        vec![doc.clone()]
    } else {
        doc["items"].as_array().cloned().unwrap_or_default()
    };
    let node = match items.as_slice() {
        [] => return Err("no node has registered yet".into()),
        many => many
            .iter()
            .find(|n| n["metadata"]["name"] == name)
            .cloned()
            .ok_or_else(|| {
                let names: Vec<&str> = many
                    .iter()
                    .filter_map(|n| n["metadata"]["name"].as_str())
                    .collect();
                format!(
                    "no node named {name:?} (the cluster has {}); set `node_name` if k3s names \
                     this host's node otherwise",
                    names.join(", ")
                )
            })?,
    };
    node_is_ready(&node, Some(want))
}

/// `Ok` when `node` (one Node object) is Ready and, with `want`, its kubelet reports that
/// version; else what is not right yet.
pub(crate) fn node_is_ready(node: &Value, want: Option<&K3sRelease>) -> Result<(), String> {
    let name = node["metadata"]["name"].as_str().unwrap_or("?");
    let ready = node["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
    match ready {
        Some(c) if c["status"] == "True" => {}
        Some(c) => {
            return Err(format!(
                "node {name} is not Ready ({}: {})",
                c["reason"].as_str().unwrap_or("no reason"),
                c["message"].as_str().unwrap_or("")
            ));
        }
        None => return Err(format!("node {name} reports no Ready condition yet")),
    }
    if let Some(want) = want {
        let kubelet = node["status"]["nodeInfo"]["kubeletVersion"]
            .as_str()
            .unwrap_or("");
        if K3sRelease::parse(kubelet).ok().as_ref() != Some(want) {
            return Err(format!("node {name} runs kubelet {kubelet:?}, want {want}"));
        }
    }
    Ok(())
}

/// Judges `kubectl get pods -o json`: every pod that should be serving (phase Running or
/// Pending) is Ready. Pods of finished jobs (Succeeded, Failed) are not judged.
pub(crate) fn pods_ready(pods_json: &str) -> Result<(), String> {
    let doc: Value =
        serde_json::from_str(pods_json).map_err(|e| format!("get pods: not JSON: {e}"))?;
    let not_ready: Vec<String> = doc["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
        .filter(|p| {
            !p["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
        .map(|p| p["metadata"]["name"].as_str().unwrap_or("?").to_string())
        .collect();
    if not_ready.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "kube-system pods not Ready: {}",
            not_ready.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> K3sRelease {
        K3sRelease::parse(s).unwrap()
    }

    fn channels() -> Channels {
        Channels::parse(
            r#"{"type":"collection","data":[
                {"id":"stable","type":"channel","name":"stable","latest":"v1.31.4+k3s1"},
                {"id":"v1.29","type":"channel","name":"v1.29","latest":"v1.29.12+k3s1"},
                {"id":"v1.30","type":"channel","name":"v1.30","latest":"v1.30.8+k3s1"},
                {"id":"testing","type":"channel","name":"testing"}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn channels_name_their_latest_release() {
        let c = channels();
        assert_eq!(c.latest("stable"), Some(v("v1.31.4+k3s1")));
        assert_eq!(c.latest("v1.30"), Some(v("v1.30.8+k3s1")));
        assert_eq!(c.latest("testing"), None);
        assert_eq!(c.latest("v1.28"), None);
        assert!(Channels::parse("{}").is_err());
        assert!(Channels::parse("<html>").is_err());
    }

    #[test]
    fn upgrade_paths_go_one_minor_at_a_time() {
        let c = channels();
        let path = |from, to, step| upgrade_path(&v(from), &v(to), step, Some(&c));
        assert_eq!(
            path("v1.30.2+k3s1", "v1.30.8+k3s1", false),
            Ok(vec![v("v1.30.8+k3s1")])
        );
        assert_eq!(
            path("v1.30.2+k3s1", "v1.31.4+k3s1", false),
            Ok(vec![v("v1.31.4+k3s1")])
        );
        let refused = path("v1.29.1+k3s1", "v1.31.4+k3s1", false).unwrap_err();
        assert!(
            refused.contains("skips minor version(s) v1.30"),
            "{refused}"
        );
        assert!(refused.contains("step_through_minors"), "{refused}");
        assert_eq!(
            path("v1.28.1+k3s1", "v1.31.4+k3s1", true),
            Ok(vec![
                v("v1.29.12+k3s1"),
                v("v1.30.8+k3s1"),
                v("v1.31.4+k3s1")
            ])
        );
        assert_eq!(
            path("v1.29.1+k3s1", "v1.31.4+k3s1", true),
            Ok(vec![v("v1.30.8+k3s1"), v("v1.31.4+k3s1")])
        );
        assert!(
            upgrade_path(&v("v1.27.1+k3s1"), &v("v1.29.1+k3s1"), true, Some(&c))
                .unwrap_err()
                .contains("no channel v1.28")
        );
        assert!(
            path("v1.31.4+k3s1", "v1.30.8+k3s1", true)
                .unwrap_err()
                .contains("downgrades")
        );
    }

    fn nodes(ready: &str, kubelet: &str) -> String {
        serde_json::json!({"kind": "List", "items": [{
            "metadata": {"name": "box"},
            "status": {
                "conditions": [
                    {"type": "MemoryPressure", "status": "False"},
                    {"type": "Ready", "status": ready, "reason": "KubeletNotReady", "message": "cni not ready"}],
                "nodeInfo": {"kubeletVersion": kubelet}}}]})
        .to_string()
    }

    #[test]
    fn node_readiness_needs_ready_and_the_wanted_kubelet() {
        let want = v("v1.31.4+k3s1");
        assert_eq!(
            node_ready(&nodes("True", "v1.31.4+k3s1"), "box", &want),
            Ok(())
        );
        // The node is found by its name, never by being the only one.
        let e = node_ready(&nodes("True", "v1.31.4+k3s1"), "other", &want).unwrap_err();
        assert!(
            e.contains("no node named \"other\" (the cluster has box)"),
            "{e}"
        );
        // `get node NAME -o json` answers one Node, not a List.
        let one = serde_json::from_str::<Value>(&nodes("True", "v1.31.4+k3s1")).unwrap()["items"]
            [0]
        .clone();
        let mut one = one;
        one["kind"] = "Node".into();
        assert_eq!(node_ready(&one.to_string(), "box", &want), Ok(()));
        let e = node_ready(&nodes("False", "v1.31.4+k3s1"), "box", &want).unwrap_err();
        assert!(
            e.contains("not Ready (KubeletNotReady: cni not ready)"),
            "{e}"
        );
        let e = node_ready(&nodes("True", "v1.30.8+k3s1"), "box", &want).unwrap_err();
        assert!(
            e.contains("runs kubelet \"v1.30.8+k3s1\", want v1.31.4+k3s1"),
            "{e}"
        );
        assert!(node_ready(r#"{"items":[]}"#, "box", &want).is_err());
        assert!(node_ready("refused", "box", &want).is_err());
    }

    #[test]
    fn pods_of_finished_jobs_are_not_judged() {
        let pods = serde_json::json!({"items": [
            {"metadata": {"name": "coredns-1"}, "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
            {"metadata": {"name": "helm-install-traefik"}, "status": {"phase": "Succeeded", "conditions": [{"type": "Ready", "status": "False"}]}},
            {"metadata": {"name": "local-path-1"}, "status": {"phase": "Pending"}},
            {"metadata": {"name": "metrics-1"}, "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}}]});
        assert_eq!(
            pods_ready(&pods.to_string()),
            Err("kube-system pods not Ready: local-path-1, metrics-1".into())
        );
        assert_eq!(pods_ready(r#"{"items":[]}"#), Ok(()));
    }
}

//! Runs `kube_node` on a k3s server: a node of its cluster cordoned, drained, schedulable or
//! waited for Ready, through `k3s kubectl` with the installation's admin kubeconfig
//! (`host::k3s::kubectl`). The arguments and their validation are the model's
//! (`bosun_model::steps::kube_node`); what kubectl's answers mean is decided here.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use bosun_model::steps::k3s::{K3sPaths, K3sRelease};
use bosun_model::steps::kube_node::{KubeNodeArgs, KubeNodeState};
use serde_json::Value;

use super::k3s::node_is_ready;
use super::{Check, Outcome, StepContext, StepKind};
use crate::host::k3s::{kubectl, kubectl_error};
use crate::host::process::quote_end;

/// Pause between two looks at a node while waiting for it.
const POLL: Duration = Duration::from_millis(500);

/// What the node looks like now.
#[derive(Debug)]
pub struct NodeView {
    unschedulable: bool,
    /// Pods a drain would evict (not DaemonSet-owned, not mirror pods, not finished).
    evictable: Vec<String>,
}

/// `kubectl get node NODE -o json`, parsed; the error names the node and kubectl's reason.
async fn node(a: &KubeNodeArgs, paths: &K3sPaths) -> anyhow::Result<Value> {
    let out = kubectl(paths, &["get", "node", &a.node, "-o", "json"]).await?;
    if out.rc != 0 {
        bail!("kubectl get node {}: {}", a.node, kubectl_error(&out));
    }
    serde_json::from_str(&out.stdout)
        .map_err(|e| anyhow!("kubectl get node {}: not JSON: {e}", a.node))
}

async fn view(a: &KubeNodeArgs, paths: &K3sPaths, pods: bool) -> anyhow::Result<NodeView> {
    let node = node(a, paths).await?;
    let unschedulable = node["spec"]["unschedulable"].as_bool().unwrap_or(false);
    let evictable = if pods {
        let selector = format!("spec.nodeName={}", a.node);
        let out = kubectl(
            paths,
            &[
                "get",
                "pods",
                "-A",
                "--field-selector",
                &selector,
                "-o",
                "json",
            ],
        )
        .await?;
        if out.rc != 0 {
            bail!("kubectl get pods on {}: {}", a.node, kubectl_error(&out));
        }
        evictable_pods(&out.stdout).map_err(anyhow::Error::msg)?
    } else {
        Vec::new()
    };
    Ok(NodeView {
        unschedulable,
        evictable,
    })
}

/// Polls until the node is Ready (at `want`) or the timeout passes.
async fn wait_ready(
    a: &KubeNodeArgs,
    paths: &K3sPaths,
    want: Option<&K3sRelease>,
) -> anyhow::Result<Duration> {
    let timeout = a.timeout()?;
    let started = Instant::now();
    loop {
        let reason = match node(a, paths).await {
            Ok(node) => match node_is_ready(&node, want) {
                Ok(()) => return Ok(started.elapsed()),
                Err(r) => r,
            },
            Err(e) => format!("{e:#}"),
        };
        if started.elapsed() >= timeout {
            bail!(
                "node {} is not Ready{} within {}: {reason}",
                a.node,
                want.map(|v| format!(" at {v}")).unwrap_or_default(),
                humantime::format_duration(timeout)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

impl StepKind for KubeNodeArgs {
    type Change = NodeView;

    async fn check(&self, _ctx: &StepContext<'_>) -> anyhow::Result<Check<NodeView>> {
        let paths = self.paths();
        let name = &self.node;
        if self.state == KubeNodeState::Ready {
            let want = self.want()?;
            let node = node(self, &paths).await?;
            let at = want
                .as_ref()
                .map(|v| format!(" at {v}"))
                .unwrap_or_default();
            return Ok(match node_is_ready(&node, want.as_ref()) {
                Ok(()) => Check::unchanged(format!("node {name} is Ready{at}")),
                Err(reason) => Check::change(
                    NodeView {
                        unschedulable: false,
                        evictable: Vec::new(),
                    },
                    format!("wait for node {name} to be Ready{at} ({reason})"),
                ),
            });
        }
        let view = view(self, &paths, self.state == KubeNodeState::Drained).await?;
        let done = match self.state {
            KubeNodeState::Cordoned => view.unschedulable,
            KubeNodeState::Schedulable => !view.unschedulable,
            KubeNodeState::Drained => view.unschedulable && view.evictable.is_empty(),
            KubeNodeState::Ready => unreachable!("answered above"),
        };
        if done {
            return Ok(Check::unchanged(format!(
                "node {name} is {}",
                match self.state {
                    KubeNodeState::Schedulable => "schedulable",
                    KubeNodeState::Drained => "cordoned and runs no pod to evict",
                    _ => "cordoned",
                }
            )));
        }
        let message = match self.state {
            KubeNodeState::Cordoned => format!("cordon node {name}"),
            KubeNodeState::Schedulable => format!("uncordon node {name}"),
            _ if view.evictable.is_empty() => format!("cordon node {name} (no pod to evict)"),
            _ => format!(
                "drain node {name}: evict {} pod(s): {}",
                view.evictable.len(),
                view.evictable.join(", ")
            ),
        };
        Ok(Check::change(view, message))
    }

    async fn apply(&self, _ctx: &StepContext<'_>, view: NodeView) -> anyhow::Result<Outcome> {
        let paths = self.paths();
        let name = self.node.as_str();
        let (verb, changed) = match self.state {
            KubeNodeState::Ready => {
                let want = self.want()?;
                let after = wait_ready(self, &paths, want.as_ref()).await?;
                return Ok(Outcome {
                    changed: false,
                    message: Some(format!(
                        "node {name} is Ready{} (after {:.1}s)",
                        want.map(|v| format!(" at {v}")).unwrap_or_default(),
                        after.as_secs_f64()
                    )),
                    ..Outcome::default()
                });
            }
            KubeNodeState::Cordoned => ("cordon", "cordoned"),
            KubeNodeState::Schedulable => ("uncordon", "uncordoned"),
            KubeNodeState::Drained => ("drain", "drained"),
        };
        let timeout_flag = format!("--timeout={}s", self.timeout()?.as_secs().max(1));
        let mut argv = vec![verb, name];
        if self.state == KubeNodeState::Drained {
            // Drain evicts through the Eviction API (PodDisruptionBudgets hold) and retries a
            // refused eviction until --timeout; DaemonSet pods cannot be evicted (their
            // controller would put them back), emptyDir data is lost with the pod anyway.
            argv.extend([
                "--ignore-daemonsets",
                "--delete-emptydir-data",
                timeout_flag.as_str(),
            ]);
        }
        let out = kubectl(&paths, &argv).await?;
        if out.rc != 0 {
            let reason = quote_end(
                if out.stderr.trim().is_empty() {
                    &out.stdout
                } else {
                    &out.stderr
                },
                0,
            );
            bail!(
                "kubectl {verb} {name} failed (exit code {}): {}{}",
                out.rc,
                reason.trim(),
                if self.state == KubeNodeState::Drained {
                    "; the node stays cordoned"
                } else {
                    ""
                }
            );
        }
        let evicted = out
            .stdout
            .lines()
            .filter(|l| l.trim_end().ends_with(" evicted"))
            .count();
        let message = if self.state == KubeNodeState::Drained {
            format!(
                "node {name} drained: {evicted} pod(s) evicted{}",
                if view.unschedulable {
                    ""
                } else {
                    " (cordoned first)"
                }
            )
        } else {
            format!("node {name} {changed}")
        };
        Ok(Outcome {
            changed: true,
            message: Some(message),
            ..Outcome::default()
        })
    }
}

/// The `namespace/name` of the pods in a `get pods -o json` list that `kubectl drain
/// --ignore-daemonsets` would evict: not owned by a DaemonSet, not a mirror (static) pod, not
/// finished (Succeeded or Failed pods are deleted, not evicted, and hold nothing up).
fn evictable_pods(pods_json: &str) -> Result<Vec<String>, String> {
    let doc: Value =
        serde_json::from_str(pods_json).map_err(|e| format!("get pods: not JSON: {e}"))?;
    Ok(doc["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
        .filter(|p| {
            !p["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|o| o.iter().any(|r| r["kind"] == "DaemonSet"))
        })
        .filter(|p| p["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_null())
        .map(|p| {
            format!(
                "{}/{}",
                p["metadata"]["namespace"].as_str().unwrap_or("default"),
                p["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn drain_leaves_daemonset_mirror_and_finished_pods() {
        let pods = json!({"items": [
            {"metadata": {"name": "web-1", "namespace": "shop"}, "status": {"phase": "Running"}},
            {"metadata": {"name": "svclb-1", "namespace": "kube-system",
                "ownerReferences": [{"kind": "DaemonSet", "name": "svclb"}]}, "status": {"phase": "Running"}},
            {"metadata": {"name": "etcd-x", "namespace": "kube-system",
                "annotations": {"kubernetes.io/config.mirror": "abc"}}, "status": {"phase": "Running"}},
            {"metadata": {"name": "job-1", "namespace": "ci"}, "status": {"phase": "Succeeded"}},
            {"metadata": {"name": "web-2", "namespace": "shop",
                "ownerReferences": [{"kind": "ReplicaSet", "name": "web"}]}, "status": {"phase": "Pending"}}]});
        assert_eq!(
            evictable_pods(&pods.to_string()).unwrap(),
            ["shop/web-1", "shop/web-2"]
        );
        assert!(evictable_pods("nope").is_err());
    }

    #[test]
    fn ready_needs_the_condition_and_the_version_asked_for() {
        let node = |status: &str, kubelet: &str| {
            json!({"metadata": {"name": "agent-1"}, "status": {
                "conditions": [{"type": "Ready", "status": status, "reason": "KubeletNotReady", "message": "PLEG"}],
                "nodeInfo": {"kubeletVersion": kubelet}}})
        };
        let v31 = K3sRelease::parse("v1.31.4+k3s1").unwrap();
        assert_eq!(
            node_is_ready(&node("True", "v1.31.4+k3s1"), Some(&v31)),
            Ok(())
        );
        assert_eq!(node_is_ready(&node("True", "v1.30.6+k3s1"), None), Ok(()));
        let e = node_is_ready(&node("True", "v1.30.6+k3s1"), Some(&v31)).unwrap_err();
        assert!(
            e.contains("runs kubelet \"v1.30.6+k3s1\", want v1.31.4+k3s1"),
            "{e}"
        );
        let e = node_is_ready(&node("False", "v1.31.4+k3s1"), None).unwrap_err();
        assert!(
            e.contains("agent-1 is not Ready (KubeletNotReady: PLEG)"),
            "{e}"
        );
        assert!(node_is_ready(&json!({"metadata": {"name": "x"}}), None).is_err());
    }
}

//! Rolling k3s upgrades across an inventory: `bosun run k3s-upgrade --inventory FILE --var
//! version=V [--serial N]` when the hosts say their `k3s_role`.
//!
//! The order, and why:
//! 1. **Before anything changes**, the server's `kubectl get nodes` gives every node's kubelet
//!    version, and Kubernetes' version skew policy is checked against the version asked for
//!    ([`check_skew`]): servers move one minor at a time, no node is ever newer than a server
//!    (an agent newer than its server, or a downgrade, is refused), and kubelets stay within 3
//!    minors of the API server. A refusal names the nodes and their versions; nothing ran.
//! 2. **Servers first**, one at a time: each runs the playbook (`k3s_upgrade` with its own
//!    datastore backup, health check and rollback). Stopping k3s does not stop its pods, so a
//!    server is not drained.
//! 3. **Agents in `--serial` batches** (default one at a time), each: on the first server,
//!    `kube_node` cordoned + drained; on the agent, the playbook (`role = "agent"`); on the
//!    server, `kube_node` Ready at the new version, then schedulable.
//!
//! The cluster is asked about from the server (its admin kubeconfig; an agent holds none), and
//! every change to it is a `kube_node` step of a small playbook run by the server's bosund, so
//! it is journaled there like any run. An agent already at the version is left alone.
//!
//! The first failure stops the rollout: agents of the batch already under way finish theirs,
//! and no later host is touched (reported `not_started`). A failed agent is left as it was
//! before when it can be: a failed drain is undone (`schedulable`); a failed upgrade was rolled
//! back by `k3s_upgrade`, so once its node is Ready again it is made schedulable; an agent
//! whose new version runs but whose node never turns Ready at it stays cordoned, and the
//! message says so.
//!
//! Planning and the skew rules are pure; the rollout is generic over a [`Runner`] (the SSH
//! runs of `bosun run`), so it is tested without a network.

use std::collections::HashMap;
use std::future::Future;

use anyhow::{Result, bail};
use bosun_model::steps::k3s::K3sRelease;
use bosun_model::steps::k3s_install::K3sRole;
use bosun_model::steps::kube_node::valid_node_name;
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use super::fleet::{HostStatus, Size, batches};

/// The variable naming a host's role in the cluster (`server` or `agent`).
pub const ROLE_VAR: &str = "k3s_role";
/// What `--inventory aws:<stack>` names it (the instance's `bosun:role` tag), used when
/// `k3s_role` is not set.
pub const AWS_ROLE_VAR: &str = "bosun_role";
/// An EC2 instance's private DNS name (`aws:` inventories): its first label is the host name
/// k3s names the node after on EC2 (`ip-10-0-1-5`).
const EC2_DNS_VAR: &str = "ec2_private_dns_name";
/// The variable naming a host's Kubernetes node when it is not the host's name.
pub const NODE_VAR: &str = "k3s_node_name";
/// Kubelets may be up to this many minors older than the API server (Kubernetes ≥ 1.28).
pub const KUBELET_SKEW: u32 = 3;

/// One host of the rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its position in the host list.
    pub index: usize,
    /// Its name in the inventory.
    pub host: String,
    /// What it runs.
    pub role: K3sRole,
    /// Its node's name in the cluster.
    pub node: String,
}

/// The rollout's hosts from their variables: `k3s_role` (or an `aws:` inventory's
/// `bosun_role`) on every host (a rollout must know which are servers), `k3s_node_name`
/// defaulting to the first label of `ec2_private_dns_name` (an `aws:` inventory's), else the
/// host's name. At least one server.
pub fn members(hosts: &[(String, &Map<String, Value>)]) -> Result<Vec<Member>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (index, (host, vars)) in hosts.iter().enumerate() {
        let role = match vars.get(ROLE_VAR).or_else(|| vars.get(AWS_ROLE_VAR)) {
            Some(Value::String(r)) => {
                K3sRole::parse(r).map_err(|e| format!("host {host}: `{ROLE_VAR}`: {e}"))
            }
            Some(other) => Err(format!(
                "host {host}: `{ROLE_VAR}` must be \"server\" or \"agent\", got {other}"
            )),
            None => Err(format!(
                "host {host} has no `{ROLE_VAR}` variable: a rolling k3s upgrade must know which \
                 hosts are servers (set `{ROLE_VAR} = \"server\"` or `\"agent\"` in the inventory, \
                 e.g. as group vars)"
            )),
        };
        let node = match (vars.get(NODE_VAR), vars.get(EC2_DNS_VAR)) {
            (Some(Value::String(n)), _) if !n.is_empty() => n.clone(),
            (_, Some(Value::String(dns))) if !dns.is_empty() => {
                dns.split('.').next().unwrap_or_default().to_lowercase()
            }
            _ => host.to_lowercase(),
        };
        if !valid_node_name(&node) {
            problems.push(format!(
                "host {host}: {node:?} is not a Kubernetes node name; set `{NODE_VAR}`"
            ));
        }
        match role {
            Ok(role) => out.push(Member {
                index,
                host: host.clone(),
                role,
                node,
            }),
            Err(e) => problems.push(e),
        }
    }
    if problems.is_empty() && !out.iter().any(|m| m.role == K3sRole::Server) {
        problems.push("no host has k3s_role = \"server\": the rollout needs a server to ask about the cluster".into());
    }
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for m in &out {
        if let Some(other) = seen.insert(&m.node, &m.host) {
            problems.push(format!(
                "hosts {other} and {} both name node {}: set `{NODE_VAR}`",
                m.host, m.node
            ));
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok(out)
}

/// Each node's kubelet version from `kubectl get nodes -o json`.
pub fn node_versions(nodes_json: &str) -> Result<HashMap<String, K3sRelease>> {
    let doc: Value = serde_json::from_str(nodes_json)
        .map_err(|e| anyhow::anyhow!("kubectl get nodes: not JSON: {e}"))?;
    let mut out = HashMap::new();
    for n in doc["items"].as_array().into_iter().flatten() {
        let name = n["metadata"]["name"].as_str().unwrap_or_default();
        let kubelet = n["status"]["nodeInfo"]["kubeletVersion"]
            .as_str()
            .unwrap_or_default();
        if let Ok(v) = K3sRelease::parse(kubelet) {
            out.insert(name.to_string(), v);
        }
    }
    Ok(out)
}

/// Kubernetes' version skew policy for moving every member to `target`, given the nodes'
/// versions now. Every problem is listed, each naming its node and versions.
pub fn check_skew(
    target: &K3sRelease,
    members: &[Member],
    versions: &HashMap<String, K3sRelease>,
) -> Result<(), String> {
    let mut problems = Vec::new();
    let mut current = Vec::new();
    for m in members {
        match versions.get(&m.node) {
            Some(v) => current.push((m, v)),
            None => problems.push(format!(
                "host {}: the cluster has no node {:?} (its `{NODE_VAR}`?); nodes: {}",
                m.host,
                m.node,
                {
                    let mut names: Vec<&str> = versions.keys().map(String::as_str).collect();
                    names.sort();
                    names.join(", ")
                }
            )),
        }
    }
    let servers: Vec<_> = current
        .iter()
        .filter(|(m, _)| m.role == K3sRole::Server)
        .collect();
    let oldest_server = servers.iter().map(|(_, v)| *v).min();
    for (m, v) in &current {
        let what = format!("{} {} (host {}) runs {v}", m.role.as_str(), m.node, m.host);
        if v.major != target.major {
            problems.push(format!(
                "{what}: {target} is another major version; bosun upgrades within one"
            ));
        } else if *v > target {
            problems.push(format!(
                "{what}, newer than {target}: that would be a downgrade, which Kubernetes does \
                 not support"
            ));
        } else if m.role == K3sRole::Server && target.minor > v.minor + 1 {
            problems.push(format!(
                "{what}: {target} skips minor version(s); servers go one minor at a time \
                 (upgrade to the latest v{}.{} first)",
                v.major,
                v.minor + 1
            ));
        } else if m.role == K3sRole::Agent {
            if let Some(s) = oldest_server
                && v > &s
            {
                problems.push(format!(
                    "{what}, newer than the server's {s}: an agent is never newer than its \
                     server; the cluster is outside the version skew policy already"
                ));
            } else if target.minor > v.minor + KUBELET_SKEW {
                problems.push(format!(
                    "{what}: once the servers run {target} its kubelet would be more than \
                     {KUBELET_SKEW} minors older than the API server; upgrade it to v{}.{} \
                     or newer first",
                    target.major,
                    target.minor - KUBELET_SKEW
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the rolling upgrade to {target} is refused before anything changed (Kubernetes \
             version skew policy):\n  {}",
            problems.join("\n  ")
        ))
    }
}

/// What a host is asked to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Play {
    /// The playbook given to `bosun run` (its `k3s_upgrade`).
    Upgrade,
    /// A generated playbook of `kube_node` steps, run on a server.
    Node(String),
}

/// How a host's run ended, as far as the rollout cares.
#[derive(Debug, Clone, PartialEq)]
pub struct Ran {
    /// `ok`, `changed`, `failed`, ...
    pub status: HostStatus,
    /// Why it failed.
    pub error: Option<String>,
}

impl Ran {
    fn failed(&self) -> bool {
        self.status.is_failure()
    }
}

/// What the rollout needs of the fleet: a playbook run on a host, the server's node list, a
/// line for the operator.
pub trait Runner: Sync {
    /// Runs `play` on host `index`; `label` says what for.
    fn play(&self, index: usize, label: &str, play: Play) -> impl Future<Output = Ran> + Send;
    /// `kubectl get nodes -o json` on host `index` (a server).
    fn nodes(&self, index: usize) -> impl Future<Output = Result<String>> + Send;
    /// Tells the operator something about host `index`.
    fn note(&self, index: usize, message: &str);
}

/// The rollout's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The version every node goes to.
    pub target: K3sRelease,
    /// Agents per batch (default 1).
    pub serial: Option<Size>,
    /// `kube_node` drain timeout.
    pub drain_timeout: String,
    /// How long a node may take to be Ready.
    pub ready_timeout: String,
}

/// How each member ended: `(status, error)` per member, in member order.
pub type Results = Vec<Ran>;

/// A `kube_node` playbook for `node`: one step per `(name, state, version)`.
pub fn node_playbook(
    node: &str,
    steps: &[(&str, &str, Option<&K3sRelease>)],
    timeout: &str,
) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut text = format!(
        "name = {}\ndescription = \"generated by bosun run for a rolling k3s upgrade\"\n",
        q(&format!("k3s-rollout-{node}"))
    );
    for (name, state, version) in steps {
        text.push_str(&format!(
            "\n[[step]]\nname = {}\nkube_node = {{ node = {}, state = {}, timeout = {}{} }}\n",
            q(name),
            q(node),
            q(state),
            q(timeout),
            version
                .map(|v| format!(", version = {}", q(&v.to_string())))
                .unwrap_or_default()
        ));
    }
    text
}

/// Runs the rollout; returns how each member ended (in member order). The first failure stops
/// it; members never started are `not_started` with the reason.
pub async fn rollout<R: Runner>(runner: &R, members: &[Member], settings: &Settings) -> Results {
    let not_started = |why: &str| Ran {
        status: HostStatus::NotStarted,
        error: Some(why.to_string()),
    };
    let mut results: Results = vec![not_started("not started"); members.len()];
    let Some(first_server) = members.iter().find(|m| m.role == K3sRole::Server) else {
        return results;
    };
    // 1. The skew check, before anything changes.
    let versions = match runner.nodes(first_server.index).await {
        Ok(json) => node_versions(&json),
        Err(e) => Err(e),
    };
    let versions = match versions {
        Ok(v) => v,
        Err(e) => {
            let why = format!(
                "not started: the cluster's nodes could not be read on {}: {e:#}",
                first_server.host
            );
            return vec![not_started(&why); members.len()];
        }
    };
    if let Err(refusal) = check_skew(&settings.target, members, &versions) {
        runner.note(first_server.index, &refusal);
        return vec![not_started(&refusal); members.len()];
    }
    let target = &settings.target;
    // 2. Servers, one at a time.
    for (i, m) in members.iter().enumerate() {
        if m.role != K3sRole::Server {
            continue;
        }
        let ran = runner
            .play(
                m.index,
                &format!("upgrade server {} to {target}", m.node),
                Play::Upgrade,
            )
            .await;
        let failed = ran.failed();
        results[i] = ran;
        if failed {
            stop(&mut results, members, i, &m.node);
            return results;
        }
    }
    // 3. Agents in batches.
    let agents: Vec<usize> = (0..members.len())
        .filter(|i| members[*i].role == K3sRole::Agent)
        .collect();
    let server_lock = Mutex::new(());
    for range in batches(
        agents.len(),
        Some(settings.serial.unwrap_or(Size::Count(1))),
    ) {
        let batch = &agents[range];
        let runs = batch.iter().map(|&i| {
            let m = &members[i];
            let current = versions.get(&m.node).cloned();
            let server_lock = &server_lock;
            async move {
                if current.as_ref() == Some(target) {
                    runner.note(
                        m.index,
                        &format!("node {} runs {target} already: left alone", m.node),
                    );
                    return (
                        i,
                        Ran {
                            status: HostStatus::Ok,
                            error: None,
                        },
                    );
                }
                (
                    i,
                    upgrade_agent(runner, first_server.index, m, settings, server_lock).await,
                )
            }
        });
        let done = futures_join(runs).await;
        let mut failed_node = None;
        for (i, ran) in done {
            if ran.failed() && failed_node.is_none() {
                failed_node = Some(i);
            }
            results[i] = ran;
        }
        if let Some(i) = failed_node {
            stop(&mut results, members, i, &members[i].node);
            return results;
        }
    }
    results
}

/// Marks every member not yet run as not started because of `node`.
fn stop(results: &mut Results, members: &[Member], failed: usize, node: &str) {
    for (i, r) in results.iter_mut().enumerate() {
        if i != failed && r.status == HostStatus::NotStarted {
            r.error = Some(format!(
                "not started: the rollout stopped at {} {node}",
                members[failed].role.as_str()
            ));
        }
    }
}

/// Runs futures concurrently, results in completion order.
async fn futures_join<F, T>(futs: impl Iterator<Item = F>) -> Vec<T>
where
    F: Future<Output = T>,
{
    let futs: Vec<_> = futs.map(Box::pin).collect();
    let mut out = Vec::with_capacity(futs.len());
    // A batch is small (--serial); poll them together on this task.
    let mut pending = futs;
    while !pending.is_empty() {
        let (value, _index, rest) = select_all(pending).await;
        out.push(value);
        pending = rest;
    }
    out
}

/// The first of `futs` to finish, its index, and the others.
async fn select_all<F: Future + Unpin>(mut futs: Vec<F>) -> (F::Output, usize, Vec<F>) {
    let (value, index) = std::future::poll_fn(|cx| {
        for (i, f) in futs.iter_mut().enumerate() {
            if let std::task::Poll::Ready(v) = std::pin::Pin::new(f).poll(cx) {
                return std::task::Poll::Ready((v, i));
            }
        }
        std::task::Poll::Pending
    })
    .await;
    futs.remove(index);
    (value, index, futs)
}

/// One agent: cordon and drain (server), upgrade (agent), Ready at the target and uncordon
/// (server). Server-side runs are one at a time (`server_lock`).
async fn upgrade_agent<R: Runner>(
    runner: &R,
    server: usize,
    m: &Member,
    settings: &Settings,
    server_lock: &Mutex<()>,
) -> Ran {
    let target = &settings.target;
    let node = m.node.as_str();
    let on_server = |label: String,
                     steps: Vec<(&'static str, &'static str, Option<K3sRelease>)>,
                     timeout: String| async move {
        let _one = server_lock.lock().await;
        let steps: Vec<(String, &str, Option<&K3sRelease>)> = steps
            .iter()
            .map(|(what, state, v)| (format!("{what} {node}"), *state, v.as_ref()))
            .collect();
        let steps: Vec<(&str, &str, Option<&K3sRelease>)> =
            steps.iter().map(|(n, s, v)| (n.as_str(), *s, *v)).collect();
        runner
            .play(
                server,
                &label,
                Play::Node(node_playbook(node, &steps, &timeout)),
            )
            .await
    };
    let uncordon = |why: &'static str| {
        on_server(
            format!("make node {node} schedulable again ({why})"),
            vec![
                ("wait for Ready", "ready", None),
                ("uncordon", "schedulable", None),
            ],
            settings.ready_timeout.clone(),
        )
    };
    let drained = on_server(
        format!("cordon and drain node {node}"),
        vec![("cordon", "cordoned", None), ("drain", "drained", None)],
        settings.drain_timeout.clone(),
    )
    .await;
    if drained.failed() {
        let back = uncordon("its drain failed").await;
        return Ran {
            status: HostStatus::Failed,
            error: Some(format!(
                "draining node {node} failed ({}); {}; its k3s was not touched",
                drained.error.as_deref().unwrap_or("see the server's run"),
                if back.failed() {
                    "it is still cordoned"
                } else {
                    "it was made schedulable again"
                }
            )),
        };
    }
    let upgraded = runner
        .play(
            m.index,
            &format!("upgrade agent {node} to {target}"),
            Play::Upgrade,
        )
        .await;
    if upgraded.failed() {
        let back = uncordon("its upgrade failed").await;
        return Ran {
            status: upgraded.status,
            error: Some(format!(
                "upgrading agent {node} to {target} failed ({}; k3s_upgrade rolls a failed \
                 version back); {}",
                upgraded.error.as_deref().unwrap_or("see its run"),
                if back.failed() {
                    "its node did not turn Ready again, so it is left cordoned"
                } else {
                    "its node is Ready at the version it ran and schedulable again"
                }
            )),
        };
    }
    let ready = on_server(
        format!("node {node} Ready at {target}, then schedulable"),
        vec![
            ("wait for Ready", "ready", Some(target.clone())),
            ("uncordon", "schedulable", None),
        ],
        settings.ready_timeout.clone(),
    )
    .await;
    if ready.failed() {
        return Ran {
            status: HostStatus::Failed,
            error: Some(format!(
                "agent {node} runs {target} but its node is not Ready at it ({}); it is left \
                 cordoned: look at `journalctl -u k3s-agent` there",
                ready.error.as_deref().unwrap_or("see the server's run")
            )),
        };
    }
    upgraded
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Mutex as StdMutex;

    fn v(s: &str) -> K3sRelease {
        K3sRelease::parse(s).unwrap()
    }

    fn member(index: usize, role: K3sRole, node: &str) -> Member {
        Member {
            index,
            host: format!("h-{node}"),
            role,
            node: node.into(),
        }
    }

    fn versions(list: &[(&str, &str)]) -> HashMap<String, K3sRelease> {
        list.iter().map(|(n, s)| (n.to_string(), v(s))).collect()
    }

    #[test]
    fn members_need_a_role_and_a_server() {
        let server = json!({"k3s_role": "server"});
        let agent = json!({"k3s_role": "agent", "k3s_node_name": "ip-10-0-1-5"});
        let none = json!({});
        let m = |v: &Value| v.as_object().unwrap().clone();
        let (s, a, n) = (m(&server), m(&agent), m(&none));
        let got = members(&[("Cp-1".into(), &s), ("w1".into(), &a)]).unwrap();
        assert_eq!(got[0].node, "cp-1");
        assert_eq!(got[1].node, "ip-10-0-1-5");
        assert_eq!(got[1].role, K3sRole::Agent);
        let e = members(&[("w1".into(), &a), ("w2".into(), &n)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("host w2 has no `k3s_role`"), "{e}");
        let aws =
            json!({"bosun_role": "agent", "ec2_private_dns_name": "ip-10-0-1-7.ec2.internal"});
        let aws = m(&aws);
        let got = members(&[("i-0abc".into(), &s), ("i-0def".into(), &aws)]).unwrap();
        assert_eq!(
            (got[1].role, got[1].node.as_str()),
            (K3sRole::Agent, "ip-10-0-1-7")
        );
        let e = members(&[("w1".into(), &a)]).unwrap_err().to_string();
        assert!(e.contains("no host has k3s_role = \"server\""), "{e}");
        let e = members(&[("s".into(), &s), ("w1".into(), &a), ("w2".into(), &a)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("both name node ip-10-0-1-5"), "{e}");
    }

    #[test]
    fn skew_rules_refuse_with_nodes_and_versions() {
        let ms = [
            member(0, K3sRole::Server, "s1"),
            member(1, K3sRole::Agent, "a1"),
            member(2, K3sRole::Agent, "a2"),
        ];
        let now = versions(&[
            ("s1", "v1.30.6+k3s1"),
            ("a1", "v1.30.6+k3s1"),
            ("a2", "v1.29.3+k3s1"),
        ]);
        assert_eq!(check_skew(&v("v1.31.4+k3s1"), &ms, &now), Ok(()));
        // Servers one minor at a time.
        let e = check_skew(&v("v1.32.2+k3s1"), &ms, &now).unwrap_err();
        assert!(
            e.contains("server s1 (host h-s1) runs v1.30.6+k3s1: v1.32.2+k3s1 skips minor"),
            "{e}"
        );
        // An agent newer than its server.
        let bad = versions(&[
            ("s1", "v1.30.6+k3s1"),
            ("a1", "v1.31.4+k3s1"),
            ("a2", "v1.30.6+k3s1"),
        ]);
        let e = check_skew(&v("v1.31.4+k3s1"), &ms, &bad).unwrap_err();
        assert!(
            e.contains(
                "agent a1 (host h-a1) runs v1.31.4+k3s1, newer than the server's v1.30.6+k3s1"
            ),
            "{e}"
        );
        // A downgrade.
        let e = check_skew(&v("v1.30.2+k3s1"), &ms, &now).unwrap_err();
        assert!(
            e.contains("newer than v1.30.2+k3s1: that would be a downgrade"),
            "{e}"
        );
        // A kubelet left more than 3 minors behind.
        let old = versions(&[
            ("s1", "v1.30.6+k3s1"),
            ("a1", "v1.30.6+k3s1"),
            ("a2", "v1.27.9+k3s1"),
        ]);
        let e = check_skew(&v("v1.31.4+k3s1"), &ms, &old).unwrap_err();
        assert!(
            e.contains("agent a2 (host h-a2) runs v1.27.9+k3s1")
                && e.contains("upgrade it to v1.28 or newer first"),
            "{e}"
        );
        // A node the cluster does not know.
        let e = check_skew(
            &v("v1.31.4+k3s1"),
            &ms,
            &versions(&[("s1", "v1.30.6+k3s1")]),
        )
        .unwrap_err();
        assert!(
            e.contains("the cluster has no node \"a1\"") && e.contains("nodes: s1"),
            "{e}"
        );
    }

    #[test]
    fn node_playbooks_quote_their_values() {
        let t = node_playbook(
            "a-1",
            &[
                ("cordon a-1", "cordoned", None),
                ("ready", "ready", Some(&v("v1.31.4+k3s1"))),
            ],
            "5m",
        );
        let doc: toml::Table = toml::from_str(&t).unwrap();
        let steps = doc["step"].as_array().unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(
            steps[1]["kube_node"]["version"].as_str(),
            Some("v1.31.4+k3s1")
        );
        assert_eq!(steps[0]["kube_node"]["state"].as_str(), Some("cordoned"));
    }

    /// Records what ran where; hosts in `failing` fail their upgrade.
    struct Fake {
        nodes: String,
        failing: Vec<usize>,
        log: StdMutex<Vec<String>>,
    }

    impl Runner for Fake {
        async fn play(&self, index: usize, _label: &str, play: Play) -> Ran {
            let what = match &play {
                Play::Upgrade => "upgrade".to_string(),
                Play::Node(text) => {
                    let doc: toml::Table = toml::from_str(text).unwrap();
                    doc["step"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|s| {
                            format!(
                                "{}:{}",
                                s["kube_node"]["state"].as_str().unwrap(),
                                s["kube_node"]["node"].as_str().unwrap()
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                }
            };
            self.log.lock().unwrap().push(format!("{index}:{what}"));
            if play == Play::Upgrade && self.failing.contains(&index) {
                Ran {
                    status: HostStatus::Failed,
                    error: Some("a step failed".into()),
                }
            } else {
                Ran {
                    status: HostStatus::Changed,
                    error: None,
                }
            }
        }
        async fn nodes(&self, _index: usize) -> Result<String> {
            Ok(self.nodes.clone())
        }
        fn note(&self, _index: usize, _message: &str) {}
    }

    fn cluster(list: &[(&str, &str)]) -> String {
        json!({"items": list.iter().map(|(n, v)| json!({"metadata": {"name": n}, "status": {"nodeInfo": {"kubeletVersion": v}}})).collect::<Vec<_>>()}).to_string()
    }

    fn settings() -> Settings {
        Settings {
            target: v("v1.31.4+k3s1"),
            serial: None,
            drain_timeout: "5m".into(),
            ready_timeout: "5m".into(),
        }
    }

    #[test]
    fn servers_first_then_agents_one_by_one_and_the_first_failure_stops() {
        let ms = [
            member(0, K3sRole::Agent, "a1"),
            member(1, K3sRole::Server, "s1"),
            member(2, K3sRole::Agent, "a2"),
            member(3, K3sRole::Agent, "a3"),
            member(4, K3sRole::Agent, "a4"),
        ];
        let nodes = cluster(&[
            ("s1", "v1.30.6+k3s1"),
            ("a1", "v1.30.6+k3s1"),
            ("a2", "v1.30.6+k3s1"),
            ("a3", "v1.30.6+k3s1"),
            ("a4", "v1.30.6+k3s1"),
        ]);
        let fake = Fake {
            nodes,
            failing: vec![2],
            log: StdMutex::new(Vec::new()),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let results = rt.block_on(rollout(&fake, &ms, &settings()));
        let log = fake.log.lock().unwrap().clone();
        assert_eq!(
            log,
            [
                "1:upgrade",
                "1:cordoned:a1,drained:a1",
                "0:upgrade",
                "1:ready:a1,schedulable:a1",
                "1:cordoned:a2,drained:a2",
                "2:upgrade",
                // a2 failed: made schedulable again once Ready; a3 and a4 never touched.
                "1:ready:a2,schedulable:a2",
            ]
        );
        assert_eq!(results[2].status, HostStatus::Failed);
        assert!(
            results[2]
                .error
                .as_deref()
                .unwrap()
                .contains("schedulable again"),
            "{:?}",
            results[2]
        );
        assert_eq!(results[3].status, HostStatus::NotStarted);
        assert_eq!(results[4].status, HostStatus::NotStarted);
        assert!(
            results[4]
                .error
                .as_deref()
                .unwrap()
                .contains("stopped at agent a2"),
            "{:?}",
            results[4]
        );
    }

    #[test]
    fn a_skew_refusal_runs_nothing() {
        let ms = [
            member(0, K3sRole::Server, "s1"),
            member(1, K3sRole::Agent, "a1"),
        ];
        let fake = Fake {
            nodes: cluster(&[("s1", "v1.29.1+k3s1"), ("a1", "v1.29.1+k3s1")]),
            failing: vec![],
            log: StdMutex::new(Vec::new()),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let results = rt.block_on(rollout(&fake, &ms, &settings()));
        assert!(fake.log.lock().unwrap().is_empty());
        assert!(results.iter().all(|r| r.status == HostStatus::NotStarted));
        assert!(
            results[0].error.as_deref().unwrap().contains("skips minor"),
            "{:?}",
            results[0]
        );
    }
}

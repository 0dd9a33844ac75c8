//! The capacity check at the start of a run that installs platform releases: before any step
//! changes anything, the CPU and memory requests of the releases and k3s manifests the run will
//! install (`bosun_model::platform::components`, from the values it is about to install) are
//! summed against the cluster's room: its nodes' `status.allocatable` minus what the running
//! pods already request. Over budget, the run is refused with the table and nothing runs.
//!
//! The cluster is read with `kubectl --kubeconfig <the first release's kubeconfig> get nodes`
//! and `get pods -A` (k3s_install links `kubectl` into PATH). Pods that the run's own
//! components own (a release's `app.kubernetes.io/instance`, a manifest's namespace) are not
//! counted as already requested: their requests are the component's, so a second run of the
//! same profile fits exactly where the first did. A run whose releases request nothing is not
//! checked. A cluster that is not there yet (no kubeconfig: k3s is installed later in the same
//! run) is not checked either, with a warning. A cluster whose kubeconfig exists but that
//! cannot be read (no `kubectl`, unreachable, an error) refuses the run like one over budget:
//! the first release would fail on it too, but only after the steps before it had changed
//! things. `bosund apply --skip-capacity` runs it anyway, with a warning.

use std::path::Path;

use bosun_model::platform::{self, Budget, ComponentRequests, Requests, Room};
use bosun_model::playbook::{Body, Playbook, Step};
use bosun_model::steps::Action;
use serde_json::{Map, Value};

use super::RunOptions;
use crate::host::process;

/// What the check found: nothing to check, a fit (with a one-line summary), or a refusal.
pub(super) enum Verdict {
    NotApplicable,
    Unchecked(String),
    Fits(String),
    Refused(String),
}

/// The check for `playbook` run with `opts`.
pub(super) async fn check(playbook: &Playbook, opts: &RunOptions) -> Verdict {
    if !installs_releases(&playbook.steps) {
        return Verdict::NotApplicable;
    }
    let mut outside = opts.extra_vars.clone();
    outside.insert(bosun_model::playbook::FACTS_VAR.into(), opts.facts.clone());
    let components =
        match platform::components(playbook, &opts.base_dir, &outside, &mut |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        }) {
            Ok(c) => c,
            Err(e) => {
                return Verdict::Refused(format!("cannot work out what the run installs: {e}"));
            }
        };
    let Some(kubeconfig) = components.iter().find_map(|c| c.kubeconfig.clone()) else {
        return Verdict::NotApplicable;
    };
    if !Path::new(&kubeconfig).exists() {
        return Verdict::Unchecked(format!(
            "capacity not checked: no cluster yet ({kubeconfig} does not exist)"
        ));
    }
    if components.iter().all(|c| c.requests == Requests::default()) {
        return Verdict::NotApplicable;
    }
    let room = match room(&kubeconfig, &components).await {
        Ok(r) => r,
        // A cluster that is there but cannot be read: the first release would fail on it too,
        // but only after the steps before it (secrets made, manifests written) had run — a
        // half-installed platform. Refuse unless told to go on without the check.
        Err(e) if opts.skip_capacity => {
            return Verdict::Unchecked(format!("capacity not checked (--skip-capacity): {e}"));
        }
        Err(e) => {
            return Verdict::Refused(format!(
                "refused before anything was installed: the cluster's room cannot be read to \
                 check the platform's requests against it ({e}); fix the cluster or kubectl, \
                 or pass --skip-capacity to install without the check"
            ));
        }
    };
    let budget = Budget { components, room };
    if budget.fits() {
        Verdict::Fits(format!(
            "capacity: {} requested of {} room left on {}",
            budget.total(),
            budget.room.left(),
            budget.room.source
        ))
    } else {
        Verdict::Refused(format!(
            "refused before anything was installed: the platform does not fit the cluster\n{}",
            budget.table()
        ))
    }
}

/// Whether any step (in blocks and includes too) is a `helm_release`.
fn installs_releases(steps: &[Step]) -> bool {
    steps.iter().any(|s| match &s.body {
        Body::Action { action, .. } => matches!(action, Action::HelmRelease(_)),
        Body::Block(b) => [&b.steps, &b.rescue, &b.always]
            .into_iter()
            .any(|part| installs_releases(part)),
    })
}

async fn kubectl_json(kubeconfig: &str, args: &[&str]) -> Result<Value, String> {
    let mut argv: Vec<String> = vec![
        "kubectl".into(),
        "--kubeconfig".into(),
        kubeconfig.into(),
        "--request-timeout=10s".into(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    let out = process::run(&argv, None, &Default::default())
        .await
        .map_err(|e| format!("{e:#}"))?;
    if out.rc != 0 {
        return Err(format!(
            "kubectl {} exited {}: {}",
            args.join(" "),
            out.rc,
            process::quote_end(out.stderr.trim(), 0)
        ));
    }
    serde_json::from_str(&out.stdout)
        .map_err(|e| format!("kubectl {}: not JSON: {e}", args.join(" ")))
}

/// The nodes' allocatable and what running pods not owned by `components` request.
async fn room(kubeconfig: &str, components: &[ComponentRequests]) -> Result<Room, String> {
    let nodes = kubectl_json(kubeconfig, &["get", "nodes", "-o", "json"]).await?;
    let pods = kubectl_json(kubeconfig, &["get", "pods", "-A", "-o", "json"]).await?;
    room_from(&nodes, &pods, components)
}

/// [`room`] from the two `kubectl -o json` lists.
fn room_from(
    nodes: &Value,
    pods: &Value,
    components: &[ComponentRequests],
) -> Result<Room, String> {
    let items = |v: &Value| v["items"].as_array().cloned().unwrap_or_default();
    let mut allocatable = Requests::default();
    let nodes = items(nodes);
    for node in &nodes {
        let a = &node["status"]["allocatable"];
        allocatable = allocatable + quantity_pair(a)?;
    }
    let mut requested = Requests::default();
    for pod in items(pods) {
        let phase = pod["status"]["phase"].as_str().unwrap_or("");
        if phase == "Succeeded" || phase == "Failed" {
            continue;
        }
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
        let instance = pod["metadata"]["labels"]["app.kubernetes.io/instance"].as_str();
        if components
            .iter()
            .flat_map(|c| &c.owns)
            .any(|o| o.owns(ns, instance))
        {
            continue;
        }
        let mut containers = Map::new();
        containers.insert("containers".into(), pod["spec"]["containers"].clone());
        requested = requested + platform::requests::in_values(&Value::Object(containers))?;
    }
    Ok(Room {
        source: format!(
            "the cluster ({} node{})",
            nodes.len(),
            if nodes.len() == 1 { "" } else { "s" }
        ),
        allocatable,
        requested,
    })
}

fn quantity_pair(a: &Value) -> Result<Requests, String> {
    let get = |k: &str| {
        a[k].as_str()
            .map(str::to_string)
            .unwrap_or_else(|| a[k].to_string())
    };
    Ok(Requests {
        cpu_millis: platform::quantity::parse_cpu(&get("cpu"))?,
        memory_bytes: platform::quantity::parse_memory(&get("memory"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_model::platform::Owned;
    use serde_json::json;

    fn pod(ns: &str, instance: Option<&str>, memory: &str, phase: &str) -> Value {
        json!({
            "metadata": {"namespace": ns, "labels": instance.map(|i| json!({"app.kubernetes.io/instance": i})).unwrap_or(json!({}))},
            "spec": {"containers": [{"resources": {"requests": {"cpu": "100m", "memory": memory}}}]},
            "status": {"phase": phase},
        })
    }

    #[test]
    fn running_pods_count_except_finished_ones_and_the_runs_own() {
        let nodes =
            json!({"items": [{"status": {"allocatable": {"cpu": "2", "memory": "1948Mi"}}}]});
        let pods = json!({"items": [
            pod("kube-system", None, "70Mi", "Running"),
            pod("kube-system", Some("traefik-kube-system"), "64Mi", "Running"),
            pod("kube-system", None, "500Mi", "Succeeded"),
            pod("monitoring", Some("prometheus"), "160Mi", "Running"),
            pod("monitoring", Some("other"), "10Mi", "Pending"),
            pod("kafka", Some("logs"), "1Gi", "Running"),
        ]});
        let mine = ComponentRequests {
            name: "monitoring".into(),
            owns: vec![
                Owned {
                    namespace: "monitoring".into(),
                    release: Some("prometheus".into()),
                },
                Owned {
                    namespace: "kube-system".into(),
                    release: Some("traefik".into()),
                },
                Owned {
                    namespace: "kafka".into(),
                    release: None,
                },
            ],
            ..Default::default()
        };
        let room = room_from(&nodes, &pods, &[mine]).unwrap();
        assert_eq!(
            room.allocatable,
            Requests {
                cpu_millis: 2000,
                memory_bytes: 1948 << 20
            }
        );
        assert_eq!(
            room.requested,
            Requests {
                cpu_millis: 200,
                memory_bytes: 80 << 20
            }
        );
        assert_eq!(room.source, "the cluster (1 node)");
    }
}

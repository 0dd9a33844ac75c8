//! The CPU and memory requests written in Helm values or Kubernetes manifests.
//!
//! The rule, the same for both: every map holding `resources` counts its `resources.requests`
//! (`cpu`, `memory`; a missing request counts its limit, as Kubernetes defaults a request to the
//! limit), times the `replicas` (or `replicaCount`) of the maps above it (a StatefulSet's
//! `spec.replicas` multiplies the containers of its template; a KafkaNodePool's multiplies its
//! `spec.resources`). A map with `enabled: false` is skipped with everything under it (a
//! disabled subchart or component). A HelmChartConfig's `spec.valuesContent` is read as the
//! values it holds. Workloads whose values set no `resources` count nothing: the shipped values
//! set them for every workload, and tests/fixtures/tests/platform_values.rs holds that.

use serde_json::Value;

use super::quantity::{Requests, parse_cpu, parse_memory};

/// The requests in one values document (or one manifest document).
pub fn in_values(values: &Value) -> Result<Requests, String> {
    let mut total = Requests::default();
    walk(values, 1, &mut Vec::new(), &mut total)?;
    Ok(total)
}

/// The requests in YAML text: a values file, or manifests (several `---` documents).
pub fn in_yaml(text: &str) -> Result<Requests, String> {
    let mut total = Requests::default();
    for doc in serde_norway::Deserializer::from_str(text) {
        let value: Value = serde::Deserialize::deserialize(doc).map_err(|e| e.to_string())?;
        if let Some(content) = value
            .pointer("/spec/valuesContent")
            .and_then(Value::as_str)
            .filter(|_| value["kind"] == "HelmChartConfig")
        {
            let inner: Value = serde_norway::from_str(content)
                .map_err(|e| format!("HelmChartConfig valuesContent: {e}"))?;
            total = total + in_values(&inner)?;
        } else {
            total = total + in_values(&value)?;
        }
    }
    Ok(total)
}

fn replicas(map: &serde_json::Map<String, Value>) -> Option<u64> {
    ["replicas", "replicaCount"]
        .iter()
        .find_map(|k| map.get(*k).and_then(Value::as_u64))
}

fn walk(v: &Value, times: u64, path: &mut Vec<String>, total: &mut Requests) -> Result<(), String> {
    match v {
        Value::Object(map) => {
            if map.get("enabled") == Some(&Value::Bool(false)) {
                return Ok(());
            }
            let times = times * replicas(map).unwrap_or(1);
            if let Some(resources) = map.get("resources") {
                path.push("resources".into());
                *total = *total + one(resources, path)?.times(times);
                path.pop();
            }
            for (k, inner) in map {
                if k != "resources" {
                    path.push(k.clone());
                    walk(inner, times, path, total)?;
                    path.pop();
                }
            }
        }
        Value::Array(items) => {
            for (i, inner) in items.iter().enumerate() {
                path.push(i.to_string());
                walk(inner, times, path, total)?;
                path.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

/// One `resources` block's requests (a limit stands in for a missing request).
fn one(resources: &Value, path: &[String]) -> Result<Requests, String> {
    let get = |what: &str| {
        resources
            .pointer(&format!("/requests/{what}"))
            .or_else(|| resources.pointer(&format!("/limits/{what}")))
            .map(|q| match q {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
    };
    let at = || path.join(".");
    Ok(Requests {
        cpu_millis: get("cpu")
            .map(|q| parse_cpu(&q).map_err(|e| format!("{}.cpu: {e}", at())))
            .transpose()?
            .unwrap_or(0),
        memory_bytes: get("memory")
            .map(|q| parse_memory(&q).map_err(|e| format!("{}.memory: {e}", at())))
            .transpose()?
            .unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: u64 = 1 << 20;

    #[test]
    fn values_count_requests_times_replicas_and_skip_disabled_parts() {
        let text = r#"
server:
  replicas: 2
  resources:
    requests: {cpu: 50m, memory: 100Mi}
    limits: {memory: 200Mi}
alertmanager:
  enabled: false
  resources:
    requests: {cpu: 1, memory: 1Gi}
sidecar:
  resources:
    limits: {cpu: 10m, memory: 16Mi}
"#;
        assert_eq!(
            in_yaml(text),
            Ok(Requests {
                cpu_millis: 110,
                memory_bytes: 216 * MI
            })
        );
    }

    #[test]
    fn manifests_count_each_document_and_helmchartconfig_values() {
        let text = r#"
apiVersion: apps/v1
kind: StatefulSet
spec:
  replicas: 3
  template:
    spec:
      containers:
        - name: a
          resources:
            requests: {cpu: 100m, memory: 256Mi}
  volumeClaimTemplates:
    - spec:
        resources:
          requests: {storage: 5Gi}
---
apiVersion: helm.cattle.io/v1
kind: HelmChartConfig
spec:
  valuesContent: |-
    resources:
      requests:
        cpu: 50m
        memory: 64Mi
"#;
        assert_eq!(
            in_yaml(text),
            Ok(Requests {
                cpu_millis: 350,
                memory_bytes: 832 * MI
            })
        );
    }

    #[test]
    fn a_bad_quantity_names_where_it_is() {
        let err = in_yaml(
            "jenkins:\n  controller:\n    resources:\n      requests:\n        memory: 1GB\n",
        )
        .unwrap_err();
        assert!(
            err.starts_with("jenkins.controller.resources.memory:"),
            "{err}"
        );
    }
}

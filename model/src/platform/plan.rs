//! Which components a playbook run will install, and what each requests: the playbook's
//! top-level steps, each one component (an include of platform.toml, or a lone release), with
//! its `when` decided from the variables alone, before anything runs.
//!
//! Inside a component it counts what will land on the cluster: every `helm_release` (its
//! `values_files`, rendered and deep-merged in order as helm merges `-f` files, then its inline
//! `values`), and every `copy`/`template` of Kubernetes objects (a `.yaml` dest whose every
//! document has `apiVersion` and `kind`: what k3s applies from its manifests directory;
//! templates rendered), whose `when` holds. A `when` that needs what only
//! the run knows (a registered result) is taken to hold: the budget may count more than the run
//! installs, never less.
//!
//! Variables are scoped as the engine scopes them: the playbook's `[vars]`, an included file's
//! own `[vars]` as defaults under them, an include's `vars` over them inside it, `item` for
//! each item of a `loop`, and the outside variables (`--var`) over everything.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::budget::{ComponentRequests, Owned};
use super::requests;
use crate::jinja::Jinja;
use crate::playbook::{Body, Playbook, Step, Var};
use crate::steps::Action;
use crate::steps::common::LoopItems;

/// Reads a file the playbook names (values files, manifests, templates), by absolute path.
pub type ReadFile<'a> = dyn FnMut(&Path) -> Result<String, String> + 'a;

/// The components `playbook` installs with `outside` variables, and their requests. `base` is
/// the directory relative paths of the playbook's own steps resolve against (included steps
/// resolve beside their file).
pub fn components(
    playbook: &Playbook,
    base: &Path,
    outside: &Map<String, Value>,
    read: &mut ReadFile<'_>,
) -> Result<Vec<ComponentRequests>, String> {
    let jinja = Jinja::new();
    let mut scope = Map::new();
    overlay(&jinja, &mut scope, &playbook.vars, outside)?;
    let mut out = Vec::new();
    for step in &playbook.steps {
        let mut c = ComponentRequests {
            name: step.name.clone(),
            ..Default::default()
        };
        let mut found = false;
        step_requests(
            &jinja, step, &scope, outside, base, read, &mut found, &mut c,
        )
        .map_err(|e| format!("component `{}`: {e}", step.name))?;
        if found {
            out.push(c);
        }
    }
    Ok(out)
}

/// `vars` over `scope` (string values rendered against the scope so far), then `outside`.
fn overlay(
    jinja: &Jinja,
    scope: &mut Map<String, Value>,
    vars: &[Var],
    outside: &Map<String, Value>,
) -> Result<(), String> {
    for v in vars {
        // An included playbook's defaults fill only what the includer has not set (the
        // engine's rule).
        if v.default && scope.contains_key(&v.name) {
            continue;
        }
        // A variable that needs what only the run knows (a secret, a registered result) keeps
        // its text; it matters only if a release's values name it, and then rendering fails.
        let value = match &v.value {
            Value::String(s) => Value::String(
                jinja
                    .render_str(s, &ctx(scope))
                    .unwrap_or_else(|_| s.clone()),
            ),
            other => other.clone(),
        };
        scope.insert(v.name.clone(), value);
    }
    for (k, v) in outside {
        scope.insert(k.clone(), v.clone());
    }
    Ok(())
}

fn ctx(scope: &Map<String, Value>) -> minijinja::Value {
    minijinja::Value::from_serialize(Value::Object(scope.clone()))
}

/// A step's requests: once, or once per item of its `loop` with `item` bound, as the engine
/// runs it. A loop whose items only the run knows (a registered result) is counted once.
#[allow(clippy::too_many_arguments)]
fn step_requests(
    jinja: &Jinja,
    step: &Step,
    outer: &Map<String, Value>,
    outside: &Map<String, Value>,
    base: &Path,
    read: &mut ReadFile<'_>,
    found: &mut bool,
    c: &mut ComponentRequests,
) -> Result<(), String> {
    let items = step.loop_items.as_ref().and_then(|items| match items {
        LoopItems::List(items) => Some(items.clone()),
        LoopItems::Template(t) => {
            let mut pre = outer.clone();
            overlay(jinja, &mut pre, &step.vars, outside).ok()?;
            match jinja.render_value(Value::String(t.clone()), &ctx(&pre)) {
                Ok(Value::Array(items)) => Some(items),
                _ => None,
            }
        }
    });
    let Some(items) = items else {
        return step_requests_once(jinja, step, outer, outside, base, read, found, c);
    };
    for item in items {
        let mut scope = outer.clone();
        scope.insert(crate::playbook::LOOP_VAR.into(), item);
        step_requests_once(jinja, step, &scope, outside, base, read, found, c)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn step_requests_once(
    jinja: &Jinja,
    step: &Step,
    outer: &Map<String, Value>,
    outside: &Map<String, Value>,
    base: &Path,
    read: &mut ReadFile<'_>,
    found: &mut bool,
    c: &mut ComponentRequests,
) -> Result<(), String> {
    let mut scope = outer.clone();
    overlay(jinja, &mut scope, &step.vars, outside)?;
    // A `when` that needs what only the run knows (a registered result) is taken to hold:
    // the budget counts what might be installed rather than miss it.
    if let Some(when) = &step.when
        && matches!(jinja.eval_bool(when, &ctx(&scope)), Ok(false))
    {
        return Ok(());
    }
    let dir = match &step.file {
        Some(source) => Path::new(&source.name)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
        None => base.to_path_buf(),
    };
    let render = |s: &str| {
        jinja
            .render_str(s, &ctx(&scope))
            .map_err(|e| format!("step `{}`: {e}", step.name))
    };
    let resolve = |p: String| -> PathBuf {
        let p = PathBuf::from(p);
        if p.is_absolute() { p } else { dir.join(p) }
    };
    match &step.body {
        Body::Block(block) => {
            for s in block.steps.iter().chain(&block.always) {
                step_requests(jinja, s, &scope, outside, base, read, found, c)?;
            }
        }
        Body::Action { action, .. } => match action {
            Action::HelmRelease(args) => {
                let mut values = Value::Object(Map::new());
                for f in &args.values_files {
                    let f = render(f)?;
                    if f.trim().is_empty() {
                        continue;
                    }
                    let path = resolve(f);
                    let text = read(&path)?;
                    let v: Value = serde_norway::from_str(&text)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    merge(&mut values, v);
                }
                merge(&mut values, Value::Object(args.values.clone()));
                c.requests = c.requests
                    + requests::in_values(&values)
                        .map_err(|e| format!("release `{}`: {e}", args.name))?;
                c.owns.push(Owned {
                    namespace: render(&args.namespace)?,
                    release: Some(render(&args.name)?),
                });
                if c.kubeconfig.is_none() {
                    c.kubeconfig = Some(render(&args.kubeconfig)?);
                }
                *found = true;
            }
            Action::Copy(args) if is_yaml(&args.dest) => {
                let text = match (&args.src, &args.content) {
                    (Some(src), _) => read(&resolve(render(src)?))?,
                    (None, Some(content)) => render(content)?,
                    (None, None) => String::new(),
                };
                if is_manifest(&text) {
                    c.requests = c.requests
                        + requests::in_yaml(&text).map_err(|e| format!("{}: {e}", args.dest))?;
                    c.owns.extend(owned_by(&text));
                    *found = true;
                }
            }
            Action::Template(args) if is_yaml(&args.dest) => {
                let path = resolve(render(&args.src)?);
                // A template that needs what only the run knows (a registered result) is
                // counted as written: its requests are plain text.
                let raw = read(&path)?;
                let text = render(&raw).unwrap_or(raw);
                if is_manifest(&text) {
                    c.requests = c.requests
                        + requests::in_yaml(&text)
                            .map_err(|e| format!("{}: {e}", path.display()))?;
                    c.owns.extend(owned_by(&text));
                    *found = true;
                }
            }
            _ => {}
        },
    }
    Ok(())
}

/// The pods a manifest file's objects own: every pod of the namespaces it puts objects in,
/// except kube-system, where a HelmChartConfig owns the pods of the k3s release it configures.
fn owned_by(text: &str) -> Vec<Owned> {
    let mut out: Vec<Owned> = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let Ok(v) = <Value as serde::Deserialize>::deserialize(doc) else {
            continue;
        };
        let ns = v.pointer("/metadata/namespace").and_then(Value::as_str);
        let name = v.pointer("/metadata/name").and_then(Value::as_str);
        let owned = match (v["kind"].as_str(), ns, name) {
            (Some("HelmChartConfig"), Some(ns), Some(name)) => Owned {
                namespace: ns.into(),
                release: Some(name.into()),
            },
            (_, Some("kube-system"), _) | (_, None, _) => continue,
            (_, Some(ns), _) => Owned {
                namespace: ns.into(),
                release: None,
            },
        };
        if !out.contains(&owned) {
            out.push(owned);
        }
    }
    out
}

/// A YAML file by its name (a `dest` may hold Jinja: only its end is looked at).
fn is_yaml(dest: &str) -> bool {
    dest.ends_with(".yaml") || dest.ends_with(".yml")
}

/// Kubernetes objects: every YAML document has `apiVersion` and `kind` (what k3s applies from
/// its manifests directory; other YAML files a playbook writes are not counted).
fn is_manifest(text: &str) -> bool {
    let mut any = false;
    for doc in serde_norway::Deserializer::from_str(text) {
        match <Value as serde::Deserialize>::deserialize(doc) {
            Ok(Value::Null) => {}
            Ok(v) if v.get("apiVersion").is_some() && v.get("kind").is_some() => any = true,
            _ => return false,
        }
    }
    any
}

/// Deep merge as helm merges values files: maps key by key, anything else replaced.
fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::playbook::{Source, parse};

    /// A looped release is counted once per item, with `item` bound (a release named from it
    /// would not even render otherwise); a loop only the run can work out is counted once.
    #[test]
    fn a_looped_release_counts_once_per_item() {
        let text = r#"name = "p"
[vars]
sites = ["a", "b", "c"]
[[step]]
name = "web"
helm_release = { name = "web-{{ item }}", chart = "x/web", version = "1.0.0", namespace = "web", kubeconfig = "/k", values = { resources = { requests = { cpu = "100m", memory = "64Mi" } } } }
loop = "{{ sites }}"
[[step]]
name = "later"
command = { run = "true" }
register = "found"
[[step]]
name = "api"
helm_release = { name = "api", chart = "x/api", version = "1.0.0", namespace = "api", kubeconfig = "/k", values = { resources = { requests = { cpu = "50m" } } } }
loop = "{{ found.stdout_lines }}"
"#;
        let playbook = parse(Source::new("p.toml", text)).unwrap();
        let got = components(&playbook, Path::new("/"), &Map::new(), &mut |p: &Path| {
            Err(format!("no file {}", p.display()))
        })
        .unwrap();
        let cpu: Vec<(&str, u64)> = got
            .iter()
            .map(|c| (c.name.as_str(), c.requests.cpu_millis))
            .collect();
        assert_eq!(cpu, [("web", 300), ("api", 50)]);
        assert_eq!(got[0].requests.memory_bytes, 3 * 64 * 1024 * 1024);
    }
}

//! Which components a playbook run will install, and what each requests: the playbook's
//! top-level steps, each one component (an include of platform.toml, or a lone release), with
//! its `when` decided from the variables alone, before anything runs.
//!
//! Inside a component it counts what will land on the cluster: every `helm_release` (its
//! `values_files`, rendered and deep-merged in order as helm merges `-f` files, then its inline
//! `values`), and every `copy`/`template` into k3s's manifests directory (a `dest` under
//! `/server/manifests/`; templates rendered), whose `when` holds. A `when` that needs what only
//! the run knows (a registered result, facts) is an error: the budget is decided up front.
//!
//! Variables are scoped as the engine scopes them: the playbook's `[vars]`, an include's (and
//! its file's) vars over them inside it, and the outside variables (`--var`) over everything.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::budget::ComponentRequests;
use super::quantity::Requests;
use super::requests;
use crate::jinja::Jinja;
use crate::playbook::{Body, Playbook, Step, Var};
use crate::steps::Action;

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
        let mut found = false;
        let mut total = Requests::default();
        step_requests(
            &jinja, step, &scope, outside, base, read, &mut found, &mut total,
        )
        .map_err(|e| format!("component `{}`: {e}", step.name))?;
        if found {
            out.push(ComponentRequests {
                name: step.name.clone(),
                requests: total,
            });
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
        let value = match &v.value {
            Value::String(s) => Value::String(
                jinja
                    .render_str(s, &ctx(scope))
                    .map_err(|e| format!("variable `{}`: {e}", v.name))?,
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

#[allow(clippy::too_many_arguments)]
fn step_requests(
    jinja: &Jinja,
    step: &Step,
    outer: &Map<String, Value>,
    outside: &Map<String, Value>,
    base: &Path,
    read: &mut ReadFile<'_>,
    found: &mut bool,
    total: &mut Requests,
) -> Result<(), String> {
    let mut scope = outer.clone();
    overlay(jinja, &mut scope, &step.vars, outside)?;
    if let Some(when) = &step.when {
        let holds = jinja.eval_bool(when, &ctx(&scope)).map_err(|e| {
            format!(
                "step `{}`: its `when` cannot be decided before the run: {e}",
                step.name
            )
        })?;
        if !holds {
            return Ok(());
        }
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
                step_requests(jinja, s, &scope, outside, base, read, found, total)?;
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
                *total = *total
                    + requests::in_values(&values)
                        .map_err(|e| format!("release `{}`: {e}", args.name))?;
                *found = true;
            }
            Action::Copy(args) if is_manifest(&render(&args.dest)?) => {
                let text = match (&args.src, &args.content) {
                    (Some(src), _) => read(&resolve(render(src)?))?,
                    (None, Some(content)) => render(content)?,
                    (None, None) => String::new(),
                };
                *total =
                    *total + requests::in_yaml(&text).map_err(|e| format!("{}: {e}", args.dest))?;
                *found = true;
            }
            Action::Template(args) if is_manifest(&render(&args.dest)?) => {
                let path = resolve(render(&args.src)?);
                let text = render(&read(&path)?)?;
                *total = *total
                    + requests::in_yaml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
                *found = true;
            }
            _ => {}
        },
    }
    Ok(())
}

/// A file k3s applies: in its server's manifests directory.
fn is_manifest(dest: &str) -> bool {
    dest.contains("/server/manifests/") && (dest.ends_with(".yaml") || dest.ends_with(".yml"))
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

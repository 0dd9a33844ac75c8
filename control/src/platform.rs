//! `bosun platform budget`, and the same check at the start of `plan` and `up`: the requests of
//! the platform a stack's `[platform]` names (read from playbooks/platform.toml and the values
//! and manifests it would install, as bosund would install them) against a fresh k3s node of
//! the stack's `instance_type`. No AWS call: the instance type's size is bosun's own table
//! (`bosun_model::platform::budget`).

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use bosun_model::platform::{self, Budget, Remedy};
use serde_json::{Map, Value, json};

use crate::local;
use crate::stack::config::{StackConfig, playbooks_dir};

/// The budget of `stack`'s `[platform]` on its instance type (`None` without `[platform]`).
/// An error is invalid input (exit 2): an unknown instance type, a playbook or values file
/// that cannot be read or understood.
pub fn budget(config_path: &Path, stack: &StackConfig) -> Result<Option<Budget>> {
    let Some(selection) = &stack.platform else {
        return Ok(None);
    };
    let instance = platform::instance_type(&stack.instance_type).ok_or_else(|| {
        anyhow!(
            "instance_type {:?}: bosun does not know its size; use one of {}",
            stack.instance_type,
            platform::budget::known_instance_types().join(", ")
        )
    })?;
    let dir = playbooks_dir(config_path, stack);
    let path = dir.join("platform.toml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {} (the stack's `playbooks`)", path.display()))?;
    let mut outside = Map::new();
    if let Some(profile) = &selection.profile {
        outside.insert("profile".into(), Value::from(profile.as_str()));
    }
    if !selection.components.is_empty() {
        outside.insert("components".into(), json!(selection.components));
    }
    let names: Vec<String> = outside.keys().cloned().collect();
    let playbook = local::load_playbook(&path, text, &names)
        .map_err(|d| anyhow!("{}", d.to_string().trim_end()))?;
    let base = std::path::absolute(&dir).unwrap_or(dir);
    let components = platform::components(&playbook, &base, &outside, &mut |p| {
        std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    })
    .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    if components.is_empty() {
        bail!("[platform] selects no component of {}", path.display());
    }
    Ok(Some(Budget {
        components,
        room: instance.room(),
    }))
}

/// The budget as one JSON value (`--output json`).
pub fn to_json(b: &Budget) -> Value {
    let r =
        |r: platform::Requests| json!({"cpu_millis": r.cpu_millis, "memory_bytes": r.memory_bytes});
    let fits_on = match b.remedy() {
        Remedy::InstanceType(t) => json!({"instance_type": t.name}),
        Remedy::Nodes { count, of } => json!({"nodes": count, "instance_type": of.name}),
    };
    json!({
        "fits": b.fits(),
        "components": b.components.iter().map(|c| json!({"name": c.name, "requests": r(c.requests)})).collect::<Vec<_>>(),
        "total": r(b.total()),
        "room": {"source": b.room.source, "allocatable": r(b.room.allocatable), "requested": r(b.room.requested), "left": r(b.room.left())},
        "fits_on": fits_on,
    })
}

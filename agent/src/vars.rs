//! Variables from outside a playbook: `--var k=v` (parsed by the model) and `--vars-file FILE`.

use std::path::Path;

use anyhow::Context;
use serde_json::{Map, Value};

pub use bosun_model::vars::parse_var_args;

/// Reads a `--vars-file`: a TOML table (or JSON object when the name ends in `.json`).
pub fn read_vars_file(path: &Path) -> anyhow::Result<Map<String, Value>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading vars file {}", path.display()))?;
    bosun_model::vars::parse_vars_file(path, &text)
}

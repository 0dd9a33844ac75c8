//! The JSON Schema of the playbook format, generated from the same types the parser uses.
//! Committed as `playbooks/schema.json` so editors (taplo, Even Better TOML) validate playbooks.

use schemars::JsonSchema;
use serde_json::{Value, json};

use crate::steps::{ACTION_KEYS, StepSchema};

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
/// A bosun playbook: variables, steps run in order, and handlers run at the end when notified.
struct PlaybookSchema {
    /// The playbook's name, shown in output and recorded in the journal.
    name: String,
    /// What the playbook is for.
    description: Option<String>,
    /// Secret variables: each value names where it is read at run time (`env:NAME`,
    /// `file:/path`, `ssm:/parameter`); the values are masked in every report, the journal and
    /// the API.
    secrets: Option<std::collections::BTreeMap<String, SecretSourceSchema>>,
    /// Variables for the templates in the steps; strings may use earlier variables and `facts`.
    vars: Option<serde_json::Map<String, Value>>,
    /// Steps, run in order. Each has a `name` and exactly one action key.
    step: Option<Vec<StepSchema>>,
    /// Handlers: steps that run once at the end, in the order written, when a step that
    /// notified them changed something.
    handler: Option<Vec<StepSchema>>,
}

/// Where a secret is read.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct SecretSourceSchema(#[schemars(regex(pattern = r"^(env|file|ssm):.+"))] String);

/// The schema as pretty-printed JSON with a trailing newline, exactly as committed.
pub fn json_schema() -> String {
    let mut schema =
        serde_json::to_value(schemars::schema_for!(PlaybookSchema)).unwrap_or(Value::Null);
    // serde cannot say "exactly one of these keys"; the schema can.
    let one_action: Vec<Value> = ACTION_KEYS
        .iter()
        .map(|k| json!({ "required": [k] }))
        .collect();
    if let Some(step) = schema
        .pointer_mut("/$defs/StepSchema")
        .and_then(Value::as_object_mut)
    {
        step.insert("oneOf".into(), Value::Array(one_action));
    }
    let mut out = serde_json::to_string_pretty(&schema).unwrap_or_default();
    out.push('\n');
    out
}

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
struct SecretSourceSchema(
    #[schemars(regex(pattern = r"^(env|file|ssm|secretsmanager):.+"))] String,
);

/// A string that is only `{{ expression }}`: the engine renders it to the expression's value, so
/// it may stand where a table or a list belongs (`daemon = "{{ docker_daemon }}"`).
const WHOLE_VALUE_TEMPLATE: &str = r"^\s*\{\{[^{}]*\}\}\s*$";

/// Lets every table- or list-valued argument of an action also be a whole-value template, as
/// the parser and engine accept (the step's own keys, such as `notify`, are not rendered).
fn allow_whole_value_templates(schema: &mut Value) {
    let Some(defs) = schema.get("$defs").and_then(Value::as_object).cloned() else {
        return;
    };
    let is_container = |s: &Value| -> bool {
        let direct = |s: &Value| match s.get("type") {
            Some(Value::String(t)) => t == "object" || t == "array",
            Some(Value::Array(ts)) => ts
                .iter()
                .any(|t| t.as_str().is_some_and(|t| t == "object" || t == "array")),
            None => false,
            Some(_) => false,
        };
        let via_ref = |s: &Value| {
            s.get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/$defs/"))
                .and_then(|name| defs.get(name))
                .is_some_and(direct)
        };
        direct(s)
            || via_ref(s)
            || s.get("anyOf")
                .and_then(Value::as_array)
                .is_some_and(|alts| alts.iter().any(|a| direct(a) || via_ref(a)))
    };
    let template = json!({
        "type": "string",
        "pattern": WHOLE_VALUE_TEMPLATE,
        "description": "A whole-value template, rendered to a table or list at run time.",
    });
    let Some(defs_mut) = schema.get_mut("$defs").and_then(Value::as_object_mut) else {
        return;
    };
    for (name, def) in defs_mut.iter_mut() {
        if name == "StepSchema" {
            continue;
        }
        let Some(props) = def.get_mut("properties").and_then(Value::as_object_mut) else {
            continue;
        };
        for prop in props.values_mut() {
            if !is_container(prop) {
                continue;
            }
            let Some(obj) = prop.as_object_mut() else {
                continue;
            };
            if let Some(Value::Array(alts)) = obj.get_mut("anyOf") {
                alts.push(template.clone());
                continue;
            }
            let description = obj.remove("description");
            let default = obj.remove("default");
            let original = Value::Object(std::mem::take(obj));
            obj.insert("anyOf".into(), json!([original, template.clone()]));
            if let Some(d) = description {
                obj.insert("description".into(), d);
            }
            if let Some(d) = default {
                obj.insert("default".into(), d);
            }
        }
    }
}

/// The schema as pretty-printed JSON with a trailing newline, exactly as committed.
pub fn json_schema() -> String {
    let mut schema =
        serde_json::to_value(schemars::schema_for!(PlaybookSchema)).unwrap_or(Value::Null);
    // serde cannot say "exactly one of these keys"; the schema can.
    let one_action: Vec<Value> = ACTION_KEYS
        .iter()
        .chain(&["block", "include"])
        .map(|k| json!({ "required": [k] }))
        .collect();
    if let Some(step) = schema
        .pointer_mut("/$defs/StepSchema")
        .and_then(Value::as_object_mut)
    {
        step.insert("oneOf".into(), Value::Array(one_action));
    }
    allow_whole_value_templates(&mut schema);
    let mut out = serde_json::to_string_pretty(&schema).unwrap_or_default();
    out.push('\n');
    out
}

//! What every step may say besides its action (`name`, `when`, `retries`, ...), and how a
//! whole-value template stands in for a table or list until it is rendered.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// The keys every step may have besides its action.
pub const COMMON_KEYS: &[&str] = &[
    "name",
    "when",
    "retries",
    "delay",
    "timeout",
    "register",
    "changed_when",
    "failed_when",
    "notify",
    "no_log",
    "loop",
    "tags",
    "vars",
    "environment",
    "until",
    "check_mode",
];

/// The keys that give a step its structure instead of an action: a `block` of steps (with
/// `rescue` and `always`), or the steps of another playbook (`include`).
pub const STRUCTURE_KEYS: &[&str] = &["block", "rescue", "always", "include"];

/// The keys of a step that hold a Jinja expression, written without `{{ }}`
/// (`when = "x == 1"`); a `changed_when` or `failed_when` may also be a plain boolean.
pub const CONDITION_KEYS: &[&str] = &["when", "changed_when", "failed_when", "until"];

/// The keys a step may have besides its action, as written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepCommon {
    /// What the step does, in a few words; shown in every report.
    pub name: String,
    /// Jinja expression; the step runs only when it is true.
    #[serde(default)]
    pub when: Option<String>,
    /// Further attempts after a failure (or while `until` is false).
    #[serde(default)]
    pub retries: Option<u32>,
    /// Pause between attempts: seconds, or a duration such as "10s" (default 5s).
    #[serde(default)]
    pub delay: Option<DurationSpec>,
    /// Limit on one attempt: seconds, or a duration such as "2m".
    #[serde(default)]
    pub timeout: Option<DurationSpec>,
    /// Variable that receives the result (stdout, stderr, rc, changed, failed, skipped, msg).
    /// When a tool the step ran failed (a database client restoring a backup), stdout and
    /// stderr are its whole output (capped), which reports quote only in part; never under
    /// `no_log`.
    #[serde(default)]
    pub register: Option<String>,
    /// `false`/`true`, or a Jinja expression over `result`, deciding whether this step changed
    /// something.
    #[serde(default)]
    pub changed_when: Option<Condition>,
    /// `false`/`true`, or a Jinja expression over `result`, deciding whether this step failed.
    /// It also judges a step that failed because a tool it ran failed (`result.stderr`,
    /// `result.rc` are that tool's), so an expected failure can be accepted.
    #[serde(default)]
    pub failed_when: Option<Condition>,
    /// Handlers to run at the end of the run when this step changed something.
    #[serde(default)]
    pub notify: Vec<String>,
    /// Hide this step's message, diff and command output from every report, the journal and
    /// the API (its status and exit code remain): for steps that handle secret material.
    #[serde(default)]
    pub no_log: bool,
    /// Run the step once per item, with the item in `item`: a list, or a whole-value template
    /// that renders to one (`"{{ users }}"`). Each item is its own event (`name [item]`);
    /// `when` is evaluated per item; `register` holds `results`, one per item; the step
    /// changed when any item did. On a block or include: all its steps once per item (its
    /// `when` and `vars` per item), stopping at the first item whose steps fail.
    #[serde(default, rename = "loop")]
    pub loop_items: Option<LoopItems>,
    /// Names for `--tags` / `--skip-tags`; the steps of a block or include inherit them. A
    /// step tagged `always` runs unless skipped by name; `never` only when asked for.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Variables for this step only (for a block or include: for every step in it), in the
    /// order written; strings may use the variables visible before the step.
    #[serde(default)]
    pub vars: serde_json::Map<String, serde_json::Value>,
    /// Environment variables for a `command` (for a block or include: for every command in
    /// it); the command's own `env` wins.
    #[serde(default)]
    pub environment: std::collections::BTreeMap<String, String>,
    /// A Jinja expression over `result` (and the `register` name): the step is attempted
    /// again, up to `retries` times (3 when `retries` is not given) with `delay` between,
    /// until it is true. A step whose condition never turns true fails.
    #[serde(default)]
    pub until: Option<String>,
    /// `false`: the step runs for real also under `--check` (read-only commands whose output
    /// later steps need). For a block or include: every step in it.
    #[serde(default)]
    pub check_mode: Option<bool>,
}

/// `loop`: the items as written, or a template that renders to a list.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum LoopItems {
    /// The items themselves.
    List(Vec<serde_json::Value>),
    /// A whole-value template (`"{{ users }}"`) rendered to a list when the step runs.
    Template(String),
}

/// Default pause between attempts of a step.
pub const DEFAULT_DELAY: Duration = Duration::from_secs(5);

/// A duration written as whole seconds (`30`) or in words (`"30s"`, `"5m"`, `"1h 30m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DurationSpec(#[serde(with = "humantime_serde_compat")] pub Duration);

mod humantime_serde_compat {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

impl<'de> Deserialize<'de> for DurationSpec {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        let expected = "seconds as an integer, or a duration such as \"30s\" or \"5m\"";
        match Raw::deserialize(de)
            .map_err(|_| serde::de::Error::custom(format!("expected {expected}")))?
        {
            Raw::Secs(s) => Ok(DurationSpec(Duration::from_secs(s))),
            Raw::Text(t) => humantime::parse_duration(&t)
                .map(DurationSpec)
                .map_err(|e| {
                    serde::de::Error::custom(format!(
                        "invalid duration {t:?} ({e}), expected {expected}"
                    ))
                }),
        }
    }
}

impl JsonSchema for DurationSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Seconds, or a duration such as \"30s\", \"5m\", \"1h 30m\".",
            "oneOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^\\s*\\d+\\s*[a-zA-Z]+(\\s*\\d+\\s*[a-zA-Z]+)*\\s*$" }
            ]
        })
    }
}

/// `changed_when` / `failed_when`: a fixed answer or an expression.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Condition {
    /// Always this answer.
    Fixed(bool),
    /// A Jinja expression, evaluated with the step's `result` in scope.
    Expr(String),
}

/// For a serde error about a whole-value template (`invalid type: string "{{ t }}", expected a
/// map`), the template and the empty value to stand in for it while validating.
pub fn deferred_template(message: &str) -> Option<(String, serde_json::Value)> {
    let rest = message.strip_prefix("invalid type: string \"")?;
    let (template, expected) = rest.split_once("\", expected ")?;
    let t = template.trim();
    let whole = t.starts_with("{{") && t.ends_with("}}") && t.matches("{{").count() == 1;
    if !whole {
        return None;
    }
    let stand_in = if expected.starts_with("a map") || expected.starts_with("struct") {
        serde_json::Value::Object(serde_json::Map::new())
    } else if expected.starts_with("a sequence") {
        serde_json::Value::Array(Vec::new())
    } else {
        return None;
    };
    Some((template.to_string(), stand_in))
}

/// `include = { playbook = "common/base.toml", vars = { ... } }`, for the JSON Schema.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct IncludeSchema {
    /// The playbook whose steps run here, relative to the directory of this file.
    playbook: String,
    /// Variables for the included steps; they win over the included playbook's `[vars]`.
    vars: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `state` of the kinds that keep a thing or remove it (`user`, `group`, `sysctl`, ...).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    /// The thing exists as described.
    #[default]
    Present,
    /// The thing does not exist.
    Absent,
}

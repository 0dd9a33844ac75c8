//! Playbooks: TOML text → typed, validated model.
//!
//! This layer does no I/O beyond what its caller hands it (the text) and runs nothing. Its
//! output is a [`Playbook`] every step of which has exactly one well-typed action, every
//! `notify` of which names a handler and every template of which reads only variables that
//! will exist; or every [`Diagnostic`] found, with spans into the text.
//!
//! The format:
//! ```toml
//! name = "demo"
//! description = "optional"
//! [vars]
//! greeting = "hello"
//! [[step]]
//! name = "config file"
//! copy = { dest = "/tmp/demo/app.conf", content = "{{ greeting }}\n" }
//! notify = ["reload demo"]
//! [[handler]]
//! name = "reload demo"
//! command = { run = "echo reloaded" }
//! ```

use std::ops::Range;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::steps::Action;

pub mod diagnostics;
mod parse;
mod schema;
mod validate;

pub use diagnostics::{Diagnostic, Diagnostics, LocatedDiagnostic, Source};
pub use parse::parse;
pub use schema::json_schema;
pub use validate::{FACTS_VAR, RESULT_VAR, validate};

/// Parses and validates a playbook, given the names of the variables set from outside it
/// (`--var`, `--vars-file`). On failure, every problem found in the text: structural ones and,
/// for the parts that did parse, undefined variables and unknown handlers.
pub fn load(source: Source, outside_vars: &[String]) -> Result<Playbook, Diagnostics> {
    let parsed = parse::parse_partial(source);
    if parsed.syntax_error {
        return Err(Diagnostics::new(parsed.playbook.source, parsed.diagnostics));
    }
    let mut outside = outside_vars.to_vec();
    outside.extend(parsed.stray_registers);
    let mut diagnostics = parsed.diagnostics;
    diagnostics.extend(validate::validate_with(
        &parsed.playbook,
        &outside,
        &parsed.stray_handlers,
    ));
    if diagnostics.is_empty() {
        Ok(parsed.playbook)
    } else {
        Err(Diagnostics::new(parsed.playbook.source, diagnostics))
    }
}

/// A parsed and validated playbook.
#[derive(Debug, Clone)]
pub struct Playbook {
    /// `name`: shown in output and recorded in the journal.
    pub name: String,
    /// `description`, if given.
    pub description: Option<String>,
    /// `[secrets]`: variables whose values are read at run time from a source (`env:`, `file:`,
    /// `ssm:`) and masked in every event, diff, output and message of the run.
    pub secrets: Vec<SecretVar>,
    /// `[vars]` in the order written; string values may use earlier vars and facts.
    pub vars: Vec<Var>,
    /// `[[step]]` in order.
    pub steps: Vec<Step>,
    /// `[[handler]]` in order.
    pub handlers: Vec<Step>,
    /// The text it came from.
    pub source: Source,
}

/// One entry of `[vars]`.
#[derive(Debug, Clone)]
pub struct Var {
    /// The variable's name.
    pub name: String,
    /// Its value as written.
    pub value: serde_json::Value,
    /// Where the value is written.
    pub span: Range<usize>,
}

/// One entry of `[secrets]`: a variable name and where its value comes from.
#[derive(Debug, Clone)]
pub struct SecretVar {
    /// The variable's name.
    pub name: String,
    /// Where the value is read, at the start of each run.
    pub source: crate::secrets::SecretSource,
    /// Where the source is written.
    pub span: Range<usize>,
}

/// One `[[step]]` or `[[handler]]`.
#[derive(Debug, Clone)]
pub struct Step {
    /// `name`.
    pub name: String,
    /// The one action key and its arguments, as read at parse time (whole-value templates
    /// stand as empty tables or lists until rendered).
    pub action: Action,
    /// The action's arguments as written; what the engine renders before each run of the step.
    pub raw_args: serde_json::Value,
    /// `when`: a Jinja expression; the step is skipped when it is false.
    pub when: Option<String>,
    /// `retries`: how many more attempts after a failure (default 0).
    pub retries: u32,
    /// `delay` between attempts (default 5 s).
    pub delay: Duration,
    /// `timeout` of one attempt; none by default.
    pub timeout: Option<Duration>,
    /// `register`: the variable that receives this step's result.
    pub register: Option<String>,
    /// `changed_when`: overrides whether the step reports a change.
    pub changed_when: Option<Condition>,
    /// `failed_when`: overrides whether the step failed (by default: an error, or a non-zero
    /// exit code for commands).
    pub failed_when: Option<Condition>,
    /// `notify`: handlers to run at the end when this step changed something.
    pub notify: Vec<String>,
    /// `no_log`: the step's events carry no message, diff or command output (status and exit
    /// code only).
    pub no_log: bool,
    /// Where the parts of the step are written, for diagnostics.
    pub spans: StepSpans,
}

/// Where the parts of a step are written.
#[derive(Debug, Clone, Default)]
pub struct StepSpans {
    /// The whole step table.
    pub table: Range<usize>,
    /// The `name` value.
    pub name: Range<usize>,
    /// The action's arguments.
    pub action: Range<usize>,
    /// `when`, `changed_when`, `failed_when` and `register` values.
    pub when: Option<Range<usize>>,
    /// `changed_when` value.
    pub changed_when: Option<Range<usize>>,
    /// `failed_when` value.
    pub failed_when: Option<Range<usize>>,
    /// `register` value.
    pub register: Option<Range<usize>>,
    /// Each entry of `notify`.
    pub notify: Vec<Range<usize>>,
    /// Every string inside the action's arguments that holds Jinja markup.
    pub templates: Vec<(String, Range<usize>)>,
}

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
];

/// The keys a step may have besides its action, as written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepCommon {
    /// What the step does, in a few words; shown in every report.
    pub name: String,
    /// Jinja expression; the step runs only when it is true.
    #[serde(default)]
    pub when: Option<String>,
    /// Further attempts after a failure.
    #[serde(default)]
    pub retries: u32,
    /// Pause between attempts: seconds, or a duration such as "10s" (default 5s).
    #[serde(default)]
    pub delay: Option<DurationSpec>,
    /// Limit on one attempt: seconds, or a duration such as "2m".
    #[serde(default)]
    pub timeout: Option<DurationSpec>,
    /// Variable that receives the result (stdout, stderr, rc, changed, failed, skipped).
    #[serde(default)]
    pub register: Option<String>,
    /// `false`/`true`, or a Jinja expression over `result`, deciding whether this step changed
    /// something.
    #[serde(default)]
    pub changed_when: Option<Condition>,
    /// `false`/`true`, or a Jinja expression over `result`, deciding whether this step failed.
    #[serde(default)]
    pub failed_when: Option<Condition>,
    /// Handlers to run at the end of the run when this step changed something.
    #[serde(default)]
    pub notify: Vec<String>,
    /// Hide this step's message, diff and command output from every report, the journal and
    /// the API (its status and exit code remain): for steps that handle secret material.
    #[serde(default)]
    pub no_log: bool,
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
pub(crate) fn deferred_template(message: &str) -> Option<(String, serde_json::Value)> {
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

#[cfg(test)]
mod tests;

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

use crate::steps::Action;

pub mod diagnostics;
mod local_files;
mod parse;
mod schema;
mod validate;

pub use diagnostics::{Diagnostic, Diagnostics, LocatedDiagnostic, Source};
pub use local_files::{BaseDir, BaseOrigin, LocalFile, Scope, check_local_files};
pub use parse::parse;
pub use schema::json_schema;
pub use validate::{FACTS_VAR, RESULT_VAR, validate};

pub use crate::steps::LocalFileRole;
pub use crate::steps::common::{
    COMMON_KEYS, CONDITION_KEYS, Condition, DEFAULT_DELAY, DurationSpec, StepCommon,
    deferred_template,
};

/// Parses and validates a playbook, given the names of the variables set from outside it
/// (`--var`, `--vars-file`). On failure, every problem found in the text: structural ones and,
/// for the parts that did parse, undefined variables and unknown handlers.
pub fn load(source: Source, outside_vars: &[String]) -> Result<Playbook, Diagnostics> {
    load_then(source, outside_vars, |_| Vec::new())
}

/// [`load`], then [`check_local_files`] on what parsed: every problem of the text and every
/// local file that is not there, together. `probe` is as for [`check_local_files`].
pub fn load_with_files(
    source: Source,
    outside_vars: &[String],
    base: &BaseDir,
    scope: Scope,
    probe: impl Fn(&std::path::Path) -> std::io::Result<bool>,
) -> Result<Playbook, Diagnostics> {
    load_then(source, outside_vars, |p| {
        check_local_files(p, base, scope, probe)
    })
}

/// Parses and validates, then adds what `more` finds in the parts that parsed.
fn load_then(
    source: Source,
    outside_vars: &[String],
    more: impl FnOnce(&Playbook) -> Vec<Diagnostic>,
) -> Result<Playbook, Diagnostics> {
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
        &parsed.stray_steps,
    ));
    diagnostics.extend(more(&parsed.playbook));
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
    pub source: crate::secret_source::SecretSource,
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
    /// The files its action reads from the machine it runs on (see [`Playbook::local_files`]).
    pub local_files: Vec<LocalFile>,
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

#[cfg(test)]
mod tests;

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

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::steps::Action;

pub mod diagnostics;
mod include;
mod local_files;
mod parse;
mod schema;
mod validate;

pub use diagnostics::{Diagnostic, Diagnostics, LocatedDiagnostic, Source};
pub use include::ReadInclude;
pub use local_files::{BaseDir, BaseOrigin, LocalFile, Scope, check_local_files};
pub use parse::parse;
pub use schema::json_schema;
pub use validate::{FACTS_VAR, LOOP_VAR, RESULT_VAR, validate};

pub use crate::steps::LocalFileRole;
pub use crate::steps::common::{
    COMMON_KEYS, CONDITION_KEYS, Condition, DEFAULT_DELAY, DurationSpec, LoopItems, STRUCTURE_KEYS,
    StepCommon, deferred_template,
};

/// Parses and validates a playbook, given the names of the variables set from outside it
/// (`--var`, `--vars-file`). On failure, every problem found in the text: structural ones and,
/// for the parts that did parse, undefined variables and unknown handlers. A playbook given
/// this way cannot `include` (there is no file to resolve against): see [`load_with`].
pub fn load(source: Source, outside_vars: &[String]) -> Result<Playbook, Diagnostics> {
    load_with(source, Path::new("."), outside_vars, &mut refuse_includes)
}

/// The reader of [`load`]: a playbook given as text has no directory to include from.
fn refuse_includes(_: &Path) -> Result<String, String> {
    Err(
        "this playbook was given as text, so nothing it includes can be read: give it as a file"
            .into(),
    )
}

/// [`load`], reading each included playbook through `read` (paths resolved against the
/// directory of the including file; the root's is `base_dir`). Diagnostics of included files
/// carry their own file.
pub fn load_with(
    source: Source,
    base_dir: &Path,
    outside_vars: &[String],
    read: &mut ReadInclude<'_>,
) -> Result<Playbook, Diagnostics> {
    load_then(source, base_dir, outside_vars, read, |_| Vec::new())
}

/// [`load_with`] (includes read through `read`, relative to `base`), then
/// [`check_local_files`] on what parsed: every problem of the text and every local file that
/// is not there, together. `probe` is as for [`check_local_files`].
pub fn load_with_files(
    source: Source,
    outside_vars: &[String],
    base: &BaseDir,
    scope: Scope,
    probe: impl Fn(&std::path::Path) -> std::io::Result<bool>,
    read: &mut ReadInclude<'_>,
) -> Result<Playbook, Diagnostics> {
    load_then(source, &base.path, outside_vars, read, |p| {
        check_local_files(p, base, scope, probe)
    })
}

/// Parses, expands includes and validates, then adds what `more` finds in the parts that
/// parsed.
fn load_then(
    source: Source,
    base_dir: &Path,
    outside_vars: &[String],
    read: &mut ReadInclude<'_>,
    more: impl FnOnce(&Playbook) -> Vec<Diagnostic>,
) -> Result<Playbook, Diagnostics> {
    let parsed = parse::parse_partial(source);
    if parsed.syntax_error {
        return Err(Diagnostics::new(parsed.playbook.source, parsed.diagnostics));
    }
    let mut playbook = parsed.playbook;
    let mut diagnostics = parsed.diagnostics;
    let mut outside = outside_vars.to_vec();
    outside.extend(parsed.stray_registers);
    let mut stray_handlers = parsed.stray_handlers;
    let root = playbook.source.clone();
    let mut expander = include::Expander::new(&root, base_dir, read);
    expander.expand(&mut playbook.steps, None, &root, base_dir);
    diagnostics.append(&mut expander.diagnostics);
    outside.append(&mut expander.stray_registers);
    stray_handlers.append(&mut expander.stray_handlers);
    // Handlers merge by name: an included handler named like one already there is that one.
    for h in std::mem::take(&mut expander.handlers) {
        if !playbook.handlers.iter().any(|known| known.name == h.name) {
            playbook.handlers.push(h);
        }
    }
    playbook.included_files = std::mem::take(&mut expander.files);
    diagnostics.extend(validate::validate_with(
        &playbook,
        &outside,
        &stray_handlers,
        &parsed.stray_steps,
    ));
    diagnostics.extend(more(&playbook));
    if diagnostics.is_empty() {
        Ok(playbook)
    } else {
        Err(Diagnostics::new(playbook.source, diagnostics))
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
    /// `[[handler]]` in order, then those of included playbooks not named like one before.
    pub handlers: Vec<Step>,
    /// The included playbooks' paths as resolved, in the order read.
    pub included_files: Vec<PathBuf>,
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
    /// The file it is written in when not the playbook's own text.
    pub file: Option<Source>,
    /// A default: an included playbook's own `[vars]` entry, set only when the name has no
    /// value yet where the include runs (the includer's `[vars]`, `--var`, an earlier
    /// include's or step's `vars`, a `register` win over it), like an Ansible role's defaults.
    pub default: bool,
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
    /// What the step does: one action, or a block of steps.
    pub body: Body,
    /// `when`: a Jinja expression; the step is skipped when it is false (for a looped step,
    /// evaluated per item).
    pub when: Option<String>,
    /// `retries`: how many more attempts after a failure (default 0; 3 with `until`).
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
    /// `loop`: run once per item, with `item` bound.
    pub loop_items: Option<LoopItems>,
    /// `tags`, as written (a block's steps carry their own; the engine adds the block's).
    pub tags: Vec<String>,
    /// `vars`: variables for this step (for a block, for every step in it), in order.
    pub vars: Vec<Var>,
    /// `environment`: for commands in this step (or block).
    pub environment: BTreeMap<String, String>,
    /// `until`: retry until this expression over `result` is true.
    pub until: Option<String>,
    /// `check_mode = false`: run for real under `--check` too.
    pub check_mode: Option<bool>,
    /// The file the step is written in when it is not the playbook's own text (a step of an
    /// included playbook); its spans point into this source.
    pub file: Option<Source>,
    /// The files its action reads from the machine it runs on (see [`Playbook::local_files`]).
    pub local_files: Vec<LocalFile>,
    /// Where the parts of the step are written, for diagnostics.
    pub spans: StepSpans,
}

impl Step {
    /// The action key, or `block` (`include` is a block once loaded).
    pub fn kind(&self) -> &'static str {
        match &self.body {
            Body::Action { action, .. } => action.key(),
            Body::Block(_) => "block",
        }
    }
}

/// What a step does.
#[derive(Debug, Clone)]
// Steps are built once per load and matched per run; boxing the action would only add a
// pointer chase to every step.
#[allow(clippy::large_enum_variant)]
pub enum Body {
    /// One action.
    Action {
        /// The one action key and its arguments, as read at parse time (whole-value templates
        /// stand as empty tables or lists until rendered).
        action: Action,
        /// The action's arguments as written; what the engine renders before each run.
        raw_args: serde_json::Value,
    },
    /// `block = [...]` with optional `rescue` and `always`, or an `include` (the included
    /// playbook's steps as the block).
    Block(Block),
}

/// Steps run together: `steps` in order; when one fails, `rescue` (and the run goes on when
/// the rescue succeeds); then `always`, either way.
#[derive(Debug, Clone, Default)]
pub struct Block {
    /// The block's steps.
    pub steps: Vec<Step>,
    /// Run when a step of `steps` fails.
    pub rescue: Vec<Step>,
    /// Run after `steps` (and `rescue`), whatever happened.
    pub always: Vec<Step>,
    /// For an include: what it names; `steps` are the included playbook's once loaded.
    pub include: Option<IncludeRef>,
}

/// `include = { playbook = "common/base.toml", vars = { ... } }` as written.
#[derive(Debug, Clone)]
pub struct IncludeRef {
    /// The path as written, relative to the including file's directory.
    pub path: String,
    /// Where the path is written.
    pub span: Range<usize>,
    /// `vars` given to the included playbook (they win over its own `[vars]`).
    pub vars: Vec<Var>,
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
    /// `when` value.
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
    /// `loop` value.
    pub loop_items: Option<Range<usize>>,
    /// `until` value.
    pub until: Option<Range<usize>>,
    /// Every string inside `loop`, `vars` and `environment` that holds Jinja markup (checked
    /// against the variables visible before the step).
    pub outer_templates: Vec<(String, Range<usize>)>,
    /// Each `tags` entry.
    pub tags: Vec<Range<usize>>,
}

#[cfg(test)]
mod tests;

//! Runs a validated playbook: steps in order, then the notified handlers, emitting
//! [`RunEvent`]s as it goes.
//!
//! Per step: `when` decides whether it runs; its arguments are rendered against the variables
//! visible at that point; it is attempted up to `1 + retries` times with `delay` between
//! attempts, each attempt bounded by `timeout`; `failed_when` / `changed_when` judge the result;
//! `register` stores it. The first failed step ends the run and no handler runs (the host is in
//! an unknown state; rerun after fixing); the handlers it owes are kept (see [`pending`]) and the
//! next run of the playbook runs them. Handlers run once each, in the order written, when a
//! step that notified them changed something.
//!
//! The engine writes nothing itself but the owed-handler record: events go to an [`EventSink`],
//! which may render them, journal them or stream them.

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};

use backon::{ConstantBuilder, Retryable};
use serde_json::{Map, Value, json};

mod capacity;
mod pending;

use pending::PendingHandlers;

use crate::aws::{Aws, AwsTarget};
use crate::secrets::{Redactor, Secret, SecretSource};
use crate::steps::{Outcome, StepContext};
use bosun_model::event::{CommandOutput, EventSink, RunEvent, StepReport, StepStatus, Summary};
use bosun_model::jinja::Jinja;
use bosun_model::playbook::{
    Block, Body, Condition, FACTS_VAR, LOOP_VAR, LoopItems, Playbook, Step,
};
use bosun_model::steps::Action;

/// How to run a playbook.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Unique id of this run.
    pub run_id: String,
    /// `--check`: report what would change, change nothing.
    pub check: bool,
    /// Where relative `src` paths resolve: the playbook's directory.
    pub base_dir: PathBuf,
    /// Variables from outside the playbook (`--vars-file`, then `--var`); they win over `[vars]`.
    pub extra_vars: Map<String, Value>,
    /// The host's facts, offered as `facts`.
    pub facts: Value,
    /// bosund's state directory, where steps keep what must outlive a run (backups).
    pub state_dir: PathBuf,
    /// The `[[schedule]]` that started this run; `None` for runs asked for by someone.
    pub schedule: Option<String>,
    /// `--tags`: run only steps with one of these tags (and `always` ones); empty: all.
    pub tags: Vec<String>,
    /// `--skip-tags`: never run steps with one of these tags.
    pub skip_tags: Vec<String>,
    /// `--skip-capacity`: run releases on a cluster whose room cannot be read (warned about)
    /// instead of refusing the run.
    pub skip_capacity: bool,
}

/// Runs `playbook`, sending every event to `sink`; returns the summary (also the last event).
///
/// The values of `[secrets]` are read first; from then on every event passes through a
/// [`Redactor`] before it reaches `sink`, so no renderer, journal or API stream sees them.
pub async fn run(playbook: &Playbook, opts: &RunOptions, sink: &mut dyn EventSink) -> Summary {
    let jinja = Jinja::new();
    let mut summary = Summary::default();
    sink.emit(&RunEvent::RunStarted {
        run_id: opts.run_id.clone(),
        playbook: playbook.name.clone(),
        check: opts.check,
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        schedule: opts.schedule.clone(),
    });

    let redactor = Redactor::default();
    let prepared = match state_dir_room(&opts.state_dir) {
        Err(message) => Err(("[state]", message)),
        Ok(()) => match read_secrets(playbook, opts, &jinja, &redactor).await {
            Ok(secrets) => initial_vars(playbook, opts, secrets, &jinja).map_err(|m| ("[vars]", m)),
            Err(message) => Err(("[secrets]", message)),
        },
    };
    let mut masked = Masked {
        inner: sink,
        redactor: &redactor,
    };
    let sink: &mut dyn EventSink = &mut masked;
    // Before any step changes anything: do the releases this run installs fit the cluster?
    let prepared = match prepared {
        Ok(v) => match capacity::check(playbook, opts).await {
            capacity::Verdict::Refused(message) => Err(("[capacity]", message)),
            capacity::Verdict::Fits(note) => {
                tracing::info!("{note}");
                Ok(v)
            }
            capacity::Verdict::Unchecked(note) => {
                tracing::warn!("{note}");
                Ok(v)
            }
            capacity::Verdict::NotApplicable => Ok(v),
        },
        Err(e) => Err(e),
    };
    let mut vars = match prepared {
        Ok(v) => v,
        Err((what, message)) => {
            let report = StepReport {
                index: 0,
                name: what.into(),
                action: what.trim_matches(['[', ']']).into(),
                handler: false,
                status: StepStatus::Failed,
                duration_ms: 0.0,
                attempts: 1,
                message: Some(message),
                diff: None,
                output: None,
            };
            summary.count(StepStatus::Failed);
            sink.emit(&RunEvent::StepFinished(report));
            sink.emit(&RunEvent::Summary(summary));
            return summary;
        }
    };

    let shared = Shared {
        opts,
        jinja: &jinja,
        redactor: &redactor,
    };
    // Handlers an earlier failed run of this playbook owes start notified.
    let pending = PendingHandlers::new(&opts.state_dir, &playbook.name);
    let owed = pending.load();
    let notified: HashSet<String> = playbook
        .handlers
        .iter()
        .map(|h| h.name.clone())
        .filter(|name| owed.iter().any(|o| o == name))
        .collect();
    let mut runner = Runner {
        shared,
        sink,
        summary,
        next_index: 0,
        notified,
    };
    let ok = runner
        .run_list(&playbook.steps, &mut vars, &Inherited::default())
        .await;
    // In written order; what has not run successfully by the end is still owed.
    let mut owed_now: Vec<&str> = playbook
        .handlers
        .iter()
        .map(|h| h.name.as_str())
        .filter(|name| runner.notified.contains(*name))
        .collect();
    if ok {
        let handlers: Vec<&Step> = playbook
            .handlers
            .iter()
            .filter(|h| runner.notified.contains(&h.name))
            .collect();
        for handler in handlers {
            let status = runner
                .run_action_step(handler, true, &mut vars, &Inherited::default())
                .await;
            if status == StepStatus::Failed {
                break;
            }
            owed_now.retain(|n| *n != handler.name);
        }
    }
    let summary = runner.summary;
    let sink = runner.sink;
    if !opts.check && owed_now != owed.iter().map(String::as_str).collect::<Vec<_>>() {
        pending.store(&owed_now);
    }
    sink.emit(&RunEvent::Summary(summary));
    summary
}

/// What a block (or include) passes down to its steps.
#[derive(Debug, Clone, Default)]
struct Inherited {
    /// Tags of the enclosing blocks.
    tags: Vec<String>,
    /// `environment` of the enclosing blocks (inner wins).
    environment: BTreeMap<String, String>,
    /// `check_mode` of the innermost enclosing block that sets it.
    check_mode: Option<bool>,
    /// `no_log` of an enclosing block.
    no_log: bool,
}

/// `--tags` / `--skip-tags`: whether a step with these tags (its own and its blocks') runs.
/// As in Ansible: `always` runs unless skipped by name, `never` only when asked for by name,
/// `--tags all` selects every step but `never` ones.
pub fn tags_select(tags: &[String], only: &[String], skip: &[String]) -> bool {
    let has = |t: &str| tags.iter().any(|x| x == t);
    if tags.iter().any(|t| skip.contains(t)) {
        return false;
    }
    if only.is_empty() || only.iter().any(|o| o == "all") {
        return !has("never") || only.iter().any(|o| o == "never");
    }
    has("always") || tags.iter().any(|t| only.contains(t))
}

/// Runs steps, blocks and loops, counting and numbering every report.
struct Runner<'a, 's> {
    shared: Shared<'a>,
    sink: &'s mut dyn EventSink,
    summary: Summary,
    next_index: usize,
    notified: HashSet<String>,
}

impl Runner<'_, '_> {
    /// Whether `step` (or, for a block, any step in it) is selected by the tag filters.
    fn selected(&self, step: &Step, inherited: &[String]) -> bool {
        let opts = self.shared.opts;
        let mut tags = inherited.to_vec();
        tags.extend(step.tags.iter().cloned());
        match &step.body {
            Body::Action { .. } => tags_select(&tags, &opts.tags, &opts.skip_tags),
            Body::Block(b) => {
                if tags.iter().any(|t| opts.skip_tags.contains(t)) {
                    return false;
                }
                [&b.steps, &b.rescue, &b.always]
                    .into_iter()
                    .flatten()
                    .any(|s| self.selected(s, &tags))
            }
        }
    }

    /// Runs `steps` in order until one fails; false when one did.
    fn run_list<'x>(
        &'x mut self,
        steps: &'x [Step],
        vars: &'x mut Map<String, Value>,
        inherited: &'x Inherited,
    ) -> Pin<Box<dyn Future<Output = bool> + 'x>> {
        Box::pin(async move {
            for step in steps {
                if !self.selected(step, &inherited.tags) {
                    continue;
                }
                let ok = match &step.body {
                    Body::Action { .. } => {
                        self.run_action_step(step, false, vars, inherited).await
                            != StepStatus::Failed
                    }
                    Body::Block(block) => match &step.loop_items {
                        None => self.run_block(step, block, vars, inherited).await,
                        Some(items) => {
                            self.run_looped_block(step, block, items, vars, inherited)
                                .await
                        }
                    },
                };
                if !ok {
                    return false;
                }
            }
            true
        })
    }

    /// A block: its `when` and `vars` once, its steps; on a failure its `rescue` (a rescued
    /// failure is counted as rescued, not failed); then `always`.
    async fn run_block(
        &mut self,
        step: &Step,
        block: &Block,
        vars: &mut Map<String, Value>,
        inherited: &Inherited,
    ) -> bool {
        let jinja = self.shared.jinja;
        let mut scope = vars.clone();
        if let Err(message) = self.add_step_vars(step, &mut scope) {
            self.report_block(step, StepStatus::Failed, message);
            return false;
        }
        if let Some(w) = &step.when {
            let ctx = minijinja::Value::from_serialize(&scope);
            match jinja.eval_bool(w, &ctx) {
                Ok(true) => {}
                Ok(false) => {
                    self.report_block(step, StepStatus::Skipped, "`when` is false".into());
                    return true;
                }
                Err(e) => {
                    self.report_block(
                        step,
                        StepStatus::Failed,
                        format!("evaluating `when`: {e:#}"),
                    );
                    return false;
                }
            }
        }
        let mut inner = inherited.clone();
        inner.tags.extend(step.tags.iter().cloned());
        inner.environment.extend(step.environment.clone());
        inner.check_mode = step.check_mode.or(inherited.check_mode);
        inner.no_log |= step.no_log;
        let failed_before = self.summary.failed;
        let mut ok = self.run_list(&block.steps, &mut scope, &inner).await;
        if !ok && !block.rescue.is_empty() {
            let rescued = self.summary.failed - failed_before;
            self.summary.failed = failed_before;
            self.summary.rescued += rescued;
            ok = self.run_list(&block.rescue, &mut scope, &inner).await;
        }
        let always_ok = self.run_list(&block.always, &mut scope, &inner).await;
        // Registered results made inside the block stay; the block's own vars do not.
        for (name, value) in scope {
            if !step.vars.iter().any(|v| v.name == name) {
                vars.insert(name, value);
            }
        }
        ok && always_ok
    }

    /// A block or include with a `loop`: the whole block once per item, `item` bound (its
    /// `when` and `vars` evaluated per item), in order; the first item whose block fails
    /// stops the loop, as a failed step stops the run. No items: nothing runs and nothing is
    /// reported, as for an action step.
    async fn run_looped_block(
        &mut self,
        step: &Step,
        block: &Block,
        items: &LoopItems,
        vars: &mut Map<String, Value>,
        inherited: &Inherited,
    ) -> bool {
        let items = match loop_items(items, self.shared.jinja, &self.loop_scope(step, vars)) {
            Ok(items) => items,
            Err(message) => {
                self.report_block(step, StepStatus::Failed, message);
                return false;
            }
        };
        for item in items {
            let mut scope = vars.clone();
            scope.insert(LOOP_VAR.into(), item);
            let ok = self.run_block(step, block, &mut scope, inherited).await;
            // What the block registered carries out; `item` does not.
            for (name, value) in scope {
                if name != LOOP_VAR {
                    vars.insert(name, value);
                }
            }
            if !ok {
                return false;
            }
        }
        true
    }

    /// One report for a block itself (skipped, or failed before its steps).
    fn report_block(&mut self, step: &Step, status: StepStatus, message: String) {
        let index = self.take_index();
        self.sink.emit(&RunEvent::StepStarted {
            index,
            name: step.name.clone(),
            action: "block".into(),
            handler: false,
        });
        self.summary.count(status);
        self.sink.emit(&RunEvent::StepFinished(StepReport {
            index,
            name: step.name.clone(),
            action: "block".into(),
            handler: false,
            status,
            duration_ms: 0.0,
            attempts: 1,
            message: Some(message),
            diff: None,
            output: None,
        }));
    }

    fn take_index(&mut self) -> usize {
        self.next_index += 1;
        self.next_index - 1
    }

    /// What a step's `loop` is rendered with: `vars` and the step's `vars` that render without
    /// `item` (the others are rendered per item).
    fn loop_scope(&self, step: &Step, vars: &Map<String, Value>) -> Map<String, Value> {
        let mut scope = vars.clone();
        for var in &step.vars {
            if self.shared.opts.extra_vars.contains_key(&var.name)
                || (var.default && scope.contains_key(&var.name))
            {
                continue;
            }
            let ctx = minijinja::Value::from_serialize(&scope);
            if let Ok(value) = self.shared.jinja.render_value(var.value.clone(), &ctx) {
                scope.insert(var.name.clone(), value);
            }
        }
        scope
    }

    /// Renders the step's `vars` into `scope` in order (a variable set from outside the
    /// playbook keeps its value, as with `[vars]`; an included playbook's defaults only fill
    /// names that have no value yet).
    fn add_step_vars(&self, step: &Step, scope: &mut Map<String, Value>) -> Result<(), String> {
        for var in &step.vars {
            if self.shared.opts.extra_vars.contains_key(&var.name)
                || (var.default && scope.contains_key(&var.name))
            {
                continue;
            }
            let ctx = minijinja::Value::from_serialize(&*scope);
            let value = self
                .shared
                .jinja
                .render_value(var.value.clone(), &ctx)
                .map_err(|e| format!("variable `{}`: {e:#}", var.name))?;
            scope.insert(var.name.clone(), value);
        }
        Ok(())
    }

    /// An action step: once, or once per item of its `loop`; reports, counts, notifies and
    /// registers. Returns the step's status (failed when any item failed).
    async fn run_action_step(
        &mut self,
        step: &Step,
        handler: bool,
        vars: &mut Map<String, Value>,
        inherited: &Inherited,
    ) -> StepStatus {
        let Some(items) = &step.loop_items else {
            let mut scope_owned;
            let scope: &mut Map<String, Value> = if step.vars.is_empty() {
                vars
            } else {
                scope_owned = vars.clone();
                if let Err(message) = self.add_step_vars(step, &mut scope_owned) {
                    let report = self.fail_report(step, handler, message);
                    return self.finish(step, report);
                }
                &mut scope_owned
            };
            let index = self.take_index();
            let report = run_step(
                index,
                step,
                &step.name,
                handler,
                self.shared,
                scope,
                inherited,
                self.sink,
            )
            .await;
            let registered = report_register(step, scope);
            let status = self.finish(step, report);
            if let Some((name, value)) = registered {
                vars.insert(name, value);
            }
            return status;
        };
        // The step's `vars` are rendered per item, with `item` bound (as Ansible's task vars
        // see `item`); the items see them as far as they render without it.
        let items = match loop_items(items, self.shared.jinja, &self.loop_scope(step, vars)) {
            Ok(items) => items,
            Err(message) => {
                let report = self.fail_report(step, handler, message);
                return self.finish(step, report);
            }
        };
        let mut with_vars = Map::new();
        let mut results = Vec::new();
        let mut any_changed = false;
        let mut any_failed = false;
        let mut all_skipped = true;
        for item in items {
            let label = format!("{} [{}]", step.name, item_label(&item));
            let scope: &mut Map<String, Value> = if step.vars.is_empty() {
                &mut *vars
            } else {
                with_vars.clone_from(vars);
                with_vars.insert(LOOP_VAR.into(), item.clone());
                if let Err(message) = self.add_step_vars(step, &mut with_vars) {
                    // This item fails; the others still run, as with any failed item.
                    let report = self.fail_report_named(step, &label, handler, message);
                    any_failed = true;
                    all_skipped = false;
                    self.summary.count(report.status);
                    self.sink.emit(&RunEvent::StepFinished(report));
                    continue;
                }
                &mut with_vars
            };
            let previous = scope.insert(LOOP_VAR.into(), item.clone());
            let index = self.take_index();
            let report = run_step(
                index,
                step,
                &label,
                handler,
                self.shared,
                scope,
                inherited,
                self.sink,
            )
            .await;
            match previous {
                Some(v) => scope.insert(LOOP_VAR.into(), v),
                None => scope.remove(LOOP_VAR),
            };
            if let Some(name) = &step.register
                && let Some(Value::Object(mut r)) = scope.remove(name)
            {
                r.insert(LOOP_VAR.into(), item);
                results.push(Value::Object(r));
            }
            any_changed |= report.status == StepStatus::Changed;
            any_failed |= report.status == StepStatus::Failed;
            all_skipped &= report.status == StepStatus::Skipped;
            self.summary.count(report.status);
            self.sink.emit(&RunEvent::StepFinished(report));
        }
        let status = if any_failed {
            StepStatus::Failed
        } else if any_changed {
            StepStatus::Changed
        } else if all_skipped {
            StepStatus::Skipped
        } else {
            StepStatus::Ok
        };
        if any_changed {
            self.notified.extend(step.notify.iter().cloned());
        }
        if let Some(name) = &step.register {
            vars.insert(
                name.clone(),
                json!({
                    "changed": any_changed,
                    "failed": any_failed,
                    "skipped": all_skipped,
                    "results": results,
                }),
            );
        }
        status
    }

    fn fail_report(&mut self, step: &Step, handler: bool, message: String) -> StepReport {
        self.fail_report_named(step, &step.name, handler, message)
    }

    /// [`Self::fail_report`] under `name` (a loop item's label).
    fn fail_report_named(
        &mut self,
        step: &Step,
        name: &str,
        handler: bool,
        message: String,
    ) -> StepReport {
        let index = self.take_index();
        self.sink.emit(&RunEvent::StepStarted {
            index,
            name: name.to_string(),
            action: step.kind().into(),
            handler,
        });
        StepReport {
            index,
            name: name.to_string(),
            action: step.kind().into(),
            handler,
            status: StepStatus::Failed,
            duration_ms: 0.0,
            attempts: 1,
            message: Some(message),
            diff: None,
            output: None,
        }
    }

    /// Counts and emits a step's report; notifies its handlers when it changed.
    fn finish(&mut self, step: &Step, report: StepReport) -> StepStatus {
        let status = report.status;
        if status == StepStatus::Changed {
            self.notified.extend(step.notify.iter().cloned());
        }
        self.summary.count(status);
        self.sink.emit(&RunEvent::StepFinished(report));
        status
    }
}

/// The `register` value `run_step` left in `scope`, to carry out of a step's own scope.
fn report_register(step: &Step, scope: &Map<String, Value>) -> Option<(String, Value)> {
    let name = step.register.as_ref()?;
    Some((name.clone(), scope.get(name)?.clone()))
}

/// A loop's items: the list as written, or its template rendered to a list.
fn loop_items(
    items: &LoopItems,
    jinja: &Jinja,
    scope: &Map<String, Value>,
) -> Result<Vec<Value>, String> {
    match items {
        LoopItems::List(items) => Ok(items.clone()),
        LoopItems::Template(t) => {
            let ctx = minijinja::Value::from_serialize(scope);
            match jinja.render_value(Value::String(t.clone()), &ctx) {
                Ok(Value::Array(items)) => Ok(items),
                Ok(other) => Err(format!(
                    "`loop` must render to a list; {t:?} rendered to {}",
                    kind_of(&other)
                )),
                Err(e) => Err(format!("rendering `loop`: {e:#}")),
            }
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}

/// How an item is shown in `name [item]`: a string as it is, else compact JSON.
fn item_label(item: &Value) -> String {
    match item {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Free space a run needs in the state dir: the journal's rows and what steps keep there
/// (pending handlers, an upgrade's phase record) must be writable, or a run could change the
/// host and be unable to record it.
pub const STATE_DIR_MIN_FREE: u64 = 1 << 20;

/// Refuses a run whose state dir's file system is (nearly) full, before anything runs.
fn state_dir_room(state_dir: &Path) -> Result<(), String> {
    match crate::host::fs::free_space(state_dir) {
        Ok(free) if free < STATE_DIR_MIN_FREE => Err(format!(
            "no space left on device for the state dir {}: {free} bytes free, a run needs {} \
             KiB there (journal, pending handlers, upgrade records); free space there. Nothing \
             was run",
            state_dir.display(),
            STATE_DIR_MIN_FREE / 1024
        )),
        // Not knowing is no reason to refuse: the writes themselves will say.
        _ => Ok(()),
    }
}

/// Passes events on with every secret masked (a no-op while there are no secrets).
struct Masked<'a> {
    inner: &'a mut dyn EventSink,
    redactor: &'a Redactor,
}

impl EventSink for Masked<'_> {
    fn emit(&mut self, event: &RunEvent) {
        if self.redactor.is_empty() {
            return self.inner.emit(event);
        }
        let masked = serde_json::to_value(event)
            .map(|mut v| {
                self.redactor.redact_json(&mut v);
                v
            })
            .and_then(serde_json::from_value::<RunEvent>);
        match masked {
            Ok(event) => self.inner.emit(&event),
            // Cannot happen (the event types round-trip); never pass the unmasked event on.
            Err(e) => tracing::error!("masking secrets in an event failed: {e}"),
        }
    }
}

/// Reads the values of `[secrets]` (an outside variable of the same name supplies the value
/// instead) and adds each to `redactor`. SSM is connected only when a source needs it. Errors
/// name the secret and its source, never a value.
///
/// A source may name outside variables (`--var`, `--vars-file`, `facts`), e.g.
/// `"ssm:{{ origin_secret_parameter }}"`: one playbook serves every stack, each first boot
/// passing its own parameter name. `[vars]` are not visible there (they may use the secrets).
async fn read_secrets(
    playbook: &Playbook,
    opts: &RunOptions,
    jinja: &Jinja,
    redactor: &Redactor,
) -> Result<Map<String, Value>, String> {
    let mut outside = opts.extra_vars.clone();
    outside.insert(FACTS_VAR.into(), opts.facts.clone());
    let ctx = minijinja::Value::from_serialize(&outside);
    let mut sources = Vec::new();
    for secret in &playbook.secrets {
        let written = secret.source.to_string();
        let source = if bosun_model::jinja::is_templated(&written) {
            let rendered = jinja
                .render_str(&written, &ctx)
                .map_err(|e| format!("secret `{}`: its source {written}: {e}", secret.name))?;
            rendered.parse::<SecretSource>().map_err(|_| {
                format!(
                    "secret `{}`: its source {written} renders to something that is not \
                     `env:`, `file:` or `ssm:`",
                    secret.name
                )
            })?
        } else {
            secret.source.clone()
        };
        sources.push(source);
    }
    let mut values = Map::new();
    let needs_aws = playbook.secrets.iter().zip(&sources).any(|(s, source)| {
        matches!(
            source,
            SecretSource::Ssm(_) | SecretSource::SecretsManager { .. }
        ) && !opts.extra_vars.contains_key(&s.name)
    });
    let aws = if needs_aws {
        let aws = Aws::connect(&AwsTarget::default())
            .await
            .map_err(|e| format!("connecting to AWS for ssm: secrets: {e:#}"))?;
        Some(aws)
    } else {
        None
    };
    for (secret, source) in playbook.secrets.iter().zip(&sources) {
        let value = match opts.extra_vars.get(&secret.name) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => crate::secrets::read(source, aws.as_ref())
                .await
                .map_err(|e| format!("secret `{}`: {e}", secret.name))?
                .expose()
                .to_string(),
        };
        redactor.add(Secret::new(value.clone()));
        values.insert(secret.name.clone(), Value::String(value));
    }
    Ok(values)
}

/// `facts` and the outside variables, then `[vars]` in order (strings rendered against what
/// precedes them). An outside variable wins over the `[vars]` entry of the same name and is
/// visible to every `[vars]` string, as validation assumes: `conf = "{{ root }}/etc"` sees
/// `--var root=...`.
fn initial_vars(
    playbook: &Playbook,
    opts: &RunOptions,
    secrets: Map<String, Value>,
    jinja: &Jinja,
) -> Result<Map<String, Value>, String> {
    let mut vars = Map::new();
    vars.insert(FACTS_VAR.into(), opts.facts.clone());
    vars.extend(opts.extra_vars.clone());
    vars.extend(secrets);
    for var in &playbook.vars {
        if opts.extra_vars.contains_key(&var.name) {
            continue;
        }
        let ctx = minijinja::Value::from_serialize(&vars);
        let value = jinja
            .render_value(var.value.clone(), &ctx)
            .map_err(|e| format!("variable `{}`: {e:#}", var.name))?;
        vars.insert(var.name.clone(), value);
    }
    Ok(vars)
}

/// The verdict on one attempt.
struct Attempt {
    status: StepStatus,
    outcome: Outcome,
    error: Option<String>,
    /// A failed program's whole output ([`crate::host::process::Failed`]): for `register`
    /// only, never in the report.
    detail: Option<CommandOutput>,
}

/// What every step of one run shares.
#[derive(Clone, Copy)]
struct Shared<'a> {
    opts: &'a RunOptions,
    jinja: &'a Jinja,
    redactor: &'a Redactor,
}

#[allow(clippy::too_many_arguments)]
async fn run_step(
    index: usize,
    step: &Step,
    label: &str,
    handler: bool,
    shared: Shared<'_>,
    vars: &mut Map<String, Value>,
    inherited: &Inherited,
    sink: &mut dyn EventSink,
) -> StepReport {
    let Shared {
        opts,
        jinja,
        redactor,
    } = shared;
    sink.emit(&RunEvent::StepStarted {
        index,
        name: label.to_string(),
        action: step.kind().to_string(),
        handler,
    });
    let started = Instant::now();
    let ctx_value = minijinja::Value::from_serialize(&*vars);
    let attempts = Cell::new(0u32);
    let no_log = step.no_log || inherited.no_log;
    // `check_mode = false`: this step runs for real under --check; `true`: only looks.
    let check = step
        .check_mode
        .or(inherited.check_mode)
        .map_or(opts.check, |m| m);
    let base_dir = step_dir(step, &opts.base_dir);
    let read_secret = crate::steps::ReadSecret::default();

    let verdict = match step.when.as_deref().map(|w| jinja.eval_bool(w, &ctx_value)) {
        Some(Ok(false)) => Attempt {
            status: StepStatus::Skipped,
            outcome: Outcome {
                message: Some("`when` is false".into()),
                ..Outcome::default()
            },
            error: None,
            detail: None,
        },
        Some(Err(e)) => failed(format!("evaluating `when`: {e:#}")),
        Some(Ok(true)) | None => match render_action(step, inherited, jinja, &ctx_value) {
            Err(e) => failed(format!("rendering arguments: {e:#}")),
            Ok(action) => {
                let ctx = StepContext {
                    check,
                    base_dir: &base_dir,
                    jinja,
                    vars: &ctx_value,
                    state_dir: &opts.state_dir,
                    read_secret: &read_secret,
                };
                let attempt = || async {
                    attempts.set(attempts.get() + 1);
                    let result = match step.timeout {
                        Some(limit) => {
                            match tokio::time::timeout(limit, crate::steps::run(&action, &ctx))
                                .await
                            {
                                Ok(result) => result,
                                Err(_) => {
                                    let timed_out = format!(
                                        "timed out after {}",
                                        humantime::format_duration(limit)
                                    );
                                    // What the dropped future left half-done is settled now.
                                    Err(match crate::steps::after_timeout(&action, &ctx).await {
                                        Some(settled) => anyhow::anyhow!("{timed_out}; {settled}"),
                                        None => anyhow::anyhow!(timed_out),
                                    })
                                }
                            }
                        }
                        None => crate::steps::run(&action, &ctx).await,
                    };
                    let verdict = judge(step, result, check, jinja, &ctx_value);
                    if verdict.status == StepStatus::Failed {
                        return Err(verdict);
                    }
                    match until_holds(step, &verdict, check, jinja, &ctx_value) {
                        Ok(true) => Ok(verdict),
                        Ok(false) => Err(Attempt {
                            status: StepStatus::Failed,
                            error: Some(format!(
                                "`until` is still false after {} attempt(s)",
                                attempts.get()
                            )),
                            ..verdict
                        }),
                        Err(message) => Err(Attempt {
                            status: StepStatus::Failed,
                            error: Some(message),
                            ..verdict
                        }),
                    }
                };
                let policy = ConstantBuilder::default()
                    .with_delay(step.delay)
                    .with_max_times(step.retries as usize);
                attempt
                    .retry(policy)
                    .notify(|v: &Attempt, delay: Duration| {
                        let why = match &v.error {
                            Some(_) if no_log => "details hidden: no_log".to_string(),
                            Some(e) => redactor.redact(e),
                            None => "failed".to_string(),
                        };
                        tracing::info!(step = %label, "attempt failed ({why}); retrying in {delay:?}");
                    })
                    .await
                    .unwrap_or_else(|v| v)
            }
        },
    };

    // A secret the step read (ssm_parameter get): masked from now on, `value` of register.
    let secret = read_secret.take();
    if let Some(s) = &secret {
        redactor.add(s.clone());
    }
    if let Some(name) = &step.register {
        let mut value = result_value(&verdict, no_log);
        if let Some(s) = &secret {
            value["value"] = Value::String(s.expose().to_string());
        }
        vars.insert(name.clone(), value);
    }
    let Attempt {
        status,
        mut outcome,
        mut error,
        detail: _,
    } = verdict;
    if no_log {
        let hidden = || "(hidden: no_log)".to_string();
        error = error.map(|_| hidden());
        outcome.message = outcome.message.map(|_| hidden());
        outcome.diff = outcome.diff.map(|_| hidden());
        if let Some(out) = &mut outcome.output {
            out.stdout = hidden();
            out.stderr = hidden();
        }
    }
    StepReport {
        index,
        name: label.to_string(),
        action: step.kind().to_string(),
        handler,
        status,
        duration_ms: (started.elapsed().as_secs_f64() * 1e6).round() / 1000.0,
        attempts: attempts.get().max(1),
        message: error.or(outcome.message),
        diff: outcome.diff,
        output: outcome.output,
    }
}

/// Where the step's relative paths resolve: the directory of the file it is written in.
fn step_dir(step: &Step, base_dir: &Path) -> PathBuf {
    match &step.file {
        Some(f) => {
            let dir = Path::new(&f.name).parent().unwrap_or(Path::new("."));
            std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
        }
        None => base_dir.to_path_buf(),
    }
}

/// The step's action with its arguments rendered; a `command` gets the `environment` of the
/// step and its blocks under its own `env`.
fn render_action(
    step: &Step,
    inherited: &Inherited,
    jinja: &Jinja,
    vars: &minijinja::Value,
) -> anyhow::Result<Action> {
    let Body::Action { action, raw_args } = &step.body else {
        anyhow::bail!("a block has no action of its own");
    };
    if let Action::Command(_) = action
        && (!inherited.environment.is_empty() || !step.environment.is_empty())
    {
        let mut env: Map<String, Value> = inherited
            .environment
            .iter()
            .chain(&step.environment)
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let mut raw = raw_args.clone();
        if let Some(Value::Object(own)) = raw.get("env") {
            env.extend(own.clone());
        }
        if let Value::Object(args) = &mut raw {
            args.insert("env".into(), Value::Object(env));
        }
        return action.render(&raw, jinja, vars);
    }
    action.render(raw_args, jinja, vars)
}

/// `until` over this attempt's result: true when there is none, or under `--check` (nothing
/// ran to judge).
fn until_holds(
    step: &Step,
    verdict: &Attempt,
    check: bool,
    jinja: &Jinja,
    vars: &minijinja::Value,
) -> Result<bool, String> {
    let Some(expr) = &step.until else {
        return Ok(true);
    };
    if check && verdict.outcome.output.is_none() {
        return Ok(true);
    }
    let result = minijinja::Value::from_serialize(result_value(verdict, step.no_log));
    let mut scope = minijinja::context! { result => result.clone(), ..vars.clone() };
    if let Some(name) = &step.register {
        scope = minijinja::context! { ..minijinja::Value::from_iter([(name.clone(), result)]), ..scope };
    }
    jinja
        .eval_bool(expr, &scope)
        .map_err(|e| format!("evaluating `until`: {e:#}"))
}

fn failed(message: String) -> Attempt {
    Attempt {
        status: StepStatus::Failed,
        outcome: Outcome::default(),
        error: Some(message),
        detail: None,
    }
}

/// Applies `failed_when` and `changed_when` to what the action returned.
fn judge(
    step: &Step,
    result: anyhow::Result<Outcome>,
    check: bool,
    jinja: &Jinja,
    vars: &minijinja::Value,
) -> Attempt {
    let outcome = match result {
        Ok(o) => o,
        Err(e) => return judge_failure(step, &e, jinja, vars),
    };
    let ran = outcome.output.is_some();
    let mut is_failed = outcome.output.as_ref().is_some_and(|o| o.rc != 0);
    let mut changed = outcome.changed;
    // Under --check a command did not run: there is no result for an expression to judge.
    let judgeable = !check || ran;
    let result = json!({
        "changed": changed,
        "failed": is_failed,
        "skipped": false,
        "stdout": outcome.output.as_ref().map(|o| o.stdout.as_str()).unwrap_or_default(),
        "stderr": outcome.output.as_ref().map(|o| o.stderr.as_str()).unwrap_or_default(),
        "rc": outcome.output.as_ref().map_or(0, |o| o.rc),
    });
    let scope = || minijinja::context! { result => minijinja::Value::from_serialize(&result), ..vars.clone() };
    let eval = |cond: &Option<Condition>, what: &str| -> Result<Option<bool>, String> {
        match cond {
            None => Ok(None),
            Some(Condition::Fixed(b)) => Ok(Some(*b)),
            Some(Condition::Expr(_)) if !judgeable => Ok(None),
            Some(Condition::Expr(e)) => jinja
                .eval_bool(e, &scope())
                .map(Some)
                .map_err(|err| format!("evaluating `{what}`: {err:#}")),
        }
    };
    match eval(&step.failed_when, "failed_when") {
        Ok(Some(f)) => is_failed = f,
        Ok(None) => {}
        Err(msg) => {
            return Attempt {
                error: Some(msg),
                ..failed_with(outcome)
            };
        }
    }
    match eval(&step.changed_when, "changed_when") {
        Ok(Some(c)) => changed = c,
        Ok(None) => {}
        Err(msg) => {
            return Attempt {
                error: Some(msg),
                ..failed_with(outcome)
            };
        }
    }
    let status = if is_failed {
        StepStatus::Failed
    } else if changed {
        StepStatus::Changed
    } else {
        StepStatus::Ok
    };
    let error = is_failed.then(|| match &outcome.output {
        Some(o) if o.rc != 0 => format!(
            "exit code {}{}",
            o.rc,
            last_line(&o.stderr)
                .map(|l| format!(": {l}"))
                .unwrap_or_default()
        ),
        // A command that exited 0 failed only because `failed_when` said so.
        Some(_) | None => "failed_when is true".to_string(),
    });
    Attempt {
        status,
        outcome: Outcome { changed, ..outcome },
        error,
        detail: None,
    }
}

/// A kind's error. When it carries a failed program's output
/// ([`crate::host::process::Failed`]), `register` gets that output and `failed_when` judges it
/// (`result.stderr`, `result.rc`), so a playbook can accept a failure it expects; the report
/// keeps only the message.
fn judge_failure(
    step: &Step,
    e: &anyhow::Error,
    jinja: &Jinja,
    vars: &minijinja::Value,
) -> Attempt {
    let message = format!("{e:#}");
    let Some(out) = e
        .chain()
        .find_map(|c| c.downcast_ref::<crate::host::process::Failed>())
        .map(|f| f.output.clone())
    else {
        return failed(message);
    };
    let result = json!({
        "changed": false,
        "failed": true,
        "skipped": false,
        "stdout": out.stdout,
        "stderr": out.stderr,
        "rc": out.rc,
    });
    let scope =
        minijinja::context! { result => minijinja::Value::from_serialize(&result), ..vars.clone() };
    let verdict = match &step.failed_when {
        None => Ok(true),
        Some(Condition::Fixed(b)) => Ok(*b),
        Some(Condition::Expr(expr)) => jinja
            .eval_bool(expr, &scope)
            .map_err(|err| format!("evaluating `failed_when`: {err:#}")),
    };
    match verdict {
        Ok(false) => Attempt {
            status: StepStatus::Ok,
            outcome: Outcome {
                message: Some(format!("failed_when is false for: {message}")),
                ..Outcome::default()
            },
            error: None,
            detail: Some(out),
        },
        Ok(true) => Attempt {
            detail: Some(out),
            ..failed(message)
        },
        Err(why) => Attempt {
            detail: Some(out),
            ..failed(format!("{message}; {why}"))
        },
    }
}

fn failed_with(outcome: Outcome) -> Attempt {
    Attempt {
        status: StepStatus::Failed,
        outcome,
        error: None,
        detail: None,
    }
}

fn last_line(s: &str) -> Option<&str> {
    s.lines().rev().map(str::trim).find(|l| !l.is_empty())
}

/// What `register` stores. A failed program's whole output ([`Attempt::detail`]) stands in
/// for the step's output, except under `no_log`.
fn result_value(a: &Attempt, no_log: bool) -> Value {
    let detail = a.detail.as_ref().filter(|_| !no_log);
    let out = a.outcome.output.as_ref().or(detail);
    json!({
        "changed": a.status == StepStatus::Changed,
        "failed": a.status == StepStatus::Failed,
        "skipped": a.status == StepStatus::Skipped,
        "stdout": out.map(|o| o.stdout.as_str()).unwrap_or_default(),
        "stderr": out.map(|o| o.stderr.as_str()).unwrap_or_default(),
        "rc": out.map_or(0, |o| o.rc),
        "msg": a.error.as_deref().or(a.outcome.message.as_deref()).unwrap_or_default(),
    })
}

/// Settles what a step killed mid-way (bosund died) left on the host, before any run starts;
/// what was done, for the log. See `steps::settle_interrupted`.
pub async fn settle_interrupted(state_dir: &Path) -> anyhow::Result<Option<String>> {
    crate::steps::settle_interrupted(state_dir).await
}

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
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use backon::{ConstantBuilder, Retryable};
use serde_json::{Map, Value, json};

mod pending;

use pending::PendingHandlers;

use crate::aws::{Aws, AwsTarget};
use crate::secrets::{Redactor, Secret, SecretSource};
use crate::steps::{Outcome, StepContext};
use bosun_model::event::{CommandOutput, EventSink, RunEvent, StepReport, StepStatus, Summary};
use bosun_model::jinja::Jinja;
use bosun_model::playbook::{Condition, FACTS_VAR, Playbook, Step};

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

    let mut redactor = Redactor::default();
    let prepared = match state_dir_room(&opts.state_dir) {
        Err(message) => Err(("[state]", message)),
        Ok(()) => match read_secrets(playbook, opts, &jinja, &mut redactor).await {
            Ok(secrets) => initial_vars(playbook, opts, secrets, &jinja).map_err(|m| ("[vars]", m)),
            Err(message) => Err(("[secrets]", message)),
        },
    };
    let mut masked = Masked {
        inner: sink,
        redactor: &redactor,
    };
    let sink: &mut dyn EventSink = &mut masked;
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
    let mut notified: HashSet<&str> = playbook
        .handlers
        .iter()
        .map(|h| h.name.as_str())
        .filter(|name| owed.iter().any(|o| o == name))
        .collect();
    let mut failed = false;
    for (index, step) in playbook.steps.iter().enumerate() {
        let report = run_step(index, step, false, shared, &mut vars, sink).await;
        summary.count(report.status);
        if report.status == StepStatus::Changed {
            notified.extend(step.notify.iter().map(String::as_str));
        }
        failed = report.status == StepStatus::Failed;
        sink.emit(&RunEvent::StepFinished(report));
        if failed {
            break;
        }
    }
    // In written order; what has not run successfully by the end is still owed.
    let mut owed_now: Vec<&str> = playbook
        .handlers
        .iter()
        .map(|h| h.name.as_str())
        .filter(|name| notified.contains(name))
        .collect();
    if !failed {
        let handlers: Vec<&Step> = playbook
            .handlers
            .iter()
            .filter(|h| notified.contains(h.name.as_str()))
            .collect();
        for (offset, handler) in handlers.into_iter().enumerate() {
            let index = playbook.steps.len() + offset;
            let report = run_step(index, handler, true, shared, &mut vars, sink).await;
            summary.count(report.status);
            let stop = report.status == StepStatus::Failed;
            sink.emit(&RunEvent::StepFinished(report));
            if stop {
                break;
            }
            owed_now.retain(|n| *n != handler.name);
        }
    }
    if !opts.check && owed_now != owed.iter().map(String::as_str).collect::<Vec<_>>() {
        pending.store(&owed_now);
    }
    sink.emit(&RunEvent::Summary(summary));
    summary
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
    redactor: &mut Redactor,
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
        matches!(source, SecretSource::Ssm(_)) && !opts.extra_vars.contains_key(&s.name)
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

async fn run_step(
    index: usize,
    step: &Step,
    handler: bool,
    shared: Shared<'_>,
    vars: &mut Map<String, Value>,
    sink: &mut dyn EventSink,
) -> StepReport {
    let Shared {
        opts,
        jinja,
        redactor,
    } = shared;
    sink.emit(&RunEvent::StepStarted {
        index,
        name: step.name.clone(),
        action: step.action.key().to_string(),
        handler,
    });
    let started = Instant::now();
    let ctx_value = minijinja::Value::from_serialize(&*vars);
    let attempts = Cell::new(0u32);

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
        Some(Ok(true)) | None => match step.action.render(&step.raw_args, jinja, &ctx_value) {
            Err(e) => failed(format!("rendering arguments: {e:#}")),
            Ok(action) => {
                let ctx = StepContext {
                    check: opts.check,
                    base_dir: &opts.base_dir,
                    jinja,
                    vars: &ctx_value,
                    state_dir: &opts.state_dir,
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
                    let verdict = judge(step, result, opts.check, jinja, &ctx_value);
                    if verdict.status == StepStatus::Failed {
                        Err(verdict)
                    } else {
                        Ok(verdict)
                    }
                };
                let policy = ConstantBuilder::default()
                    .with_delay(step.delay)
                    .with_max_times(step.retries as usize);
                attempt
                    .retry(policy)
                    .notify(|v: &Attempt, delay: Duration| {
                        let why = match &v.error {
                            Some(_) if step.no_log => "details hidden: no_log".to_string(),
                            Some(e) => redactor.redact(e),
                            None => "failed".to_string(),
                        };
                        tracing::info!(step = %step.name, "attempt failed ({why}); retrying in {delay:?}");
                    })
                    .await
                    .unwrap_or_else(|v| v)
            }
        },
    };

    if let Some(name) = &step.register {
        vars.insert(name.clone(), result_value(&verdict, step.no_log));
    }
    let Attempt {
        status,
        mut outcome,
        mut error,
        detail: _,
    } = verdict;
    if step.no_log {
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
        name: step.name.clone(),
        action: step.action.key().to_string(),
        handler,
        status,
        duration_ms: (started.elapsed().as_secs_f64() * 1e6).round() / 1000.0,
        attempts: attempts.get().max(1),
        message: error.or(outcome.message),
        diff: outcome.diff,
        output: outcome.output,
    }
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

//! TOML text → [`Playbook`], collecting every structural error with its span.
//!
//! The text is parsed once into toml's spanned tree ([`DeTable`]). Each step is then
//! deserialised on its own, its common keys and its action separately, so that one wrong step
//! (or one wrong key in a step) does not hide the errors in the others.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::{
    Block, Body, COMMON_KEYS, CONDITION_KEYS, DEFAULT_DELAY, Diagnostic, Diagnostics, IncludeRef,
    Playbook, STRUCTURE_KEYS, SecretVar, Source, Step, StepCommon, StepSpans, Var,
};
use crate::jinja::is_templated;
use crate::secret_source::SecretSource;
use crate::steps::{ACTION_KEYS, Action};

const TOP_KEYS: &[&str] = &["name", "description", "secrets", "vars", "step", "handler"];

/// Parses a playbook. Returns every diagnostic found when anything is wrong; validation that
/// needs to know the variables defined outside the text is [`super::validate`], and
/// [`super::load`] does both.
pub fn parse(source: Source) -> Result<Playbook, Diagnostics> {
    let parsed = parse_partial(source);
    if parsed.diagnostics.is_empty() {
        Ok(parsed.playbook)
    } else {
        Err(Diagnostics::new(parsed.playbook.source, parsed.diagnostics))
    }
}

/// What parsing made of a text: the playbook from its well-formed parts, the diagnostics for
/// the rest, and the names that the ill-formed parts would have defined (so that validating the
/// rest does not report them as missing).
pub(crate) struct Parsed {
    pub playbook: Playbook,
    pub diagnostics: Vec<Diagnostic>,
    /// `register` names of steps that failed to parse.
    pub stray_registers: Vec<String>,
    /// What can still be checked of steps and handlers that failed to parse.
    pub stray_steps: Vec<StrayStep>,
    /// Names of handlers that failed to parse.
    pub stray_handlers: Vec<String>,
    /// The text was not even TOML: nothing else is worth checking.
    pub syntax_error: bool,
}

pub(crate) fn parse_partial(source: Source) -> Parsed {
    let text = source.text.clone();
    let mut stray = Stray::default();
    let (root, errors) = DeTable::parse_recoverable(&text);
    if !errors.is_empty() {
        let items = syntax_errors(&text, &errors);
        return Parsed {
            playbook: empty(source),
            diagnostics: items,
            stray_registers: Vec::new(),
            stray_steps: Vec::new(),
            stray_handlers: Vec::new(),
            syntax_error: true,
        };
    }

    let mut diags = Vec::new();
    let mut name = None;
    let mut description = None;
    let mut secrets = Vec::new();
    let mut vars = Vec::new();
    let mut steps = Vec::new();
    let mut handlers = Vec::new();
    for (key, value) in root.get_ref().iter() {
        match key.get_ref().as_ref() {
            "name" => name = string(value, "name", &mut diags),
            "description" => description = string(value, "description", &mut diags),
            "secrets" => secrets = parse_secrets(value, &mut diags),
            "vars" => vars = parse_vars(value, &mut diags),
            "step" => steps = parse_steps(value, "step", &mut diags, &mut stray),
            "handler" => handlers = parse_steps(value, "handler", &mut diags, &mut stray),
            other => diags.push(
                Diagnostic::new(key.span(), format!("unknown top-level key `{other}`"))
                    .with_help(format!("expected one of: {}", TOP_KEYS.join(", "))),
            ),
        }
    }
    if name.is_none() && !diags.iter().any(|d| d.message.contains("`name` must be")) {
        diags.push(
            Diagnostic::new(0..0, "the playbook has no `name`")
                .with_help("add a first line such as: name = \"bootstrap\""),
        );
    }
    Parsed {
        playbook: Playbook {
            name: name.unwrap_or_default(),
            description,
            secrets,
            vars,
            steps,
            handlers,
            included_files: Vec::new(),
            source,
        },
        diagnostics: diags,
        stray_registers: stray.registers,
        stray_steps: stray.checks,
        stray_handlers: stray.handlers,
        syntax_error: false,
    }
}

/// The TOML errors worth showing: the parser recovers after an error and goes on, but what it
/// reports next on the same line, and any `duplicate key` after an error (the key it dropped
/// coming back), follow from the first error rather than being mistakes of their own.
fn syntax_errors(text: &str, errors: &[toml::de::Error]) -> Vec<Diagnostic> {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count();
    let mut lines = Vec::new();
    let mut out = Vec::new();
    for e in errors {
        let span = e.span().unwrap_or(0..0);
        let line = line_of(span.start);
        let cascade =
            lines.contains(&line) || (!out.is_empty() && e.message().contains("duplicate key"));
        if !cascade {
            lines.push(line);
            out.push(Diagnostic::new(
                span,
                format!("invalid TOML: {}", e.message().trim_end()),
            ));
        }
    }
    out
}

fn empty(source: Source) -> Playbook {
    Playbook {
        name: String::new(),
        description: None,
        secrets: Vec::new(),
        vars: Vec::new(),
        steps: Vec::new(),
        handlers: Vec::new(),
        included_files: Vec::new(),
        source,
    }
}

/// What steps and handlers that failed to parse still say: the names they define, and their
/// conditions and templates, which are checked on their own (an error in a step's action does
/// not hide a broken `when`).
#[derive(Default)]
struct Stray {
    registers: Vec<String>,
    handlers: Vec<String>,
    checks: Vec<StrayStep>,
}

/// The parts of a step that failed to parse which can still be checked.
#[derive(Debug, Default)]
pub(crate) struct StrayStep {
    /// `when`, `changed_when` and `failed_when` when they are strings: key, expression, span.
    pub conditions: Vec<(&'static str, String, Range<usize>)>,
    /// Every templated string in its actions' arguments.
    pub templates: Vec<(String, Range<usize>)>,
}

fn string(value: &Spanned<DeValue<'_>>, key: &str, diags: &mut Vec<Diagnostic>) -> Option<String> {
    match value.get_ref() {
        DeValue::String(s) => Some(s.to_string()),
        other => {
            diags.push(
                Diagnostic::new(
                    value.span(),
                    format!("`{key}` must be a string, found {}", other.type_str()),
                )
                .with_help(format!("write it in quotes: {key} = \"...\"")),
            );
            None
        }
    }
}

fn parse_vars(value: &Spanned<DeValue<'_>>, diags: &mut Vec<Diagnostic>) -> Vec<Var> {
    let Some(table) = value.get_ref().as_table() else {
        diags.push(
            Diagnostic::new(
                value.span(),
                format!(
                    "`vars` must be a table, found {}",
                    value.get_ref().type_str()
                ),
            )
            .with_help("write [vars] followed by lines of name = value"),
        );
        return Vec::new();
    };
    let mut vars = Vec::new();
    for (key, value) in table.iter() {
        let name = key.get_ref().to_string();
        if !is_identifier(&name) {
            diags.push(
                Diagnostic::new(
                    key.span(),
                    format!("`{name}` is not a usable variable name"),
                )
                .with_help("use letters, digits and underscores, not starting with a digit"),
            );
            continue;
        }
        match serde_json::Value::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(v) => vars.push(Var {
                name,
                value: v,
                span: value.span(),
                file: None,
                default: false,
            }),
            Err(e) => diags.push(Diagnostic::new(
                value.span(),
                format!("variable `{name}`: {e}"),
            )),
        }
    }
    vars
}

fn parse_secrets(value: &Spanned<DeValue<'_>>, diags: &mut Vec<Diagnostic>) -> Vec<SecretVar> {
    let help = "write [secrets] followed by lines of name = \"env:NAME\", \"file:/path\", \"ssm:/parameter\" or \"secretsmanager:<secret id>[#key]\"";
    let Some(table) = value.get_ref().as_table() else {
        diags.push(
            Diagnostic::new(
                value.span(),
                format!(
                    "`secrets` must be a table, found {}",
                    value.get_ref().type_str()
                ),
            )
            .with_help(help),
        );
        return Vec::new();
    };
    let mut secrets = Vec::new();
    for (key, value) in table.iter() {
        let name = key.get_ref().to_string();
        if !is_identifier(&name) {
            diags.push(
                Diagnostic::new(
                    key.span(),
                    format!("`{name}` is not a usable variable name"),
                )
                .with_help("use letters, digits and underscores, not starting with a digit"),
            );
            continue;
        }
        let parsed = match value.get_ref() {
            // Not quoted back: a malformed source may be the secret itself, pasted in.
            DeValue::String(s) => s.parse::<SecretSource>().map_err(|_| {
                "is not a source: write `env:NAME`, `file:/path` or `ssm:/parameter` (the value itself never goes in the playbook)".to_string()
            }),
            other => Err(format!(
                "must be a string naming a source, found {}",
                other.type_str()
            )),
        };
        match parsed {
            Ok(source) => secrets.push(SecretVar {
                name,
                source,
                span: value.span(),
            }),
            Err(e) => diags.push(
                Diagnostic::new(value.span(), format!("secret `{name}`: {e}")).with_help(help),
            ),
        }
    }
    secrets
}

/// True for names Jinja can read as a plain variable.
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_steps(
    value: &Spanned<DeValue<'_>>,
    kind: &str,
    diags: &mut Vec<Diagnostic>,
    stray: &mut Stray,
) -> Vec<Step> {
    let Some(items) = value.get_ref().as_array() else {
        diags.push(
            Diagnostic::new(value.span(), format!("`{kind}` must be an array of tables"))
                .with_help(format!(
                    "write each one as [[{kind}]], with double brackets"
                )),
        );
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let step = parse_step(item, kind, diags, stray);
            if step.is_none() {
                let get = |k: &str| {
                    item.get_ref()
                        .as_table()
                        .and_then(|t| t.get(k))
                        .and_then(|v| v.get_ref().as_str())
                        .map(str::to_string)
                };
                stray.registers.extend(get("register"));
                if kind == "handler" {
                    stray.handlers.extend(get("name"));
                }
                if let Some(table) = item.get_ref().as_table() {
                    stray.checks.push(stray_step(table));
                }
            }
            step
        })
        .collect()
}

/// `include = { playbook = "...", vars = { ... } }` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IncludeArgs {
    playbook: String,
    /// Read with its spans by `parse_vars`.
    #[serde(default, rename = "vars")]
    _vars: serde::de::IgnoredAny,
}

/// Common keys that mean nothing on a block or an include (they belong on its steps).
const NOT_ON_BLOCKS: &[&str] = &[
    "until",
    "retries",
    "delay",
    "timeout",
    "register",
    "changed_when",
    "failed_when",
    "notify",
];

fn parse_step(
    item: &Spanned<DeValue<'_>>,
    kind: &str,
    diags: &mut Vec<Diagnostic>,
    stray: &mut Stray,
) -> Option<Step> {
    let Some(table) = item.get_ref().as_table() else {
        diags.push(Diagnostic::new(
            item.span(),
            format!(
                "each `{kind}` must be a table, found {}",
                item.get_ref().type_str()
            ),
        ));
        return None;
    };
    let before = diags.len();
    let mut common = DeTable::new();
    let mut actions: Vec<(&Spanned<_>, &Spanned<DeValue<'_>>)> = Vec::new();
    let mut structure: Vec<(&Spanned<_>, &Spanned<DeValue<'_>>)> = Vec::new();
    for (key, value) in table.iter() {
        let k: &str = key.get_ref().as_ref();
        if COMMON_KEYS.contains(&k) {
            common.insert(key.clone(), value.clone());
        } else if ACTION_KEYS.contains(&k) {
            actions.push((key, value));
        } else if STRUCTURE_KEYS.contains(&k) {
            structure.push((key, value));
        } else {
            diags.push(
                Diagnostic::new(key.span(), format!("unknown key `{k}` in {kind}")).with_help(
                    format!(
                        "expected one of: {}; or one action: {}; or `block` (with `rescue`, `always`) or `include`",
                        COMMON_KEYS.join(", "),
                        ACTION_KEYS.join(", ")
                    ),
                ),
            );
        }
    }

    let name_span = table.get("name").map_or(item.span(), |v| v.span());
    let label = table
        .get("name")
        .and_then(|v| v.get_ref().as_str())
        .map_or_else(|| kind.to_string(), |n| format!("{kind} `{n}`"));
    let structural = |k: &str| structure.iter().find(|(key, _)| key.get_ref() == k);
    let block_key = structural("block").or_else(|| structural("include"));
    if let Some((key, _)) = block_key {
        let what = key.get_ref().to_string();
        if kind == "handler" {
            diags.push(
                Diagnostic::new(
                    key.span(),
                    format!("{label}: a handler cannot be a `{what}`"),
                )
                .with_help("a handler is one action; notify several handlers instead"),
            );
        }
        for (a, _) in &actions {
            diags.push(
                Diagnostic::new(
                    a.span(),
                    format!("{label} is a `{what}` and has an action `{}`", a.get_ref()),
                )
                .with_help(format!("put the action in a step of the {what}")),
            );
        }
        if let (Some(_), Some((inc, _))) = (structural("block"), structural("include")) {
            diags.push(
                Diagnostic::new(
                    inc.span(),
                    format!("{label} has both `block` and `include`"),
                )
                .with_help("put the include in a step of the block"),
            );
        }
        for k in NOT_ON_BLOCKS {
            if let Some((key, _)) = table.get_key_value(*k) {
                diags.push(
                    Diagnostic::new(key.span(), format!("`{k}` cannot be set on a `{what}`"))
                        .with_help(format!(
                            "set it on the steps inside; a {what} takes name, when, loop, tags, vars, environment, check_mode and no_log"
                        )),
                );
            }
        }
    }
    if structural("block").is_none() {
        for k in ["rescue", "always"] {
            if let Some((key, _)) = structural(k) {
                diags.push(
                    Diagnostic::new(key.span(), format!("{label}: `{k}` without `block`"))
                        .with_help(format!(
                            "`{k}` belongs to a block: [[step]] name = \"...\", then [[step.block]] ... and [[step.{k}]] ..."
                        )),
                );
            }
        }
    }
    if block_key.is_none() {
        match actions.as_slice() {
            [] => diags.push(
                Diagnostic::new(name_span.clone(), format!("{label} has no action")).with_help(
                    format!(
                        "add exactly one of: {}; or a `block` of steps, or an `include`",
                        ACTION_KEYS.join(", ")
                    ),
                ),
            ),
            [_] => {}
            [(first, _), rest @ ..] => {
                for (key, _) in rest {
                    diags.push(
                        Diagnostic::new(
                            key.span(),
                            format!(
                                "{label} has more than one action: `{}` and `{}`",
                                first.get_ref(),
                                key.get_ref()
                            ),
                        )
                        .with_help(
                            "a step does exactly one thing: split it into one step per action",
                        ),
                    );
                }
            }
        }
    }

    let common_value = Spanned::new(item.span(), DeValue::Table(common));
    let common = match StepCommon::deserialize(ValueDeserializer::from(common_value)) {
        Ok(c) => Some(c),
        Err(e) if e.message().starts_with("missing field `name`") => {
            let what = if kind == "handler" {
                "reports, the journal and `notify` find it by its name"
            } else {
                "reports and the journal show it by its name"
            };
            diags.push(
                Diagnostic::new(item.span(), format!("{label} has no `name`")).with_help(format!(
                    "add a line such as: name = \"what it does\" ({what})"
                )),
            );
            None
        }
        Err(e) => {
            diags.push(serde_diagnostic(&e, item.span(), &label));
            None
        }
    };
    let step_vars = table
        .get("vars")
        .map(|v| parse_vars(v, diags))
        .unwrap_or_default();
    let mut tag_spans = Vec::new();
    if let Some(tags) = table.get("tags").and_then(|v| v.get_ref().as_array()) {
        for t in tags {
            tag_spans.push(t.span());
            if let Some(name) = t.get_ref().as_str()
                && (name.is_empty() || name.contains([',', ' ']))
            {
                diags.push(
                    Diagnostic::new(t.span(), format!("tag {name:?} cannot be selected"))
                        .with_help(
                            "a tag is one word: no spaces or commas (--tags a,b splits on commas)",
                        ),
                );
            }
        }
    }

    let body = if let Some((key, value)) = structural("block") {
        let steps = parse_steps(value, "step", diags, stray);
        let part = |k: &str, diags: &mut Vec<Diagnostic>, stray: &mut Stray| {
            structural(k)
                .map(|(_, v)| parse_steps(v, "step", diags, stray))
                .unwrap_or_default()
        };
        let rescue = part("rescue", diags, stray);
        let always = part("always", diags, stray);
        if value.get_ref().as_array().is_some_and(|a| a.is_empty()) {
            diags.push(
                Diagnostic::new(key.span(), format!("{label}: the block has no steps"))
                    .with_help("add steps as [[step.block]] tables"),
            );
        }
        Some((
            Body::Block(Block {
                steps,
                rescue,
                always,
                include: None,
            }),
            value.span(),
            None,
        ))
    } else if let Some((_, value)) = structural("include") {
        match IncludeArgs::deserialize(ValueDeserializer::from((*value).clone())) {
            Ok(inc) => {
                let path_span = value
                    .get_ref()
                    .as_table()
                    .and_then(|t| t.get("playbook"))
                    .map_or(value.span(), |v| v.span());
                let mut vars_spans = Vec::new();
                if let Some(v) = value.get_ref().as_table().and_then(|t| t.get("vars")) {
                    vars_spans = parse_vars(v, diags);
                }
                let include = IncludeRef {
                    path: inc.playbook,
                    span: path_span,
                    vars: vars_spans,
                };
                Some((
                    Body::Block(Block {
                        include: Some(include),
                        ..Block::default()
                    }),
                    value.span(),
                    None,
                ))
            }
            Err(e) => {
                diags.push(serde_diagnostic(
                    &e,
                    value.span(),
                    &format!("{label}: `include`"),
                ));
                None
            }
        }
    } else {
        actions.first().and_then(|(key, value)| {
            let action = parse_action(key.get_ref().as_ref(), value, &label, diags)?;
            let raw_args =
                serde_json::Value::deserialize(ValueDeserializer::from((*value).clone()))
                    .unwrap_or_default();
            Some((
                Body::Action { action, raw_args },
                value.span(),
                Some(*value),
            ))
        })
    };

    if diags.len() > before {
        return None;
    }
    let (common, (body, action_span, action_value)) = (common?, body?);
    let span_of = |k: &str| table.get(k).map(|v| v.span());
    let mut templates = Vec::new();
    let mut local_files = Vec::new();
    if let (Some(v), Body::Action { action, .. }) = (action_value, &body) {
        collect_templates(v, &mut templates);
        local_files = super::local_files::collect(action.key(), v);
    }
    let mut outer_templates = Vec::new();
    for k in ["loop", "environment"] {
        if let Some(v) = table.get(k) {
            collect_templates(v, &mut outer_templates);
        }
    }
    let notify_spans = table
        .get("notify")
        .and_then(|v| v.get_ref().as_array())
        .map(|a| a.iter().map(|v| v.span()).collect())
        .unwrap_or_default();
    let retries = common
        .retries
        .unwrap_or(if common.until.is_some() { 3 } else { 0 });
    Some(Step {
        name: common.name,
        body,
        when: common.when,
        retries,
        delay: common.delay.map_or(DEFAULT_DELAY, |d| d.0),
        timeout: common.timeout.map(|d| d.0),
        register: common.register,
        changed_when: common.changed_when,
        failed_when: common.failed_when,
        notify: common.notify,
        no_log: common.no_log,
        loop_items: common.loop_items,
        tags: common.tags,
        vars: step_vars,
        environment: common.environment,
        until: common.until,
        check_mode: common.check_mode,
        file: None,
        local_files,
        spans: StepSpans {
            table: item.span(),
            name: name_span,
            action: action_span,
            when: span_of("when"),
            changed_when: span_of("changed_when"),
            failed_when: span_of("failed_when"),
            register: span_of("register"),
            notify: notify_spans,
            templates,
            loop_items: span_of("loop"),
            until: span_of("until"),
            outer_templates,
            tags: tag_spans,
        },
    })
}

/// The action written under `key`, typed and validated; `None` (with diagnostics) when wrong.
fn parse_action(
    key: &str,
    value: &Spanned<DeValue<'_>>,
    label: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<Action> {
    let typed = Action::deserialize(key, ValueDeserializer::from(value.clone()))?;
    // A whole-value template where a table or list belongs is judged after rendering.
    let typed = match typed {
        Err(e) if crate::steps::common::deferred_template(e.message()).is_some() => {
            let raw = serde_json::Value::deserialize(ValueDeserializer::from(value.clone()))
                .unwrap_or_default();
            match Action::from_json_deferring_templates(key, raw) {
                Ok(a) => Ok(a),
                Err(msg) => {
                    diags.push(Diagnostic::new(
                        value.span(),
                        format!("{label}: `{key}`: {msg}"),
                    ));
                    return None;
                }
            }
        }
        other => other,
    };
    match typed {
        Ok(action) => {
            for problem in action.validate() {
                diags.push(Diagnostic::new(
                    value.span(),
                    format!("{label}: `{key}`: {problem}"),
                ));
            }
            Some(action)
        }
        Err(e) => {
            diags.push(serde_diagnostic(
                &e,
                value.span(),
                &format!("{label}: `{key}`"),
            ));
            None
        }
    }
}

fn stray_step(table: &DeTable<'_>) -> StrayStep {
    let mut out = StrayStep::default();
    for key in CONDITION_KEYS {
        if let Some(v) = table.get(*key)
            && let DeValue::String(expr) = v.get_ref()
        {
            out.conditions.push((key, expr.to_string(), v.span()));
        }
    }
    for (key, value) in table.iter() {
        if ACTION_KEYS.contains(&key.get_ref().as_ref()) {
            collect_templates(value, &mut out.templates);
        }
    }
    out
}

/// A serde error from toml's deserialiser as a diagnostic; its span when it has one, else the
/// span of what was being read.
fn serde_diagnostic(e: &toml::de::Error, fallback: Range<usize>, label: &str) -> Diagnostic {
    let span = e.span().unwrap_or(fallback);
    let message = e.message().trim_end().to_string();
    let (message, help) = match message.split_once(", expected ") {
        Some((what, expected)) => (what.to_string(), Some(format!("expected {expected}"))),
        None => (message, None),
    };
    let d = Diagnostic::new(span, format!("{label}: {message}"));
    match help {
        Some(h) => d.with_help(h),
        None => d,
    }
}

fn collect_templates(value: &Spanned<DeValue<'_>>, out: &mut Vec<(String, Range<usize>)>) {
    match value.get_ref() {
        DeValue::String(s) if is_templated(s) => out.push((s.to_string(), value.span())),
        DeValue::Array(items) => items.iter().for_each(|v| collect_templates(v, out)),
        DeValue::Table(t) => t.iter().for_each(|(_, v)| collect_templates(v, out)),
        _ => {}
    }
}

//! Checks that need the whole playbook and the variables defined outside it: every `notify`
//! names a handler, handler names are unique, and every template and condition reads only
//! variables that will exist when it is evaluated.

use std::collections::{BTreeSet, HashSet};
use std::ops::Range;

use super::parse::StrayStep;
use super::parse::is_identifier;
use super::{Body, Condition, Diagnostic, LoopItems, Playbook, Step};
use crate::jinja::{Jinja, is_templated};

/// The variable holding host facts (`facts.arch`, `facts.ec2.region`, ...).
pub const FACTS_VAR: &str = "facts";
/// The variable holding a step's own result inside `changed_when` and `failed_when`.
pub const RESULT_VAR: &str = "result";
/// The variable holding the current item of a `loop`.
pub const LOOP_VAR: &str = "item";

/// Validates `playbook` given the names of variables set from outside it (`--var`,
/// `--vars-file`). Returns every problem found; empty when the playbook can run.
pub fn validate(playbook: &Playbook, outside_vars: &[String]) -> Vec<Diagnostic> {
    validate_with(playbook, outside_vars, &[], &[])
}

/// [`validate`], counting `extra_handlers` (handlers that exist but failed to parse) as known,
/// and checking what can be checked of the steps that failed to parse (`stray`).
pub(crate) fn validate_with(
    playbook: &Playbook,
    outside_vars: &[String],
    extra_handlers: &[String],
    stray: &[StrayStep],
) -> Vec<Diagnostic> {
    let jinja = Jinja::new();
    let mut diags = Vec::new();
    let text = &playbook.source.text;

    // Reports, the journal and `history --run` name steps; two with one name cannot be told
    // apart there, so this is an error rather than a warning.
    let mut step_names = HashSet::new();
    for s in &playbook.steps {
        if !step_names.insert(s.name.as_str()) {
            diags.push(
                Diagnostic::new(
                    s.spans.name.clone(),
                    format!("a step named `{}` already exists", s.name),
                )
                .with_help(
                    "give each step its own name: reports and the journal tell steps apart by name",
                ),
            );
        }
    }

    let mut handler_names = HashSet::new();
    for h in &playbook.handlers {
        if !handler_names.insert(h.name.as_str()) {
            diags.push(
                Diagnostic::new(
                    h.spans.name.clone(),
                    format!("a handler named `{}` already exists", h.name),
                )
                .with_help("give each handler its own name: `notify` finds handlers by name")
                .in_file(h.file.as_ref()),
            );
        }
        if !h.notify.is_empty() {
            diags.push(
                Diagnostic::new(
                    h.spans.notify[0].clone(),
                    format!(
                        "handler `{}` has `notify`; handlers cannot notify other handlers",
                        h.name
                    ),
                )
                .with_help("list every handler to run in the `notify` of the step itself")
                .in_file(h.file.as_ref()),
            );
        }
    }
    handler_names.extend(extra_handlers.iter().map(String::as_str));
    let mut known_handlers: Vec<&str> = handler_names.iter().copied().collect();
    known_handlers.sort_unstable();
    let mut all_steps = Vec::new();
    flatten(&playbook.steps, &mut all_steps);
    for step in all_steps {
        for (target, span) in step.notify.iter().zip(&step.spans.notify) {
            if !handler_names.contains(target.as_str()) {
                let help = if known_handlers.is_empty() {
                    "this playbook defines no [[handler]]".to_string()
                } else {
                    format!(
                        "expected one of the handlers: {}",
                        known_handlers.join(", ")
                    )
                };
                diags.push(
                    Diagnostic::new(
                        span.clone(),
                        format!("`notify` names no handler: `{target}`"),
                    )
                    .with_help(help)
                    .in_file(step.file.as_ref()),
                );
            }
        }
    }

    let mut defined: BTreeSet<String> = outside_vars.iter().cloned().collect();
    defined.insert(FACTS_VAR.to_string());
    for secret in &playbook.secrets {
        defined.insert(secret.name.clone());
    }
    for var in &playbook.vars {
        if let Some(secret) = playbook.secrets.iter().find(|s| s.name == var.name) {
            diags.push(
                Diagnostic::new(
                    var.span.clone(),
                    format!("`{}` is both a secret and a variable", var.name),
                )
                .with_help(format!(
                    "it is read from {} by [secrets]; remove it from [vars] or rename one",
                    secret.source
                )),
            );
        }
        if let serde_json::Value::String(s) = &var.value {
            check_template(&jinja, s, var.span.clone(), &defined, text, &mut diags);
        }
        defined.insert(var.name.clone());
    }
    check_steps(&jinja, &playbook.steps, &mut defined, text, &mut diags);
    // Handlers run after every step, so every registered variable exists by then.
    for handler in &playbook.handlers {
        let text = handler.file.as_ref().map_or(text, |f| &f.text);
        let mut found = Vec::new();
        check_step(&jinja, handler, &defined, text, &mut found);
        diags.extend(found.into_iter().map(|d| d.in_file(handler.file.as_ref())));
    }
    // Where a step that failed to parse sits in the order is not known: judge its parts
    // against everything the playbook defines anywhere.
    let mut everything = defined;
    everything.extend(outside_vars.iter().cloned());
    everything.insert(RESULT_VAR.to_string());
    for step in stray {
        for (key, expr, span) in &step.conditions {
            check_expression(
                &jinja,
                key,
                expr,
                span.clone(),
                &everything,
                text,
                &mut diags,
            );
        }
        for (template, span) in &step.templates {
            check_template(
                &jinja,
                template,
                span.clone(),
                &everything,
                text,
                &mut diags,
            );
        }
    }
    diags
}

/// Every step, the steps of blocks included (depth first, in the order they run).
fn flatten<'a>(steps: &'a [Step], out: &mut Vec<&'a Step>) {
    for step in steps {
        out.push(step);
        if let Body::Block(b) = &step.body {
            for part in [&b.steps, &b.rescue, &b.always] {
                flatten(part, out);
            }
        }
    }
}

/// Checks `steps` in order; `defined` grows by their `register` names (a block's steps'
/// too: later steps may read them).
fn check_steps(
    jinja: &Jinja,
    steps: &[Step],
    defined: &mut BTreeSet<String>,
    root_text: &str,
    diags: &mut Vec<Diagnostic>,
) {
    for step in steps {
        let text = step.file.as_ref().map_or(root_text, |f| &f.text);
        // `vars` of the step see `item` and each the ones before it; `loop` sees them but not
        // `item`; the rest of the step sees them all.
        let mut scope = defined.clone();
        let mut found = Vec::new();
        let in_loop = |span: &std::ops::Range<usize>| {
            step.spans
                .loop_items
                .as_ref()
                .is_some_and(|l| l.start <= span.start && span.end <= l.end)
        };
        let mut loop_scope = defined.clone();
        loop_scope.extend(step.vars.iter().map(|v| v.name.clone()));
        for (template, span) in step
            .spans
            .outer_templates
            .iter()
            .filter(|(_, s)| in_loop(s))
        {
            check_template(jinja, template, span.clone(), &loop_scope, text, &mut found);
        }
        if step.loop_items.is_some() {
            scope.insert(LOOP_VAR.to_string());
        }
        for var in &step.vars {
            let var_text = var.file.as_ref().map_or(text, |f| &f.text);
            if let serde_json::Value::String(s) = &var.value {
                let mut var_found = Vec::new();
                check_template(jinja, s, var.span.clone(), &scope, var_text, &mut var_found);
                diags.extend(var_found.into_iter().map(|d| d.in_file(var.file.as_ref())));
            }
            scope.insert(var.name.clone());
        }
        for (template, span) in step
            .spans
            .outer_templates
            .iter()
            .filter(|(_, s)| !in_loop(s))
        {
            check_template(jinja, template, span.clone(), &scope, text, &mut found);
        }
        if let Some(items) = &step.loop_items
            && let (LoopItems::Template(t), Some(span)) = (items, &step.spans.loop_items)
            && !t.trim_start().starts_with("{{")
        {
            found.push(
                Diagnostic::new(
                    span.clone(),
                    "`loop` must be a list, or a template that is one `{{ expression }}`",
                )
                .with_help("write loop = [\"a\", \"b\"] or loop = \"{{ users }}\""),
            );
        }
        check_step(jinja, step, &scope, text, &mut found);
        if let (Some(expr), Some(span)) = (&step.until, &step.spans.until) {
            let mut with_result = scope.clone();
            with_result.insert(RESULT_VAR.to_string());
            with_result.extend(step.register.clone());
            check_expression(
                jinja,
                "until",
                expr,
                span.clone(),
                &with_result,
                text,
                &mut found,
            );
        }
        diags.extend(found.into_iter().map(|d| d.in_file(step.file.as_ref())));
        if let Body::Block(b) = &step.body {
            let mut inner = scope.clone();
            for part in [&b.steps, &b.rescue, &b.always] {
                check_steps(jinja, part, &mut inner, root_text, diags);
            }
            // Registers made inside the block are visible after it.
            defined.extend(inner.difference(&scope).cloned().collect::<Vec<_>>());
        }
        if let Some(r) = &step.register {
            defined.insert(r.clone());
        }
    }
}

fn check_step(
    jinja: &Jinja,
    step: &Step,
    defined: &BTreeSet<String>,
    text: &str,
    diags: &mut Vec<Diagnostic>,
) {
    if let (Some(r), Some(span)) = (&step.register, &step.spans.register)
        && (!is_identifier(r) || r == FACTS_VAR || r == RESULT_VAR)
    {
        diags.push(
            Diagnostic::new(
                span.clone(),
                format!("`register = \"{r}\"` is not a usable variable name"),
            )
            .with_help("use letters, digits and underscores; `facts` and `result` are taken"),
        );
    }
    if let (Some(expr), Some(span)) = (&step.when, &step.spans.when) {
        check_expression(jinja, "when", expr, span.clone(), defined, text, diags);
    }
    for (template, span) in &step.spans.templates {
        check_template(jinja, template, span.clone(), defined, text, diags);
    }
    let mut with_result = defined.clone();
    with_result.insert(RESULT_VAR.to_string());
    if let Some(r) = &step.register {
        with_result.insert(r.clone());
    }
    for (key, cond, span) in [
        ("changed_when", &step.changed_when, &step.spans.changed_when),
        ("failed_when", &step.failed_when, &step.spans.failed_when),
    ] {
        if let (Some(Condition::Expr(expr)), Some(span)) = (cond, span) {
            check_expression(jinja, key, expr, span.clone(), &with_result, text, diags);
        }
    }
}

fn check_template(
    jinja: &Jinja,
    template: &str,
    span: Range<usize>,
    defined: &BTreeSet<String>,
    text: &str,
    diags: &mut Vec<Diagnostic>,
) {
    if !is_templated(template) {
        return;
    }
    match jinja.template_variables(template) {
        Ok(used) => undefined(used, span, defined, text, diags),
        Err(e) => diags.push(jinja_syntax(&e, span)),
    }
}

/// Checks the expression under `key` (`when`, ...): written without `{{ }}`, valid Jinja,
/// reading only defined variables.
fn check_expression(
    jinja: &Jinja,
    key: &str,
    expr: &str,
    span: Range<usize>,
    defined: &BTreeSet<String>,
    text: &str,
    diags: &mut Vec<Diagnostic>,
) {
    if let Some(d) = braces_in_expression(key, expr, &span) {
        diags.push(d);
        return;
    }
    match jinja.expression_variables(expr) {
        Ok(used) => undefined(used, span, defined, text, diags),
        Err(e) => diags.push(jinja_syntax(&e, span)),
    }
}

/// A diagnostic for an expression key (`when`, `changed_when`, `failed_when`, ...) written
/// as a template: these keys already are Jinja expressions, and minijinja would read `{{ x }}`
/// as a map literal and answer with a message about maps.
pub(crate) fn braces_in_expression(
    key: &str,
    expr: &str,
    span: &Range<usize>,
) -> Option<Diagnostic> {
    if !is_templated(expr) {
        return None;
    }
    let bare = expr
        .replace("{{-", "")
        .replace("-}}", "")
        .replace("{{", "")
        .replace("}}", "");
    let bare = bare.split_whitespace().collect::<Vec<_>>().join(" ");
    Some(
        Diagnostic::new(
            span.clone(),
            format!("`{key}` is a Jinja expression: write it without `{{{{ }}}}`"),
        )
        .with_help(format!("write: {key} = {bare:?}")),
    )
}

fn jinja_syntax(e: &minijinja::Error, span: Range<usize>) -> Diagnostic {
    let detail = e
        .detail()
        .map_or_else(|| e.kind().to_string(), str::to_string);
    Diagnostic::new(span, format!("invalid Jinja: {detail}"))
        .with_help("see https://docs.rs/minijinja/latest/minijinja/syntax/ for the syntax")
}

fn undefined(
    used: HashSet<String>,
    span: Range<usize>,
    defined: &BTreeSet<String>,
    text: &str,
    diags: &mut Vec<Diagnostic>,
) {
    let mut missing: Vec<String> = used
        .into_iter()
        .filter(|v| !defined.contains(v) && !is_builtin(v))
        .collect();
    missing.sort();
    for name in missing {
        let span = narrow(text, &span, &name);
        let known: Vec<&str> = defined.iter().map(String::as_str).collect();
        diags.push(
            Diagnostic::new(span, format!("undefined variable `{name}`")).with_help(format!(
                "defined at this point: {} (from [secrets], [vars], --var, --vars-file, `facts`, and `register` of earlier steps)",
                known.join(", ")
            )),
        );
    }
}

/// Names Jinja provides itself.
fn is_builtin(name: &str) -> bool {
    matches!(
        name,
        "range" | "dict" | "namespace" | "debug" | "true" | "false" | "none" | "loop"
    )
}

/// The span of the first whole-word occurrence of `name` inside `span`, else `span` itself.
fn narrow(text: &str, span: &Range<usize>, name: &str) -> Range<usize> {
    let Some(slice) = text.get(span.clone()) else {
        return span.clone();
    };
    let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let mut from = 0;
    while let Some(i) = slice[from..].find(name) {
        let at = from + i;
        let end = at + name.len();
        if !word(slice[..at].chars().next_back()) && !word(slice[end..].chars().next()) {
            return span.start + at..span.start + end;
        }
        from = end;
    }
    span.clone()
}

//! What a run submitted with a scoped token (`[[api.tcp.scoped_token]]`) must satisfy: a
//! playbook of its list by name (never `playbook_toml` or a bundle), only its variables, each a string,
//! number or boolean, and a playbook in which no value from outside can become program text.
//!
//! Values are data. bosund renders a template once (a value `{{ facts }}` arrives as those
//! nine characters; nothing renders a rendered string again), so the one place a value could
//! turn into code is a program's own text: `command`'s `run` (a `/bin/sh -c` line), the
//! program of an `argv`, or an `argv` whose program is a shell or interpreter reading code from
//! its arguments (`sh -c`, `python3 -c`, ...). A scoped run is refused (403, nothing runs) when
//! any `command` of the playbook — included files, blocks, rescue/always and handlers too —
//! has such a templated part, or when a `helm_release`'s `helm` (the program bosund runs) is
//! built from one of the token's variables (through `[vars]` and step `vars` too); an `argv`
//! with templated arguments of another program is fine:
//! each value is one argument, never split or interpreted by a shell. Quoting shell lines
//! instead would need every path from a variable to a shell line tracked (through `[vars]`,
//! `register`, loops and files written by earlier steps); refusing the templated line is a rule
//! that can be checked before anything runs and explained in one sentence. Why, in
//! ARCHITECTURE.md ("Scoped tokens").

use std::collections::BTreeSet;

use bosun_model::jinja::{Jinja, is_templated};
use bosun_model::playbook::{Body, Playbook, Step, Var};
use serde_json::{Map, Value};

use crate::config::TokenScope;

/// Programs that execute code given in their arguments; a templated argument to one of them
/// is a shell line in disguise.
const INTERPRETERS: &[&str] = &[
    "sh",
    "bash",
    "dash",
    "zsh",
    "ksh",
    "ash",
    "busybox",
    "env",
    "sudo",
    "su",
    "runuser",
    "xargs",
    "python",
    "python3",
    "perl",
    "ruby",
    "node",
    "php",
    "lua",
    "awk",
    "gawk",
    "mawk",
    "ssh",
    "eval",
    "nsenter",
    "chroot",
    "systemd-run",
];

/// Checks the request itself: the playbook's name and the variables' names and kinds. The
/// message names what is out of scope, never a value.
pub fn check_request(
    scope: &TokenScope,
    playbook: Option<&str>,
    vars: &Map<String, Value>,
) -> Result<(), String> {
    let Some(name) = playbook else {
        return Err(
            "a scoped token may only run playbooks by name, not `playbook_toml` or a bundle".into(),
        );
    };
    if !scope.allows_playbook(name) {
        return Err(format!("playbook `{name}` is outside this token's scope"));
    }
    let outside: BTreeSet<&str> = vars
        .keys()
        .map(String::as_str)
        .filter(|k| !scope.vars.contains(*k))
        .collect();
    if !outside.is_empty() {
        let list: Vec<String> = outside.iter().map(|v| format!("`{v}`")).collect();
        return Err(format!(
            "variable {} outside this token's scope",
            if list.len() == 1 {
                format!("{} is", list[0])
            } else {
                format!("{} are", list.join(", "))
            }
        ));
    }
    if let Some((k, _)) = vars
        .iter()
        .find(|(_, v)| !matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)))
    {
        return Err(format!(
            "variable `{k}`: a scoped token may set strings, numbers and booleans only"
        ));
    }
    Ok(())
}

/// The steps of `playbook` in which a value could become program text (see the module doc),
/// as "step `NAME`: why"; empty when a token with `scope` may run it. `command`: any templated
/// program text. `helm_release`: a `helm` (the program bosund runs) whose template reads one
/// of the scope's variables, directly or through `[vars]`/step `vars` built from them.
pub fn templated_programs(playbook: &Playbook, scope: &TokenScope) -> Vec<String> {
    let jinja = Jinja::new();
    let mut tainted: BTreeSet<String> = scope.vars.clone();
    taint(&jinja, &playbook.vars, &mut tainted);
    let mut found = Vec::new();
    for step in playbook.steps.iter().chain(&playbook.handlers) {
        walk(&jinja, step, &tainted, &mut found);
    }
    found
}

/// Adds to `tainted` every variable of `vars` whose value reads a tainted one (in order, as
/// the engine renders them).
fn taint(jinja: &Jinja, vars: &[Var], tainted: &mut BTreeSet<String>) {
    for var in vars {
        if reads_any(jinja, &var.value, tainted) {
            tainted.insert(var.name.clone());
        }
    }
}

/// Whether any string in `value` is a template reading one of `names` (a template that does
/// not parse counts as reading them: refuse rather than guess).
fn reads_any(jinja: &Jinja, value: &Value, names: &BTreeSet<String>) -> bool {
    match value {
        Value::String(s) => match jinja.template_variables(s) {
            Ok(read) => read.iter().any(|v| names.contains(v)),
            Err(_) => true,
        },
        Value::Array(items) => items.iter().any(|v| reads_any(jinja, v, names)),
        Value::Object(map) => map.values().any(|v| reads_any(jinja, v, names)),
        _ => false,
    }
}

fn walk(jinja: &Jinja, step: &Step, tainted: &BTreeSet<String>, found: &mut Vec<String>) {
    let mut tainted = tainted.clone();
    taint(jinja, &step.vars, &mut tainted);
    match &step.body {
        Body::Block(block) => {
            for s in block.steps.iter().chain(&block.rescue).chain(&block.always) {
                walk(jinja, s, &tainted, found);
            }
        }
        Body::Action { action, raw_args } => match action.key() {
            "command" => {
                if let Some(why) = templated_program(raw_args) {
                    found.push(format!("step `{}`: {why}", step.name));
                }
            }
            "helm_release" => {
                let helm = match raw_args {
                    Value::Object(args) => args.get("helm").cloned().unwrap_or(Value::Null),
                    whole => whole.clone(),
                };
                if reads_any(jinja, &helm, &tainted) {
                    found.push(format!(
                        "step `{}`: its program (`helm`) is built from a variable this token sets",
                        step.name
                    ));
                }
            }
            _ => {}
        },
    }
}

fn templated_program(args: &Value) -> Option<&'static str> {
    let Value::Object(args) = args else {
        return Some("its arguments are one template");
    };
    match args.get("run") {
        Some(Value::String(line)) if is_templated(line) => {
            return Some("its shell line (`run`) is templated");
        }
        Some(Value::String(_)) | None => {}
        Some(_) => return Some("its `run` is a template"),
    }
    match args.get("argv") {
        None => None,
        Some(Value::Array(argv)) => {
            let texts: Vec<&str> = argv.iter().map(|a| a.as_str().unwrap_or("{{")).collect();
            let program = texts.first()?;
            if is_templated(program) {
                return Some("its program (`argv[0]`) is templated");
            }
            let base = program.rsplit('/').next().unwrap_or(program);
            let interpreter = INTERPRETERS.contains(&base)
                || base.starts_with("python")
                || base.starts_with("perl");
            (interpreter && texts[1..].iter().any(|a| is_templated(a)))
                .then_some("its program runs code from its templated arguments")
        }
        Some(_) => Some("its `argv` is one template"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_model::playbook::{Source, load};
    use serde_json::json;

    fn scope(vars: &[&str]) -> TokenScope {
        TokenScope {
            playbooks: ["t".to_string()].into(),
            vars: vars.iter().map(|v| v.to_string()).collect(),
        }
    }

    fn programs(steps: &str) -> Vec<String> {
        let text = format!("name = \"t\"\n[vars]\nv = \"x\"\n{steps}");
        let pb = load(Source::new("t.toml", text), &["v".into()]).expect("valid playbook");
        templated_programs(&pb, &scope(&["v"]))
    }

    #[test]
    fn helm_built_from_a_scoped_variable_is_found_through_vars() {
        let text = "name = \"t\"\n[vars]\nname = \"web\"\nhelm = \"helm\"\ntool = \"/opt/{{ name }}\"\n[[step]]\nname = \"r\"\nhelm_release = { name = \"{{ name }}\", chart = \"c/c\", version = \"1\", helm = \"{{ helm }}\" }\n[[step]]\nname = \"s\"\nhelm_release = { name = \"x\", chart = \"c/c\", version = \"1\", helm = \"{{ tool }}\" }\n";
        let pb = load(Source::new("t.toml", text.to_string()), &[]).expect("valid playbook");
        // `name` reaches the release name (data) and, through `tool`, the program of step s.
        let found = templated_programs(&pb, &scope(&["name"]));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("step `s`") && found[0].contains("`helm`"),
            "{found:?}"
        );
        let found = templated_programs(&pb, &scope(&["helm"]));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("step `r`"), "{found:?}");
        assert!(templated_programs(&pb, &scope(&["version"])).is_empty());
    }

    #[test]
    fn templated_shell_lines_and_programs_are_found_everywhere() {
        assert!(programs("[[step]]\nname = \"a\"\ncommand = { run = \"echo hi\" }\n").is_empty());
        assert!(
            programs("[[step]]\nname = \"a\"\ncommand = { argv = [\"/bin/echo\", \"{{ v }}\"] }\n")
                .is_empty()
        );
        for (steps, why) in [
            (
                "[[step]]\nname = \"a\"\ncommand = { run = \"echo {{ v }}\" }\n",
                "shell line",
            ),
            (
                "[[step]]\nname = \"a\"\ncommand = { argv = [\"{{ v }}\"] }\n",
                "argv[0]",
            ),
            (
                "[[step]]\nname = \"a\"\ncommand = { argv = [\"/bin/sh\", \"-c\", \"echo {{ v }}\"] }\n",
                "runs code",
            ),
            (
                "[[step]]\nname = \"a\"\ncommand = { argv = [\"python3\", \"-c\", \"{{ v }}\"] }\n",
                "runs code",
            ),
            (
                "[[step]]\nname = \"b\"\n[[step.block]]\nname = \"a\"\ncommand = { run = \"{{ v }}\" }\n",
                "shell line",
            ),
            (
                "[[step]]\nname = \"b\"\n[[step.block]]\nname = \"c\"\ncommand = { run = \"true\" }\n[[step.rescue]]\nname = \"a\"\ncommand = { run = \"{{ v }}\" }\n",
                "shell line",
            ),
            (
                "[[handler]]\nname = \"a\"\ncommand = { run = \"echo {{ v }}\" }\n",
                "shell line",
            ),
        ] {
            let found = programs(steps);
            assert_eq!(found.len(), 1, "{steps}: {found:?}");
            assert!(
                found[0].contains("step `a`") && found[0].contains(why),
                "{found:?}"
            );
        }
    }

    #[test]
    fn requests_outside_the_scope_are_named_without_values() {
        let scope = TokenScope {
            playbooks: ["helm-release".to_string()].into(),
            vars: ["name".to_string()].into(),
        };
        let vars = |v: Value| v.as_object().unwrap().clone();
        assert!(
            check_request(
                &scope,
                Some("helm-release.toml"),
                &vars(json!({"name": "web"}))
            )
            .is_ok()
        );
        let e = check_request(&scope, Some("backup-rds"), &Map::new()).unwrap_err();
        assert!(e.contains("`backup-rds` is outside"), "{e}");
        let e = check_request(&scope, None, &Map::new()).unwrap_err();
        assert!(e.contains("playbook_toml"), "{e}");
        let e = check_request(
            &scope,
            Some("helm-release"),
            &vars(json!({"helm": "/tmp/evil", "name": "s3cr3t-value"})),
        )
        .unwrap_err();
        assert!(
            e.contains("`helm` is outside") && !e.contains("s3cr3t") && !e.contains("/tmp/evil"),
            "{e}"
        );
        let e = check_request(
            &scope,
            Some("helm-release"),
            &vars(json!({"name": {"a": 1}})),
        )
        .unwrap_err();
        assert!(e.contains("strings, numbers and booleans"), "{e}");
    }
}

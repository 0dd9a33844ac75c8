//! What a run submitted with a scoped token (`[[api.tcp.scoped_token]]`) must satisfy: a
//! playbook of its list by name (never `playbook_toml`), only its variables, each a string,
//! number or boolean, and a playbook in which no value from outside can become program text.
//!
//! Values are data. bosund renders a template once (a value `{{ facts }}` arrives as those
//! nine characters; nothing renders a rendered string again), so the one place a value could
//! turn into code is a program's own text: `command`'s `run` (a `/bin/sh -c` line), the
//! program of an `argv`, or an `argv` whose program is a shell or interpreter reading code from
//! its arguments (`sh -c`, `python3 -c`, ...). A scoped run is refused (403, nothing runs) when
//! any `command` of the playbook — included files, blocks, rescue/always and handlers too —
//! has such a templated part; an `argv` with templated arguments of another program is fine:
//! each value is one argument, never split or interpreted by a shell. Quoting shell lines
//! instead would need every path from a variable to a shell line tracked (through `[vars]`,
//! `register`, loops and files written by earlier steps); refusing the templated line is a rule
//! that can be checked before anything runs and explained in one sentence. Why, in
//! ARCHITECTURE.md ("Scoped tokens").

use std::collections::BTreeSet;

use bosun_model::jinja::is_templated;
use bosun_model::playbook::{Body, Playbook, Step};
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
        return Err("a scoped token may only run playbooks by name, not `playbook_toml`".into());
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

/// The `command` steps of `playbook` whose program text is templated (see the module doc), as
/// "step `NAME`: why"; empty when a scoped token may run it.
pub fn templated_programs(playbook: &Playbook) -> Vec<String> {
    let mut found = Vec::new();
    for step in playbook.steps.iter().chain(&playbook.handlers) {
        walk(step, &mut found);
    }
    found
}

fn walk(step: &Step, found: &mut Vec<String>) {
    match &step.body {
        Body::Block(block) => {
            for s in block.steps.iter().chain(&block.rescue).chain(&block.always) {
                walk(s, found);
            }
        }
        Body::Action { action, raw_args } => {
            if action.key() != "command" {
                return;
            }
            if let Some(why) = templated_program(raw_args) {
                found.push(format!("step `{}`: {why}", step.name));
            }
        }
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

    fn programs(steps: &str) -> Vec<String> {
        let text = format!("name = \"t\"\n[vars]\nv = \"x\"\n{steps}");
        let pb = load(Source::new("t.toml", text), &["v".into()]).expect("valid playbook");
        templated_programs(&pb)
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

//! Invalid playbooks: every kind of mistake gets a diagnostic at the right line and column with
//! what was expected, all mistakes are reported at once, and `apply` runs nothing.

use std::path::Path;
use std::process::Command;

use bosun_model::playbook::{BaseDir, BaseOrigin, LocatedDiagnostic, Source, load};

/// Loads `text` as `t.toml` and returns its diagnostics (panics when it is valid).
fn errors(text: &str) -> Vec<LocatedDiagnostic> {
    errors_with(text, &[])
}

fn errors_with(text: &str, outside: &[&str]) -> Vec<LocatedDiagnostic> {
    let outside: Vec<String> = outside.iter().map(|s| s.to_string()).collect();
    match load(Source::new("t.toml", text), &outside) {
        Ok(_) => panic!("expected diagnostics for:\n{text}"),
        Err(d) => d.located(),
    }
}

/// Asserts exactly one diagnostic, at `line`:`column`, whose message contains `message` and
/// whose help contains `help`.
#[track_caller]
fn assert_one(text: &str, line: usize, column: usize, message: &str, help: &str) {
    let found = errors(text);
    assert_eq!(found.len(), 1, "{found:#?}");
    let d = &found[0];
    assert_eq!((d.line, d.column), (line, column), "{d:#?}");
    assert!(
        d.message.contains(message),
        "message {:?} lacks {message:?}",
        d.message
    );
    let h = d.help.as_deref().unwrap_or_default();
    assert!(h.contains(help), "help {h:?} lacks {help:?}");
}

#[test]
fn bad_toml_points_at_the_syntax_error() {
    assert_one("name = \"x\"\n[[step]\n", 2, 8, "invalid TOML", "");
}

#[test]
fn unknown_key_in_a_step_lists_the_keys_expected() {
    let text = "name = \"x\"\n[[step]]\nname = \"a\"\ncommand = { run = \"true\" }\nretry = 3\n";
    assert_one(text, 5, 1, "unknown key `retry` in step", "retries");
}

#[test]
fn unknown_key_in_an_action_lists_its_fields() {
    let text = "name = \"x\"\n[[step]]\nname = \"a\"\nfile = { path = \"/tmp/a\", stat = \"directory\" }\n";
    assert_one(text, 4, 27, "unknown field `stat`", "`state`");
}

#[test]
fn unknown_top_level_key() {
    assert_one(
        "name = \"x\"\nsteps = []\n",
        2,
        1,
        "unknown top-level key `steps`",
        "step, handler",
    );
}

#[test]
fn a_step_without_an_action() {
    let text = "name = \"x\"\n[[step]]\nname = \"nothing\"\n";
    assert_one(
        text,
        3,
        8,
        "step `nothing` has no action",
        "exactly one of: file, copy",
    );
}

#[test]
fn a_step_with_two_actions_points_at_the_second() {
    let text = "name = \"x\"\n[[step]]\nname = \"two\"\nfile = { path = \"/tmp/a\" }\ncommand = { run = \"true\" }\n";
    assert_one(
        text,
        5,
        1,
        "more than one action: `file` and `command`",
        "split it",
    );
}

#[test]
fn a_wrong_type_says_what_was_expected() {
    let text =
        "name = \"x\"\n[[step]]\nname = \"a\"\ncommand = { run = \"true\" }\nretries = \"three\"\n";
    assert_one(text, 5, 11, "invalid type: string \"three\"", "u32");
    let text =
        "name = \"x\"\n[[step]]\nname = \"a\"\nfile = { path = \"/tmp/a\", state = \"dir\" }\n";
    assert_one(text, 4, 35, "unknown variant `dir`", "directory");
    let text =
        "name = \"x\"\n[[step]]\nname = \"a\"\ncommand = { run = \"true\" }\ntimeout = \"soon\"\n";
    assert_one(text, 5, 11, "invalid duration", "\"30s\"");
}

#[test]
fn an_undefined_variable_is_underlined_inside_its_string() {
    let text = "name = \"x\"\n[vars]\nroot = \"/tmp\"\n[[step]]\nname = \"a\"\ncopy = { dest = \"{{ root }}/{{ nmae }}\", content = \"\" }\n";
    assert_one(text, 6, 32, "undefined variable `nmae`", "root");
    // The same name given with --var is fine.
    assert!(load(Source::new("t.toml", text), &["nmae".to_string()]).is_ok());
}

#[test]
fn variables_are_defined_in_order() {
    // `out` is registered by the second step: the first may not read it, a later one may.
    let text = r#"name = "x"
[[step]]
name = "early"
command = { run = "echo {{ out.stdout }}" }
[[step]]
name = "producer"
command = { run = "echo hi" }
register = "out"
[[step]]
name = "late"
command = { run = "echo {{ out.stdout }}" }
when = "out.rc == 0"
changed_when = "result.rc != 0 or out.changed"
"#;
    let found = errors(text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!((found[0].line, found[0].column), (4, 28));
}

#[test]
fn invalid_jinja_is_reported_where_it_is_written() {
    let text =
        "name = \"x\"\n[[step]]\nname = \"a\"\ncommand = { run = \"true\" }\nwhen = \"x ==\"\n";
    let found = errors_with(text, &["x"]);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!((found[0].line, found[0].column), (5, 8));
    assert!(found[0].message.contains("invalid Jinja"), "{found:#?}");
}

#[test]
fn notify_must_name_a_handler() {
    let text = "name = \"x\"\n[[step]]\nname = \"a\"\ncommand = { run = \"true\" }\nnotify = [\"restart k3s\", \"reload\"]\n[[handler]]\nname = \"reload\"\ncommand = { run = \"true\" }\n";
    assert_one(
        text,
        5,
        11,
        "`notify` names no handler: `restart k3s`",
        "reload",
    );
}

#[test]
fn semantic_argument_errors_point_at_the_action() {
    let text = "name = \"x\"\n[[step]]\nname = \"a\"\ncopy = { dest = \"/tmp/a\", content = \"x\", src = \"y\" }\n";
    assert_one(text, 4, 8, "either `content` or `src`", "");
    let text =
        "name = \"x\"\n[[step]]\nname = \"a\"\nfile = { path = \"/tmp/a\", mode = \"0999\" }\n";
    assert_one(text, 4, 8, "not an octal mode", "");
    let text = "name = \"x\"\n[[step]]\nname = \"a\"\nline_in_file = { path = \"/tmp/a\", line = \"x\", regexp = \"(\" }\n";
    assert_one(text, 4, 16, "not a valid regular expression", "");
}

#[test]
fn a_missing_name_is_reported() {
    assert_one(
        "[[step]]\nname = \"a\"\ncommand = { run = \"true\" }\n",
        1,
        1,
        "no `name`",
        "name = ",
    );
}

#[test]
fn every_error_is_reported_not_only_the_first() {
    let text = r#"name = "x"
bogus = 1
[[step]]
name = "no action"
[[step]]
name = "bad type"
command = { run = "true" }
retries = -1
[[step]]
name = "undefined"
copy = { dest = "/tmp/{{ nope }}", content = "" }
notify = ["nobody"]
"#;
    let found = errors(text);
    let at: Vec<(usize, usize)> = found.iter().map(|d| (d.line, d.column)).collect();
    assert_eq!(
        at,
        vec![(2, 1), (4, 8), (8, 11), (11, 26), (12, 11)],
        "{found:#?}"
    );
}

#[test]
fn every_independent_error_of_one_step_is_reported() {
    // A wrong argument type does not hide a broken `when`, an undefined variable in
    // `failed_when` or in the arguments' templates.
    let text = "name = \"x\"\n[[step]]\nname = \"a\"\ncommand = { run = 1, chdir = \"{{ nowhere }}\" }\nwhen = \"x ==\"\nfailed_when = \"result.rc > limit\"\n";
    let found = errors(text);
    let got: Vec<(usize, usize, &str)> = found
        .iter()
        .map(|d| (d.line, d.column, d.message.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (4, 19, "step `a`: `command`: invalid type: integer `1`"),
            (4, 34, "undefined variable `nowhere`"),
            (
                5,
                8,
                "invalid Jinja: unexpected end of input, expected expression"
            ),
            (6, 28, "undefined variable `limit`"),
        ],
        "{found:#?}"
    );
}

#[test]
fn duplicate_step_names_are_an_error_at_the_second() {
    let text = "name = \"x\"\n[[step]]\nname = \"same\"\ncommand = { run = \"true\" }\n[[step]]\nname = \"same\"\ncommand = { run = \"false\" }\n";
    assert_one(
        text,
        6,
        8,
        "a step named `same` already exists",
        "give each step its own name",
    );
}

#[test]
fn a_step_or_handler_without_a_name_says_what_to_add() {
    let text = "name = \"x\"\n[[step]]\ncommand = { run = \"true\" }\n[[handler]]\ncommand = { run = \"true\" }\n";
    let found = errors(text);
    let got: Vec<(usize, usize, &str, &str)> = found
        .iter()
        .map(|d| {
            (
                d.line,
                d.column,
                d.message.as_str(),
                d.help.as_deref().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                2,
                1,
                "step has no `name`",
                "add a line such as: name = \"what it does\" (reports and the journal show it by its name)"
            ),
            (
                4,
                1,
                "handler has no `name`",
                "add a line such as: name = \"what it does\" (reports, the journal and `notify` find it by its name)"
            ),
        ],
        "{found:#?}"
    );
}

#[test]
fn an_expression_written_with_braces_says_to_drop_them() {
    let text = "name = \"x\"\n[vars]\nx = 1\n[[step]]\nname = \"a\"\ncommand = { run = \"true\" }\nwhen = \"{{ x\"\n[[step]]\nname = \"b\"\ncommand = { run = \"true\" }\nchanged_when = \"{{ result.rc == 0 }}\"\nfailed_when = \"{{- x }} > 1\"\n";
    let found = errors(text);
    let got: Vec<(usize, usize, &str, &str)> = found
        .iter()
        .map(|d| {
            (
                d.line,
                d.column,
                d.message.as_str(),
                d.help.as_deref().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                7,
                8,
                "`when` is a Jinja expression: write it without `{{ }}`",
                "write: when = \"x\""
            ),
            (
                11,
                16,
                "`changed_when` is a Jinja expression: write it without `{{ }}`",
                "write: changed_when = \"result.rc == 0\""
            ),
            (
                12,
                15,
                "`failed_when` is a Jinja expression: write it without `{{ }}`",
                "write: failed_when = \"x > 1\""
            ),
        ],
        "{found:#?}"
    );
}

#[test]
fn until_written_with_braces_says_to_drop_them() {
    let text = "name = \"x\"\n[[step]]\nname = \"a\"\ncommand = { run = \"true\" }\nretries = 3\nuntil = \"{{ result.rc == 0 }}\"\n";
    assert_one(
        text,
        6,
        9,
        "`until` is a Jinja expression: write it without `{{ }}`",
        "write: until = \"result.rc == 0\"",
    );
}

#[test]
fn a_toml_syntax_error_is_reported_once_without_the_errors_that_follow_from_it() {
    // The parser recovers by dropping `name`, then calls the next `name` a duplicate.
    assert_one(
        "name = x\nname = \"y\"\n",
        1,
        8,
        "invalid TOML: string values must be quoted",
        "",
    );
    // An unclosed array: five errors on line 4 from toml, one here.
    let found = errors("name = \"x\"\n[vars]\na = [1, 2\nb = 2\n");
    assert_eq!(found.len(), 1, "{found:#?}");
    // Two independent mistakes on two lines are both reported.
    let found =
        errors("name = \"x\"\n[[step]\nname = \"a\"\ncommand = { run = \"true\" }\n[vars\n");
    let at: Vec<(usize, usize)> = found.iter().map(|d| (d.line, d.column)).collect();
    assert_eq!(at, vec![(2, 8), (5, 6)], "{found:#?}");
}

#[test]
fn a_handler_that_failed_to_parse_is_not_reported_twice() {
    // The handler is broken; the step's notify must not also claim it does not exist.
    let text = "name = \"x\"\n[[step]]\nname = \"a\"\ncommand = { run = \"true\" }\nnotify = [\"h\"]\n[[handler]]\nname = \"h\"\ncommand = { run = 1 }\n";
    let found = errors(text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].line, 8);
}

fn bosund(args: &[&str], state: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bosund"))
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .output()
        .expect("running bosund")
}

#[test]
fn apply_runs_nothing_when_the_playbook_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let book = dir.path().join("bad.toml");
    std::fs::write(
        &book,
        format!(
            "name = \"x\"\n[[step]]\nname = \"would run first\"\nfile = {{ path = \"{}\", state = \"directory\" }}\n[[step]]\nname = \"broken\"\ncommand = {{ run = \"true\" }}\nnotify = [\"nobody\"]\n",
            marker.display()
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    let out = bosund(&["apply", book.to_str().unwrap()], &state);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        !marker.exists(),
        "a step ran although the playbook is invalid"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml:8:11: error: `notify` names no handler: `nobody`"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was run"), "{stderr}");
    // The renderer underlines the offending text.
    assert!(stderr.contains("────"), "{stderr}");

    let out = bosund(
        &["apply", "--output", "json", book.to_str().unwrap()],
        &state,
    );
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let event: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(event["event"], "invalid");
    assert_eq!(event["diagnostics"][0]["line"], 8);
    assert_eq!(event["diagnostics"][0]["column"], 11);
    assert!(!marker.exists());
    // Nothing was journaled either: not even a journal was created.
    let out = bosund(&["history", "--output", "json"], &state);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert!(
        !state.exists(),
        "an invalid playbook created the state directory"
    );
}

/// `history`, `schedule list` and `check-config` look and create nothing; an unknown run id
/// is an error; `--output json` is JSON Lines.
#[test]
fn read_only_commands_create_nothing_and_say_what_they_found() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let out = bosund(&["history"], &state);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("no runs recorded in {}\n", state.display())
    );
    let out = bosund(&["history", "--run", "nope"], &state);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no run `nope`: no runs recorded in"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = dir.path().join("agent.toml");
    std::fs::create_dir(dir.path().join("playbooks")).unwrap();
    std::fs::write(
        dir.path().join("playbooks/nightly.toml"),
        "name = \"n\"\n[[step]]\nname = \"a\"\ncommand = { run = \"true\" }\n",
    )
    .unwrap();
    std::fs::write(
        &config,
        format!(
            "playbooks_dir = \"{}\"\n[[schedule]]\nplaybook = \"nightly\"\ncron = \"0 3 * * *\"\n",
            dir.path().join("playbooks").display()
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let out = bosund(
        &["schedule", "list", "--config", c, "--output", "json"],
        &state,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(listing["last_run"], serde_json::Value::Null);
    assert!(
        !state.exists(),
        "a read-only command created {}",
        state.display()
    );

    // Two runs: history is JSON Lines, newest first; a run id it does not know is an error.
    let book = dir.path().join("playbooks/nightly.toml");
    for _ in 0..2 {
        assert_eq!(
            bosund(&["apply", book.to_str().unwrap()], &state)
                .status
                .code(),
            Some(0)
        );
    }
    let out = bosund(&["history", "--output", "json"], &state);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines
            .iter()
            .all(|r| r["playbook"] == "n" && r["status"] == "ok")
    );
    let id = lines[0]["id"].as_str().unwrap();
    let out = bosund(&["history", "--run", id, "--output", "json"], &state);
    let step: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(step["name"], "a");
    let out = bosund(&["history", "--run", "nope"], &state);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "no run `nope` in {}; `bosund history` lists the recent runs",
            state.display()
        )),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Without `--config` and without the default file, `check-config` says that it shows the
/// defaults rather than calling a missing file ok.
#[test]
fn check_config_says_when_the_default_file_is_absent() {
    let default = Path::new(bosun_agent::config::DEFAULT_CONFIG_PATH);
    if default.exists() {
        eprintln!("skipped: {} exists on this machine", default.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = bosund(&["check-config"], &dir.path().join("s"));
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!(
            "{}: no such file; bosund runs with the defaults, which are (socket ",
            default.display()
        )),
        "{stdout}"
    );
    let missing = dir.path().join("agent.toml");
    let out = bosund(
        &["check-config", "--config", missing.to_str().unwrap()],
        &dir.path().join("s"),
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "an explicit missing file is an error"
    );
}

#[test]
fn check_reports_every_file_and_fails_when_any_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &good,
        "name = \"g\"\n[[step]]\nname = \"a\"\ncommand = { run = \"true\" }\n",
    )
    .unwrap();
    std::fs::write(&bad, "name = \"b\"\n[[step]]\nname = \"a\"\n").unwrap();
    let out = bosund(
        &["check", good.to_str().unwrap(), bad.to_str().unwrap()],
        &dir.path().join("s"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("good.toml: ok (1 steps, 0 handlers)"));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("bad.toml:3:8: error: step `a` has no action")
    );
}

/// A template that is not there is refused at its `src`, with the step before it not run; a
/// playbook on stdin resolves against the current directory unless `--base-dir` says where,
/// and the error says so.
#[test]
fn a_missing_local_file_is_refused_at_its_place_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let book = dir.path().join("files.toml");
    let text = format!(
        "name = \"files\"\n[[step]]\nname = \"first\"\nfile = {{ path = \"{}\", state = \"directory\" }}\n[[step]]\nname = \"env\"\ntemplate = {{ src = \"templates/env.j2\", dest = \"{}/env\" }}\n[[step]]\nname = \"values\"\ncopy = {{ src = \"files/motd\", dest = \"{}/motd\" }}\n",
        marker.display(),
        dir.path().display(),
        dir.path().display()
    );
    std::fs::write(&book, &text).unwrap();
    std::fs::create_dir_all(dir.path().join("files/motd")).unwrap();
    let state = dir.path().join("state");
    let out = bosund(&["check", book.to_str().unwrap()], &state);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let at = |line: &str| format!("{}:{line}: error: ", book.display());
    assert!(
        stderr.contains(&format!(
            "{}`template` src `templates/env.j2` does not exist: no {}/templates/env.j2",
            at("7:20"),
            dir.path().display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{}`copy` src `files/motd` is a directory",
            at("10:16")
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("relative paths resolve against the playbook's directory"),
        "{stderr}"
    );
    let out = bosund(&["apply", book.to_str().unwrap()], &state);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        !marker.exists(),
        "a step ran before the missing file was found"
    );

    // On stdin, from another directory: the current directory is the base, and the error says
    // how to name another.
    std::fs::create_dir_all(dir.path().join("templates")).unwrap();
    std::fs::write(dir.path().join("templates/env.j2"), "x={{ 1 }}\n").unwrap();
    std::fs::remove_dir(dir.path().join("files/motd")).unwrap();
    std::fs::write(dir.path().join("files/motd"), "hi\n").unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let stdin = |extra: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bosund"))
            .current_dir(elsewhere.path())
            .arg("--state-dir")
            .arg(&state)
            .args(["apply", "-"])
            .args(extra)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = stdin(&[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("<stdin>:7:20: error: `template` src `templates/env.j2` does not exist"),
        "{stderr}"
    );
    assert!(
        stderr.contains("by default the current directory") && stderr.contains("--base-dir DIR"),
        "{stderr}"
    );
    assert!(!marker.exists());
    let base = dir.path().to_str().unwrap();
    let out = stdin(&["--base-dir", base]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("env")).unwrap(),
        "x=1\n"
    );
}

#[test]
fn every_shipped_playbook_is_valid() {
    let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks");
    let mut checked = 0;
    // The top-level playbooks and the platform's components (run through platform.toml's
    // includes, and each on its own).
    let files = [top.clone(), top.join("platform")]
        .into_iter()
        .flat_map(|d| {
            std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect::<Vec<_>>()
        });
    for path in files {
        let dir = path.parent().unwrap().to_path_buf();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let base = BaseDir {
                path: dir.clone(),
                origin: BaseOrigin::PlaybookDir,
            };
            let source = Source::new(path.display().to_string(), text);
            if let Err(d) = bosun_agent::config::load_playbook(source, &[], &base) {
                panic!("{d}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 15, "{checked}");
}

#[test]
fn system_kinds_refuse_bad_arguments_at_their_line() {
    let text = r#"name = "t"
[[step]]
name = "u"
user = { name = "-bad", shell = "bash", remove = true }
[[step]]
name = "u2"
user = { name = "gone", state = "absent", uid = 5 }
[[step]]
name = "g"
group = { name = "123", state = "absent", gid = 7 }
[[step]]
name = "k"
authorized_key = { user = "deploy", key = "not a key", exclusive = true, state = "absent" }
[[step]]
name = "s"
sysctl = { name = "net..x", file = "/etc/sysctl.d/x" }
[[step]]
name = "h"
hostname = { name = "-web_1" }
[[step]]
name = "t"
timezone = { name = "../etc/passwd" }
[[step]]
name = "m"
mount = { path = "data", state = "mounted", opts = "a b" }
"#;
    let found = errors(text);
    let at = |line: usize| -> String {
        found
            .iter()
            .filter(|d| d.line == line)
            .map(|d| format!("{} {}", d.message, d.help.as_deref().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    for (line, wanted) in [
        (4, "\"-bad\" is not a valid account name"),
        (4, "`shell` \"bash\" must be an absolute path"),
        (4, "`remove` is only for `state = \"absent\"`"),
        (7, "`uid` means nothing with `state = \"absent\"`"),
        (10, "\"123\" is not a valid account name"),
        (10, "`gid` means nothing"),
        (13, "`key` line 1 is not a public key line"),
        (13, "`exclusive` means nothing"),
        (16, "is not a sysctl key"),
        (16, "`state = \"present\"` needs `value`"),
        (16, "must be an absolute path ending in .conf"),
        (19, "is not a host name"),
        (22, "is not a time zone name"),
        (25, "`path` \"data\" must be an absolute path"),
        (25, "`state = \"mounted\"` needs `src`"),
        (25, "`opts` \"a b\" must be one non-empty word"),
    ] {
        assert!(
            at(line).contains(wanted),
            "line {line}: {:?} lacks {wanted:?}\n{found:#?}",
            at(line)
        );
    }
    assert!(found.iter().all(|d| d.file == "t.toml"), "{found:#?}");
}

//! The engine's semantics through the built `bosund` binary: handlers, `when`, `register`,
//! `changed_when`, `failed_when`, retries, timeouts, check mode, exit codes, stdin playbooks,
//! variable precedence, the journal, and the demo playbook.

mod common;

use std::fs;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use bosun_model::event::{RunEvent, StepStatus};
use common::{BOSUND, Run, Sandbox, converge, exists, mode, read, summary};
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// handlers
// ---------------------------------------------------------------------------------------------

const HANDLERS: &str = r#"
name = "handlers"
[[step]]
name = "a"
copy = { dest = "@ROOT@/a.conf", content = "a\n" }
notify = ["restart b", "restart a"]
[[step]]
name = "b"
copy = { dest = "@ROOT@/b.conf", content = "b\n" }
notify = ["restart b"]
[[step]]
name = "probe"
command = { run = "true" }
changed_when = false
notify = ["never"]
[[handler]]
name = "restart a"
command = { run = "echo a >> @ROOT@/handlers.log" }
[[handler]]
name = "never"
command = { run = "echo never >> @ROOT@/handlers.log" }
[[handler]]
name = "restart b"
command = { run = "echo b >> @ROOT@/handlers.log" }
"#;

#[test]
fn handlers_run_once_in_written_order_and_only_when_a_notifying_step_changed() {
    let sb = Sandbox::new();
    let pb = sb.playbook(HANDLERS);
    let log = sb.path("handlers.log");

    let first = sb.apply(&pb, &[]);
    first.assert_success();
    // `restart b` was notified twice and first; it runs once, after `restart a` as written.
    assert_eq!(read(&log), "a\nb\n");
    let handlers: Vec<_> = first
        .reports()
        .into_iter()
        .filter(|r| r.handler)
        .map(|r| (r.index, r.name.as_str()))
        .collect();
    assert_eq!(handlers, [(3, "restart a"), (4, "restart b")]);
    assert!(
        !first.ran("never"),
        "a handler ran although its step was ok"
    );
    assert_eq!(first.summary(), summary(1, 4, 0, 0));

    let second = sb.apply(&pb, &[]);
    second.assert_success();
    assert!(
        second.reports().iter().all(|r| !r.handler),
        "handlers ran on an unchanged run: {:?}",
        second.statuses()
    );
    assert_eq!(second.summary(), summary(3, 0, 0, 0));
    assert_eq!(read(&log), "a\nb\n");

    // Only `b` drifts: only its handler runs.
    fs::write(sb.path("b.conf"), "drifted\n").unwrap();
    let third = sb.apply(&pb, &[]);
    assert_eq!(third.summary(), summary(2, 2, 0, 0));
    assert_eq!(read(&log), "a\nb\nb\n");
    assert!(third.step("restart b").handler);
}

#[test]
fn handlers_do_not_run_after_a_failed_step() {
    let sb = Sandbox::new();
    let pb = sb.playbook(
        r#"
name = "t"
[[step]]
name = "config"
copy = { dest = "@ROOT@/app.conf", content = "x\n" }
notify = ["reload"]
[[step]]
name = "broken"
command = { run = "exit 1" }
[[handler]]
name = "reload"
command = { run = "touch @ROOT@/reloaded" }
"#,
    );
    let run = sb.apply(&pb, &[]);
    assert_eq!(run.code, 1);
    assert_eq!(run.summary(), summary(0, 1, 1, 0));
    assert_eq!(read(&sb.path("app.conf")), "x\n");
    assert!(!run.ran("reload"));
    assert!(!exists(&sb.path("reloaded")));
}

#[test]
fn a_failed_handler_fails_the_run_and_stops_the_other_handlers() {
    let sb = Sandbox::new();
    let pb = sb.playbook(
        r#"
name = "t"
[[step]]
name = "config"
copy = { dest = "@ROOT@/app.conf", content = "x\n" }
notify = ["first", "second"]
[[handler]]
name = "first"
command = { run = "exit 4" }
[[handler]]
name = "second"
command = { run = "touch @ROOT@/second" }
"#,
    );
    let run = sb.apply(&pb, &[]);
    assert_eq!(run.code, 1);
    assert_eq!(run.step("first").status, StepStatus::Failed);
    assert!(!run.ran("second") && !exists(&sb.path("second")));
}

/// Arguments are checked again once their templates are rendered: a variable that renders to a
/// bad value fails that step with what is wrong, before it touches anything.
#[test]
fn arguments_bad_only_after_rendering_fail_the_step_before_it_acts() {
    let sb = Sandbox::new();
    let pb = sb.playbook(
        r#"
name = "t"
[vars]
mode = "0644"
[[step]]
name = "first"
copy = { dest = "@ROOT@/first", content = "x\n" }
[[step]]
name = "config"
copy = { dest = "@ROOT@/app.conf", content = "x\n", mode = "{{ mode }}" }
"#,
    );
    let run = sb.apply(&pb, &["--var", "mode=0999"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.step("first").status, StepStatus::Changed);
    assert_eq!(run.step("config").status, StepStatus::Failed);
    let msg = run.step("config").message.clone().unwrap_or_default();
    assert!(
        msg.contains("the rendered arguments are invalid") && msg.contains("0999"),
        "{msg}"
    );
    assert!(
        !exists(&sb.path("app.conf")),
        "the step acted on a bad mode"
    );
    // The same playbook with a good value converges.
    sb.apply(&pb, &[]).assert_success();
    assert!(exists(&sb.path("app.conf")));
}

// ---------------------------------------------------------------------------------------------
// when, register, changed_when, failed_when
// ---------------------------------------------------------------------------------------------

#[test]
fn when_false_skips_the_step_and_when_true_runs_it() {
    let sb = Sandbox::new();
    let pb = sb.playbook(&format!(
        r#"
name = "t"
[vars]
env = "staging"
[[step]]
name = "prod only"
command = {{ run = "touch @ROOT@/prod" }}
when = "env == 'prod'"
register = "prod_out"
notify = ["h"]
[[step]]
name = "never"
file = {{ path = "@ROOT@/never", state = "directory" }}
when = "false"
[[step]]
name = "this arch"
command = {{ run = "touch @ROOT@/arch" }}
when = "facts.arch == '{arch}'"
[[step]]
name = "after a skip"
command = {{ run = "touch @ROOT@/saw-skip" }}
when = "prod_out.skipped"
[[handler]]
name = "h"
command = {{ run = "touch @ROOT@/handled" }}
"#,
        arch = std::env::consts::ARCH
    ));
    let run = sb.apply(&pb, &[]);
    run.assert_success();
    assert_eq!(run.summary(), summary(0, 2, 0, 2));
    for name in ["prod only", "never"] {
        let r = run.step(name);
        assert_eq!(r.status, StepStatus::Skipped, "{name}");
        assert_eq!(r.output, None, "{name}");
    }
    assert!(
        !exists(&sb.path("prod")) && !exists(&sb.path("never")) && !exists(&sb.path("handled"))
    );
    assert!(exists(&sb.path("arch")) && exists(&sb.path("saw-skip")));

    let prod = sb.apply(&pb, &["--var", "env=prod"]);
    prod.assert_success();
    assert_eq!(prod.step("prod only").status, StepStatus::Changed);
    assert_eq!(prod.step("after a skip").status, StepStatus::Skipped);
    assert!(exists(&sb.path("prod")) && exists(&sb.path("handled")));
}

#[test]
fn register_makes_a_result_available_to_later_steps() {
    let sb = Sandbox::new();
    let pb = sb.playbook(
        r#"
name = "t"
[[step]]
name = "read"
command = { run = "echo hello; echo warning >&2" }
register = "out"
changed_when = false
[[step]]
name = "use"
copy = { dest = "@ROOT@/out.txt", content = "{{ out.stdout | trim }} rc={{ out.rc }} err={{ out.stderr | trim }} changed={{ 'yes' if out.changed else 'no' }}\n" }
[[step]]
name = "branch"
command = { run = "touch @ROOT@/saw-hello" }
when = "'hello' in out.stdout and not out.failed"
"#,
    );
    let run = sb.apply(&pb, &[]);
    run.assert_success();
    assert_eq!(
        read(&sb.path("out.txt")),
        "hello rc=0 err=warning changed=no\n"
    );
    assert!(exists(&sb.path("saw-hello")));
    assert_eq!(run.step("read").status, StepStatus::Ok);
}

#[test]
fn changed_when_decides_whether_a_step_changed() {
    let sb = Sandbox::new();
    let pb = sb.playbook(
        r#"
name = "t"
[[step]]
name = "fixed false"
command = { run = "echo anything" }
changed_when = false
notify = ["h"]
[[step]]
name = "rc is zero"
command = { run = "true" }
changed_when = "result.rc == 0"
[[step]]
name = "nothing to do"
command = { run = "echo nothing to do" }
changed_when = "'updated' in result.stdout"
[[step]]
name = "updated"
command = { run = "echo updated 3 rows" }
changed_when = "'updated' in result.stdout"
[[step]]
name = "fixed true on a converged file"
file = { path = "@ROOT@", state = "directory" }
changed_when = true
[[handler]]
name = "h"
command = { run = "touch @ROOT@/handled" }
"#,
    );
    let run = sb.apply(&pb, &[]);
    run.assert_success();
    let statuses: Vec<_> = run.statuses().into_iter().map(|(_, s)| s).collect();
    use StepStatus::{Changed, Ok};
    assert_eq!(statuses, [Ok, Changed, Ok, Changed, Changed]);
    assert!(
        !exists(&sb.path("handled")),
        "an ok step (changed_when = false) notified its handler"
    );
}

#[test]
fn failed_when_lets_an_expected_exit_code_pass_and_fails_on_output() {
    let sb = Sandbox::new();
    let pb = sb.playbook(
        r#"
name = "t"
[[step]]
name = "grep finds nothing"
command = { run = "exit 1" }
failed_when = "result.rc > 1"
[[step]]
name = "never fails"
command = { run = "exit 5" }
failed_when = false
[[step]]
name = "reached"
command = { run = "touch @ROOT@/reached" }
"#,
    );
    let run = sb.apply(&pb, &[]);
    run.assert_success();
    let r = run.step("grep finds nothing");
    assert_eq!(
        (r.status, r.output.as_ref().map(|o| o.rc)),
        (StepStatus::Changed, Some(1))
    );
    assert_eq!(run.step("never fails").status, StepStatus::Changed);
    assert!(exists(&sb.path("reached")));

    let pb = sb.playbook(
        r#"
name = "t"
[[step]]
name = "real error"
command = { run = "exit 2" }
failed_when = "result.rc > 1"
"#,
    );
    let run = sb.apply(&pb, &[]);
    assert_eq!(run.code, 1);
    assert_eq!(run.step("real error").status, StepStatus::Failed);
    assert_eq!(
        run.step("real error").message.as_deref(),
        Some("exit code 2")
    );

    let pb = sb.playbook(
        r#"
name = "t"
[[step]]
name = "error in output"
command = { run = "echo 'ERROR: quota exceeded'" }
failed_when = "'ERROR' in result.stdout"
"#,
    );
    let run = sb.apply(&pb, &[]);
    assert_eq!(run.code, 1);
    let r = run.step("error in output");
    assert_eq!(
        (r.status, r.output.as_ref().map(|o| o.rc)),
        (StepStatus::Failed, Some(0))
    );
    assert_eq!(r.message.as_deref(), Some("failed_when is true"));
}

// ---------------------------------------------------------------------------------------------
// retries, delay, timeout
// ---------------------------------------------------------------------------------------------

/// Fails until it has been run three times (the count is kept in `@ROOT@/counter`).
const FLAKY: &str = r#"n=$(cat @ROOT@/counter 2>/dev/null || echo 0); n=$((n+1)); echo $n > @ROOT@/counter; echo attempt $n; [ $n -ge 3 ]"#;

#[test]
fn retries_repeat_a_failing_step_until_it_succeeds() {
    let sb = Sandbox::new();
    let pb = sb.playbook(&format!(
        r#"
name = "t"
[[step]]
name = "flaky"
command = {{ run = "{FLAKY}" }}
retries = 2
delay = 0
"#
    ));
    let run = sb.apply(&pb, &[]);
    run.assert_success();
    let r = run.step("flaky");
    assert_eq!((r.status, r.attempts), (StepStatus::Changed, 3));
    assert_eq!(
        r.output.as_ref().map(|o| o.stdout.as_str()),
        Some("attempt 3\n"),
        "the report is of the last attempt"
    );
    assert_eq!(read(&sb.path("counter")), "3\n");
}

#[test]
fn retries_give_up_after_the_last_attempt() {
    let sb = Sandbox::new();
    let pb = sb.playbook(&format!(
        r#"
name = "t"
[[step]]
name = "flaky"
command = {{ run = "{FLAKY}" }}
retries = 1
delay = "0s"
"#
    ));
    let run = sb.apply(&pb, &[]);
    assert_eq!(run.code, 1);
    let r = run.step("flaky");
    assert_eq!((r.status, r.attempts), (StepStatus::Failed, 2));
    assert_eq!(read(&sb.path("counter")), "2\n");
}

#[test]
fn timeout_kills_a_long_command_and_fails_fast() {
    let sb = Sandbox::new();
    let pb = sb.playbook(
        r#"
name = "t"
[[step]]
name = "slow"
command = { run = "sleep 30; touch @ROOT@/slept" }
timeout = "1s"
[[step]]
name = "after"
command = { run = "touch @ROOT@/after" }
"#,
    );
    // bosund runs with the write end of a pipe as its fd 3, which it and the command it starts
    // inherit; the read end sees EOF only once every holder has exited, so reading it to the end
    // proves the timed-out `sleep` (a grandchild: the shell forks it) was killed with its
    // process group, not left behind.
    let (mut reader, writer) = std::io::pipe().unwrap();
    let mut cmd = sb.command("/bin/sh");
    cmd.args([
        "-c",
        r#"exec "$0" "$@" 3>&0 0</dev/null"#,
        BOSUND,
        "--state-dir",
    ])
    .arg(sb.state_dir())
    .arg("apply")
    .arg(&pb)
    .args(["--output", "json"])
    .stdin(writer);
    let started = Instant::now();
    let run = Run::from_command(cmd, None);
    reader.read_to_end(&mut Vec::new()).unwrap();
    let elapsed = started.elapsed();

    assert_eq!(run.code, 1);
    let r = run.step("slow");
    assert_eq!(r.status, StepStatus::Failed);
    assert_eq!(r.message.as_deref(), Some("timed out after 1s"));
    assert!(r.duration_ms >= 1000.0, "{r:?}");
    assert!(!run.ran("after") && !exists(&sb.path("after")));
    assert!(
        elapsed < Duration::from_secs(10),
        "the run and its command took {elapsed:?}"
    );
    assert!(!exists(&sb.path("slept")));
}

// ---------------------------------------------------------------------------------------------
// check mode, exit codes, stdin
// ---------------------------------------------------------------------------------------------

#[test]
fn check_mode_reports_every_change_and_makes_none() {
    let sb = Sandbox::new();
    sb.write("templates/t.j2", "v={{ v }}\n");
    let existing = sb.write("existing.conf", "port = 80\n");
    let pb = sb.playbook(
        r#"
name = "t"
[vars]
v = "1"
[[step]]
name = "dir"
file = { path = "@ROOT@/etc", state = "directory" }
[[step]]
name = "copy into the new dir"
copy = { dest = "@ROOT@/etc/app.conf", content = "x\n" }
notify = ["reload"]
[[step]]
name = "template"
template = { src = "templates/t.j2", dest = "@ROOT@/etc/t.conf" }
[[step]]
name = "line"
line_in_file = { path = "@ROOT@/existing.conf", regexp = "^port", line = "port = 8080" }
[[step]]
name = "link"
file = { path = "@ROOT@/current", state = "link", src = "@ROOT@/etc" }
[[step]]
name = "command"
command = { run = "touch @ROOT@/ran" }
[[step]]
name = "remove"
file = { path = "@ROOT@/existing.conf", state = "absent" }
[[handler]]
name = "reload"
command = { run = "touch @ROOT@/reloaded" }
"#,
    );
    let before = sb.snapshot();
    let run = sb.apply(&pb, &["--check"]);
    run.assert_success();
    assert_eq!(sb.snapshot(), before, "--check changed the disk");
    assert!(matches!(
        run.events[0],
        RunEvent::RunStarted { check: true, .. }
    ));
    assert!(
        run.statuses()
            .iter()
            .all(|(_, s)| *s == StepStatus::Changed),
        "{:?}",
        run.statuses()
    );
    assert_eq!(run.summary(), summary(0, 8, 0, 0));
    assert!(run.step("reload").handler);
    assert_eq!(run.step("command").output, None);
    assert_eq!(read(&existing), "port = 80\n");
    assert_eq!(sb.history(&[])[0]["check"], true);
}

#[test]
fn exit_codes_say_ok_failed_or_invalid() {
    let sb = Sandbox::new();
    let ok = sb.write(
        "ok.toml",
        "name = \"ok\"\n[[step]]\nname = \"s\"\ncommand = { run = \"true\" }\n",
    );
    assert_eq!(sb.apply(&ok, &[]).code, 0);

    let failed = sb.write(
        "failed.toml",
        "name = \"f\"\n[[step]]\nname = \"s\"\ncommand = { run = \"false\" }\n",
    );
    assert_eq!(sb.apply(&failed, &[]).code, 1);

    let invalid = sb.write(
        "invalid.toml",
        "name = \"i\"\n[[step]]\nname = \"s\"\ncommand = { run = \"touch @ROOT@/ran\" }\nnotify = [\"nobody\"]\n",
    );
    let run = sb.apply(&invalid, &[]);
    assert_eq!(run.code, 2);
    let [RunEvent::Invalid { diagnostics }] = run.events.as_slice() else {
        panic!("expected one `invalid` event: {run:#?}");
    };
    assert_eq!(diagnostics.len(), 1);
    assert_eq!(diagnostics[0].line, 5);
    assert!(diagnostics[0].message.contains("nobody"), "{diagnostics:?}");
    assert!(run.stderr.contains("nobody"), "{}", run.stderr);
    assert!(!exists(&sb.path("ran")), "an invalid playbook ran");

    let (code, _, stderr) = sb.apply_human(&sb.path("no-such.toml"), &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no-such.toml"), "{stderr}");
}

#[test]
fn playbook_from_stdin_resolves_paths_from_the_working_directory() {
    let sb = Sandbox::new();
    sb.write("templates/motd.j2", "hello {{ who }}\n");
    let text = r#"
name = "from stdin"
[vars]
who = "operator"
[[step]]
name = "motd"
template = { src = "templates/motd.j2", dest = "@ROOT@/motd" }
"#;
    let run = sb.apply_stdin(text, &[]);
    run.assert_success();
    assert!(
        matches!(&run.events[0], RunEvent::RunStarted { playbook, .. } if playbook == "from stdin")
    );
    assert_eq!(run.step("motd").status, StepStatus::Changed);
    assert_eq!(read(&sb.path("motd")), "hello operator\n");
    assert_eq!(sb.apply_stdin(text, &[]).summary(), summary(1, 0, 0, 0));
}

// ---------------------------------------------------------------------------------------------
// variables
// ---------------------------------------------------------------------------------------------

#[test]
fn var_beats_vars_file_beats_playbook_vars() {
    let sb = Sandbox::new();
    let one = sb.write("one.toml", "a = \"file\"\nb = \"file\"\nport = 8080\n");
    let two = sb.write("two.json", r#"{"b": "json"}"#);
    let pb = sb.playbook(
        r#"
name = "t"
[vars]
a = "playbook"
b = "playbook"
c = "playbook"
d = "{{ a }}+{{ c }}"
[[step]]
name = "show"
copy = { dest = "@ROOT@/vars.txt", content = "a={{ a }} b={{ b }} c={{ c }} d={{ d }}\n" }
"#,
    );
    let path = sb.path("vars.txt");
    let vars_file = |p: &Path| p.display().to_string();

    sb.apply(&pb, &[]).assert_success();
    assert_eq!(
        read(&path),
        "a=playbook b=playbook c=playbook d=playbook+playbook\n"
    );

    sb.apply(&pb, &["--vars-file", &vars_file(&one)])
        .assert_success();
    assert_eq!(read(&path), "a=file b=file c=playbook d=file+playbook\n");

    // Later files win over earlier ones; --var wins over every file, and [vars] built from an
    // overridden variable see the override.
    let args = [
        "--vars-file",
        &vars_file(&one),
        "--vars-file",
        &vars_file(&two),
        "--var",
        "a=cli",
    ];
    sb.apply(&pb, &args).assert_success();
    assert_eq!(read(&path), "a=cli b=json c=playbook d=cli+playbook\n");

    // A variable that exists only outside the playbook is usable (and validated as defined).
    let pb = sb.playbook(
        r#"
name = "t"
[[step]]
name = "port"
copy = { dest = "@ROOT@/port.txt", content = "{{ port }}\n" }
"#,
    );
    sb.apply(&pb, &["--vars-file", &vars_file(&one)])
        .assert_success();
    assert_eq!(read(&sb.path("port.txt")), "8080\n");
    assert_eq!(
        sb.apply(&pb, &[]).code,
        2,
        "an undefined variable must be refused before running"
    );
}

// ---------------------------------------------------------------------------------------------
// journal
// ---------------------------------------------------------------------------------------------

#[test]
fn history_lists_the_runs_just_made_with_their_counts() {
    let sb = Sandbox::new();
    let pb = sb.playbook(
        r#"
name = "journaled"
[[step]]
name = "config"
copy = { dest = "@ROOT@/app.conf", content = "x\n" }
[[step]]
name = "skip me"
command = { run = "true" }
when = "false"
"#,
    );
    let failing = sb.write(
        "failing.toml",
        "name = \"failing\"\n[[step]]\nname = \"boom\"\ncommand = { run = \"echo bad >&2; exit 7\" }\n",
    );
    let first = sb.apply(&pb, &[]);
    let second = sb.apply(&pb, &[]);
    let check = sb.apply(&pb, &["--check"]);
    let failed = sb.apply(&failing, &[]);

    let runs = sb.history(&[]);
    let runs = runs.as_array().expect("a JSON array of runs");
    assert_eq!(runs.len(), 4, "{runs:#?}");
    // Newest first.
    let ids: Vec<&str> = runs.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            failed.run_id(),
            check.run_id(),
            second.run_id(),
            first.run_id()
        ]
    );
    for (record, run) in runs.iter().zip([&failed, &check, &second, &first]) {
        let s = run.summary();
        let counts = json!([
            record["ok"],
            record["changed"],
            record["failed"],
            record["skipped"]
        ]);
        assert_eq!(
            counts,
            json!([s.ok, s.changed, s.failed, s.skipped]),
            "{record}"
        );
        assert!(record["finished_at"].is_string(), "{record}");
    }
    assert_eq!(runs[3]["changed"], 1);
    assert_eq!(runs[2]["changed"], 0);
    assert_eq!(
        (&runs[1]["check"], &runs[3]["check"]),
        (&true.into(), &false.into())
    );
    assert_eq!(
        (runs[0]["status"].as_str(), runs[1]["status"].as_str()),
        (Some("failed"), Some("ok"))
    );
    assert_eq!(runs[0]["playbook"], "failing");

    assert_eq!(sb.history(&["--limit", "2"]).as_array().unwrap().len(), 2);
    let steps = sb.history(&["--run", failed.run_id()]);
    let steps = steps.as_array().unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(
        (steps[0]["name"].as_str(), steps[0]["status"].as_str()),
        (Some("boom"), Some("failed"))
    );
    assert_eq!(steps[0]["error"], "exit code 7: bad");
    let steps = sb.history(&["--run", first.run_id()]);
    let statuses: Vec<_> = steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(statuses, ["changed", "skipped"]);
}

// ---------------------------------------------------------------------------------------------
// the demo playbook
// ---------------------------------------------------------------------------------------------

#[test]
fn demo_playbook_converges() {
    let sb = Sandbox::new();
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks/demo.toml");
    let root = sb.path("demo");
    let var = format!("root={}", root.display());

    let check = sb.apply(&demo, &["--check", "--var", &var]);
    check.assert_success();
    assert!(check.summary().changed > 0);
    assert!(!exists(&root), "--check created {}", root.display());

    let first = sb.apply(&demo, &["--var", &var]);
    first.assert_success();
    assert!(first.summary().changed > 0, "{:?}", first.statuses());
    assert_eq!(mode(&root.join("etc/demo.env")), 0o600);
    assert!(
        read(&root.join("etc/demo.env")).contains(&format!("DEMO_ARCH={}", std::env::consts::ARCH))
    );
    assert_eq!(read(&root.join("etc/overrides.conf")), "port = 8080\n");
    assert_eq!(
        fs::read_link(root.join("current")).unwrap(),
        root.join("etc")
    );
    assert!(
        exists(&root.join("data/reloaded-at")),
        "the handler did not run"
    );

    let second = sb.apply(&demo, &["--var", &var]);
    second.assert_success();
    assert_eq!(second.summary().changed, 0, "{:?}", second.statuses());
    assert!(second.reports().iter().all(|r| !r.handler));
}

/// All kinds and a handler together: `--check` changes nothing, the first run changes
/// everything and runs the handler once, the second changes nothing.
#[test]
fn a_mixed_playbook_converges() {
    let sb = Sandbox::new();
    let pb = sb.playbook(
        r#"
name = "t"
[[step]]
name = "dir"
file = { path = "@ROOT@/etc", state = "directory", mode = "0755" }
[[step]]
name = "conf"
copy = { dest = "@ROOT@/etc/app.conf", content = "a = 1\n" }
notify = ["reload"]
[[step]]
name = "line"
line_in_file = { path = "@ROOT@/etc/extra.conf", line = "b = 2", create = true }
notify = ["reload"]
[[step]]
name = "once"
command = { run = "touch @ROOT@/etc/once", creates = "@ROOT@/etc/once" }
[[handler]]
name = "reload"
command = { run = "echo reload >> @ROOT@/reloads" }
"#,
    );
    let (check, first, second) = converge(&sb, &pb);
    assert_eq!(check.summary(), summary(0, 5, 0, 0));
    assert_eq!(first.summary(), summary(0, 5, 0, 0));
    assert_eq!(read(&sb.path("etc/app.conf")), "a = 1\n");
    assert_eq!(read(&sb.path("etc/extra.conf")), "b = 2\n");
    assert_eq!(read(&sb.path("reloads")), "reload\n");
    assert_eq!(second.summary(), summary(4, 0, 0, 0));
}

// ---------------------------------------------------------------------------------------------
// secrets and no_log
// ---------------------------------------------------------------------------------------------

const TOKEN: &str = "tok-5f1e-NOT-FOR-LOGS";
const DB_PW: &str = "pw with spaces & quotes '\"";

const SECRETS: &str = r#"
name = "secrets"
[secrets]
token = "env:DEPLOY_TOKEN"
db_pw = "file:@ROOT@/db.pw"
[vars]
header = "Authorization: Bearer {{ token }}"
[[step]]
name = "write config"
copy = { dest = "@ROOT@/app.conf", content = "{{ header }}\npw={{ db_pw }}\n" }
[[step]]
name = "echo"
command = { run = "echo 'token is {{ token }}'; echo \"pw $PW\" >&2", env = { PW = "{{ db_pw }}" } }
[[step]]
name = "fail loudly"
command = { run = "echo 'boom {{ token }}' >&2; exit 3" }
"#;

/// Every byte in the state directory (journal database and its WAL), for searching.
fn state_bytes(sb: &Sandbox) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in fs::read_dir(sb.state_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            all.extend(fs::read(&path).unwrap());
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn secret_values_reach_the_host_but_no_event_output_journal_or_history() {
    let sb = Sandbox::new();
    sb.write("db.pw", &format!("{DB_PW}\n"));
    let pb = sb.playbook(SECRETS);
    let mut cmd = sb.bosund();
    cmd.env("DEPLOY_TOKEN", TOKEN)
        .arg("apply")
        .arg(&pb)
        .args(["--output", "json"]);
    let run = common::Run::from_command(cmd, None);
    assert_eq!(run.code, 1, "the last step fails: {run:#?}");

    // The host got the real values.
    assert_eq!(
        read(&sb.path("app.conf")),
        format!("Authorization: Bearer {TOKEN}\npw={DB_PW}\n")
    );
    // Events: masked everywhere, with the rest of the text intact.
    let events = serde_json::to_string(&run.events).unwrap();
    for secret in [TOKEN, DB_PW] {
        assert!(!events.contains(secret), "a secret in the events: {events}");
        assert!(!run.stderr.contains(secret), "a secret on stderr");
    }
    let reports = run.reports();
    let diff = reports[0].diff.as_deref().expect("copy reports a diff");
    assert!(
        diff.contains("+Authorization: Bearer ********") && diff.contains("+pw=********"),
        "{diff}"
    );
    let echo = reports[1].output.as_ref().expect("command output");
    assert_eq!(echo.stdout, "token is ********\n");
    assert_eq!(echo.stderr, "pw ********\n");
    assert_eq!(
        reports[2].message.as_deref(),
        Some("exit code 3: boom ********")
    );

    // The journal (every byte of it) and history never saw them either.
    let history = sb.history(&["--run", run.run_id()]).to_string();
    assert!(history.contains("boom ********"), "{history}");
    let journal = state_bytes(&sb);
    assert!(!journal.is_empty());
    for secret in [TOKEN, DB_PW] {
        assert!(!history.contains(secret), "a secret in history: {history}");
        assert!(
            !contains(&journal, secret),
            "a secret in the journal's files"
        );
    }

    // Human output (diffs included) is masked too.
    let mut cmd = sb.bosund();
    cmd.env("DEPLOY_TOKEN", TOKEN)
        .args(["apply", "--diff"])
        .arg(&pb);
    let out = cmd.output().unwrap();
    let human =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(human.contains("boom ********"), "{human}");
    assert!(!human.contains(TOKEN) && !human.contains(DB_PW), "{human}");
}

#[test]
fn a_secret_that_cannot_be_read_fails_the_run_before_any_step_naming_the_source_only() {
    let sb = Sandbox::new();
    let pb = sb.playbook(SECRETS);
    // DEPLOY_TOKEN is not set; db.pw does not exist.
    let run = sb.apply(&pb, &[]);
    assert_eq!(run.code, 1);
    let reports = run.reports();
    assert_eq!(reports.len(), 1, "no step may run: {reports:#?}");
    assert_eq!(reports[0].name, "[secrets]");
    let message = reports[0].message.as_deref().unwrap();
    assert!(
        message.contains("secret `token`") && message.contains("DEPLOY_TOKEN"),
        "{message}"
    );
    assert!(!exists(&sb.path("app.conf")));

    // An outside variable of the same name supplies the value, and is masked like one.
    sb.write("db.pw", "from-file\n");
    let run = sb.apply(&pb, &["--var", "token=given-on-the-command-line"]);
    assert_eq!(run.code, 1, "only the last step fails");
    assert!(read(&sb.path("app.conf")).contains("Bearer given-on-the-command-line"));
    let events = serde_json::to_string(&run.events).unwrap();
    assert!(!events.contains("given-on-the-command-line") && !events.contains("from-file"));
}

#[test]
fn a_secret_source_may_name_outside_variables() {
    let sb = Sandbox::new();
    sb.write("edge/origin.secret", "s3cr3t-from-file\n");
    let pb = sb.playbook(
        "name = \"templated\"\n[secrets]\norigin = \"file:{{ secret_dir }}/origin.secret\"\n\
         [[step]]\nname = \"write\"\ncopy = { dest = \"@ROOT@/out\", content = \"{{ origin }}\" }\n",
    );
    let dir = sb.path("edge");
    let run = sb.apply(&pb, &["--var", &format!("secret_dir={}", dir.display())]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(read(&sb.path("out")), "s3cr3t-from-file");
    let events = serde_json::to_string(&run.events).unwrap();
    assert!(!events.contains("s3cr3t-from-file"), "masked: {events}");

    // Without the variable, the run stops before any step and says which secret and why.
    let run = sb.apply(&pb, &[]);
    assert_eq!(run.code, 1);
    let reports = run.reports();
    assert_eq!(reports.len(), 1, "{reports:#?}");
    let message = reports[0].message.as_deref().unwrap();
    assert!(
        message.contains("secret `origin`") && message.contains("secret_dir"),
        "{message}"
    );
}

#[test]
fn bad_secret_sources_and_name_clashes_are_refused_with_their_location() {
    let sb = Sandbox::new();
    let pb = sb.playbook(
        "name = \"bad\"\n[secrets]\ntoken = \"hunter2\"\nkey = 42\npw = \"env:PW\"\n[vars]\npw = \"x\"\n[[step]]\nname = \"s\"\ncommand = { run = \"true\" }\n",
    );
    let (code, _, stderr) = sb.apply_human(&pb, &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("playbook.toml:3:9") && stderr.contains("secret `token`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("env:NAME"),
        "the help says what is expected: {stderr}"
    );
    assert!(stderr.contains("playbook.toml:4:7"), "{stderr}");
    assert!(
        stderr.contains("playbook.toml:7:6") && stderr.contains("both a secret and a variable"),
        "{stderr}"
    );
}

#[test]
fn no_log_hides_a_steps_message_diff_and_output_but_keeps_status_and_exit_code() {
    let sb = Sandbox::new();
    let pb = sb.playbook(
        r#"
name = "no_log"
[[step]]
name = "key"
copy = { dest = "@ROOT@/key.pem", content = "PRIVATE KEY MATERIAL\n", mode = "0600" }
no_log = true
[[step]]
name = "probe"
command = { run = "echo PRIVATE KEY MATERIAL; exit 4" }
failed_when = false
no_log = true
[[step]]
name = "visible"
command = { run = "echo shown" }
"#,
    );
    let run = sb.apply(&pb, &[]);
    run.assert_success();
    assert_eq!(read(&sb.path("key.pem")), "PRIVATE KEY MATERIAL\n");
    let events = serde_json::to_string(&run.events).unwrap();
    assert!(!events.contains("PRIVATE KEY"), "{events}");
    let reports = run.reports();
    assert_eq!(reports[0].status, StepStatus::Changed);
    assert_eq!(reports[0].diff.as_deref(), Some("(hidden: no_log)"));
    let probe = reports[1].output.as_ref().unwrap();
    assert_eq!((probe.rc, probe.stdout.as_str()), (4, "(hidden: no_log)"));
    assert_eq!(reports[2].output.as_ref().unwrap().stdout, "shown\n");
    assert!(!contains(&state_bytes(&sb), "PRIVATE KEY"));
}

// ---------------------------------------------------------------------------------------------
// handlers owed by a failed run
// ---------------------------------------------------------------------------------------------

#[test]
fn handlers_notified_before_a_failure_run_on_the_next_successful_run_once() {
    let sb = Sandbox::new();
    let pb = sb.playbook(
        r#"
name = "owed"
[[step]]
name = "config"
copy = { dest = "@ROOT@/app.conf", content = "v2\n" }
notify = ["restart app"]
[[step]]
name = "precondition"
command = { run = "test -e @ROOT@/ready" }
[[handler]]
name = "restart app"
command = { run = "echo restarted >> @ROOT@/restarts.log" }
"#,
    );
    let log = sb.path("restarts.log");

    let failed = sb.apply(&pb, &[]);
    assert_eq!(failed.code, 1);
    assert_eq!(failed.step("config").status, StepStatus::Changed);
    assert!(!exists(&log), "no handler runs after a failure");

    fs::write(sb.path("ready"), "").unwrap();
    // --check says the owed handler would run, and does not settle the debt.
    let check = sb.apply(&pb, &["--check"]);
    assert!(check.ran("restart app"), "{:?}", check.statuses());
    assert!(!exists(&log));

    // The rerun: `config` is ok now, yet the restart it earned still happens, once.
    let rerun = sb.apply(&pb, &[]);
    rerun.assert_success();
    assert_eq!(rerun.step("config").status, StepStatus::Ok);
    assert_eq!(rerun.step("restart app").status, StepStatus::Changed);
    assert_eq!(read(&log), "restarted\n");

    let settled = sb.apply(&pb, &[]);
    settled.assert_success();
    assert!(!settled.ran("restart app"), "{:?}", settled.statuses());
    assert_eq!(read(&log), "restarted\n");
}

#[test]
fn a_failed_handler_stays_owed_until_it_succeeds() {
    let sb = Sandbox::new();
    let pb = sb.playbook(
        r#"
name = "owed-handler"
[[step]]
name = "config"
copy = { dest = "@ROOT@/app.conf", content = "v1\n" }
notify = ["reload"]
[[handler]]
name = "reload"
command = { run = "test -e @ROOT@/reload-works && echo reloaded >> @ROOT@/reloads.log" }
"#,
    );
    let first = sb.apply(&pb, &[]);
    assert_eq!(first.code, 1);
    assert_eq!(first.step("reload").status, StepStatus::Failed);

    let again = sb.apply(&pb, &[]);
    assert_eq!(again.code, 1, "still owed, still failing");
    assert_eq!(again.step("config").status, StepStatus::Ok);

    fs::write(sb.path("reload-works"), "").unwrap();
    sb.apply(&pb, &[]).assert_success();
    assert_eq!(read(&sb.path("reloads.log")), "reloaded\n");
    let done = sb.apply(&pb, &[]);
    assert!(!done.ran("reload"));
}

// ---------------------------------------------------------------------------------------------
// a full state disk
// ---------------------------------------------------------------------------------------------

/// The state dir on a 2 MiB tmpfs (in a mount namespace of its own, so nothing outlives the
/// test): a run that journals, then the file system filled to ENOSPC, a run refused with a
/// clear "no space left" before any step, and afterwards the journal reads and runs again.
/// One shell script in one namespace: the mount exists only while it runs.
#[test]
fn a_full_state_disk_refuses_the_run_clearly_and_leaves_the_journal_readable() {
    let sb = Sandbox::new();
    let out = sb.path("out");
    fs::create_dir_all(&out).unwrap();
    let mnt = sb.path("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let pb = sb.playbook(&format!(
        "name = \"touch\"\n[[step]]\nname = \"write\"\ncopy = {{ dest = \"{}/touched\", content = \"x\\n\" }}\n",
        out.display()
    ));
    let script = r#"set -e
mount -t tmpfs -o size=2m tmpfs "$MNT"
S="$MNT/state"
"$BOSUND" --state-dir "$S" apply "$PB" --output json > "$OUT/first.json"
dd if=/dev/zero of="$MNT/fill" bs=64k 2>/dev/null || true
df -k "$MNT" | tail -1 > "$OUT/df"
set +e
"$BOSUND" --state-dir "$S" apply "$PB" --output json > "$OUT/full.json" 2> "$OUT/full.err"
echo $? > "$OUT/full.rc"
set -e
"$BOSUND" --state-dir "$S" history --output json > "$OUT/history-full.json"
rm "$MNT/fill"
"$BOSUND" --state-dir "$S" apply "$PB" --output json > "$OUT/after.json"
"$BOSUND" --state-dir "$S" history --output json > "$OUT/history.json"
"#;
    let status = std::process::Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            script,
        ])
        .env("MNT", &mnt)
        .env("OUT", &out)
        .env("PB", &pb)
        .env("BOSUND", BOSUND)
        .env("BOSUN_IMDS_ENDPOINT", "http://127.0.0.1:1")
        .status()
        .expect("unshare (util-linux) runs the scenario; the test needs root for its tmpfs");
    assert!(status.success(), "the scenario script failed: {status}");
    let events = |name: &str| -> Vec<RunEvent> {
        read(&out.join(name))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let df = read(&out.join("df"));
    assert_eq!(df.split_whitespace().nth(3), Some("0"), "not full: {df}");
    assert_eq!(read(&out.join("full.rc")).trim(), "1");
    let full = events("full.json");
    let refused = full
        .iter()
        .find_map(|e| match e {
            RunEvent::StepFinished(r) => Some(r),
            _ => None,
        })
        .expect("a step_finished for the refusal");
    assert_eq!(refused.action, "state");
    assert_eq!(refused.status, StepStatus::Failed);
    let msg = refused.message.clone().unwrap();
    assert!(
        msg.starts_with(&format!(
            "no space left on device for the state dir {}/state: 0 bytes free",
            mnt.display()
        )) && msg.ends_with("Nothing was run"),
        "{msg}"
    );
    assert!(
        !full
            .iter()
            .any(|e| matches!(e, RunEvent::StepStarted { .. })),
        "a step started on a full disk"
    );
    // The journal read while full, and after: every run that journaled is there.
    let history = |name: &str| -> Vec<serde_json::Value> {
        read(&out.join(name))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let first_id = match &events("first.json")[0] {
        RunEvent::RunStarted { run_id, .. } => run_id.clone(),
        e => panic!("{e:?}"),
    };
    assert!(
        history("history-full.json")
            .iter()
            .any(|r| r["id"] == first_id.as_str())
    );
    let after = history("history.json");
    assert!(
        after.iter().any(|r| r["id"] == first_id.as_str()),
        "{after:?}"
    );
    assert_eq!(
        after[0]["status"], "ok",
        "the run after freeing space: {after:?}"
    );
}

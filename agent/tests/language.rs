//! The playbook language beyond one action per step, through the built `bosund`: `loop`,
//! `include`, `tags` with `--tags`/`--skip-tags`, `block` with `rescue`/`always`, step `vars`
//! and `environment`, `until`, `check_mode = false`; and their validation errors.

mod common;

use bosun_model::event::{RunEvent, StepStatus};
use common::{Sandbox, read, summary};

fn names(run: &common::Run) -> Vec<String> {
    run.reports().iter().map(|r| r.name.clone()).collect()
}

#[test]
fn loop_runs_per_item_with_its_own_event_when_and_registered_results() {
    let sb = Sandbox::new();
    let pb = sb.playbook(
        r#"
name = "loops"
[vars]
dirs = ["x", "y"]
[[step]]
name = "users file"
line_in_file = { path = "@ROOT@/users", line = "{{ item.name }}:{{ item.uid }}", create = true }
loop = [{ name = "ann", uid = 1001 }, { name = "bob", uid = 1002 }, { name = "cy", uid = 7 }]
when = "item.uid > 1000"
register = "users"
[[step]]
name = "dir"
file = { path = "@ROOT@/{{ item }}", state = "directory" }
loop = "{{ dirs }}"
[[step]]
name = "summary"
copy = { dest = "@ROOT@/summary", content = "{{ users.changed }} {{ users.results | length }} {{ users.results[0].item.name }} {{ users.results[2].skipped }}\n" }
"#,
    );
    let first = sb.apply(&pb, &[]);
    first.assert_success();
    assert_eq!(
        names(&first),
        [
            r#"users file [{"name":"ann","uid":1001}]"#,
            r#"users file [{"name":"bob","uid":1002}]"#,
            r#"users file [{"name":"cy","uid":7}]"#,
            "dir [x]",
            "dir [y]",
            "summary"
        ]
    );
    assert_eq!(
        first
            .reports()
            .iter()
            .map(|r| r.status)
            .take(3)
            .collect::<Vec<_>>(),
        [
            StepStatus::Changed,
            StepStatus::Changed,
            StepStatus::Skipped
        ]
    );
    assert_eq!(read(&sb.path("users")), "ann:1001\nbob:1002\n");
    assert!(sb.path("x").is_dir() && sb.path("y").is_dir());
    assert_eq!(read(&sb.path("summary")), "true 3 ann true\n");
    // Indexes keep counting across items.
    let indexes: Vec<usize> = first.reports().iter().map(|r| r.index).collect();
    assert_eq!(indexes, [0, 1, 2, 3, 4, 5]);

    let second = sb.apply(&pb, &[]);
    second.assert_success();
    // The register now says "not changed": the summary file changes once more, then settles.
    assert_eq!(read(&sb.path("summary")), "false 3 ann true\n");
    assert_eq!(second.summary(), summary(4, 1, 0, 1));
    let third = sb.apply(&pb, &[]);
    assert_eq!(third.summary(), summary(5, 0, 0, 1));
}

#[test]
fn a_loop_template_that_is_not_a_list_fails_the_step() {
    let sb = Sandbox::new();
    let pb = sb.playbook(
        r#"
name = "bad loop"
[vars]
one = "x"
[[step]]
name = "d"
command = { run = "true" }
loop = "{{ one }}"
"#,
    );
    let run = sb.apply(&pb, &[]);
    assert_eq!(run.code, 1);
    let msg = run.step("d").message.clone().unwrap();
    assert!(msg.contains("must render to a list"), "{msg}");
}

#[test]
fn include_runs_the_files_steps_in_place_with_vars_handlers_and_relative_paths() {
    let sb = Sandbox::new();
    sb.write(
        "roles/base.toml",
        r#"
name = "base"
[vars]
greeting = "hello"
who = "nobody"
[[step]]
name = "greet"
template = { src = "greet.j2", dest = "@ROOT@/out/{{ who }}.txt" }
notify = ["reload"]
[[step]]
name = "nested"
include = { playbook = "sub/more.toml" }
[[handler]]
name = "reload"
command = { run = "echo reload >> @ROOT@/handlers.log" }
"#,
    );
    sb.write("roles/greet.j2", "{{ greeting }}, {{ who }}\n");
    sb.write(
        "roles/sub/more.toml",
        r#"
name = "more"
[[step]]
name = "more"
copy = { dest = "@ROOT@/out/more-{{ who }}", content = "m\n" }
notify = ["reload"]
"#,
    );
    let pb = sb.write(
        "site/site.toml",
        r#"
name = "site"
[vars]
greeting = "good day"
[[step]]
name = "out dir"
file = { path = "@ROOT@/out", state = "directory" }
[[step]]
name = "base for ann"
include = { playbook = "../roles/base.toml", vars = { who = "ann" } }
[[step]]
name = "base for bob"
include = { playbook = "../roles/base.toml", vars = { who = "bob" } }
[[handler]]
name = "reload"
command = { run = "echo reload-site >> @ROOT@/handlers.log" }
"#,
    );
    let run = sb.apply(&pb, &[]);
    run.assert_success();
    // The included file's [vars] are defaults: the includer's `greeting` wins, the include's
    // `vars` win over its `who`.
    assert_eq!(read(&sb.path("out/ann.txt")), "good day, ann\n");
    assert_eq!(read(&sb.path("out/bob.txt")), "good day, bob\n");
    assert_eq!(read(&sb.path("out/more-bob")), "m\n");
    assert_eq!(
        names(&run),
        ["out dir", "greet", "more", "greet", "more", "reload"]
    );
    // Handlers merge by name: the playbook's own `reload` is the one, run once.
    assert_eq!(read(&sb.path("handlers.log")), "reload-site\n");
    let second = sb.apply(&pb, &[]);
    assert_eq!(second.summary(), summary(5, 0, 0, 0));
}

#[test]
fn validation_covers_included_files_with_their_own_location_and_refuses_cycles() {
    let sb = Sandbox::new();
    sb.write(
        "inc/bad.toml",
        "name = \"bad\"\n[[step]]\nname = \"x\"\ncopy = { dest = \"/tmp/x\", content = \"{{ nope }}\" }\n",
    );
    sb.write(
        "inc/tpl.toml",
        "name = \"tpl\"\n[[step]]\nname = \"t\"\ntemplate = { src = \"missing.j2\", dest = \"/tmp/t\" }\n",
    );
    sb.write(
        "inc/a.toml",
        "name = \"a\"\n[[step]]\nname = \"to b\"\ninclude = { playbook = \"b.toml\" }\n",
    );
    sb.write(
        "inc/b.toml",
        "name = \"b\"\n[[step]]\nname = \"back to a\"\ninclude = { playbook = \"a.toml\" }\n",
    );
    let pb = sb.playbook(
        r#"name = "root"
[[step]]
name = "bad"
include = { playbook = "inc/bad.toml" }
[[step]]
name = "cycle"
include = { playbook = "inc/a.toml" }
[[step]]
name = "missing"
include = { playbook = "inc/none.toml" }
[[step]]
name = "tpl"
include = { playbook = "inc/tpl.toml" }
"#,
    );
    let (code, _, stderr) = sb.apply_human(&pb, &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("inc/bad.toml:4:41: error: undefined variable `nope`"),
        "{stderr}"
    );
    // The cycle closes in b.toml and names where a.toml was first included.
    assert!(
        stderr.contains(
            "inc/b.toml:4:24: error: include cycle: `a.toml` is already being included (at "
        ) && stderr.contains("playbook.toml:7:24)"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "playbook.toml:10:24: error: cannot read the included playbook `inc/none.toml`"
        ),
        "{stderr}"
    );
    // A file an included step reads is looked for beside the included playbook.
    let missing = format!("no {}", sb.path("inc/missing.j2").display());
    assert!(
        stderr.contains("inc/tpl.toml:4:20: error: `template` src `missing.j2` does not exist")
            && stderr.contains(&missing),
        "{stderr}"
    );
    assert!(!sb.path("x").exists());
}

const TAGGED: &str = r#"
name = "tags"
[[step]]
name = "a"
command = { run = "echo a >> @ROOT@/log" }
tags = ["web"]
[[step]]
name = "b"
command = { run = "echo b >> @ROOT@/log" }
tags = ["db"]
[[step]]
name = "c"
command = { run = "echo c >> @ROOT@/log" }
tags = ["always"]
[[step]]
name = "grp"
tags = ["grp"]
[[step.block]]
name = "d"
command = { run = "echo d >> @ROOT@/log" }
[[step.block]]
name = "e"
command = { run = "echo e >> @ROOT@/log" }
tags = ["db"]
[[step]]
name = "f"
command = { run = "echo f >> @ROOT@/log" }
tags = ["never", "debug"]
"#;

#[test]
fn tags_select_steps_and_blocks_pass_theirs_down() {
    let cases: &[(&[&str], &str)] = &[
        (&[], "a\nb\nc\nd\ne\n"),
        (&["--tags", "web"], "a\nc\n"),
        (&["--tags", "db"], "b\nc\ne\n"),
        (&["--tags", "grp"], "c\nd\ne\n"),
        (&["--tags", "web,debug"], "a\nc\nf\n"),
        (&["--skip-tags", "db"], "a\nc\nd\n"),
        (&["--tags", "grp", "--skip-tags", "always,db"], "d\n"),
    ];
    for (args, expected) in cases {
        let sb = Sandbox::new();
        let pb = sb.playbook(TAGGED);
        let run = sb.apply(&pb, args);
        run.assert_success();
        assert_eq!(read(&sb.path("log")), *expected, "{args:?}");
    }
}

#[test]
fn a_rescued_failure_lets_the_run_go_on_and_always_runs_either_way() {
    let sb = Sandbox::new();
    let pb = sb.playbook(
        r#"
name = "blocks"
[[step]]
name = "upgrade"
[[step.block]]
name = "try"
command = { run = "echo try >> @ROOT@/log; exit 3" }
[[step.block]]
name = "not reached"
command = { run = "echo unreached >> @ROOT@/log" }
[[step.rescue]]
name = "roll back"
command = { run = "echo rescue >> @ROOT@/log" }
[[step.always]]
name = "clean"
command = { run = "echo always >> @ROOT@/log" }
[[step]]
name = "after"
command = { run = "echo after >> @ROOT@/log" }
[[step]]
name = "unrescued"
[[step.block]]
name = "fails"
command = { run = "exit 1" }
[[step.always]]
name = "still cleans"
command = { run = "echo always2 >> @ROOT@/log" }
[[step]]
name = "never"
command = { run = "echo never >> @ROOT@/log" }
"#,
    );
    let run = sb.apply(&pb, &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(
        read(&sb.path("log")),
        "try\nrescue\nalways\nafter\nalways2\n"
    );
    let s = run.summary();
    assert_eq!((s.rescued, s.failed, s.changed), (1, 1, 4));
    assert_eq!(run.step("try").status, StepStatus::Failed);
}

#[test]
fn step_vars_environment_until_and_check_mode_false() {
    let sb = Sandbox::new();
    let pb = sb.playbook(
        r#"
name = "misc"
[vars]
base = "@ROOT@"
[[step]]
name = "scoped"
copy = { dest = "{{ where }}/scoped", content = "{{ what }}\n" }
vars = { where = "{{ base }}", what = "from {{ where }}" }
[[step]]
name = "env"
command = { run = "echo $GREETING $OWN > @ROOT@/env", env = { OWN = "own" } }
environment = { GREETING = "hi {{ base | length > 0 }}" }
[[step]]
name = "flaky"
command = { run = "n=$(cat @ROOT@/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > @ROOT@/n; echo $n" }
until = "result.stdout | trim == '3'"
delay = 0
register = "flaky"
[[step]]
name = "probe"
command = { run = "echo probed" }
check_mode = false
changed_when = false
register = "probe"
[[step]]
name = "uses probe"
copy = { dest = "@ROOT@/probe", content = "{{ probe.stdout }}" }
"#,
    );
    let check = sb.apply(&pb, &["--check"]);
    check.assert_success();
    // Under --check only the probe ran, and the step after it saw its output.
    assert!(!sb.path("scoped").exists() && !sb.path("n").exists());
    let diff = check.step("uses probe").diff.clone().unwrap_or_default();
    assert!(diff.contains("+probed"), "{diff}");

    let run = sb.apply(&pb, &[]);
    run.assert_success();
    assert_eq!(
        read(&sb.path("scoped")),
        format!("from {}\n", sb.root().display())
    );
    assert_eq!(read(&sb.path("env")), "hi true own\n");
    assert_eq!(read(&sb.path("n")), "3\n");
    assert_eq!(run.step("flaky").attempts, 3);
}

#[test]
fn until_that_never_holds_fails_after_its_retries() {
    let sb = Sandbox::new();
    let pb = sb.playbook(
        r#"
name = "until"
[[step]]
name = "never"
command = { run = "echo no" }
until = "result.stdout == 'yes'"
retries = 2
delay = 0
"#,
    );
    let run = sb.apply(&pb, &[]);
    assert_eq!(run.code, 1);
    let r = run.step("never");
    assert_eq!(r.attempts, 3);
    assert!(
        r.message
            .as_deref()
            .unwrap_or_default()
            .contains("`until` is still false"),
        "{r:?}"
    );
}

/// `loop` on an include (and a block): the included steps run once per item with `item`
/// bound, the include's `vars` and `when` evaluated per item; what the steps register carries
/// out; the first item whose steps fail stops the loop; a second run changes nothing.
#[test]
fn a_looped_include_runs_its_steps_once_per_item() {
    let sb = Sandbox::new();
    sb.write(
        "roles/user.toml",
        r#"
name = "user"
[[step]]
name = "home"
file = { path = "@ROOT@/home/{{ who }}", state = "directory" }
[[step]]
name = "profile"
copy = { dest = "@ROOT@/home/{{ who }}/.profile", content = "export NAME={{ who }} # {{ item.shell }}\n" }
register = "last_profile"
"#,
    );
    let pb = sb.write(
        "site.toml",
        r#"
name = "site"
[vars]
users = [{ name = "ann", shell = "bash" }, { name = "bob", shell = "zsh" }, { name = "cat", shell = "sh", off = true }]
[[step]]
name = "users"
include = { playbook = "roles/user.toml", vars = { who = "{{ item.name }}" } }
loop = "{{ users }}"
when = "not (item.off | default(false))"
[[step]]
name = "after"
command = { argv = ["echo", "{{ last_profile.changed }}"] }
changed_when = false
[[step]]
name = "numbers"
loop = [1, 2]
block = [{ name = "n", copy = { dest = "@ROOT@/n{{ item }}", content = "{{ item }}\n" } }]
"#,
    );
    let run = sb.apply(&pb, &[]);
    run.assert_success();
    assert_eq!(
        names(&run),
        [
            "home", "profile", "home", "profile", "users", "after", "n", "n"
        ]
    );
    assert_eq!(
        read(&sb.path("home/bob/.profile")),
        "export NAME=bob # zsh\n"
    );
    assert!(!sb.path("home/cat").exists(), "`when` is false for cat");
    assert_eq!(read(&sb.path("n2")), "2\n");
    let second = sb.apply(&pb, &[]);
    second.assert_success();
    assert_eq!(second.summary().changed, 0, "{:?}", names(&second));

    // A failing item stops the loop: the next item's steps never run.
    let failing = sb.write(
        "failing.toml",
        r#"
name = "failing"
[[step]]
name = "each"
loop = ["a", "b", "c"]
block = [{ name = "mark", command = { argv = ["sh", "-c", "touch @ROOT@/mark-$0; test $0 != b", "{{ item }}"] } }]
"#,
    );
    let run = sb.apply(&failing, &[]);
    assert_eq!(run.code, 1);
    assert!(sb.path("mark-b").exists());
    assert!(
        !sb.path("mark-c").exists(),
        "the loop went on after a failed item"
    );
}

#[test]
fn misplaced_structure_is_refused_with_its_location() {
    let sb = Sandbox::new();
    let pb = sb.playbook(
        r#"name = "bad"
[[step]]
name = "b"
loop = [1]
register = "r"
[[step.block]]
name = "inner"
command = { run = "true" }
[[step]]
name = "r"
command = { run = "true" }
[[step.rescue]]
name = "x"
command = { run = "true" }
[[step]]
name = "t"
command = { run = "true" }
tags = ["a b"]
[[handler]]
name = "h"
include = { playbook = "x.toml" }
"#,
    );
    let run = sb.apply(&pb, &[]);
    assert_eq!(run.code, 2);
    let RunEvent::Invalid { diagnostics } = &run.events[0] else {
        panic!("{run:#?}")
    };
    let found: Vec<(usize, &str)> = diagnostics
        .iter()
        .map(|d| (d.line, d.message.as_str()))
        .collect();
    for (line, text) in [
        (5, "`register` cannot be set on a `block`"),
        (12, "`rescue` without `block`"),
        (18, "tag \"a b\" cannot be selected"),
        (21, "a handler cannot be a `include`"),
    ] {
        assert!(
            found.iter().any(|(l, m)| *l == line && m.contains(text)),
            "missing {line}: {text} in {found:#?}"
        );
    }
}

#[test]
fn block_in_file_and_line_in_file_insertion_converge_with_a_diff() {
    let sb = Sandbox::new();
    sb.write("conf", "Port 22\nMatch all\n  X yes\n");
    let pb = sb.playbook(
        r#"
name = "edits"
[[step]]
name = "block"
block_in_file = { path = "@ROOT@/conf", block = "Match User deploy\n  PasswordAuthentication no", insert_before = "^Match all" }
[[step]]
name = "line"
line_in_file = { path = "@ROOT@/conf", regexp = "^#?PermitRootLogin", line = "PermitRootLogin no", insert_after = "^Port " }
[[step]]
name = "marker"
file = { path = "@ROOT@/done", state = "touch", mode = "0600" }
"#,
    );
    let (check, first, _) = common::converge(&sb, &pb);
    let diff = check.step("block").diff.clone().unwrap_or_default();
    assert!(diff.contains("+# BEGIN MANAGED BY BOSUN"), "{diff}");
    assert_eq!(first.step("line").status, StepStatus::Changed);
    assert_eq!(
        read(&sb.path("conf")),
        "Port 22\nPermitRootLogin no\n# BEGIN MANAGED BY BOSUN\nMatch User deploy\n  PasswordAuthentication no\n# END MANAGED BY BOSUN\nMatch all\n  X yes\n"
    );
    assert_eq!(common::mode(&sb.path("done")), 0o600);
}

#[test]
fn bad_edit_arguments_are_refused_at_validation_with_their_location() {
    let sb = Sandbox::new();
    let pb = sb.playbook(
        r##"name = "bad edits"
[[step]]
name = "both"
line_in_file = { path = "/x", line = "a", insert_after = "EOF", insert_before = "BOF" }
[[step]]
name = "backrefs"
line_in_file = { path = "/x", line = "a", backrefs = true }
[[step]]
name = "marker"
block_in_file = { path = "/x", block = "b", marker = "# fixed" }
[[step]]
name = "regex"
block_in_file = { path = "/x", block = "b", insert_after = "(" }
"##,
    );
    let run = sb.apply(&pb, &[]);
    assert_eq!(run.code, 2);
    let RunEvent::Invalid { diagnostics } = &run.events[0] else {
        panic!("{run:#?}")
    };
    for (line, text) in [
        (4, "give `insert_after` or `insert_before`, not both"),
        (7, "`backrefs = true` needs `regexp`"),
        (10, "`marker` must contain `{mark}`"),
        (
            13,
            "`insert_after` is neither EOF nor a valid regular expression",
        ),
    ] {
        assert!(
            diagnostics
                .iter()
                .any(|d| d.line == line && d.message.contains(text)),
            "missing {line}: {text} in {diagnostics:#?}"
        );
    }
}

//! Every action kind against the real file system and real processes, through the built
//! `bosund` binary: the first run changes the host (checked on disk), the second changes
//! nothing, and `--check` on a fresh tree reports the change and makes none.

mod common;

use std::fs;
use std::os::unix::fs::symlink;

use bosun_model::event::StepStatus;
use common::{Sandbox, chmod, converge, exists, listing, mode, read, summary};

// ---------------------------------------------------------------------------------------------
// file
// ---------------------------------------------------------------------------------------------

#[test]
fn file_directory_is_created_with_parents_and_mode_then_ok() {
    let sb = Sandbox::new();
    let pb = sb.playbook(
        r#"
name = "t"
[[step]]
name = "dir"
file = { path = "@ROOT@/a/b/c", state = "directory", mode = "0750" }
"#,
    );
    let (check, first, second) = converge(&sb, &pb);
    assert_eq!(check.step("dir").status, StepStatus::Changed);
    assert_eq!(first.summary(), summary(0, 1, 0, 0));
    let dir = sb.path("a/b/c");
    assert!(fs::symlink_metadata(&dir).unwrap().is_dir());
    assert_eq!(mode(&dir), 0o750);
    assert_eq!(second.summary(), summary(1, 0, 0, 0));
}

#[test]
fn file_state_file_creates_an_empty_file_with_mode_then_ok() {
    let sb = Sandbox::new();
    let pb = sb.playbook(
        r#"
name = "t"
[[step]]
name = "empty file"
file = { path = "@ROOT@/marker", state = "file", mode = "0600" }
"#,
    );
    let (check, first, second) = converge(&sb, &pb);
    assert_eq!(check.step("empty file").status, StepStatus::Changed);
    assert_eq!(first.step("empty file").status, StepStatus::Changed);
    let file = sb.path("marker");
    assert!(fs::symlink_metadata(&file).unwrap().is_file());
    assert_eq!(read(&file), "");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(second.step("empty file").status, StepStatus::Ok);
}

#[test]
fn file_mode_change_alone_is_a_change_and_fixes_the_mode() {
    let sb = Sandbox::new();
    let file = sb.write("app.conf", "keep me\n");
    chmod(&file, 0o644);
    let dir = sb.path("data");
    fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o755);
    let pb = sb.playbook(
        r#"
name = "t"
[[step]]
name = "file mode"
file = { path = "@ROOT@/app.conf", mode = "0640" }
[[step]]
name = "dir mode"
file = { path = "@ROOT@/data", state = "directory", mode = "0700" }
"#,
    );
    let (check, first, second) = converge(&sb, &pb);
    assert_eq!(check.summary(), summary(0, 2, 0, 0));
    let report = first.step("file mode");
    assert_eq!(report.status, StepStatus::Changed);
    let message = report.message.as_deref().unwrap_or_default();
    assert!(message.contains("attributes"), "{message}");
    assert!(
        check
            .step("file mode")
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("mode 0644 → 0640")
    );
    assert_eq!(mode(&file), 0o640);
    assert_eq!(
        read(&file),
        "keep me\n",
        "a mode change must not touch the content"
    );
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(second.summary(), summary(2, 0, 0, 0));
}

#[test]
fn file_absent_removes_a_file_and_a_directory_tree() {
    let sb = Sandbox::new();
    let file = sb.write("old.conf", "x\n");
    sb.write("olddir/sub/deep.txt", "y\n");
    let pb = sb.playbook(
        r#"
name = "t"
[[step]]
name = "no file"
file = { path = "@ROOT@/old.conf", state = "absent" }
[[step]]
name = "no dir"
file = { path = "@ROOT@/olddir", state = "absent" }
[[step]]
name = "never there"
file = { path = "@ROOT@/never", state = "absent" }
"#,
    );
    let (check, first, second) = converge(&sb, &pb);
    assert_eq!(check.summary(), summary(1, 2, 0, 0));
    assert_eq!(first.summary(), summary(1, 2, 0, 0));
    assert!(!exists(&file));
    assert!(!exists(&sb.path("olddir")));
    assert_eq!(second.summary(), summary(3, 0, 0, 0));
}

#[test]
fn file_absent_on_a_link_removes_the_link_and_keeps_its_target() {
    let sb = Sandbox::new();
    sb.write("target/keep.txt", "kept\n");
    symlink(sb.path("target"), sb.path("link")).unwrap();
    let pb = sb.playbook(
        r#"
name = "t"
[[step]]
name = "no link"
file = { path = "@ROOT@/link", state = "absent" }
"#,
    );
    let (_, first, _) = converge(&sb, &pb);
    assert_eq!(first.step("no link").status, StepStatus::Changed);
    assert!(!exists(&sb.path("link")));
    assert_eq!(read(&sb.path("target/keep.txt")), "kept\n");
}

#[test]
fn file_link_is_created_then_ok_then_retargeted() {
    let sb = Sandbox::new();
    sb.write("v1/bin", "1");
    sb.write("v2/bin", "2");
    let link = sb.path("current");
    let pb = sb.playbook(
        r#"
name = "t"
[[step]]
name = "current"
file = { path = "@ROOT@/current", state = "link", src = "@ROOT@/v1" }
"#,
    );
    let (check, first, second) = converge(&sb, &pb);
    assert_eq!(check.step("current").status, StepStatus::Changed);
    assert_eq!(first.step("current").status, StepStatus::Changed);
    assert_eq!(fs::read_link(&link).unwrap(), sb.path("v1"));
    assert_eq!(second.step("current").status, StepStatus::Ok);

    let pb = sb.playbook(
        r#"
name = "t"
[[step]]
name = "current"
file = { path = "@ROOT@/current", state = "link", src = "@ROOT@/v2" }
"#,
    );
    let check = sb.apply(&pb, &["--check"]);
    assert_eq!(check.step("current").status, StepStatus::Changed);
    assert_eq!(
        fs::read_link(&link).unwrap(),
        sb.path("v1"),
        "--check retargeted the link"
    );
    let retarget = sb.apply(&pb, &[]);
    retarget.assert_success();
    let report = retarget.step("current");
    assert_eq!(report.status, StepStatus::Changed);
    assert!(
        report.message.as_deref().unwrap_or_default().contains("v2"),
        "{report:?}"
    );
    assert_eq!(fs::read_link(&link).unwrap(), sb.path("v2"));
    assert_eq!(read(&link.join("bin")), "2");
    assert_eq!(
        listing(sb.root()),
        [".state", "current", "playbook.toml", "v1", "v2"],
        "a temporary link was left"
    );
    assert_eq!(sb.apply(&pb, &[]).summary(), summary(1, 0, 0, 0));
}

#[test]
fn file_link_over_a_regular_file_without_force_fails_clearly() {
    let sb = Sandbox::new();
    let file = sb.write("current", "a real file\n");
    let pb = sb.playbook(
        r#"
name = "t"
[[step]]
name = "current"
file = { path = "@ROOT@/current", state = "link", src = "@ROOT@/v1" }
"#,
    );
    let run = sb.apply(&pb, &[]);
    assert_eq!(run.code, 1);
    let report = run.step("current");
    assert_eq!(report.status, StepStatus::Failed);
    let message = report.message.as_deref().unwrap_or_default();
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(
        message.contains("is not a symlink") && message.contains("force = true"),
        "{message}"
    );
    assert!(
        !fs::symlink_metadata(&file)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(read(&file), "a real file\n");
}

#[test]
fn file_link_with_force_replaces_a_file_and_a_directory() {
    let sb = Sandbox::new();
    sb.write("target/x", "x");
    sb.write("was-file", "a real file\n");
    sb.write("was-dir/inner", "inner\n");
    let pb = sb.playbook(
        r#"
name = "t"
[[step]]
name = "over a file"
file = { path = "@ROOT@/was-file", state = "link", src = "@ROOT@/target", force = true }
[[step]]
name = "over a directory"
file = { path = "@ROOT@/was-dir", state = "link", src = "@ROOT@/target", force = true }
"#,
    );
    let (check, first, _) = converge(&sb, &pb);
    assert_eq!(check.summary(), summary(0, 2, 0, 0));
    assert_eq!(first.summary(), summary(0, 2, 0, 0));
    for name in ["was-file", "was-dir"] {
        assert_eq!(
            fs::read_link(sb.path(name)).unwrap(),
            sb.path("target"),
            "{name}"
        );
    }
    assert_eq!(read(&sb.path("target/x")), "x");
}

// ---------------------------------------------------------------------------------------------
// copy
// ---------------------------------------------------------------------------------------------

#[test]
fn copy_inline_content_creates_a_0644_file_atomically_then_ok() {
    let sb = Sandbox::new();
    fs::create_dir(sb.path("etc")).unwrap();
    let pb = sb.playbook(
        r#"
name = "t"
[vars]
greeting = "hello"
[[step]]
name = "config"
copy = { dest = "@ROOT@/etc/app.conf", content = "greeting = {{ greeting }}\nport = 8080\n" }
"#,
    );
    let (check, first, second) = converge(&sb, &pb);
    let dest = sb.path("etc/app.conf");
    for run in [&check, &first] {
        let report = run.step("config");
        assert_eq!(report.status, StepStatus::Changed);
        let diff = report.diff.as_deref().expect("a copy reports its diff");
        assert!(
            diff.contains("+greeting = hello\n") && diff.contains("+port = 8080\n"),
            "{diff}"
        );
    }
    assert_eq!(read(&dest), "greeting = hello\nport = 8080\n");
    assert_eq!(mode(&dest), 0o644, "a new file defaults to 0644");
    assert_eq!(
        listing(&sb.path("etc")),
        ["app.conf"],
        "the atomic write left a temporary file"
    );
    let report = second.step("config");
    assert_eq!(
        (report.status, report.diff.as_deref()),
        (StepStatus::Ok, None)
    );
}

#[test]
fn copy_src_is_relative_to_the_playbook_directory() {
    let sb = Sandbox::new();
    sb.write("site/files/motd", "welcome\n\u{1F6A2}\n");
    let pb = sb.write(
        "site/playbook.toml",
        r#"
name = "t"
[[step]]
name = "motd"
copy = { dest = "@ROOT@/motd", src = "files/motd", mode = "0444" }
"#,
    );
    // Run from elsewhere: `src` must not resolve against the working directory.
    let elsewhere = sb.path("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let out = sb
        .bosund()
        .current_dir(&elsewhere)
        .arg("apply")
        .arg(&pb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dest = sb.path("motd");
    assert_eq!(
        fs::read(&dest).unwrap(),
        fs::read(sb.path("site/files/motd")).unwrap()
    );
    assert_eq!(mode(&dest), 0o444);
    assert_eq!(listing(&elsewhere), Vec::<String>::new());
    // The same from the sandbox as working directory: check, apply, then nothing to do.
    fs::remove_file(&dest).unwrap();
    let (check, _, _) = converge(&sb, &pb);
    assert_eq!(check.step("motd").status, StepStatus::Changed);
    assert_eq!(read(&dest), "welcome\n\u{1F6A2}\n");
}

#[test]
fn copy_over_an_existing_file_keeps_its_mode_shows_a_diff_and_leaves_no_temp_file() {
    let sb = Sandbox::new();
    let dest = sb.write("conf/app.conf", "keep = 1\nold line\n");
    chmod(&dest, 0o600);
    let pb = sb.playbook(
        r#"
name = "t"
[[step]]
name = "config"
copy = { dest = "@ROOT@/conf/app.conf", content = "keep = 1\nnew line\n" }
"#,
    );
    let (code, stdout, _) = sb.apply_human(&pb, &["--check", "--diff"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("-old line") && stdout.contains("+new line"),
        "{stdout}"
    );
    assert!(
        stdout.contains(" keep = 1"),
        "the diff has context lines: {stdout}"
    );
    assert_eq!(
        read(&dest),
        "keep = 1\nold line\n",
        "--check --diff wrote the file"
    );

    let first = sb.apply(&pb, &[]);
    first.assert_success();
    let diff = first
        .step("config")
        .diff
        .clone()
        .expect("diff in the event");
    assert!(
        diff.contains("-old line\n") && diff.contains("+new line\n"),
        "{diff}"
    );
    assert_eq!(read(&dest), "keep = 1\nnew line\n");
    assert_eq!(
        mode(&dest),
        0o600,
        "mode unset: the existing file keeps its mode"
    );
    assert_eq!(
        listing(&sb.path("conf")),
        ["app.conf"],
        "the atomic write left a temporary file"
    );
    assert_eq!(sb.apply(&pb, &[]).summary(), summary(1, 0, 0, 0));
}

#[test]
fn copy_with_the_same_content_and_another_mode_changes_only_the_mode() {
    let sb = Sandbox::new();
    let dest = sb.write("secret", "s3cr3t\n");
    chmod(&dest, 0o644);
    let pb = sb.playbook(
        r#"
name = "t"
[[step]]
name = "secret"
copy = { dest = "@ROOT@/secret", content = "s3cr3t\n", mode = "0600" }
"#,
    );
    let (check, first, _) = converge(&sb, &pb);
    assert_eq!(check.step("secret").status, StepStatus::Changed);
    assert_eq!(first.step("secret").status, StepStatus::Changed);
    assert_eq!(
        first.step("secret").diff,
        None,
        "no content diff for a mode change"
    );
    assert_eq!(mode(&dest), 0o600);
    assert_eq!(read(&dest), "s3cr3t\n");
}

#[test]
fn copy_into_a_missing_directory_fails_naming_it() {
    let sb = Sandbox::new();
    let pb = sb.playbook(
        r#"
name = "t"
[[step]]
name = "config"
copy = { dest = "@ROOT@/missing/sub/app.conf", content = "x\n" }
[[step]]
name = "after"
file = { path = "@ROOT@/after", state = "file" }
"#,
    );
    let run = sb.apply(&pb, &[]);
    assert_eq!(run.code, 1);
    let report = run.step("config");
    assert_eq!(report.status, StepStatus::Failed);
    let message = report.message.as_deref().unwrap_or_default();
    let missing = sb.path("missing/sub").display().to_string();
    assert!(
        message.contains(&format!("directory {missing} does not exist")),
        "{message}"
    );
    assert!(!exists(&sb.path("missing")));
    assert!(!run.ran("after") && !exists(&sb.path("after")));
}

// ---------------------------------------------------------------------------------------------
// template
// ---------------------------------------------------------------------------------------------

#[test]
fn template_renders_vars_and_facts_then_ok() {
    let sb = Sandbox::new();
    sb.write(
        "templates/app.env.j2",
        "APP={{ app }}\nARCH={{ facts.arch }}\n{% for p in ports %}PORT={{ p }}\n{% endfor %}",
    );
    let pb = sb.playbook(
        r#"
name = "t"
[vars]
app = "ledger"
ports = [80, 443]
[[step]]
name = "env file"
template = { src = "templates/app.env.j2", dest = "@ROOT@/app.env", mode = "0600" }
"#,
    );
    let (check, first, second) = converge(&sb, &pb);
    let want = format!(
        "APP=ledger\nARCH={}\nPORT=80\nPORT=443\n",
        std::env::consts::ARCH
    );
    for run in [&check, &first] {
        let report = run.step("env file");
        assert_eq!(report.status, StepStatus::Changed);
        let diff = report.diff.as_deref().expect("a template reports its diff");
        assert!(
            diff.contains(&format!("+ARCH={}\n", std::env::consts::ARCH)),
            "{diff}"
        );
    }
    let dest = sb.path("app.env");
    assert_eq!(read(&dest), want);
    assert_eq!(mode(&dest), 0o600);
    assert_eq!(second.step("env file").status, StepStatus::Ok);
}

#[test]
fn template_change_shows_a_diff_under_check_and_applies_it() {
    let sb = Sandbox::new();
    sb.write("tpl/port.j2", "# managed\nport={{ port }}\n");
    let dest = sb.write("port.conf", "# managed\nport=80\n");
    let pb = sb.playbook(
        r#"
name = "t"
[vars]
port = 8080
[[step]]
name = "port"
template = { src = "tpl/port.j2", dest = "@ROOT@/port.conf" }
"#,
    );
    let (code, stdout, _) = sb.apply_human(&pb, &["--check", "--diff"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("-port=80") && stdout.contains("+port=8080"),
        "{stdout}"
    );
    assert_eq!(read(&dest), "# managed\nport=80\n");
    let check = sb.apply(&pb, &["--check"]);
    let diff = check
        .step("port")
        .diff
        .clone()
        .expect("diff in the check event");
    assert!(
        diff.contains("-port=80\n") && diff.contains("+port=8080\n"),
        "{diff}"
    );
    let run = sb.apply(&pb, &[]);
    run.assert_success();
    assert_eq!(run.step("port").status, StepStatus::Changed);
    assert_eq!(read(&dest), "# managed\nport=8080\n");
    assert_eq!(sb.apply(&pb, &[]).summary(), summary(1, 0, 0, 0));
}

#[test]
fn template_with_an_undefined_variable_fails_naming_the_template() {
    let sb = Sandbox::new();
    let tpl = sb.write(
        "templates/broken.conf.j2",
        "ok={{ app }}\nbad={{ no_such_var }}\n",
    );
    let pb = sb.playbook(
        r#"
name = "t"
[vars]
app = "x"
[[step]]
name = "broken"
template = { src = "templates/broken.conf.j2", dest = "@ROOT@/broken.conf" }
"#,
    );
    for args in [&["--check"][..], &[]] {
        let run = sb.apply(&pb, args);
        assert_eq!(run.code, 1, "{args:?}");
        let report = run.step("broken");
        assert_eq!(report.status, StepStatus::Failed);
        let message = report.message.as_deref().unwrap_or_default();
        assert!(message.contains(&tpl.display().to_string()), "{message}");
        assert!(message.contains("undefined"), "{message}");
        assert!(!exists(&sb.path("broken.conf")));
    }
}

// ---------------------------------------------------------------------------------------------
// line_in_file
// ---------------------------------------------------------------------------------------------

#[test]
fn line_in_file_replaces_the_matching_line() {
    let sb = Sandbox::new();
    let path = sb.write("server.conf", "host = 0.0.0.0\nport = 80\nworkers = 2\n");
    chmod(&path, 0o640);
    let pb = sb.playbook(
        r#"
name = "t"
[[step]]
name = "port"
line_in_file = { path = "@ROOT@/server.conf", regexp = "^port\\s*=", line = "port = 8080" }
"#,
    );
    let (code, stdout, _) = sb.apply_human(&pb, &["--check", "--diff"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("-port = 80\n") && stdout.contains("+port = 8080\n"),
        "{stdout}"
    );
    let (check, first, _) = converge(&sb, &pb);
    assert!(
        check
            .step("port")
            .diff
            .as_deref()
            .unwrap_or_default()
            .contains("+port = 8080\n")
    );
    let diff = first.step("port").diff.clone().expect("diff in the event");
    assert!(
        diff.contains("-port = 80\n") && diff.contains("+port = 8080\n"),
        "{diff}"
    );
    assert_eq!(read(&path), "host = 0.0.0.0\nport = 8080\nworkers = 2\n");
    assert_eq!(mode(&path), 0o640, "the edited file keeps its mode");
    assert_eq!(
        listing(sb.root()),
        [".state", "playbook.toml", "server.conf"]
    );
}

#[test]
fn line_in_file_appends_when_nothing_matches() {
    let sb = Sandbox::new();
    let path = sb.write("sysctl.conf", "# tuned by bosun\nnet.core.somaxconn=1024");
    let pb = sb.playbook(
        r#"
name = "t"
[[step]]
name = "swappiness"
line_in_file = { path = "@ROOT@/sysctl.conf", regexp = "^vm\\.swappiness", line = "vm.swappiness=10" }
"#,
    );
    let (check, first, _) = converge(&sb, &pb);
    assert_eq!(check.step("swappiness").status, StepStatus::Changed);
    assert!(
        first
            .step("swappiness")
            .diff
            .as_deref()
            .unwrap_or_default()
            .contains("+vm.swappiness=10")
    );
    assert_eq!(
        read(&path),
        "# tuned by bosun\nnet.core.somaxconn=1024\nvm.swappiness=10\n"
    );
}

#[test]
fn line_in_file_absent_removes_every_matching_line() {
    let sb = Sandbox::new();
    let path = sb.write(
        "hosts",
        "127.0.0.1 localhost\n10.0.0.1 old-db\n10.0.0.2 web\n10.0.0.9 old-db\n",
    );
    let pb = sb.playbook(
        r#"
name = "t"
[[step]]
name = "no old-db"
line_in_file = { path = "@ROOT@/hosts", regexp = "\\sold-db$", state = "absent" }
[[step]]
name = "absent from a missing file"
line_in_file = { path = "@ROOT@/nothing-here", line = "x", state = "absent" }
"#,
    );
    let (code, stdout, _) = sb.apply_human(&pb, &["--check", "--diff"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("-10.0.0.1 old-db") && stdout.contains("-10.0.0.9 old-db"),
        "{stdout}"
    );
    let (_, first, _) = converge(&sb, &pb);
    assert_eq!(first.summary(), summary(1, 1, 0, 0));
    assert_eq!(read(&path), "127.0.0.1 localhost\n10.0.0.2 web\n");
    assert!(!exists(&sb.path("nothing-here")));
}

#[test]
fn line_in_file_on_a_missing_file_fails_unless_create_is_set() {
    let sb = Sandbox::new();
    let path = sb.path("overrides.conf");
    let without = sb.playbook(
        r#"
name = "t"
[[step]]
name = "port"
line_in_file = { path = "@ROOT@/overrides.conf", regexp = "^port", line = "port = 1" }
"#,
    );
    let run = sb.apply(&without, &[]);
    assert_eq!(run.code, 1);
    let message = run.step("port").message.clone().unwrap_or_default();
    assert!(
        message.contains(&path.display().to_string()) && message.contains("create = true"),
        "{message}"
    );
    assert!(!exists(&path));
    // --check cannot know whether an earlier step would create it: it reports the edit, says
    // so, and changes nothing.
    let check = sb.apply(&without, &["--check"]);
    assert_eq!(check.code, 0);
    let port = check.step("port");
    assert_eq!(port.status, StepStatus::Changed);
    assert!(
        port.message
            .as_deref()
            .unwrap_or_default()
            .contains("does not exist yet"),
        "{port:?}"
    );
    assert!(!exists(&path));

    // The case that matters: an earlier step creates the file. --check and the run agree.
    let created_earlier = sb.playbook(
        r#"
name = "t"
[[step]]
name = "base"
copy = { dest = "@ROOT@/overrides.conf", content = "port = 0\n" }
[[step]]
name = "port"
line_in_file = { path = "@ROOT@/overrides.conf", regexp = "^port", line = "port = 1" }
"#,
    );
    let check = sb.apply(&created_earlier, &["--check"]);
    assert_eq!(check.summary(), summary(0, 2, 0, 0));
    assert!(!exists(&path));
    let real = sb.apply(&created_earlier, &[]);
    assert_eq!(real.summary(), summary(0, 2, 0, 0));
    assert_eq!(read(&path), "port = 1\n");
    std::fs::remove_file(&path).unwrap();

    let with = sb.playbook(
        r#"
name = "t"
[[step]]
name = "port"
line_in_file = { path = "@ROOT@/overrides.conf", regexp = "^port", line = "port = 1", create = true }
"#,
    );
    let (check, first, _) = converge(&sb, &with);
    assert_eq!(check.step("port").status, StepStatus::Changed);
    assert!(
        first
            .step("port")
            .diff
            .as_deref()
            .unwrap_or_default()
            .contains("+port = 1")
    );
    assert_eq!(read(&path), "port = 1\n");
    assert_eq!(mode(&path), 0o644);
}

// ---------------------------------------------------------------------------------------------
// command
// ---------------------------------------------------------------------------------------------

#[test]
fn command_runs_a_shell_line_in_cwd_with_env_and_captures_its_output() {
    let sb = Sandbox::new();
    let work = sb.path("work");
    fs::create_dir(&work).unwrap();
    let pb = sb.playbook(
        r#"
name = "t"
[[step]]
name = "shell"
command = { run = "pwd -P; echo \"$GREETING\"; echo to-stderr >&2; touch ran", cwd = "@ROOT@/work", env = { GREETING = "hi there" } }
"#,
    );
    let before = sb.snapshot();
    let check = sb.apply(&pb, &["--check"]);
    let report = check.step("shell");
    assert_eq!(report.status, StepStatus::Changed);
    assert_eq!(report.output, None, "under --check a command does not run");
    assert_eq!(sb.snapshot(), before);

    let run = sb.apply(&pb, &[]);
    run.assert_success();
    let report = run.step("shell");
    assert_eq!(report.status, StepStatus::Changed);
    let output = report.output.clone().expect("command output in the event");
    let cwd = fs::canonicalize(&work).unwrap();
    assert_eq!(output.stdout, format!("{}\nhi there\n", cwd.display()));
    assert_eq!(output.stderr, "to-stderr\n");
    assert_eq!(output.rc, 0);
    assert!(exists(&work.join("ran")));
}

#[test]
fn command_argv_runs_without_a_shell() {
    let sb = Sandbox::new();
    let pb = sb.playbook(
        r#"
name = "t"
[[step]]
name = "argv"
command = { argv = ["/bin/echo", "two words", "$HOME", "a;b"] }
"#,
    );
    let run = sb.apply(&pb, &[]);
    run.assert_success();
    let output = run.step("argv").output.clone().unwrap();
    assert_eq!(
        (output.stdout.as_str(), output.rc),
        ("two words $HOME a;b\n", 0)
    );
}

#[test]
fn command_creates_and_removes_skip_it_when_satisfied() {
    let sb = Sandbox::new();
    let pb = sb.playbook(
        r#"
name = "t"
[[step]]
name = "init once"
command = { run = "echo initialised > @ROOT@/initialised; echo x >> @ROOT@/count", creates = "@ROOT@/initialised" }
[[step]]
name = "cleanup if present"
command = { run = "rm @ROOT@/lockfile; echo x >> @ROOT@/count", removes = "@ROOT@/lockfile" }
"#,
    );
    let (check, first, second) = converge(&sb, &pb);
    assert_eq!(check.step("init once").status, StepStatus::Changed);
    assert_eq!(check.step("cleanup if present").status, StepStatus::Ok);
    assert_eq!(first.statuses()[0].1, StepStatus::Changed);
    let skipped = first.step("cleanup if present");
    assert_eq!(skipped.status, StepStatus::Ok);
    assert_eq!(skipped.output, None);
    assert!(
        skipped
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("does not exist")
    );
    assert_eq!(read(&sb.path("count")), "x\n");
    let skipped = second.step("init once");
    assert_eq!(
        (skipped.status, skipped.output.clone()),
        (StepStatus::Ok, None)
    );
    assert!(
        skipped
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("exists")
    );
    assert_eq!(
        read(&sb.path("count")),
        "x\n",
        "the second run ran a `creates` command again"
    );

    // Once the `removes` path exists the command runs (and removes it).
    sb.write("lockfile", "");
    let third = sb.apply(&pb, &[]);
    assert_eq!(third.summary(), summary(1, 1, 0, 0));
    assert!(!exists(&sb.path("lockfile")));
    assert_eq!(read(&sb.path("count")), "x\nx\n");
}

#[test]
fn command_failing_fails_the_step_and_stops_the_run() {
    let sb = Sandbox::new();
    let pb = sb.playbook(
        r#"
name = "t"
[[step]]
name = "before"
command = { run = "touch @ROOT@/before" }
[[step]]
name = "boom"
command = { run = "echo partial; echo 'disk on fire' >&2; exit 3" }
[[step]]
name = "after"
command = { run = "touch @ROOT@/after" }
"#,
    );
    let run = sb.apply(&pb, &[]);
    assert_eq!(run.code, 1);
    assert_eq!(run.summary(), summary(0, 1, 1, 0));
    let report = run.step("boom");
    assert_eq!(report.status, StepStatus::Failed);
    let output = report
        .output
        .clone()
        .expect("a failed command still reports its output");
    assert_eq!(
        (output.stdout.as_str(), output.stderr.as_str(), output.rc),
        ("partial\n", "disk on fire\n", 3)
    );
    assert_eq!(report.message.as_deref(), Some("exit code 3: disk on fire"));
    assert!(exists(&sb.path("before")));
    assert!(!run.ran("after"), "a step ran after the failure");
    assert!(!exists(&sb.path("after")));
}

#[test]
fn command_that_cannot_start_fails_naming_the_program() {
    let sb = Sandbox::new();
    let pb = sb.playbook(
        r#"
name = "t"
[[step]]
name = "missing program"
command = { argv = ["@ROOT@/no-such-program"] }
"#,
    );
    let run = sb.apply(&pb, &[]);
    assert_eq!(run.code, 1);
    let report = run.step("missing program");
    assert_eq!(report.status, StepStatus::Failed);
    assert!(
        report
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("no-such-program"),
        "{report:?}"
    );
}

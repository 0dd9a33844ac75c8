//! `bosun`'s own command line: `check` judges a playbook on the operator's machine as the agent
//! would (the files it names by relative paths must be beside it; absolute paths are the
//! host's, not looked at); `completions` and `man` describe the same commands as `--help`.

use std::process::Command;

const BOSUN: &str = env!("CARGO_BIN_EXE_bosun");

#[test]
fn a_missing_relative_file_is_refused_at_its_place_and_an_absolute_one_is_left_to_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("site.toml");
    std::fs::write(
        &book,
        "name = \"site\"\n[[step]]\nname = \"env\"\ntemplate = { src = \"templates/env.j2\", dest = \"/etc/env\" }\n[[step]]\nname = \"host file\"\ncopy = { src = \"/nonexistent/on/this/machine\", dest = \"/etc/x\" }\n",
    )
    .unwrap();
    let out = Command::new(BOSUN)
        .args(["check", book.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:4:20: error: `template` src `templates/env.j2` does not exist",
            book.display()
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("/nonexistent"),
        "an absolute path was judged on the operator's machine: {stderr}"
    );
    assert!(stderr.contains("1 error found"), "{stderr}");
    // JSON Lines: a line per playbook, the diagnostics located.
    let out = Command::new(BOSUN)
        .args(["--output", "json", "check", book.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(line["ok"], false);
    assert_eq!(
        (
            &line["diagnostics"][0]["line"],
            &line["diagnostics"][0]["column"]
        ),
        (&serde_json::json!(4), &serde_json::json!(20)),
        "{line}"
    );

    std::fs::create_dir(dir.path().join("templates")).unwrap();
    std::fs::write(dir.path().join("templates/env.j2"), "x=1\n").unwrap();
    let out = Command::new(BOSUN)
        .args(["check", book.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// bash accepts the completion script, which offers the subcommands; `man DIR` writes a page per
/// command that man(1)'s formatter reads without warnings.
#[test]
fn completions_and_man_pages_describe_the_commands() {
    let out = Command::new(BOSUN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    for sub in ["check", "run", "plan", "up", "down", "completions", "man"] {
        assert!(script.contains(sub), "no `{sub}` in:\n{script}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bosun.bash");
    std::fs::write(&file, &script).unwrap();
    let bash = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(
        bash.status.success(),
        "{}",
        String::from_utf8_lossy(&bash.stderr)
    );

    let man = dir.path().join("man1");
    let out = Command::new(BOSUN)
        .args(["man", man.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let page = std::fs::read_to_string(man.join("bosun-check.1")).unwrap();
    assert!(page.contains(".TH bosun-check 1"), "{page}");
    assert!(page.contains("Validate playbooks locally"), "{page}");
    assert!(man.join("bosun.1").exists() && man.join("bosun-up.1").exists());
}

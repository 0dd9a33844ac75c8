//! `bosund`'s own command line: `completions` and `man` describe the same commands as `--help`.

use std::process::Command;

const BOSUND: &str = env!("CARGO_BIN_EXE_bosund");

/// bash accepts the completion script, which offers the subcommands; `man DIR` writes a page per
/// command, `apply`'s with its `--base-dir`.
#[test]
fn completions_and_man_pages_describe_the_commands() {
    let out = Command::new(BOSUND)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    for sub in [
        "apply",
        "check",
        "history",
        "schedule",
        "completions",
        "man",
    ] {
        assert!(script.contains(sub), "no `{sub}` in:\n{script}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bosund.bash");
    std::fs::write(&file, &script).unwrap();
    let bash = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(
        bash.status.success(),
        "{}",
        String::from_utf8_lossy(&bash.stderr)
    );
    for shell in ["zsh", "fish"] {
        let out = Command::new(BOSUND)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }

    let man = dir.path().join("man1");
    let out = Command::new(BOSUND)
        .args(["man", man.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let page = std::fs::read_to_string(man.join("bosund-apply.1")).unwrap();
    assert!(page.contains(".TH bosund-apply 1"), "{page}");
    assert!(page.contains("base\\-dir"), "{page}");
    assert!(man.join("bosund.1").exists() && man.join("bosund-schedule-list.1").exists());
}

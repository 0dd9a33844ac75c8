//! The dependency tree under cargo-deny (`deny.toml`): licences on the allow list, a second
//! version of a crate only with its reason, crates.io as the only source, and every crate
//! checked against the RustSec advisory database: the offline snapshot kept in the repository
//! as `tests/architecture/advisory-db.tar.zst` (a copy of `../shared/advisory-db`, so a fresh
//! clone on its own has it; `BOSUN_ADVISORY_DB` names a newer unpacked one), never fetched.
//!
//! cargo-deny is installed by `scripts/test` (a prebuilt binary from a Python wheel, in its own
//! venv; `BOSUN_TEST_CARGO_DENY` names another binary). docs/SUPPLY-CHAIN.md says why each
//! exception in `deny.toml` is acceptable.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where cargo-deny keeps the database of `https://github.com/rustsec/advisory-db` under its
/// `db-path` (the directory name it derives from that URL).
const DB_DIR: &str = "advisory-db-3157b0e258782691";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cargo_deny() -> PathBuf {
    if let Some(p) = std::env::var_os("BOSUN_TEST_CARGO_DENY") {
        return PathBuf::from(p);
    }
    let venv = std::env::var_os("BOSUN_TEST_DENY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/bosun/deny-venv")
        });
    let bin = venv.join("bin/cargo-deny");
    assert!(
        bin.exists(),
        "cargo-deny is not installed at {}: run scripts/test (it installs it), or set BOSUN_TEST_CARGO_DENY",
        bin.display()
    );
    bin
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// The snapshot as the git repository cargo-deny opens, in a fresh directory.
fn advisory_dbs(scratch: &Path) -> PathBuf {
    let dbs = scratch.join("advisory-dbs");
    let repo = dbs.join(DB_DIR);
    match std::env::var_os("BOSUN_ADVISORY_DB").map(PathBuf::from) {
        Some(snapshot) => {
            assert!(
                snapshot.join("crates").is_dir(),
                "no RustSec snapshot at {} (its crates/ directory) named by BOSUN_ADVISORY_DB",
                snapshot.display()
            );
            copy_tree(&snapshot, &repo);
        }
        None => {
            let archive = workspace().join("tests/architecture/advisory-db.tar.zst");
            std::fs::create_dir_all(&repo).unwrap();
            let out = Command::new("tar")
                .arg("--zstd")
                .arg("-xf")
                .arg(&archive)
                .arg("-C")
                .arg(&repo)
                .output()
                .expect("running tar (scripts/test installs zstd for --zstd)");
            assert!(
                out.status.success() && repo.join("crates").is_dir(),
                "unpacking {}: {out:?}",
                archive.display()
            );
        }
    }
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(args)
            .env("GIT_AUTHOR_NAME", "bosun")
            .env("GIT_AUTHOR_EMAIL", "bosun@localhost")
            .env("GIT_COMMITTER_NAME", "bosun")
            .env("GIT_COMMITTER_EMAIL", "bosun@localhost")
            .output()
            .expect("running git");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "RustSec snapshot (see SNAPSHOT.md)"]);
    dbs
}

#[test]
fn the_dependency_tree_passes_cargo_deny_offline() {
    let scratch = std::env::temp_dir().join(format!("bosun-deny-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let dbs = advisory_dbs(&scratch);
    let out = Command::new(cargo_deny())
        .args(["--frozen", "--color", "never", "check"])
        .current_dir(workspace())
        .env("BOSUN_ADVISORY_DBS", &dbs)
        .output()
        .expect("running cargo-deny");
    let _ = std::fs::remove_dir_all(&scratch);
    // The verdicts go to stderr, the closing summary line to stdout.
    let stderr = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        out.status.success(),
        "cargo deny check failed (fix it, or add the exception with its reason to deny.toml and docs/SUPPLY-CHAIN.md):\n{stderr}"
    );
    assert!(
        stderr.contains("advisories ok, bans ok, licenses ok, sources ok"),
        "{stderr}"
    );
    // Every exception is still needed: an unmatched skip or ignore is a stale justification.
    assert!(
        !stderr.contains("unmatched") && !stderr.contains("not encountered"),
        "deny.toml lists an exception the tree no longer needs:\n{stderr}"
    );
}

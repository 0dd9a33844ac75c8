//! Programs from the test venv that `scripts/test` creates (moto, cfn-lint, jsonschema, ...).

use std::path::PathBuf;

/// `bin/NAME` of the test venv (`$BOSUN_TEST_VENV`, else `~/.cache/bosun/venv`). Panics with
/// what to run when it is missing: the venv is a test prerequisite, not optional.
pub fn venv_program(name: &str) -> PathBuf {
    let venv = std::env::var_os("BOSUN_TEST_VENV")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/bosun/venv")
        });
    let p = venv.join("bin").join(name);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/test, which creates the test venv \
         (or set BOSUN_TEST_VENV to a venv that has it)",
        p.display()
    );
    p
}

/// The `checkov` of its own venv (`$BOSUN_TEST_CHECKOV_VENV`, else
/// `~/.cache/bosun/checkov-venv`), which `scripts/test` creates beside the test venv: checkov
/// pins boto3/botocore releases older than moto's, so one venv cannot hold both.
pub fn checkov_program() -> PathBuf {
    let venv = std::env::var_os("BOSUN_TEST_CHECKOV_VENV")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/bosun/checkov-venv")
        });
    let p = venv.join("bin/checkov");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/test, which creates the checkov venv \
         (or set BOSUN_TEST_CHECKOV_VENV to a venv that has it)",
        p.display()
    );
    p
}

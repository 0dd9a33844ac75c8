//! The k3s binary's command line: the version of an installed binary (`k3s --version`) and
//! `k3s kubectl` against the installation's kubeconfig, run through [`super::process`]. What
//! the answers mean (is the node Ready, which release to install) is `steps::k3s`'s.

use std::path::Path;

use anyhow::bail;
use bosun_model::event::CommandOutput;
use bosun_model::steps::k3s::{K3sPaths, K3sRelease};

use super::process;

/// The version in `k3s --version` output (`k3s version v1.31.4+k3s1 (1a2b3c4d)`).
pub(crate) fn parse_version_output(text: &str) -> Option<K3sRelease> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("k3s version "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| K3sRelease::parse(v).ok())
}

/// The version of the k3s binary at `binary`; `None` when there is no file there. A file that
/// does not answer `--version` like k3s is an error that says to remove or replace it.
pub(crate) async fn installed_version(binary: &Path) -> anyhow::Result<Option<K3sRelease>> {
    if !binary.exists() {
        return Ok(None);
    }
    let argv = [binary.display().to_string(), "--version".into()];
    let out = process::run(&argv, None, &Default::default()).await?;
    match parse_version_output(&out.stdout) {
        Some(v) if out.rc == 0 => Ok(Some(v)),
        _ => bail!(
            "{} --version did not report a k3s version (exit code {}): {}; remove or replace \
             the file",
            binary.display(),
            out.rc,
            out.stderr.trim()
        ),
    }
}

/// Runs `k3s kubectl ARGS` with the installation's kubeconfig and a 10 s request timeout;
/// errors only when it cannot be started.
pub(crate) async fn kubectl(paths: &K3sPaths, args: &[&str]) -> anyhow::Result<CommandOutput> {
    process::run(&kubectl_argv(paths, args), None, &Default::default()).await
}

/// [`kubectl`] with another kubeconfig (an agent's `kubelet.kubeconfig`).
pub(crate) async fn kubectl_as(
    paths: &K3sPaths,
    kubeconfig: &Path,
    args: &[&str],
) -> anyhow::Result<CommandOutput> {
    let mut argv = kubectl_argv(paths, args);
    argv[3] = kubeconfig.display().to_string();
    process::run(&argv, None, &Default::default()).await
}

fn kubectl_argv(paths: &K3sPaths, args: &[&str]) -> Vec<String> {
    let mut argv = vec![
        paths.binary().display().to_string(),
        "kubectl".into(),
        "--kubeconfig".into(),
        paths.kubeconfig().display().to_string(),
        "--request-timeout=10s".into(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    argv
}

/// kubectl's reason for a failure: the last non-empty line of stderr (of stdout when stderr
/// is empty), with the exit code.
pub(crate) fn kubectl_error(out: &CommandOutput) -> String {
    let text = if out.stderr.trim().is_empty() {
        &out.stdout
    } else {
        &out.stderr
    };
    let line = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no output");
    format!("exit code {}: {line}", out.rc)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn v(s: &str) -> K3sRelease {
        K3sRelease::parse(s).unwrap()
    }

    fn paths(root: &Path) -> K3sPaths {
        K3sPaths {
            bin_dir: root.join("bin"),
            config_dir: root.join("etc"),
            unit_dir: root.join("units"),
            data_dir: root.join("data"),
        }
    }

    #[test]
    fn version_output_is_read_from_the_first_line() {
        let out = "k3s version v1.31.4+k3s1 (a1b2c3d4)\ngo version go1.22.9\n";
        assert_eq!(parse_version_output(out), Some(v("v1.31.4+k3s1")));
        assert_eq!(parse_version_output("go version go1.22.9\n"), None);
    }

    #[test]
    fn kubectl_runs_inside_k3s_with_the_installations_kubeconfig() {
        let p = paths(Path::new("/r"));
        let argv = kubectl_argv(&p, &["get", "nodes"]);
        assert_eq!(
            argv,
            [
                p.binary().display().to_string(),
                "kubectl".into(),
                "--kubeconfig".into(),
                p.kubeconfig().display().to_string(),
                "--request-timeout=10s".into(),
                "get".into(),
                "nodes".into()
            ]
        );
    }

    #[test]
    fn the_error_is_the_last_line_of_stderr_else_of_stdout() {
        let out = |rc, stdout: &str, stderr: &str| CommandOutput {
            stdout: stdout.into(),
            stderr: stderr.into(),
            rc,
        };
        assert_eq!(
            kubectl_error(&out(
                1,
                "ignored",
                "E0101 first\nThe connection was refused\n"
            )),
            "exit code 1: The connection was refused"
        );
        assert_eq!(
            kubectl_error(&out(1, "not ok\n\n", "  \n")),
            "exit code 1: not ok"
        );
        assert_eq!(kubectl_error(&out(7, "", "")), "exit code 7: no output");
    }

    #[tokio::test]
    async fn an_installed_version_is_asked_of_the_binary() {
        let dir = tempfile::tempdir().unwrap();
        let binary: PathBuf = dir.path().join("k3s");
        assert_eq!(installed_version(&binary).await.unwrap(), None);
        crate::host::write_script(
            &binary,
            "#!/bin/sh\necho 'k3s version v1.31.4+k3s1 (a1b2c3d4)'\n",
        );
        assert_eq!(
            installed_version(&binary).await.unwrap(),
            Some(v("v1.31.4+k3s1"))
        );
    }
}

//! The helm client: runs the helm binary (through [`super::process`]) against one cluster's
//! kubeconfig, and reads what it prints: `helm list`, `helm history` and `helm get values` as
//! JSON, `helm version --short`, and helm's error text. What a release should be, and how one
//! that is stuck or failed is recovered, is the `helm_release` step's; fetching helm itself is
//! `helm_install`'s.
//!
//! The JSON shapes are helm v3's, as the `fake-helm` fixture models them: `helm list -o json`
//! is an array of `{name, namespace, revision, updated, status, chart, app_version}` with
//! `revision` a *string* and `chart` `name-version`; `helm history -o json` is an array of
//! `{revision, updated, status, chart, app_version, description}` with `revision` a number;
//! `helm get values -o json` is the user-supplied values, `null` when there are none. Fields
//! bosun does not read are ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bosun_model::event::CommandOutput;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{fs as host_fs, process};

/// One entry of `helm list -o json`: the latest revision of a release.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Listed {
    /// The release's name.
    pub name: String,
    /// A string in helm's JSON ("3").
    pub revision: String,
    /// `deployed`, `failed`, `pending-upgrade`, `uninstalled`, ...
    pub status: String,
    /// `name-version`, e.g. `ingress-nginx-4.11.3`.
    pub chart: String,
}

/// One entry of `helm history -o json`: one revision of a release.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct HistoryEntry {
    /// The revision number (a number here, unlike in `helm list`).
    pub revision: u32,
    /// `deployed`, `superseded`, `failed`, `pending-install`, ...
    pub status: String,
    /// `name-version`.
    pub chart: String,
}

/// How a change waits: `--timeout` (a Go duration, `300s`) and, with `wait`, `--wait` for
/// the release's resources to be ready.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wait<'a> {
    /// `--timeout`.
    pub timeout: &'a str,
    /// `--wait`.
    pub wait: bool,
}

/// One `helm upgrade --install`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Upgrade<'a> {
    /// The release.
    pub name: &'a str,
    /// The chart reference: a name within `repo`, or `repo/name`, an OCI reference, a path.
    pub chart: &'a str,
    /// `--repo`.
    pub repo: Option<&'a str>,
    /// `--version` of the chart.
    pub version: &'a str,
    /// `--namespace`.
    pub namespace: &'a str,
    /// `--create-namespace`.
    pub create_namespace: bool,
    /// Values files, given in this order.
    pub values_files: &'a [PathBuf],
    /// Values given after the files (so they win), through a private temporary file.
    pub inline_values: &'a Map<String, Value>,
    /// Timeout and waiting.
    pub wait: Wait<'a>,
}

/// helm, pointed at one cluster.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Helm<'a> {
    /// The program: a path, or a name looked up on `PATH`.
    program: &'a str,
    /// Given to every command as `--kubeconfig`.
    kubeconfig: &'a str,
}

impl<'a> Helm<'a> {
    /// The helm at `program`, talking to the cluster of `kubeconfig`.
    pub(crate) fn new(program: &'a str, kubeconfig: &'a str) -> Self {
        Helm {
            program,
            kubeconfig,
        }
    }

    /// `helm ARGS --kubeconfig K`; errors only when helm cannot be started.
    pub(crate) async fn run(&self, args: &[&str]) -> anyhow::Result<CommandOutput> {
        let mut argv: Vec<String> = std::iter::once(self.program)
            .chain(args.iter().copied())
            .map(String::from)
            .collect();
        argv.extend(["--kubeconfig".into(), self.kubeconfig.to_string()]);
        process::run(&argv, None, &BTreeMap::new()).await.with_context(|| {
            format!(
                "running {}: is helm installed? (a helm_install step puts it in /usr/local/bin; or set `helm` to its path)",
                self.program
            )
        })
    }

    /// Like [`run`](Self::run), but a non-zero exit is an error naming `what` and helm's
    /// message; returns stdout.
    pub(crate) async fn run_ok(&self, what: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = self.run(args).await?;
        if out.rc != 0 {
            bail!("helm {what} failed: {}", helm_error(&out));
        }
        Ok(out.stdout)
    }

    /// `helm list --all --filter ^NAME$`: the releases named exactly `name` in `namespace`,
    /// whatever their status (pending, superseded and uninstalled ones too). The filter is a
    /// regular expression, so a namespace with more releases than `--max` cannot hide it.
    pub(crate) async fn list(&self, namespace: &str, name: &str) -> anyhow::Result<Vec<Listed>> {
        let filter = format!("^{}$", regex::escape(name));
        let text = self
            .run_ok(
                "list",
                &[
                    "list",
                    "--namespace",
                    namespace,
                    "--all",
                    "--filter",
                    &filter,
                    "--output",
                    "json",
                ],
            )
            .await?;
        parse_list(&text)
    }

    /// `helm get values`: the release's user-supplied values (empty when it has none).
    pub(crate) async fn values(
        &self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<Map<String, Value>> {
        let text = self
            .run_ok(
                "get values",
                &[
                    "get",
                    "values",
                    name,
                    "--namespace",
                    namespace,
                    "--output",
                    "json",
                ],
            )
            .await?;
        parse_values(&text)
    }

    /// `helm history`; empty when helm has no record of the release.
    pub(crate) async fn history(
        &self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<Vec<HistoryEntry>> {
        let out = self
            .run(&[
                "history",
                name,
                "--namespace",
                namespace,
                "--output",
                "json",
            ])
            .await?;
        if out.rc != 0 && out.stderr.contains("release: not found") {
            return Ok(Vec::new());
        }
        if out.rc != 0 {
            bail!("helm history failed: {}", helm_error(&out));
        }
        parse_history(&out.stdout)
    }

    /// `helm rollback NAME REVISION`.
    pub(crate) async fn rollback(
        &self,
        namespace: &str,
        name: &str,
        revision: u32,
        wait: Wait<'_>,
    ) -> anyhow::Result<()> {
        let rev = revision.to_string();
        let mut args = vec![
            "rollback",
            name,
            &rev,
            "--namespace",
            namespace,
            "--timeout",
            wait.timeout,
        ];
        if wait.wait {
            args.push("--wait");
        }
        self.run_ok("rollback", &args).await.map(drop)
    }

    /// `helm uninstall NAME`.
    pub(crate) async fn uninstall(
        &self,
        namespace: &str,
        name: &str,
        wait: Wait<'_>,
    ) -> anyhow::Result<()> {
        let mut args = vec![
            "uninstall",
            name,
            "--namespace",
            namespace,
            "--timeout",
            wait.timeout,
        ];
        if wait.wait {
            args.push("--wait");
        }
        self.run_ok("uninstall", &args).await.map(drop)
    }

    /// `helm upgrade --install` with `--reset-values`: the release gets exactly the values
    /// given, not the previous ones merged in. Returns helm's output whatever its exit code
    /// (the caller decides what a failure means).
    pub(crate) async fn upgrade_install(&self, u: &Upgrade<'_>) -> anyhow::Result<CommandOutput> {
        // The inline values go to a private temporary file (mode 0600: values may hold
        // secrets), removed when this returns.
        let inline = if u.inline_values.is_empty() {
            None
        } else {
            // JSON is YAML: helm reads it as a values file.
            let json =
                serde_json::to_vec_pretty(u.inline_values).context("writing the inline values")?;
            Some(
                host_fs::temp_file("bosun-helm-values-", ".json", &json)
                    .context("creating a temporary values file")?,
            )
        };
        let mut values: Vec<String> = u
            .values_files
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        values.extend(inline.iter().map(|f| f.path().display().to_string()));
        let args = upgrade_args(u, &values);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args).await
    }
}

/// The arguments of `helm upgrade --install` (without `--kubeconfig`), with the values files
/// `values` in order.
fn upgrade_args(u: &Upgrade<'_>, values: &[String]) -> Vec<String> {
    let mut args: Vec<&str> = vec!["upgrade", u.name, u.chart, "--install"];
    if let Some(url) = u.repo {
        args.extend(["--repo", url]);
    }
    args.extend(["--version", u.version, "--namespace", u.namespace]);
    if u.create_namespace {
        args.push("--create-namespace");
    }
    // Declarative: the release gets exactly these values, not the previous ones merged in.
    args.push("--reset-values");
    for p in values {
        args.extend(["--values", p]);
    }
    if u.wait.wait {
        args.push("--wait");
    }
    args.extend(["--timeout", u.wait.timeout]);
    args.into_iter().map(String::from).collect()
}

/// Reads `helm list -o json`.
pub(crate) fn parse_list(text: &str) -> anyhow::Result<Vec<Listed>> {
    serde_json::from_str(text)
        .with_context(|| format!("reading the output of `helm list -o json`: {text:?}"))
}

/// Reads `helm history -o json`.
pub(crate) fn parse_history(text: &str) -> anyhow::Result<Vec<HistoryEntry>> {
    serde_json::from_str(text)
        .with_context(|| format!("reading the output of `helm history -o json`: {text:?}"))
}

/// Reads `helm get values -o json`: a map of values; `null` (no user-supplied values) is an
/// empty map.
pub(crate) fn parse_values(text: &str) -> anyhow::Result<Map<String, Value>> {
    match serde_json::from_str(text)
        .with_context(|| format!("reading the output of `helm get values -o json`: {text:?}"))?
    {
        // helm prints `null` for a release without user-supplied values.
        Value::Null => Ok(Map::new()),
        Value::Object(m) => Ok(m),
        other => bail!("`helm get values -o json` printed {other}, not a map of values"),
    }
}

/// helm's own message: the last non-empty line of stderr (`Error: UPGRADE FAILED: ...`),
/// with the exit code.
pub(crate) fn helm_error(out: &CommandOutput) -> String {
    let line = out
        .stderr
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("(no message)");
    format!("exit code {}: {line}", out.rc)
}

/// The version in `helm version --short` output: `v3.16.2` of `v3.16.2+g13654a5`; `None` when
/// it does not look like one.
pub(crate) fn parse_short_version(text: &str) -> Option<String> {
    let version = text.trim().split('+').next().unwrap_or_default().trim();
    version.starts_with('v').then(|| version.to_string())
}

/// What `helm version --short` of `binary` reports (`v3.16.2` of `v3.16.2+g13654a5`); `None`
/// when there is no file there, a description of the problem when it does not answer.
pub(crate) async fn installed_version(
    binary: &Path,
) -> anyhow::Result<Option<Result<String, String>>> {
    if !binary.exists() {
        return Ok(None);
    }
    let argv = [
        binary.display().to_string(),
        "version".into(),
        "--short".into(),
    ];
    let out = match process::run(&argv, None, &BTreeMap::new()).await {
        Ok(out) => out,
        Err(e) => return Ok(Some(Err(format!("{e:#}")))),
    };
    match parse_short_version(&out.stdout) {
        Some(version) if out.rc == 0 => Ok(Some(Ok(version))),
        _ => Ok(Some(Err(format!(
            "`{} version --short` answered exit code {} with {:?}",
            binary.display(),
            out.rc,
            out.stdout.trim()
        )))),
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn output(rc: i32, stdout: &str, stderr: &str) -> CommandOutput {
        CommandOutput {
            stdout: stdout.into(),
            stderr: stderr.into(),
            rc,
        }
    }

    #[test]
    fn list_output_is_read_with_revision_as_a_string() {
        // As `helm list -o json` prints it (and fake-helm, which models it).
        let text = r#"[{"name":"web","namespace":"web","revision":"3","updated":"2025-01-02 03:04:05.123456789 +0000 UTC","status":"pending-upgrade","chart":"nginx-1.2.3","app_version":"1.2.3"}]"#;
        let listed = parse_list(text).unwrap();
        assert_eq!(listed.len(), 1);
        let web = &listed[0];
        assert_eq!(
            (
                web.name.as_str(),
                web.revision.as_str(),
                web.status.as_str(),
                web.chart.as_str()
            ),
            ("web", "3", "pending-upgrade", "nginx-1.2.3")
        );
        assert!(parse_list("[]").unwrap().is_empty());
        let e = parse_list("Error: Kubernetes cluster unreachable").unwrap_err();
        assert!(
            format!("{e:#}").contains("reading the output of `helm list -o json`"),
            "{e:#}"
        );
        // A number where helm prints a string is not helm's shape.
        assert!(
            parse_list(r#"[{"name":"web","revision":3,"status":"deployed","chart":"c-1"}]"#)
                .is_err()
        );
    }

    #[test]
    fn history_output_is_read_with_revision_as_a_number() {
        let text = r#"[
            {"revision":1,"updated":"2025-01-02T03:04:05.123456789Z","status":"superseded","chart":"nginx-1.2.3","app_version":"1.2.3","description":"Install complete"},
            {"revision":2,"updated":"2025-01-03T03:04:05.123456789Z","status":"deployed","chart":"nginx-1.2.4","app_version":"1.2.4","description":"Upgrade complete"}]"#;
        assert_eq!(
            parse_history(text).unwrap(),
            [
                HistoryEntry {
                    revision: 1,
                    status: "superseded".into(),
                    chart: "nginx-1.2.3".into()
                },
                HistoryEntry {
                    revision: 2,
                    status: "deployed".into(),
                    chart: "nginx-1.2.4".into()
                }
            ]
        );
        assert!(parse_history("").is_err());
    }

    #[test]
    fn values_output_null_is_no_values() {
        assert!(parse_values("null").unwrap().is_empty());
        let values = parse_values(r#"{"replicas":2,"image":{"tag":"1.1"}}"#).unwrap();
        assert_eq!(values["image"]["tag"], "1.1");
        let e = parse_values("[1]").unwrap_err();
        assert!(e.to_string().contains("not a map of values"), "{e}");
    }

    #[test]
    fn the_error_is_the_last_line_helm_printed() {
        let out = output(
            1,
            "",
            "history.go:56: [debug] ...\nError: UPGRADE FAILED: context deadline exceeded\n\n",
        );
        assert_eq!(
            helm_error(&out),
            "exit code 1: Error: UPGRADE FAILED: context deadline exceeded"
        );
        assert_eq!(
            helm_error(&output(137, "out", "")),
            "exit code 137: (no message)"
        );
    }

    #[test]
    fn short_versions_drop_the_commit() {
        assert_eq!(
            parse_short_version("v3.16.2+g13654a5\n").as_deref(),
            Some("v3.16.2")
        );
        assert_eq!(parse_short_version("v3.16.2").as_deref(), Some("v3.16.2"));
        assert_eq!(parse_short_version("Error: unknown command"), None);
        assert_eq!(parse_short_version(""), None);
    }

    #[test]
    fn upgrade_arguments_are_in_helms_order() {
        let files = [PathBuf::from("/p/values.yaml")];
        let inline = Map::new();
        let u = Upgrade {
            name: "web",
            chart: "nginx",
            repo: Some("https://charts.example"),
            version: "1.2.3",
            namespace: "web",
            create_namespace: true,
            values_files: &files,
            inline_values: &inline,
            wait: Wait {
                timeout: "300s",
                wait: true,
            },
        };
        let values = ["/p/values.yaml".to_string(), "/tmp/inline.json".to_string()];
        assert_eq!(
            upgrade_args(&u, &values).join(" "),
            "upgrade web nginx --install --repo https://charts.example --version 1.2.3 \
             --namespace web --create-namespace --reset-values --values /p/values.yaml \
             --values /tmp/inline.json --wait --timeout 300s"
        );
        let plain = Upgrade {
            repo: None,
            create_namespace: false,
            wait: Wait {
                timeout: "5m0s",
                wait: false,
            },
            ..u
        };
        assert_eq!(
            upgrade_args(&plain, &[]).join(" "),
            "upgrade web nginx --install --version 1.2.3 --namespace web --reset-values \
             --timeout 5m0s"
        );
    }

    /// A stand-in helm: a shell script that records its arguments and answers from `body`.
    fn script(dir: &Path, body: &str) -> String {
        let path = dir.join("helm");
        crate::host::write_script(
            &path,
            &format!("#!/bin/sh\necho \"$@\" >> {}/args\n{body}\n", dir.display()),
        );
        path.display().to_string()
    }

    #[tokio::test]
    async fn commands_carry_the_kubeconfig_and_a_missing_release_has_no_history() {
        let dir = tempfile::tempdir().unwrap();
        let program = script(
            dir.path(),
            r#"case "$1" in
  history) echo 'Error: release: not found' >&2; exit 1 ;;
  list) echo '[]' ;;
  *) echo 'Error: boom' >&2; exit 1 ;;
esac"#,
        );
        let helm = Helm::new(&program, "/etc/k.yaml");
        assert!(helm.history("web", "web").await.unwrap().is_empty());
        assert!(helm.list("web", "w.b").await.unwrap().is_empty());
        let e = helm
            .rollback(
                "web",
                "web",
                2,
                Wait {
                    timeout: "300s",
                    wait: false,
                },
            )
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "helm rollback failed: exit code 1: Error: boom"
        );
        let args = std::fs::read_to_string(dir.path().join("args")).unwrap();
        assert_eq!(
            args.lines().collect::<Vec<_>>(),
            [
                "history web --namespace web --output json --kubeconfig /etc/k.yaml",
                r"list --namespace web --all --filter ^w\.b$ --output json --kubeconfig /etc/k.yaml",
                "rollback web 2 --namespace web --timeout 300s --kubeconfig /etc/k.yaml",
            ]
        );
    }

    #[tokio::test]
    async fn inline_values_reach_helm_in_a_private_file_that_is_gone_afterwards() {
        let dir = tempfile::tempdir().unwrap();
        // Prints the last --values file's path, its mode and content.
        let program = script(
            dir.path(),
            r#"f=""; while [ $# -gt 0 ]; do [ "$1" = --values ] && f="$2"; shift; done
echo "$f"; stat -c %a "$f"; cat "$f""#,
        );
        let helm = Helm::new(&program, "/etc/k.yaml");
        let inline: Map<String, Value> = serde_json::from_str(r#"{"password": "s3cret"}"#).unwrap();
        let out = helm
            .upgrade_install(&Upgrade {
                name: "web",
                chart: "nginx",
                repo: None,
                version: "1.2.3",
                namespace: "web",
                create_namespace: false,
                values_files: &[],
                inline_values: &inline,
                wait: Wait {
                    timeout: "300s",
                    wait: false,
                },
            })
            .await
            .unwrap();
        assert_eq!(out.rc, 0, "{}", out.stderr);
        let mut lines = out.stdout.lines();
        let path = lines.next().unwrap();
        assert!(path.ends_with(".json"), "{path}");
        assert_eq!(lines.next(), Some("600"));
        let content: Value = serde_json::from_str(&lines.collect::<String>()).unwrap();
        assert_eq!(content["password"], "s3cret");
        assert!(!Path::new(path).exists(), "the values file is removed");
    }

    #[tokio::test]
    async fn the_installed_version_is_none_without_a_binary_and_a_problem_when_it_misbehaves() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            installed_version(&dir.path().join("none")).await.unwrap(),
            None
        );
        let good = script(dir.path(), "echo v3.16.2+g13654a5");
        assert_eq!(
            installed_version(Path::new(&good)).await.unwrap(),
            Some(Ok("v3.16.2".into()))
        );
        let bad = script(dir.path(), "echo nope; exit 2");
        let problem = installed_version(Path::new(&bad)).await.unwrap().unwrap();
        assert!(
            problem
                .unwrap_err()
                .contains("answered exit code 2 with \"nope\""),
            "the problem names the exit code and output"
        );
    }
}

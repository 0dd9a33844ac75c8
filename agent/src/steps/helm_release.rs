//! `helm_release`: a Helm release at a pinned chart version with given values.
//!
//! ```toml
//! [[step]]
//! name = "ingress controller"
//! helm_release = { name = "ingress", chart = "ingress-nginx/ingress-nginx", repo_url = "https://kubernetes.github.io/ingress-nginx", version = "4.11.3", namespace = "ingress", create_namespace = true, values_files = ["values/ingress.yaml"], values = { controller = { replicaCount = 1 } } }
//! ```
//!
//! Check reads `helm list --all -o json` and `helm get values -o json`: the release is
//! unchanged when its latest revision is `deployed`, at the wanted chart version, with
//! user-supplied values equal to the wanted ones (the `values_files` deep-merged in order, then
//! the inline `values`, as helm merges `-f` files). Otherwise it runs `helm upgrade --install
//! --reset-values` (so values removed from the playbook are removed from the release too) and
//! shows the change of values as a unified diff of their YAML.
//!
//! Failure: when the upgrade fails, the release is rolled back to its last deployed revision
//! and the step fails saying "rolled back to revision N"; a failed first install is
//! uninstalled (as `helm --atomic` would; bosun does the rollback itself so it can say what it
//! did). A release stuck in `pending-install`, `pending-upgrade` or `pending-rollback` (a helm
//! that was killed mid-operation leaves it so, and helm then refuses every operation on it) is
//! recovered first: rolled back to its last deployed revision, or uninstalled when it has none.
//!
//! helm talks to the cluster through `kubeconfig` (default: k3s's). Under `--check`, a cluster
//! that is not there yet (no kubeconfig: k3s is installed by an earlier step of the same run)
//! is reported as "would install" rather than as an error.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use similar::TextDiff;

use super::{ActionArgs, Check, CommandOutput, Outcome, StepContext, StepKind};
use crate::host::process;
use crate::jinja::is_templated;

/// k3s writes its admin kubeconfig here.
pub const DEFAULT_KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";

/// Arguments of `helm_release`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HelmReleaseArgs {
    /// Release name (lower-case letters, digits and `-`, at most 53 characters).
    pub name: String,
    /// The chart: `repo/name` (a repository added with `helm repo add`, or any prefix when
    /// `repo_url` is given), `oci://registry/path/name`, or a local chart directory.
    pub chart: String,
    /// URL of the chart repository; the chart is fetched from it by name (`helm --repo`),
    /// so no `helm repo add` is needed. Not for `oci://` charts. Empty means none (so a
    /// playbook can take it from a variable that may be left empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_url: Option<String>,
    /// The chart version, pinned (e.g. "4.11.3").
    pub version: String,
    /// Namespace of the release.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Create the namespace when it does not exist.
    #[serde(default)]
    pub create_namespace: bool,
    /// Values files (YAML), merged in order; relative paths are from the playbook's directory.
    /// Empty entries are skipped (so a playbook can take one from a variable left empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values_files: Vec<String>,
    /// Values given inline, merged over `values_files` (Jinja is rendered in its strings).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schemars(with = "BTreeMap<String, Value>")]
    pub values: Map<String, Value>,
    /// Wait until the release's resources are ready before reporting success (`helm --wait`).
    #[serde(default = "yes")]
    pub wait: bool,
    /// How long one helm operation (upgrade, rollback) may take, e.g. "5m" or "90s".
    #[serde(default = "default_timeout")]
    pub timeout: String,
    /// The kubeconfig helm reaches the cluster with.
    #[serde(default = "default_kubeconfig")]
    pub kubeconfig: String,
    /// The helm program: a path, or a name looked up in `PATH`.
    #[serde(default = "default_helm")]
    pub helm: String,
}

fn default_namespace() -> String {
    "default".into()
}

fn yes() -> bool {
    true
}

fn default_timeout() -> String {
    "5m".into()
}

fn default_kubeconfig() -> String {
    DEFAULT_KUBECONFIG.into()
}

fn default_helm() -> String {
    "helm".into()
}

impl ActionArgs for HelmReleaseArgs {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !is_templated(&self.name) && !is_dns_label(&self.name, 53) {
            problems.push(format!(
                "name {:?} is not a release name: lower-case letters, digits and '-', starting and ending with a letter or digit, at most 53 characters",
                self.name
            ));
        }
        if !is_templated(&self.namespace) && !is_dns_label(&self.namespace, 63) {
            problems.push(format!(
                "namespace {:?} is not a Kubernetes namespace name: lower-case letters, digits and '-', at most 63 characters",
                self.namespace
            ));
        }
        if self.chart.trim().is_empty() {
            problems
                .push("chart is empty: give `repo/name`, `oci://...` or a chart directory".into());
        }
        if self.version.trim().is_empty() {
            problems.push("version is empty: pin the chart version, e.g. \"4.11.3\"".into());
        }
        if self.repo().is_some() && self.chart.starts_with("oci://") {
            problems.push("`repo_url` does not apply to an oci:// chart: remove it".into());
        }
        if !is_templated(&self.timeout)
            && let Err(e) = humantime::parse_duration(&self.timeout)
        {
            problems.push(format!(
                "timeout {:?} is not a duration such as \"5m\" or \"90s\": {e}",
                self.timeout
            ));
        }
        problems
    }
}

fn is_dns_label(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// One entry of `helm list -o json`.
#[derive(Debug, Clone, Deserialize)]
struct Listed {
    name: String,
    /// A string in helm's JSON ("3").
    revision: String,
    status: String,
    /// `name-version`, e.g. `ingress-nginx-4.11.3`.
    chart: String,
}

/// One entry of `helm history -o json`.
#[derive(Debug, Clone, Deserialize)]
struct HistoryEntry {
    revision: u32,
    status: String,
    chart: String,
}

/// What `check` found to do.
#[derive(Debug)]
pub struct ReleaseChange {
    /// A stuck release to get unstuck before anything else.
    recovery: Option<Recovery>,
}

/// How a release stuck in a pending state is recovered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Recovery {
    /// Roll back to this revision, the last one that was deployed.
    Rollback { stuck: String, revision: u32 },
    /// Nothing was ever deployed: uninstall.
    Uninstall { stuck: String },
}

/// The release as helm reports it.
struct Observed {
    /// The latest revision; `None` when there is no release (or only an uninstalled one).
    latest: Option<Listed>,
    /// Its user-supplied values.
    values: Map<String, Value>,
}

impl HelmReleaseArgs {
    /// `helm ARGS --kubeconfig K`; errors only when helm cannot be started.
    async fn helm(&self, args: &[&str]) -> anyhow::Result<CommandOutput> {
        let mut argv: Vec<String> = std::iter::once(self.helm.as_str())
            .chain(args.iter().copied())
            .map(String::from)
            .collect();
        argv.extend(["--kubeconfig".into(), self.kubeconfig.clone()]);
        process::run(&argv, None, &BTreeMap::new()).await.with_context(|| {
            format!(
                "running {}: is helm installed? (a helm_install step puts it in /usr/local/bin; or set `helm` to its path)",
                self.helm
            )
        })
    }

    /// Like [`Self::helm`], but a non-zero exit is an error naming `what` and helm's message.
    async fn helm_ok(&self, what: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = self.helm(args).await?;
        if out.rc != 0 {
            bail!("helm {what} failed: {}", helm_error(&out));
        }
        Ok(out.stdout)
    }

    fn timeout_arg(&self) -> anyhow::Result<String> {
        let d: Duration = humantime::parse_duration(&self.timeout)
            .map_err(|e| anyhow!("timeout {:?}: {e}", self.timeout))?;
        // helm takes Go durations; whole seconds are enough.
        Ok(format!("{}s", d.as_secs().max(1)))
    }

    /// The chart's name as it appears in `helm list` (`name` of `repo/name` or `oci://r/p/name`).
    fn chart_name(&self) -> &str {
        self.chart
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(&self.chart)
    }

    /// `repo_url`, unless empty.
    fn repo(&self) -> Option<&str> {
        self.repo_url.as_deref().filter(|u| !u.trim().is_empty())
    }

    fn wanted_chart(&self) -> String {
        format!("{}-{}", self.chart_name(), self.version)
    }

    /// The values files (resolved) and the merged values helm will be given.
    fn wanted_values(
        &self,
        ctx: &StepContext<'_>,
    ) -> anyhow::Result<(Vec<PathBuf>, Map<String, Value>)> {
        let mut files = Vec::new();
        let mut merged = Map::new();
        for f in self.values_files.iter().filter(|f| !f.trim().is_empty()) {
            let path = ctx.resolve(Path::new(f));
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading values file {}", path.display()))?;
            let value: Value = serde_norway::from_str(&text)
                .with_context(|| format!("values file {} is not valid YAML", path.display()))?;
            match value {
                Value::Null => {}
                Value::Object(m) => merge_values(&mut merged, m),
                _ => bail!(
                    "values file {} must hold a map of values at its top",
                    path.display()
                ),
            }
            files.push(path);
        }
        merge_values(&mut merged, self.values.clone());
        Ok((files, merged))
    }

    async fn observe(&self) -> anyhow::Result<Observed> {
        // `--all`: pending and superseded releases too; `--filter`: this one only (a regular
        // expression, so a list of more than `--max` releases cannot hide it).
        let filter = format!("^{}$", regex::escape(&self.name));
        let list = self
            .helm_ok(
                "list",
                &[
                    "list",
                    "--namespace",
                    &self.namespace,
                    "--all",
                    "--filter",
                    &filter,
                    "--output",
                    "json",
                ],
            )
            .await?;
        let listed: Vec<Listed> = serde_json::from_str(&list)
            .with_context(|| format!("reading the output of `helm list -o json`: {list:?}"))?;
        let Some(latest) = listed
            .into_iter()
            .find(|l| l.name == self.name && l.status != "uninstalled")
        else {
            return Ok(Observed {
                latest: None,
                values: Map::new(),
            });
        };
        let text = self
            .helm_ok(
                "get values",
                &[
                    "get",
                    "values",
                    &self.name,
                    "--namespace",
                    &self.namespace,
                    "--output",
                    "json",
                ],
            )
            .await?;
        let values = match serde_json::from_str(&text)
            .with_context(|| format!("reading the output of `helm get values -o json`: {text:?}"))?
        {
            // helm prints `null` for a release without user-supplied values.
            Value::Null => Map::new(),
            Value::Object(m) => m,
            other => bail!("`helm get values -o json` printed {other}, not a map of values"),
        };
        Ok(Observed {
            latest: Some(latest),
            values,
        })
    }

    /// `helm history -o json`; empty when helm has no record of the release.
    async fn history(&self) -> anyhow::Result<Vec<HistoryEntry>> {
        let out = self
            .helm(&[
                "history",
                &self.name,
                "--namespace",
                &self.namespace,
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
        serde_json::from_str(&out.stdout).with_context(|| {
            format!(
                "reading the output of `helm history -o json`: {:?}",
                out.stdout
            )
        })
    }

    async fn rollback(&self, revision: u32) -> anyhow::Result<()> {
        let rev = revision.to_string();
        let timeout = self.timeout_arg()?;
        let mut args = vec![
            "rollback",
            &self.name,
            &rev,
            "--namespace",
            &self.namespace,
            "--timeout",
            &timeout,
        ];
        if self.wait {
            args.push("--wait");
        }
        self.helm_ok("rollback", &args).await.map(drop)
    }

    async fn uninstall(&self) -> anyhow::Result<()> {
        let timeout = self.timeout_arg()?;
        let mut args = vec![
            "uninstall",
            &self.name,
            "--namespace",
            &self.namespace,
            "--timeout",
            &timeout,
        ];
        if self.wait {
            args.push("--wait");
        }
        self.helm_ok("uninstall", &args).await.map(drop)
    }

    /// `helm upgrade --install` with the wanted chart and values.
    async fn upgrade(&self, files: &[PathBuf]) -> anyhow::Result<CommandOutput> {
        // The inline values go to a private temporary file (mode 0600: values may hold
        // secrets), given last so they win, as the doc says.
        let inline = if self.values.is_empty() {
            None
        } else {
            let mut f = tempfile::Builder::new()
                .prefix("bosun-helm-values-")
                .suffix(".json")
                .tempfile()
                .context("creating a temporary values file")?;
            // JSON is YAML: helm reads it as a values file.
            serde_json::to_writer_pretty(f.as_file_mut(), &self.values)
                .context("writing the inline values")?;
            f.as_file_mut()
                .flush()
                .context("writing the inline values")?;
            Some(f)
        };
        let timeout = self.timeout_arg()?;
        let (chart, repo) = match self.repo() {
            Some(url) => (self.chart_name(), Some(url)),
            None => (self.chart.as_str(), None),
        };
        let mut args: Vec<&str> = vec!["upgrade", &self.name, chart, "--install"];
        if let Some(url) = repo {
            args.extend(["--repo", url]);
        }
        args.extend(["--version", &self.version, "--namespace", &self.namespace]);
        if self.create_namespace {
            args.push("--create-namespace");
        }
        // Declarative: the release gets exactly these values, not the previous ones merged in.
        args.push("--reset-values");
        let paths: Vec<String> = files
            .iter()
            .map(|p| p.display().to_string())
            .chain(inline.iter().map(|f| f.path().display().to_string()))
            .collect();
        for p in &paths {
            args.extend(["--values", p]);
        }
        if self.wait {
            args.push("--wait");
        }
        args.extend(["--timeout", &timeout]);
        self.helm(&args).await
    }

    /// After a failed upgrade: back to the last deployed revision, or a failed first install
    /// uninstalled. Returns the error the step fails with.
    async fn after_failure(&self, out: &CommandOutput, installing: bool) -> anyhow::Error {
        let op = if installing { "install" } else { "upgrade" };
        let cause = helm_error(out);
        let history = match self.history().await {
            Ok(h) => h,
            Err(e) => {
                return anyhow!(
                    "helm {op} of {} failed: {cause}; then reading its history failed too ({e:#}), so nothing was rolled back: look at `helm history {} -n {}`",
                    self.name,
                    self.name,
                    self.namespace
                );
            }
        };
        if history.is_empty() {
            return anyhow!(
                "helm {op} of {} failed: {cause}; helm recorded no release, so there is nothing to roll back: fix the cause and run again",
                self.name
            );
        }
        // A pending latest revision belongs to a helm still at work on the release (ours failed
        // and would have left `failed`) or to one that was killed: rolling back now could break
        // the former, and the next run recovers the latter.
        if let Some(latest) = history.iter().max_by_key(|h| h.revision)
            && is_pending(&latest.status)
        {
            return anyhow!(
                "helm {op} of {} failed: {cause}; revision {} is {} (a helm still at work on it, or one that was killed), so nothing was rolled back: run again, and a release still pending then is recovered first",
                self.name,
                latest.revision,
                latest.status
            );
        }
        match last_deployed(&history, None) {
            Some(good) => match self.rollback(good.revision).await {
                Ok(()) => anyhow!(
                    "helm {op} of {} failed: {cause}; rolled back to revision {} ({}): fix the chart or values and run again",
                    self.name,
                    good.revision,
                    good.chart
                ),
                Err(e) => anyhow!(
                    "helm {op} of {} failed: {cause}; rolling back to revision {} failed too ({e:#}): recover by hand with `helm rollback {} {} -n {}`",
                    self.name,
                    good.revision,
                    self.name,
                    good.revision,
                    self.namespace
                ),
            },
            None => match self.uninstall().await {
                Ok(()) => anyhow!(
                    "helm {op} of {} failed: {cause}; it had no deployed revision to roll back to, so the failed release was uninstalled: fix the chart or values and run again",
                    self.name
                ),
                Err(e) => anyhow!(
                    "helm {op} of {} failed: {cause}; uninstalling the failed release failed too ({e:#}): remove it by hand with `helm uninstall {} -n {}`",
                    self.name,
                    self.name,
                    self.namespace
                ),
            },
        }
    }

    /// Compares what is deployed with what is wanted (see [`plan`]).
    async fn compare(&self, ctx: &StepContext<'_>) -> anyhow::Result<Check<ReleaseChange>> {
        let (_, wanted) = self.wanted_values(ctx)?;
        let observed = self.observe().await?;
        let Some(latest) = &observed.latest else {
            let diff = values_diff(&self.name, None, &wanted);
            return Ok(Check::change(
                ReleaseChange { recovery: None },
                format!(
                    "would install {} ({}) in namespace {}",
                    self.name,
                    self.wanted_chart(),
                    self.namespace
                ),
            )
            .with_diff(diff));
        };
        if is_pending(&latest.status) {
            let history = self.history().await?;
            let revision: u32 = latest.revision.parse().unwrap_or(0);
            let recovery = match last_deployed(&history, Some(revision)) {
                Some(good) => Recovery::Rollback {
                    stuck: latest.status.clone(),
                    revision: good.revision,
                },
                None => Recovery::Uninstall {
                    stuck: latest.status.clone(),
                },
            };
            let what = match &recovery {
                Recovery::Rollback { revision, .. } => format!("roll back to revision {revision}"),
                Recovery::Uninstall { .. } => "uninstall it (no revision was ever deployed)".into(),
            };
            return Ok(Check::change(
                ReleaseChange {
                    recovery: Some(recovery),
                },
                format!(
                    "release {} is stuck in {} (revision {}): would {what}, then install the wanted chart and values",
                    self.name, latest.status, latest.revision
                ),
            ));
        }
        let mut reasons = Vec::new();
        if !chart_matches(&latest.chart, self.chart_name(), &self.version) {
            reasons.push(format!("chart {} → {}", latest.chart, self.wanted_chart()));
        }
        let values_differ = !values_equal(
            &Value::Object(observed.values.clone()),
            &Value::Object(wanted.clone()),
        );
        if values_differ {
            reasons.push("values differ".into());
        }
        if latest.status != "deployed" {
            reasons.push(format!("revision {} is {}", latest.revision, latest.status));
        }
        if reasons.is_empty() {
            return Ok(Check::unchanged(Some(format!(
                "{} is deployed: {} with the wanted values (revision {})",
                self.name, latest.chart, latest.revision
            ))));
        }
        let diff = values_differ.then(|| {
            let label = format!("revision {}", latest.revision);
            values_diff(&self.name, Some((&label, &observed.values)), &wanted)
        });
        Ok(Check::change(
            ReleaseChange { recovery: None },
            format!("would upgrade {}: {}", self.name, reasons.join("; ")),
        )
        .with_diff(diff.flatten()))
    }
}

impl StepKind for HelmReleaseArgs {
    type Change = ReleaseChange;

    async fn check(&self, ctx: &StepContext<'_>) -> anyhow::Result<Check<ReleaseChange>> {
        if !Path::new(&self.kubeconfig).exists() {
            if ctx.check {
                return Ok(Check::change(
                    ReleaseChange { recovery: None },
                    format!(
                        "would install {} ({}) once the cluster is up: {} does not exist yet",
                        self.name,
                        self.wanted_chart(),
                        self.kubeconfig
                    ),
                ));
            }
            bail!(
                "kubeconfig {} does not exist: is k3s installed and running? Point `kubeconfig` at the cluster's kubeconfig",
                self.kubeconfig
            );
        }
        self.compare(ctx).await
    }

    async fn apply(&self, ctx: &StepContext<'_>, change: ReleaseChange) -> anyhow::Result<Outcome> {
        let mut done = Vec::new();
        let mut diff = None;
        if let Some(recovery) = change.recovery {
            match &recovery {
                Recovery::Rollback { stuck, revision } => {
                    self.rollback(*revision).await.with_context(|| {
                        format!(
                            "recovering {} from {stuck}: rolling back to revision {revision}",
                            self.name
                        )
                    })?;
                    done.push(format!(
                        "recovered {} from {stuck}: rolled back to revision {revision}",
                        self.name
                    ));
                }
                Recovery::Uninstall { stuck } => {
                    self.uninstall().await.with_context(|| {
                        format!("recovering {} from {stuck}: uninstalling it", self.name)
                    })?;
                    done.push(format!(
                        "recovered {} from {stuck}: uninstalled it (no revision was ever deployed)",
                        self.name
                    ));
                }
            }
            // The rollback may have brought back exactly what is wanted.
            let again = self.compare(ctx).await?;
            match again.change {
                None => {
                    done.push("chart and values are as wanted".into());
                    return Ok(Outcome {
                        changed: true,
                        message: Some(done.join("; ")),
                        ..Outcome::default()
                    });
                }
                Some(ReleaseChange { recovery: Some(_) }) => bail!(
                    "{}; the release is still pending after that: look at `helm history {} -n {}`",
                    done.join("; "),
                    self.name,
                    self.namespace
                ),
                Some(ReleaseChange { recovery: None }) => diff = again.diff,
            }
        }
        let (files, _) = self.wanted_values(ctx)?;
        let before = self.observe().await?.latest;
        let out = self.upgrade(&files).await?;
        if out.rc != 0 {
            let err = self.after_failure(&out, before.is_none()).await;
            return Err(match done.is_empty() {
                true => err,
                false => anyhow!("{}; then {err:#}", done.join("; ")),
            });
        }
        let after = self.observe().await?;
        let revision = after
            .latest
            .as_ref()
            .map_or("?", |l| l.revision.as_str())
            .to_string();
        done.push(match &before {
            None => format!(
                "installed {} ({}) in namespace {} as revision {revision}",
                self.name,
                self.wanted_chart(),
                self.namespace
            ),
            Some(b) if b.chart != self.wanted_chart() => format!(
                "upgraded {} to revision {revision} ({} → {})",
                self.name,
                b.chart,
                self.wanted_chart()
            ),
            Some(_) => format!(
                "upgraded {} to revision {revision} ({})",
                self.name,
                self.wanted_chart()
            ),
        });
        Ok(Outcome {
            changed: true,
            diff,
            message: Some(done.join("; ")),
            output: Some(out),
        })
    }
}

/// helm's own message: the last non-empty line of stderr (`Error: UPGRADE FAILED: ...`).
fn helm_error(out: &CommandOutput) -> String {
    let line = out
        .stderr
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("(no message)");
    format!("exit code {}: {line}", out.rc)
}

fn is_pending(status: &str) -> bool {
    matches!(
        status,
        "pending-install" | "pending-upgrade" | "pending-rollback"
    )
}

/// The revision to go back to: the newest `deployed` one (a failed or pending upgrade leaves
/// its predecessor `deployed`), else the newest `superseded` one (it ran once), never `skip`
/// (the stuck revision itself).
fn last_deployed(history: &[HistoryEntry], skip: Option<u32>) -> Option<&HistoryEntry> {
    let newest = |status: &str| {
        history
            .iter()
            .filter(|h| h.status == status && Some(h.revision) != skip)
            .max_by_key(|h| h.revision)
    };
    newest("deployed").or_else(|| newest("superseded"))
}

/// `helm list`'s `chart` (`name-version`) is the wanted chart at the wanted version. A leading
/// `v` on either version is ignored (`v1.2.3` and `1.2.3` name the same chart release).
fn chart_matches(listed: &str, name: &str, version: &str) -> bool {
    let want = version.trim_start_matches('v');
    [format!("{name}-{want}"), format!("{name}-v{want}")]
        .iter()
        .any(|c| c == listed)
}

/// helm's `mergeMaps`: `over` on top of `base`; maps are merged key by key, anything else
/// (lists included) is replaced.
pub fn merge_values(base: &mut Map<String, Value>, over: Map<String, Value>) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Object(old)), Value::Object(new)) => merge_values(old, new),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Equality of values as helm stores them: numbers compare by value (helm turns every number
/// into a float64, so `1` and `1.0` are the same), and a boolean equals the YAML 1.1 spellings
/// of it (`yes`, `on`, ...) because helm's YAML parser reads an unquoted `yes` as `true` while
/// ours (YAML 1.2) reads a string; without this a playbook with `enabled: yes` would upgrade on
/// every run.
fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Bool(x), Value::String(s)) | (Value::String(s), Value::Bool(x)) => {
            yaml11_bool(s) == Some(*x)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| values_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
        }
        _ => a == b,
    }
}

fn yaml11_bool(s: &str) -> Option<bool> {
    match s {
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE" => {
            Some(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False" | "FALSE" => {
            Some(false)
        }
        _ => None,
    }
}

/// Values as YAML with keys sorted, for a diff that shows only what changed.
fn values_yaml(values: &Map<String, Value>) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&m[k])))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    if values.is_empty() {
        return String::new();
    }
    serde_norway::to_string(&sorted(&Value::Object(values.clone())))
        .unwrap_or_else(|e| format!("(values not printable as YAML: {e})\n"))
}

/// A unified diff of the release's user-supplied values: `before` is (label, values) of the
/// deployed revision, `None` for a new release. `None` when there is nothing to show.
fn values_diff(
    name: &str,
    before: Option<(&str, &Map<String, Value>)>,
    wanted: &Map<String, Value>,
) -> Option<String> {
    let old = before.map(|(_, v)| values_yaml(v)).unwrap_or_default();
    let new = values_yaml(wanted);
    if old == new {
        return None;
    }
    let old_header = match before {
        Some((label, _)) => format!("{name} values ({label})"),
        None => "/dev/null".into(),
    };
    Some(
        TextDiff::from_lines(&old, &new)
            .unified_diff()
            .context_radius(3)
            .header(&old_header, &format!("{name} values (wanted)"))
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not a map"),
        }
    }

    #[test]
    fn values_merge_like_helm_maps_deep_lists_replaced() {
        let mut base = map(json!({"a": {"b": 1, "c": [1, 2]}, "keep": true}));
        merge_values(
            &mut base,
            map(json!({"a": {"c": [3], "d": 4}, "new": null})),
        );
        assert_eq!(
            Value::Object(base),
            json!({"a": {"b": 1, "c": [3], "d": 4}, "keep": true, "new": null})
        );
    }

    #[test]
    fn values_compare_numbers_by_value_and_yaml11_booleans() {
        assert!(values_equal(&json!({"n": 1}), &json!({"n": 1.0})));
        assert!(!values_equal(&json!({"n": 1}), &json!({"n": 2})));
        assert!(values_equal(&json!({"on": true}), &json!({"on": "yes"})));
        assert!(!values_equal(&json!({"on": false}), &json!({"on": "yes"})));
        assert!(!values_equal(&json!({"s": "maybe"}), &json!({"s": true})));
        assert!(!values_equal(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!values_equal(&json!([1, 2]), &json!([2, 1])));
    }

    #[test]
    fn chart_version_is_matched_on_the_whole_name() {
        assert!(chart_matches("nginx-1.2.3", "nginx", "1.2.3"));
        assert!(chart_matches("nginx-1.2.3", "nginx", "v1.2.3"));
        assert!(!chart_matches("nginx-11.2.3", "nginx", "1.2.3"));
        assert!(!chart_matches("nginx-1.2.3", "nginx", "1.2.4"));
        assert!(!chart_matches("other-1.2.3", "nginx", "1.2.3"));
    }

    #[test]
    fn rollback_target_is_the_newest_deployed_revision_never_the_stuck_one() {
        let h = |revision, status: &str| HistoryEntry {
            revision,
            status: status.into(),
            chart: format!("c-{revision}"),
        };
        let history = vec![
            h(1, "superseded"),
            h(2, "deployed"),
            h(3, "failed"),
            h(4, "pending-upgrade"),
        ];
        assert_eq!(
            last_deployed(&history, Some(4)).map(|e| e.revision),
            Some(2)
        );
        let only_superseded = vec![h(1, "superseded"), h(2, "pending-rollback")];
        assert_eq!(
            last_deployed(&only_superseded, Some(2)).map(|e| e.revision),
            Some(1)
        );
        assert!(last_deployed(&[h(1, "pending-install")], Some(1)).is_none());
    }

    #[test]
    fn the_values_diff_is_yaml_with_sorted_keys() {
        let old = map(json!({"replicas": 1, "image": {"tag": "1.0"}}));
        let new = map(json!({"image": {"tag": "1.1"}, "replicas": 1}));
        let diff = values_diff("web", Some(("revision 1", &old)), &new).unwrap();
        assert!(diff.contains("--- web values (revision 1)"), "{diff}");
        assert!(
            diff.contains("-  tag: '1.0'") && diff.contains("+  tag: '1.1'"),
            "{diff}"
        );
        assert!(!diff.contains("-replicas"), "{diff}");
        assert_eq!(values_diff("web", Some(("revision 1", &new)), &new), None);
        let fresh = values_diff("web", None, &new).unwrap();
        assert!(
            fresh.contains("--- /dev/null") && fresh.contains("+replicas: 1"),
            "{fresh}"
        );
    }

    #[test]
    fn validation_names_each_bad_argument() {
        let args: HelmReleaseArgs = serde_json::from_value(json!({
            "name": "Web_App", "chart": "oci://r/x", "repo_url": "https://charts", "version": "",
            "namespace": "-x", "timeout": "soon"
        }))
        .unwrap();
        let problems = args.validate().join("\n");
        for needle in [
            "name \"Web_App\"",
            "namespace \"-x\"",
            "version is empty",
            "`repo_url` does not apply",
            "timeout \"soon\"",
        ] {
            assert!(
                problems.contains(needle),
                "{needle} missing in:\n{problems}"
            );
        }
    }
}

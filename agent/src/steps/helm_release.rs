//! Runs `helm_release` on the host; its arguments and their validation are the model's
//! (`bosun_model::steps::helm_release`).

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use bosun_model::steps::helm_release::HelmReleaseArgs;
use serde_json::{Map, Value};
use similar::TextDiff;

use super::{Check, CommandOutput, Outcome, StepContext, StepKind};
use crate::host::helm::{Helm, HistoryEntry, Listed, Upgrade, Wait, helm_error};

/// What `check` found to do.
#[derive(Debug)]
pub struct ReleaseChange {
    /// A stuck release to get unstuck before anything else.
    recovery: Option<Recovery>,
}

/// How a release stuck half-way is recovered.
///
/// What each of helm's statuses (`pkg/release/status.go`) means here, and why:
/// - `pending-install`, `pending-upgrade`, `pending-rollback`: a helm was killed mid-operation
///   (helm refuses any other operation on the release until it is settled): roll back to the
///   last deployed revision, or uninstall when none was ever deployed.
/// - `uninstalling`: a `helm uninstall` stopped mid-way; helm marks the release so *before*
///   deleting its resources (`pkg/action/uninstall.go`), so some may be gone already, and
///   `helm upgrade` refuses it ("has no deployed releases"). Rolling back would resurrect a
///   half-deleted release with old values; the uninstall is finished instead (helm's uninstall
///   accepts an `uninstalling` release) and the wanted chart installed fresh, as Rancher
///   Fleet does. An uninstall keeps PersistentVolumeClaims a StatefulSet made (helm does not
///   own them), so data volumes survive.
/// - `unknown`: no helm action writes it (it is the zero value of the type); a release record
///   carrying it was written by another tool or damaged. Nothing is guessed: the step fails
///   and says how to look.
/// - `deployed`, `failed`, `superseded`: ordinary; a `failed` latest revision is upgraded
///   again. `uninstalled` (kept history): as no release.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Recovery {
    /// Roll back to this revision, the last one that was deployed.
    Rollback { stuck: String, revision: u32 },
    /// Nothing was ever deployed: uninstall.
    Uninstall { stuck: String },
    /// An uninstall stopped mid-way: finish it (then install).
    FinishUninstall { revision: String },
}

/// The release as helm reports it.
struct Observed {
    /// The latest revision; `None` when there is no release (or only an uninstalled one).
    latest: Option<Listed>,
    /// Its user-supplied values.
    values: Map<String, Value>,
}

/// helm, pointed at the release's cluster.
fn client(release: &HelmReleaseArgs) -> Helm<'_> {
    Helm::new(&release.helm, &release.kubeconfig)
}

/// The values files (resolved) and the merged values helm will be given.
fn wanted_values(
    release: &HelmReleaseArgs,
    ctx: &StepContext<'_>,
) -> anyhow::Result<(Vec<PathBuf>, Map<String, Value>)> {
    let mut files = Vec::new();
    let mut merged = Map::new();
    for f in release.values_files.iter().filter(|f| !f.trim().is_empty()) {
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
    merge_values(&mut merged, release.values.clone());
    Ok((files, merged))
}

async fn observe(release: &HelmReleaseArgs) -> anyhow::Result<Observed> {
    let helm = client(release);
    let listed = helm.list(&release.namespace, &release.name).await?;
    let Some(latest) = listed
        .into_iter()
        .find(|l| l.name == release.name && l.status != "uninstalled")
    else {
        return Ok(Observed {
            latest: None,
            values: Map::new(),
        });
    };
    let values = helm.values(&release.namespace, &release.name).await?;
    Ok(Observed {
        latest: Some(latest),
        values,
    })
}

/// `helm history -o json`; empty when helm has no record of the release.
async fn history(release: &HelmReleaseArgs) -> anyhow::Result<Vec<HistoryEntry>> {
    client(release)
        .history(&release.namespace, &release.name)
        .await
}

async fn rollback(release: &HelmReleaseArgs, revision: u32) -> anyhow::Result<()> {
    let timeout = release.timeout_arg()?;
    client(release)
        .rollback(
            &release.namespace,
            &release.name,
            revision,
            wait(release, &timeout),
        )
        .await
}

async fn uninstall(release: &HelmReleaseArgs) -> anyhow::Result<()> {
    let timeout = release.timeout_arg()?;
    client(release)
        .uninstall(&release.namespace, &release.name, wait(release, &timeout))
        .await
}

fn wait<'a>(release: &HelmReleaseArgs, timeout: &'a str) -> Wait<'a> {
    Wait {
        timeout,
        wait: release.wait,
    }
}

/// `helm upgrade --install` with the wanted chart and values (the inline values given last,
/// so they win, as the doc says).
async fn upgrade(release: &HelmReleaseArgs, files: &[PathBuf]) -> anyhow::Result<CommandOutput> {
    let timeout = release.timeout_arg()?;
    let (chart, repo) = match release.repo() {
        Some(url) => (release.chart_name(), Some(url)),
        None => (release.chart.as_str(), None),
    };
    client(release)
        .upgrade_install(&Upgrade {
            name: &release.name,
            chart,
            repo,
            version: &release.version,
            namespace: &release.namespace,
            create_namespace: release.create_namespace,
            values_files: files,
            inline_values: &release.values,
            wait: wait(release, &timeout),
        })
        .await
}

/// After a failed upgrade: back to the last deployed revision, or a failed first install
/// uninstalled. Returns the error the step fails with.
async fn after_failure(
    release: &HelmReleaseArgs,
    out: &CommandOutput,
    installing: bool,
) -> anyhow::Error {
    let op = if installing { "install" } else { "upgrade" };
    let cause = helm_error(out);
    let history = match history(release).await {
        Ok(h) => h,
        Err(e) => {
            return anyhow!(
                "helm {op} of {} failed: {cause}; then reading its history failed too ({e:#}), so nothing was rolled back: look at `helm history {} -n {}`",
                release.name,
                release.name,
                release.namespace
            );
        }
    };
    if history.is_empty() {
        return anyhow!(
            "helm {op} of {} failed: {cause}; helm recorded no release, so there is nothing to roll back: fix the cause and run again",
            release.name
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
            release.name,
            latest.revision,
            latest.status
        );
    }
    match last_deployed(&history, None) {
        Some(good) => match rollback(release, good.revision).await {
            Ok(()) => anyhow!(
                "helm {op} of {} failed: {cause}; rolled back to revision {} ({}): fix the chart or values and run again",
                release.name,
                good.revision,
                good.chart
            ),
            Err(e) => anyhow!(
                "helm {op} of {} failed: {cause}; rolling back to revision {} failed too ({e:#}): recover by hand with `helm rollback {} {} -n {}`",
                release.name,
                good.revision,
                release.name,
                good.revision,
                release.namespace
            ),
        },
        None => match uninstall(release).await {
            Ok(()) => anyhow!(
                "helm {op} of {} failed: {cause}; it had no deployed revision to roll back to, so the failed release was uninstalled: fix the chart or values and run again",
                release.name
            ),
            Err(e) => anyhow!(
                "helm {op} of {} failed: {cause}; uninstalling the failed release failed too ({e:#}): remove it by hand with `helm uninstall {} -n {}`",
                release.name,
                release.name,
                release.namespace
            ),
        },
    }
}

/// Compares what is deployed with what is wanted (see [`plan`]).
async fn compare(
    release: &HelmReleaseArgs,
    ctx: &StepContext<'_>,
) -> anyhow::Result<Check<ReleaseChange>> {
    let (_, wanted) = wanted_values(release, ctx)?;
    let observed = observe(release).await?;
    let Some(latest) = &observed.latest else {
        let diff = values_diff(&release.name, None, &wanted);
        return Ok(Check::change(
            ReleaseChange { recovery: None },
            format!(
                "would install {} ({}) in namespace {}",
                release.name,
                release.wanted_chart(),
                release.namespace
            ),
        )
        .with_diff(diff));
    };
    if latest.status == "uninstalling" {
        return Ok(Check::change(
            ReleaseChange {
                recovery: Some(Recovery::FinishUninstall {
                    revision: latest.revision.clone(),
                }),
            },
            format!(
                "release {} was left uninstalling (revision {}: a helm uninstall stopped mid-way, some of its resources may be gone): would finish the uninstall, then install the wanted chart and values",
                release.name, latest.revision
            ),
        ));
    }
    if !KNOWN_STATUSES.contains(&latest.status.as_str()) || latest.status == "unknown" {
        bail!(
            "release {} revision {} has status {:?}, which no helm action writes (another tool, or a damaged release record): bosun does not guess what is deployed; look at `helm history {} -n {}`, then roll back or uninstall it by hand",
            release.name,
            latest.revision,
            latest.status,
            release.name,
            release.namespace
        );
    }
    if is_pending(&latest.status) {
        let history = history(release).await?;
        let revision: u32 = latest.revision.parse().unwrap_or(0);
        let (recovery, what) = match last_deployed(&history, Some(revision)) {
            Some(good) => (
                Recovery::Rollback {
                    stuck: latest.status.clone(),
                    revision: good.revision,
                },
                format!("roll back to revision {}", good.revision),
            ),
            None => (
                Recovery::Uninstall {
                    stuck: latest.status.clone(),
                },
                "uninstall it (no revision was ever deployed)".to_string(),
            ),
        };
        return Ok(Check::change(
            ReleaseChange {
                recovery: Some(recovery),
            },
            format!(
                "release {} is stuck in {} (revision {}): would {what}, then install the wanted chart and values",
                release.name, latest.status, latest.revision
            ),
        ));
    }
    let mut reasons = Vec::new();
    if !chart_matches(&latest.chart, release.chart_name(), &release.version) {
        reasons.push(format!(
            "chart {} → {}",
            latest.chart,
            release.wanted_chart()
        ));
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
            release.name, latest.chart, latest.revision
        ))));
    }
    let diff = values_differ.then(|| {
        let label = format!("revision {}", latest.revision);
        values_diff(&release.name, Some((&label, &observed.values)), &wanted)
    });
    Ok(Check::change(
        ReleaseChange { recovery: None },
        format!("would upgrade {}: {}", release.name, reasons.join("; ")),
    )
    .with_diff(diff.flatten()))
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
        compare(self, ctx).await
    }

    async fn apply(&self, ctx: &StepContext<'_>, change: ReleaseChange) -> anyhow::Result<Outcome> {
        let mut done = Vec::new();
        let mut diff = None;
        if let Some(recovery) = change.recovery {
            match &recovery {
                Recovery::Rollback { stuck, revision } => {
                    rollback(self, *revision).await.with_context(|| {
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
                    uninstall(self).await.with_context(|| {
                        format!("recovering {} from {stuck}: uninstalling it", self.name)
                    })?;
                    done.push(format!(
                        "recovered {} from {stuck}: uninstalled it (no revision was ever deployed)",
                        self.name
                    ));
                }
                Recovery::FinishUninstall { revision } => {
                    uninstall(self).await.with_context(|| {
                        format!(
                            "finishing the uninstall of {} (revision {revision} was left uninstalling)",
                            self.name
                        )
                    })?;
                    done.push(format!(
                        "finished the uninstall of {} that had stopped mid-way (revision {revision} was left uninstalling)",
                        self.name
                    ));
                }
            }
            // The rollback may have brought back exactly what is wanted.
            let again = compare(self, ctx).await?;
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
        let (files, _) = wanted_values(self, ctx)?;
        let before = observe(self).await?.latest;
        let out = upgrade(self, &files).await?;
        if out.rc != 0 {
            let err = after_failure(self, &out, before.is_none()).await;
            return Err(match done.is_empty() {
                true => err,
                false => anyhow!("{}; then {err:#}", done.join("; ")),
            });
        }
        let after = observe(self).await?;
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

/// Every status helm v3 defines (`pkg/release/status.go`).
const KNOWN_STATUSES: &[&str] = &[
    "unknown",
    "deployed",
    "uninstalled",
    "superseded",
    "failed",
    "uninstalling",
    "pending-install",
    "pending-upgrade",
    "pending-rollback",
];

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
pub(crate) fn merge_values(base: &mut Map<String, Value>, over: Map<String, Value>) {
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
        (Value::Number(n), Value::String(s)) | (Value::String(s), Value::Number(n)) => {
            match yaml11_number(s) {
                Some(Yaml11Number::Int(i)) => n.as_i64() == Some(i),
                Some(Yaml11Number::Float(f)) => n.as_f64() == Some(f),
                None => false,
            }
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

/// A plain scalar's number as helm reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Yaml11Number {
    Int(i64),
    Float(f64),
}

/// What helm makes of `s` as a plain YAML scalar, when a number. helm reads values files with
/// go-yaml v2 (YAML 1.1, through sigs.k8s.io/yaml), whose `resolve` tries, for a scalar
/// starting with a digit, sign or dot: `strconv.ParseInt(s without '_', 0)` (so `0x1F` hex,
/// `0644` *octal*, `0o17`, `0b101`, `1_000`), then `ParseFloat` (`1e3`, `09` → 9.0). bosun
/// reads values files with serde_norway, which keeps `0644`, `1_000` and `09` as strings (and
/// resolves `0x1F` as helm does); comparing through this rule means such a file does not
/// look changed on every run. Its limit: a quoted `'0644'` (a string to helm too) compares
/// equal to a deployed 420.
fn yaml11_number(s: &str) -> Option<Yaml11Number> {
    if !s.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '+' | '-' | '.')) {
        return None;
    }
    let plain = s.replace('_', "");
    let (negative, digits) = match plain.as_bytes().first() {
        Some(b'-') => (true, &plain[1..]),
        Some(b'+') => (false, &plain[1..]),
        _ => (false, plain.as_str()),
    };
    if !digits.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let lower = digits.to_ascii_lowercase();
    let (radix, body) = if let Some(h) = lower.strip_prefix("0x") {
        (16, h)
    } else if let Some(b) = lower.strip_prefix("0b") {
        (2, b)
    } else if let Some(o) = lower.strip_prefix("0o") {
        (8, o)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if !body.is_empty()
        && let Ok(v) = i64::from_str_radix(body, radix)
    {
        return Some(Yaml11Number::Int(if negative { -v } else { v }));
    }
    // Go's ParseFloat: decimal only here (a leading zero is no octal marker for floats).
    let is_decimal_float = digits
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        && digits.chars().any(|c| c.is_ascii_digit());
    if is_decimal_float && let Ok(f) = plain.parse::<f64>() {
        return Some(Yaml11Number::Float(f));
    }
    None
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

    /// A values file as bosun parses it, against what helm (go-yaml v2, YAML 1.1) deployed
    /// from the same text: `0644` is octal 420, `0x1F` 31, `1_000` 1000, `yes` true, `09`
    /// 9.0, a quoted `'0644'` stays a string.
    #[test]
    fn values_files_compare_the_way_helm_reads_yaml_1_1() {
        let text = "mode: 0644\nmask: 0x1F\nbig: 1_000\nenabled: yes\nlegacy: Off\nport: 09\nratio: 1e3\nneg: -0b11\noct: 0o17\nname: '0644'\nplain: hello\n";
        let ours: Value = serde_norway::from_str(text).unwrap();
        let helm = json!({
            "mode": 420, "mask": 31, "big": 1000, "enabled": true, "legacy": false, "port": 9,
            "ratio": 1000, "neg": -3, "oct": 15, "name": "0644", "plain": "hello"
        });
        assert!(values_equal(&helm, &ours), "{ours}");
        // Read as decimal (YAML 1.2) it would be another value: a real change is still seen.
        let decimal = json!({"mode": 644});
        assert!(!values_equal(&decimal, &json!({"mode": "0644"})));
        assert_eq!(yaml11_number("0644"), Some(Yaml11Number::Int(420)));
        assert_eq!(yaml11_number("-0x1f"), Some(Yaml11Number::Int(-31)));
        assert_eq!(yaml11_number("1_000"), Some(Yaml11Number::Int(1000)));
        assert_eq!(yaml11_number("09"), Some(Yaml11Number::Float(9.0)));
        assert_eq!(yaml11_number("012.5"), Some(Yaml11Number::Float(12.5)));
        for not_a_number in ["0x", "1.2.3", "abc", "", "v1", "1e", "--1"] {
            assert_eq!(yaml11_number(not_a_number), None, "{not_a_number}");
        }
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
}

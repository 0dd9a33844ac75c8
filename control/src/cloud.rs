//! `bosun plan`, `up` and `down`: the stack applied through CloudFormation change sets, with
//! stack events as progress. CloudFormation owns ordering, rollback and teardown; this module
//! only prepares, shows and waits.
//!
//! The bucket problem: the artefacts the first boot fetches live in the stack's own bucket,
//! so the bucket must exist before the instance does. We create the stack in two phases, not
//! as two stacks: when the stack does not exist, `up` first creates it from the *foundation*
//! template (network, bucket and its policy, log group), uploads, then updates it to the full
//! template. One stack means one name to `plan`, `up` and `down`, one event stream, and the
//! bucket policy (which names the VPC endpoint) lives with the bucket from its first second.
//! A separate bucket stack would split `down` and need cross-stack exports for the policy.
//!
//! `[edge]` outside us-east-1 adds a second stack there, `<name>-edge` (certificate, health
//! checks, their alarms; `stack::edge`). `up` applies it first and waits (CloudFormation's
//! certificate resource completes only once DNS validation has issued the certificate), then
//! passes its outputs to the main stack as parameters; `plan` shows both change sets; `down`
//! deletes the main stack first (the distribution holds the certificate), then the edge stack.
//! Before either, `up` makes sure the origin secret exists in Parameter Store (created once,
//! random, never printed); the template only names it.
//!
//! Safety: a change set that would replace the instance, the database or the bucket is not
//! executed without `--allow-replacement` (the newest AMI or a new first boot replaces the
//! host, and the host holds the cluster's state). Later `up`s keep the first-boot digests the
//! host was created with (read back from the stack outputs); running hosts get a new `bosund`
//! from `bosun run`, not from a new instance.

use std::collections::{BTreeMap, HashSet};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use aws_sdk_cloudformation::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudformation::types::{Capability, ChangeSetStatus, ChangeSetType, Parameter};
use bosun_aws::{AwsConfig, AwsTarget, describe_error_at};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::{Value, json};

use crate::stack::artifacts::{Artifact, BootArtifacts};
use crate::stack::boot::BootDigests;
use crate::stack::cfn::Template;
use crate::stack::config::{EDGE_REGION, StackConfig};
use crate::stack::edge;
use crate::stack::template;

/// How often stack and change-set status is polled.
const POLL: Duration = Duration::from_secs(2);
/// How long a change set may take to be computed.
const CHANGE_SET_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a stack operation may take (an RDS instance takes 10–20 minutes).
const STACK_TIMEOUT: Duration = Duration::from_secs(3600);
/// Resource types whose replacement loses state: never replaced without consent.
const GUARDED: &[&str] = &[
    "AWS::EC2::Instance",
    "AWS::RDS::DBInstance",
    "AWS::S3::Bucket",
];

/// The AWS clients, built for one region and optional endpoint.
pub struct Aws {
    cfn: aws_sdk_cloudformation::Client,
    s3: aws_sdk_s3::Client,
    ssm: aws_sdk_ssm::Client,
    /// CloudFormation in us-east-1, for the edge stack (the same client when that is the region).
    edge_cfn: aws_sdk_cloudformation::Client,
}

impl Aws {
    /// Clients for `region`; `endpoint` (moto in tests) replaces every service's endpoint.
    /// Credentials come from the usual chain (environment, profile, IMDS); see `bosun_aws`.
    pub async fn connect(region: &str, endpoint: Option<&str>) -> Aws {
        let config = AwsConfig::load(&AwsTarget {
            region: Some(region.to_string()),
            endpoint_url: endpoint.map(str::to_string),
        })
        .await;
        let _ = ENDPOINT.set(config.endpoint_label());
        let s3 = aws_sdk_s3::config::Builder::from(&config.sdk)
            // Replaced endpoints (moto) have no per-bucket host names.
            .force_path_style(config.path_style)
            .build();
        let edge_cfn = if region == EDGE_REGION {
            aws_sdk_cloudformation::Client::new(&config.sdk)
        } else {
            let edge = AwsConfig::load(&AwsTarget {
                region: Some(EDGE_REGION.to_string()),
                endpoint_url: endpoint.map(str::to_string),
            })
            .await;
            aws_sdk_cloudformation::Client::new(&edge.sdk)
        };
        Aws {
            cfn: aws_sdk_cloudformation::Client::new(&config.sdk),
            s3: aws_sdk_s3::Client::from_conf(s3),
            ssm: aws_sdk_ssm::Client::new(&config.sdk),
            edge_cfn,
        }
    }
}

/// CloudFormation in one region (the stack's, or us-east-1 for the edge stack).
type Cfn = aws_sdk_cloudformation::Client;

/// How results are shown: human lines and progress on stderr (results on stdout), or one line of
/// JSON on stdout at the end (JSON Lines, as every `--output json`).
#[derive(Clone, Copy)]
pub struct Ui {
    /// `--output json`.
    pub json: bool,
}

impl Ui {
    fn say(&self, line: impl AsRef<str>) {
        if !self.json {
            eprintln!("{}", line.as_ref());
        }
    }
}

/// A stack as `DescribeStacks` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct StackState {
    pub id: String,
    pub status: String,
    pub outputs: BTreeMap<String, String>,
}

/// One line of a change set.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeLine {
    pub action: String,
    pub logical_id: String,
    pub resource_type: String,
    /// `True`, `False`, `Conditional`, or empty for adds and removes.
    pub replacement: String,
}

impl ChangeLine {
    fn replaces(&self) -> bool {
        matches!(self.replacement.as_str(), "True" | "Conditional")
    }

    fn human(&self) -> String {
        let flag = match self.replacement.as_str() {
            "True" => "  REPLACEMENT",
            "Conditional" => "  REPLACEMENT (conditional)",
            _ => "",
        };
        format!(
            "  {:<7} {:<24} {}{flag}",
            self.action, self.logical_id, self.resource_type
        )
    }
}

/// Where this process's AWS requests go, for error messages: `bosun` is a one-shot command
/// with one endpoint (the edge stack differs only in region), set by [`Aws::connect`].
static ENDPOINT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// An AWS error as [`describe_error_at`] words it, on one line: service and operation, then
/// `Code: message` when the service answered with an AWS error, else the HTTP status and the
/// endpoint, else the cause chain (connection refused, no credentials, ...); the request id.
fn sdk_err<E, R>(e: SdkError<E, R>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    anyhow!(describe_error_at(
        &e,
        ENDPOINT.get().map_or("AWS", String::as_str)
    ))
}

enum Prepared {
    NoChanges,
    Changes {
        name: String,
        changes: Vec<ChangeLine>,
    },
}

async fn describe(cfn: &Cfn, stack: &str) -> Result<Option<StackState>> {
    let out = match cfn.describe_stacks().stack_name(stack).send().await {
        Ok(out) => out,
        Err(e) if e.message().is_some_and(|m| m.contains("does not exist")) => return Ok(None),
        Err(e) => {
            return Err(sdk_err(e)).with_context(|| {
                format!("describing stack {stack} (check credentials, region and endpoint)")
            });
        }
    };
    let Some(s) = out.stacks().first() else {
        return Ok(None);
    };
    let status = s
        .stack_status()
        .map(|s| s.as_str().to_string())
        .unwrap_or_default();
    if status == "DELETE_COMPLETE" {
        return Ok(None);
    }
    Ok(Some(StackState {
        id: s.stack_id().unwrap_or(stack).to_string(),
        status,
        outputs: s
            .outputs()
            .iter()
            .filter_map(|o| Some((o.output_key()?.to_string(), o.output_value()?.to_string())))
            .collect(),
    }))
}

fn no_changes(reason: &str) -> bool {
    reason.contains("didn't contain changes") || reason.contains("No updates are to be performed")
}

async fn prepare(
    cfn: &Cfn,
    stack: &str,
    template: &Template,
    kind: ChangeSetType,
    params: &[(String, String)],
) -> Result<Prepared> {
    let name = format!(
        "bosun-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    cfn.create_change_set()
        .stack_name(stack)
        .change_set_name(&name)
        .change_set_type(kind)
        .template_body(template.to_json())
        .set_parameters(Some(parameters(params)))
        .capabilities(Capability::CapabilityIam)
        .description("bosun up")
        .send()
        .await
        .map_err(sdk_err)
        .with_context(|| format!("creating a change set for stack {stack}"))?;
    let started = Instant::now();
    loop {
        let mut changes = Vec::new();
        let mut token = None;
        let status;
        let reason;
        loop {
            let out = cfn
                .describe_change_set()
                .stack_name(stack)
                .change_set_name(&name)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(sdk_err)
                .with_context(|| format!("reading change set {name} of stack {stack}"))?;
            for c in out.changes() {
                if let Some(rc) = c.resource_change() {
                    changes.push(ChangeLine {
                        action: rc
                            .action()
                            .map(|a| a.as_str().to_string())
                            .unwrap_or_default(),
                        logical_id: rc.logical_resource_id().unwrap_or_default().to_string(),
                        resource_type: rc.resource_type().unwrap_or_default().to_string(),
                        replacement: rc
                            .replacement()
                            .map(|r| r.as_str().to_string())
                            .unwrap_or_default(),
                    });
                }
            }
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                status = out.status().cloned();
                reason = out.status_reason().unwrap_or_default().to_string();
                break;
            }
        }
        match status {
            Some(ChangeSetStatus::CreateComplete) => {
                return Ok(Prepared::Changes { name, changes });
            }
            Some(ChangeSetStatus::Failed) => {
                delete_change_set(cfn, stack, &name).await;
                if no_changes(&reason) {
                    return Ok(Prepared::NoChanges);
                }
                bail!("CloudFormation rejected the change for stack {stack}: {reason}");
            }
            _ if started.elapsed() > CHANGE_SET_TIMEOUT => {
                bail!("change set {name} of stack {stack} not ready after {CHANGE_SET_TIMEOUT:?}")
            }
            _ => tokio::time::sleep(POLL).await,
        }
    }
}

async fn delete_change_set(cfn: &Cfn, stack: &str, name: &str) {
    // Best effort: a leftover change set costs nothing and blocks nothing.
    let _ = cfn
        .delete_change_set()
        .stack_name(stack)
        .change_set_name(name)
        .send()
        .await;
}

/// Event ids already shown (or present before we started).
async fn event_ids(cfn: &Cfn, stack: &str) -> HashSet<String> {
    match cfn.describe_stack_events().stack_name(stack).send().await {
        Ok(out) => out
            .stack_events()
            .iter()
            .filter_map(|e| e.event_id().map(str::to_string))
            .collect(),
        Err(_) => HashSet::new(),
    }
}

/// Executes a change set and follows the stack's events until it settles.
async fn execute(
    cfn: &Cfn,
    ui: Ui,
    stack: &str,
    change_set: &str,
    expected: usize,
    events: &mut Vec<Value>,
) -> Result<StackState> {
    let mut seen = event_ids(cfn, stack).await;
    cfn.execute_change_set()
        .stack_name(stack)
        .change_set_name(change_set)
        .send()
        .await
        .map_err(sdk_err)
        .with_context(|| format!("executing change set {change_set} of stack {stack}"))?;
    wait(cfn, ui, stack, expected, &mut seen, events).await
}

async fn wait(
    cfn: &Cfn,
    ui: Ui,
    stack: &str,
    expected: usize,
    seen: &mut HashSet<String>,
    events: &mut Vec<Value>,
) -> Result<StackState> {
    let bar = if ui.json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(expected as u64);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{pos}/{len}] {elapsed} {msg}")
                .expect("valid progress template"),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    };
    let started = Instant::now();
    let mut failures = Vec::new();
    let state = loop {
        if let Ok(out) = cfn.describe_stack_events().stack_name(stack).send().await {
            // Newest first: show the new ones oldest first.
            let fresh: Vec<_> = out
                .stack_events()
                .iter()
                .filter(|e| e.event_id().is_some_and(|id| !seen.contains(id)))
                .collect();
            for e in fresh.into_iter().rev() {
                seen.insert(e.event_id().unwrap_or_default().to_string());
                let status = e.resource_status().map(|s| s.as_str()).unwrap_or_default();
                let logical = e.logical_resource_id().unwrap_or_default();
                let kind = e.resource_type().unwrap_or_default();
                let reason = e.resource_status_reason().unwrap_or_default();
                if status.ends_with("_FAILED") && !reason.is_empty() {
                    failures.push(format!("{logical} ({kind}): {reason}"));
                }
                if kind != "AWS::CloudFormation::Stack" && status.ends_with("_COMPLETE") {
                    bar.inc(1);
                }
                let line = format!("{status:<22} {kind:<36} {logical} {reason}");
                if bar.is_hidden() {
                    ui.say(line.trim_end());
                } else {
                    bar.println(line.trim_end());
                }
                events.push(json!({
                    "status": status, "resource_type": kind,
                    "logical_id": logical, "reason": reason,
                }));
            }
        }
        let state = describe(cfn, stack).await?;
        let status = state
            .as_ref()
            .map(|s| s.status.clone())
            .unwrap_or("DELETE_COMPLETE".into());
        bar.set_message(status.clone());
        if !status.ends_with("_IN_PROGRESS") {
            break state;
        }
        if started.elapsed() > STACK_TIMEOUT {
            bar.abandon();
            bail!(
                "stack {stack} still {status} after {STACK_TIMEOUT:?}; it goes on in AWS: watch it in the console"
            );
        }
        tokio::time::sleep(POLL).await;
    };
    bar.finish_and_clear();
    let status = state
        .as_ref()
        .map(|s| s.status.clone())
        .unwrap_or_else(|| "DELETE_COMPLETE".into());
    if matches!(
        status.as_str(),
        "CREATE_COMPLETE" | "UPDATE_COMPLETE" | "DELETE_COMPLETE"
    ) {
        return Ok(state.unwrap_or(StackState {
            id: stack.to_string(),
            status,
            outputs: BTreeMap::new(),
        }));
    }
    bail!(
        "stack {stack} ended in {status}{}{}",
        if failures.is_empty() { "" } else { ":\n  " },
        failures.join("\n  ")
    )
}

/// Uploads `artifact` unless an object with its key exists (the key is its digest).
async fn upload(aws: &Aws, bucket: &str, artifact: &Artifact) -> Result<bool> {
    match aws
        .s3
        .head_object()
        .bucket(bucket)
        .key(&artifact.key)
        .send()
        .await
    {
        Ok(_) => return Ok(false),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {}
        Err(e) => {
            return Err(sdk_err(e))
                .with_context(|| format!("checking s3://{bucket}/{}", artifact.key));
        }
    }
    aws.s3
        .put_object()
        .bucket(bucket)
        .key(&artifact.key)
        .body(artifact.bytes.clone().into())
        .send()
        .await
        .map_err(sdk_err)
        .with_context(|| format!("uploading s3://{bucket}/{}", artifact.key))?;
    Ok(true)
}

/// What `plan`/`up` decide about the first boot: the digests the deployed host booted with,
/// unless there is none yet or `refresh` asks for the artefacts just built.
fn boot_digests(
    deployed: Option<BootDigests>,
    artifacts: &BootArtifacts,
    refresh: bool,
) -> BootDigests {
    match deployed {
        Some(d) if !refresh => d,
        _ => BootDigests {
            bosund_sha256: artifacts.bosund.sha256.clone(),
            playbooks_sha256: artifacts.playbooks.sha256.clone(),
        },
    }
}

/// The first-boot digests in the deployed template (its `Boot*Sha256` outputs), read from the
/// template rather than the stack's outputs so a stack whose outputs are not (yet) resolved
/// still answers; `None` when the host has not been created yet.
async fn deployed_boot(cfn: &Cfn, stack: &str) -> Result<Option<BootDigests>> {
    let out = cfn
        .get_template()
        .stack_name(stack)
        .send()
        .await
        .map_err(sdk_err)
        .with_context(|| format!("reading the deployed template of stack {stack}"))?;
    let Some(body) = out.template_body() else {
        return Ok(None);
    };
    let template: Value = serde_json::from_str(body).with_context(|| {
        format!("the deployed template of stack {stack} is not JSON: was it made by bosun?")
    })?;
    let output = |name: &str| {
        template["Outputs"][name]["Value"]
            .as_str()
            .map(str::to_string)
    };
    Ok(
        match (output("BootBosundSha256"), output("BootPlaybooksSha256")) {
            (Some(bosund_sha256), Some(playbooks_sha256)) => Some(BootDigests {
                bosund_sha256,
                playbooks_sha256,
            }),
            _ => None,
        },
    )
}

/// The physical id of a stack's resource, `None` when the stack has no such resource.
async fn physical_id(cfn: &Cfn, stack: &str, logical_id: &str) -> Result<Option<String>> {
    match cfn
        .describe_stack_resource()
        .stack_name(stack)
        .logical_resource_id(logical_id)
        .send()
        .await
    {
        Ok(out) => Ok(out
            .stack_resource_detail()
            .and_then(|d| d.physical_resource_id())
            .map(str::to_string)),
        Err(e) if e.message().is_some_and(|m| m.contains("does not exist")) => Ok(None),
        Err(e) => {
            Err(sdk_err(e)).with_context(|| format!("looking up {logical_id} in stack {stack}"))
        }
    }
}

fn check_status(stack: &str, state: &StackState) -> Result<()> {
    let s = state.status.as_str();
    if s.ends_with("_IN_PROGRESS") && s != "REVIEW_IN_PROGRESS" {
        bail!("stack {stack} is busy ({s}): wait for it to finish, then run this again");
    }
    if matches!(
        s,
        "ROLLBACK_COMPLETE" | "ROLLBACK_FAILED" | "CREATE_FAILED" | "DELETE_FAILED"
    ) {
        bail!(
            "stack {stack} is {s} and cannot be updated: look at its events in the console, \
             remove it with `bosun down`, then `bosun up` again"
        );
    }
    Ok(())
}

/// The changes that replace a resource holding state.
fn guarded(changes: &[ChangeLine]) -> Vec<&ChangeLine> {
    changes
        .iter()
        .filter(|c| c.replaces() && GUARDED.contains(&c.resource_type.as_str()))
        .collect()
}

/// Inputs of `plan` and `up`.
pub struct Request<'a> {
    pub config: &'a StackConfig,
    pub public_key: &'a str,
    pub artifacts: &'a BootArtifacts,
    /// Use the artefacts just built for the first boot, even on an existing host.
    pub refresh_boot: bool,
}

/// The main stack's parameters from the edge stack's outputs; placeholders (for `plan` only)
/// while the edge stack does not exist yet.
fn edge_parameters(
    config: &StackConfig,
    outputs: Option<&BTreeMap<String, String>>,
) -> Result<Vec<(String, String)>> {
    let Some(e) = config.edge.as_ref().filter(|_| config.has_edge_stack()) else {
        return Ok(Vec::new());
    };
    let get = |key: &str, placeholder: String| -> Result<String> {
        match outputs {
            None => Ok(placeholder),
            Some(o) => o.get(key).cloned().ok_or_else(|| {
                anyhow!(
                    "stack {} has no output {key}: was it made by bosun up?",
                    config.edge_stack_name()
                )
            }),
        }
    };
    let mut params = vec![
        (
            edge::CERTIFICATE_PARAMETER.to_string(),
            get(
                edge::CERTIFICATE_OUTPUT,
                format!("arn:aws:acm:{EDGE_REGION}:000000000000:certificate/created-by-up"),
            )?,
        ),
        (
            edge::HEALTH_CHECKS_PARAMETER.to_string(),
            get(
                edge::HEALTH_CHECKS_OUTPUT,
                vec!["created-by-up"; e.domain_names.len()].join(","),
            )?,
        ),
    ];
    if e.waf {
        params.push((
            edge::WEB_ACL_PARAMETER.to_string(),
            get(edge::WEB_ACL_OUTPUT, "created-by-up".into())?,
        ));
    }
    Ok(params)
}

/// The changes `up` would make to `stack`: every resource an add when it does not exist.
async fn planned_changes(
    cfn: &Cfn,
    ui: Ui,
    stack: &str,
    exists: bool,
    template: &Template,
    params: &[(String, String)],
) -> Result<Vec<ChangeLine>> {
    let changes = if !exists {
        // A CREATE change set would leave an empty stack behind; every resource is an add.
        ui.say(format!("stack {stack} does not exist; `bosun up` creates:"));
        adds(template)
    } else {
        match prepare(cfn, stack, template, ChangeSetType::Update, params).await? {
            Prepared::NoChanges => Vec::new(),
            Prepared::Changes { name, changes } => {
                delete_change_set(cfn, stack, &name).await;
                changes
            }
        }
    };
    if changes.is_empty() {
        ui.say(format!("stack {stack}: no changes"));
    } else if exists {
        ui.say(format!("stack {stack}: {} change(s):", changes.len()));
    }
    for c in &changes {
        ui.say(c.human());
    }
    Ok(changes)
}

fn plan_json(stack: &str, exists: bool, changes: &[ChangeLine]) -> Value {
    json!({
        "stack": stack,
        "exists": exists,
        "no_changes": changes.is_empty(),
        "changes": changes,
        "replacements": changes.iter().filter(|c| c.replaces()).count(),
    })
}

/// Whether a described stack counts as existing (a stack in REVIEW_IN_PROGRESS has only a
/// change set that was never executed).
fn exists(state: Option<&StackState>) -> bool {
    state.is_some_and(|s| s.status != "REVIEW_IN_PROGRESS")
}

/// `bosun plan`: what `up` would change, without changing anything; with an edge stack, its
/// change set first (under `edge`).
pub async fn plan(aws: &Aws, ui: Ui, req: &Request<'_>) -> Result<Value> {
    let config = req.config;
    let stack = &config.name;
    let mut edge_json = Value::Null;
    let mut edge_outputs = None;
    if config.has_edge_stack() {
        let name = config.edge_stack_name();
        let state = describe(&aws.edge_cfn, &name).await?;
        if let Some(s) = state.as_ref().filter(|s| exists(Some(s))) {
            check_status(&name, s)?;
            edge_outputs = Some(s.outputs.clone());
        }
        let exists = exists(state.as_ref());
        let changes = planned_changes(
            &aws.edge_cfn,
            ui,
            &name,
            exists,
            &edge::template(config),
            &[],
        )
        .await?;
        edge_json = plan_json(&name, exists, &changes);
    }
    let state = describe(&aws.cfn, stack).await?;
    let exists = exists(state.as_ref());
    let deployed = if exists {
        check_status(stack, state.as_ref().expect("exists"))?;
        deployed_boot(&aws.cfn, stack).await?
    } else {
        None
    };
    let boot = boot_digests(deployed, req.artifacts, req.refresh_boot);
    let full = template::full(config, req.public_key, &boot);
    let params = edge_parameters(config, edge_outputs.as_ref())?;
    let changes = planned_changes(&aws.cfn, ui, stack, exists, &full, &params).await?;
    let mut result = plan_json(stack, exists, &changes);
    result["edge"] = edge_json;
    Ok(result)
}

/// What applying one change set did.
struct Applied {
    changes: Vec<ChangeLine>,
    state: StackState,
}

/// Creates a new stack straight from `template` (nothing to review or guard: every change is
/// an add) and follows its events.
async fn create(
    cfn: &Cfn,
    ui: Ui,
    stack: &str,
    template: &Template,
    params: &[(String, String)],
    events: &mut Vec<Value>,
) -> Result<Applied> {
    let changes = adds(template);
    cfn.create_stack()
        .stack_name(stack)
        .template_body(template.to_json())
        .set_parameters(Some(parameters(params)))
        .capabilities(Capability::CapabilityIam)
        .send()
        .await
        .map_err(sdk_err)
        .with_context(|| format!("creating stack {stack}"))?;
    let mut seen = HashSet::new();
    let state = wait(cfn, ui, stack, changes.len(), &mut seen, events).await?;
    Ok(Applied { changes, state })
}

/// Every resource of `template` as an add.
fn adds(template: &Template) -> Vec<ChangeLine> {
    template
        .resources
        .iter()
        .map(|(id, r)| ChangeLine {
            action: "Add".into(),
            logical_id: id.clone(),
            resource_type: r.kind.to_string(),
            replacement: String::new(),
        })
        .collect()
}

fn parameters(params: &[(String, String)]) -> Vec<Parameter> {
    params
        .iter()
        .map(|(k, v)| {
            Parameter::builder()
                .parameter_key(k)
                .parameter_value(v)
                .build()
        })
        .collect()
}

/// Prepares and (unless it replaces state without consent) executes an update of an existing
/// stack.
async fn apply(
    cfn: &Cfn,
    ui: Ui,
    stack: &str,
    template: &Template,
    params: &[(String, String)],
    allow_replacement: bool,
    events: &mut Vec<Value>,
) -> Result<Applied> {
    match prepare(cfn, stack, template, ChangeSetType::Update, params).await? {
        Prepared::NoChanges => {
            ui.say(format!("stack {stack}: no changes"));
            let state = describe(cfn, stack)
                .await?
                .ok_or_else(|| anyhow!("stack {stack} disappeared while it was being updated"))?;
            Ok(Applied {
                changes: Vec::new(),
                state,
            })
        }
        Prepared::Changes { name, changes } => {
            let guarded = guarded(&changes);
            if !guarded.is_empty() && !allow_replacement {
                delete_change_set(cfn, stack, &name).await;
                bail!(
                    "this update would replace resources that hold state:\n{}\nnothing was \
                     changed; pin `ami` in stack.toml if a new AMI caused it, or re-run with \
                     --allow-replacement",
                    guarded
                        .iter()
                        .map(|c| c.human())
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            ui.say(format!(
                "stack {stack}: applying {} change(s)",
                changes.len()
            ));
            for c in &changes {
                ui.say(c.human());
            }
            let state = execute(cfn, ui, stack, &name, changes.len(), events).await?;
            Ok(Applied { changes, state })
        }
    }
}

/// Makes sure the origin secret exists in Parameter Store: created once with 32 random bytes
/// (hex), never overwritten, never printed. Returns whether it was created.
async fn ensure_origin_secret(aws: &Aws, config: &StackConfig) -> Result<bool> {
    use aws_sdk_ssm::types::ParameterType;
    let name = config.origin_secret_parameter();
    match aws.ssm.get_parameter().name(&name).send().await {
        Ok(_) => return Ok(false),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_parameter_not_found()) => {}
        Err(e) => {
            return Err(sdk_err(e)).with_context(|| format!("looking up SSM parameter {name}"));
        }
    }
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| anyhow!("the system's random generator failed"))?;
    aws.ssm
        .put_parameter()
        .name(&name)
        .description(format!(
            "bosun {}: the secret CloudFront sends to the origin (X-Origin-Verify)",
            config.name
        ))
        .value(hex::encode(bytes))
        // A String, not a SecureString: CloudFormation resolves only `ssm` (not `ssm-secure`)
        // references in a distribution's properties. Readable by principals allowed
        // ssm:GetParameter on it: the host's role and the account's administrators.
        .r#type(ParameterType::String)
        .overwrite(false)
        .send()
        .await
        .map_err(sdk_err)
        .with_context(|| format!("creating SSM parameter {name}"))?;
    Ok(true)
}

/// What a scoped bosund token may do (`bosun token create`), checked before any AWS call.
#[derive(Debug, Clone)]
pub struct TokenScope {
    /// The token's name (the last part of its SSM parameter).
    pub name: String,
    /// Playbook names it may run.
    pub playbooks: Vec<String>,
    /// Variables it may set.
    pub vars: Vec<String>,
}

impl TokenScope {
    /// Checks the names (they end up in an SSM parameter name and agent.toml).
    pub fn new(name: &str, playbooks: Vec<String>, vars: Vec<String>) -> Result<TokenScope> {
        let plain = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !plain(name) {
            bail!("token name {name:?}: use letters, digits, - and _ (at most 64)");
        }
        for p in &playbooks {
            if !plain(p.strip_suffix(".toml").unwrap_or(p)) {
                bail!(
                    "--playbook {p:?}: name a playbook in the host's playbooks_dir, e.g. helm-release"
                );
            }
        }
        for v in &vars {
            if !plain(v)
                || v.contains('-')
                || v.starts_with(|c: char| c.is_ascii_digit())
                || v == "facts"
            {
                bail!("--var {v:?}: name a playbook variable (letters, digits, _)");
            }
        }
        Ok(TokenScope {
            name: name.to_string(),
            playbooks,
            vars,
        })
    }

    /// The `[[api.tcp.scoped_token]]` table for agent.toml.
    pub fn agent_toml(&self, sha256: &str) -> String {
        let list = |items: &[String]| {
            items
                .iter()
                .map(|i| format!("{i:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "[[api.tcp.scoped_token]]\n# {}\nsha256 = \"{sha256}\"\nplaybooks = [{}]\nvars = [{}]\n",
            self.name,
            list(&self.playbooks),
            list(&self.vars)
        )
    }
}

/// A token `bosun token create` stored.
#[derive(Debug)]
pub struct CreatedToken {
    /// Its SSM parameter.
    pub parameter: String,
    /// SHA-256 of the token, hex (what agent.toml holds).
    pub sha256: String,
}

/// Creates a random token (32 bytes, hex) in SSM as a SecureString under the stack's prefix and
/// returns its parameter and SHA-256; the token itself is never returned or printed. Refuses
/// to replace an existing one unless `rotate`.
pub async fn create_token(
    aws: &Aws,
    config: &StackConfig,
    scope: &TokenScope,
    rotate: bool,
) -> Result<CreatedToken> {
    use aws_sdk_ssm::types::ParameterType;
    let parameter = format!("/bosun/{}/api-tokens/{}", config.name, scope.name);
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| anyhow!("the system's random generator failed"))?;
    let token = format!("bosun_{}", hex::encode(bytes));
    let sha256 = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ));
    let put = aws
        .ssm
        .put_parameter()
        .name(&parameter)
        .description(format!(
            "bosun {}: bosund API token {} (playbooks {}; vars {})",
            config.name,
            scope.name,
            scope.playbooks.join(","),
            scope.vars.join(",")
        ))
        .value(token)
        .r#type(ParameterType::SecureString)
        .overwrite(rotate)
        .send()
        .await;
    match put {
        Ok(_) => Ok(CreatedToken { parameter, sha256 }),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_parameter_already_exists()) =>
        {
            bail!("{parameter} exists already: pass --rotate to replace that token")
        }
        Err(e) => Err(sdk_err(e)).with_context(|| format!("creating SSM parameter {parameter}")),
    }
}

/// `bosun up` of the edge stack: create or update it and wait; returns its JSON and outputs.
async fn up_edge(
    aws: &Aws,
    ui: Ui,
    config: &StackConfig,
    allow_replacement: bool,
) -> Result<(Value, BTreeMap<String, String>)> {
    let name = config.edge_stack_name();
    let state = describe(&aws.edge_cfn, &name).await?;
    if let Some(s) = &state {
        check_status(&name, s)?;
    }
    let create = !exists(state.as_ref());
    if create {
        ui.say(format!(
            "creating stack {name} in {EDGE_REGION} (certificate, health checks); the \
             certificate is issued once its DNS validation record resolves"
        ));
    }
    let mut events = Vec::new();
    let template = edge::template(config);
    let applied = if create {
        self::create(&aws.edge_cfn, ui, &name, &template, &[], &mut events).await?
    } else {
        apply(
            &aws.edge_cfn,
            ui,
            &name,
            &template,
            &[],
            allow_replacement,
            &mut events,
        )
        .await?
    };
    let json = json!({
        "stack": name,
        "region": EDGE_REGION,
        "status": applied.state.status,
        "created": create,
        "no_changes": applied.changes.is_empty(),
        "changes": applied.changes,
        "events": events,
        "outputs": applied.state.outputs,
    });
    Ok((json, applied.state.outputs))
}

/// `bosun up`: create or update the stack (the edge stack first), uploading the first-boot
/// artefacts first.
pub async fn up(aws: &Aws, ui: Ui, req: &Request<'_>, allow_replacement: bool) -> Result<Value> {
    let config = req.config;
    let stack = &config.name;
    let mut origin_secret_created = false;
    if config.edge.is_some() {
        origin_secret_created = ensure_origin_secret(aws, config).await?;
        if origin_secret_created {
            ui.say(format!(
                "created the origin secret in SSM parameter {}",
                config.origin_secret_parameter()
            ));
        }
    }
    let (edge_json, edge_outputs) = if config.has_edge_stack() {
        let (j, o) = up_edge(aws, ui, config, allow_replacement).await?;
        (j, Some(o))
    } else {
        (Value::Null, None)
    };
    let params = edge_parameters(config, edge_outputs.as_ref())?;
    let mut events = Vec::new();
    let state = describe(&aws.cfn, stack).await?;
    if let Some(s) = &state {
        check_status(stack, s)?;
    }
    let created = !exists(state.as_ref());
    if created {
        ui.say(format!(
            "creating stack {stack}: foundation (network, bucket, logs)"
        ));
        let foundation = template::foundation(config);
        create(&aws.cfn, ui, stack, &foundation, &[], &mut events).await?;
    }
    let bucket = physical_id(&aws.cfn, stack, "Bucket")
        .await?
        .ok_or_else(|| {
            anyhow!("stack {stack} has no resource Bucket: it was not created by bosun up")
        })?;
    let mut uploads = Vec::new();
    for a in [&req.artifacts.bosund, &req.artifacts.playbooks] {
        let uploaded = upload(aws, &bucket, a).await?;
        ui.say(format!(
            "{} s3://{bucket}/{}",
            if uploaded { "uploaded" } else { "present " },
            a.key
        ));
        uploads.push(json!({"key": a.key, "sha256": a.sha256, "uploaded": uploaded}));
    }
    let boot = boot_digests(
        deployed_boot(&aws.cfn, stack).await?,
        req.artifacts,
        req.refresh_boot,
    );
    if boot.bosund_sha256 != req.artifacts.bosund.sha256 {
        ui.say(
            "note: the host keeps the bosund it first booted with; `bosun run` updates a running \
             host (`--refresh-boot --allow-replacement` rebuilds it instead)",
        );
    }
    let full = template::full(config, req.public_key, &boot);
    let applied = apply(
        &aws.cfn,
        ui,
        stack,
        &full,
        &params,
        allow_replacement,
        &mut events,
    )
    .await?;
    if !ui.json {
        for (k, v) in &applied.state.outputs {
            println!("{k:<20} {v}");
        }
    }
    Ok(json!({
        "stack": stack,
        "status": applied.state.status,
        "created": created,
        "no_changes": applied.changes.is_empty(),
        "changes": applied.changes,
        "uploads": uploads,
        "events": events,
        "outputs": applied.state.outputs,
        "origin_secret_created": origin_secret_created,
        "edge": edge_json,
    }))
}

/// Deletes one stack and waits; `None` when it does not exist. With `has_bucket`, returns the
/// name of its `Bucket` (retained by CloudFormation).
async fn delete_stack(
    cfn: &Cfn,
    ui: Ui,
    stack: &str,
    has_bucket: bool,
) -> Result<Option<(Option<String>, Vec<Value>)>> {
    let Some(state) = describe(cfn, stack).await? else {
        ui.say(format!("stack {stack} does not exist: nothing to delete"));
        return Ok(None);
    };
    if state.status.ends_with("_IN_PROGRESS") && state.status != "REVIEW_IN_PROGRESS" {
        bail!(
            "stack {stack} is busy ({}): wait for it to finish, then run this again",
            state.status
        );
    }
    let bucket = if has_bucket {
        physical_id(cfn, &state.id, "Bucket").await?
    } else {
        None
    };
    let mut seen = event_ids(cfn, &state.id).await;
    cfn.delete_stack()
        .stack_name(&state.id)
        .send()
        .await
        .map_err(sdk_err)
        .with_context(|| format!("deleting stack {stack}"))?;
    ui.say(format!("deleting stack {stack}"));
    let mut events = Vec::new();
    wait(cfn, ui, &state.id, 0, &mut seen, &mut events).await?;
    Ok(Some((bucket, events)))
}

/// `bosun down`: delete the stack, then its edge stack (the distribution uses the
/// certificate), then the origin secret and the k3s join token; the bucket is kept unless `delete_data`.
pub async fn down(aws: &Aws, ui: Ui, config: &StackConfig, delete_data: bool) -> Result<Value> {
    let stack = &config.name;
    let main = delete_stack(&aws.cfn, ui, stack, true).await?;
    let edge_name = config.edge_stack_name();
    // Looked for even without [edge] in stack.toml now: an edge stack left by an earlier
    // config is still this stack's.
    let edge_deleted = if config.region != EDGE_REGION {
        delete_stack(&aws.edge_cfn, ui, &edge_name, false)
            .await?
            .is_some()
    } else {
        false
    };
    let secret_deleted = delete_parameter(aws, &config.origin_secret_parameter()).await?;
    let token_deleted = delete_parameter(aws, &config.k3s_token_parameter()).await?;
    let Some((bucket, events)) = main else {
        return Ok(json!({
            "stack": stack, "deleted": false, "bucket": null,
            "edge_stack": edge_name, "edge_deleted": edge_deleted,
            "origin_secret_deleted": secret_deleted, "k3s_token_deleted": token_deleted,
        }));
    };
    let mut bucket_deleted = false;
    match (&bucket, delete_data) {
        (Some(b), true) => {
            empty_and_delete(aws, b).await?;
            ui.say(format!("deleted bucket {b} and everything in it"));
            bucket_deleted = true;
        }
        (Some(b), false) => ui.say(format!(
            "kept bucket {b} (backups, artefacts); `bosun down --delete-data` deletes it"
        )),
        (None, _) => {}
    }
    if !ui.json {
        println!("stack {stack} deleted");
    }
    Ok(json!({
        "stack": stack, "deleted": true, "bucket": bucket, "bucket_deleted": bucket_deleted,
        "events": events, "edge_stack": edge_name, "edge_deleted": edge_deleted,
        "origin_secret_deleted": secret_deleted, "k3s_token_deleted": token_deleted,
    }))
}

/// Deletes a parameter `bosun up` or the host's first boot made under /bosun/<stack>/ (the
/// origin secret, the k3s join token); false when there was none.
async fn delete_parameter(aws: &Aws, name: &str) -> Result<bool> {
    match aws.ssm.delete_parameter().name(name).send().await {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_parameter_not_found()) =>
        {
            Ok(false)
        }
        Err(e) => Err(sdk_err(e)).with_context(|| format!("deleting SSM parameter {name}")),
    }
}

async fn empty_and_delete(aws: &Aws, bucket: &str) -> Result<()> {
    use aws_sdk_s3::types::{Delete, ObjectIdentifier};
    loop {
        let out = aws
            .s3
            .list_object_versions()
            .bucket(bucket)
            .send()
            .await
            .map_err(sdk_err)
            .with_context(|| format!("listing s3://{bucket} to empty it"))?;
        let ids: Vec<ObjectIdentifier> = out
            .versions()
            .iter()
            .map(|v| (v.key(), v.version_id()))
            .chain(
                out.delete_markers()
                    .iter()
                    .map(|m| (m.key(), m.version_id())),
            )
            .filter_map(|(k, v)| {
                ObjectIdentifier::builder()
                    .key(k?)
                    .set_version_id(v.map(str::to_string))
                    .build()
                    .ok()
            })
            .collect();
        if ids.is_empty() {
            break;
        }
        let delete = Delete::builder()
            .set_objects(Some(ids))
            .quiet(true)
            .build()
            .context("building the delete request")?;
        aws.s3
            .delete_objects()
            .bucket(bucket)
            .delete(delete)
            .send()
            .await
            .map_err(sdk_err)
            .with_context(|| format!("deleting objects in s3://{bucket}"))?;
    }
    aws.s3
        .delete_bucket()
        .bucket(bucket)
        .send()
        .await
        .map_err(sdk_err)
        .with_context(|| format!("deleting bucket {bucket}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_no_change_messages_are_recognised() {
        assert!(no_changes(
            "The submitted information didn't contain changes. Submit different information to create a change set."
        ));
        assert!(no_changes("No updates are to be performed."));
        assert!(!no_changes(
            "Template format error: Unresolved resource dependencies"
        ));
    }

    fn change(kind: &str, replacement: &str) -> ChangeLine {
        ChangeLine {
            action: "Modify".into(),
            logical_id: "X".into(),
            resource_type: kind.into(),
            replacement: replacement.into(),
        }
    }

    #[test]
    fn only_replacing_stateful_resources_needs_consent() {
        let changes = [
            change("AWS::EC2::Instance", "True"),
            change("AWS::RDS::DBInstance", "Conditional"),
            change("AWS::EC2::Instance", "False"),
            change("AWS::EC2::LaunchTemplate", "True"),
            change("AWS::S3::Bucket", ""),
        ];
        let g = guarded(&changes);
        assert_eq!(g.len(), 2, "{g:?}");
        assert_eq!(g[0].resource_type, "AWS::EC2::Instance");
        assert_eq!(g[1].resource_type, "AWS::RDS::DBInstance");
    }
}

//! Runs `ssm_parameter` against SSM Parameter Store; its arguments and their validation are
//! the model's (`bosun_model::steps::ssm_parameter`). The value never leaves this module
//! except to SSM (put) or to the engine as a secret (get): no message, diff or error holds it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_sdk_ssm::error::SdkError;
use aws_sdk_ssm::operation::get_parameter::GetParameterError;
use aws_sdk_ssm::types::ParameterType;
use bosun_model::steps::k3s::parse_timeout;
use bosun_model::steps::ssm_parameter::{SsmParameterArgs, SsmState};

use super::{Check, Outcome, StepContext, StepKind};
use crate::aws::{Aws, AwsTarget, describe_error};
use crate::host::fs::read_if_exists;
use crate::secrets::Secret;

/// Pause between two reads of a parameter that does not exist yet (`wait`).
const WAIT_POLL: Duration = Duration::from_secs(2);

async fn aws(args: &SsmParameterArgs) -> anyhow::Result<Aws> {
    Aws::connect(&AwsTarget {
        region: args.region.clone(),
        endpoint_url: args.endpoint_url.clone(),
    })
    .await
}

/// The parameter as SSM has it: value and type; `None` when it does not exist.
async fn current(
    client: &aws_sdk_ssm::Client,
    name: &str,
) -> anyhow::Result<Option<(Secret, String)>> {
    match client
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
    {
        Ok(out) => {
            let Some(p) = out.parameter else {
                return Ok(None);
            };
            let kind = p.r#type.map(|t| t.as_str().to_string()).unwrap_or_default();
            Ok(Some((Secret::new(p.value.unwrap_or_default()), kind)))
        }
        Err(SdkError::ServiceError(e))
            if matches!(e.err(), GetParameterError::ParameterNotFound(_)) =>
        {
            Ok(None)
        }
        Err(e) => bail!(
            "reading SSM parameter {name}: {} (check the role's ssm:GetParameter and \
             kms:Decrypt permissions)",
            describe_error(&e)
        ),
    }
}

/// The value a put writes: `value`, or `from_file`'s content with one trailing newline
/// removed. Errors name the file, never the content.
fn wanted_value(args: &SsmParameterArgs) -> anyhow::Result<Secret> {
    if let Some(v) = &args.value {
        return Ok(Secret::new(v.clone()));
    }
    let path = args.from_file.as_deref().unwrap_or_default();
    let bytes = read_if_exists(Path::new(path))?
        .with_context(|| format!("`from_file` {path} does not exist"))?;
    let mut text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("`from_file` {path} is not UTF-8 text"))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        bail!("`from_file` {path} is empty: nothing to put");
    }
    Ok(Secret::new(text))
}

/// What a put has to do.
#[derive(Debug)]
pub enum Planned {
    /// Write the parameter (`overwrite` when it exists).
    Put {
        /// The value.
        value: Secret,
        /// It exists already (another value or type).
        overwrite: bool,
    },
}

impl StepKind for SsmParameterArgs {
    type Change = Planned;

    async fn check(&self, ctx: &StepContext<'_>) -> anyhow::Result<Check<Planned>> {
        let aws = aws(self).await?;
        let client = aws.ssm();
        let name = self.name.trim();
        match self.state()? {
            SsmState::Get => {
                let wait = match &self.wait {
                    Some(w) => parse_timeout("wait", w).map_err(anyhow::Error::msg)?,
                    None => Duration::ZERO,
                };
                let started = Instant::now();
                let (value, kind) = loop {
                    match current(&client, name).await? {
                        Some(found) => break found,
                        None if started.elapsed() >= wait => bail!(
                            "SSM parameter {name} does not exist{}",
                            if wait.is_zero() {
                                String::new()
                            } else {
                                format!(" after waiting {}", humantime::format_duration(wait))
                            }
                        ),
                        None => tokio::time::sleep(WAIT_POLL).await,
                    }
                };
                ctx.read_secret.set(value);
                Ok(Check::unchanged(Some(format!(
                    "read {name} ({kind}); `register` holds it as `value`, masked in events"
                ))))
            }
            SsmState::Put => {
                let value = wanted_value(self)?;
                let found = current(&client, name).await?;
                match found {
                    Some((old, kind)) if old == value && kind == self.kind => Ok(Check::unchanged(
                        Some(format!("{name} ({kind}) holds the value")),
                    )),
                    Some((_, kind)) => {
                        if !self.overwrite {
                            bail!(
                                "SSM parameter {name} exists with another value{}: set \
                                 `overwrite = true` to replace it; nothing was written",
                                if kind == self.kind {
                                    String::new()
                                } else {
                                    format!(" (type {kind})")
                                }
                            );
                        }
                        Ok(Check::change(
                            Planned::Put {
                                value,
                                overwrite: true,
                            },
                            format!("update {name} ({})", self.kind),
                        ))
                    }
                    None => Ok(Check::change(
                        Planned::Put {
                            value,
                            overwrite: false,
                        },
                        format!("create {name} ({})", self.kind),
                    )),
                }
            }
        }
    }

    async fn apply(&self, _ctx: &StepContext<'_>, plan: Planned) -> anyhow::Result<Outcome> {
        let Planned::Put { value, overwrite } = plan;
        let aws = aws(self).await?;
        let name = self.name.trim();
        let mut put = aws
            .ssm()
            .put_parameter()
            .name(name)
            .value(value.expose())
            .r#type(ParameterType::from(self.kind.as_str()))
            .overwrite(overwrite);
        if let Some(k) = &self.key_id {
            put = put.key_id(k);
        }
        if let Some(d) = &self.description {
            put = put.description(d);
        }
        put.send().await.map_err(|e| {
            anyhow::anyhow!(
                "writing SSM parameter {name}: {} (check the role's ssm:PutParameter \
                 permission on it, and kms:Encrypt for a SecureString)",
                describe_error(&e)
            )
        })?;
        Ok(Outcome {
            changed: true,
            message: Some(format!(
                "{} {name} ({})",
                if overwrite { "updated" } else { "created" },
                self.kind
            )),
            ..Outcome::default()
        })
    }
}

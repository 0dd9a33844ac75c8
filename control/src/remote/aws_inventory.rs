//! `--inventory aws:<stack>` (or `aws:<region>/<stack>`): the stack's running instances, found
//! by the tags `bosun up` puts on them (`bosun:stack`, `bosun:role`, `bosun:address`,
//! `bosun:login-user`; see `crate::stack::config::tags`), as an [`Inventory`] with the groups
//! `server` and `agent`.
//!
//! How a host is reached is decided here, from its `bosun:address` tag (what stack.toml
//! configured), not from whatever addresses EC2 happens to report: `public` connects to its
//! public address; `private` connects to its private address through a server with a public
//! one, as a ProxyJump (russh's direct-tcpip channel, see `super::ssh`). A ProxyJump the
//! operator's `~/.ssh/config` sets for that address wins.
//!
//! [`plan`] is pure (instances in, inventory out) and unit-tested; [`describe`] talks to
//! CloudFormation (does the stack exist?) and EC2 (`DescribeInstances`, filtered by tag,
//! every page).

use anyhow::{Context, Result, anyhow, bail};
use aws_sdk_ec2::config::ProvideCredentials;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::Filter;
use bosun_aws::{AwsConfig, AwsTarget, describe_error_at};
use serde_json::{Map, Value};

use super::inventory::{Inventory, InventoryHost, Jump};

use crate::stack::config::tags::{
    ADDRESS as TAG_ADDRESS, LOGIN_USER as TAG_LOGIN_USER, ROLE as TAG_ROLE, STACK as TAG_STACK,
};

/// The groups an EC2 inventory has, in this order.
pub const GROUPS: [&str; 2] = ["server", "agent"];

/// `aws:<stack>` or `aws:<region>/<stack>`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackRef {
    /// The region, when given; else the chain's (`AWS_REGION`, profile).
    pub region: Option<String>,
    /// The stack's name.
    pub stack: String,
}

impl StackRef {
    /// `Some` for an `aws:` inventory argument; an error when its stack name is malformed.
    pub fn parse(arg: &str) -> Option<Result<StackRef>> {
        let rest = arg.strip_prefix("aws:")?;
        let (region, stack) = match rest.split_once('/') {
            Some((r, s)) => (Some(r.to_string()), s),
            None => (None, rest),
        };
        let ok = !stack.is_empty()
            && stack.len() <= 128
            && stack.starts_with(|c: char| c.is_ascii_alphabetic())
            && stack.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && region.as_deref().is_none_or(|r| {
                !r.is_empty()
                    && r.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            });
        Some(if ok {
            Ok(StackRef {
                region,
                stack: stack.to_string(),
            })
        } else {
            Err(anyhow!(
                "--inventory {arg:?}: expected aws:<stack> or aws:<region>/<stack>, e.g. \
                 aws:prod-1 or aws:eu-west-1/prod-1"
            ))
        })
    }
}

/// One instance of the stack, as EC2 describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackInstance {
    pub id: String,
    /// `bosun:role`.
    pub role: Option<String>,
    /// `bosun:address`: `public` or `private`.
    pub address: Option<String>,
    /// `bosun:login-user`.
    pub login_user: Option<String>,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
    pub private_dns_name: Option<String>,
    /// RFC 3339, for a stable order (oldest first).
    pub launched: String,
}

/// The inventory of `stack`'s running `instances`: servers then agents, oldest first, each
/// named by its instance id, with its address, login user, jump host and variables
/// (`ec2_instance_id`, `ec2_private_ip`, `ec2_public_ip`, `ec2_private_dns_name`,
/// `bosun_role`).
pub fn plan(stack: &str, instances: &[StackInstance]) -> Result<Inventory> {
    let mut sorted: Vec<&StackInstance> = instances.iter().collect();
    sorted.sort_by(|a, b| {
        let rank = |i: &StackInstance| {
            GROUPS
                .iter()
                .position(|g| Some(*g) == i.role.as_deref())
                .unwrap_or(GROUPS.len())
        };
        (rank(a), &a.launched, &a.id).cmp(&(rank(b), &b.launched, &b.id))
    });
    // The bastion: the first server reached by its public address.
    let bastion = sorted.iter().find(|i| {
        i.role.as_deref() == Some("server")
            && i.address.as_deref() == Some("public")
            && i.public_ip.is_some()
    });
    let mut hosts = Vec::new();
    let mut groups: Vec<(String, Vec<String>)> =
        GROUPS.iter().map(|g| (g.to_string(), Vec::new())).collect();
    for i in &sorted {
        let Some(role) = i.role.as_deref().filter(|r| GROUPS.contains(r)) else {
            bail!(
                "instance {} of stack {stack} has no {TAG_ROLE} tag of server or agent (it has \
                 {:?}): was it made by bosun up?",
                i.id,
                i.role
            );
        };
        let (address, jump) = match i.address.as_deref() {
            Some("public") => {
                let Some(ip) = &i.public_ip else {
                    bail!(
                        "{role} {} of stack {stack} is tagged {TAG_ADDRESS}=public but has no \
                         public address",
                        i.id
                    );
                };
                (ip.clone(), None)
            }
            Some("private") => {
                let Some(ip) = &i.private_ip else {
                    bail!("{role} {} of stack {stack} has no private address", i.id);
                };
                let Some(b) = bastion else {
                    bail!(
                        "{role} {} of stack {stack} has a private address only, and no running \
                         server has a public one to jump through",
                        i.id
                    );
                };
                let jump = Jump {
                    user: b.login_user.clone(),
                    address: b.public_ip.clone().expect("bastion has a public address"),
                };
                (ip.clone(), Some(jump))
            }
            other => bail!(
                "{role} {} of stack {stack} has no {TAG_ADDRESS} tag of public or private (it \
                 has {other:?}): was it made by bosun up?",
                i.id
            ),
        };
        let mut vars = Map::new();
        vars.insert("bosun_role".into(), Value::from(role));
        vars.insert("ec2_instance_id".into(), Value::from(i.id.as_str()));
        for (k, v) in [
            ("ec2_private_ip", &i.private_ip),
            ("ec2_public_ip", &i.public_ip),
            ("ec2_private_dns_name", &i.private_dns_name),
        ] {
            if let Some(v) = v {
                vars.insert(k.into(), Value::from(v.as_str()));
            }
        }
        groups
            .iter_mut()
            .find(|(g, _)| g == role)
            .expect("a known group")
            .1
            .push(i.id.clone());
        hosts.push(InventoryHost {
            name: i.id.clone(),
            address,
            user: i.login_user.clone(),
            port: None,
            vars,
            bosund_path: None,
            state_dir: None,
            api_url: None,
            jump,
        });
    }
    Ok(Inventory::from_parts(hosts, groups))
}

/// The running instances of `stack`: an error that says what to do when the stack does not
/// exist, has no running instance, or AWS cannot be reached (no region, no credentials).
pub async fn describe(stack: &StackRef) -> Result<Vec<StackInstance>> {
    let config = AwsConfig::load(&AwsTarget {
        region: stack.region.clone(),
        endpoint_url: None,
    })
    .await;
    let Some(region) = config.region().map(str::to_string) else {
        bail!(
            "--inventory aws:{}: no AWS region: set AWS_REGION (or a profile's region), or \
             name it: aws:<region>/{}",
            stack.stack,
            stack.stack
        );
    };
    let endpoint = config.endpoint_label();
    let name = &stack.stack;
    // Before any request: the SDK's own words for a missing chain say nothing of what to set.
    let credentials = match config.sdk.credentials_provider() {
        Some(p) => p.provide_credentials().await.map_err(|e| e.to_string()),
        None => Err("no credentials provider".to_string()),
    };
    if let Err(e) = credentials {
        bail!(
            "--inventory aws:{name}: no AWS credentials ({e}): set AWS_PROFILE, or \
             AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where an instance role applies"
        );
    }
    let cfn = aws_sdk_cloudformation::Client::new(&config.sdk);
    match cfn.describe_stacks().stack_name(name).send().await {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .and_then(|s| s.message())
                .is_some_and(|m| m.contains("does not exist")) =>
        {
            bail!(
                "--inventory aws:{name}: stack {name} does not exist in {region} ({endpoint}): \
                 check the name and the region (AWS_REGION, or aws:<region>/{name})"
            );
        }
        Err(e) => {
            return Err(aws_error(e, &endpoint))
                .with_context(|| format!("--inventory aws:{name}: describing stack {name}"));
        }
    }
    let ec2 = aws_sdk_ec2::Client::new(&config.sdk);
    let mut pages = ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name(format!("tag:{TAG_STACK}"))
                .values(name)
                .build(),
        )
        .into_paginator()
        .send();
    let mut running = Vec::new();
    let mut others = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page
            .map_err(|e| aws_error(e, &endpoint))
            .with_context(|| format!("--inventory aws:{name}: listing the stack's instances"))?;
        for i in page.reservations().iter().flat_map(|r| r.instances()) {
            let id = i.instance_id().unwrap_or_default().to_string();
            let state = i
                .state()
                .and_then(|s| s.name())
                .map_or("unknown", |s| s.as_str())
                .to_string();
            if state != "running" {
                others.push(format!("{id} {state}"));
                continue;
            }
            let tag = |key: &str| {
                i.tags()
                    .iter()
                    .find(|t| t.key() == Some(key))
                    .and_then(|t| t.value())
                    .map(str::to_string)
            };
            running.push(StackInstance {
                id,
                role: tag(TAG_ROLE),
                address: tag(TAG_ADDRESS),
                login_user: tag(TAG_LOGIN_USER),
                private_ip: i.private_ip_address().map(str::to_string),
                public_ip: i.public_ip_address().map(str::to_string),
                private_dns_name: i
                    .private_dns_name()
                    .filter(|n| !n.is_empty())
                    .map(str::to_string),
                launched: i.launch_time().map(|t| t.to_string()).unwrap_or_default(),
            });
        }
    }
    if running.is_empty() {
        if others.is_empty() {
            bail!(
                "--inventory aws:{name}: stack {name} has no instance tagged {TAG_STACK}={name} \
                 in {region} (stacks made before bosun tagged its instances get the tags from \
                 the next `bosun up`)"
            );
        }
        bail!(
            "--inventory aws:{name}: stack {name} has no running instance ({})",
            others.join(", ")
        );
    }
    Ok(running)
}

/// An SDK error as one line naming the endpoint.
fn aws_error<E, R>(e: SdkError<E, R>, endpoint: &str) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    anyhow!(describe_error_at(&e, endpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, role: &str, address: &str, public: Option<&str>) -> StackInstance {
        StackInstance {
            id: id.into(),
            role: Some(role.into()),
            address: Some(address.into()),
            login_user: Some("admin".into()),
            private_ip: Some(format!("10.42.0.{}", id.len())),
            public_ip: public.map(str::to_string),
            private_dns_name: None,
            launched: format!("2026-01-01T00:00:0{}Z", id.len() % 10),
        }
    }

    #[test]
    fn stack_refs() {
        assert!(StackRef::parse("inv.toml").is_none());
        let r = StackRef::parse("aws:prod-1").unwrap().unwrap();
        assert_eq!((r.region, r.stack.as_str()), (None, "prod-1"));
        let r = StackRef::parse("aws:eu-west-1/prod-1").unwrap().unwrap();
        assert_eq!(r.region.as_deref(), Some("eu-west-1"));
        for bad in ["aws:", "aws:1x", "aws:a b", "aws:/x", "aws:EU/x"] {
            let e = StackRef::parse(bad).unwrap().unwrap_err().to_string();
            assert!(e.contains("aws:<region>/<stack>"), "{bad}: {e}");
        }
    }

    #[test]
    fn servers_come_first_and_private_agents_jump_through_the_server() {
        let inv = plan(
            "prod-1",
            &[
                instance("i-agent2", "agent", "private", Some("198.51.100.9")),
                instance("i-srv", "server", "public", Some("203.0.113.5")),
                instance("i-agent1", "agent", "private", None),
            ],
        )
        .unwrap();
        let all = inv.select(None).unwrap();
        let names: Vec<&str> = all.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["i-srv", "i-agent1", "i-agent2"]);
        assert_eq!(all[0].address, "203.0.113.5");
        assert_eq!(all[0].jump, None);
        // Configured private: the private address, through the server, even when EC2 also
        // reports a public one.
        for agent in &all[1..] {
            assert!(agent.address.starts_with("10.42.0."), "{agent:?}");
            assert_eq!(
                agent.jump,
                Some(Jump {
                    user: Some("admin".into()),
                    address: "203.0.113.5".into()
                })
            );
            assert_eq!(agent.vars["bosun_role"], "agent");
        }
        let agents: Vec<String> = inv
            .select(Some("agent"))
            .unwrap()
            .into_iter()
            .map(|h| h.name)
            .collect();
        assert_eq!(agents, ["i-agent1", "i-agent2"]);
        assert_eq!(inv.select(Some("server")).unwrap()[0].name, "i-srv");
    }

    #[test]
    fn what_cannot_be_reached_is_an_error() {
        let e = plan("p", &[instance("i-a", "agent", "private", None)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no running server has a public one"), "{e}");
        let e = plan("p", &[instance("i-a", "agent", "public", None)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bosun:address=public but has no public address"),
            "{e}"
        );
        let mut odd = instance("i-x", "agent", "public", Some("1.2.3.4"));
        odd.role = None;
        let e = plan("p", &[odd]).unwrap_err().to_string();
        assert!(e.contains("no bosun:role tag"), "{e}");
    }
}

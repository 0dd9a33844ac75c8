//! `bosun hosts`: the hosts `--host`/`--inventory`/`--limit` select, as `run` and `status` would
//! reach them (address, user, port, jump hosts, groups, variables), without connecting: an
//! inventory read from EC2 (`aws:<stack>`) can be checked before anything runs on it.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use serde_json::{Value, json};

use super::{TargetArgs, targets};

/// `bosun hosts` arguments.
#[derive(Args, Debug)]
pub struct HostsArgs {
    #[command(flatten)]
    target: TargetArgs,
}

/// Prints one line (or one JSON Lines record) per selected host.
pub fn run(args: HostsArgs, json: bool) -> Result<ExitCode> {
    for t in targets(&args.target)? {
        let jumps: Vec<String> = t
            .endpoint
            .as_ref()
            .map(|e| e.jumps.iter().map(|j| j.display()).collect())
            .unwrap_or_default();
        if json {
            println!(
                "{}",
                json!({
                    "name": t.name,
                    "groups": t.groups,
                    "address": t.address,
                    "jumps": jumps,
                    "vars": Value::Object(t.vars),
                })
            );
        } else {
            let via = if jumps.is_empty() {
                String::new()
            } else {
                format!(" via {}", jumps.join(" → "))
            };
            println!(
                "{:<22} {:<14} {}{via}",
                t.name,
                t.groups.join(","),
                t.address
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

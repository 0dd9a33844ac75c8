//! Remote control: `bosun run`, `bosun status` and `bosun backups` over SSH.
//!
//! ```text
//! mod.rs        what the commands share: --host / --inventory selection resolved to Targets
//!   run         `bosun run`: arguments, playbook lookup and validation, per-host job, fleet
//!   status      `bosun status`: bosund's version, uptime, last runs
//!   backups     `bosun backups list|restore`: `bosund backups ... --output json` on the host
//!   hosts       `bosun hosts`: the selected hosts, how each is reached (no connection)
//!   target      --host / inventory entry + ~/.ssh/config → ssh::Endpoint
//!   ssh_config  the ssh_config(5) subset honoured (pure)
//!   known_hosts host key verdicts, recording new keys
//!   ssh         russh connection: host key check, auth (keys, agent), ProxyJump, exec
//!   bosund      bosund on the host: probe (SHA-256), atomic upload
//!   api         `--via api`: the agent's HTTP API through the SSH tunnel or over TLS
//!   inventory   inventory TOML → hosts with merged vars (pure)
//!   aws_inventory  `--inventory aws:<stack>`: the stack's instances by tag → an inventory
//!   fleet       forks / serial / max-fail scheduling (pure policy, generic scheduler)
//!   rolling     rolling k3s upgrades: roles, the version skew check, servers then agents
//!               (cordon, drain, upgrade, Ready, uncordon), generic over a Runner
//!   report      human (agent renderer + indicatif) and JSON Lines output, summary table
//! ```

mod api;
mod aws_inventory;
pub mod backups;
mod bosund;
mod bundle;
mod fleet;
pub mod hosts;
mod inventory;
mod known_hosts;
mod report;
mod rolling;
pub mod run;
mod ssh;
mod ssh_config;
pub mod status;
mod target;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Map, Value};

use inventory::Inventory;
use ssh::{Endpoint, HostKeyPolicy};
use target::{HostArg, Resolver};

/// Which hosts, and how to reach them (shared by `run` and `status`).
#[derive(Args, Debug)]
pub struct TargetArgs {
    /// A host: `[user@]host[:port]` or a `~/.ssh/config` alias; or, for `run --via api`, the
    /// agent's TLS listener `https://host:port`. Repeat for several.
    #[arg(
        long = "host",
        value_name = "[USER@]HOST[:PORT]",
        required_unless_present = "inventory",
        conflicts_with = "inventory"
    )]
    hosts: Vec<String>,
    /// An inventory file (TOML: [hosts.NAME] and [groups.NAME]), or `aws:<stack>`
    /// (`aws:<region>/<stack>`): the stack's running instances, in the groups `server` and
    /// `agent`, found by their tags with the AWS credentials and region of the environment.
    #[arg(long, value_name = "FILE|aws:STACK")]
    inventory: Option<PathBuf>,
    /// Only these groups or hosts of the inventory (comma-separated).
    #[arg(long, value_name = "GROUP", requires = "inventory")]
    limit: Option<String>,
    /// A private key to offer first (repeatable); then IdentityFile, ssh-agent, ~/.ssh/id_*.
    #[arg(short = 'i', long = "identity", value_name = "KEY")]
    identities: Vec<PathBuf>,
    /// Trust and record a host key not yet in known_hosts. A changed key is always refused.
    #[arg(long)]
    accept_new_host_key: bool,
    /// Seconds to wait for a connection and handshake.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    connect_timeout: u64,
    /// bosund's path on the hosts [default: /usr/local/bin/bosund as root, else
    /// ~/.local/bin/bosund]; an inventory host's `bosund_path` wins.
    #[arg(long, value_name = "PATH")]
    remote_bosund: Option<String>,
    /// bosund's state directory (journal) on the hosts [default: bosund's own]; an inventory
    /// host's `state_dir` wins.
    #[arg(long, value_name = "DIR")]
    remote_state_dir: Option<String>,
    /// Hosts at once.
    #[arg(long, default_value_t = 10, value_name = "N")]
    forks: usize,
}

/// One selected host, resolved.
struct Target {
    name: String,
    /// `user@host:port`, or the API's URL.
    address: String,
    /// How to reach it over SSH; `None` for an `https://` agent API.
    endpoint: Option<Endpoint>,
    vars: Map<String, Value>,
    bosund_path: Option<String>,
    state_dir: Option<String>,
    /// The inventory's `api_url`: where `--via api` reaches it instead of through SSH.
    api_url: Option<String>,
    /// The inventory groups it is in (none for `--host`).
    groups: Vec<String>,
}

/// The selected hosts in order (`--host` as given, or the inventory's after `--limit`), each
/// resolved against `~/.ssh/config`; an error when none is selected or one is given twice.
fn targets(args: &TargetArgs) -> Result<Vec<Target>> {
    let resolver = Resolver::new(
        args.identities.clone(),
        Duration::from_secs(args.connect_timeout.max(1)),
    )?;
    let mut out = Vec::new();
    if let Some(file) = &args.inventory {
        let inv = load_inventory(file)?;
        for h in inv.select(args.limit.as_deref())? {
            let endpoint = resolver.inventory_endpoint(&h)?;
            out.push(Target {
                address: endpoint.display(),
                endpoint: Some(endpoint),
                groups: inv.groups_of(&h.name),
                name: h.name,
                vars: h.vars,
                bosund_path: h.bosund_path.or(args.remote_bosund.clone()),
                state_dir: h.state_dir.or(args.remote_state_dir.clone()),
                api_url: h.api_url,
            });
        }
    } else {
        for h in &args.hosts {
            if out.iter().any(|t: &Target| t.name == *h) {
                bail!("--host {h} is given twice");
            }
            let endpoint = if h.contains("://") {
                api::parse_url(h).with_context(|| format!("--host {h}"))?;
                None
            } else {
                let arg = HostArg::parse(h).with_context(|| format!("--host {h}"))?;
                Some(resolver.endpoint(&arg)?)
            };
            out.push(Target {
                address: endpoint
                    .as_ref()
                    .map_or_else(|| h.clone(), Endpoint::display),
                endpoint,
                name: h.clone(),
                vars: Map::new(),
                bosund_path: args.remote_bosund.clone(),
                state_dir: args.remote_state_dir.clone(),
                api_url: None,
                groups: Vec::new(),
            });
        }
    }
    if out.is_empty() {
        bail!("no host selected: pass --host HOST or --inventory FILE");
    }
    Ok(out)
}

/// `--inventory`: a TOML file, or the running instances of an `aws:` stack.
fn load_inventory(arg: &std::path::Path) -> Result<Inventory> {
    if let Some(stack) = arg.to_str().and_then(aws_inventory::StackRef::parse) {
        let stack = stack?;
        let instances = crate::runtime()?.block_on(aws_inventory::describe(&stack))?;
        return aws_inventory::plan(&stack.stack, &instances);
    }
    let text = std::fs::read_to_string(arg)
        .with_context(|| format!("cannot read the inventory {}", arg.display()))?;
    Inventory::parse(&text, &arg.display().to_string())
}

/// What `--accept-new-host-key` asks of the host key check.
fn host_key_policy(args: &TargetArgs) -> HostKeyPolicy {
    HostKeyPolicy {
        accept_new: args.accept_new_host_key,
    }
}

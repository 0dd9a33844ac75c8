//! `bosun backups list` and `bosun backups restore`: `bosund backups ... --output json` on the
//! host over SSH (like `bosun status`), parsed into the model's documents
//! ([`Listing`], [`Restored`]) and rendered with the same renderers as `bosund`'s, so both ends agree.
//!
//! The host does the work with its own credentials (instance role) and network: S3 and the
//! database are reached from there, and `--password-source` (`env:`, `file:`, `ssm:`) is read
//! there. Nothing secret crosses this connection or the command line: only the source's name.

use std::process::ExitCode;

use anyhow::{Result, bail};
use bosun_model::backup::report::{Listing, Restored, render_listing, render_restored};
use clap::{Args, Subcommand};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::ssh::{Ssh, shell_quote};
use super::{Target, TargetArgs, bosund, host_key_policy, targets};
use crate::{exit, runtime};

/// `bosun backups ...`.
#[derive(Subcommand, Debug)]
pub enum BackupsCommand {
    /// List the backups under an S3 prefix, as the host sees them.
    List(ListArgs),
    /// Restore a backup into a database reached from the host (one host).
    Restore(RestoreArgs),
}

/// Where the backups are (both subcommands).
#[derive(Args, Debug)]
pub struct S3Args {
    /// The bucket.
    #[arg(long)]
    bucket: String,
    /// AWS region on the host [default: the host's].
    #[arg(long)]
    region: Option<String>,
    /// S3 (and SSM) endpoint for the host to use instead of AWS's.
    #[arg(long, value_name = "URL")]
    endpoint_url: Option<String>,
}

/// `bosun backups list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    s3: S3Args,
    /// Only backups under this prefix (e.g. `backups/mysql/shop/`).
    #[arg(long, default_value = "")]
    prefix: String,
}

/// `bosun backups restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    s3: S3Args,
    /// Key of the backup object (as `bosun backups list` shows it).
    #[arg(long)]
    key: String,
    /// Database server, as the host reaches it.
    #[arg(long, default_value = "127.0.0.1")]
    db_host: String,
    /// Its port.
    #[arg(long, default_value_t = 3306)]
    db_port: u16,
    /// Account that may create and drop the database.
    #[arg(long)]
    db_user: String,
    /// Where the host finds the password: `env:NAME`, `file:/path` or `ssm:/parameter/name`.
    #[arg(long, value_name = "SOURCE")]
    password_source: String,
    /// Database to restore into.
    #[arg(long)]
    database: String,
    /// Replace the database if it exists and holds tables, views, routines or events (after
    /// a rehearsal restore into a scratch database on the same server proves the backup).
    #[arg(long)]
    force: bool,
}

/// Runs a `bosun backups` command. Exit 0 done, 1 refused or failed on a host, 4 a host was
/// unreachable or had no usable bosund.
pub fn run(command: BackupsCommand, json_out: bool) -> Result<ExitCode> {
    match command {
        BackupsCommand::List(a) => list(a, json_out),
        BackupsCommand::Restore(a) => restore(a, json_out),
    }
}

fn s3_args(s3: &S3Args) -> String {
    let mut args = format!(" --bucket {}", shell_quote(&s3.bucket));
    if let Some(r) = &s3.region {
        args.push_str(&format!(" --region {}", shell_quote(r)));
    }
    if let Some(u) = &s3.endpoint_url {
        args.push_str(&format!(" --endpoint-url {}", shell_quote(u)));
    }
    args
}

/// The `bosund backups list` command line (its arguments quoted for the remote shell).
fn list_command(bosund: &str, s3: &S3Args, prefix: &str) -> String {
    format!(
        "{} backups list{} --prefix {} --output json",
        shell_quote(bosund),
        s3_args(s3),
        shell_quote(prefix)
    )
}

/// The `bosund backups restore` command line.
fn restore_command(bosund: &str, a: &RestoreArgs) -> String {
    let mut cmd = format!(
        "{} backups restore{} --key {} --host {} --port {} --user {} --password-source {} --database {} --output json",
        shell_quote(bosund),
        s3_args(&a.s3),
        shell_quote(&a.key),
        shell_quote(&a.db_host),
        a.db_port,
        shell_quote(&a.db_user),
        shell_quote(&a.password_source),
        shell_quote(&a.database)
    );
    if a.force {
        cmd.push_str(" --force");
    }
    cmd
}

/// How one host's command went.
enum HostResult<T> {
    /// bosund answered with the document.
    Done(T),
    /// bosund ran and refused or failed (its message).
    Failed(String),
    /// The host could not be reached, or bosund could not run there.
    Unreachable(String),
}

/// Connects, finds bosund, runs `command(path)` and parses its JSON document.
async fn on_host<T: DeserializeOwned>(
    t: &Target,
    args: &TargetArgs,
    command: impl FnOnce(&str) -> String,
) -> HostResult<T> {
    let Some(endpoint) = &t.endpoint else {
        return HostResult::Unreachable(format!(
            "bosun backups works over SSH: give [user@]host[:port], not {}",
            t.address
        ));
    };
    let ssh = match Ssh::connect(endpoint, host_key_policy(args)).await {
        Ok(s) => s,
        Err(e) => return HostResult::Unreachable(format!("{e:#}")),
    };
    let result = run_bosund(&ssh, t, command).await;
    ssh.close().await;
    result
}

async fn run_bosund<T: DeserializeOwned>(
    ssh: &Ssh,
    t: &Target,
    command: impl FnOnce(&str) -> String,
) -> HostResult<T> {
    let installed = match bosund::probe(ssh, t.bosund_path.as_deref()).await {
        Ok(i) => i,
        Err(e) => return HostResult::Unreachable(format!("{e:#}")),
    };
    if installed.sha256.is_none() {
        return HostResult::Unreachable(format!(
            "bosund is not installed at {} (`bosun run` installs it; or pass --remote-bosund)",
            installed.path
        ));
    }
    let out = match ssh.exec(&command(&installed.path)).await {
        Ok(o) => o,
        Err(e) => return HostResult::Unreachable(format!("{e:#}")),
    };
    let doc: Option<Value> = serde_json::from_slice(&out.stdout).ok();
    match (out.code, doc) {
        (Some(0), Some(v)) => match serde_json::from_value(v) {
            Ok(t) => HostResult::Done(t),
            Err(e) => HostResult::Failed(format!("bosund answered something unexpected: {e}")),
        },
        (Some(1), Some(v)) if v["error"].is_string() => {
            HostResult::Failed(v["error"].as_str().unwrap_or_default().to_string())
        }
        (code, _) => HostResult::Unreachable(format!(
            "bosund backups failed (exit {code:?}): {} (is bosund on the host older than `backups`? `bosun run` updates it)",
            out.stderr_text()
        )),
    }
}

fn list(a: ListArgs, json_out: bool) -> Result<ExitCode> {
    let targets = targets(&a.target)?;
    let rt = runtime()?;
    let mut code = exit::OK;
    let mut docs = Vec::new();
    for t in &targets {
        let r: HostResult<Listing> = rt.block_on(on_host(t, &a.target, |bosund| {
            list_command(bosund, &a.s3, &a.prefix)
        }));
        match r {
            HostResult::Done(listing) => {
                if !json_out {
                    println!("{}:", t.name);
                    render_listing(&listing, &mut std::io::stdout().lock())?;
                }
                docs.push(json!({"host": t.name, "listing": listing}));
            }
            HostResult::Failed(e) => {
                code = code.max(exit::FAILED);
                if !json_out {
                    println!("{}: failed: {e}", t.name);
                }
                docs.push(json!({"host": t.name, "error": e}));
            }
            HostResult::Unreachable(e) => {
                code = code.max(exit::UNREACHABLE);
                if !json_out {
                    println!("{}: unreachable: {e}", t.name);
                }
                docs.push(json!({"host": t.name, "error": e, "unreachable": true}));
            }
        }
    }
    if json_out {
        println!(
            "{}",
            serde_json::to_string(&json!({"hosts": docs})).expect("serialises")
        );
    }
    Ok(ExitCode::from(code))
}

fn restore(a: RestoreArgs, json_out: bool) -> Result<ExitCode> {
    let targets = targets(&a.target)?;
    let [t] = targets.as_slice() else {
        bail!(
            "a restore runs on one host; {} are selected (give one --host, or --limit the inventory to one)",
            targets.len()
        );
    };
    let rt = runtime()?;
    let r: HostResult<Restored> =
        rt.block_on(on_host(t, &a.target, |bosund| restore_command(bosund, &a)));
    let (doc, code) = match r {
        HostResult::Done(restored) => {
            if !json_out {
                print!("{}: ", t.name);
                render_restored(&restored, &mut std::io::stdout().lock())?;
            }
            (json!({"host": t.name, "restored": restored}), exit::OK)
        }
        HostResult::Failed(e) => {
            if !json_out {
                println!("{}: restore refused or failed: {e}", t.name);
            }
            (json!({"host": t.name, "error": e}), exit::FAILED)
        }
        HostResult::Unreachable(e) => {
            if !json_out {
                println!("{}: unreachable: {e}", t.name);
            }
            (
                json!({"host": t.name, "error": e, "unreachable": true}),
                exit::UNREACHABLE,
            )
        }
    };
    if json_out {
        println!("{}", serde_json::to_string(&doc).expect("serialises"));
    }
    Ok(ExitCode::from(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_quoted_for_the_remote_shell() {
        let s3 = S3Args {
            bucket: "b".into(),
            region: None,
            endpoint_url: Some("http://127.0.0.1:5000".into()),
        };
        assert_eq!(
            list_command("/opt/bosund", &s3, "it's/"),
            "/opt/bosund backups list --bucket b --endpoint-url http://127.0.0.1:5000 --prefix 'it'\\''s/' --output json"
        );
    }
}

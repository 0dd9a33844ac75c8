//! `bosun status`: per host, over SSH, bosund's path, digest and version, the host's uptime,
//! its last runs (`bosund history`) and its drift report (`bosund drift`: the steps scheduled
//! check runs found would change). A host that cannot be reached is shown as such and makes
//! the exit code [`exit::UNREACHABLE`]; the others are still shown.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;
use serde_json::{Value, json};

use super::bosund;
use super::ssh::{HostKeyPolicy, Ssh, shell_quote};
use super::{Target, TargetArgs, host_key_policy, targets};
use crate::{exit, runtime};

/// `bosun status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// How many recent runs to show.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

/// `bosun status`: bosund's version, the host's uptime and its last runs.
pub fn run(args: StatusArgs, json: bool) -> Result<ExitCode> {
    let targets = targets(&args.target)?;
    let policy = host_key_policy(&args.target);
    let rt = runtime()?;
    let mut results = Vec::new();
    let mut code = exit::OK;
    for t in &targets {
        let r = rt.block_on(host_status(t, policy, args.runs));
        match r {
            Ok(v) => results.push(v),
            Err(e) => {
                code = exit::UNREACHABLE.max(code);
                results.push(json!({"host": t.name, "error": format!("{e:#}")}));
            }
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string(&json!({"hosts": results})).expect("serialises")
        );
    } else {
        for r in &results {
            print_status(r);
        }
    }
    Ok(ExitCode::from(code))
}

async fn host_status(t: &Target, policy: HostKeyPolicy, runs: usize) -> Result<Value> {
    let Some(endpoint) = &t.endpoint else {
        bail!(
            "bosun status works over SSH: give [user@]host[:port], not {}",
            t.address
        );
    };
    let ssh = Ssh::connect(endpoint, policy).await?;
    let installed = bosund::probe(&ssh, t.bosund_path.as_deref()).await?;
    let uptime = ssh.exec("cat /proc/uptime").await?;
    let uptime_s = String::from_utf8_lossy(&uptime.stdout)
        .split_whitespace()
        .next()
        .and_then(|s| s.parse::<f64>().ok());
    let mut v = json!({
        "host": t.name,
        "address": t.address,
        "uptime_s": uptime_s,
        "bosund": {"path": installed.path, "sha256": installed.sha256},
    });
    if installed.sha256.is_some() {
        let bin = shell_quote(&installed.path);
        let version = ssh.exec(&format!("{bin} --version")).await?;
        v["bosund"]["version"] = json!(String::from_utf8_lossy(&version.stdout).trim());
        let state = t
            .state_dir
            .as_deref()
            .map(|d| format!(" --state-dir {}", shell_quote(d)))
            .unwrap_or_default();
        let history = ssh
            .exec(&format!(
                "{bin}{state} history --output json --limit {runs}"
            ))
            .await?;
        v["runs"] = if history.code == Some(0) {
            json_lines(&history.stdout)
        } else {
            json!({"error": history.stderr_text()})
        };
        let drift = ssh
            .exec(&format!("{bin}{state} drift --output json"))
            .await?;
        v["drift"] = if drift.code == Some(0) {
            json_lines(&drift.stdout)
        } else {
            json!({"error": drift.stderr_text()})
        };
    }
    ssh.close().await;
    Ok(v)
}

fn print_status(v: &Value) {
    print!("{}", status_text(v));
}

/// The human lines of one host's status.
fn status_text(v: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let host = v["host"].as_str().unwrap_or_default();
    if let Some(e) = v["error"].as_str() {
        let _ = writeln!(out, "{host}: unreachable: {e}");
        return out;
    }
    let uptime = v["uptime_s"]
        .as_f64()
        .map(|s| format!("up {}", human_duration(s)))
        .unwrap_or_default();
    match v["bosund"]["version"].as_str() {
        Some(ver) => {
            let _ = writeln!(
                out,
                "{host}: {ver} at {} {uptime}",
                v["bosund"]["path"].as_str().unwrap_or("")
            );
        }
        None => {
            let _ = writeln!(out, "{host}: bosund not installed ({uptime})");
        }
    }
    if let Some(runs) = v["runs"].as_array() {
        if runs.is_empty() {
            let _ = writeln!(out, "  no runs yet");
        }
        for r in runs {
            let _ = writeln!(
                out,
                "  {} {:<20} {:<8} ok={} changed={} failed={}",
                r["started_at"].as_str().unwrap_or("?"),
                r["playbook"].as_str().unwrap_or("?"),
                r["status"].as_str().unwrap_or("?"),
                r["ok"],
                r["changed"],
                r["failed"]
            );
        }
    } else if let Some(e) = v["runs"]["error"].as_str() {
        let _ = writeln!(out, "  history unavailable: {e}");
    }
    if let Some(rows) = v["drift"].as_array() {
        for r in rows {
            let playbook = r["playbook"].as_str().unwrap_or("?");
            let checked = r["checked_at"].as_str().unwrap_or("?");
            let steps: Vec<&str> = r["steps"]
                .as_array()
                .map(|s| s.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let _ = if steps.is_empty() {
                writeln!(out, "  drift {playbook}: none (checked {checked})")
            } else {
                writeln!(
                    out,
                    "  drift {playbook}: {} steps would change: {} (checked {checked})",
                    steps.len(),
                    steps.join(", ")
                )
            };
        }
    } else if let Some(e) = v["drift"]["error"].as_str() {
        let _ = writeln!(out, "  drift unavailable: {}", e.trim());
    }
    out
}

fn human_duration(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86400),
    }
}

/// A listing bosund printed with `--output json`: JSON Lines, a record per line, as one array
/// (a bosund from before JSON Lines printed the array itself); `null` when it is neither.
fn json_lines(stdout: &[u8]) -> Value {
    if let Ok(v @ Value::Array(_)) = serde_json::from_slice(stdout) {
        return v;
    }
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<Vec<Value>, _>>()
        .map_or(Value::Null, Value::Array)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drift_report_names_the_steps_that_would_change() {
        let v = json!({
            "host": "web1",
            "uptime_s": 600.0,
            "bosund": {"path": "/usr/local/sbin/bosund", "version": "bosund 0.1.0"},
            "runs": [],
            "drift": [
                {"playbook": "site", "steps": ["motd", "sshd config"], "run_id": "r1", "checked_at": "2026-12-07T05:00:00Z"},
                {"playbook": "backup", "steps": [], "run_id": "r2", "checked_at": "2026-12-07T05:00:01Z"}
            ]
        });
        let text = status_text(&v);
        assert!(
            text.contains("  drift site: 2 steps would change: motd, sshd config (checked 2026-12-07T05:00:00Z)\n"),
            "{text}"
        );
        assert!(text.contains("  drift backup: none (checked"), "{text}");
        let old = json!({"host": "web2", "bosund": {"version": "bosund 0.0.9", "path": "/x"}, "drift": {"error": "error: unrecognized subcommand 'drift'\n"}});
        assert!(
            status_text(&old)
                .contains("  drift unavailable: error: unrecognized subcommand 'drift'")
        );
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(5.2), "5 s");
        assert_eq!(human_duration(600.0), "10 min");
        assert_eq!(human_duration(90000.0), "25 h");
        assert_eq!(human_duration(400000.0), "4 days");
    }

    #[test]
    fn a_listing_is_read_as_json_lines_or_as_the_old_array() {
        let lines = json_lines(b"{\"id\":\"b\"}\n{\"id\":\"a\"}\n");
        assert_eq!(lines, serde_json::json!([{"id": "b"}, {"id": "a"}]));
        assert_eq!(json_lines(b""), serde_json::json!([]));
        assert_eq!(
            json_lines(b"[{\"id\":\"a\"}]\n"),
            serde_json::json!([{"id": "a"}])
        );
        assert_eq!(json_lines(b"not json\n"), Value::Null);
    }
}

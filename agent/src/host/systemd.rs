//! systemd units through `systemctl`: the state of a unit and the verbs that change it.
//!
//! Everything goes through the `systemctl` program (not D-Bus): it is on every systemd host, it
//! behaves the same inside containers, and its exit codes are a stable contract
//! (`is-active`/`is-enabled` answer with 0 or non-zero and one word).

use std::collections::BTreeMap;

use anyhow::bail;

use super::process;
use bosun_model::event::CommandOutput;

/// Runs `systemctl ARGS...` and returns its output whatever the exit code.
pub async fn systemctl(args: &[&str]) -> anyhow::Result<CommandOutput> {
    let mut argv = vec!["systemctl".to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    process::run(&argv, None, &BTreeMap::new()).await
}

/// Runs `systemctl ARGS...` and fails, with its stderr, when it exits non-zero.
pub async fn systemctl_ok(args: &[&str]) -> anyhow::Result<CommandOutput> {
    let out = systemctl(args).await?;
    if out.rc != 0 {
        bail!(
            "systemctl {} failed (exit code {}): {}",
            args.join(" "),
            out.rc,
            process::quote_end(&out.stderr, 0)
        );
    }
    Ok(out)
}

/// `systemctl is-active UNIT`: `active`, `inactive`, `failed`, `activating`, ...
pub async fn active_state(unit: &str) -> anyhow::Result<String> {
    Ok(systemctl(&["is-active", unit])
        .await?
        .stdout
        .trim()
        .to_string())
}

/// `systemctl is-enabled UNIT`: `enabled`, `disabled`, `static`, `masked`, `not-found`, ...
pub async fn enabled_state(unit: &str) -> anyhow::Result<String> {
    let out = systemctl(&["is-enabled", unit]).await?;
    let word = out.stdout.trim();
    Ok(if word.is_empty() {
        "not-found".to_string()
    } else {
        word.to_string()
    })
}

/// `systemctl daemon-reload`.
pub async fn daemon_reload() -> anyhow::Result<()> {
    systemctl_ok(&["daemon-reload"]).await.map(|_| ())
}

/// `systemctl show UNIT -p P1,P2...`: the named properties (`LoadState`, `NeedDaemonReload`,
/// `MainPID`, ...) as written by systemd; a property systemd does not know is absent.
pub async fn show(unit: &str, properties: &[&str]) -> anyhow::Result<BTreeMap<String, String>> {
    let props = properties.join(",");
    let out = systemctl_ok(&["show", unit, "-p", &props]).await?;
    Ok(parse_show(&out.stdout))
}

/// Parses `KEY=value` lines of `systemctl show`.
pub fn parse_show(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The InvocationID of `service`'s current (or last) run; `None` when it has not run.
pub async fn invocation_id(service: &str) -> anyhow::Result<Option<String>> {
    let shown = show(&format!("{service}.service"), &["InvocationID"]).await?;
    Ok(shown
        .get("InvocationID")
        .filter(|id| !id.is_empty())
        .cloned())
}

/// What one run of a unit logged (`journalctl _SYSTEMD_INVOCATION_ID=<id> -o cat`): message
/// text only, nothing of another run.
pub async fn journal_of_invocation(id: &str) -> anyhow::Result<String> {
    let argv = [
        "journalctl".to_string(),
        "--no-pager".into(),
        "-q".into(),
        "-o".into(),
        "cat".into(),
        format!("_SYSTEMD_INVOCATION_ID={id}"),
    ];
    let out = super::process::run(&argv, None, &Default::default()).await?;
    Ok(out.stdout)
}

/// The last lines of `systemctl status UNIT` (state, main process, recent log lines), for
/// error messages when a verb on the unit failed.
pub async fn status_tail(unit: &str) -> String {
    match systemctl(&["status", "--no-pager", "--lines=15", "--full", unit]).await {
        Ok(out) => out.stdout.trim_end().to_string(),
        Err(e) => format!("(systemctl status {unit}: {e:#})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_output_splits_on_the_first_equals() {
        let got = parse_show(
            "LoadState=loaded\nNeedDaemonReload=no\nExecStart={ path=/bin/x ; argv[]=a=b }\n",
        );
        assert_eq!(got["LoadState"], "loaded");
        assert_eq!(got["NeedDaemonReload"], "no");
        assert_eq!(got["ExecStart"], "{ path=/bin/x ; argv[]=a=b }");
    }
}

//! Runs `service` on the host; its arguments and their validation are the model's
//! (`bosun_model::steps::service`).

use bosun_model::steps::service::{ServiceArgs, ServiceState};

use super::{Check, Outcome, StepContext, StepKind};
use crate::host::systemd;

/// What systemd says of the unit now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnitState {
    /// `systemctl is-active`: `active`, `inactive`, `failed`, `activating`, ...
    pub active: String,
    /// `systemctl is-enabled`: `enabled`, `disabled`, `static`, `masked`, `not-found`, ...
    pub enabled: String,
    /// systemd's copy of the unit is stale: `NeedDaemonReload=yes` or `LoadState=not-found`.
    pub stale: bool,
}

/// One thing to do to the unit, in the order listed in a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceAction {
    /// `systemctl daemon-reload`.
    DaemonReload,
    /// `systemctl enable`.
    Enable,
    /// `systemctl disable`.
    Disable,
    /// `systemctl start`.
    Start,
    /// `systemctl stop`.
    Stop,
    /// `systemctl restart`.
    Restart,
    /// `systemctl reload`.
    Reload,
}

impl ServiceAction {
    fn verb(self) -> &'static str {
        match self {
            ServiceAction::DaemonReload => "daemon-reload",
            ServiceAction::Enable => "enable",
            ServiceAction::Disable => "disable",
            ServiceAction::Start => "start",
            ServiceAction::Stop => "stop",
            ServiceAction::Restart => "restart",
            ServiceAction::Reload => "reload",
        }
    }
}

/// States of `is-enabled` that mean "comes up at boot" or cannot be enabled anyway (`static`
/// units have no `[Install]` section; `generated` and `transient` ones are not ours to change).
const ENABLED_LIKE: &[&str] = &[
    "enabled",
    "enabled-runtime",
    "alias",
    "static",
    "indirect",
    "generated",
    "transient",
];
/// States of `is-active` in which the unit runs or is on its way up.
const RUNNING: &[&str] = &["active", "activating", "reloading", "refreshing"];

/// `name`, with `.service` added when it has no unit suffix.
pub(crate) fn unit_name(name: &str) -> String {
    const SUFFIXES: &[&str] = &[
        ".service",
        ".socket",
        ".timer",
        ".target",
        ".mount",
        ".path",
        ".swap",
        ".slice",
        ".automount",
        ".device",
        ".scope",
    ];
    if SUFFIXES.iter().any(|s| name.ends_with(s)) {
        name.to_string()
    } else {
        format!("{name}.service")
    }
}

/// What to do, from what the step wants and what systemd says. `check_mode` relaxes the
/// not-found error: under `--check` an earlier step may be the one that would write the unit.
pub(crate) fn plan(
    args: &ServiceArgs,
    have: &UnitState,
    check_mode: bool,
) -> Result<Vec<ServiceAction>, String> {
    let unit = unit_name(&args.name);
    let mut actions = Vec::new();
    if args.daemon_reload && have.stale {
        actions.push(ServiceAction::DaemonReload);
    }
    // After a daemon-reload a not-found unit may appear; judge it by what systemd will see.
    let missing = have.enabled == "not-found" && !actions.contains(&ServiceAction::DaemonReload);
    if missing && !check_mode && (args.enabled == Some(true) || wants_running(args.state)) {
        return Err(format!(
            "there is no unit {unit}: install the package that provides it or write its unit file first (then set `daemon_reload = true`)"
        ));
    }
    match args.enabled {
        Some(true) if have.enabled == "masked" => {
            return Err(format!(
                "{unit} is masked: `systemctl unmask {unit}` it (or fix whatever masked it) before enabling"
            ));
        }
        Some(true) if !ENABLED_LIKE.contains(&have.enabled.as_str()) => {
            actions.push(ServiceAction::Enable)
        }
        Some(false) if matches!(have.enabled.as_str(), "enabled" | "enabled-runtime") => {
            actions.push(ServiceAction::Disable)
        }
        _ => {}
    }
    let running = RUNNING.contains(&have.active.as_str());
    match args.state {
        Some(ServiceState::Started) if !running => actions.push(ServiceAction::Start),
        Some(ServiceState::Stopped) if running => actions.push(ServiceAction::Stop),
        Some(ServiceState::Restarted) => actions.push(ServiceAction::Restart),
        Some(ServiceState::Reloaded) if running => actions.push(ServiceAction::Reload),
        Some(ServiceState::Reloaded) => actions.push(ServiceAction::Start),
        _ => {}
    }
    Ok(actions)
}

fn wants_running(state: Option<ServiceState>) -> bool {
    matches!(
        state,
        Some(ServiceState::Started | ServiceState::Restarted | ServiceState::Reloaded)
    )
}

/// "enable, start docker.service".
fn describe(unit: &str, actions: &[ServiceAction]) -> String {
    let verbs: Vec<&str> = actions.iter().map(|a| a.verb()).collect();
    format!("{} {unit}", verbs.join(", "))
}

/// Reads the unit's state from systemd.
async fn unit_state(unit: &str) -> anyhow::Result<UnitState> {
    let props = systemd::show(unit, &["LoadState", "NeedDaemonReload"]).await?;
    let stale = props.get("NeedDaemonReload").is_some_and(|v| v == "yes")
        || props.get("LoadState").is_some_and(|v| v == "not-found");
    Ok(UnitState {
        active: systemd::active_state(unit).await?,
        enabled: systemd::enabled_state(unit).await?,
        stale,
    })
}

impl StepKind for ServiceArgs {
    type Change = Vec<ServiceAction>;

    async fn check(&self, ctx: &StepContext<'_>) -> anyhow::Result<Check<Vec<ServiceAction>>> {
        let unit = unit_name(&self.name);
        let have = unit_state(&unit).await?;
        let actions = plan(self, &have, ctx.check).map_err(anyhow::Error::msg)?;
        Ok(if actions.is_empty() {
            Check::unchanged(Some(format!(
                "{unit} is {} and {}",
                have.active, have.enabled
            )))
        } else {
            let message = describe(&unit, &actions);
            Check::change(actions, message)
        })
    }

    async fn apply(
        &self,
        _ctx: &StepContext<'_>,
        actions: Vec<ServiceAction>,
    ) -> anyhow::Result<Outcome> {
        let unit = unit_name(&self.name);
        for action in &actions {
            let result = match action {
                ServiceAction::DaemonReload => systemd::daemon_reload().await,
                verb => systemd::systemctl_ok(&[verb.verb(), &unit])
                    .await
                    .map(|_| ()),
            };
            if let Err(e) = result {
                let status = systemd::status_tail(&unit).await;
                anyhow::bail!("{e:#}\n{status}\n(more: journalctl -u {unit})");
            }
        }
        Ok(Outcome {
            changed: true,
            message: Some(describe(&unit, &actions)),
            ..Outcome::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ServiceAction::*;

    fn args(
        state: Option<ServiceState>,
        enabled: Option<bool>,
        daemon_reload: bool,
    ) -> ServiceArgs {
        ServiceArgs {
            name: "demo".into(),
            state,
            enabled,
            daemon_reload,
        }
    }

    fn have(active: &str, enabled: &str, stale: bool) -> UnitState {
        UnitState {
            active: active.into(),
            enabled: enabled.into(),
            stale,
        }
    }

    #[test]
    fn started_and_enabled_unit_needs_nothing() {
        let a = args(Some(ServiceState::Started), Some(true), true);
        assert_eq!(
            plan(&a, &have("active", "enabled", false), false),
            Ok(vec![])
        );
        assert_eq!(
            plan(&a, &have("activating", "static", false), false),
            Ok(vec![])
        );
    }

    #[test]
    fn a_new_unit_is_reloaded_enabled_and_started_in_that_order() {
        let a = args(Some(ServiceState::Started), Some(true), true);
        assert_eq!(
            plan(&a, &have("inactive", "not-found", true), false),
            Ok(vec![DaemonReload, Enable, Start])
        );
    }

    #[test]
    fn a_missing_unit_is_an_error_except_under_check() {
        let a = args(Some(ServiceState::Started), None, false);
        let err = plan(&a, &have("inactive", "not-found", true), false).unwrap_err();
        assert!(err.contains("no unit demo.service"), "{err}");
        assert_eq!(
            plan(&a, &have("inactive", "not-found", true), true),
            Ok(vec![Start])
        );
        // Stopping or disabling something that is not there is already done.
        let a = args(Some(ServiceState::Stopped), Some(false), false);
        assert_eq!(
            plan(&a, &have("inactive", "not-found", true), false),
            Ok(vec![])
        );
    }

    #[test]
    fn stopped_and_disabled() {
        let a = args(Some(ServiceState::Stopped), Some(false), false);
        assert_eq!(
            plan(&a, &have("active", "enabled", false), false),
            Ok(vec![Disable, Stop])
        );
        assert_eq!(
            plan(&a, &have("failed", "disabled", false), false),
            Ok(vec![])
        );
        assert_eq!(
            plan(&a, &have("inactive", "static", false), false),
            Ok(vec![])
        );
    }

    #[test]
    fn restarted_and_reloaded_always_act() {
        let a = args(Some(ServiceState::Restarted), None, false);
        assert_eq!(
            plan(&a, &have("active", "enabled", false), false),
            Ok(vec![Restart])
        );
        assert_eq!(
            plan(&a, &have("inactive", "enabled", false), false),
            Ok(vec![Restart])
        );
        let a = args(Some(ServiceState::Reloaded), None, false);
        assert_eq!(
            plan(&a, &have("active", "enabled", false), false),
            Ok(vec![Reload])
        );
        assert_eq!(
            plan(&a, &have("inactive", "enabled", false), false),
            Ok(vec![Start])
        );
    }

    #[test]
    fn daemon_reload_only_when_stale_and_masked_units_are_refused() {
        let a = args(None, None, true);
        assert_eq!(
            plan(&a, &have("active", "enabled", false), false),
            Ok(vec![])
        );
        assert_eq!(
            plan(&a, &have("active", "enabled", true), false),
            Ok(vec![DaemonReload])
        );
        let a = args(None, Some(true), false);
        let err = plan(&a, &have("inactive", "masked", false), false).unwrap_err();
        assert!(err.contains("unmask"), "{err}");
    }

    #[test]
    fn names_get_a_service_suffix_unless_they_have_a_unit_suffix() {
        assert_eq!(unit_name("docker"), "docker.service");
        assert_eq!(unit_name("docker.socket"), "docker.socket");
        assert_eq!(unit_name("fstrim.timer"), "fstrim.timer");
        assert_eq!(unit_name("getty@tty1"), "getty@tty1.service");
    }
}

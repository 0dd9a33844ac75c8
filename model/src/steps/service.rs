//! `service`: a systemd unit is running or stopped, enabled at boot or not.
//!
//! ```toml
//! service = { name = "docker", state = "started", enabled = true }
//! service = { name = "k3s", state = "restarted", daemon_reload = true }
//! service = { name = "apt-daily.timer", state = "stopped", enabled = false }
//! ```
//! `name` without a suffix means `NAME.service`. The step reports `changed` only when it
//! changed something: a unit already active is not started again, one already enabled is not
//! enabled again. `restarted` and `reloaded` always act and always report `changed` (as in
//! Ansible): use them in handlers. `reloaded` starts a unit that is not running.
//! `daemon_reload = true` runs `systemctl daemon-reload` when systemd's view of the unit is
//! stale (its files changed on disk, or it was not found when last asked), which is what a
//! step that just wrote a unit file needs, and only then.
//!
//! Order of work: daemon-reload, then enable/disable, then start/stop/restart/reload.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ActionArgs;
use crate::jinja::is_templated;

/// Arguments of `service`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceArgs {
    /// The unit: `docker` (meaning `docker.service`), `docker.socket`, `fstrim.timer`.
    pub name: String,
    /// Whether it runs: `started`, `stopped`, `restarted` or `reloaded`; unset: left alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ServiceState>,
    /// Whether it starts at boot; unset: left alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Run `systemctl daemon-reload` first when systemd's copy of the unit is stale.
    #[serde(default)]
    pub daemon_reload: bool,
}

/// Whether a unit runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    /// Running (started when it is not).
    Started,
    /// Not running (stopped when it is).
    Stopped,
    /// Restarted (started when it is not running). Always a change.
    Restarted,
    /// Reloaded (`systemctl reload`; started when it is not running). Always a change.
    Reloaded,
}

impl ActionArgs for ServiceArgs {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.state.is_none() && self.enabled.is_none() && !self.daemon_reload {
            problems.push(
                "nothing to do: give `state`, `enabled` or `daemon_reload = true`".to_string(),
            );
        }
        if !is_templated(&self.name)
            && (self.name.is_empty()
                || self.name.starts_with('-')
                || self.name.contains('/')
                || self.name.chars().any(char::is_whitespace))
        {
            problems.push(format!(
                "{:?} is not a unit name (such as \"docker\" or \"fstrim.timer\")",
                self.name
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn validation_needs_something_to_do_and_a_plain_name() {
        assert!(args(None, None, false).validate()[0].contains("nothing to do"));
        let mut a = args(Some(ServiceState::Started), None, false);
        a.name = "../etc/passwd".into();
        assert!(a.validate()[0].contains("not a unit name"));
    }
}

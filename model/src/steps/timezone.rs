//! `timezone`: the machine's time zone.
//!
//! ```toml
//! timezone = { name = "Europe/Paris" }
//! timezone = { name = "UTC" }
//! ```
//! The zone is what `/etc/localtime` links to under `/usr/share/zoneinfo` (and, where the file
//! exists or on Debian-like hosts, the name in `/etc/timezone`). When it differs, the link is
//! replaced atomically (a new link renamed over the old one) and `/etc/timezone` written
//! atomically; where systemd runs this is the state `timedatectl set-timezone` leaves, and
//! `timedated` reads the link whenever asked, so nothing else is told. The zone must exist in
//! the host's tz database (the `tzdata` package); an unknown one fails the step.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ActionArgs;
use crate::jinja::is_templated;

/// Arguments of `timezone`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimezoneArgs {
    /// The zone's name in the tz database: `UTC`, `Europe/Paris`, `America/Argentina/Salta`.
    pub name: String,
}

impl ActionArgs for TimezoneArgs {
    fn validate(&self) -> Vec<String> {
        let name = &self.name;
        if is_templated(name) {
            return Vec::new();
        }
        let valid = !name.is_empty()
            && name.split('/').all(|part| {
                !part.is_empty()
                    && part != "."
                    && part != ".."
                    && part.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+' | b'.')
                    })
            });
        if valid {
            Vec::new()
        } else {
            vec![format!(
                "`name` {name:?} is not a time zone name such as \"UTC\" or \"Europe/Paris\""
            )]
        }
    }
}

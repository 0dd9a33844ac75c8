//! `package`: distribution packages are installed, at their newest version, or absent.
//!
//! ```toml
//! package = { names = ["jq", "curl"] }                       # present (the default)
//! package = { names = ["docker.io"], state = "latest" }
//! package = { names = ["snapd"], state = "absent", purge = true }
//! package = { names = ["htop"], update_cache_max_age = "6h" }
//! ```
//! apt on Debian and Ubuntu, dnf on Amazon Linux and Fedora, chosen by the fact `os_id` (or
//! `manager`). The installed state is read first (`dpkg-query`, `rpm -q`) and, when nothing
//! would change, no package manager runs at all: a second run is cheap and touches nothing.
//! apt's lists are refreshed (`apt-get update`) only before an install or upgrade, and only
//! when they are older than `update_cache_max_age` (see `host::packages` for how their age is
//! told). Under `--check` the step says which packages would be installed, upgraded or
//! removed, and changes nothing (for `latest` it judges from the lists as they are).

use std::time::Duration;

use anyhow::bail;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ActionArgs;
use crate::jinja::is_templated;

/// Default of `update_cache_max_age`.
pub const DEFAULT_UPDATE_CACHE_MAX_AGE: &str = "1h";

/// Arguments of `package`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackageArgs {
    /// Package names as the distribution spells them (real packages, not virtual ones).
    pub names: Vec<String>,
    /// `present` (default), `latest` or `absent`.
    #[serde(default)]
    pub state: PackageState,
    /// apt only: refresh the package lists before installing when they are older than this
    /// (e.g. "30m", "1h", "1d"; default "1h"; "0s" refreshes before every install).
    #[serde(default = "default_max_age")]
    pub update_cache_max_age: String,
    /// apt only: install recommended packages too (default false: a small host stays small).
    #[serde(default)]
    pub install_recommends: bool,
    /// With `state = "absent"`: remove configuration files too (apt `purge`).
    #[serde(default)]
    pub purge: bool,
    /// `apt` or `dnf`; default: chosen from the fact `os_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<Manager>,
}

fn default_max_age() -> String {
    DEFAULT_UPDATE_CACHE_MAX_AGE.to_string()
}

/// What the packages must be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PackageState {
    /// Installed, any version.
    #[default]
    Present,
    /// Installed at the newest version the package sources offer.
    Latest,
    /// Not installed.
    Absent,
}

/// A package manager family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Manager {
    /// apt-get and dpkg (Debian, Ubuntu).
    Apt,
    /// dnf and rpm (Amazon Linux 2023, Fedora, RHEL and its rebuilds).
    Dnf,
}

impl Manager {
    /// The manager of a distribution, by its os-release `ID` (the fact `os_id`).
    pub fn for_os(os_id: &str) -> anyhow::Result<Manager> {
        match os_id {
            "debian" | "ubuntu" | "raspbian" | "linuxmint" | "pop" => Ok(Manager::Apt),
            "amzn" | "fedora" | "rhel" | "centos" | "rocky" | "almalinux" | "ol" => {
                Ok(Manager::Dnf)
            }
            "" => bail!(
                "the OS is unknown (no ID in /etc/os-release): set `manager` to \"apt\" or \"dnf\""
            ),
            other => bail!(
                "no package manager known for OS {other:?}: set `manager` to \"apt\" or \"dnf\""
            ),
        }
    }

    /// `apt` or `dnf`.
    pub fn name(self) -> &'static str {
        match self {
            Manager::Apt => "apt",
            Manager::Dnf => "dnf",
        }
    }
}

/// Parses a duration such as "90s", "30m", "1h", "1d" (humantime syntax).
pub fn parse_max_age(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("update_cache_max_age {s:?} is not a duration such as \"30m\" or \"1h\": {e}")
    })
}

impl PackageArgs {
    /// `update_cache_max_age`, parsed.
    pub fn max_age(&self) -> anyhow::Result<Duration> {
        parse_max_age(&self.update_cache_max_age).map_err(anyhow::Error::msg)
    }
}

impl ActionArgs for PackageArgs {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.names.is_empty() {
            problems.push("`names` is empty: list the packages to manage".to_string());
        }
        for name in self.names.iter().filter(|n| !is_templated(n)) {
            if name.is_empty() || name.starts_with('-') || name.chars().any(char::is_whitespace) {
                problems.push(format!(
                    "{name:?} is not a package name (one name per entry, no spaces, no options)"
                ));
            }
        }
        if !is_templated(&self.update_cache_max_age) {
            problems.extend(parse_max_age(&self.update_cache_max_age).err());
        }
        if self.purge && self.state != PackageState::Absent {
            problems.push("`purge` only means something with `state = \"absent\"`".to_string());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn validation_catches_bad_names_ages_and_purge() {
        let args = PackageArgs {
            names: names(&["ok", "two words", "-y"]),
            state: PackageState::Present,
            update_cache_max_age: "soon".into(),
            install_recommends: false,
            purge: true,
            manager: None,
        };
        let problems = args.validate().join("\n");
        assert!(problems.contains("\"two words\""), "{problems}");
        assert!(problems.contains("\"-y\""), "{problems}");
        assert!(problems.contains("\"soon\""), "{problems}");
        assert!(problems.contains("`purge`"), "{problems}");
        assert_eq!(parse_max_age("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_max_age("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn managers_follow_the_os_id() {
        assert_eq!(Manager::for_os("debian").unwrap(), Manager::Apt);
        assert_eq!(Manager::for_os("ubuntu").unwrap(), Manager::Apt);
        assert_eq!(Manager::for_os("amzn").unwrap(), Manager::Dnf);
        assert_eq!(Manager::for_os("fedora").unwrap(), Manager::Dnf);
        let err = Manager::for_os("arch").unwrap_err().to_string();
        assert!(
            err.contains("\"arch\"") && err.contains("`manager`"),
            "{err}"
        );
    }
}

//! Runs `package` on the host; its arguments and their validation are the model's
//! (`bosun_model::steps::package`).

use std::time::{Duration, SystemTime};

use bosun_model::steps::package::{Manager, PackageArgs, PackageState};

use super::{Check, Outcome, StepContext, StepKind};
use crate::host::packages::{self, InstallOptions, Verb};

/// What `apply` has to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageChange {
    /// The manager to use.
    pub manager: Manager,
    /// Not installed, to install.
    pub install: Vec<String>,
    /// Installed, with a newer version to install (`latest`).
    pub upgrade: Vec<String>,
    /// Installed, to remove.
    pub remove: Vec<String>,
    /// apt lists are older than the limit (or missing): refresh before installing.
    pub refresh: bool,
}

/// Decides what to do from what is installed. `installed` maps every name to its installed
/// version; `upgradable` holds the installed names a newer version is known for. `stale` says
/// whether apt's lists need a refresh before an install (always false for dnf).
pub(crate) fn plan(
    manager: Manager,
    state: PackageState,
    names: &[String],
    installed: &std::collections::BTreeMap<String, Option<String>>,
    upgradable: &std::collections::BTreeMap<String, String>,
    stale: bool,
) -> Option<PackageChange> {
    let is_installed = |n: &String| installed.get(n).is_some_and(Option::is_some);
    let mut change = PackageChange {
        manager,
        install: Vec::new(),
        upgrade: Vec::new(),
        remove: Vec::new(),
        refresh: false,
    };
    match state {
        PackageState::Present => {
            change.install = names.iter().filter(|n| !is_installed(n)).cloned().collect();
        }
        PackageState::Latest => {
            change.install = names.iter().filter(|n| !is_installed(n)).cloned().collect();
            change.upgrade = names
                .iter()
                .filter(|n| is_installed(n) && upgradable.contains_key(*n))
                .cloned()
                .collect();
        }
        PackageState::Absent => {
            change.remove = names.iter().filter(|n| is_installed(n)).cloned().collect();
        }
    }
    // `latest` with stale lists cannot know what is newest without a refresh: refresh, and let
    // apply report whether anything was upgraded.
    let needs_lists = !change.install.is_empty()
        || !change.upgrade.is_empty()
        || (state == PackageState::Latest && stale);
    change.refresh = manager == Manager::Apt && stale && needs_lists;
    let nothing =
        change.install.is_empty() && change.upgrade.is_empty() && change.remove.is_empty();
    (!nothing || change.refresh).then_some(change)
}

/// One line on a planned change: "install jq, tree; refresh the package lists (2 days old)".
pub(crate) fn describe(change: &PackageChange, lists_age: Option<Duration>) -> String {
    let mut parts = Vec::new();
    if change.refresh {
        parts.push(match lists_age {
            None => "refresh the package lists (apt-get update: there are none)".to_string(),
            Some(age) => format!(
                "refresh the package lists (apt-get update: they are {} old)",
                humantime::format_duration(Duration::from_secs(age.as_secs()))
            ),
        });
    }
    for (verb, list) in [
        ("install", &change.install),
        ("upgrade", &change.upgrade),
        ("remove", &change.remove),
    ] {
        if !list.is_empty() {
            parts.push(format!("{verb} {}", list.join(", ")));
        }
    }
    if change.install.is_empty() && change.upgrade.is_empty() && change.refresh {
        parts.push("then upgrade whatever is outdated".to_string());
    }
    format!("{}: {}", change.manager.name(), parts.join("; "))
}

/// The package manager: `manager`, else the one of the fact `os_id`.
fn manager(args: &PackageArgs, ctx: &StepContext<'_>) -> anyhow::Result<Manager> {
    if let Some(m) = args.manager {
        return Ok(m);
    }
    let os_id = ctx
        .vars
        .get_attr("facts")
        .and_then(|f| f.get_attr("os_id"))
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    Manager::for_os(&os_id)
}

/// How the package manager is to install.
fn options(args: &PackageArgs) -> InstallOptions {
    InstallOptions {
        install_recommends: args.install_recommends,
    }
}

impl StepKind for PackageArgs {
    type Change = PackageChange;

    async fn check(&self, ctx: &StepContext<'_>) -> anyhow::Result<Check<PackageChange>> {
        let manager = manager(self, ctx)?;
        let max_age = self.max_age()?;
        let installed = packages::installed(manager, &self.names).await?;
        let lists_age = match manager {
            Manager::Apt => packages::apt_lists_age(SystemTime::now()),
            Manager::Dnf => Some(Duration::ZERO),
        };
        let stale = manager == Manager::Apt && packages::apt_lists_stale(lists_age, max_age);
        let upgradable = if self.state == PackageState::Latest {
            let present: Vec<String> = self
                .names
                .iter()
                .filter(|n| installed.get(*n).is_some_and(Option::is_some))
                .cloned()
                .collect();
            packages::upgradable(manager, &present).await?
        } else {
            Default::default()
        };
        Ok(
            match plan(
                manager,
                self.state,
                &self.names,
                &installed,
                &upgradable,
                stale,
            ) {
                None => Check::unchanged(Some(unchanged_message(self.state, &installed))),
                Some(change) => {
                    let message = describe(&change, lists_age);
                    Check::change(change, message)
                }
            },
        )
    }

    async fn apply(
        &self,
        _ctx: &StepContext<'_>,
        mut change: PackageChange,
    ) -> anyhow::Result<Outcome> {
        let manager = change.manager;
        let mut done = Vec::new();
        if change.refresh {
            packages::apt_update().await?;
            done.push("refreshed the package lists".to_string());
            if self.state == PackageState::Latest {
                // Now the lists are fresh, ask again what is outdated.
                let installed = packages::installed(manager, &self.names).await?;
                let present: Vec<String> = self
                    .names
                    .iter()
                    .filter(|n| installed.get(*n).is_some_and(Option::is_some))
                    .cloned()
                    .collect();
                change.upgrade = packages::upgradable(manager, &present)
                    .await?
                    .into_keys()
                    .collect();
            }
        }
        let before = packages::installed(manager, &self.names).await?;
        if !change.install.is_empty() {
            packages::change(manager, Verb::Install, &change.install, options(self)).await?;
        }
        if !change.upgrade.is_empty() {
            let verb = match manager {
                // `apt-get install NAME` upgrades an installed NAME to its candidate.
                Manager::Apt => Verb::Install,
                Manager::Dnf => Verb::Upgrade,
            };
            packages::change(manager, verb, &change.upgrade, options(self)).await?;
        }
        if !change.remove.is_empty() {
            let verb = if self.purge {
                Verb::Purge
            } else {
                Verb::Remove
            };
            packages::change(manager, verb, &change.remove, options(self)).await?;
        }
        // Trust the package database, not the exit code: an install of a virtual package name
        // "succeeds" without installing anything by that name, and would then run every time.
        let after = packages::installed(manager, &self.names).await?;
        let wrong: Vec<&String> = self
            .names
            .iter()
            .filter(|n| {
                let is = after.get(*n).is_some_and(Option::is_some);
                if self.state == PackageState::Absent {
                    is
                } else {
                    !is
                }
            })
            .collect();
        if !wrong.is_empty() {
            anyhow::bail!(
                "{} reported success, but {} {} still {}: is it a virtual package? name the real one (`apt-cache showpkg NAME` / `dnf provides NAME`)",
                manager.name(),
                wrong
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                if wrong.len() == 1 { "is" } else { "are" },
                if self.state == PackageState::Absent {
                    "installed"
                } else {
                    "not installed"
                }
            );
        }
        let changed_versions: Vec<String> = self
            .names
            .iter()
            .filter_map(|n| {
                let (b, a) = (before.get(n)?.as_deref(), after.get(n)?.as_deref());
                (b != a).then(|| match (b, a) {
                    (None, Some(v)) => format!("installed {n} {v}"),
                    (Some(old), Some(new)) => format!("upgraded {n} {old} → {new}"),
                    (Some(_), None) => format!("removed {n}"),
                    (None, None) => String::new(),
                })
            })
            .collect();
        let changed = !changed_versions.is_empty();
        done.extend(changed_versions);
        if !changed {
            done.push("all up to date".to_string());
        }
        Ok(Outcome {
            changed,
            message: Some(format!("{}: {}", manager.name(), done.join("; "))),
            ..Outcome::default()
        })
    }
}

fn unchanged_message(
    state: PackageState,
    installed: &std::collections::BTreeMap<String, Option<String>>,
) -> String {
    match state {
        PackageState::Absent => format!(
            "not installed: {} (no package manager run)",
            installed.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
        _ => format!(
            "installed: {} (no package manager run)",
            installed
                .iter()
                .map(|(n, v)| format!("{n} {}", v.as_deref().unwrap_or("?")))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn installed(pairs: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.map(str::to_string)))
            .collect()
    }

    #[test]
    fn present_installs_only_what_is_missing_and_refreshes_only_stale_lists() {
        let have = installed(&[("jq", None), ("curl", Some("7.88"))]);
        let none = BTreeMap::new();
        let c = plan(
            Manager::Apt,
            PackageState::Present,
            &names(&["jq", "curl"]),
            &have,
            &none,
            true,
        )
        .unwrap();
        assert_eq!(c.install, names(&["jq"]));
        assert!(c.upgrade.is_empty() && c.remove.is_empty());
        assert!(c.refresh);
        let c = plan(
            Manager::Apt,
            PackageState::Present,
            &names(&["jq"]),
            &have,
            &none,
            false,
        )
        .unwrap();
        assert!(!c.refresh, "fresh lists are not refreshed");
    }

    #[test]
    fn nothing_to_do_means_no_refresh_either() {
        let none = BTreeMap::new();
        let curl = installed(&[("curl", Some("7.88"))]);
        let present = plan(
            Manager::Apt,
            PackageState::Present,
            &names(&["curl"]),
            &curl,
            &none,
            true,
        );
        assert_eq!(present, None, "installed, stale lists");
        let jq = installed(&[("jq", None)]);
        let absent = plan(
            Manager::Apt,
            PackageState::Absent,
            &names(&["jq"]),
            &jq,
            &none,
            true,
        );
        assert_eq!(absent, None, "not installed, stale lists");
    }

    #[test]
    fn latest_upgrades_outdated_and_refreshes_stale_lists_even_when_all_look_current() {
        let have = installed(&[("jq", Some("1.6")), ("curl", Some("7.88"))]);
        let newer = BTreeMap::from([("jq".to_string(), "1.7".to_string())]);
        let c = plan(
            Manager::Apt,
            PackageState::Latest,
            &names(&["jq", "curl"]),
            &have,
            &newer,
            false,
        )
        .unwrap();
        assert_eq!(c.upgrade, names(&["jq"]));
        assert!(c.install.is_empty() && !c.refresh);
        let c = plan(
            Manager::Apt,
            PackageState::Latest,
            &names(&["curl"]),
            &have,
            &BTreeMap::new(),
            true,
        )
        .unwrap();
        assert!(c.refresh && c.upgrade.is_empty());
        assert!(describe(&c, Some(Duration::from_secs(7200))).contains("2h old"));
        assert_eq!(
            plan(
                Manager::Apt,
                PackageState::Latest,
                &names(&["curl"]),
                &have,
                &BTreeMap::new(),
                false
            ),
            None
        );
    }

    #[test]
    fn absent_removes_installed_ones_and_dnf_never_refreshes() {
        let have = installed(&[("jq", Some("1.6")), ("tree", None)]);
        let c = plan(
            Manager::Dnf,
            PackageState::Absent,
            &names(&["jq", "tree"]),
            &have,
            &BTreeMap::new(),
            true,
        )
        .unwrap();
        assert_eq!(c.remove, names(&["jq"]));
        assert!(!c.refresh);
        assert_eq!(describe(&c, None), "dnf: remove jq");
    }
}

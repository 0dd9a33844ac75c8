//! Runs `timezone` on the host; its arguments and their validation are the model's
//! (`bosun_model::steps::timezone`).

use std::path::{Path, PathBuf};

use anyhow::bail;
use bosun_model::steps::timezone::TimezoneArgs;

use super::{Check, Outcome, StepContext, StepKind};
use crate::host::fs::{Attrs, read_if_exists, replace_symlink, write_atomic};

const LOCALTIME: &str = "/etc/localtime";
const ETC_TIMEZONE: &str = "/etc/timezone";
const ZONEINFO: &str = "/usr/share/zoneinfo";

/// What `apply` changes.
#[derive(Debug)]
pub struct ZoneChange {
    link: bool,
    name_file: bool,
}

/// The zone `/etc/localtime` links to (what follows `zoneinfo/` in its target).
fn linked_zone() -> Option<String> {
    let target = std::fs::read_link(LOCALTIME).ok()?;
    let text = target.to_string_lossy();
    text.split_once("zoneinfo/")
        .map(|(_, zone)| zone.to_string())
}

/// Whether the host keeps the zone's name in `/etc/timezone` (Debian and its derivatives).
fn keeps_name_file() -> bool {
    Path::new(ETC_TIMEZONE).exists() || Path::new("/etc/debian_version").exists()
}

impl StepKind for TimezoneArgs {
    type Change = ZoneChange;

    async fn check(&self, _ctx: &StepContext<'_>) -> anyhow::Result<Check<ZoneChange>> {
        let zone_file = PathBuf::from(ZONEINFO).join(&self.name);
        if !zone_file.is_file() {
            bail!(
                "unknown time zone {:?}: {} does not exist (is the package `tzdata` installed?)",
                self.name,
                zone_file.display()
            );
        }
        let linked = linked_zone();
        let named = read_if_exists(Path::new(ETC_TIMEZONE))?
            .map(|b| String::from_utf8_lossy(&b).trim().to_string());
        let change = ZoneChange {
            link: linked.as_deref() != Some(self.name.as_str()),
            name_file: keeps_name_file() && named.as_deref() != Some(self.name.as_str()),
        };
        Ok(if !change.link && !change.name_file {
            Check::unchanged(None)
        } else {
            let was = linked.or(named).unwrap_or_else(|| "unset".into());
            Check::change(change, format!("time zone {was} → {}", self.name))
        })
    }

    async fn apply(&self, _ctx: &StepContext<'_>, change: ZoneChange) -> anyhow::Result<Outcome> {
        if change.link {
            replace_symlink(
                Path::new(LOCALTIME),
                &PathBuf::from(ZONEINFO).join(&self.name),
            )?;
        }
        if change.name_file {
            write_atomic(
                Path::new(ETC_TIMEZONE),
                format!("{}\n", self.name).as_bytes(),
                0o644,
                &Attrs::default(),
            )?;
        }
        Ok(Outcome {
            changed: true,
            message: Some(format!("time zone set to {}", self.name)),
            ..Outcome::default()
        })
    }
}

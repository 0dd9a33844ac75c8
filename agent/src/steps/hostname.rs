//! Runs `hostname` on the host; its arguments and their validation are the model's
//! (`bosun_model::steps::hostname`).

use std::path::Path;

use anyhow::Context;
use bosun_model::steps::hostname::HostnameArgs;

use super::{Check, Outcome, StepContext, StepKind};
use crate::host::fs::{Attrs, read_if_exists, write_atomic};
use crate::host::process;

/// The static host name's file.
const ETC_HOSTNAME: &str = "/etc/hostname";

/// Whether systemd is the running init (what `sd_booted()` checks).
fn systemd_runs() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

impl StepKind for HostnameArgs {
    type Change = ();

    async fn check(&self, _ctx: &StepContext<'_>) -> anyhow::Result<Check<()>> {
        let kernel = nix::unistd::gethostname()
            .context("reading the host name")?
            .to_string_lossy()
            .into_owned();
        let file = read_if_exists(Path::new(ETC_HOSTNAME))?
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_default();
        let mut said = Vec::new();
        if kernel != self.name {
            said.push(format!("host name {kernel} → {}", self.name));
        }
        if file != self.name {
            said.push(format!("{ETC_HOSTNAME} {file:?} → {:?}", self.name));
        }
        Ok(if said.is_empty() {
            Check::unchanged(None)
        } else {
            Check::change((), said.join(", "))
        })
    }

    async fn apply(&self, _ctx: &StepContext<'_>, _change: ()) -> anyhow::Result<Outcome> {
        let how = if systemd_runs() {
            let argv = ["hostnamectl", "set-hostname", &self.name].map(str::to_string);
            process::run_ok(&argv).await?;
            "hostnamectl"
        } else {
            write_atomic(
                Path::new(ETC_HOSTNAME),
                format!("{}\n", self.name).as_bytes(),
                0o644,
                &Attrs::default(),
            )?;
            nix::unistd::sethostname(&self.name).context("setting the kernel's host name")?;
            "/etc/hostname and sethostname"
        };
        Ok(Outcome {
            changed: true,
            message: Some(format!("host name set to {} ({how})", self.name)),
            ..Outcome::default()
        })
    }
}

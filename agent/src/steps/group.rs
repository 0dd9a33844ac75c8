//! Runs `group` on the host; its arguments and their validation are the model's
//! (`bosun_model::steps::group`). The command lines are those of Ansible's `group` on Linux.

use bosun_model::steps::common::Presence;
use bosun_model::steps::group::GroupArgs;

use super::{Check, Outcome, StepContext, StepKind};
use crate::host::accounts;

impl StepKind for GroupArgs {
    /// `groupadd`, `groupmod` or `groupdel` with its arguments.
    type Change = Vec<String>;

    async fn check(&self, _ctx: &StepContext<'_>) -> anyhow::Result<Check<Vec<String>>> {
        let have = accounts::group(&self.name)?.filter(|g| g.name == self.name);
        let words = |w: &[&str]| -> Vec<String> { w.iter().map(|s| s.to_string()).collect() };
        Ok(match (self.state, have) {
            (Presence::Absent, None) => Check::unchanged(None),
            (Presence::Absent, Some(_)) => {
                Check::change(words(&["groupdel", &self.name]), "remove group")
            }
            (Presence::Present, None) => {
                let mut argv = words(&["groupadd"]);
                if let Some(gid) = self.gid {
                    argv.extend(["-g".into(), gid.to_string()]);
                }
                if self.system {
                    argv.push("-r".into());
                }
                argv.push(self.name.clone());
                Check::change(argv, "create group")
            }
            (Presence::Present, Some(have)) => match self.gid.filter(|g| *g != have.gid) {
                None => Check::unchanged(None),
                Some(gid) => Check::change(
                    words(&["groupmod", "-g", &gid.to_string(), &self.name]),
                    format!("gid {} → {gid}", have.gid),
                ),
            },
        })
    }

    async fn apply(&self, _ctx: &StepContext<'_>, argv: Vec<String>) -> anyhow::Result<Outcome> {
        accounts::run_tool(&argv).await?;
        Ok(Outcome {
            changed: true,
            message: Some(format!("ran {}", argv.join(" "))),
            ..Outcome::default()
        })
    }
}

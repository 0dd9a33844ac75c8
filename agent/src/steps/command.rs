//! Runs `command` on the host; its arguments and their validation are the model's
//! (`bosun_model::steps::command`).

use std::path::Path;

use bosun_model::steps::command::CommandArgs;

use super::{Check, Outcome, StepContext, StepKind};
use crate::host::process;

impl StepKind for CommandArgs {
    type Change = ();

    async fn check(&self, _ctx: &StepContext<'_>) -> anyhow::Result<Check<()>> {
        if let Some(p) = self.creates.as_deref().filter(|p| Path::new(p).exists()) {
            return Ok(Check::unchanged(Some(format!("not run: {p} exists"))));
        }
        if let Some(p) = self.removes.as_deref().filter(|p| !Path::new(p).exists()) {
            return Ok(Check::unchanged(Some(format!(
                "not run: {p} does not exist"
            ))));
        }
        Ok(Check::change((), "would run"))
    }

    async fn apply(&self, _ctx: &StepContext<'_>, (): ()) -> anyhow::Result<Outcome> {
        let output =
            process::run(&self.argv(), self.cwd.as_deref().map(Path::new), &self.env).await?;
        Ok(Outcome {
            changed: true,
            diff: None,
            message: Some(format!("exit code {}", output.rc)),
            output: Some(output),
        })
    }
}

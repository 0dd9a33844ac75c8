//! Runs `copy` on the host; its arguments and their validation are the model's
//! (`bosun_model::steps::copy`).

use std::path::Path;

use anyhow::Context;
use bosun_model::steps::copy::CopyArgs;

use super::content::{self, ContentChange};
use super::{Check, Outcome, StepContext, StepKind};
use crate::host::fs::Attrs;

impl StepKind for CopyArgs {
    type Change = ContentChange;

    async fn check(&self, ctx: &StepContext<'_>) -> anyhow::Result<Check<ContentChange>> {
        let attrs = Attrs::resolve(
            self.mode.as_deref(),
            self.owner.as_deref(),
            self.group.as_deref(),
        )?;
        let bytes = match (&self.content, &self.src) {
            (Some(c), _) => c.clone().into_bytes(),
            (None, Some(src)) => {
                let path = ctx.resolve(Path::new(src));
                std::fs::read(&path).with_context(|| format!("reading src {}", path.display()))?
            }
            (None, None) => anyhow::bail!("missing `content` or `src`"),
        };
        content::check(ctx, Path::new(&self.dest), bytes, attrs)
    }

    async fn apply(
        &self,
        _ctx: &StepContext<'_>,
        change: ContentChange,
    ) -> anyhow::Result<Outcome> {
        content::apply(Path::new(&self.dest), change)
    }
}

//! Runs `template` on the host; its arguments and their validation are the model's
//! (`bosun_model::steps::template`).

use std::path::Path;

use anyhow::Context;
use bosun_model::steps::template::TemplateArgs;

use super::content::{self, ContentChange};
use super::{Check, Outcome, StepContext, StepKind};
use crate::host::fs::Attrs;

impl StepKind for TemplateArgs {
    type Change = ContentChange;

    async fn check(&self, ctx: &StepContext<'_>) -> anyhow::Result<Check<ContentChange>> {
        let attrs = Attrs::resolve(
            self.mode.as_deref(),
            self.owner.as_deref(),
            self.group.as_deref(),
        )?;
        let src = ctx.resolve(Path::new(&self.src));
        let text = std::fs::read_to_string(&src)
            .with_context(|| format!("reading template {}", src.display()))?;
        let rendered = ctx
            .jinja
            .render_named(&src.display().to_string(), &text, ctx.vars)
            .with_context(|| format!("rendering template {}", src.display()))?;
        content::check(ctx, Path::new(&self.dest), rendered.into_bytes(), attrs)
    }

    async fn apply(
        &self,
        _ctx: &StepContext<'_>,
        change: ContentChange,
    ) -> anyhow::Result<Outcome> {
        content::apply(Path::new(&self.dest), change)
    }
}

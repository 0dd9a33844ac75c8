//! `template`: a file rendered from a Jinja template file with the run's variables, written
//! atomically.
//!
//! ```toml
//! template = { src = "templates/config.yaml.j2", dest = "/etc/rancher/k3s/config.yaml", mode = "0600" }
//! ```

use std::path::Path;

use anyhow::Context;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::content::{self, ContentChange};
use super::{ActionArgs, Check, Outcome, StepContext, StepKind};
use crate::host::fs::Attrs;

/// Arguments of `template`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateArgs {
    /// The template file (relative paths: from the playbook's directory).
    pub src: String,
    /// The file to write.
    pub dest: String,
    /// Octal permission bits, e.g. "0644" (default: kept for an existing file, 0644 for a new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Owner, by name or numeric id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Group, by name or numeric id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl ActionArgs for TemplateArgs {
    fn validate(&self) -> Vec<String> {
        super::mode_problem(self.mode.as_deref())
            .into_iter()
            .collect()
    }
}

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

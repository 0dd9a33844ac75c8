//! `copy`: a file holds given content (inline or from a file), written atomically.
//!
//! ```toml
//! copy = { dest = "/etc/bosun/agent.toml", content = "interval = 60\n", mode = "0644" }
//! copy = { dest = "/etc/motd", src = "files/motd" }   # relative to the playbook
//! ```

use std::path::Path;

use anyhow::Context;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::content::{self, ContentChange};
use super::{ActionArgs, Check, Outcome, StepContext, StepKind};
use crate::host::fs::Attrs;

/// Arguments of `copy`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CopyArgs {
    /// The file to write.
    pub dest: String,
    /// The content, inline (Jinja is rendered). Exactly one of `content` and `src`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// A file whose bytes are copied as they are (relative paths: from the playbook's directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
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

impl ActionArgs for CopyArgs {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match (&self.content, &self.src) {
            (Some(_), Some(_)) => problems.push("give either `content` or `src`, not both".into()),
            (None, None) => {
                problems.push("missing `content` or `src`: what should the file hold?".into())
            }
            _ => {}
        }
        problems.extend(super::mode_problem(self.mode.as_deref()));
        problems
    }
}

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

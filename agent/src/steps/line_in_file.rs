//! Runs `line_in_file` on the host; its arguments and their validation are the model's
//! (`bosun_model::steps::line_in_file`).

use std::path::Path;

use anyhow::{Context, bail};
use bosun_model::steps::line_in_file::{LineInFileArgs, LineState};
use regex::Regex;

use super::content::{self, ContentChange};
use super::{Check, Outcome, StepContext, StepKind};
use crate::host::fs::{Attrs, read_if_exists};

impl StepKind for LineInFileArgs {
    type Change = ContentChange;

    async fn check(&self, ctx: &StepContext<'_>) -> anyhow::Result<Check<ContentChange>> {
        let path = Path::new(&self.path);
        let attrs = Attrs::resolve(
            self.mode.as_deref(),
            self.owner.as_deref(),
            self.group.as_deref(),
        )?;
        let regexp = self
            .regexp
            .as_deref()
            .map(Regex::new)
            .transpose()
            .context("`regexp` is not a valid regular expression")?;
        let old = match read_if_exists(path)? {
            Some(bytes) => Some(
                String::from_utf8(bytes)
                    .with_context(|| format!("{} is not UTF-8 text", path.display()))?,
            ),
            None => None,
        };
        let Some(old) = old else {
            return match (self.state, self.create) {
                (LineState::Absent, _) => {
                    Ok(Check::unchanged(Some("file does not exist".to_string())))
                }
                // Under --check an earlier step may be about to create the file: report the
                // edit instead of a failure that a real run would not have.
                (LineState::Present, false) if ctx.check => {
                    let line = self.line.as_deref().unwrap_or_default();
                    let mut check =
                        content::check(ctx, path, format!("{line}\n").into_bytes(), attrs)?;
                    check.message = Some(format!(
                        "{} does not exist yet: the line is added once an earlier step creates it (without one, a real run fails here)",
                        path.display()
                    ));
                    Ok(check)
                }
                (LineState::Present, false) => {
                    bail!(
                        "{} does not exist; set `create = true` to create it",
                        path.display()
                    )
                }
                (LineState::Present, true) => {
                    let line = self.line.as_deref().unwrap_or_default();
                    content::check(ctx, path, format!("{line}\n").into_bytes(), attrs)
                }
            };
        };
        let new = edit(&old, self.state, self.line.as_deref(), regexp.as_ref());
        content::check(ctx, path, new.into_bytes(), attrs)
    }

    async fn apply(
        &self,
        _ctx: &StepContext<'_>,
        change: ContentChange,
    ) -> anyhow::Result<Outcome> {
        content::apply(Path::new(&self.path), change)
    }
}

/// The text after the edit; equal to `text` when nothing needs to change.
fn edit(text: &str, state: LineState, line: Option<&str>, regexp: Option<&Regex>) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    let matches = |l: &str| match (regexp, line) {
        (Some(re), _) => re.is_match(l),
        (None, Some(want)) => l == want,
        (None, None) => false,
    };
    match state {
        LineState::Present => {
            let want = line.unwrap_or_default();
            if let Some(i) = lines.iter().rposition(|l| matches(l)) {
                lines[i] = want;
            } else if !lines.contains(&want) {
                lines.push(want);
            }
        }
        LineState::Absent => lines.retain(|l| !matches(l)),
    }
    let mut out = lines.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    // Keep the file byte-identical when nothing changed, even without a final newline.
    if out.trim_end_matches('\n') == text.trim_end_matches('\n') {
        text.to_string()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(s: &str) -> Regex {
        Regex::new(s).unwrap()
    }

    #[test]
    fn replaces_the_last_match() {
        let out = edit(
            "port=1\nx\nport=2\n",
            LineState::Present,
            Some("port=8080"),
            Some(&re("^port=")),
        );
        assert_eq!(out, "port=1\nx\nport=8080\n");
    }

    #[test]
    fn appends_when_missing_and_is_idempotent() {
        let once = edit("a\nb", LineState::Present, Some("c=1"), Some(&re("^c=")));
        assert_eq!(once, "a\nb\nc=1\n");
        assert_eq!(
            edit(&once, LineState::Present, Some("c=1"), Some(&re("^c="))),
            once
        );
    }

    #[test]
    fn unchanged_text_stays_byte_identical() {
        assert_eq!(edit("a\nb", LineState::Present, Some("a"), None), "a\nb");
    }

    #[test]
    fn absent_removes_every_match() {
        let out = edit("k=1\nx\nk=2\n", LineState::Absent, None, Some(&re("^k=")));
        assert_eq!(out, "x\n");
    }
}

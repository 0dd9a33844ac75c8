//! Runs `block_in_file` on the host; its arguments and their validation are the model's
//! (`bosun_model::steps::block_in_file`).

use std::path::Path;

use anyhow::{Context, bail};
use bosun_model::steps::block_in_file::BlockInFileArgs;
use bosun_model::steps::line_in_file::LineState;
use regex::Regex;

use super::content::{self, ContentChange};
use super::{Check, Outcome, StepContext, StepKind};
use crate::host::fs::{Attrs, read_if_exists};

impl StepKind for BlockInFileArgs {
    type Change = ContentChange;

    async fn check(&self, ctx: &StepContext<'_>) -> anyhow::Result<Check<ContentChange>> {
        let path = Path::new(&self.path);
        let attrs = Attrs::resolve(
            self.mode.as_deref(),
            self.owner.as_deref(),
            self.group.as_deref(),
        )?;
        let old = match read_if_exists(path)? {
            Some(bytes) => Some(
                String::from_utf8(bytes)
                    .with_context(|| format!("{} is not UTF-8 text", path.display()))?,
            ),
            None => None,
        };
        let Some(old) = old else {
            if self.state == LineState::Absent {
                return Ok(Check::unchanged(Some("file does not exist".to_string())));
            }
            if !self.create && !ctx.check {
                bail!(
                    "{} does not exist; set `create = true` to create it",
                    path.display()
                );
            }
            return content::check(ctx, path, edit("", self)?.into_bytes(), attrs);
        };
        content::check(ctx, path, edit(&old, self)?.into_bytes(), attrs)
    }

    async fn apply(
        &self,
        _ctx: &StepContext<'_>,
        change: ContentChange,
    ) -> anyhow::Result<Outcome> {
        content::apply(Path::new(&self.path), change)
    }
}

/// The text with the block in place (or removed): Ansible's `blockinfile` algorithm on lines
/// that keep their endings.
fn edit(text: &str, args: &BlockInFileArgs) -> anyhow::Result<String> {
    let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_string).collect();
    let begin = format!("{}\n", args.marker.replace("{mark}", &args.marker_begin));
    let end = format!("{}\n", args.marker.replace("{mark}", &args.marker_end));
    let present = args.state == LineState::Present;
    let block_lines: Vec<String> = if present && !args.block.is_empty() {
        let mut block = args.block.clone();
        if !block.ends_with('\n') {
            block.push('\n');
        }
        std::iter::once(begin.clone())
            .chain(block.split_inclusive('\n').map(str::to_string))
            .chain(std::iter::once(end.clone()))
            .collect()
    } else {
        Vec::new()
    };
    let (mut after, before) = (args.insert_after.as_deref(), args.insert_before.as_deref());
    if after.is_none() && before.is_none() {
        after = Some("EOF");
    }
    let insert_re = match (after, before) {
        (Some(a), _) if a != "EOF" => Some(Regex::new(a)?),
        (None, Some(b)) if b != "BOF" => Some(Regex::new(b)?),
        _ => None,
    };
    let n0 = lines.iter().rposition(|l| *l == begin);
    let n1 = lines.iter().rposition(|l| *l == end);
    let at = match (n0, n1) {
        (Some(n0), Some(n1)) => {
            let (from, to) = if n0 < n1 { (n0, n1) } else { (n1, n0) };
            lines.drain(from..=to);
            from
        }
        _ => match &insert_re {
            Some(re) => {
                let bare = |l: &str| l.trim_end_matches(['\r', '\n']).to_string();
                match lines.iter().rposition(|l| re.is_match(&bare(l))) {
                    None => lines.len(),
                    Some(i) if after.is_some() => i + 1,
                    Some(i) => i,
                }
            }
            None if before.is_some() => 0,
            None => lines.len(),
        },
    };
    if at > 0 && !lines[at - 1].ends_with('\n') {
        lines[at - 1].push('\n');
    }
    lines.splice(at..at, block_lines);
    Ok(lines.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, toml: &str) -> String {
        let a: BlockInFileArgs = toml::from_str(&format!("path = \"/x\"\n{toml}")).unwrap();
        edit(text, &a).unwrap()
    }

    #[test]
    fn adds_replaces_and_removes_the_marked_block() {
        let once = run("a\nb", "block = \"x\\ny\"");
        assert_eq!(
            once,
            "a\nb\n# BEGIN MANAGED BY BOSUN\nx\ny\n# END MANAGED BY BOSUN\n"
        );
        assert_eq!(run(&once, "block = \"x\\ny\""), once);
        assert_eq!(
            run(&once, "block = 'z'"),
            "a\nb\n# BEGIN MANAGED BY BOSUN\nz\n# END MANAGED BY BOSUN\n"
        );
        assert_eq!(run(&once, "state = 'absent'"), "a\nb\n");
    }

    #[test]
    fn inserts_before_or_after_the_last_match() {
        let t = "Port 22\nMatch all\nX\n";
        let m = "marker = '# {mark} m'\nblock = 'k'";
        assert_eq!(
            run(t, &format!("{m}\ninsert_before = '^Match'")),
            "Port 22\n# BEGIN m\nk\n# END m\nMatch all\nX\n"
        );
        assert_eq!(
            run(t, &format!("{m}\ninsert_after = '^Port'")),
            "Port 22\n# BEGIN m\nk\n# END m\nMatch all\nX\n"
        );
        assert_eq!(
            run(t, &format!("{m}\ninsert_before = 'BOF'")),
            format!("# BEGIN m\nk\n# END m\n{t}")
        );
    }
}

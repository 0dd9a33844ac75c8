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
                    let new = edit("", self, regexp.as_ref())?;
                    // `backrefs` with nothing to match adds nothing: no file is created.
                    if new.is_empty() {
                        return Ok(Check::unchanged(Some(format!(
                            "{} does not exist and `regexp` matched nothing: with backrefs nothing is added",
                            path.display()
                        ))));
                    }
                    content::check(ctx, path, new.into_bytes(), attrs)
                }
            };
        };
        let new = edit(&old, self, regexp.as_ref())?;
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

/// The text after the edit; equal to `text` when nothing needs to change. Ansible's
/// `lineinfile` algorithm (`present` and `absent`), on lines that keep their endings.
fn edit(text: &str, args: &LineInFileArgs, regexp: Option<&Regex>) -> anyhow::Result<String> {
    let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_string).collect();
    let bare = |l: &str| l.trim_end_matches(['\r', '\n']).to_string();
    let want = args.line.as_deref().unwrap_or_default();
    if args.state == LineState::Absent {
        lines.retain(|l| match regexp {
            Some(re) => !re.is_match(&bare(l)),
            None => bare(l) != want,
        });
        return Ok(lines.concat());
    }
    let insert_re = match (args.insert_after.as_deref(), args.insert_before.as_deref()) {
        (Some(a), _) if a != "BOF" && a != "EOF" => Some(Regex::new(a)?),
        (None, Some(b)) if b != "BOF" => Some(Regex::new(b)?),
        _ => None,
    };
    // index.0: the line `regexp` (or `line` itself) matched; index.1: where a new line goes.
    let mut found: Option<usize> = None;
    let mut insert_at: Option<usize> = None;
    let mut captured: Option<String> = None;
    if let Some(re) = regexp {
        for (i, l) in lines.iter().enumerate() {
            if let Some(caps) = re.captures(&bare(l)) {
                found = Some(i);
                captured = Some(if args.backrefs {
                    let mut out = String::new();
                    caps.expand(&python_template(want), &mut out);
                    out
                } else {
                    want.to_string()
                });
                if args.firstmatch {
                    break;
                }
            }
        }
    }
    if captured.is_none() {
        for (i, l) in lines.iter().enumerate() {
            if bare(l) == want {
                found = Some(i);
            } else if let Some(re) = &insert_re
                && re.is_match(&bare(l))
            {
                insert_at = Some(if args.insert_after.is_some() {
                    i + 1
                } else {
                    i
                });
                if args.firstmatch {
                    break;
                }
            }
        }
    }
    let after = args.insert_after.as_deref();
    let before = args.insert_before.as_deref();
    match found {
        Some(i) => {
            let mut new_line = captured.unwrap_or_else(|| want.to_string());
            if !new_line.ends_with('\n') {
                new_line.push('\n');
            }
            if lines[i] != new_line {
                lines[i] = new_line;
            }
        }
        None if args.backrefs => {}
        None if before == Some("BOF") || after == Some("BOF") => {
            lines.insert(0, format!("{want}\n"));
        }
        None if after == Some("EOF") || insert_at.is_none() => {
            if lines.last().is_some_and(|l| !l.ends_with(['\n', '\r'])) {
                lines.push("\n".into());
            }
            lines.push(format!("{want}\n"));
        }
        None => {
            let at = insert_at.unwrap_or(lines.len());
            if after.is_some() {
                if at == lines.len() {
                    // As Ansible: no newline is added to a last line without one here.
                    if bare(&lines[at - 1]) != want {
                        lines.push(format!("{want}\n"));
                    }
                } else if bare(&lines[at]) != want {
                    lines.insert(at, format!("{want}\n"));
                }
            } else {
                lines.insert(at, format!("{want}\n"));
            }
        }
    }
    Ok(lines.concat())
}

/// Python's match-expansion template (`\1`, `\g<1>`, `\g<name>`) as `regex`'s (`${1}`,
/// `${name}`), with a literal `$` kept literal.
fn python_template(t: &str) -> String {
    let mut out = String::new();
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    let mut n = String::new();
                    while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                        n.push(d);
                        chars.next();
                        if n.len() == 2 {
                            break;
                        }
                    }
                    out.push_str(&format!("${{{n}}}"));
                }
                Some('g') => {
                    chars.next();
                    if chars.peek() == Some(&'<') {
                        chars.next();
                        let name: String = chars.by_ref().take_while(|c| *c != '>').collect();
                        out.push_str(&format!("${{{name}}}"));
                    } else {
                        out.push_str("\\g");
                    }
                }
                Some('n') => {
                    chars.next();
                    out.push('\n');
                }
                Some('t') => {
                    chars.next();
                    out.push('\t');
                }
                Some('\\') => {
                    chars.next();
                    out.push('\\');
                }
                _ => out.push('\\'),
            },
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(toml: &str) -> LineInFileArgs {
        toml::from_str(&format!("path = \"/x\"\n{toml}")).unwrap()
    }

    fn run(text: &str, toml: &str) -> String {
        let a = args(toml);
        let re = a.regexp.as_deref().map(|r| Regex::new(r).unwrap());
        edit(text, &a, re.as_ref()).unwrap()
    }

    #[test]
    fn replaces_the_last_match_or_the_first_with_firstmatch() {
        let t = "port=1\nx\nport=2\n";
        assert_eq!(
            run(t, "regexp = '^port='\nline = 'port=8'"),
            "port=1\nx\nport=8\n"
        );
        assert_eq!(
            run(t, "regexp = '^port='\nline = 'port=8'\nfirstmatch = true"),
            "port=8\nx\nport=2\n"
        );
    }

    #[test]
    fn appends_when_missing_and_is_idempotent() {
        let once = run("a\nb", "regexp = '^c='\nline = 'c=1'");
        assert_eq!(once, "a\nb\nc=1\n");
        assert_eq!(run(&once, "regexp = '^c='\nline = 'c=1'"), once);
        assert_eq!(run("a\nb", "line = 'a'"), "a\nb");
    }

    #[test]
    fn inserts_after_or_before_the_last_match_or_at_either_end() {
        let t = "[a]\nx=1\n[b]\ny=2\n";
        assert_eq!(
            run(t, "line = 'z=3'\ninsert_after = '^\\['"),
            "[a]\nx=1\n[b]\nz=3\ny=2\n"
        );
        assert_eq!(
            run(t, "line = 'z=3'\ninsert_before = '^\\['"),
            "[a]\nx=1\nz=3\n[b]\ny=2\n"
        );
        assert_eq!(
            run(t, "line = 'z=3'\ninsert_before = 'BOF'"),
            format!("z=3\n{t}")
        );
        assert_eq!(
            run(t, "line = 'z=3'\ninsert_after = 'nomatch'"),
            format!("{t}z=3\n")
        );
    }

    #[test]
    fn backrefs_fill_the_line_and_add_nothing_without_a_match() {
        let t = "GRUB=\"a b\"\n";
        let toml = "regexp = '^GRUB=\"(.*)\"$'\nline = 'GRUB=\"\\1 quiet\" $HOME'\nbackrefs = true";
        assert_eq!(run(t, toml), "GRUB=\"a b quiet\" $HOME\n");
        assert_eq!(run("other\n", toml), "other\n");
        assert_eq!(python_template("\\g<name>-\\2"), "${name}-${2}");
    }

    #[test]
    fn absent_removes_every_match() {
        assert_eq!(
            run("k=1\nx\nk=2\n", "regexp = '^k='\nstate = 'absent'"),
            "x\n"
        );
    }
}

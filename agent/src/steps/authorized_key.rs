//! Runs `authorized_key` on the host; its arguments and their validation are the model's
//! (`bosun_model::steps::authorized_key`).
//!
//! A line's key is found by splitting it into words the way sshd does (`"..."` quotes hold
//! spaces; `\"` inside them is a quote): the first word that is a key type, and the word after
//! it, the base64 data. The `ssh-key` crate's `authorized_keys` parser was tried and not used:
//! it splits options from the key at the first space, so a valid line such as
//! `command="echo hi" ssh-ed25519 AAAA...` does not parse, and it refuses key data it cannot
//! decode, while a line bosun does not understand must be kept as it is.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bosun_model::steps::authorized_key::{AuthorizedKeyArgs, is_key_type, key_lines};
use bosun_model::steps::common::Presence;

use super::content::{self, ContentChange};
use super::{Check, Outcome, StepContext, StepKind};
use crate::host::accounts;
use crate::host::fs::{self as host_fs, Attrs, lstat, read_if_exists};

/// What `apply` does.
#[derive(Debug)]
pub struct KeysChange {
    /// `~/.ssh`.
    dir: PathBuf,
    /// Create `~/.ssh` (0700, the user's), or fix its mode and owner.
    dir_change: Option<Attrs>,
    /// `~/.ssh/authorized_keys`.
    file: PathBuf,
    /// The file's new content or attributes.
    file_change: Option<ContentChange>,
}

/// The words of an `authorized_keys` line, quotes kept (sshd's reading: a `"` starts or ends a
/// quoted part, inside which spaces do not split and `\"` is a quote).
fn words(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    let (mut start, mut quoted, mut i) = (None, false, 0);
    while i < bytes.len() {
        let b = bytes[i];
        if quoted && b == b'\\' && bytes.get(i + 1) == Some(&b'"') {
            i += 2;
            continue;
        }
        if b == b'"' {
            quoted = !quoted;
        }
        let space = !quoted && (b == b' ' || b == b'\t');
        match (space, start) {
            (true, Some(s)) => {
                out.push(&line[s..i]);
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
        i += 1;
    }
    if let Some(s) = start {
        out.push(&line[s..]);
    }
    out
}

/// The key of a line, as (type, base64 data); `None` for comments, blank lines and lines with
/// no key bosun recognises.
fn key_of(line: &str) -> Option<(String, String)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let words = words(line);
    words
        .windows(2)
        .find(|w| is_key_type(w[0]))
        .map(|w| (w[0].to_string(), w[1].to_string()))
}

/// The file's new content: `wanted` lines present (replacing a line of the same key in place)
/// or absent; with `exclusive`, no other key lines. Other lines are kept byte for byte.
fn edit(old: &str, wanted: &[&str], state: Presence, exclusive: bool) -> String {
    let wanted_keys: Vec<(String, String)> = wanted.iter().filter_map(|w| key_of(w)).collect();
    let mut placed = BTreeSet::new();
    let mut out = String::new();
    for line in old.split_inclusive('\n') {
        let Some(key) = key_of(line) else {
            out.push_str(line);
            continue;
        };
        let pos = wanted_keys.iter().position(|k| *k == key);
        match (state, pos) {
            (Presence::Present, Some(i)) => {
                if placed.insert(i) {
                    out.push_str(wanted[i]);
                    out.push('\n');
                }
            }
            (Presence::Present, None) if exclusive => {}
            (Presence::Absent, Some(_)) => {}
            _ => out.push_str(line),
        }
    }
    if state == Presence::Present {
        for (i, line) in wanted.iter().enumerate() {
            if !placed.contains(&i) && !wanted_keys[..i].contains(&wanted_keys[i]) {
                if !out.is_empty() && !out.ends_with('\n') {
                    out.push('\n');
                }
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

impl StepKind for AuthorizedKeyArgs {
    type Change = KeysChange;

    async fn check(&self, ctx: &StepContext<'_>) -> anyhow::Result<Check<KeysChange>> {
        let account = accounts::user(&self.user)?;
        if account.is_none() && ctx.check {
            // An earlier step may be the one that would create the user.
            return Ok(Check::change(
                KeysChange {
                    dir: PathBuf::new(),
                    dir_change: None,
                    file: PathBuf::new(),
                    file_change: None,
                },
                format!("user {:?} does not exist yet", self.user),
            ));
        }
        let Some(account) = account else {
            bail!(
                "user {:?} does not exist; create it first with a `user` step",
                self.user
            );
        };
        let wanted: Vec<&str> = key_lines(&self.key).collect();
        if let Some(bad) = wanted.iter().find(|w| key_of(w).is_none()) {
            bail!("not a public key line: {bad:?}");
        }
        let dir = account.home.join(".ssh");
        let file = dir.join("authorized_keys");
        let owner = Attrs {
            mode: None,
            uid: Some(account.uid),
            gid: Some(account.gid),
        };
        let dir_meta = lstat(&dir)?;
        if dir_meta.as_ref().is_some_and(|m| !m.is_dir()) {
            bail!("{} exists and is not a directory", dir.display());
        }
        if dir_meta.is_none() && self.state == Presence::Absent {
            return Ok(Check::unchanged(None));
        }
        let old = read_if_exists(&file)?;
        let old_text = String::from_utf8(old.clone().unwrap_or_default())
            .with_context(|| format!("{} is not UTF-8", file.display()))?;
        let new = edit(&old_text, &wanted, self.state, self.exclusive);
        if old.is_none() && self.state == Presence::Absent {
            return Ok(Check::unchanged(None));
        }
        let dir_attrs = Attrs {
            mode: Some(0o700),
            ..owner.clone()
        };
        let dir_change = match &dir_meta {
            None => Some(dir_attrs),
            Some(m) if !dir_attrs.differences(m).is_empty() => Some(dir_attrs),
            Some(_) => None,
        };
        let file_attrs = Attrs {
            mode: Some(0o600),
            ..owner
        };
        let (file_change, diff, message) = if dir_meta.is_none() {
            let diff = content::unified_diff(&file, None, new.as_bytes());
            (
                Some(ContentChange::Write {
                    content: new.into_bytes(),
                    mode: 0o600,
                    attrs: file_attrs,
                }),
                Some(diff),
                "create ~/.ssh and authorized_keys".to_string(),
            )
        } else {
            let found = content::check(ctx, &file, new.into_bytes(), file_attrs)?;
            (found.change, found.diff, found.message.unwrap_or_default())
        };
        if dir_change.is_none() && file_change.is_none() {
            return Ok(Check::unchanged(None));
        }
        let message = match (&dir_change, message.is_empty()) {
            (Some(_), true) => format!("fix {}", dir.display()),
            _ => message,
        };
        Ok(Check::change(
            KeysChange {
                dir,
                dir_change,
                file,
                file_change,
            },
            message,
        )
        .with_diff(diff))
    }

    async fn apply(&self, _ctx: &StepContext<'_>, change: KeysChange) -> anyhow::Result<Outcome> {
        if let Some(attrs) = &change.dir_change {
            if lstat(&change.dir)?.is_none() {
                std::fs::create_dir(&change.dir)
                    .with_context(|| format!("creating {}", change.dir.display()))?;
                host_fs::sync_dir(parent(&change.dir))?;
            }
            attrs.apply(&change.dir)?;
        }
        let message = match change.file_change {
            Some(c) => content::apply(&change.file, c)?.message,
            None => Some(format!("fixed {}", change.dir.display())),
        };
        Ok(Outcome {
            changed: true,
            message,
            ..Outcome::default()
        })
    }
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA a@x";
    const B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB b@x";

    #[test]
    fn quoted_options_hold_spaces_and_the_key_is_found_after_them() {
        let line = format!("command=\"echo \\\"hi there\\\"\",no-pty {A}");
        assert_eq!(words(&line).len(), 4, "{:?}", words(&line));
        let (kind, data) = key_of(&line).unwrap();
        assert_eq!(kind, "ssh-ed25519");
        assert!(data.starts_with("AAAAC3"));
        assert_eq!(key_of("# ssh-ed25519 AAAA"), None);
        assert_eq!(key_of("garbage line"), None);
    }

    #[test]
    fn edits_keep_other_lines_replace_in_place_and_exclusive_drops_the_rest() {
        let old = format!("# team\n{B}\nfrom=\"10.0.0.1\" {A}\nnot a key\n");
        // The same key with other options is replaced in place.
        assert_eq!(
            edit(&old, &[A], Presence::Present, false),
            format!("# team\n{B}\n{A}\nnot a key\n")
        );
        // Already there as written: nothing changes.
        assert_eq!(edit(&old, &[B], Presence::Present, false), old);
        assert_eq!(
            edit(&old, &[B], Presence::Present, true),
            format!("# team\n{B}\nnot a key\n")
        );
        assert_eq!(
            edit(&old, &[B], Presence::Absent, false),
            format!("# team\nfrom=\"10.0.0.1\" {A}\nnot a key\n")
        );
        assert_eq!(
            edit("x", &[A], Presence::Present, false),
            format!("x\n{A}\n")
        );
        assert_eq!(
            edit("", &[A, A], Presence::Present, false),
            format!("{A}\n")
        );
    }
}

//! Runs `sysctl` on the host; its arguments and their validation are the model's
//! (`bosun_model::steps::sysctl`). The file edit and the decision to reload are
//! `ansible.posix.sysctl`'s (`read_sysctl_file`, `fix_lines`, `process`), ported line for line.

use std::path::Path;

use anyhow::{Context, bail};
use bosun_model::steps::common::Presence;
use bosun_model::steps::sysctl::SysctlArgs;

use super::content::{self, ContentChange};
use super::{Check, Outcome, StepContext, StepKind};
use crate::host::fs::{Attrs, read_if_exists};
use crate::host::{process, sysctl};

/// What `apply` does.
#[derive(Debug)]
pub struct SysctlChange {
    /// The file's new content.
    write: Option<ContentChange>,
    /// Run `sysctl -p FILE` after.
    reload: bool,
}

/// The settings of a sysctl file as Ansible reads them: each line trimmed; `key = value`
/// lines (not `#`/`;` comments) give `key` its value, the last one winning.
fn file_value<'a>(lines: &[&'a str], key: &str) -> Option<&'a str> {
    let mut found = None;
    for line in lines {
        if let Some((k, v)) = assignment(line)
            && k == key
        {
            found = Some(v);
        }
    }
    found
}

/// `(key, value)` of a trimmed line that sets something.
fn assignment(line: &str) -> Option<(&str, &str)> {
    if line.is_empty() || line.starts_with(['#', ';']) {
        return None;
    }
    line.split_once('=').map(|(k, v)| (k.trim(), v.trim()))
}

/// The file as Ansible rewrites it: every line trimmed; assignments written `key=value`, the
/// first line of each key kept (with the new value for `key`, dropped when `value` is
/// `None`), the others dropped; `key=value` appended when the key was not there.
fn rewrite(lines: &[&str], key: &str, value: Option<&str>) -> String {
    let mut seen: Vec<&str> = Vec::new();
    let mut out = String::new();
    for line in lines {
        let Some((k, v)) = assignment(line) else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        if seen.contains(&k) {
            continue;
        }
        seen.push(k);
        let v = if k == key { value } else { Some(v) };
        if let Some(v) = v {
            out.push_str(&format!("{k}={v}\n"));
        }
    }
    if let Some(v) = value.filter(|_| !seen.contains(&key)) {
        out.push_str(&format!("{key}={v}\n"));
    }
    out
}

/// Ansible's `_values_is_equal`: the same words in the same order.
fn same_words(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

impl StepKind for SysctlArgs {
    type Change = SysctlChange;

    async fn check(&self, ctx: &StepContext<'_>) -> anyhow::Result<Check<SysctlChange>> {
        let key = self.name.trim();
        let value = self.value_text();
        let running = match sysctl::read(key) {
            Ok(v) => Some(v),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", sysctl::path(key).display()));
            }
        };
        if running.is_none() && self.state == Presence::Present {
            bail!(
                "the kernel has no setting {key} ({} does not exist): check the name, or load the module that provides it first",
                sysctl::path(key).display()
            );
        }
        let file = Path::new(&self.file);
        let old = read_if_exists(file)?;
        let text = String::from_utf8_lossy(old.as_deref().unwrap_or_default()).into_owned();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let in_file = file_value(&lines, key);
        let write_file = match (self.state, in_file) {
            (Presence::Present, None) => true,
            (Presence::Absent, None) => false,
            (Presence::Absent, Some(v)) => !v.is_empty(),
            (Presence::Present, Some(v)) => v != value,
        };
        let differs_now = self.state == Presence::Present
            && self.reload
            && !running.as_deref().is_some_and(|r| same_words(r, &value));
        if !write_file && !differs_now {
            return Ok(Check::unchanged(None));
        }
        let mut said = Vec::new();
        let (write, diff) = if write_file {
            let wanted = (self.state == Presence::Present).then_some(value.as_str());
            let new = rewrite(&lines, key, wanted);
            let found = content::check(ctx, file, new.into_bytes(), Attrs::default())?;
            said.extend(found.message);
            (found.change, found.diff)
        } else {
            (None, None)
        };
        if differs_now {
            said.push(format!(
                "{key}: running value {:?} → {value:?}",
                running.as_deref().unwrap_or_default().trim()
            ));
        }
        Ok(Check::change(
            SysctlChange {
                write,
                reload: self.reload,
            },
            said.join("; "),
        )
        .with_diff(diff))
    }

    async fn apply(&self, _ctx: &StepContext<'_>, change: SysctlChange) -> anyhow::Result<Outcome> {
        let file = Path::new(&self.file);
        let mut said = Vec::new();
        if let Some(write) = change.write {
            said.extend(content::apply(file, write)?.message);
        }
        if change.reload {
            let argv = ["sysctl", "-p", &self.file].map(str::to_string);
            process::run_ok(&argv)
                .await
                .context("applying the file (sysctl is in the package `procps`)")?;
            said.push(format!("applied {}", self.file));
        }
        Ok(Outcome {
            changed: true,
            message: Some(said.join("; ")),
            ..Outcome::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_rewritten_as_ansible_does() {
        let text = "# kernel\n  net.a = 1 \nnet.b=2\nnet.a=3\n; old\n\nvm.x =  4 5\n";
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        assert_eq!(file_value(&lines, "net.a"), Some("3"));
        assert_eq!(file_value(&lines, "vm.x"), Some("4 5"));
        assert_eq!(file_value(&lines, "net.c"), None);
        assert_eq!(
            rewrite(&lines, "net.b", Some("7")),
            "# kernel\nnet.a=1\nnet.b=7\n; old\n\nvm.x=4 5\n"
        );
        assert_eq!(
            rewrite(&lines, "net.a", None),
            "# kernel\nnet.b=2\n; old\n\nvm.x=4 5\n"
        );
        assert_eq!(rewrite(&[], "net.c", Some("1")), "net.c=1\n");
        assert!(same_words("4096\t87380 6291456\n", "4096 87380  6291456"));
        assert!(!same_words("1", "0"));
    }
}

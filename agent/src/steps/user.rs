//! Runs `user` on the host; its arguments and their validation are the model's
//! (`bosun_model::steps::user`). The command lines are the ones Ansible's `user` module
//! builds on Linux (`create_user_useradd`, `modify_user_usermod`, `remove_user_userdel`), so
//! the account databases end up the same byte for byte.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bosun_model::steps::common::Presence;
use bosun_model::steps::user::UserArgs;

use super::{Check, Outcome, StepContext, StepKind};
use crate::host::accounts::{self, Account};

/// What `apply` runs.
#[derive(Debug)]
pub struct UserChange {
    /// `useradd`, `usermod` or `userdel` with its arguments.
    argv: Option<Vec<String>>,
    /// The home directory to make before `useradd` (its parent is missing, which `useradd -m`
    /// cannot handle), given to the user after.
    home_first: Option<PathBuf>,
    /// The home directory to make after (an existing user's is missing).
    home_after: Option<PathBuf>,
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

fn wants_home(args: &UserArgs) -> bool {
    args.create_home.unwrap_or(true)
}

/// The group written as `reference`. A missing one fails the step like Ansible's, except
/// under `--check`, where an earlier step may be the one that would create it: then `None`.
fn find_group(reference: &str, check: bool) -> anyhow::Result<Option<accounts::GroupEntry>> {
    match accounts::group(reference)? {
        Some(entry) => Ok(Some(entry)),
        None if check => Ok(None),
        None => bail!("group {reference:?} does not exist; create it first with a `group` step"),
    }
}

fn useradd(args: &UserArgs, check: bool) -> anyhow::Result<(Vec<String>, Option<PathBuf>)> {
    for g in args.group.iter().chain(args.groups.iter().flatten()) {
        find_group(g, check)?;
    }
    let mut argv = strings(&["useradd"]);
    if let Some(uid) = args.uid {
        argv.extend(["-u".into(), uid.to_string()]);
    }
    if let Some(g) = &args.group {
        argv.extend(["-g".into(), g.clone()]);
    } else if accounts::group(&args.name)?.is_some() {
        // A group named after the user exists: `useradd` would fail trying to create it
        // (USERGROUPS_ENAB), so no user group: the default group instead.
        argv.push("-N".into());
    }
    if let Some(groups) = args.groups.as_ref().filter(|g| !g.is_empty()) {
        argv.extend(["-G".into(), groups.join(",")]);
    }
    if let Some(c) = &args.comment {
        argv.extend(["-c".into(), c.clone()]);
    }
    let mut home_first = None;
    if let Some(h) = &args.home {
        let parent_missing = Path::new(h).parent().is_some_and(|p| !p.is_dir());
        if wants_home(args) && parent_missing {
            home_first = Some(PathBuf::from(h));
        }
        argv.extend(["-d".into(), h.clone()]);
    }
    if let Some(s) = &args.shell {
        argv.extend(["-s".into(), s.clone()]);
    }
    argv.push(if wants_home(args) { "-m" } else { "-M" }.into());
    if args.system {
        argv.push("-r".into());
    }
    argv.push(args.name.clone());
    Ok((argv, home_first))
}

/// `usermod` with what differs, and the differences in words; `None` when nothing does.
fn usermod(
    args: &UserArgs,
    have: &Account,
    check: bool,
) -> anyhow::Result<Option<(Vec<String>, Vec<String>)>> {
    let mut argv = strings(&["usermod"]);
    let mut said = Vec::new();
    if let Some(uid) = args.uid.filter(|u| *u != have.uid) {
        argv.extend(["-u".into(), uid.to_string()]);
        said.push(format!("uid {} → {uid}", have.uid));
    }
    if let Some(g) = &args.group {
        match find_group(g, check)? {
            Some(entry) if entry.gid == have.gid => {}
            Some(entry) => {
                argv.extend(["-g".into(), entry.gid.to_string()]);
                said.push(format!("group {} → {}", have.gid, entry.name));
            }
            None => {
                argv.extend(["-g".into(), g.clone()]);
                said.push(format!("group {} → {g} (not there yet)", have.gid));
            }
        }
    }
    if let Some(groups) = &args.groups {
        let current = accounts::memberships(have)?;
        let mut want = std::collections::BTreeSet::new();
        for g in groups {
            // Under --check a group not there yet is named as written.
            want.insert(find_group(g, check)?.map_or_else(|| g.clone(), |e| e.name));
        }
        let needs = if args.append {
            want.iter().any(|g| !current.contains(g))
        } else {
            current != want
        };
        if needs {
            if args.append {
                argv.push("-a".into());
            }
            let list: Vec<&str> = want.iter().map(String::as_str).collect();
            argv.extend(["-G".into(), list.join(",")]);
            let now: Vec<&str> = current.iter().map(String::as_str).collect();
            said.push(format!("groups [{}] → [{}]", now.join(","), list.join(",")));
        }
    }
    if let Some(c) = args.comment.as_ref().filter(|c| **c != have.comment) {
        argv.extend(["-c".into(), c.clone()]);
        said.push(format!("comment {:?} → {c:?}", have.comment));
    }
    if let Some(h) = args.home.as_ref().filter(|h| Path::new(h) != have.home) {
        argv.extend(["-d".into(), h.clone()]);
        said.push(format!("home {} → {h}", have.home.display()));
    }
    if let Some(s) = args.shell.as_ref().filter(|s| **s != have.shell) {
        argv.extend(["-s".into(), s.clone()]);
        said.push(format!("shell {} → {s}", have.shell));
    }
    if argv.len() == 1 {
        return Ok(None);
    }
    argv.push(args.name.clone());
    Ok(Some((argv, said)))
}

impl StepKind for UserArgs {
    type Change = UserChange;

    async fn check(&self, ctx: &StepContext<'_>) -> anyhow::Result<Check<UserChange>> {
        let have = accounts::user(&self.name)?;
        let change = |argv, home_first, home_after| UserChange {
            argv,
            home_first,
            home_after,
        };
        Ok(match (self.state, have) {
            (Presence::Absent, None) => Check::unchanged(None),
            (Presence::Absent, Some(_)) => {
                let mut argv = strings(&["userdel"]);
                if self.remove {
                    argv.push("-r".into());
                }
                argv.push(self.name.clone());
                Check::change(change(Some(argv), None, None), "remove user")
            }
            (Presence::Present, None) => {
                let (argv, home_first) = useradd(self, ctx.check)?;
                Check::change(change(Some(argv), home_first, None), "create user")
            }
            (Presence::Present, Some(have)) => {
                let modify = usermod(self, &have, ctx.check)?;
                let home = self.home.as_ref().map(PathBuf::from).unwrap_or(have.home);
                let home_after = (wants_home(self) && !home.exists()).then_some(home);
                let mut said = modify.as_ref().map(|(_, s)| s.clone()).unwrap_or_default();
                if let Some(h) = &home_after {
                    said.push(format!("create home {}", h.display()));
                }
                if said.is_empty() {
                    Check::unchanged(None)
                } else {
                    Check::change(
                        change(modify.map(|(argv, _)| argv), None, home_after),
                        said.join(", "),
                    )
                }
            }
        })
    }

    async fn apply(&self, _ctx: &StepContext<'_>, change: UserChange) -> anyhow::Result<Outcome> {
        if let Some(home) = &change.home_first {
            accounts::create_home(home, None)?;
        }
        if let Some(argv) = &change.argv {
            accounts::run_tool(argv).await?;
        }
        for home in change.home_first.iter().chain(change.home_after.iter()) {
            let Some(account) = accounts::user(&self.name)? else {
                bail!("user {:?} is missing after {:?}", self.name, change.argv);
            };
            if change.home_first.is_none() {
                accounts::create_home(home, Some((account.uid, account.gid)))?;
            } else {
                accounts::chown_tree(home, account.uid, account.gid)
                    .with_context(|| format!("giving {} to its user", home.display()))?;
            }
        }
        let message = match &change.argv {
            Some(argv) => format!("ran {}", argv.join(" ")),
            None => "created the home directory".to_string(),
        };
        Ok(Outcome {
            changed: true,
            message: Some(message),
            ..Outcome::default()
        })
    }
}

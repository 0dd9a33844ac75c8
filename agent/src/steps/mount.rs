//! Runs `mount` on the host; its arguments and their validation are the model's
//! (`bosun_model::steps::mount`). The fstab edit is `ansible.posix.mount`'s
//! (`_set_mount_save_old`, `unset_mount`): lines found by their second field, other lines kept.

use std::path::Path;

use bosun_model::steps::mount::{MountArgs, MountState};

use super::content::{self, ContentChange};
use super::{Check, Outcome, StepContext, StepKind};
use crate::host::fs::{self as host_fs, Attrs, read_if_exists};
use crate::host::mounts;

/// What `apply` does, in order.
#[derive(Debug, Default)]
pub struct MountChange {
    /// Unmount first (unmounted/absent, or a changed line of a mounted file system).
    umount: bool,
    /// The new fstab.
    fstab: Option<ContentChange>,
    /// Mount after (creating the mount point when missing).
    mount: bool,
}

/// The fields of an fstab line that is an entry (4 to 6 words before any `#`).
fn fields(line: &str) -> Option<Vec<&str>> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    let words: Vec<&str> = t
        .split('#')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    (4..=6).contains(&words.len()).then_some(words)
}

/// `fstab` with the entry for `args.path` as asked (`present`: each line for the path made
/// `args`' line unless its fields already match, appended when there is none; `None`: lines
/// for the path removed). Other lines are kept byte for byte.
fn edit(fstab: &str, args: &MountArgs, present: bool) -> String {
    let want = args.fstab_line();
    let want_fields: Vec<&str> = want.split(' ').collect();
    let mut out = String::new();
    let mut found = false;
    for line in fstab.split_inclusive('\n') {
        match fields(line) {
            Some(f) if f[1] == args.path => {
                found = true;
                if !present {
                    continue;
                }
                let have = [
                    f[0],
                    f[1],
                    f[2],
                    f[3],
                    f.get(4).copied().unwrap_or("0"),
                    f.get(5).copied().unwrap_or("0"),
                ];
                if have[..] == want_fields[..] {
                    out.push_str(line);
                } else {
                    out.push_str(&want);
                    out.push('\n');
                }
            }
            _ => out.push_str(line),
        }
    }
    if present && !found {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&want);
        out.push('\n');
    }
    out
}

impl StepKind for MountArgs {
    type Change = MountChange;

    async fn check(&self, ctx: &StepContext<'_>) -> anyhow::Result<Check<MountChange>> {
        let fstab = Path::new(&self.fstab);
        let old = read_if_exists(fstab)?.unwrap_or_default();
        let old = String::from_utf8_lossy(&old).into_owned();
        let mounted = mounts::is_mounted(Path::new(&self.path))?;
        let keep_line = match self.state {
            MountState::Mounted | MountState::Present => Some(true),
            MountState::Absent => Some(false),
            MountState::Unmounted => None,
        };
        let mut change = MountChange::default();
        let mut diff = None;
        let mut said = Vec::new();
        if let Some(present) = keep_line {
            let new = edit(&old, self, present);
            if new != old {
                let found = content::check(ctx, fstab, new.into_bytes(), Attrs::default())?;
                change.fstab = found.change;
                diff = found.diff;
                said.push(format!(
                    "{} {}",
                    self.fstab,
                    if present {
                        "entry set"
                    } else {
                        "entry removed"
                    }
                ));
            }
        }
        match self.state {
            MountState::Mounted if !mounted => {
                change.mount = true;
                said.push(format!("mount {}", self.path));
            }
            MountState::Mounted if change.fstab.is_some() => {
                change.umount = true;
                change.mount = true;
                said.push(format!("mount {} again with the new entry", self.path));
            }
            MountState::Unmounted | MountState::Absent if mounted => {
                change.umount = true;
                said.push(format!("unmount {}", self.path));
            }
            _ => {}
        }
        Ok(if said.is_empty() {
            Check::unchanged(None)
        } else {
            Check::change(change, said.join(", ")).with_diff(diff)
        })
    }

    async fn apply(&self, _ctx: &StepContext<'_>, change: MountChange) -> anyhow::Result<Outcome> {
        let mut said = Vec::new();
        if change.umount {
            mounts::umount(&self.path).await?;
            said.push("unmounted".to_string());
        }
        if let Some(c) = change.fstab {
            content::apply(Path::new(&self.fstab), c)?;
            said.push(format!("{} written", self.fstab));
        }
        if change.mount {
            let path = Path::new(&self.path);
            if !path.exists() {
                host_fs::create_dir_all(path)?;
            }
            mounts::mount(&self.fstab, &self.path).await?;
            said.push("mounted".to_string());
        }
        Ok(Outcome {
            changed: true,
            message: Some(said.join(", ")),
            ..Outcome::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(state: MountState) -> MountArgs {
        serde_json::from_value(serde_json::json!({
            "path": "/data", "src": "/dev/xvdf", "fstype": "ext4", "opts": "noatime",
            "state": state,
        }))
        .unwrap()
    }

    #[test]
    fn the_entry_is_set_in_place_appended_or_removed_and_other_lines_kept() {
        let a = args(MountState::Mounted);
        let old = "# static\nUUID=1  /  ext4  defaults 0 1\n/dev/xvdf /data xfs defaults\n";
        assert_eq!(
            edit(old, &a, true),
            "# static\nUUID=1  /  ext4  defaults 0 1\n/dev/xvdf /data ext4 noatime 0 0\n"
        );
        // Fields that match (dump/passno missing mean 0) leave the bytes alone.
        let same = "/dev/xvdf\t/data  ext4 noatime\n";
        assert_eq!(edit(same, &a, true), same);
        assert_eq!(
            edit("x y z w", &a, true),
            "x y z w\n/dev/xvdf /data ext4 noatime 0 0\n"
        );
        assert_eq!(
            edit(old, &a, false),
            "# static\nUUID=1  /  ext4  defaults 0 1\n"
        );
        assert_eq!(
            edit("# /dev/xvdf /data ext4 noatime 0 0\n", &a, false),
            "# /dev/xvdf /data ext4 noatime 0 0\n"
        );
    }
}

//! Runs `swap` on the host; its arguments and their validation are the model's
//! (`bosun_model::steps::swap`).
//!
//! Crash safety needs no record here: every run plans from what it finds (file size,
//! signature, whether the kernel uses it, fstab), so a bosund killed at any point of a resize
//! (after swapoff, the removal, the allocation, mkswap) leaves a state the next run of the
//! step completes: a file of another size is made again, one of the right size without a
//! signature gets mkswap, an inactive one swapon. Until then the host runs without that swap
//! file (KNOWN_GAPS.md). Proven by `kill -9` at each point in the booted box.

use std::path::Path;

use anyhow::Context;
use bosun_model::steps::swap::{SwapArgs, SwapState, SwapWant};

use super::{Check, Outcome, StepContext, StepKind};
use crate::host::fs::{self as host_fs, Attrs, read_if_exists, write_atomic};
use crate::host::swap::{self, Allocation, SwapFileFacts};

/// Where the swap line goes.
pub(crate) const FSTAB: &str = "/etc/fstab";
/// Where the boot-time `vm.swappiness` goes.
pub(crate) const SYSCTL_FILE: &str = "/etc/sysctl.d/60-bosun-swap.conf";

/// What is there now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SwapHave {
    /// The file, if it exists.
    pub file: Option<SwapFileFacts>,
    /// The kernel uses it.
    pub active: bool,
    /// `/etc/fstab` as it is (empty when missing).
    pub fstab: String,
    /// Runtime `vm.swappiness`, when it was asked for.
    pub swappiness: Option<u32>,
    /// The content of [`SYSCTL_FILE`], when it exists.
    pub sysctl_file: Option<String>,
}

/// One thing to do, in the order of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwapAction {
    /// `swapoff` the file.
    Swapoff,
    /// Remove the file.
    Remove,
    /// Create it with this many bytes, mode 0600.
    Create(u64),
    /// Set its mode to 0600 (swap must not be readable by others).
    Chmod,
    /// `mkswap` it.
    Mkswap,
    /// `swapon` it.
    Swapon,
    /// Write this as the new `/etc/fstab`.
    WriteFstab(String),
    /// Write this to `/proc/sys/vm/swappiness`.
    SetSwappiness(u32),
    /// Write this as the new [`SYSCTL_FILE`].
    WriteSysctl(String),
}

impl SwapAction {
    fn describe(&self, path: &str) -> String {
        match self {
            SwapAction::Swapoff => format!("swapoff {path}"),
            SwapAction::Remove => format!("remove {path}"),
            SwapAction::Create(size) => format!("create {path} ({})", human_size(*size)),
            SwapAction::Chmod => format!("chmod 0600 {path}"),
            SwapAction::Mkswap => format!("mkswap {path}"),
            SwapAction::Swapon => format!("swapon {path}"),
            SwapAction::WriteFstab(_) => format!("update {FSTAB}"),
            SwapAction::SetSwappiness(v) => format!("vm.swappiness = {v}"),
            SwapAction::WriteSysctl(_) => format!("write {SYSCTL_FILE}"),
        }
    }
}

/// "1GiB", "512MiB", or bytes.
pub(crate) fn human_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

/// Whether `fstab` has a swap line for `path` (first field the path, third `swap`; comments
/// and other lines ignored).
pub(crate) fn fstab_has_swap(fstab: &str, path: &str) -> bool {
    fstab.lines().any(|l| is_swap_line(l, path))
}

fn is_swap_line(line: &str, path: &str) -> bool {
    let f: Vec<&str> = line.split_whitespace().collect();
    !line.trim_start().starts_with('#') && f.len() >= 3 && f[0] == path && f[2] == "swap"
}

/// `fstab` with a swap line for `path` appended (a final newline added first when missing).
pub(crate) fn fstab_with_swap(fstab: &str, path: &str) -> String {
    let mut out = fstab.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!("{path} none swap sw 0 0\n"));
    out
}

/// `fstab` without the swap lines for `path`; everything else kept byte for byte.
pub(crate) fn fstab_without_swap(fstab: &str, path: &str) -> String {
    fstab
        .split_inclusive('\n')
        .filter(|l| !is_swap_line(l, path))
        .collect()
}

/// The content of [`SYSCTL_FILE`] for a swappiness.
pub(crate) fn sysctl_content(swappiness: u32) -> String {
    format!("# Written by bosun (swap step).\nvm.swappiness = {swappiness}\n")
}

/// What to do to get from `have` to `want`. Pure: the whole idempotency of the step.
pub(crate) fn plan(want: &SwapWant, have: &SwapHave) -> Vec<SwapAction> {
    let mut actions = Vec::new();
    match want.state {
        SwapState::Absent => {
            if have.active {
                actions.push(SwapAction::Swapoff);
            }
            if fstab_has_swap(&have.fstab, &want.path) {
                actions.push(SwapAction::WriteFstab(fstab_without_swap(
                    &have.fstab,
                    &want.path,
                )));
            }
            if have.file.is_some() {
                actions.push(SwapAction::Remove);
            }
        }
        SwapState::Present => {
            let recreate = have.file.is_none_or(|f| f.size != want.size);
            if recreate {
                if have.active {
                    actions.push(SwapAction::Swapoff);
                }
                if have.file.is_some() {
                    actions.push(SwapAction::Remove);
                }
                actions.extend([SwapAction::Create(want.size), SwapAction::Mkswap]);
            } else if let Some(file) = have.file {
                if file.mode != 0o600 {
                    actions.push(SwapAction::Chmod);
                }
                // An active area has its signature; one without must not be touched while
                // the kernel uses it.
                if !file.signature && !have.active {
                    actions.push(SwapAction::Mkswap);
                }
            }
            if recreate || !have.active {
                actions.push(SwapAction::Swapon);
            }
            if !fstab_has_swap(&have.fstab, &want.path) {
                actions.push(SwapAction::WriteFstab(fstab_with_swap(
                    &have.fstab,
                    &want.path,
                )));
            }
            if let Some(value) = want.swappiness {
                if have.swappiness != Some(value) {
                    actions.push(SwapAction::SetSwappiness(value));
                }
                let content = sysctl_content(value);
                if have.sysctl_file.as_deref() != Some(content.as_str()) {
                    actions.push(SwapAction::WriteSysctl(content));
                }
            }
        }
    }
    actions
}

impl StepKind for SwapArgs {
    type Change = Vec<SwapAction>;

    async fn check(&self, _ctx: &StepContext<'_>) -> anyhow::Result<Check<Vec<SwapAction>>> {
        let want = self.want()?;
        let path = Path::new(&want.path);
        let fstab = read_if_exists(Path::new(FSTAB))?.unwrap_or_default();
        let sysctl_file = read_if_exists(Path::new(SYSCTL_FILE))?;
        let have = SwapHave {
            file: swap::inspect(path)?,
            active: swap::is_active(path)?,
            fstab: String::from_utf8_lossy(&fstab).into_owned(),
            swappiness: match want.swappiness {
                Some(_) => Some(swap::swappiness()?),
                None => None,
            },
            sysctl_file: sysctl_file.map(|b| String::from_utf8_lossy(&b).into_owned()),
        };
        let actions = plan(&want, &have);
        Ok(if actions.is_empty() {
            Check::unchanged(Some(match want.state {
                SwapState::Present => {
                    format!("{} ({}) is in use", want.path, human_size(want.size))
                }
                SwapState::Absent => format!("no swap file at {}", want.path),
            }))
        } else {
            let message = describe(&want.path, &actions);
            Check::change(actions, message)
        })
    }

    async fn apply(
        &self,
        _ctx: &StepContext<'_>,
        actions: Vec<SwapAction>,
    ) -> anyhow::Result<Outcome> {
        let path_str = self.path.clone();
        let path = Path::new(&path_str);
        let mut allocation = None;
        // A file this run swaps on without having made it may be one a killed run allocated
        // (fallocate), which some file systems refuse as swap: it gets the same second try
        // with zeros as a file made now.
        if actions.contains(&SwapAction::Swapon)
            && !actions.iter().any(|a| matches!(a, SwapAction::Create(_)))
        {
            allocation = Some(Allocation::Fallocated);
        }
        for action in &actions {
            match action {
                SwapAction::Swapoff => swap::swapoff(path).await?,
                SwapAction::Remove => host_fs::remove(path, false)
                    .with_context(|| format!("removing {}", path.display()))?,
                SwapAction::Create(size) => allocation = Some(swap::create(path, *size, false)?),
                SwapAction::Chmod => Attrs {
                    mode: Some(0o600),
                    ..Attrs::default()
                }
                .apply(path)?,
                SwapAction::Mkswap => swap::mkswap(path).await?,
                SwapAction::Swapon => swapon(path, allocation).await?,
                SwapAction::WriteFstab(content) => write_keeping_mode(Path::new(FSTAB), content)?,
                SwapAction::SetSwappiness(v) => swap::set_swappiness(*v)?,
                SwapAction::WriteSysctl(content) => {
                    host_fs::create_dir_all(Path::new("/etc/sysctl.d"))
                        .context("creating /etc/sysctl.d")?;
                    write_keeping_mode(Path::new(SYSCTL_FILE), content)?
                }
            }
            match action {
                SwapAction::Swapoff => super::kill_point("swap-off"),
                SwapAction::Remove => super::kill_point("swap-removed"),
                SwapAction::Create(_) => super::kill_point("swap-created"),
                SwapAction::Mkswap => super::kill_point("swap-mkswap"),
                _ => {}
            }
        }
        Ok(Outcome {
            changed: true,
            message: Some(describe(&path_str, &actions)),
            ..Outcome::default()
        })
    }
}

/// `swapon`; a fallocated file the file system refuses as swap ("swapfile has holes") is made
/// again with zeros and tried once more.
async fn swapon(path: &Path, allocation: Option<Allocation>) -> anyhow::Result<()> {
    match swap::swapon(path).await {
        Ok(()) => Ok(()),
        Err(e) if allocation == Some(Allocation::Fallocated) => {
            let size = std::fs::metadata(path)
                .with_context(|| format!("reading {}", path.display()))?
                .len();
            tracing::info!(
                "{e:#}: writing {} with zeros and trying again",
                path.display()
            );
            host_fs::remove(path, false).with_context(|| format!("removing {}", path.display()))?;
            swap::create(path, size, true)?;
            swap::mkswap(path).await?;
            swap::swapon(path)
                .await
                .with_context(|| format!("(the first attempt said: {e:#})"))
        }
        Err(e) => Err(e),
    }
}

fn write_keeping_mode(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mode = std::fs::metadata(path).map_or(0o644, |m| m.mode() & 0o7777);
    write_atomic(path, content.as_bytes(), mode, &Attrs::default())
}

fn describe(path: &str, actions: &[SwapAction]) -> String {
    actions
        .iter()
        .map(|a| a.describe(path))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use SwapAction::*;

    const GIB: u64 = 1 << 30;

    fn want(size: u64, swappiness: Option<u32>) -> SwapWant {
        SwapWant {
            path: "/swapfile".into(),
            state: SwapState::Present,
            size,
            swappiness,
        }
    }

    fn file(size: u64) -> Option<SwapFileFacts> {
        Some(SwapFileFacts {
            size,
            mode: 0o600,
            signature: true,
        })
    }

    const FSTAB_BASE: &str = "# <file system> <mount point> <type> <options> <dump> <pass>\nUUID=abc / ext4 defaults 0 1\n";

    fn have(file: Option<SwapFileFacts>, active: bool, fstab: &str) -> SwapHave {
        SwapHave {
            file,
            active,
            fstab: fstab.into(),
            swappiness: Some(60),
            sysctl_file: None,
        }
    }

    #[test]
    fn a_bare_host_gets_file_mkswap_swapon_then_fstab() {
        let actions = plan(&want(GIB, None), &have(None, false, FSTAB_BASE));
        let expected_fstab = format!("{FSTAB_BASE}/swapfile none swap sw 0 0\n");
        assert_eq!(
            actions,
            vec![Create(GIB), Mkswap, Swapon, WriteFstab(expected_fstab)]
        );
    }

    #[test]
    fn everything_in_place_plans_nothing() {
        let fstab = fstab_with_swap(FSTAB_BASE, "/swapfile");
        let mut h = have(file(GIB), true, &fstab);
        h.sysctl_file = Some(sysctl_content(10));
        h.swappiness = Some(10);
        assert_eq!(plan(&want(GIB, Some(10)), &h), vec![]);
    }

    #[test]
    fn a_size_change_turns_swap_off_before_recreating() {
        let fstab = fstab_with_swap(FSTAB_BASE, "/swapfile");
        let actions = plan(&want(2 * GIB, None), &have(file(GIB), true, &fstab));
        assert_eq!(
            actions,
            vec![Swapoff, Remove, Create(2 * GIB), Mkswap, Swapon]
        );
    }

    #[test]
    fn an_inactive_file_is_swapped_on_and_repaired_without_recreating() {
        let fstab = fstab_with_swap(FSTAB_BASE, "/swapfile");
        let f = Some(SwapFileFacts {
            size: GIB,
            mode: 0o644,
            signature: false,
        });
        assert_eq!(
            plan(&want(GIB, None), &have(f, false, &fstab)),
            vec![Chmod, Mkswap, Swapon]
        );
        // Active but world-readable: fix the mode, never mkswap a live area.
        assert_eq!(plan(&want(GIB, None), &have(f, true, &fstab)), vec![Chmod]);
    }

    #[test]
    fn swappiness_is_set_now_and_for_boot_separately() {
        let fstab = fstab_with_swap(FSTAB_BASE, "/swapfile");
        let mut h = have(file(GIB), true, &fstab);
        assert_eq!(
            plan(&want(GIB, Some(10)), &h),
            vec![SetSwappiness(10), WriteSysctl(sysctl_content(10))]
        );
        h.swappiness = Some(10);
        assert_eq!(
            plan(&want(GIB, Some(10)), &h),
            vec![WriteSysctl(sysctl_content(10))]
        );
    }

    #[test]
    fn absent_turns_off_unlists_and_removes() {
        let fstab = fstab_with_swap(FSTAB_BASE, "/swapfile");
        let w = SwapWant {
            state: SwapState::Absent,
            ..want(0, None)
        };
        assert_eq!(
            plan(&w, &have(file(GIB), true, &fstab)),
            vec![Swapoff, WriteFstab(FSTAB_BASE.into()), Remove]
        );
        assert_eq!(plan(&w, &have(None, false, FSTAB_BASE)), vec![]);
    }

    #[test]
    fn fstab_edits_keep_everything_else() {
        let odd = "UUID=abc / ext4 defaults 0 1\n# /swapfile none swap sw 0 0\n/swapfile  none  swap  defaults,pri=5 0 0\ntmpfs /tmp tmpfs defaults 0 0";
        assert!(fstab_has_swap(odd, "/swapfile"));
        assert!(!fstab_has_swap(odd, "/other"));
        assert_eq!(
            fstab_without_swap(odd, "/swapfile"),
            "UUID=abc / ext4 defaults 0 1\n# /swapfile none swap sw 0 0\ntmpfs /tmp tmpfs defaults 0 0"
        );
        assert_eq!(
            fstab_with_swap("tmpfs /tmp tmpfs defaults 0 0", "/s"),
            "tmpfs /tmp tmpfs defaults 0 0\n/s none swap sw 0 0\n"
        );
        assert_eq!(fstab_with_swap("", "/s"), "/s none swap sw 0 0\n");
    }

    #[test]
    fn sizes_print_in_binary_units() {
        assert_eq!(human_size(GIB), "1GiB");
        assert_eq!(human_size(1536 << 20), "1536MiB");
    }
}

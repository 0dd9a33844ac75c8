//! `swap`: a swap file of a given size is in use, listed in `/etc/fstab` so it comes back at
//! boot, optionally with `vm.swappiness` set (now and at boot).
//!
//! ```toml
//! swap = { size = "1GiB" }                                    # /swapfile
//! swap = { path = "/var/swap", size = "512MiB", swappiness = 10 }
//! swap = { path = "/var/swap", state = "absent" }
//! ```
//! A 1 GiB host running k3s needs one. Creating: the file (mode 0600 from the start) gets its
//! blocks from `fallocate(2)`, or zeros where the file system has no fallocate; `mkswap`;
//! `swapon` (should the file system refuse a fallocated file, "swapfile has holes", it is made
//! again with zeros); then the fstab line `PATH none swap sw 0 0`, written atomically. The fstab
//! line comes after `swapon` succeeded, so a swap file the kernel refuses is never made a boot
//! requirement. `swappiness` is written to `/proc/sys/vm/swappiness` and to
//! `/etc/sysctl.d/60-bosun-swap.conf`.
//!
//! Idempotent: a second run finds the file at its size with its signature, active, in fstab,
//! and changes nothing. A different `size` recreates the file: `swapoff` first (the kernel
//! moves swapped pages back to memory, which fails when memory is short: the step then fails
//! and leaves the old swap in place), then remove, create, mkswap, swapon.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ActionArgs;
use crate::jinja::is_templated;

/// Smallest swap file accepted (mkswap's own minimum is 10 pages).
const MIN_SIZE: u64 = 1 << 20;

/// Arguments of `swap`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SwapArgs {
    /// The swap file (absolute path; default "/swapfile").
    #[serde(default = "default_path")]
    pub path: String,
    /// Its size: "1GiB", "512MiB", "2G", "1048576" (bytes). Binary units; a multiple of 4 KiB,
    /// at least 1 MiB. Required with `state = "present"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// `present` (default) or `absent` (swapoff, fstab line removed, file removed).
    #[serde(default)]
    pub state: SwapState,
    /// `vm.swappiness` (0-200) to set now and at boot; unset: left alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swappiness: Option<u32>,
}

fn default_path() -> String {
    "/swapfile".to_string()
}

/// Whether the swap file exists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SwapState {
    /// Created, active, in fstab.
    #[default]
    Present,
    /// Off, out of fstab, removed.
    Absent,
}

/// Parses a size: digits with an optional binary unit (`K`, `KiB`, `M`, `MiB`, `G`, `GiB`,
/// `T`, `TiB`; case-insensitive); a plain number is bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let bad = || {
        format!(
            "size {s:?} is not a size such as \"1GiB\", \"512MiB\" or \"2G\" (binary units; a plain number is bytes)"
        )
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        "kb" | "mb" | "gb" | "tb" => {
            return Err(format!(
                "size {s:?}: write binary units (\"{digits}{}iB\") — decimal ones are ambiguous for swap",
                unit.trim()[..1].to_ascii_uppercase()
            ));
        }
        _ => return Err(bad()),
    };
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

/// Checks a parsed size against what swap needs.
fn check_size(bytes: u64, s: &str) -> Result<u64, String> {
    if bytes < MIN_SIZE {
        return Err(format!(
            "size {s:?} is too small for swap: give at least 1MiB"
        ));
    }
    if !bytes.is_multiple_of(4096) {
        return Err(format!("size {s:?} is not a multiple of 4KiB (a page)"));
    }
    Ok(bytes)
}

/// What the step wants, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapWant {
    /// Absolute path of the file.
    pub path: String,
    /// Present or absent.
    pub state: SwapState,
    /// Bytes (present only).
    pub size: u64,
    /// `vm.swappiness`, when asked for.
    pub swappiness: Option<u32>,
}

impl SwapArgs {
    /// What the step wants, parsed; an error when `size` is missing or not a swap size.
    pub fn want(&self) -> anyhow::Result<SwapWant> {
        let size = match (self.state, self.size.as_deref()) {
            (SwapState::Present, Some(s)) => parse_size(s)
                .and_then(|b| check_size(b, s))
                .map_err(anyhow::Error::msg)?,
            (SwapState::Present, None) => anyhow::bail!("`size` is required"),
            (SwapState::Absent, _) => 0,
        };
        Ok(SwapWant {
            path: self.path.clone(),
            state: self.state,
            size,
            swappiness: self.swappiness,
        })
    }
}

impl ActionArgs for SwapArgs {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !is_templated(&self.path) && (!self.path.starts_with('/') || self.path.ends_with('/')) {
            problems.push(format!(
                "path {:?} must be an absolute file path such as \"/swapfile\"",
                self.path
            ));
        }
        match (self.state, self.size.as_deref()) {
            (SwapState::Present, None) => {
                problems.push("missing `size` (e.g. size = \"1GiB\")".to_string())
            }
            (SwapState::Present, Some(s)) if !is_templated(s) => {
                problems.extend(parse_size(s).and_then(|b| check_size(b, s)).err())
            }
            (SwapState::Absent, Some(_)) => {
                problems.push("`size` means nothing with `state = \"absent\"`".to_string())
            }
            _ => {}
        }
        match (self.state, self.swappiness) {
            (SwapState::Absent, Some(_)) => {
                problems.push("`swappiness` means nothing with `state = \"absent\"`".to_string())
            }
            (_, Some(v)) if v > 200 => {
                problems.push(format!("swappiness {v} is out of range: 0 to 200"))
            }
            _ => {}
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn sizes_parse_in_binary_units_and_bad_ones_say_how_to_write_them() {
        assert_eq!(parse_size("1GiB"), Ok(GIB));
        assert_eq!(parse_size("1G"), Ok(GIB));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert!(parse_size("1GB").unwrap_err().contains("\"1GiB\""));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert!(
            check_size(4096, "4K")
                .unwrap_err()
                .contains("at least 1MiB")
        );
        assert!(check_size((1 << 20) + 1, "x").unwrap_err().contains("4KiB"));
    }

    #[test]
    fn validation() {
        let base = SwapArgs {
            path: "swapfile".into(),
            size: None,
            state: SwapState::Present,
            swappiness: Some(300),
        };
        let p = base.validate().join("\n");
        assert!(p.contains("absolute"), "{p}");
        assert!(p.contains("missing `size`"), "{p}");
        assert!(p.contains("0 to 200"), "{p}");
        let absent = SwapArgs {
            path: "/swapfile".into(),
            size: Some("1GiB".into()),
            state: SwapState::Absent,
            swappiness: None,
        };
        assert!(absent.validate()[0].contains("`size` means nothing"));
    }
}

//! What is mounted where (`/proc/self/mountinfo`), and `mount`/`umount` (util-linux), run with
//! an argument vector.

use std::path::Path;

use anyhow::Context;

use super::process;

/// The mount points of `/proc/self/mountinfo` text (its fifth field, unescaped).
pub(crate) fn mount_points(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4).map(unescape_octal))
        .collect()
}

/// Whether something is mounted at `path` now (in this process's mount namespace).
pub(crate) fn is_mounted(path: &Path) -> anyhow::Result<bool> {
    const MOUNTINFO: &str = "/proc/self/mountinfo";
    let text =
        std::fs::read_to_string(MOUNTINFO).with_context(|| format!("reading {MOUNTINFO}"))?;
    let want = path.to_string_lossy();
    Ok(mount_points(&text).iter().any(|p| *p == want))
}

/// `mount -T FSTAB PATH`: mounts what `fstab`'s line for `path` says.
pub(crate) async fn mount(fstab: &str, path: &str) -> anyhow::Result<()> {
    let argv = ["mount", "-T", fstab, path].map(str::to_string);
    process::run_ok(&argv)
        .await
        .context("mounting (util-linux `mount`)")?;
    Ok(())
}

/// `umount PATH`.
pub(crate) async fn umount(path: &str) -> anyhow::Result<()> {
    let argv = ["umount", path].map(str::to_string);
    process::run_ok(&argv)
        .await
        .context("unmounting (util-linux `umount`)")?;
    Ok(())
}

/// The kernel writes spaces, tabs, newlines and backslashes in paths as `\ooo`.
pub(crate) fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_the_fifth_field_unescaped() {
        let text = "22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/root rw\n\
                    90 22 0:50 / /mnt/with\\040space rw - tmpfs tmpfs rw\n";
        assert_eq!(mount_points(text), ["/", "/mnt/with space"]);
        assert!(is_mounted(Path::new("/")).unwrap());
    }
}

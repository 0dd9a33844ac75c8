//! Swap files: what is there (the file, its swap signature, whether the kernel uses it,
//! `vm.swappiness`) and the operations that change it (create, `mkswap`, `swapon`, `swapoff`).
//!
//! `/proc/swaps` lists every swap area of the kernel with its path relative to the root of
//! the file system it lives on; on a host that is the path as written in `/etc/fstab`. Inside
//! a container sharing the kernel, a host's `/swapfile` shows up as `/swapfile` too: the
//! caller asks about its own path only, and `swapoff` resolves the path in its own view.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{Context, bail};
use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, fallocate};

use super::process;

/// The kernel's list of active swap areas.
pub const PROC_SWAPS: &str = "/proc/swaps";
/// The runtime value of `vm.swappiness`.
pub const PROC_SWAPPINESS: &str = "/proc/sys/vm/swappiness";
/// What mkswap writes at the end of the first page of a swap area (format version 2).
const SIGNATURE: &[u8] = b"SWAPSPACE2";

/// What is at a swap file's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwapFileFacts {
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// It carries a swap signature (mkswap was run on it).
    pub signature: bool,
}

/// Looks at `path`: `None` when nothing is there; an error when it is not a regular file.
pub fn inspect(path: &Path) -> anyhow::Result<Option<SwapFileFacts>> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if !meta.is_file() {
        bail!(
            "{} exists and is not a regular file: choose another swap file path",
            path.display()
        );
    }
    Ok(Some(SwapFileFacts {
        size: meta.len(),
        mode: meta.mode() & 0o7777,
        signature: has_signature(path)?,
    }))
}

/// Whether the file carries mkswap's signature, for the page sizes Linux uses.
fn has_signature(path: &Path) -> anyhow::Result<bool> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())
        .unwrap_or(4096);
    for page_size in [page, 4096, 16384, 65536] {
        let mut buf = [0u8; SIGNATURE.len()];
        let at = page_size - SIGNATURE.len() as u64;
        if file.seek(SeekFrom::Start(at)).is_ok()
            && file.read_exact(&mut buf).is_ok()
            && buf == SIGNATURE
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Paths of the active swap files (not partitions) in `/proc/swaps` text.
pub fn parse_proc_swaps(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (path, kind) = (f.next()?, f.next()?);
            (kind == "file").then(|| super::mounts::unescape_octal(path))
        })
        .collect()
}

/// Whether the kernel uses `path` as swap now.
pub fn is_active(path: &Path) -> anyhow::Result<bool> {
    let text = fs::read_to_string(PROC_SWAPS).with_context(|| format!("reading {PROC_SWAPS}"))?;
    let want = path.to_string_lossy();
    Ok(parse_proc_swaps(&text).iter().any(|p| *p == want))
}

/// How a new swap file got its blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// `fallocate(2)`: instant, but some file systems refuse such files as swap ("holes").
    Fallocated,
    /// Zeros written (what `dd if=/dev/zero` does): slow, accepted everywhere.
    Written,
}

/// Creates `path` (which must not exist) with mode 0600 and `size` bytes, by `fallocate(2)`
/// or, where the file system does not support it (or `zero_fill` is asked), by writing
/// zeros. Flushed to disk before returning.
pub fn create(path: &Path, size: u64, zero_fill: bool) -> anyhow::Result<Allocation> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let len = i64::try_from(size).context("swap size too large")?;
    let how = if zero_fill {
        Allocation::Written
    } else {
        match fallocate(&file, FallocateFlags::empty(), 0, len) {
            Ok(()) => Allocation::Fallocated,
            Err(Errno::EOPNOTSUPP | Errno::ENOSYS) => Allocation::Written,
            Err(e) => {
                let _ = fs::remove_file(path);
                return Err(e).with_context(|| {
                    format!(
                        "allocating {size} bytes for {} (is the disk full?)",
                        path.display()
                    )
                });
            }
        }
    };
    if how == Allocation::Written {
        let chunk = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if let Err(e) = file.write_all(&chunk[..n]) {
                let _ = fs::remove_file(path);
                return Err(e)
                    .with_context(|| format!("writing {} (is the disk full?)", path.display()));
            }
            left -= n as u64;
        }
    }
    file.sync_all()
        .with_context(|| format!("flushing {}", path.display()))?;
    Ok(how)
}

/// `mkswap PATH`.
pub async fn mkswap(path: &Path) -> anyhow::Result<()> {
    run_ok(&["mkswap", &path.to_string_lossy()]).await
}

/// `swapon PATH`.
pub async fn swapon(path: &Path) -> anyhow::Result<()> {
    run_ok(&["swapon", &path.to_string_lossy()]).await
}

/// `swapoff PATH`: the kernel moves the pages back into memory first, so this fails when
/// memory is too short to hold them.
pub async fn swapoff(path: &Path) -> anyhow::Result<()> {
    run_ok(&["swapoff", &path.to_string_lossy()])
        .await
        .context("swapoff needs enough free memory to take back what is swapped out")
}

/// The runtime `vm.swappiness`.
pub fn swappiness() -> anyhow::Result<u32> {
    let text = fs::read_to_string(PROC_SWAPPINESS)
        .with_context(|| format!("reading {PROC_SWAPPINESS}"))?;
    text.trim()
        .parse()
        .with_context(|| format!("{PROC_SWAPPINESS} holds {text:?}, not a number"))
}

/// Sets the runtime `vm.swappiness`.
pub fn set_swappiness(value: u32) -> anyhow::Result<()> {
    fs::write(PROC_SWAPPINESS, format!("{value}\n")).with_context(|| {
        format!(
            "setting {PROC_SWAPPINESS} to {value} (read-only /proc/sys: in a container? leave `swappiness` unset there)"
        )
    })
}

async fn run_ok(argv: &[&str]) -> anyhow::Result<()> {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    process::run_ok(&argv)
        .await
        .with_context(|| format!("running {} (util-linux)", argv[0]))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_swaps_lists_files_only_and_unescapes_paths() {
        let text = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
                    /dev/vda2                               partition\t1048572\t\t0\t\t-2\n\
                    /swapfile                               file\t\t1048572\t\t0\t\t-3\n\
                    /var/my\\040swap                         file\t\t1024\t\t0\t\t-4\n";
        assert_eq!(parse_proc_swaps(text), vec!["/swapfile", "/var/my swap"]);
    }

    #[test]
    fn created_files_have_size_mode_and_get_a_signature_only_from_mkswap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("swap");
        let how = create(&path, 1 << 20, false).unwrap();
        assert!(matches!(how, Allocation::Fallocated | Allocation::Written));
        let facts = inspect(&path).unwrap().unwrap();
        assert_eq!(facts.size, 1 << 20);
        assert_eq!(facts.mode, 0o600);
        assert!(!facts.signature);
        assert!(create(&path, 1 << 20, false).is_err(), "never overwrites");
        let zeroed = dir.path().join("zeroed");
        assert_eq!(create(&zeroed, 3 << 20, true).unwrap(), Allocation::Written);
        assert_eq!(inspect(&zeroed).unwrap().unwrap().size, 3 << 20);

        // A signature where mkswap puts it.
        let mut f = OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(4096 - 10)).unwrap();
        f.write_all(SIGNATURE).unwrap();
        assert!(inspect(&path).unwrap().unwrap().signature);

        assert_eq!(inspect(&dir.path().join("none")).unwrap(), None);
        assert!(
            inspect(dir.path()).is_err(),
            "a directory is not a swap file"
        );
    }
}

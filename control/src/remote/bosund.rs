//! The `bosund` binary on a host: where it lives, whether it is this build (SHA-256), and its
//! atomic upload (temp file beside the target, digest checked on the host, chmod, rename).

use std::path::Path;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use super::ssh::{Ssh, shell_quote};

/// Where bosund goes when no path is configured: root installs system-wide, anyone else under
/// their home (no sudo needed, nothing outside it touched).
pub const ROOT_PATH: &str = "/usr/local/bin/bosund";
/// The non-root default, relative to `$HOME`.
pub const USER_PATH: &str = ".local/bin/bosund";

/// The local `bosund` to ship, read once and shared by every host of a run.
pub struct LocalBosund {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Their SHA-256, lower-case hex.
    pub sha256: String,
}

impl LocalBosund {
    /// Reads and hashes `path`; it must be an ELF executable.
    pub fn load(path: &Path) -> Result<LocalBosund> {
        let bytes = std::fs::read(path).with_context(|| {
            format!(
                "cannot read bosund at {} (build it with `cargo build --release -p bosun-agent`, \
                 or pass --bosund PATH)",
                path.display()
            )
        })?;
        if !bytes.starts_with(b"\x7fELF") {
            bail!(
                "{} is not an ELF executable: --bosund must point at the Linux bosund binary",
                path.display()
            );
        }
        let sha256 = hex::encode(Sha256::digest(&bytes));
        Ok(LocalBosund { bytes, sha256 })
    }
}

/// What the probe found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The absolute path bosund is (or will be) at.
    pub path: String,
    /// The SHA-256 of the file there, if any.
    pub sha256: Option<String>,
}

/// The shell snippet that sets `$p` to bosund's path on the host.
fn path_snippet(configured: Option<&str>) -> String {
    match configured {
        Some(p) => format!("p={}", shell_quote(p)),
        None => {
            format!("if [ \"$(id -u)\" = 0 ]; then p={ROOT_PATH}; else p=\"$HOME/{USER_PATH}\"; fi")
        }
    }
}

/// Finds bosund's path on the host and hashes the file there.
pub async fn probe(ssh: &Ssh, configured: Option<&str>) -> Result<Installed> {
    let script = format!(
        "{}; printf 'path=%s\\n' \"$p\"; if [ -f \"$p\" ]; then command -v sha256sum >/dev/null \
         || {{ echo 'sha256sum is missing (coreutils)' >&2; exit 3; }}; printf 'sha256=%s\\n' \
         \"$(sha256sum < \"$p\" | cut -d' ' -f1)\"; fi",
        path_snippet(configured)
    );
    let out = ssh.exec(&script).await?;
    if out.code != Some(0) {
        bail!(
            "cannot inspect bosund on the host (exit {:?}): {}",
            out.code,
            out.stderr_text()
        );
    }
    parse_probe(&String::from_utf8_lossy(&out.stdout))
}

fn parse_probe(text: &str) -> Result<Installed> {
    let mut path = None;
    let mut sha256 = None;
    for line in text.lines() {
        if let Some(p) = line.strip_prefix("path=") {
            path = Some(p.to_string());
        } else if let Some(s) = line.strip_prefix("sha256=") {
            sha256 = Some(s.trim().to_string()).filter(|s| !s.is_empty());
        }
    }
    match path {
        Some(path) if path.starts_with('/') => Ok(Installed { path, sha256 }),
        _ => bail!("the host did not report a usable path for bosund: {text:?}"),
    }
}

/// Uploads `local` to `path` atomically: a temp file in the same directory, its SHA-256 checked
/// on the host, mode 0755, then renamed over the old one (a running bosund keeps its inode).
pub async fn upload(ssh: &Ssh, local: &LocalBosund, path: &str) -> Result<()> {
    let script = format!(
        "set -e; p={p}; d=$(dirname \"$p\"); mkdir -p \"$d\"; t=\"$d/.bosund.upload.$$\"; \
         trap 'rm -f \"$t\"' EXIT; cat > \"$t\"; s=$(sha256sum < \"$t\" | cut -d' ' -f1); \
         if [ \"$s\" != {sha} ]; then echo \"the uploaded bytes have SHA-256 $s, expected {sha} \
         (transfer damaged)\" >&2; exit 1; fi; chmod 0755 \"$t\"; mv -f \"$t\" \"$p\"; trap - EXIT",
        p = shell_quote(path),
        sha = local.sha256
    );
    let out = ssh
        .exec_lines(&script, Some(Box::new(&local.bytes[..])), &mut |_| {})
        .await?;
    if out.code != Some(0) {
        bail!(
            "uploading bosund to {path} failed (exit {:?}): {}. Check that the directory is \
             writable, or set another path with --remote-bosund",
            out.code,
            out.stderr_text()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_output() {
        let i = parse_probe("path=/usr/local/bin/bosund\nsha256=abc\n").unwrap();
        assert_eq!(i.path, "/usr/local/bin/bosund");
        assert_eq!(i.sha256.as_deref(), Some("abc"));
        let i = parse_probe("path=/home/u/.local/bin/bosund\n").unwrap();
        assert_eq!(i.sha256, None);
        assert!(parse_probe("nothing").is_err());
        assert!(parse_probe("path=relative\n").is_err());
    }

    #[test]
    fn configured_path_is_quoted() {
        assert_eq!(
            path_snippet(Some("/opt/my dir/bosund")),
            "p='/opt/my dir/bosund'"
        );
        assert!(path_snippet(None).contains(ROOT_PATH));
    }
}

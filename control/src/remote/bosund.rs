//! The `bosund` binary on a host: where it lives, whether it is this build, and its atomic
//! upload.
//!
//! A build is stored on the host under its SHA-256, `<dir of bosund>/.bosund-builds/<sha256>`,
//! and the configured path (`/usr/local/bin/bosund`) is a hard link to it. Whether the host
//! has this build is then one `test -x` and one `test -ef` inside the command that runs it
//! ([`run_script`]): no probe round trip and no hashing of 20 MB on the host per run. Only
//! when that fails ([`NEED_INSTALL`]) are the bytes sent ([`upload`]): into a temp file beside
//! the build, its digest checked on the host, chmod 0755, renamed to its content address, then
//! linked over the configured path (a rename, so a running bosund keeps its inode) and older
//! builds removed; a running `bosund.service` is then told (SIGUSR2) and restarts into the new
//! build once the runs it accepted have ended. The name is trusted: a build rewritten in place (not replaced) on the host
//! is not noticed by `run`; `bosun status` hashes the file and shows it.
//!
//! Locally the SHA-256 of the `bosund` to ship is cached ([`LocalBosund::load`]) by path,
//! device, inode, size, mtime and ctime, so a run does not read and hash it again; its bytes
//! are read only for an upload, and hashed again then.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ssh::{PGID_ANNOUNCEMENT, Ssh, shell_quote};

/// Where bosund goes when no path is configured: root installs system-wide, anyone else under
/// their home (no sudo needed, nothing outside it touched).
pub const ROOT_PATH: &str = "/usr/local/bin/bosund";
/// The non-root default, relative to `$HOME`.
pub const USER_PATH: &str = ".local/bin/bosund";
/// The directory, beside bosund, holding builds by SHA-256.
pub const BUILDS_DIR: &str = ".bosund-builds";
/// Exit code of [`run_script`] when the host lacks this build (bosund itself exits 0, 1 or 2).
pub const NEED_INSTALL: u32 = 86;

/// The local `bosund` to ship: its digest (cached), its bytes only when an upload needs them.
#[derive(Debug)]
pub struct LocalBosund {
    /// The file.
    pub path: PathBuf,
    /// Its SHA-256, lower-case hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// One remembered digest: the file it belongs to, identified as strictly as `stat` allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CacheEntry {
    path: PathBuf,
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    sha256: String,
}

impl CacheEntry {
    fn of(path: &Path, meta: &std::fs::Metadata, sha256: String) -> CacheEntry {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        CacheEntry {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
            sha256,
        }
    }

    /// Same file, unchanged since it was hashed (a write changes ctime, which cannot be set).
    fn matches(&self, other: &CacheEntry) -> bool {
        CacheEntry {
            sha256: other.sha256.clone(),
            ..self.clone()
        } == *other
    }
}

/// Digests remembered across runs: `$XDG_CACHE_HOME/bosun/bosund-sha256.json` (or
/// `~/.cache/...`); `None` when there is no home to keep it in.
fn cache_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::home_dir().map(|h| h.join(".cache")))?;
    Some(base.join("bosun").join("bosund-sha256.json"))
}

/// Entries kept: a few builds (release, debug, a test's) are in use at once.
const CACHE_ENTRIES: usize = 8;

fn read_cache(file: &Path) -> Vec<CacheEntry> {
    std::fs::read(file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

impl LocalBosund {
    /// `path`'s SHA-256, from the cache when the file is unchanged, else read and hashed (and
    /// remembered). It must be an ELF executable.
    pub fn load(path: &Path) -> Result<LocalBosund> {
        Self::load_cached(path, cache_file().as_deref())
    }

    fn load_cached(path: &Path, cache: Option<&Path>) -> Result<LocalBosund> {
        let hint = || {
            format!(
                "cannot read bosund at {} (build it with `cargo build --release -p bosun-agent`, \
                 or pass --bosund PATH)",
                path.display()
            )
        };
        let path = std::path::absolute(path).with_context(hint)?;
        let meta = std::fs::metadata(&path).with_context(hint)?;
        let probe = CacheEntry::of(&path, &meta, String::new());
        let mut entries = cache.map(read_cache).unwrap_or_default();
        if let Some(hit) = entries.iter().find(|e| e.matches(&probe)) {
            return Ok(LocalBosund {
                path,
                sha256: hit.sha256.clone(),
                size: meta.size(),
            });
        }
        let bytes = std::fs::read(&path).with_context(hint)?;
        let sha256 = check_elf(&path, &bytes)?;
        if let Some(file) = cache {
            entries.retain(|e| e.path != path);
            entries.insert(0, CacheEntry::of(&path, &meta, sha256.clone()));
            entries.truncate(CACHE_ENTRIES);
            // A cache that cannot be written costs a hash next time, nothing more.
            let _ = std::fs::create_dir_all(file.parent().unwrap_or(Path::new("/")))
                .map_err(anyhow::Error::from)
                .and_then(|()| {
                    crate::local::write_atomic(
                        file,
                        &serde_json::to_vec(&entries).expect("serialises"),
                    )
                });
        }
        Ok(LocalBosund {
            path,
            sha256,
            size: meta.size(),
        })
    }

    /// The bytes to upload, checked against the digest (the file may have been rebuilt since).
    pub fn bytes(&self) -> Result<Vec<u8>> {
        let bytes = std::fs::read(&self.path)
            .with_context(|| format!("cannot read bosund at {}", self.path.display()))?;
        let sha256 = check_elf(&self.path, &bytes)?;
        if sha256 != self.sha256 {
            bail!(
                "{} changed while bosun ran (SHA-256 {} then, {sha256} now); run again",
                self.path.display(),
                self.sha256
            );
        }
        Ok(bytes)
    }
}

/// The SHA-256 of `bytes`, which must be an ELF executable.
fn check_elf(path: &Path, bytes: &[u8]) -> Result<String> {
    if !bytes.starts_with(b"\x7fELF") {
        bail!(
            "{} is not an ELF executable: --bosund must point at the Linux bosund binary",
            path.display()
        );
    }
    Ok(hex::encode(Sha256::digest(bytes)))
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

/// `$p` (bosund's path) and `$c` (this build's content address) for a script.
fn locate(configured: Option<&str>, sha256: &str) -> String {
    format!(
        "{}; case \"$p\" in /*) ;; *) echo \"bosund's path $p is not absolute\" >&2; exit 2;; \
         esac; b=\"${{p%/*}}/{BUILDS_DIR}\"; c=\"$b/{sha256}\"",
        path_snippet(configured)
    )
}

/// A shell script that runs `command` (which names bosund `"$p"`) when `$p` is this build,
/// else exits [`NEED_INSTALL`] having run nothing. "This build": `$p` is the file at the
/// build's content address, executable, of the build's size (`wc -c` of a file is a `stat`,
/// so a build rewritten in place with other bytes of another size is noticed too). Before the
/// command it announces its process group on stderr, for a cancel ([`PGID_ANNOUNCEMENT`]).
pub fn run_script(configured: Option<&str>, local: &LocalBosund, command: &str) -> String {
    format!(
        "{}; chk() {{ [ -x \"$c\" ] && [ \"$p\" -ef \"$c\" ] && \
         [ \"$(($(wc -c < \"$c\" 2>/dev/null || echo 0)))\" = {} ]; }}; \
         if chk || {{ [ -w \"$b/.lock\" ] && exec 9>>\"$b/.lock\" && command -v flock >/dev/null \
         && flock -s 9 && chk; }}; then exec 9>&-; {PGID_ANNOUNCEMENT}; {command}; \
         else exit {NEED_INSTALL}; fi",
        locate(configured, &local.sha256),
        local.size
    )
}

/// Finds bosund's path on the host and hashes the file there (for `bosun status`).
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

/// Tells a running `bosund.service` that a new build is installed (SIGUSR2 to its main
/// process): the daemon compares the file at its own path with the build it runs, and if they
/// differ lets its accepted runs finish, then execs the new build. Nothing when there is no
/// such service (no systemd, not root, not running).
const UPDATE_DAEMON: &str = "if [ \"$(id -u)\" = 0 ] && command -v systemctl >/dev/null 2>&1 && \
     systemctl is-active --quiet bosund.service 2>/dev/null; then systemctl kill \
     --kill-whom=main --signal=USR2 bosund.service 2>/dev/null || true; fi";

/// The install script: reads the build on stdin (see the module doc). Prints bosund's path.
/// Installing (rename, link, clean-up; not the transfer) holds an exclusive `flock` on
/// `<builds>/.lock` (util-linux; skipped where missing): concurrent uploads to one path (a fleet
/// whose hosts share a file system, two operators at once) otherwise race between one upload's
/// rename or clean-up and another's hard link to the content address. [`run_script`] rechecks
/// under a shared lock before asking for an install, so it never sees an install half-way.
fn upload_script(configured: Option<&str>, sha256: &str) -> String {
    format!(
        "set -e; {}; mkdir -p \"$b\"; t=\"$b/.upload.$$\"; l=\"$p.bosun-link.$$\"; \
         trap 'rm -f \"$t\" \"$l\"' EXIT; cat > \"$t\"; s=$(sha256sum < \"$t\" | cut -d' ' -f1); \
         if [ \"$s\" != {sha256} ]; then echo \"the uploaded bytes have SHA-256 $s, expected \
         {sha256} (transfer damaged)\" >&2; exit 1; fi; chmod 0755 \"$t\"; \
         exec 9>\"$b/.lock\"; if command -v flock >/dev/null; then flock 9; fi; \
         mv -f \"$t\" \"$c\"; \
         ln -f \"$c\" \"$l\"; mv -f \"$l\" \"$p\"; for f in \"$b\"/*; do [ \"$f\" = \"$c\" ] || \
         rm -f \"$f\"; done; trap - EXIT; {UPDATE_DAEMON}; printf '%s\\n' \"$p\"",
        locate(configured, sha256)
    )
}

/// Installs `local` on the host (see the module doc); returns bosund's path there.
pub async fn upload(ssh: &Ssh, local: &LocalBosund, configured: Option<&str>) -> Result<String> {
    let bytes = local.bytes()?;
    let script = upload_script(configured, &local.sha256);
    let out = ssh
        .exec_lines(&script, Some(Box::new(&bytes[..])), &mut |_| {}, None)
        .await?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.code != Some(0) {
        bail!(
            "uploading bosund to {} failed (exit {:?}): {}. Check that the directory is \
             writable, or set another path with --remote-bosund",
            configured.unwrap_or(if path.is_empty() {
                "its default path"
            } else {
                &path
            }),
            out.code,
            out.stderr_text()
        );
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::run_program;

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

    /// The scripts, run by the local `sh`: install, run, stale link, damaged transfer.
    #[test]
    fn concurrent_uploads_to_one_path_all_succeed() {
        // A fleet whose inventory entries share one file system (the test fleet: one sshd) or two
        // operators at once: every upload must install, whatever the interleaving.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bin/bosund");
        let bytes = [b"\x7fELF".as_slice(), &[7u8; 1 << 20]].concat();
        let sha = hex::encode(Sha256::digest(&bytes));
        for round in 0..5 {
            let script = upload_script(p.to_str(), &sha);
            std::thread::scope(|s| {
                let uploads: Vec<_> = (0..8)
                    .map(|_| s.spawn(|| run_program("sh", &["-c", &script], &bytes).unwrap()))
                    .collect();
                for upload in uploads {
                    let out = upload.join().unwrap();
                    assert!(
                        out.status.success(),
                        "round {round}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            });
            assert_eq!(std::fs::read(&p).unwrap(), bytes);
        }
    }

    #[test]
    fn scripts_install_run_and_replace_builds() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bin/bosund");
        let p_str = p.to_str().unwrap();
        let sh = |script: &str, stdin: &[u8]| run_program("sh", &["-c", script], stdin).unwrap();
        let build = |n: u8| {
            let bytes = [b"\x7fELF".as_slice(), &[n; 64]].concat();
            (hex::encode(Sha256::digest(&bytes)), bytes)
        };
        let (sha1, bytes1) = build(1);
        let (sha2, bytes2) = build(2);
        let local = |sha: &String, bytes: &Vec<u8>| LocalBosund {
            path: PathBuf::new(),
            sha256: sha.clone(),
            size: bytes.len() as u64,
        };
        let run = |l: LocalBosund| sh(&run_script(Some(p_str), &l, "echo ran \"$p\""), b"");

        assert_eq!(
            run(local(&sha1, &bytes1)).status.code(),
            Some(NEED_INSTALL as i32),
            "missing"
        );
        let out = sh(&upload_script(Some(p_str), &sha1), &bytes1);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), p_str);
        assert_eq!(std::fs::read(&p).unwrap(), bytes1);
        let out = run(local(&sha1, &bytes1));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("ran {p_str}\n")
        );
        assert!(out.stderr.starts_with(b"bosun-pgid "), "{out:?}");

        // Another build: installed beside, linked, the old one removed.
        assert_eq!(
            run(local(&sha2, &bytes2)).status.code(),
            Some(NEED_INSTALL as i32),
            "stale"
        );
        assert!(
            sh(&upload_script(Some(p_str), &sha2), &bytes2)
                .status
                .success()
        );
        assert_eq!(std::fs::read(&p).unwrap(), bytes2);
        let builds: Vec<_> = std::fs::read_dir(p.parent().unwrap().join(BUILDS_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != ".lock")
            .collect();
        assert_eq!(builds, vec![sha2.clone()]);

        assert!(run(local(&sha2, &bytes2)).status.success());

        // Rewritten in place with a build of another size: noticed.
        std::fs::write(&p, b"\x7fELF short").unwrap();
        assert_eq!(
            run(local(&sha2, &bytes2)).status.code(),
            Some(NEED_INSTALL as i32),
            "rewritten"
        );
        assert!(
            sh(&upload_script(Some(p_str), &sha2), &bytes2)
                .status
                .success()
        );

        // bosund replaced by hand: no longer this build, though its content address exists.
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, &bytes2).unwrap();
        assert_eq!(
            run(local(&sha2, &bytes2)).status.code(),
            Some(NEED_INSTALL as i32),
            "unlinked"
        );

        // Damaged bytes: refused, nothing replaced, no temp file left.
        let out = sh(&upload_script(Some(p_str), &sha1), b"\x7fELFnot the build");
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("transfer damaged"));
        assert_eq!(std::fs::read(&p).unwrap(), bytes2);
        let leftovers: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains(".bosun-link"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        assert_eq!(
            std::fs::read_dir(p.parent().unwrap().join(BUILDS_DIR))
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name() != ".lock")
                .count(),
            1,
            "the temp upload was removed"
        );
    }

    #[test]
    fn the_local_digest_is_cached_until_the_file_changes() {
        let home = tempfile::tempdir().unwrap();
        let file = home.path().join("bosund");
        std::fs::write(&file, b"\x7fELF one").unwrap();
        let cache = home.path().join("cache/bosun/bosund-sha256.json");
        let load = |f: &Path| LocalBosund::load_cached(f, Some(&cache));
        let first = load(&file).unwrap();
        assert_eq!(first.sha256, hex::encode(Sha256::digest(b"\x7fELF one")));
        let entries = read_cache(&cache);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].sha256, first.sha256);
        // From the cache now: a wrong digest planted there is believed while the file is
        // unchanged.
        let mut planted = entries.clone();
        planted[0].sha256 = "planted".into();
        std::fs::write(&cache, serde_json::to_vec(&planted).unwrap()).unwrap();
        assert_eq!(load(&file).unwrap().sha256, "planted");
        // A rewrite changes size, mtime and ctime: hashed again, and bytes() checks.
        std::fs::write(&file, b"\x7fELF two!").unwrap();
        let second = load(&file).unwrap();
        assert_eq!(second.sha256, hex::encode(Sha256::digest(b"\x7fELF two!")));
        assert_eq!(second.bytes().unwrap(), b"\x7fELF two!");
        std::fs::write(&file, b"\x7fELF three").unwrap();
        assert!(
            second
                .bytes()
                .unwrap_err()
                .to_string()
                .contains("changed while bosun ran")
        );
        std::fs::write(&file, b"not elf").unwrap();
        assert!(load(&file).is_err());
    }
}

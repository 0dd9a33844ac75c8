//! Host key checking against OpenSSH `known_hosts` files: plain and hashed (`|1|salt|hash`)
//! host entries, the `[host]:port` form for ports other than 22, `*`/`?` patterns and `!`
//! negation, `@revoked` keys (`@cert-authority` lines are skipped: host certificates are not
//! accepted). Keys are compared by their key data, never by comment.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use data_encoding::BASE64;
use russh::keys::{Algorithm, HashAlg, PublicKey};

use super::ssh_config::wildcard;

/// What the known_hosts files say about a host's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The key is recorded for this host.
    Known,
    /// Nothing is recorded for this host.
    Unknown,
    /// A different key of the same type is recorded: possibly a man in the middle.
    Changed {
        /// Where the recorded key is.
        file: PathBuf,
        /// Its line (1-based).
        line: usize,
    },
    /// Only keys of other types are recorded for this host.
    OtherTypes {
        /// The types recorded.
        recorded: Vec<String>,
    },
    /// The key is marked `@revoked`.
    Revoked {
        /// Where.
        file: PathBuf,
        /// Its line (1-based).
        line: usize,
    },
}

/// One parsed line that names a host.
struct Entry {
    revoked: bool,
    key: PublicKey,
    line: usize,
}

/// The name known_hosts records: `host` for port 22, `[host]:port` otherwise.
pub fn lookup_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// The entries of `text` that match `name`. Lines that do not parse are skipped, as ssh does.
fn entries(text: &str, name: &str) -> Vec<Entry> {
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut revoked = false;
        let mut hosts = fields.next().unwrap_or_default();
        if hosts.starts_with('@') {
            match hosts {
                "@revoked" => revoked = true,
                _ => continue, // @cert-authority and unknown markers
            }
            hosts = fields.next().unwrap_or_default();
        }
        let (Some(kind), Some(data)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !hosts_match(hosts, name) {
            continue;
        }
        if let Ok(key) = PublicKey::from_openssh(&format!("{kind} {data}")) {
            found.push(Entry {
                revoked,
                key,
                line: i + 1,
            });
        }
    }
    found
}

/// A comma-separated host list matches when an entry matches and no negated entry does.
fn hosts_match(list: &str, name: &str) -> bool {
    let name_lc = name.to_ascii_lowercase();
    let mut matched = false;
    for pattern in list.split(',') {
        if let Some(hashed) = pattern.strip_prefix("|1|") {
            matched |= hashed_matches(hashed, name);
        } else if let Some(neg) = pattern.strip_prefix('!') {
            if wildcard(&neg.to_ascii_lowercase(), &name_lc) {
                return false;
            }
        } else {
            matched |= wildcard(&pattern.to_ascii_lowercase(), &name_lc);
        }
    }
    matched
}

/// `salt|hash`, both base64: HMAC-SHA1(salt, name) == hash.
fn hashed_matches(hashed: &str, name: &str) -> bool {
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (
        BASE64.decode(salt.as_bytes()),
        BASE64.decode(hash.as_bytes()),
    ) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &salt);
    ring::hmac::verify(&key, name.as_bytes(), &hash).is_ok()
}

/// Checks `key` for `host:port` against the files, in order (missing files are empty).
pub fn check(files: &[PathBuf], host: &str, port: u16, key: &PublicKey) -> Result<Verdict> {
    let name = lookup_name(host, port);
    let mut changed = None;
    let mut known = false;
    let mut others = Vec::new();
    for file in files {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", file.display()));
            }
        };
        for e in entries(&text, &name) {
            let same_key = e.key.key_data() == key.key_data();
            if e.revoked {
                if same_key {
                    return Ok(Verdict::Revoked {
                        file: file.clone(),
                        line: e.line,
                    });
                }
            } else if same_key {
                known = true;
            } else if e.key.algorithm() == key.algorithm() {
                changed.get_or_insert((file.clone(), e.line));
            } else {
                others.push(e.key.algorithm().to_string());
            }
        }
    }
    Ok(if let Some((file, line)) = changed {
        // A matching key elsewhere does not excuse a conflicting one: ssh refuses too.
        Verdict::Changed { file, line }
    } else if known {
        Verdict::Known
    } else if !others.is_empty() {
        others.dedup();
        Verdict::OtherTypes { recorded: others }
    } else {
        Verdict::Unknown
    })
}

/// The key algorithms recorded for `host:port`, in file order, so the connection asks the
/// server for a key type we can check (as ssh orders its HostKeyAlgorithms).
pub fn recorded_algorithms(files: &[PathBuf], host: &str, port: u16) -> Vec<Algorithm> {
    let name = lookup_name(host, port);
    let mut algs: Vec<Algorithm> = Vec::new();
    for file in files {
        if let Ok(text) = std::fs::read_to_string(file) {
            for e in entries(&text, &name) {
                if !e.revoked && !algs.contains(&e.key.algorithm()) {
                    algs.push(e.key.algorithm());
                }
            }
        }
    }
    algs
}

/// Appends `name keytype base64` to `file` (created 0600 with its directory 0700 if missing).
pub fn append(file: &Path, host: &str, port: u16, key: &PublicKey) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = file.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let existing = std::fs::read(file).unwrap_or_default();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("cannot open {} to record the host key", file.display()))?;
    let openssh = key
        .to_openssh()
        .context("cannot encode the host key in OpenSSH format")?;
    // Drop the comment: known_hosts lines are `name type base64`.
    let mut parts = openssh.split_whitespace();
    let line = format!(
        "{}{} {} {}\n",
        if existing.is_empty() || existing.ends_with(b"\n") {
            ""
        } else {
            "\n"
        },
        lookup_name(host, port),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default()
    );
    f.write_all(line.as_bytes())
        .with_context(|| format!("cannot write {}", file.display()))
}

/// `ED25519 SHA256:...`: how ssh shows a key to a person.
pub fn describe(key: &PublicKey) -> String {
    format!(
        "{} key {}",
        key.algorithm().as_str().to_ascii_uppercase(),
        key.fingerprint(HashAlg::Sha256)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    const KEY_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBa5uB7Kc8BbHGtD10LxN8/VFnjDaCmHD3k/6C2XOJ9U";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    fn file(dir: &tempfile::TempDir, text: &str) -> Vec<PathBuf> {
        let p = dir.path().join("known_hosts");
        std::fs::write(&p, text).unwrap();
        vec![p]
    }

    #[test]
    fn plain_bracketed_and_wildcard_entries() {
        let d = tempfile::tempdir().unwrap();
        let f = file(
            &d,
            &format!("# c\n[10.0.0.1]:2222 {KEY_A}\nweb-*,!web-9 {KEY_A}\nplain {KEY_A}\n"),
        );
        let a = key(KEY_A);
        assert_eq!(check(&f, "10.0.0.1", 2222, &a).unwrap(), Verdict::Known);
        assert_eq!(check(&f, "10.0.0.1", 22, &a).unwrap(), Verdict::Unknown);
        assert_eq!(check(&f, "web-3", 22, &a).unwrap(), Verdict::Known);
        assert_eq!(check(&f, "web-9", 22, &a).unwrap(), Verdict::Unknown);
        assert_eq!(check(&f, "PLAIN", 22, &a).unwrap(), Verdict::Known);
        assert_eq!(
            check(&f, "plain", 22, &key(KEY_B)).unwrap(),
            Verdict::Changed {
                file: f[0].clone(),
                line: 4
            }
        );
    }

    #[test]
    fn hashed_entries_match_by_hmac() {
        // `ssh-keygen -H` output for "[127.0.0.1]:2200" with a fixed salt, computed here.
        let salt = b"0123456789abcdefghij";
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, salt);
        let tag = ring::hmac::sign(&k, b"[127.0.0.1]:2200");
        let line = format!(
            "|1|{}|{} {KEY_A}\n",
            BASE64.encode(salt),
            BASE64.encode(tag.as_ref())
        );
        let d = tempfile::tempdir().unwrap();
        let f = file(&d, &line);
        assert_eq!(
            check(&f, "127.0.0.1", 2200, &key(KEY_A)).unwrap(),
            Verdict::Known
        );
        assert_eq!(
            check(&f, "127.0.0.1", 2201, &key(KEY_A)).unwrap(),
            Verdict::Unknown
        );
        assert!(matches!(
            check(&f, "127.0.0.1", 2200, &key(KEY_B)).unwrap(),
            Verdict::Changed { line: 1, .. }
        ));
    }

    #[test]
    fn revoked_other_types_and_missing_files() {
        let d = tempfile::tempdir().unwrap();
        let f = file(
            &d,
            &format!(
                "@revoked h {KEY_A}\n@cert-authority * {KEY_B}\nrsa-host ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC7\n"
            ),
        );
        assert!(matches!(
            check(&f, "h", 22, &key(KEY_A)).unwrap(),
            Verdict::Revoked { line: 1, .. }
        ));
        // The cert-authority line does not make KEY_B known for any host.
        assert_eq!(check(&f, "h", 22, &key(KEY_B)).unwrap(), Verdict::Unknown);
        let missing = vec![d.path().join("nope")];
        assert_eq!(
            check(&missing, "h", 22, &key(KEY_A)).unwrap(),
            Verdict::Unknown
        );
    }

    #[test]
    fn append_then_known() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/.ssh/known_hosts");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "other ssh-ed25519 AAAA").unwrap(); // no trailing newline
        append(&p, "127.0.0.1", 2200, &key(KEY_A)).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.ends_with(&format!("\n[127.0.0.1]:2200 {KEY_A}\n")),
            "{text}"
        );
        let files = vec![p];
        assert_eq!(
            check(&files, "127.0.0.1", 2200, &key(KEY_A)).unwrap(),
            Verdict::Known
        );
        assert_eq!(
            recorded_algorithms(&files, "127.0.0.1", 2200),
            vec![Algorithm::Ed25519]
        );
    }
}

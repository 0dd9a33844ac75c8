//! What the instance fetches at first boot: the `bosund` binary and a tarball of the
//! playbooks, both stored content-addressed in the stack's bucket
//! (`artifacts/bosund/<sha256>`, `artifacts/playbooks/<sha256>.tar.gz`).
//!
//! Invariant: the playbook tarball is reproducible (sorted paths, zero mtimes and owners,
//! normalised modes, fixed gzip header), so unchanged playbooks give the same key and the same
//! template.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use bosun_model::playbook::{self, Source};
use sha2::{Digest, Sha256};

/// One content-addressed object.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The bytes to upload.
    pub bytes: Vec<u8>,
    /// Lower-case hex SHA-256 of `bytes`.
    pub sha256: String,
    /// The object key in the bucket.
    pub key: String,
}

impl Artifact {
    fn new(bytes: Vec<u8>, key_of: impl Fn(&str) -> String) -> Artifact {
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let key = key_of(&sha256);
        Artifact { bytes, sha256, key }
    }
}

/// The key of a `bosund` binary with this digest.
pub fn bosund_key(sha256: &str) -> String {
    format!("artifacts/bosund/{sha256}")
}

/// The key of a playbook tarball with this digest.
pub fn playbooks_key(sha256: &str) -> String {
    format!("artifacts/playbooks/{sha256}.tar.gz")
}

/// The first-boot artefacts.
#[derive(Debug, Clone)]
pub struct BootArtifacts {
    pub bosund: Artifact,
    pub playbooks: Artifact,
}

impl BootArtifacts {
    /// Reads `bosund` and packs `playbooks_dir`, after validating its `bootstrap.toml` with the
    /// agent's own parser (a playbook that would not run is not shipped).
    pub fn load(bosund: &Path, playbooks_dir: &Path) -> Result<BootArtifacts> {
        let bytes = std::fs::read(bosund).with_context(|| {
            format!(
                "cannot read bosund at {} (build it with `cargo build --release -p bosun-agent`, \
                 or pass --bosund PATH)",
                bosund.display()
            )
        })?;
        if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
            bail!(
                "{} is not an ELF executable: --bosund must point at the Linux bosund binary",
                bosund.display()
            );
        }
        let bootstrap = playbooks_dir.join("bootstrap.toml");
        let text = std::fs::read_to_string(&bootstrap).with_context(|| {
            format!(
                "cannot read {} (the first boot runs it; set `playbooks` in stack.toml)",
                bootstrap.display()
            )
        })?;
        if let Err(d) = playbook::load(Source::new(bootstrap.display().to_string(), text), &[]) {
            bail!(
                "{} is invalid, fix it before `bosun up`:\n{}",
                bootstrap.display(),
                d.render(false)
            );
        }
        Ok(BootArtifacts {
            bosund: Artifact::new(bytes, bosund_key),
            playbooks: Artifact::new(pack(playbooks_dir)?, playbooks_key),
        })
    }
}

/// A reproducible `.tar.gz` of every regular file under `dir` (paths relative to it).
pub fn pack(dir: &Path) -> Result<Vec<u8>> {
    let mut files = Vec::new();
    collect(dir, dir, &mut files)?;
    files.sort();
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    let mut tar = tar::Builder::new(gz);
    for rel in files {
        let data = std::fs::read(dir.join(&rel))
            .with_context(|| format!("reading {}", dir.join(&rel).display()))?;
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, &rel, data.as_slice())
            .with_context(|| format!("packing {}", rel.display()))?;
    }
    let gz = tar.into_inner().context("finishing the playbook tarball")?;
    let mut out = gz.finish().context("compressing the playbook tarball")?;
    out.flush()?;
    Ok(out)
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect(root, &path, out)?;
        } else if kind.is_file() {
            out.push(path.strip_prefix(root).expect("under root").to_path_buf());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tarball_is_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("templates")).unwrap();
        std::fs::write(dir.path().join("bootstrap.toml"), "name = 'b'\n").unwrap();
        std::fs::write(dir.path().join("templates/a.j2"), "x").unwrap();
        let a = pack(dir.path()).unwrap();
        // A later mtime must not change the bytes.
        std::fs::write(dir.path().join("templates/a.j2"), "x").unwrap();
        assert_eq!(a, pack(dir.path()).unwrap());
        std::fs::write(dir.path().join("templates/a.j2"), "y").unwrap();
        assert_ne!(a, pack(dir.path()).unwrap());
    }
}

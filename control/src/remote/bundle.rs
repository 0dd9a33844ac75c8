//! What `bosun run` sends to a host: a bundle (a tar stream) of the playbook, the playbooks it
//! includes and every local file its steps read by a relative path (template and copy
//! sources, values files), with `bosun-bundle.json` naming the playbook. `bosund apply
//! --bundle` unpacks it into a private directory, runs it from there and removes it.
//!
//! Paths in the bundle are relative to the deepest directory holding every file, so an
//! include of `../roles/base.toml` keeps its place beside the playbook. The bundle is built
//! once per `bosun run` (the same bytes for every host) and named by its SHA-256, reported
//! with the run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use bosun_model::playbook::Playbook;
use sha2::{Digest, Sha256};

/// The manifest's name inside the bundle (as bosund reads it).
const MANIFEST: &str = "bosun-bundle.json";

/// Exit code of `bosund apply --bundle --bundle-digest D` when the host has no cached bundle
/// `D` and none came on stdin (bosund's `host::bundle::NEED_BUNDLE`): nothing ran; send it.
pub const NEED_BUNDLE: u32 = 87;

/// A built bundle.
pub struct Bundle {
    /// The tar stream.
    pub bytes: Vec<u8>,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// How many files it carries (the playbook included).
    pub files: usize,
}

/// Every file the run needs from this machine, absolute: the playbook, its includes, and the
/// relative local files (each beside the file that names it).
pub fn files_of(playbook_path: &Path, playbook: &Playbook) -> Result<BTreeSet<PathBuf>> {
    let abs =
        |p: &Path| std::path::absolute(p).with_context(|| format!("resolving {}", p.display()));
    let root = normalize(&abs(playbook_path)?);
    let root_dir = root.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut files = BTreeSet::from([root]);
    for inc in &playbook.included_files {
        files.insert(normalize(&abs(inc)?));
    }
    for (origin, f) in playbook.local_files_with_origin() {
        if !f.is_relative() {
            continue;
        }
        let dir = match origin {
            Some(src) => abs(Path::new(&src.name))?
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            None => root_dir.clone(),
        };
        files.insert(normalize(&f.resolve(&dir)));
    }
    Ok(files)
}

/// Builds the bundle of `playbook` (read from `playbook_path`).
pub fn build(playbook_path: &Path, playbook: &Playbook) -> Result<Bundle> {
    let files = files_of(playbook_path, playbook)?;
    let root = common_dir(&files);
    let mut tar = tar::Builder::new(Vec::new());
    tar.mode(tar::HeaderMode::Deterministic);
    let rel = |p: &Path| p.strip_prefix(&root).map(Path::to_path_buf);
    let main = rel(&normalize(&std::path::absolute(playbook_path)?))?;
    let manifest = serde_json::json!({ "playbook": main.display().to_string() }).to_string();
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o600);
    header.set_cksum();
    tar.append_data(&mut header, MANIFEST, manifest.as_bytes())?;
    for f in &files {
        let data = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        tar.append_data(&mut header, rel(f)?, &data[..])
            .with_context(|| format!("adding {} to the bundle", f.display()))?;
    }
    let bytes = tar.into_inner()?;
    Ok(Bundle {
        sha256: hex::encode(Sha256::digest(&bytes)),
        bytes,
        files: files.len(),
    })
}

/// The deepest directory that holds every one of `files` (absolute paths).
fn common_dir(files: &BTreeSet<PathBuf>) -> PathBuf {
    let mut iter = files.iter();
    let Some(first) = iter.next() else {
        return PathBuf::from("/");
    };
    let mut common: PathBuf = first.parent().map(Path::to_path_buf).unwrap_or_default();
    for f in iter {
        while !f.starts_with(&common) {
            if !common.pop() {
                break;
            }
        }
    }
    common
}

/// `a/./b/../c` → `a/c`, without the file system.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_directory_holds_every_file() {
        let files: BTreeSet<PathBuf> = ["/w/site/pb.toml", "/w/roles/base.toml", "/w/site/t/a.j2"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(common_dir(&files), PathBuf::from("/w"));
        assert_eq!(
            normalize(Path::new("/w/site/../roles/./b")),
            PathBuf::from("/w/roles/b")
        );
    }
}

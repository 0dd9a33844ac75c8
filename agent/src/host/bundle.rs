//! A playbook bundle (made by `bosun run`: a tar stream of the playbook, the playbooks it
//! includes and every local file its steps read, with a `bosun-bundle.json` naming the
//! playbook) unpacked into a private directory that is removed when the run ends.
//!
//! The stream is untrusted input: only regular files and directories are taken, every path
//! must be relative without `..`, and the whole is capped ([`MAX_BYTES`], [`MAX_ENTRIES`]).

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

/// The manifest's name inside the bundle.
pub const MANIFEST: &str = "bosun-bundle.json";
/// Largest bundle accepted (its files' bytes).
pub const MAX_BYTES: u64 = 64 << 20;
/// Most entries accepted.
pub const MAX_ENTRIES: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    /// The playbook to run, relative to the bundle's root.
    playbook: String,
}

/// A bundle on disk; the directory (mode 0700) is removed when this is dropped.
pub struct Unpacked {
    dir: tempfile::TempDir,
    /// The playbook to run, inside the directory.
    pub playbook: PathBuf,
}

impl Unpacked {
    /// The private directory the bundle is in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Reads a bundle from `from` into a new private directory under `parent` (created 0700 when
/// missing).
pub fn unpack(from: impl Read, parent: &Path) -> anyhow::Result<Unpacked> {
    super::fs::create_dir_all(parent)
        .and_then(|()| super::fs::set_mode(parent, 0o700))
        .with_context(|| format!("creating {}", parent.display()))?;
    // A new directory of this run's own, mode 0700, gone when the run ends. Its
    // files are not flushed to disk: they do not outlive the run.
    let dir = super::fs::staging_dir(parent, "bundle-")
        .and_then(|d| super::fs::set_mode(d.path(), 0o700).map(|()| d))
        .with_context(|| format!("creating a private directory in {}", parent.display()))?;
    let mut archive = tar::Archive::new(from);
    let mut total = 0u64;
    let mut manifest = None;
    for (n, entry) in archive.entries().context("reading the bundle")?.enumerate() {
        if n >= MAX_ENTRIES {
            bail!("the bundle has more than {MAX_ENTRIES} entries");
        }
        let mut entry = entry.context("reading the bundle")?;
        let path = entry.path().context("a bundle entry's path")?.into_owned();
        if !path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        {
            bail!(
                "the bundle holds {}: only relative paths inside it are allowed",
                path.display()
            );
        }
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            std::fs::create_dir_all(dir.path().join(&path))?;
            continue;
        }
        if !kind.is_file() {
            bail!(
                "the bundle holds {}, which is not a regular file",
                path.display()
            );
        }
        total += entry.size();
        if total > MAX_BYTES {
            bail!("the bundle is larger than {} MiB", MAX_BYTES >> 20);
        }
        if path == Path::new(MANIFEST) {
            let mut text = String::new();
            entry.read_to_string(&mut text)?;
            manifest = Some(
                serde_json::from_str::<Manifest>(&text)
                    .with_context(|| format!("reading the bundle's {MANIFEST}"))?,
            );
            continue;
        }
        let dest = dir.path().join(&path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        entry
            .unpack(&dest)
            .with_context(|| format!("unpacking {} from the bundle", path.display()))?;
    }
    let Some(manifest) = manifest else {
        bail!("the bundle has no {MANIFEST}: was it made by `bosun run`?");
    };
    let playbook = dir.path().join(&manifest.playbook);
    if !Path::new(&manifest.playbook)
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
        || !playbook.is_file()
    {
        bail!(
            "the bundle's playbook {:?} is not a file in it",
            manifest.playbook
        );
    }
    Ok(Unpacked { dir, playbook })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            // `append_data` refuses `..`; write the name raw to test what a hostile peer sends.
            h.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn unpacks_into_a_private_dir_that_goes_away() {
        let parent = tempfile::tempdir().unwrap();
        let data = bundle(&[
            (MANIFEST, br#"{"playbook":"site/pb.toml"}"#),
            ("site/pb.toml", b"name = \"x\"\n"),
            ("roles/t.j2", b"t"),
        ]);
        let u = unpack(&data[..], &parent.path().join("bundles")).unwrap();
        assert_eq!(std::fs::read(u.dir().join("roles/t.j2")).unwrap(), b"t");
        assert!(u.playbook.ends_with("site/pb.toml"));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(u.dir()).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o700);
        let dir = u.dir().to_path_buf();
        drop(u);
        assert!(!dir.exists());
    }

    #[test]
    fn refuses_escaping_paths_and_a_missing_manifest() {
        let parent = tempfile::tempdir().unwrap();
        let bad = bundle(&[(MANIFEST, br#"{"playbook":"pb.toml"}"#), ("../evil", b"x")]);
        let e = unpack(&bad[..], parent.path()).err().unwrap().to_string();
        assert!(e.contains("only relative paths"), "{e}");
        assert!(!parent.path().parent().unwrap().join("evil").exists());
        let none = bundle(&[("pb.toml", b"name = \"x\"\n")]);
        let e = unpack(&none[..], parent.path()).err().unwrap().to_string();
        assert!(e.contains("no bosun-bundle.json"), "{e}");
    }
}

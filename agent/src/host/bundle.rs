//! A playbook bundle (made by `bosun run`: a tar stream of the playbook, the playbooks it
//! includes and every local file its steps read, with a `bosun-bundle.json` naming the
//! playbook) unpacked into a private directory that is removed when the run ends.
//!
//! The stream is untrusted input: only regular files and directories are taken, every path
//! must be relative without `..`, and the whole is capped ([`MAX_BYTES`], [`MAX_ENTRIES`]).
//!
//! Bundles are cached on the host by content ([`cached`], [`store`]): `<state>/bundles/cache/
//! <sha256>.tar` (0700 directory), verified against its name on every use (a file that does not
//! match is removed), the [`CACHE_KEEP`] most recently used kept. `bosun run` first asks for the
//! bundle by digest with nothing on stdin; bosund exits [`NEED_BUNDLE`] on a miss and is run
//! again with the bytes, so an unchanged bundle is sent once per host.

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

/// Exit code of `bosund apply --bundle --bundle-digest D` when the cache has no bundle `D`
/// and none came on stdin: nothing ran; send it.
pub const NEED_BUNDLE: u8 = 87;
/// How many cached bundles are kept.
pub const CACHE_KEEP: usize = 16;

/// The cache directory under the bundles directory.
fn cache_dir(parent: &Path) -> PathBuf {
    parent.join("cache")
}

/// Refuses a digest that is not 64 hex digits (it becomes a file name).
pub fn check_digest(digest: &str) -> anyhow::Result<()> {
    if digest.len() != 64 || !digest.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("bundle digest {digest:?} is not a SHA-256 (64 hex digits)");
    }
    Ok(())
}

/// The cached bundle named `digest` under `parent` when it is there and its bytes still
/// have that digest (its time is touched, for pruning); a file that does not match is removed.
pub fn cached(parent: &Path, digest: &str) -> anyhow::Result<Option<PathBuf>> {
    check_digest(digest)?;
    let path = cache_dir(parent).join(format!("{}.tar", digest.to_ascii_lowercase()));
    match super::download::sha256_file(&path)? {
        None => Ok(None),
        Some(d) if d.eq_ignore_ascii_case(digest) => {
            // Last use, for pruning; a failure only makes it older.
            let _ = std::fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
            Ok(Some(path))
        }
        Some(_) => {
            super::fs::remove(&path, false)
                .with_context(|| format!("removing the damaged {}", path.display()))?;
            Ok(None)
        }
    }
}

/// Stores the bundle read from `from` (which must have the SHA-256 `digest`) in the cache and
/// returns its path; `None` when `from` is empty (the caller sent nothing: exit
/// [`NEED_BUNDLE`]). Prunes the cache to [`CACHE_KEEP`] bundles.
pub fn store(mut from: impl Read, parent: &Path, digest: &str) -> anyhow::Result<Option<PathBuf>> {
    use sha2::Digest;
    use std::io::Write;
    check_digest(digest)?;
    let dir = cache_dir(parent);
    super::fs::create_dir_all(&dir)
        .and_then(|()| super::fs::set_mode(parent, 0o700))
        .and_then(|()| super::fs::set_mode(&dir, 0o700))
        .with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".incoming-")
        .tempfile_in(&dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buf).context("reading the bundle")?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > MAX_BYTES + (1 << 20) {
            bail!("the bundle is larger than {} MiB", MAX_BYTES >> 20);
        }
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n]).context("writing the bundle")?;
    }
    if total == 0 {
        return Ok(None);
    }
    let got = hex::encode(hasher.finalize());
    if !got.eq_ignore_ascii_case(digest) {
        bail!("the bundle received has sha256 {got}, not {digest}: it was not stored");
    }
    let path = dir.join(format!("{}.tar", digest.to_ascii_lowercase()));
    super::fs::install_temp(tmp, &path, 0o600, &super::fs::Attrs::default())?;
    // A bundle that cannot be unpacked is refused now, not kept to fail each run.
    let reader =
        std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    if let Err(e) = unpack(std::io::BufReader::new(reader), parent) {
        super::fs::remove(&path, false)
            .with_context(|| format!("removing the unusable {}", path.display()))?;
        return Err(anyhow::Error::new(Unusable(format!("{e:#}"))));
    }
    prune(&dir, CACHE_KEEP)?;
    Ok(Some(path))
}

/// A bundle received whole that cannot be unpacked (not a bundle, an escaping path, no
/// manifest, too large): [`store`] removes it and fails with this.
#[derive(Debug)]
pub struct Unusable(pub String);

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the bundle cannot be used ({}); it was not stored",
            self.0
        )
    }
}

impl std::error::Error for Unusable {}

/// Removes all but the `keep` most recently used bundles of the cache `dir`.
fn prune(dir: &Path, keep: usize) -> anyhow::Result<()> {
    let mut entries: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tar"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    for (_, path) in entries.into_iter().skip(keep) {
        super::fs::remove(&path, false).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

/// The cached bundle named `digest` unpacked into a new private directory under `parent`;
/// `None` when the cache does not hold it.
pub fn unpack_cached(parent: &Path, digest: &str) -> anyhow::Result<Option<Unpacked>> {
    let Some(file) = cached(parent, digest)? else {
        return Ok(None);
    };
    let reader =
        std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
    unpack(std::io::BufReader::new(reader), parent).map(Some)
}

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

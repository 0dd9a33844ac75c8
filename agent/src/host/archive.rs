//! Release archives: one file taken out of a `.tar.gz` (helm ships its binary as
//! `linux-amd64/helm` inside `helm-v3.16.2-linux-amd64.tar.gz`).
//!
//! Invariant: the destination is replaced atomically, as [`super::fs::write_atomic`] does, but
//! streamed: the member goes to a temporary file beside the destination with its final mode,
//! is flushed, and is renamed into place; memory use is one buffer whatever the member's size.
//! A missing member or a truncated archive leaves the destination untouched.

use std::fs::File;
use std::io::BufReader;
use std::path::{Component, Path};

use anyhow::{Context, bail};
use flate2::read::GzDecoder;

use super::fs::sync_dir;

/// Extracts the regular file `member` (a path inside the archive, e.g. `linux-amd64/helm`;
/// a leading `./` in the archive is ignored) of the gzip-compressed tar `archive` to `dest`
/// with `mode`, atomically.
pub fn extract_member(archive: &Path, member: &str, dest: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let file = File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut tar = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
    let entries = tar
        .entries()
        .with_context(|| format!("reading {} as a .tar.gz", archive.display()))?;
    let wanted = normal(Path::new(member));
    let mut seen = Vec::new();
    for entry in entries {
        let mut entry =
            entry.with_context(|| format!("reading {} as a .tar.gz", archive.display()))?;
        let path = entry
            .path()
            .context("an entry path in the archive")?
            .into_owned();
        if normal(&path) != wanted {
            if seen.len() < 10 {
                seen.push(path.display().to_string());
            }
            continue;
        }
        if !entry.header().entry_type().is_file() {
            bail!("{member} in {} is not a regular file", archive.display());
        }
        let dir = dest
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut tmp = tempfile::Builder::new()
            .prefix(".bosun-extract-")
            .tempfile_in(dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        std::io::copy(&mut entry, tmp.as_file_mut())
            .with_context(|| format!("extracting {member} from {}", archive.display()))?;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .and_then(|()| tmp.as_file().sync_all())
            .with_context(|| format!("flushing {}", tmp.path().display()))?;
        tmp.persist(dest)
            .map_err(|e| e.error)
            .with_context(|| format!("renaming into {}", dest.display()))?;
        return sync_dir(dir);
    }
    bail!(
        "{} has no {member} (it holds {}): is this the release archive for this architecture?",
        archive.display(),
        if seen.is_empty() {
            "nothing".to_string()
        } else {
            seen.join(", ")
        }
    )
}

/// The path's normal components only (`./linux-amd64/helm` → `linux-amd64/helm`).
fn normal(path: &Path) -> Vec<&std::ffi::OsStr> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::os::unix::fs::PermissionsExt;

    fn tarball(dir: &Path, files: &[(&str, &[u8])]) -> std::path::PathBuf {
        let path = dir.join("release.tar.gz");
        let gz = GzEncoder::new(File::create(&path).unwrap(), Compression::fast());
        let mut builder = tar::Builder::new(gz);
        for (name, bytes) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o755);
            header.set_cksum();
            builder.append_data(&mut header, name, *bytes).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap();
        path
    }

    #[test]
    fn extracts_one_member_with_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let archive = tarball(
            dir.path(),
            &[
                ("./linux-amd64/LICENSE", b"license"),
                ("./linux-amd64/helm", b"binary"),
            ],
        );
        let dest = dir.path().join("helm");
        extract_member(&archive, "linux-amd64/helm", &dest, 0o755).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"binary");
        assert_eq!(
            std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777,
            0o755
        );
    }

    #[test]
    fn a_missing_member_leaves_the_destination_alone_and_names_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let archive = tarball(dir.path(), &[("linux-arm64/helm", b"arm")]);
        let dest = dir.path().join("helm");
        std::fs::write(&dest, b"old").unwrap();
        let err = extract_member(&archive, "linux-amd64/helm", &dest, 0o755).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("has no linux-amd64/helm") && msg.contains("linux-arm64/helm"),
            "{msg}"
        );
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
    }

    #[test]
    fn a_file_that_is_not_gzip_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("x.tar.gz");
        std::fs::write(&archive, b"<html>not found</html>").unwrap();
        let err = extract_member(
            &archive,
            "linux-amd64/helm",
            &dir.path().join("helm"),
            0o755,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("as a .tar.gz"), "{err:#}");
        assert!(!dir.path().join("helm").exists());
    }
}

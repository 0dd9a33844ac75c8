//! Whole archives (`.tar.gz`, `.tar.zst`, `.tar`, `.zip`) read, compared with a directory, and
//! unpacked into it, for `unarchive`.
//!
//! Invariants:
//! - Nothing lands outside the destination. Every entry is checked before anything is written:
//!   an absolute path, a `..`, a symlink whose target leaves the destination, an entry below a
//!   symlink of the same archive, a hard link or a device refuses the whole archive. When
//!   unpacking, an existing symlink on the way to an entry is refused too (it is never followed).
//! - A corrupt or refused archive changes nothing: entries are first written to a private
//!   directory inside the destination, and moved into place (renames on one file system) only
//!   once the whole archive was read.
//! - Memory use is one buffer per entry whatever the archive's size.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use bosun_model::steps::unarchive::ArchiveFormat;
use sha2::{Digest, Sha256};

use super::fs::{Attrs, create_dir, lstat, rename, set_mode, staging_dir, sync_dir};

/// One entry of an archive, as it should be found in the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Relative to the destination, normalised (no `.`, no `..`).
    pub path: PathBuf,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits (meaningless for a symlink).
    pub mode: u32,
}

/// What an [`Entry`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file: its size and SHA-256.
    File { size: u64, sha256: String },
    /// A symbolic link to this (relative) target.
    Symlink(PathBuf),
}

/// What the walk hands the visitor for each entry; the reader yields a file's content.
struct RawEntry {
    path: PathBuf,
    kind: RawKind,
    mode: u32,
    mtime: Option<u64>,
}

enum RawKind {
    Dir,
    File,
    Symlink(PathBuf),
    /// Skipped: metadata records (pax headers) that are not entries.
    Meta,
    /// Refused, with what it is.
    Refused(&'static str),
}

/// Every entry of `archive`, checked (see the module doc), each path once (the last entry for a
/// path wins, as when unpacking).
pub(crate) fn listing(archive: &Path, format: ArchiveFormat) -> anyhow::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    walk(archive, format, &mut |raw, path, reader| {
        let kind = match raw.kind {
            RawKind::Dir => EntryKind::Dir,
            RawKind::Symlink(target) => EntryKind::Symlink(target),
            RawKind::File => {
                let mut hasher = Sha256::new();
                let size = std::io::copy(reader, &mut hasher)
                    .with_context(|| format!("reading {} in the archive", path.display()))?;
                EntryKind::File {
                    size,
                    sha256: hex::encode(hasher.finalize()),
                }
            }
            RawKind::Meta | RawKind::Refused(_) => unreachable!("filtered by walk"),
        };
        entries.push(Entry {
            path,
            kind,
            mode: raw.mode,
        });
        Ok(())
    })?;
    Ok(last_per_path(entries))
}

/// What differs between `entries` and `dest`, one phrase per entry ("bin/app: missing").
pub(crate) fn differences(
    entries: &[Entry],
    dest: &Path,
    attrs: &Attrs,
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in entries {
        let at = dest.join(&entry.path);
        let shown = entry.path.display();
        let Some(meta) = lstat(&at)? else {
            out.push(format!("{shown}: missing"));
            continue;
        };
        let same_kind = match &entry.kind {
            EntryKind::Dir => meta.is_dir(),
            EntryKind::File { .. } => meta.is_file(),
            EntryKind::Symlink(_) => meta.file_type().is_symlink(),
        };
        if !same_kind {
            out.push(format!("{shown}: not a {}", kind_name(&entry.kind)));
            continue;
        }
        match &entry.kind {
            EntryKind::File { size, sha256 } => {
                let same = meta.len() == *size
                    && super::download::sha256_file(&at)?.as_deref() == Some(sha256.as_str());
                if !same {
                    out.push(format!("{shown}: content"));
                    continue;
                }
            }
            EntryKind::Symlink(target) => {
                if fs::read_link(&at).with_context(|| format!("reading link {}", at.display()))?
                    != *target
                {
                    out.push(format!("{shown}: link target"));
                    continue;
                }
            }
            EntryKind::Dir => {}
        }
        if !matches!(entry.kind, EntryKind::Symlink(_)) && meta.mode() & 0o7777 != entry.mode {
            out.push(format!(
                "{shown}: mode {:04o} → {:04o}",
                meta.mode() & 0o7777,
                entry.mode
            ));
            continue;
        }
        let owner = Attrs {
            mode: None,
            ..*attrs
        };
        if !owner.differences(&meta).is_empty() {
            out.push(format!("{shown}: owner/group"));
        }
    }
    Ok(out)
}

/// Unpacks `archive` into the existing directory `dest` (see the module doc); entries get
/// `attrs`' owner and group when given. Returns how many entries were put in place.
pub(crate) fn unpack(
    archive: &Path,
    format: ArchiveFormat,
    dest: &Path,
    attrs: &Attrs,
) -> anyhow::Result<usize> {
    let stage = staging_dir(dest, ".bosun-unarchive-")
        .with_context(|| format!("creating a staging directory in {}", dest.display()))?;
    let mut staged: Vec<(PathBuf, RawKind, u32)> = Vec::new();
    walk(archive, format, &mut |raw, path, reader| {
        let at = stage.path().join(&path);
        if let Some(parent) = at.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        match &raw.kind {
            RawKind::Dir => {}
            RawKind::File => {
                if lstat(&at)?.is_some_and(|m| m.is_dir()) {
                    fs::remove_dir_all(&at)
                        .with_context(|| format!("removing {}", at.display()))?;
                }
                let mut file =
                    File::create(&at).with_context(|| format!("creating {}", at.display()))?;
                std::io::copy(reader, &mut file)
                    .with_context(|| format!("unpacking {} from the archive", path.display()))?;
                file.sync_all()
                    .with_context(|| format!("flushing {}", at.display()))?;
                if let Some(secs) = raw.mtime.and_then(|s| i64::try_from(s).ok()) {
                    let t = nix::sys::time::TimeSpec::new(secs, 0);
                    nix::sys::stat::futimens(&file, &t, &t)
                        .with_context(|| format!("setting the time of {}", at.display()))?;
                }
            }
            RawKind::Symlink(target) => {
                if lstat(&at)?.is_some() {
                    fs::remove_file(&at).with_context(|| format!("removing {}", at.display()))?;
                }
                std::os::unix::fs::symlink(target, &at)
                    .with_context(|| format!("creating link {}", at.display()))?;
            }
            RawKind::Meta | RawKind::Refused(_) => unreachable!("filtered by walk"),
        }
        staged.push((path, raw.kind, raw.mode));
        Ok(())
    })?;
    // The last entry for a path wins, in the order of its first appearance.
    let mut last: BTreeMap<PathBuf, usize> = BTreeMap::new();
    for (i, (path, _, _)) in staged.iter().enumerate() {
        last.insert(path.clone(), i);
    }
    // Every conflict is found before anything is moved, so a refusal changes nothing.
    for (i, (path, kind, _)) in staged.iter().enumerate() {
        if last.get(path) == Some(&i) {
            conflict(dest, path, matches!(kind, RawKind::Dir))?;
        }
    }
    let mut dirs = Vec::new();
    let mut touched = BTreeSet::new();
    for (i, (path, kind, mode)) in staged.iter().enumerate() {
        if last.get(path) != Some(&i) {
            continue;
        }
        let target = dest.join(path);
        make_parents(dest, path, &mut touched)?;
        let existing = lstat(&target)?;
        match kind {
            RawKind::Dir => {
                match existing {
                    None => create_dir(&target)
                        .with_context(|| format!("creating {}", target.display()))?,
                    Some(m) if m.is_dir() => {}
                    Some(_) => bail!(
                        "{} exists and is not a directory, but the archive has a directory there; remove it first",
                        target.display()
                    ),
                }
                dirs.push((target, *mode));
            }
            RawKind::File | RawKind::Symlink(_) => {
                if existing.is_some_and(|m| m.is_dir()) {
                    bail!(
                        "{} is a directory, but the archive has a {} there; remove it first",
                        target.display(),
                        if matches!(kind, RawKind::File) {
                            "file"
                        } else {
                            "symlink"
                        }
                    );
                }
                let from = stage.path().join(path);
                if matches!(kind, RawKind::File) {
                    fs::set_permissions(&from, fs::Permissions::from_mode(*mode))
                        .with_context(|| format!("setting mode of {}", from.display()))?;
                }
                owner_only(attrs).apply(&from)?;
                rename(&from, &target)
                    .with_context(|| format!("moving {} into place", target.display()))?;
                if let Some(parent) = target.parent() {
                    touched.insert(parent.to_path_buf());
                }
            }
            RawKind::Meta | RawKind::Refused(_) => {}
        }
    }
    // Directory modes last, deepest first: a read-only directory must not stop what goes in it.
    for (dir, mode) in dirs.iter().rev() {
        owner_only(attrs).apply(dir)?;
        set_mode(dir, *mode).with_context(|| format!("setting mode of {}", dir.display()))?;
    }
    for dir in &touched {
        sync_dir(dir)?;
    }
    sync_dir(dest)?;
    Ok(last.len())
}

/// Refuses an entry whose way from `dest` goes through a symlink or a non-directory, or that
/// would put a directory over a non-directory or the other way round.
fn conflict(dest: &Path, path: &Path, is_dir: bool) -> anyhow::Result<()> {
    let mut at = dest.to_path_buf();
    for part in path.components() {
        at.push(part);
        let last = at == dest.join(path);
        let Some(m) = lstat(&at)? else {
            return Ok(());
        };
        if m.file_type().is_symlink() && (!last || is_dir) {
            bail!(
                "{} is a symlink; unarchive does not unpack through symlinks (it could lead out of {}); nothing was unpacked",
                at.display(),
                dest.display()
            );
        }
        if last && m.is_dir() != is_dir {
            bail!(
                "{} is {}, but the archive has a {} there; remove it first; nothing was unpacked",
                at.display(),
                if m.is_dir() {
                    "a directory"
                } else {
                    "not a directory"
                },
                if is_dir { "directory" } else { "file" }
            );
        }
        if !last && !m.is_dir() {
            bail!(
                "{} is not a directory, but the archive has entries below it; nothing was unpacked",
                at.display()
            );
        }
    }
    Ok(())
}

/// Creates the missing directories between `dest` and `path` (mode 0755, as GNU tar makes
/// them), refusing an existing symlink or non-directory on the way.
fn make_parents(dest: &Path, path: &Path, touched: &mut BTreeSet<PathBuf>) -> anyhow::Result<()> {
    let mut at = dest.to_path_buf();
    let parents: Vec<_> = path
        .parent()
        .into_iter()
        .flat_map(Path::components)
        .collect();
    for part in parents {
        at.push(part);
        match lstat(&at)? {
            None => {
                create_dir(&at).with_context(|| format!("creating {}", at.display()))?;
                set_mode(&at, 0o755)
                    .with_context(|| format!("setting mode of {}", at.display()))?;
                if let Some(p) = at.parent() {
                    touched.insert(p.to_path_buf());
                }
            }
            Some(m) if m.file_type().is_symlink() => bail!(
                "{} is a symlink; unarchive does not unpack through symlinks (it could lead out of {})",
                at.display(),
                dest.display()
            ),
            Some(m) if m.is_dir() => {}
            Some(_) => bail!(
                "{} is not a directory, but the archive has entries below it",
                at.display()
            ),
        }
    }
    Ok(())
}

fn owner_only(attrs: &Attrs) -> Attrs {
    Attrs {
        mode: None,
        ..attrs.clone()
    }
}

fn kind_name(kind: &EntryKind) -> &'static str {
    match kind {
        EntryKind::Dir => "directory",
        EntryKind::File { .. } => "regular file",
        EntryKind::Symlink(_) => "symlink",
    }
}

fn last_per_path(entries: Vec<Entry>) -> Vec<Entry> {
    let mut index: BTreeMap<PathBuf, usize> = BTreeMap::new();
    let mut out: Vec<Entry> = Vec::new();
    for e in entries {
        match index.get(&e.path) {
            Some(&i) => out[i] = e,
            None => {
                index.insert(e.path.clone(), out.len());
                out.push(e);
            }
        }
    }
    out
}

type Visit<'a> = dyn FnMut(RawEntry, PathBuf, &mut dyn Read) -> anyhow::Result<()> + 'a;

/// Calls `visit` for every entry of `archive` with its checked relative path, after refusing
/// the archive on the first unsafe entry (see the module doc).
fn walk(archive: &Path, format: ArchiveFormat, visit: &mut Visit<'_>) -> anyhow::Result<()> {
    let shown = archive.display();
    let file = File::open(archive).with_context(|| format!("opening {shown}"))?;
    let reader = BufReader::new(file);
    let mut links = BTreeSet::new();
    let mut check = |raw: &RawEntry| -> anyhow::Result<Option<PathBuf>> {
        let path = checked_entry(raw, &links)
            .map_err(|e| anyhow::anyhow!("{shown} is refused: {e}; nothing was unpacked"))?;
        if let (Some(p), RawKind::Symlink(_)) = (&path, &raw.kind) {
            links.insert(p.clone());
        }
        Ok(path)
    };
    match format {
        ArchiveFormat::TarGz => walk_tar(
            flate2::read::GzDecoder::new(reader),
            &shown,
            &mut check,
            visit,
        ),
        ArchiveFormat::TarZst => {
            let decoder = zstd::stream::read::Decoder::with_buffer(reader)
                .with_context(|| format!("reading {shown} as zstd"))?;
            walk_tar(decoder, &shown, &mut check, visit)
        }
        ArchiveFormat::Tar => walk_tar(reader, &shown, &mut check, visit),
        ArchiveFormat::Zip => walk_zip(reader, &shown, &mut check, visit),
    }
}

type Checker<'a> = dyn FnMut(&RawEntry) -> anyhow::Result<Option<PathBuf>> + 'a;

fn walk_tar<R: Read>(
    reader: R,
    shown: &std::path::Display<'_>,
    check: &mut Checker<'_>,
    visit: &mut Visit<'_>,
) -> anyhow::Result<()> {
    let mut tar = tar::Archive::new(reader);
    let entries = tar
        .entries()
        .with_context(|| format!("reading {shown} as a tar archive"))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("reading {shown} as a tar archive"))?;
        let path = entry
            .path()
            .with_context(|| format!("an entry path in {shown}"))?
            .into_owned();
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let mtime = header.mtime().ok();
        use tar::EntryType as T;
        let kind = match header.entry_type() {
            T::Regular | T::Continuous => RawKind::File,
            T::Directory => RawKind::Dir,
            T::Symlink => RawKind::Symlink(
                entry
                    .link_name()
                    .with_context(|| format!("a link target in {shown}"))?
                    .map(|l| l.into_owned())
                    .unwrap_or_default(),
            ),
            T::Link => RawKind::Refused("a hard link"),
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => RawKind::Meta,
            T::Char | T::Block | T::Fifo => RawKind::Refused("a device or fifo"),
            _ => RawKind::Refused("an entry of an unknown type"),
        };
        let raw = RawEntry {
            path,
            kind,
            mode,
            mtime,
        };
        if let Some(path) = check(&raw)? {
            visit(raw, path, &mut entry)?;
        }
    }
    Ok(())
}

fn walk_zip<R: Read + std::io::Seek>(
    reader: R,
    shown: &std::path::Display<'_>,
    check: &mut Checker<'_>,
    visit: &mut Visit<'_>,
) -> anyhow::Result<()> {
    let mut zip = zip::ZipArchive::new(reader)
        .with_context(|| format!("reading {shown} as a zip archive"))?;
    for i in 0..zip.len() {
        let mut file = zip
            .by_index(i)
            .with_context(|| format!("reading entry {i} of {shown}"))?;
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(file.name_raw()));
        let unix = file.unix_mode();
        let kind = if file.is_symlink() {
            let mut target = String::new();
            file.read_to_string(&mut target)
                .with_context(|| format!("reading the link {} in {shown}", path.display()))?;
            RawKind::Symlink(PathBuf::from(target))
        } else if file.is_dir() {
            RawKind::Dir
        } else {
            RawKind::File
        };
        let default = if matches!(kind, RawKind::Dir) {
            0o755
        } else {
            0o644
        };
        // As unzip does without -K: no set-id bits from an archive.
        let mode = unix.map_or(default, |m| m & 0o777);
        let raw = RawEntry {
            path,
            kind,
            mode,
            mtime: None,
        };
        if let Some(path) = check(&raw)? {
            visit(raw, path, &mut file)?;
        }
    }
    Ok(())
}

/// The entry's path made relative and normal, `None` for the archive's root (`./`) and for
/// metadata records; an error saying why an entry is refused.
fn checked_entry(raw: &RawEntry, links: &BTreeSet<PathBuf>) -> Result<Option<PathBuf>, String> {
    if let RawKind::Refused(what) = raw.kind {
        return Err(format!("{} is {what}", raw.path.display()));
    }
    if matches!(raw.kind, RawKind::Meta) {
        return Ok(None);
    }
    let path = relative(&raw.path)
        .ok_or_else(|| format!("{} leads out of the destination", raw.path.display()))?;
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    if let Some(link) = path.ancestors().skip(1).find(|a| links.contains(*a)) {
        return Err(format!(
            "{} is below {}, a symlink of the same archive",
            path.display(),
            link.display()
        ));
    }
    if let RawKind::Symlink(target) = &raw.kind
        && !link_stays_inside(&path, target)
    {
        return Err(format!(
            "the symlink {} points at {}, outside the destination",
            path.display(),
            target.display()
        ));
    }
    Ok(Some(path))
}

/// `path` with `.` dropped; `None` when absolute or holding `..`.
fn relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// True when the relative `target` of the link at `link` (relative to the destination) names a
/// place inside the destination.
fn link_stays_inside(link: &Path, target: &Path) -> bool {
    if target.as_os_str().is_empty() {
        return false;
    }
    let mut depth = link.components().count().saturating_sub(1);
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&str, tar::EntryType, &str)]) -> tempfile::NamedTempFile {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let mut b = tar::Builder::new(tmp.reopen().unwrap());
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            if *kind == tar::EntryType::Symlink {
                h.set_size(0);
                b.append_link(&mut h, path, data).unwrap();
            } else {
                h.set_size(data.len() as u64);
                // set_path refuses `..`; write the name bytes directly as an attacker would.
                let name = &mut h.as_old_mut().name;
                name[..path.len()].copy_from_slice(path.as_bytes());
                h.set_cksum();
                b.append(&h, data.as_bytes()).unwrap();
            }
        }
        b.into_inner().unwrap();
        tmp
    }

    #[test]
    fn escaping_entries_refuse_the_whole_archive() {
        use tar::EntryType as T;
        for (entries, why) in [
            (
                vec![("ok", T::Regular, "x"), ("../evil", T::Regular, "x")],
                "leads out",
            ),
            (vec![("/etc/evil", T::Regular, "x")], "leads out"),
            (vec![("l", T::Symlink, "/etc")], "outside"),
            (vec![("a/l", T::Symlink, "../../x")], "outside"),
            (
                vec![("l", T::Symlink, "."), ("l/x", T::Regular, "x")],
                "below",
            ),
            (vec![("h", T::Link, "ok")], "hard link"),
        ] {
            let tar = tar_with(&entries);
            let dest = tempfile::tempdir().unwrap();
            let err = unpack(
                tar.path(),
                ArchiveFormat::Tar,
                dest.path(),
                &Attrs::default(),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains(why), "{entries:?}: {err}");
            assert!(err.contains("nothing was unpacked"), "{err}");
            assert_eq!(fs::read_dir(dest.path()).unwrap().count(), 0, "{entries:?}");
        }
    }

    #[test]
    fn links_inside_are_kept_and_compared() {
        use tar::EntryType as T;
        let tar = tar_with(&[
            ("d/f", T::Regular, "hello"),
            ("d/l", T::Symlink, "f"),
            ("up", T::Symlink, "d/../d/f"),
        ]);
        let dest = tempfile::tempdir().unwrap();
        let list = listing(tar.path(), ArchiveFormat::Tar).unwrap();
        assert_eq!(
            differences(&list, dest.path(), &Attrs::default())
                .unwrap()
                .len(),
            3
        );
        assert_eq!(
            unpack(
                tar.path(),
                ArchiveFormat::Tar,
                dest.path(),
                &Attrs::default()
            )
            .unwrap(),
            3
        );
        assert_eq!(
            fs::read_to_string(dest.path().join("d/l")).unwrap(),
            "hello"
        );
        assert!(
            differences(&list, dest.path(), &Attrs::default())
                .unwrap()
                .is_empty()
        );
        fs::write(dest.path().join("d/f"), "other").unwrap();
        assert_eq!(
            differences(&list, dest.path(), &Attrs::default()).unwrap(),
            ["d/f: content"]
        );
    }
}

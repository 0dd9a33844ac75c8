//! `unarchive`: the content of a `.tar.gz`, `.tar.zst`, `.tar` or `.zip` archive unpacked into a
//! directory.
//!
//! ```toml
//! unarchive = { src = "files/app.tar.gz", dest = "/opt/app" }    # relative: beside the playbook
//! unarchive = { src = "/var/cache/app.zip", dest = "/opt/app", creates = "/opt/app/bin/app" }
//! unarchive = { src = "https://example.org/app-1.2.tar.zst", checksum = "sha256:…", dest = "/opt/app" }
//! ```
//! `src` is a file (a relative path is the playbook's own file and travels with it to a remote
//! host, an absolute one is the host's), or an `http(s)://` URL, downloaded as `get_url` does
//! and verified against `checksum`, which a URL requires. The format comes from the name
//! (`.tar.gz`/`.tgz`, `.tar.zst`/`.tzst`, `.tar`, `.zip`) unless `format` says it. `dest` must
//! be an existing directory.
//!
//! The step is `ok` when `creates` exists, or else when every entry of the archive is already
//! in `dest` as the archive has it (same kind, bytes, permission bits, link target); otherwise
//! every entry is unpacked. Entries are first unpacked into a private directory inside `dest`
//! and moved into place only when the whole archive was read, so a corrupt archive changes
//! nothing. An archive with an entry that would land outside `dest` (an absolute path, a `..`,
//! a symlink pointing out of `dest`, a path through an existing symlink) or a hard link or a
//! device is refused as a whole. Files present in `dest` but not in the archive are left alone.
//!
//! Compared with Ansible's `unarchive` on generated cases (`agent/tests/ansible.rs`).
//! Deliberate differences: unpacked files belong to bosund's user (or `owner`/`group`), not to
//! the ids recorded in the archive (GNU tar as root restores those: a tarball from elsewhere
//! would give its files to whichever local user has that id); `src` relative is the playbook's
//! file and absolute is the host's (no `remote_src`); `checksum` for a URL; no `exclude`,
//! `include`, `list_files`, `extra_opts`, `keep_newer`; modification times are not compared
//! (Ansible's `tar --diff` unpacks again when only they differ); a zip's directory modes are
//! applied to existing directories too (unzip leaves them, and Ansible then reports a change on
//! every run); set-id bits in a zip are dropped, as unzip does.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ActionArgs;
use super::get_url::{Checksum, url_problem};
use crate::jinja::is_templated;

/// Arguments of `unarchive`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnarchiveArgs {
    /// The archive: a file (relative: from the playbook's directory) or an http(s) URL.
    pub src: String,
    /// The directory to unpack into; it must exist.
    pub dest: String,
    /// The archive's format, when its name does not say it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ArchiveFormat>,
    /// For a URL `src` (required there): `sha256:<hex>` or `sha256:<URL of a checksum list>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// A path that, when it exists, means the archive was unpacked already: nothing is read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creates: Option<String>,
    /// Owner of what is unpacked, by name or numeric id (default: bosund's user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Group of what is unpacked, by name or numeric id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// An archive format `unarchive` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ArchiveFormat {
    /// A gzip-compressed tar.
    #[serde(rename = "tar.gz")]
    TarGz,
    /// A zstd-compressed tar.
    #[serde(rename = "tar.zst")]
    TarZst,
    /// An uncompressed tar.
    #[serde(rename = "tar")]
    Tar,
    /// A zip archive.
    #[serde(rename = "zip")]
    Zip,
}

impl ArchiveFormat {
    /// The format a file name (or a URL's path) says, if any.
    pub fn from_name(name: &str) -> Option<ArchiveFormat> {
        let name = name
            .split(['?', '#'])
            .next()
            .unwrap_or(name)
            .to_ascii_lowercase();
        [
            (".tar.gz", ArchiveFormat::TarGz),
            (".tgz", ArchiveFormat::TarGz),
            (".tar.zst", ArchiveFormat::TarZst),
            (".tzst", ArchiveFormat::TarZst),
            (".tar", ArchiveFormat::Tar),
            (".zip", ArchiveFormat::Zip),
        ]
        .into_iter()
        .find_map(|(ext, f)| name.ends_with(ext).then_some(f))
    }
}

impl UnarchiveArgs {
    /// True when `src` is a URL rather than a file.
    pub fn src_is_url(&self) -> bool {
        self.src.starts_with("http://") || self.src.starts_with("https://")
    }

    /// `format`, or the one `src`'s name says.
    pub fn format(&self) -> Option<ArchiveFormat> {
        self.format.or_else(|| ArchiveFormat::from_name(&self.src))
    }
}

impl ActionArgs for UnarchiveArgs {
    const LOCAL_FILES: &'static [(&'static str, super::LocalFileRole)] =
        &[("src", super::LocalFileRole::ArchiveSource)];

    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if is_templated(&self.src) {
            return problems;
        }
        if self.src.contains("://") {
            problems.extend(url_problem("src", &self.src));
            match self.checksum.as_deref() {
                None => problems.push(
                    "a URL `src` needs `checksum` (sha256:<hex> or sha256:<URL of a checksum list>): an unpacked download is not verified otherwise"
                        .into(),
                ),
                Some(c) if !is_templated(c) => problems.extend(Checksum::parse(c).err()),
                Some(_) => {}
            }
        } else if self.checksum.is_some() {
            problems.push("`checksum` is for a URL `src`; a file `src` is read as it is".into());
        }
        if self.format().is_none() {
            problems.push(format!(
                "cannot tell the format of {:?} from its name; set `format` to \"tar.gz\", \"tar.zst\", \"tar\" or \"zip\"",
                self.src
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_the_name() {
        assert_eq!(
            ArchiveFormat::from_name("a.TGZ"),
            Some(ArchiveFormat::TarGz)
        );
        assert_eq!(
            ArchiveFormat::from_name("https://h/a.tar.zst?x=1"),
            Some(ArchiveFormat::TarZst)
        );
        assert_eq!(ArchiveFormat::from_name("a.zip"), Some(ArchiveFormat::Zip));
        assert_eq!(ArchiveFormat::from_name("a.tar.xz"), None);
    }
}

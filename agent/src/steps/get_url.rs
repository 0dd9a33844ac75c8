//! Runs `get_url` on the host; its arguments and their validation are the model's
//! (`bosun_model::steps::get_url`).
//!
//! `check` decides without downloading when it can (a matching digest, or an existing file
//! and no `checksum` nor `force`). Otherwise, in a real run, `check` downloads to a temporary
//! file beside `dest` (verified against the checksum there, so a mismatch fails before
//! anything is replaced) and `apply` renames it into place; under `--check` nothing is
//! downloaded but a checksum list.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::bail;
use bosun_model::steps::get_url::{Checksum, GetUrlArgs};

use super::content::unified_diff;
use super::{Check, Outcome, StepContext, StepKind};
use crate::host::download::{self, Downloaded, shown_url};
use crate::host::fs::{Attrs, install_temp, lstat};

/// Files up to this size are diffed (when both are text).
const DIFF_LIMIT: u64 = 1 << 20;

/// What `apply` has to do.
pub enum GetUrlChange {
    /// Under `--check`: the file would be downloaded.
    Download,
    /// Put the verified download in place.
    Install {
        /// The download, in `dest`'s directory.
        download: Downloaded,
        /// Mode of the new file.
        mode: u32,
        /// Owner and group.
        attrs: Attrs,
    },
    /// The content is right; only attributes differ.
    Attributes(Attrs),
}

impl StepKind for GetUrlArgs {
    type Change = GetUrlChange;

    async fn check(&self, ctx: &StepContext<'_>) -> anyhow::Result<Check<GetUrlChange>> {
        let attrs = Attrs::resolve(
            self.mode.as_deref(),
            self.owner.as_deref(),
            self.group.as_deref(),
        )?;
        let dest = Path::new(&self.dest);
        let meta = lstat(dest)?;
        if meta.as_ref().is_some_and(|m| m.is_dir()) {
            bail!(
                "{} is a directory; `dest` must name the file to write",
                dest.display()
            );
        }
        let dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let dir_missing = !dir.is_dir();
        if dir_missing && !ctx.check {
            bail!(
                "directory {} does not exist; create it first with a `file` step (state = \"directory\")",
                dir.display()
            );
        }
        let client = download::client_with_timeout(self.timeout())?;
        let expected = match self.checksum.as_deref() {
            None => None,
            Some(text) => {
                let checksum = Checksum::parse(text).map_err(anyhow::Error::msg)?;
                Some(download::expected_digest(&client, &checksum, &self.url, &self.headers).await?)
            }
        };
        let existing = match &meta {
            Some(_) => download::sha256_file(dest)?,
            None => None,
        };
        if let (Some(have), Some(m)) = (&existing, &meta) {
            let current = match &expected {
                Some(want) => want == have,
                None => !self.force,
            };
            if current {
                return Ok(attributes(attrs, m));
            }
        }
        let url = shown_url(&self.url);
        if ctx.check {
            return Ok(Check::change(
                GetUrlChange::Download,
                match existing {
                    Some(_) => format!("would download {url} over {}", dest.display()),
                    None => format!("would download {url}"),
                },
            ));
        }
        let download = download::to_temp(&client, &self.url, &self.headers, &dir).await?;
        if let Some(want) = &expected
            && *want != download.sha256
        {
            bail!(
                "checksum mismatch for {url}: expected sha256 {want}, got {} ({} bytes); {} was left as it was",
                download.sha256,
                download.bytes,
                dest.display()
            );
        }
        if let (Some(have), Some(m)) = (&existing, &meta)
            && *have == download.sha256
        {
            return Ok(attributes(attrs, m));
        }
        let diff = diff(dest, meta.as_ref(), &download);
        let message = match &meta {
            None => format!("downloaded {} bytes from {url}", download.bytes),
            Some(m) => format!(
                "downloaded {} bytes from {url} ({} bytes before)",
                download.bytes,
                m.len()
            ),
        };
        let mode = attrs
            .mode
            .or(meta.as_ref().map(|m| m.mode() & 0o7777))
            .unwrap_or(0o644);
        Ok(Check::change(
            GetUrlChange::Install {
                download,
                mode,
                attrs,
            },
            message,
        )
        .with_diff(Some(diff)))
    }

    async fn apply(&self, _ctx: &StepContext<'_>, change: GetUrlChange) -> anyhow::Result<Outcome> {
        let dest = Path::new(&self.dest);
        let message = match change {
            GetUrlChange::Download => bail!("nothing was downloaded (a check-only finding)"),
            GetUrlChange::Install {
                download,
                mode,
                attrs,
            } => {
                let bytes = download.bytes;
                install_temp(download.file, dest, mode, &attrs)?;
                format!("wrote {bytes} bytes from {}", shown_url(&self.url))
            }
            GetUrlChange::Attributes(attrs) => {
                attrs.apply(dest)?;
                "attributes set".to_string()
            }
        };
        Ok(Outcome {
            changed: true,
            message: Some(message),
            ..Outcome::default()
        })
    }
}

/// Unchanged, or only attributes to set.
fn attributes(attrs: Attrs, meta: &std::fs::Metadata) -> Check<GetUrlChange> {
    let diffs = attrs.differences(meta);
    if diffs.is_empty() {
        Check::unchanged(Some("already has the expected content".to_string()))
    } else {
        Check::change(GetUrlChange::Attributes(attrs), diffs.join(", "))
    }
}

/// A unified diff of the old and new content when both are small, else a one-line summary.
fn diff(dest: &Path, meta: Option<&std::fs::Metadata>, download: &Downloaded) -> String {
    let old_len = meta.map_or(0, std::fs::Metadata::len);
    if download.bytes > DIFF_LIMIT || old_len > DIFF_LIMIT {
        return format!(
            "{}: content differs ({old_len} → {} bytes; too large to diff)\n",
            dest.display(),
            download.bytes
        );
    }
    let old = meta.and_then(|_| std::fs::read(dest).ok());
    let new = std::fs::read(download.file.path()).unwrap_or_default();
    unified_diff(dest, old.as_deref(), &new)
}

//! Runs `unarchive` on the host; its arguments and their validation are the model's
//! (`bosun_model::steps::unarchive`), the reading and unpacking of archives is
//! [`crate::host::unpack`]'s.
//!
//! `check` reads the whole archive (downloading it first when `src` is a URL, verified against
//! `checksum`, into a temporary file in the state directory) and compares every entry with
//! `dest`; `apply` unpacks the archive `check` read.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bosun_model::steps::get_url::Checksum;
use bosun_model::steps::unarchive::{ArchiveFormat, UnarchiveArgs};

use super::{Check, Outcome, StepContext, StepKind};
use crate::host::download::{self, shown_url};
use crate::host::fs::Attrs;
use crate::host::unpack;

/// How long connecting or one read of a URL `src` may take.
const DOWNLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The archive `check` read, for `apply`.
pub enum ArchiveFile {
    /// A file on the host.
    Local(PathBuf),
    /// A verified download, removed when dropped.
    Downloaded(tempfile::NamedTempFile),
}

impl ArchiveFile {
    fn path(&self) -> &Path {
        match self {
            ArchiveFile::Local(p) => p,
            ArchiveFile::Downloaded(f) => f.path(),
        }
    }
}

/// What `apply` has to do: unpack this archive.
pub struct Unpack {
    archive: ArchiveFile,
    /// What differed, for the report.
    differed: String,
    format: ArchiveFormat,
    attrs: Attrs,
}

impl StepKind for UnarchiveArgs {
    type Change = Unpack;

    async fn check(&self, ctx: &StepContext<'_>) -> anyhow::Result<Check<Unpack>> {
        let attrs = Attrs::resolve(None, self.owner.as_deref(), self.group.as_deref())?;
        let Some(format) = self.format() else {
            bail!(
                "cannot tell the format of {:?}; set `format`",
                shown_url(&self.src)
            );
        };
        if let Some(creates) = &self.creates
            && crate::host::fs::lstat(Path::new(creates))?.is_some()
        {
            return Ok(Check::unchanged(Some(format!("{creates} exists"))));
        }
        let dest = Path::new(&self.dest);
        if !dest.is_dir() {
            if ctx.check && !dest.exists() {
                return Ok(Check::change(
                    open_archive(self, ctx, format, attrs).await?,
                    format!("would unpack into {} (not there yet)", dest.display()),
                ));
            }
            bail!(
                "{} is not a directory; create it first with a `file` step (state = \"directory\")",
                dest.display()
            );
        }
        let unpack = open_archive(self, ctx, format, attrs).await?;
        let entries = unpack::listing(unpack.archive.path(), format)?;
        let differ = unpack::differences(&entries, dest, &unpack.attrs)?;
        if differ.is_empty() {
            return Ok(Check::unchanged(Some(format!(
                "all {} entries are in place",
                entries.len()
            ))));
        }
        let mut shown: Vec<&str> = differ.iter().take(5).map(String::as_str).collect();
        let more = differ.len().saturating_sub(shown.len());
        let more_text = format!("and {more} more");
        if more > 0 {
            shown.push(&more_text);
        }
        let differed = format!("{} differ: {}", differ.len(), shown.join(", "));
        let message = format!("unpack {} entries ({differed})", entries.len());
        Ok(Check::change(Unpack { differed, ..unpack }, message))
    }

    async fn apply(&self, _ctx: &StepContext<'_>, change: Unpack) -> anyhow::Result<Outcome> {
        let archive = change.archive;
        let dest = PathBuf::from(&self.dest);
        let format = change.format;
        let attrs = change.attrs;
        let differed = change.differed;
        let count = tokio::task::spawn_blocking(move || {
            unpack::unpack(archive.path(), format, &dest, &attrs)
        })
        .await
        .context("the unpacking task")??;
        Ok(Outcome {
            changed: true,
            message: Some(format!(
                "unpacked {count} entries into {} ({differed})",
                self.dest
            )),
            ..Outcome::default()
        })
    }
}

/// The archive to read: the local file, or `src` downloaded and verified.
async fn open_archive(
    args: &UnarchiveArgs,
    ctx: &StepContext<'_>,
    format: ArchiveFormat,
    attrs: Attrs,
) -> anyhow::Result<Unpack> {
    let archive = if args.src_is_url() {
        let Some(text) = args.checksum.as_deref() else {
            bail!("a URL `src` needs `checksum`");
        };
        let checksum = Checksum::parse(text).map_err(anyhow::Error::msg)?;
        let client = download::client_with_timeout(DOWNLOAD_TIMEOUT)?;
        let none = Default::default();
        let want = download::expected_digest(&client, &checksum, &args.src, &none).await?;
        let dir = if ctx.state_dir.is_dir() {
            ctx.state_dir.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let got = download::to_temp(&client, &args.src, &none, &dir).await?;
        if got.sha256 != want {
            bail!(
                "checksum mismatch for {}: expected sha256 {want}, got {} ({} bytes); nothing was unpacked",
                shown_url(&args.src),
                got.sha256,
                got.bytes
            );
        }
        ArchiveFile::Downloaded(got.file)
    } else {
        let path = ctx.resolve(Path::new(&args.src));
        if !path.is_file() {
            bail!("src {} is not a file", path.display());
        }
        ArchiveFile::Local(path)
    };
    Ok(Unpack {
        archive,
        differed: String::new(),
        format,
        attrs,
    })
}

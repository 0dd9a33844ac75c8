//! Runs `apt_repository` on the host; its arguments, the file names and the deb822 text are
//! the model's (`bosun_model::steps::apt_repository`).
//!
//! `check` compares the key file and the `.sources` file with what they should hold (a key
//! from a URL is downloaded, into memory, only when the file there does not match its
//! checksum, and never under `--check`); `apply` writes what differs atomically, then runs
//! `apt-get update` for this source and, when that fails, puts both files back.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bosun_model::steps::apt_repository::{
    ARMOR_BEGIN, AptRepositoryArgs, KEYRINGS_DIR, RepositoryState,
};
use bosun_model::steps::get_url::Checksum;

use super::content::unified_diff;
use super::{Check, Outcome, StepContext, StepKind};
use crate::host::download;
use crate::host::fs::{self as host_fs, Attrs, read_if_exists, write_atomic};
use crate::host::packages;

/// Largest key accepted from a URL.
const KEY_LIMIT: u64 = 1 << 20;
/// How long connecting or one read of `key_url` may take.
const KEY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What `apply` has to do.
pub enum RepoChange {
    /// Write these files (path, new bytes); `None` bytes: only under `--check`, a key that
    /// would be downloaded.
    Write(Vec<(PathBuf, Option<Vec<u8>>)>),
    /// Remove these files.
    Remove(Vec<PathBuf>),
}

impl StepKind for AptRepositoryArgs {
    type Change = RepoChange;

    async fn check(&self, ctx: &StepContext<'_>) -> anyhow::Result<Check<RepoChange>> {
        let sources = PathBuf::from(self.sources_path());
        let key = PathBuf::from(self.key_path());
        if self.state == RepositoryState::Absent {
            let there: Vec<PathBuf> = [sources, key]
                .into_iter()
                .chain(other_key(&self.key_path()))
                .filter(|p| p.exists())
                .collect();
            return Ok(if there.is_empty() {
                Check::unchanged(None)
            } else {
                let names: Vec<String> = there.iter().map(|p| p.display().to_string()).collect();
                Check::change(
                    RepoChange::Remove(there),
                    format!("remove {}", names.join(", ")),
                )
            });
        }
        let mut writes = Vec::new();
        let mut what = Vec::new();
        if let Some(bytes) = wanted_key(self, ctx, &key).await? {
            what.push(format!("key {}", key.display()));
            writes.push((key, bytes));
        }
        let text = self.sources_text();
        let old = read_if_exists(&sources)?;
        let mut diff = None;
        if old.as_deref() != Some(text.as_bytes()) {
            diff = Some(unified_diff(&sources, old.as_deref(), text.as_bytes()));
            what.push(format!("sources {}", sources.display()));
            writes.push((sources, Some(text.into_bytes())));
        }
        Ok(if writes.is_empty() {
            Check::unchanged(None)
        } else {
            Check::change(
                RepoChange::Write(writes),
                format!("write {}", what.join(" and ")),
            )
            .with_diff(diff)
        })
    }

    async fn apply(&self, _ctx: &StepContext<'_>, change: RepoChange) -> anyhow::Result<Outcome> {
        let message = match change {
            RepoChange::Remove(paths) => {
                for p in &paths {
                    host_fs::remove(p, false)
                        .with_context(|| format!("removing {}", p.display()))?;
                }
                format!("removed {} file(s)", paths.len())
            }
            RepoChange::Write(writes) => {
                let dir = Path::new(KEYRINGS_DIR);
                if !dir.is_dir() {
                    host_fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                    host_fs::set_mode(dir, 0o755)
                        .with_context(|| format!("setting mode of {}", dir.display()))?;
                }
                // What was there, to put back when apt refuses the result.
                let mut before = Vec::new();
                for (path, bytes) in &writes {
                    let bytes = bytes.as_ref().context("a key that was not downloaded")?;
                    before.push((path.clone(), read_if_exists(path)?));
                    write_atomic(path, bytes, 0o644, &Attrs::default())?;
                }
                if self.update_cache {
                    let sources = PathBuf::from(self.sources_path());
                    if let Err(e) = packages::apt_update_source(&sources).await {
                        for (path, old) in before {
                            let restored = match old {
                                Some(bytes) => {
                                    write_atomic(&path, &bytes, 0o644, &Attrs::default())
                                }
                                None => host_fs::remove(&path, false)
                                    .with_context(|| format!("removing {}", path.display())),
                            };
                            if let Err(r) = restored {
                                tracing::warn!("putting back {}: {r:#}", path.display());
                            }
                        }
                        return Err(e.context("the repository's files were put back as they were"));
                    }
                    format!(
                        "wrote {} file(s); apt-get update of this source succeeded",
                        writes.len()
                    )
                } else {
                    format!("wrote {} file(s)", writes.len())
                }
            }
        };
        Ok(Outcome {
            changed: true,
            message: Some(message),
            ..Outcome::default()
        })
    }
}

/// The key's bytes when the file at `path` must change (`Some(None)` under `--check` when
/// only a download would tell), `None` when it is right.
async fn wanted_key(
    args: &AptRepositoryArgs,
    ctx: &StepContext<'_>,
    path: &Path,
) -> anyhow::Result<Option<Option<Vec<u8>>>> {
    if let Some(inline) = &args.key {
        let mut text = inline.trim().to_string();
        text.push('\n');
        if !text.starts_with(ARMOR_BEGIN) {
            bail!("`key` is not an ASCII-armoured public key");
        }
        let old = read_if_exists(path)?;
        return Ok((old.as_deref() != Some(text.as_bytes())).then_some(Some(text.into_bytes())));
    }
    let (Some(url), Some(sum)) = (&args.key_url, &args.key_checksum) else {
        bail!("no `key` nor `key_url` with `key_checksum`");
    };
    let none = Default::default();
    let client = download::client_with_timeout(KEY_TIMEOUT)?;
    let checksum = Checksum::parse(sum).map_err(anyhow::Error::msg)?;
    let want = download::expected_digest(&client, &checksum, url, &none).await?;
    if download::sha256_file(path)?.as_deref() == Some(want.as_str()) {
        return Ok(None);
    }
    if ctx.check {
        return Ok(Some(None));
    }
    let got = download::to_temp(&client, url, &none, &std::env::temp_dir()).await?;
    if got.sha256 != want {
        bail!(
            "checksum mismatch for the key {}: expected sha256 {want}, got {}; nothing was written",
            download::shown_url(url),
            got.sha256
        );
    }
    if got.bytes > KEY_LIMIT {
        bail!("the key at {} is over 1 MiB", download::shown_url(url));
    }
    let bytes = std::fs::read(got.file.path())
        .with_context(|| format!("reading {}", got.file.path().display()))?;
    Ok(Some(Some(bytes)))
}

/// The key file of the other extension (`.asc` ↔ `.gpg`), removed with the repository.
fn other_key(key: &str) -> Option<PathBuf> {
    key.strip_suffix(".asc")
        .map(|k| format!("{k}.gpg"))
        .or_else(|| key.strip_suffix(".gpg").map(|k| format!("{k}.asc")))
        .map(PathBuf::from)
}

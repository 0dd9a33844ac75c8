//! Runs `file` on the host; its arguments and their validation are the model's
//! (`bosun_model::steps::file`).

use std::fs;
use std::os::unix::fs::{OpenOptionsExt, symlink};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bosun_model::steps::file::{FileArgs, FileState};

use super::{Check, Outcome, StepContext, StepKind};
use crate::host::fs::{Attrs, lstat, sync_dir};

/// What `apply` has to do.
#[derive(Debug)]
pub enum FileChange {
    /// Create the directory, then set attributes.
    CreateDirectory(Attrs),
    /// Create an empty file, then set attributes.
    CreateFile(Attrs),
    /// Remove what is there.
    Remove {
        /// It is a directory (removed with its content).
        directory: bool,
    },
    /// Point a (new or replaced) link at the target.
    Link {
        /// The link's target.
        target: PathBuf,
        /// Something that is not a link must be removed first.
        remove_first: Option<bool>,
        /// Owner and group of the link itself.
        attrs: Attrs,
    },
    /// Only attributes differ.
    Attributes(Attrs),
}

impl StepKind for FileArgs {
    type Change = FileChange;

    async fn check(&self, _ctx: &StepContext<'_>) -> anyhow::Result<Check<FileChange>> {
        let path = Path::new(&self.path);
        let attrs = Attrs::resolve(
            self.mode.as_deref(),
            self.owner.as_deref(),
            self.group.as_deref(),
        )?;
        let meta = lstat(path)?;
        let is_dir = meta.as_ref().is_some_and(|m| m.is_dir());
        Ok(match self.state {
            FileState::Directory => match meta {
                None => Check::change(FileChange::CreateDirectory(attrs), "create directory"),
                Some(m) if m.is_dir() => attributes(attrs, &m),
                Some(_) => bail!(
                    "{} exists and is not a directory; remove it first or choose another path",
                    path.display()
                ),
            },
            FileState::File => match meta {
                None => Check::change(FileChange::CreateFile(attrs), "create empty file"),
                Some(m) if m.is_file() => attributes(attrs, &m),
                Some(_) => bail!("{} exists and is not a regular file", path.display()),
            },
            FileState::Absent => match meta {
                None => Check::unchanged(None),
                Some(_) => Check::change(
                    FileChange::Remove { directory: is_dir },
                    if is_dir { "remove directory" } else { "remove" },
                ),
            },
            FileState::Link => {
                let target = PathBuf::from(self.src.as_deref().unwrap_or_default());
                match meta {
                    Some(m) if m.file_type().is_symlink() => {
                        let current = fs::read_link(path)
                            .with_context(|| format!("reading link {}", path.display()))?;
                        if current == target {
                            let owner_only = Attrs {
                                mode: None,
                                ..attrs
                            };
                            attributes(owner_only, &m)
                        } else {
                            let msg =
                                format!("relink: {} → {}", current.display(), target.display());
                            Check::change(
                                FileChange::Link {
                                    target,
                                    remove_first: None,
                                    attrs,
                                },
                                msg,
                            )
                        }
                    }
                    Some(_) if !self.force => bail!(
                        "{} exists and is not a symlink; set `force = true` to replace it with a link",
                        path.display()
                    ),
                    Some(_) => Check::change(
                        FileChange::Link {
                            target,
                            remove_first: Some(is_dir),
                            attrs,
                        },
                        "replace with a link",
                    ),
                    None => Check::change(
                        FileChange::Link {
                            target,
                            remove_first: None,
                            attrs,
                        },
                        "create link",
                    ),
                }
            }
        })
    }

    async fn apply(&self, _ctx: &StepContext<'_>, change: FileChange) -> anyhow::Result<Outcome> {
        let path = Path::new(&self.path);
        let message = match change {
            FileChange::CreateDirectory(attrs) => {
                fs::create_dir_all(path)
                    .with_context(|| format!("creating directory {}", path.display()))?;
                attrs.apply(path)?;
                "created directory".to_string()
            }
            FileChange::CreateFile(attrs) => {
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(attrs.mode.unwrap_or(0o644))
                    .open(path)
                    .with_context(|| format!("creating {}", path.display()))?;
                attrs.apply(path)?;
                "created empty file".to_string()
            }
            FileChange::Remove { directory } => {
                if directory {
                    fs::remove_dir_all(path)
                } else {
                    fs::remove_file(path)
                }
                .with_context(|| format!("removing {}", path.display()))?;
                "removed".to_string()
            }
            FileChange::Link {
                target,
                remove_first,
                attrs,
            } => {
                match remove_first {
                    Some(true) => fs::remove_dir_all(path),
                    Some(false) => fs::remove_file(path),
                    None => Ok(()),
                }
                .with_context(|| format!("removing {} to put a link there", path.display()))?;
                replace_link(path, &target)?;
                Attrs {
                    mode: None,
                    ..attrs
                }
                .apply(path)?;
                format!("linked to {}", target.display())
            }
            FileChange::Attributes(attrs) => {
                attrs.apply(path)?;
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

fn attributes(attrs: Attrs, meta: &fs::Metadata) -> Check<FileChange> {
    let diffs = attrs.differences(meta);
    if diffs.is_empty() {
        Check::unchanged(None)
    } else {
        Check::change(FileChange::Attributes(attrs), diffs.join(", "))
    }
}

/// Points `path` at `target` atomically: a new link beside it, renamed over it.
fn replace_link(path: &Path, target: &Path) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.bosun-link-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    symlink(target, &tmp).with_context(|| format!("creating link {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming link into {}", path.display()))?;
    sync_dir(dir)
}

//! Runs `file` on the host; its arguments and their validation are the model's
//! (`bosun_model::steps::file`).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bosun_model::steps::file::{FileArgs, FileState};

use super::{Check, Outcome, StepContext, StepKind};
use crate::host::fs::{self as host_fs, Attrs, lstat};

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
            FileState::File | FileState::Touch => match meta {
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
                host_fs::create_dir_all(path)
                    .with_context(|| format!("creating directory {}", path.display()))?;
                attrs.apply(path)?;
                "created directory".to_string()
            }
            FileChange::CreateFile(attrs) => {
                host_fs::create_empty(path, attrs.mode.unwrap_or(0o644))
                    .with_context(|| format!("creating {}", path.display()))?;
                attrs.apply(path)?;
                "created empty file".to_string()
            }
            FileChange::Remove { directory } => {
                host_fs::remove(path, directory)
                    .with_context(|| format!("removing {}", path.display()))?;
                "removed".to_string()
            }
            FileChange::Link {
                target,
                remove_first,
                attrs,
            } => {
                if let Some(directory) = remove_first {
                    host_fs::remove(path, directory).with_context(|| {
                        format!("removing {} to put a link there", path.display())
                    })?;
                }
                host_fs::replace_symlink(path, &target)?;
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

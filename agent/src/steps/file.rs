//! `file`: a path is a directory, a regular file, a symlink, or absent, with a mode, owner and
//! group.
//!
//! ```toml
//! file = { path = "/etc/bosun", state = "directory", mode = "0755" }
//! file = { path = "/usr/local/bin/kubectl", state = "link", src = "/usr/local/bin/k3s" }
//! ```
//! `state = "file"` makes sure a regular file exists (created empty when missing) and sets its
//! attributes; to give it content use `copy` or `template`.

use std::fs;
use std::os::unix::fs::{OpenOptionsExt, symlink};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ActionArgs, Check, Outcome, StepContext, StepKind};
use crate::host::fs::{Attrs, lstat, sync_dir};

/// Arguments of `file`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileArgs {
    /// The path to manage.
    pub path: String,
    /// What the path must be (default `file`).
    #[serde(default)]
    pub state: FileState,
    /// Octal permission bits, e.g. "0755".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Owner, by name or numeric id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Group, by name or numeric id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// For `state = "link"`: what the link points to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    /// For `state = "link"`: replace a file or directory that stands where the link goes.
    #[serde(default)]
    pub force: bool,
}

/// What `path` must be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileState {
    /// A directory (parents created as needed).
    Directory,
    /// A regular file.
    #[default]
    File,
    /// Nothing: removed if present (directories with their content).
    Absent,
    /// A symbolic link to `src`.
    Link,
}

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

impl ActionArgs for FileArgs {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match (self.state, &self.src) {
            (FileState::Link, None) => {
                problems.push("`state = \"link\"` needs `src`, the link's target".into())
            }
            (FileState::Link, Some(_)) => {}
            (_, Some(_)) => problems.push("`src` is only for `state = \"link\"`".into()),
            (_, None) => {}
        }
        if self.state == FileState::Absent
            && (self.mode.is_some() || self.owner.is_some() || self.group.is_some())
        {
            problems
                .push("`mode`, `owner` and `group` mean nothing with `state = \"absent\"`".into());
        }
        if self.state == FileState::Link && self.mode.is_some() {
            problems.push("a symlink has no mode of its own; set `mode` on its target".into());
        }
        problems.extend(super::mode_problem(self.mode.as_deref()));
        problems
    }
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

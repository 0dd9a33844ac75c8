//! What `copy`, `template` and `line_in_file` share: making a file hold given bytes with given
//! attributes, written atomically, with a unified diff of the change.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::bail;
use similar::TextDiff;

use super::{Check, Outcome, StepContext};
use crate::host::fs::{Attrs, lstat, read_if_exists, write_atomic};

/// Files larger than this are compared but not diffed line by line.
const DIFF_LIMIT: usize = 1 << 20;

/// What `apply` has to do to a file.
#[derive(Debug)]
pub enum ContentChange {
    /// Write new content (atomically) with this mode and the attributes.
    Write {
        /// The new bytes.
        content: Vec<u8>,
        /// The mode of the new file.
        mode: u32,
        /// Owner and group.
        attrs: Attrs,
    },
    /// The content is right; only attributes differ.
    Attributes(Attrs),
}

/// Compares `dest` with `content` and `attrs`. A new file gets `attrs.mode`, or 0644; an
/// existing file keeps its mode unless `attrs.mode` says otherwise.
pub fn check(
    ctx: &StepContext<'_>,
    dest: &Path,
    content: Vec<u8>,
    attrs: Attrs,
) -> anyhow::Result<Check<ContentChange>> {
    let meta = lstat(dest)?;
    if meta.as_ref().is_some_and(|m| m.is_dir()) {
        bail!("{} is a directory; give the path of a file", dest.display());
    }
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(PathBuf::from);
    if let Some(parent) = parent.filter(|p| !p.exists()) {
        // Under --check an earlier step may be the one that would create the directory.
        if !ctx.check {
            bail!(
                "directory {} does not exist; create it first with a `file` step (state = \"directory\")",
                parent.display()
            );
        }
    }
    let old = read_if_exists(dest)?;
    let existing_mode = meta.as_ref().map(|m| m.mode() & 0o7777);
    if old.as_deref() == Some(content.as_slice()) {
        let diffs = meta
            .as_ref()
            .map(|m| attrs.differences(m))
            .unwrap_or_default();
        return Ok(if diffs.is_empty() {
            Check::unchanged(None)
        } else {
            Check::change(ContentChange::Attributes(attrs), diffs.join(", "))
        });
    }
    let diff = unified_diff(dest, old.as_deref(), &content);
    let message = match &old {
        None => format!("create ({} bytes)", content.len()),
        Some(o) => format!("update ({} → {} bytes)", o.len(), content.len()),
    };
    let mode = attrs.mode.or(existing_mode).unwrap_or(0o644);
    Ok(Check::change(
        ContentChange::Write {
            content,
            mode,
            attrs,
        },
        message,
    )
    .with_diff(Some(diff)))
}

/// Makes the change found by [`check`].
pub fn apply(dest: &Path, change: ContentChange) -> anyhow::Result<Outcome> {
    let message = match change {
        ContentChange::Write {
            content,
            mode,
            attrs,
        } => {
            write_atomic(dest, &content, mode, &attrs)?;
            format!("wrote {} bytes", content.len())
        }
        ContentChange::Attributes(attrs) => {
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

/// A unified diff (3 lines of context) of a file's old and new content; a one-line summary for
/// binary or very large content.
pub fn unified_diff(path: &Path, old: Option<&[u8]>, new: &[u8]) -> String {
    let name = path.display().to_string();
    let old_bytes = old.unwrap_or_default();
    let (Ok(old_text), Ok(new_text)) = (std::str::from_utf8(old_bytes), std::str::from_utf8(new))
    else {
        return format!(
            "Binary files {name} differ ({} → {} bytes)\n",
            old_bytes.len(),
            new.len()
        );
    };
    if old_text.len() > DIFF_LIMIT || new_text.len() > DIFF_LIMIT {
        return format!(
            "{name}: content differs ({} → {} bytes; too large to diff)\n",
            old_text.len(),
            new_text.len()
        );
    }
    let old_header = if old.is_some() {
        format!("{name} (before)")
    } else {
        "/dev/null".to_string()
    };
    TextDiff::from_lines(old_text, new_text)
        .unified_diff()
        .context_radius(3)
        .header(&old_header, &format!("{name} (after)"))
        .to_string()
}

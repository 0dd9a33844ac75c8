//! `include = { playbook = "common/base.toml" }`: the included playbook's steps, read through
//! the caller's reader (this crate does no I/O), parsed with their own file for diagnostics,
//! placed in the including step's block; its handlers join the playbook's by name.
//!
//! Paths resolve against the directory of the file that holds the include (the root's
//! directory is the caller's `base_dir`), lexically: `..` is folded without asking the file
//! system. An include cycle is refused where it closes, naming where the file was first
//! included.

use std::path::{Component, Path, PathBuf};

use super::parse::parse_partial;
use super::{Body, Diagnostic, Source, Step, Var};

/// Reads an included playbook's text (the caller's file system, a bundle, ...).
pub type ReadInclude<'a> = dyn FnMut(&Path) -> Result<String, String> + 'a;

/// A file being included, and where (for cycle messages).
struct Open {
    path: PathBuf,
    site: String,
}

/// Expands includes of a whole playbook.
pub(crate) struct Expander<'r, 'a> {
    read: &'r mut ReadInclude<'a>,
    open: Vec<Open>,
    /// Diagnostics, each with its file.
    pub diagnostics: Vec<Diagnostic>,
    /// Handlers of included playbooks, each with its file, in the order met.
    pub handlers: Vec<Step>,
    /// `register` names and handler names of included steps that failed to parse.
    pub stray_registers: Vec<String>,
    pub stray_handlers: Vec<String>,
    /// Every file read, in the order read (for bundles).
    pub files: Vec<PathBuf>,
}

impl<'r, 'a> Expander<'r, 'a> {
    pub fn new(root: &Source, root_dir: &Path, read: &'r mut ReadInclude<'a>) -> Self {
        Self {
            read,
            open: vec![Open {
                path: normalize(&root_dir.join(root_file_name(root))),
                site: root.name.clone(),
            }],
            diagnostics: Vec::new(),
            handlers: Vec::new(),
            stray_registers: Vec::new(),
            stray_handlers: Vec::new(),
            files: Vec::new(),
        }
    }

    /// Fills the block of every include among `steps` (recursively), written in `file`
    /// (`None`: the root) whose directory is `dir`.
    pub fn expand(&mut self, steps: &mut [Step], file: Option<&Source>, root: &Source, dir: &Path) {
        for step in steps {
            let Body::Block(block) = &mut step.body else {
                continue;
            };
            for part in [&mut block.steps, &mut block.rescue, &mut block.always] {
                self.expand(part, file, root, dir);
            }
            let Some(include) = block.include.clone() else {
                continue;
            };
            let here = file.unwrap_or(root);
            let path = normalize(&dir.join(&include.path));
            let (line, col) = here.line_col(include.span.start);
            let site = format!("{}:{line}:{col}", here.name);
            if let Some(first) = self.open.iter().find(|o| o.path == path) {
                self.diagnostics.push(
                    Diagnostic::new(
                        include.span.clone(),
                        format!(
                            "include cycle: `{}` is already being included (at {})",
                            include.path, first.site
                        ),
                    )
                    .with_help(format!(
                        "the chain: {} → {site}; remove one of the includes",
                        self.open
                            .iter()
                            .skip(1)
                            .map(|o| o.site.as_str())
                            .collect::<Vec<_>>()
                            .join(" → ")
                    ))
                    .in_file(file),
                );
                continue;
            }
            let text = match (self.read)(&path) {
                Ok(t) => t,
                Err(e) => {
                    self.diagnostics.push(
                        Diagnostic::new(
                            include.span.clone(),
                            format!(
                                "cannot read the included playbook `{}` ({}): {e}",
                                include.path,
                                path.display()
                            ),
                        )
                        .with_help("paths resolve against the directory of the including file")
                        .in_file(file),
                    );
                    continue;
                }
            };
            self.files.push(path.clone());
            let source = Source::new(path.display().to_string(), text);
            let parsed = parse_partial(source.clone());
            self.diagnostics.extend(
                parsed
                    .diagnostics
                    .into_iter()
                    .map(|d| d.in_file(Some(&source))),
            );
            self.stray_registers.extend(parsed.stray_registers);
            self.stray_handlers.extend(parsed.stray_handlers);
            let mut included = parsed.playbook;
            for secret in &included.secrets {
                self.diagnostics.push(
                    Diagnostic::new(
                        secret.span.clone(),
                        format!(
                            "an included playbook cannot read secrets (`{}`)",
                            secret.name
                        ),
                    )
                    .with_help(
                        "declare [secrets] in the playbook that is run; included steps see them",
                    )
                    .in_file(Some(&source)),
                );
            }
            set_file(&mut included.steps, &source);
            set_file(&mut included.handlers, &source);
            let sub_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            self.open.push(Open { path, site });
            self.expand(&mut included.steps, Some(&source), root, &sub_dir);
            self.open.pop();
            // The included playbook's own [vars] first, as defaults (whatever the includer
            // already has wins); the include's `vars` and the step's own `vars` win over them.
            let mut vars: Vec<Var> = included
                .vars
                .into_iter()
                .map(|v| Var {
                    file: Some(source.clone()),
                    default: true,
                    ..v
                })
                .collect();
            vars.extend(include.vars.iter().cloned().map(|v| Var {
                file: v.file.or_else(|| file.cloned()),
                ..v
            }));
            vars.append(&mut step.vars);
            step.vars = vars;
            block.steps = included.steps;
            self.handlers.append(&mut included.handlers);
        }
    }
}

/// Marks every step (and the steps of its blocks) as written in `source`.
fn set_file(steps: &mut [Step], source: &Source) {
    for step in steps {
        step.file = Some(source.clone());
        for v in &mut step.vars {
            v.file = Some(source.clone());
        }
        if let Body::Block(b) = &mut step.body {
            for part in [&mut b.steps, &mut b.rescue, &mut b.always] {
                set_file(part, source);
            }
        }
    }
}

/// The root's own file name, so that a root that includes itself is a cycle.
fn root_file_name(root: &Source) -> PathBuf {
    Path::new(&root.name)
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// `a/./b/../c` → `a/c`, without the file system; leading `..` are kept.
pub(crate) fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if matches!(out.components().next_back(), Some(Component::Normal(_))) {
                    out.pop();
                } else {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_folds_dots() {
        assert_eq!(normalize(Path::new("a/./b/../c")), PathBuf::from("a/c"));
        assert_eq!(normalize(Path::new("../x/../y")), PathBuf::from("../y"));
        assert_eq!(normalize(Path::new("/r/a/../b")), PathBuf::from("/r/b"));
    }
}

//! The files a playbook reads from the machine it runs on (template and copy sources, helm
//! values files), with where each is named, and the check that they are there before anything
//! runs.
//!
//! [`Playbook::local_files`] lists them; it is what a caller that ships a playbook elsewhere
//! builds on (the relative ones travel with the playbook). [`check_local_files`] resolves each
//! against a [`BaseDir`] and reports every one that is missing, at its `file:line:col`, so that
//! a run never changes half a host and then stops on a template that is not there.
//!
//! This module does no I/O: the caller hands in the function that looks at a path.
//!
//! Not listed: a path that holds Jinja (known only once rendered, checked when its step runs),
//! a URL (`unarchive.src` may be one: downloaded by the host),
//! an empty `values_files` entry (skipped by the step), and data a step reads rather than the
//! playbook's own files (`s3_sync.src`, a directory the host fills; `helm_release.chart`, which
//! names a repository chart as often as a directory).

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::DeValue;

use super::{Body, Diagnostic, Playbook, Source, Step};
use crate::jinja::is_templated;
use crate::steps::{Action, LocalFileRole};

/// One file a step reads from the machine it runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    /// The path as written in the playbook.
    pub path: String,
    /// Where the path is written (the string, quotes included).
    pub span: Range<usize>,
    /// What the file is for.
    pub role: LocalFileRole,
}

impl LocalFile {
    /// False for an absolute path: such a file is the host's, not the playbook's own, and a
    /// copy of the playbook made elsewhere does not carry it.
    pub fn is_relative(&self) -> bool {
        !Path::new(&self.path).is_absolute()
    }

    /// The path the step will read: as written when absolute, else under `base`.
    pub fn resolve(&self, base: &Path) -> PathBuf {
        base.join(&self.path)
    }
}

impl Playbook {
    /// Every local file the steps and handlers read, in the order they are written (the
    /// steps of blocks and includes too). Paths that hold Jinja and empty entries are left
    /// out (see the module doc).
    pub fn local_files(&self) -> impl Iterator<Item = &LocalFile> {
        self.local_files_with_origin().into_iter().map(|(_, f)| f)
    }

    /// [`Playbook::local_files`], each with the included playbook it is written in (`None`:
    /// this playbook's own text); its relative path resolves against that file's directory.
    pub fn local_files_with_origin(&self) -> Vec<(Option<&Source>, &LocalFile)> {
        fn walk<'a>(steps: &'a [Step], out: &mut Vec<(Option<&'a Source>, &'a LocalFile)>) {
            for step in steps {
                out.extend(step.local_files.iter().map(|f| (step.file.as_ref(), f)));
                if let Body::Block(b) = &step.body {
                    for part in [&b.steps, &b.rescue, &b.always] {
                        walk(part, out);
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.steps, &mut out);
        walk(&self.handlers, &mut out);
        out
    }
}

/// The directory relative paths resolve against, and how the user chose it (said in errors).
#[derive(Debug, Clone)]
pub struct BaseDir {
    /// The directory.
    pub path: PathBuf,
    /// How it was chosen.
    pub origin: BaseOrigin,
}

/// How a [`BaseDir`] was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseOrigin {
    /// The directory of the playbook file (the default for a playbook read from a file).
    PlaybookDir,
    /// Given with `--base-dir`.
    Flag,
    /// The current directory: the default of `--base-dir` for a playbook read from stdin.
    CurrentDir,
    /// Set by configuration; the text says by what (e.g. "the agent's playbooks_dir").
    Configured(String),
}

impl BaseDir {
    fn explain(&self) -> String {
        let dir = self.path.display();
        match &self.origin {
            BaseOrigin::PlaybookDir => {
                format!("relative paths resolve against the playbook's directory, {dir}")
            }
            BaseOrigin::Flag => format!("relative paths resolve against --base-dir {dir}"),
            BaseOrigin::CurrentDir => format!(
                "the playbook came from stdin, so relative paths resolve against --base-dir, by default the current directory ({dir}); pass --base-dir DIR to name the playbook's directory"
            ),
            BaseOrigin::Configured(by) => format!("relative paths resolve against {by}, {dir}"),
        }
    }
}

/// Which local files [`check_local_files`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every one: the check runs on the host the playbook runs on.
    All,
    /// Only relative paths: the check runs on the operator's machine, where absolute paths
    /// name the host's files, not these.
    RelativeOnly,
}

/// Checks that every local file of `playbook` (in `scope`) is a readable file once resolved
/// against `base`: one diagnostic per file that is missing, a directory, or cannot be looked
/// at. `probe` looks at a path: `Ok(true)` for a directory, `Ok(false)` for anything else
/// that exists; callers pass `|p| std::fs::metadata(p).map(|m| m.is_dir())`.
pub fn check_local_files(
    playbook: &Playbook,
    base: &BaseDir,
    scope: Scope,
    probe: impl Fn(&Path) -> io::Result<bool>,
) -> Vec<Diagnostic> {
    playbook
        .local_files_with_origin()
        .into_iter()
        .filter(|(_, f)| scope == Scope::All || f.is_relative())
        .filter_map(|(file, f)| {
            // A file named in an included playbook resolves against that playbook's directory.
            let dir = match file {
                Some(src) => Path::new(&src.name)
                    .parent()
                    .map_or_else(|| base.path.clone(), Path::to_path_buf),
                None => base.path.clone(),
            };
            let resolved = f.resolve(&dir);
            let what = f.role.describe();
            let shown = resolved.display();
            let message = match probe(&resolved) {
                Ok(false) => return None,
                Ok(true) => format!("{what} `{}` is a directory ({shown}), not a file", f.path),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    format!("{what} `{}` does not exist: no {shown}", f.path)
                }
                Err(e) => format!("{what} `{}`: cannot read {shown}: {e}", f.path),
            };
            let help = if f.is_relative() {
                base.explain()
            } else {
                "an absolute path is read as it is, on the host the playbook runs on".to_string()
            };
            Some(
                Diagnostic::new(f.span.clone(), message)
                    .with_help(help)
                    .in_file(file),
            )
        })
        .collect()
}

/// The local files named in one action's arguments (`key` is the action, `args` its value).
pub(super) fn collect(key: &str, args: &Spanned<DeValue<'_>>) -> Vec<LocalFile> {
    let Some(table) = args.get_ref().as_table() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (arg, role) in Action::local_file_args(key) {
        let Some(value) = table.get(*arg) else {
            continue;
        };
        let items: Vec<&Spanned<DeValue<'_>>> = match value.get_ref() {
            DeValue::Array(items) => items.iter().collect(),
            _ => vec![value],
        };
        for item in items {
            if let DeValue::String(path) = item.get_ref()
                && !path.is_empty()
                && !is_templated(path)
                && !path.contains("://")
            {
                out.push(LocalFile {
                    path: path.to_string(),
                    span: item.span(),
                    role: *role,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::playbook::{Source, load};

    const TEXT: &str = r#"name = "files"
[[step]]
name = "t"
template = { src = "templates/a.j2", dest = "/etc/a" }
[[step]]
name = "c"
copy = { src = "/srv/b", dest = "/etc/b" }
[[step]]
name = "inline"
copy = { content = "x", dest = "/etc/c" }
[[step]]
name = "later"
template = { src = "{{ which }}.j2", dest = "/etc/d" }
[handler]
"#;

    fn playbook() -> Playbook {
        let text = TEXT.replace("[handler]\n", "[[handler]]\nname = \"h\"\nhelm_release = { name = \"r\", chart = \"c/c\", version = \"1\", values_files = [\"values/a.yaml\", \"\"] }\n");
        load(Source::new("f.toml", text), &["which".to_string()]).unwrap()
    }

    #[test]
    fn lists_each_untemplated_file_with_its_span_and_role() {
        let p = playbook();
        let files: Vec<_> = p.local_files().collect();
        let got: Vec<(&str, &str, LocalFileRole)> = files
            .iter()
            .map(|f| (f.path.as_str(), &p.source.text[f.span.clone()], f.role))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "templates/a.j2",
                    "\"templates/a.j2\"",
                    LocalFileRole::TemplateSource
                ),
                ("/srv/b", "\"/srv/b\"", LocalFileRole::CopySource),
                (
                    "values/a.yaml",
                    "\"values/a.yaml\"",
                    LocalFileRole::ValuesFile
                ),
            ]
        );
        assert!(files[0].is_relative() && !files[1].is_relative());
        assert_eq!(
            files[1].resolve(Path::new("/base")),
            PathBuf::from("/srv/b")
        );
    }

    #[test]
    fn reports_each_missing_file_at_its_place_and_says_how_paths_resolve() {
        let p = playbook();
        let base = BaseDir {
            path: "/work".into(),
            origin: BaseOrigin::CurrentDir,
        };
        let probe = |path: &Path| match path.to_str() {
            Some("/work/values/a.yaml") => Ok(true),
            _ => Err(io::Error::from(io::ErrorKind::NotFound)),
        };
        let diags = check_local_files(&p, &base, Scope::All, probe);
        let at: Vec<(usize, usize, &str)> = diags
            .iter()
            .map(|d| {
                let (l, c) = p.source.line_col(d.span.start);
                (l, c, d.message.as_str())
            })
            .collect();
        assert_eq!(
            at,
            vec![
                (
                    4,
                    20,
                    "`template` src `templates/a.j2` does not exist: no /work/templates/a.j2"
                ),
                (7, 16, "`copy` src `/srv/b` does not exist: no /srv/b"),
                (
                    16,
                    76,
                    "`helm_release` values file `values/a.yaml` is a directory (/work/values/a.yaml), not a file"
                ),
            ]
        );
        assert!(
            diags[0]
                .help
                .as_deref()
                .unwrap()
                .contains("--base-dir, by default the current directory (/work)"),
            "{:?}",
            diags[0].help
        );
        let relative = check_local_files(&p, &base, Scope::RelativeOnly, probe);
        assert_eq!(relative.len(), 2, "the absolute /srv/b is the host's");
        let none = check_local_files(&p, &base, Scope::All, |_| Ok(false));
        assert!(none.is_empty(), "{none:?}");
    }
}

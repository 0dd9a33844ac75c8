//! Errors in a playbook, each tied to a span of its source text.
//!
//! A [`Diagnostic`] is what the user sees when a playbook is wrong: the file, the line and
//! column, the offending text underlined, what was found and what was expected. Parsing and
//! validation collect every diagnostic they can instead of stopping at the first, and hand them
//! back together as [`Diagnostics`].

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};
use serde::{Deserialize, Serialize};

/// The text of a playbook and the name it is shown under (a path, or `<stdin>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Shown in messages: the path as the user gave it.
    pub name: String,
    /// The whole text.
    pub text: Arc<str>,
}

impl Source {
    /// A source named `name` holding `text`.
    pub fn new(name: impl Into<String>, text: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            text: text.into(),
        }
    }

    /// 1-based line and column (in characters) of a byte offset; offsets past the end clamp to
    /// the end.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// One problem in a playbook, at one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Byte range of the offending text in the source.
    pub span: Range<usize>,
    /// What is wrong, in one line.
    pub message: String,
    /// What was expected or what to do, when there is something useful to say.
    pub help: Option<String>,
    /// The file `span` points into when it is not the one being loaded (an included
    /// playbook).
    pub file: Option<Source>,
}

impl Diagnostic {
    /// A diagnostic at `span`.
    pub fn new(span: Range<usize>, message: impl Into<String>) -> Self {
        Self {
            span,
            message: message.into(),
            help: None,
            file: None,
        }
    }

    /// Says that the span points into `file` (unless a file is set already).
    pub fn in_file(mut self, file: Option<&Source>) -> Self {
        if self.file.is_none() {
            self.file = file.cloned();
        }
        self
    }

    /// Adds what was expected or what to do.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// Every diagnostic found in one source, in source order.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    /// The source the spans point into.
    pub source: Source,
    /// At least one diagnostic.
    pub items: Vec<Diagnostic>,
}

/// A diagnostic resolved to a line and column, for `--output json` and the API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LocatedDiagnostic {
    /// The source's name.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// What was expected, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl Diagnostics {
    /// Diagnostics for `source`; sorts them by position so the output reads top to bottom.
    pub fn new(source: Source, mut items: Vec<Diagnostic>) -> Self {
        // The loaded file's problems first, then each included file's, each top to bottom.
        items.sort_by(|a, b| {
            let key = |d: &Diagnostic| {
                (
                    d.file.as_ref().map(|f| f.name.clone()),
                    d.span.start,
                    d.span.end,
                )
            };
            key(a).cmp(&key(b))
        });
        items.dedup();
        Self { source, items }
    }

    /// Each diagnostic with its file, line and column.
    pub fn located(&self) -> Vec<LocatedDiagnostic> {
        self.items
            .iter()
            .map(|d| {
                let source = d.file.as_ref().unwrap_or(&self.source);
                let (line, column) = source.line_col(d.span.start);
                LocatedDiagnostic {
                    file: source.name.clone(),
                    line,
                    column,
                    message: d.message.clone(),
                    help: d.help.clone(),
                }
            })
            .collect()
    }

    /// Renders every diagnostic: a `file:line:col: error: message` line (easy to grep and to
    /// jump to from an editor), then the source excerpt with the offending text underlined.
    pub fn render(&self, color: bool) -> String {
        let theme = if color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        // The excerpt's header names the file only: miette would add a column counted in
        // bytes, where ours (the first line) counts characters.
        let handler = GraphicalReportHandler::new_themed(theme)
            .with_context_lines(1)
            .without_primary_span_start();
        let mut out = String::new();
        for (d, loc) in self.items.iter().zip(self.located()) {
            out.push_str(&format!(
                "{}:{}:{}: error: {}\n",
                loc.file, loc.line, loc.column, d.message
            ));
            let source = d.file.as_ref().unwrap_or(&self.source);
            let report = Report {
                diagnostic: d,
                source: NamedSource::new(&source.name, source.text.to_string()),
            };
            // Writing into a String cannot fail.
            let _ = handler.render_report(&mut out, &report);
            out.push('\n');
        }
        let n = self.items.len();
        out.push_str(&format!(
            "{}: {n} error{} found; nothing was run\n",
            self.source.name,
            if n == 1 { "" } else { "s" }
        ));
        out
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))
    }
}

impl std::error::Error for Diagnostics {}

/// Adapter from our diagnostic to miette's renderer.
struct Report<'a> {
    diagnostic: &'a Diagnostic,
    source: NamedSource<String>,
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diagnostic.message)
    }
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diagnostic.message)
    }
}

impl std::error::Error for Report<'_> {}

impl miette::Diagnostic for Report<'_> {
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = &self.diagnostic.span;
        let len = span.end.saturating_sub(span.start).max(1);
        Some(Box::new(std::iter::once(LabeledSpan::new(
            Some("here".to_string()),
            span.start,
            len,
        ))))
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diagnostic
            .help
            .as_ref()
            .map(|h| Box::new(h.clone()) as Box<dyn fmt::Display>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_lines_and_characters() {
        let s = Source::new("x.toml", "a = 1\nbé = 2\n");
        assert_eq!(s.line_col(0), (1, 1));
        assert_eq!(s.line_col(6), (2, 1));
        // 'é' is two bytes: the '=' after "bé " is the 4th character.
        assert_eq!(s.line_col(10), (2, 4));
        assert_eq!(s.line_col(1000), (3, 1));
    }

    /// On a line with multibyte characters the only location given is ours, in characters,
    /// and the underline sits under the offending text.
    #[test]
    fn multibyte_lines_get_one_location_in_characters() {
        let src = Source::new("bad.toml", "name = \"héllo wörld\"\nbogus = 1\n");
        let start = "name = \"héllo ".len();
        let d = Diagnostics::new(
            src,
            vec![Diagnostic::new(start..start + "wörld".len(), "bad word")],
        );
        let out = d.render(false);
        assert!(out.starts_with("bad.toml:1:15: error: bad word\n"), "{out}");
        assert!(out.contains("╭─[bad.toml]"), "{out}");
        assert!(!out.contains("1:16"), "a byte column leaked: {out}");
        let text = out.lines().find(|l| l.contains("héllo")).unwrap();
        let underline = out.lines().find(|l| l.contains("──┬──")).unwrap();
        let col = |line: &str, pat: &str| line[..line.find(pat).unwrap()].chars().count();
        assert_eq!(col(underline, "─"), col(text, "wörld"), "{out}");
    }

    #[test]
    fn render_names_file_line_column_and_underlines() {
        let src = Source::new("bad.toml", "name = \"x\"\nbogus = 1\n");
        let d = Diagnostics::new(
            src,
            vec![Diagnostic::new(11..16, "unknown key `bogus`").with_help("expected one of: name")],
        );
        let out = d.render(false);
        assert!(
            out.starts_with("bad.toml:2:1: error: unknown key `bogus`\n"),
            "{out}"
        );
        assert!(out.contains("──┬──"), "{out}");
        assert!(out.contains("expected one of: name"), "{out}");
    }
}

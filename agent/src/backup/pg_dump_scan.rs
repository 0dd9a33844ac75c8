//! Row counts and content digests of every table in a `pg_dump --format=plain` stream, read as
//! the stream passes: the PostgreSQL counterpart of [`super::dump_scan`] (same digest, same
//! reason: no second read of the data, and the dump's own snapshot).
//!
//! What it reads (pg_dump's plain format):
//! - a line `CREATE TABLE name (` (also `CREATE UNLOGGED TABLE`) declares a table, so an empty
//!   table is listed with 0 rows even when no data follows;
//! - a line `COPY name (columns) FROM stdin;` starts a table's data: one row a line (COPY's text
//!   format escapes newlines, tabs and backslashes inside values), up to a line `\.`.
//!
//! `name` is kept as pg_dump writes it (`public.t`, `public."Odd name"`), quoted parts read
//! whole, so a ` (` inside a quoted identifier does not end it. A row's digest is the XXH3-128 of
//! its line, hashed as it streams (a row of any size costs no memory); a table's digest is the
//! wrapping sum over its rows, as in [`super::dump_scan`]. Not read: a function body that
//! contains a line beginning `COPY ... FROM stdin;` would be taken for data (pg_dump writes
//! bodies as dollar-quoted strings this scanner does not track); large objects (`lo_*` calls)
//! are restored by the dump but not counted.

use std::collections::BTreeMap;

use xxhash_rust::xxh3::Xxh3;

use super::dump_scan::Scan;
use super::manifest::TableStats;

/// Longest statement line kept to tell what it is (`COPY ... FROM stdin;` with its columns).
const MAX_HEAD: usize = 1 << 20;

#[derive(Debug, Default, Clone)]
struct Table {
    rows: u64,
    digest: u128,
}

/// Reads a pg_dump plain-format stream, piece by piece.
pub struct CopyScanner {
    tables: BTreeMap<String, Table>,
    /// The table whose COPY data is being read.
    copying: Option<(String, Table)>,
    /// Outside COPY: the line so far (up to [`MAX_HEAD`]); inside: its first 3 bytes.
    head: Vec<u8>,
    /// Inside COPY: bytes of the current row so far, and its hash.
    row_len: u64,
    row: Xxh3,
    line: u64,
}

impl Default for CopyScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl CopyScanner {
    /// A scanner at the start of a dump.
    pub fn new() -> CopyScanner {
        CopyScanner {
            tables: BTreeMap::new(),
            copying: None,
            head: Vec::new(),
            row_len: 0,
            row: Xxh3::new(),
            line: 1,
        }
    }

    fn take(&mut self, seg: &[u8]) {
        if self.copying.is_some() {
            self.row.update(seg);
            self.row_len += seg.len() as u64;
            let room = 3usize.saturating_sub(self.head.len());
            self.head.extend_from_slice(&seg[..seg.len().min(room)]);
        } else {
            let room = MAX_HEAD.saturating_sub(self.head.len());
            self.head.extend_from_slice(&seg[..seg.len().min(room)]);
        }
    }

    fn end_line(&mut self) -> anyhow::Result<()> {
        if let Some((_, table)) = self.copying.as_mut() {
            if self.row_len == 2 && self.head == b"\\." {
                if let Some((name, t)) = self.copying.take() {
                    self.tables.insert(name, t);
                }
            } else {
                table.rows += 1;
                table.digest = table.digest.wrapping_add(self.row.digest128());
            }
            self.row.reset();
            self.row_len = 0;
        } else if let Some(rest) = self.head.strip_prefix(b"COPY ") {
            if !self.head.ends_with(b" FROM stdin;") {
                anyhow::bail!(
                    "line {}: a COPY statement that does not read `FROM stdin;` (not pg_dump's plain format?)",
                    self.line
                );
            }
            let name = qualified_name(rest).with_context_line(self.line)?;
            let table = self.tables.remove(&name).unwrap_or_default();
            self.copying = Some((name, table));
        } else if let Some(rest) = self
            .head
            .strip_prefix(b"CREATE TABLE ")
            .or_else(|| self.head.strip_prefix(b"CREATE UNLOGGED TABLE "))
            && let Ok(name) = qualified_name(rest)
        {
            self.tables.entry(name).or_default();
        }
        self.head.clear();
        self.line += 1;
        Ok(())
    }
}

impl Scan for CopyScanner {
    fn feed(&mut self, mut piece: &[u8]) -> anyhow::Result<()> {
        while !piece.is_empty() {
            match memchr::memchr(b'\n', piece) {
                Some(n) => {
                    self.take(&piece[..n]);
                    self.end_line()?;
                    piece = &piece[n + 1..];
                }
                None => {
                    self.take(piece);
                    piece = &[];
                }
            }
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<Vec<TableStats>> {
        if let Some((name, _)) = &self.copying {
            anyhow::bail!(
                "line {}: the dump ended inside the data of table {name} (no `\\.` line)",
                self.line
            );
        }
        Ok(self
            .tables
            .into_iter()
            .map(|(name, t)| TableStats {
                name,
                rows: t.rows,
                checksum: None,
                digest: Some(format!("{:032x}", t.digest)),
            })
            .collect())
    }
}

trait LineContext<T> {
    fn with_context_line(self, line: u64) -> anyhow::Result<T>;
}

impl<T> LineContext<T> for Result<T, String> {
    fn with_context_line(self, line: u64) -> anyhow::Result<T> {
        self.map_err(|e| anyhow::anyhow!("line {line}: {e}"))
    }
}

/// The (schema-qualified) name at the start of `s`, as written: bare parts end at `.`, ` ` or
/// `(`; quoted parts at a lone `"` (`""` is a quote inside).
fn qualified_name(s: &[u8]) -> Result<String, String> {
    let mut i = 0;
    loop {
        if s.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match s.get(i) {
                    None => return Err("a quoted table name does not end".into()),
                    Some(b'"') if s.get(i + 1) == Some(&b'"') => i += 2,
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
        } else {
            while s.get(i).is_some_and(|c| !matches!(c, b'.' | b' ' | b'(')) {
                i += 1;
            }
        }
        if s.get(i) == Some(&b'.') {
            i += 1;
        } else {
            break;
        }
    }
    if i == 0 {
        return Err("no table name".into());
    }
    Ok(String::from_utf8_lossy(&s[..i]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "SET client_encoding = 'UTF8';\n\
        CREATE TABLE public.empty (\n    id integer\n);\n\
        CREATE TABLE public.\"Odd (name)\" (\n    id integer\n);\n\
        COPY public.\"Odd (name)\" (id) FROM stdin;\n1\n2\n\\.\n\
        COPY public.t (id, note) FROM stdin;\n1\tnaïve\\nline\n2\t\\\\x00ff\n\\.\n";

    fn scan(pieces: &[&[u8]]) -> anyhow::Result<Vec<TableStats>> {
        let mut s = CopyScanner::new();
        for p in pieces {
            s.feed(p)?;
        }
        s.finish()
    }

    #[test]
    fn rows_and_digests_do_not_depend_on_how_the_stream_is_cut() {
        let whole = scan(&[DUMP.as_bytes()]).unwrap();
        let names: Vec<(&str, u64)> = whole.iter().map(|t| (t.name.as_str(), t.rows)).collect();
        assert_eq!(
            names,
            [
                ("public.\"Odd (name)\"", 2),
                ("public.empty", 0),
                ("public.t", 2)
            ]
        );
        let bytes: Vec<&[u8]> = DUMP.as_bytes().chunks(3).collect();
        assert_eq!(scan(&bytes).unwrap(), whole);
        // Any changed byte of a row changes its table's digest, and only that one.
        let changed = scan(&[DUMP.replace("naïve", "naive").as_bytes()]).unwrap();
        assert_eq!(changed[0], whole[0]);
        assert_ne!(changed[2].digest, whole[2].digest);
    }

    #[test]
    fn a_dump_cut_inside_copy_data_is_an_error_naming_the_table() {
        let cut = &DUMP[..DUMP.rfind("\\.").unwrap()];
        let e = scan(&[cut.as_bytes()]).unwrap_err().to_string();
        assert!(e.contains("inside the data of table public.t"), "{e}");
        let e = scan(&[b"COPY public.t (id) TO stdout;\n"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("FROM stdin"), "{e}");
    }
}

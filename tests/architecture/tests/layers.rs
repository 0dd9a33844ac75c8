//! The layers table in ARCHITECTURE.md, held by the code.
//!
//! Every production source file of `bosun-model` (`model/src`), `bosun-agent` (`agent/src`) and
//! `bosun-control` (`control/src`) is read; each path it names through `crate::`, `super::`,
//! `bosun_model::` or `bosun_agent::` (outside comments and `#[cfg(test)]` modules) is an edge
//! from the file's top-level module to the module it names. The test fails, naming file and
//! line, when
//! - an edge is not in the table (`| crate::module | may use |` rows between the
//!   `layers:begin` and `layers:end` markers), or names a module the table does not list;
//!   where the table has rows for the submodules of a module (`agent::telemetry::sinks`),
//!   the edges between those submodules are held to them too;
//! - modules import each other in a cycle: between top-level modules, and between the sibling
//!   submodules of any module (`telemetry::metrics` ↔ `telemetry::logs`), however deep. A child
//!   using its parent's own items, or a parent using its children, is structure, not a cycle.
//! - the table lists a module that does not exist, or has a cycle itself.
//!
//! Test modules are left out: a test may reach across layers to set a scene.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates checked: (name used in the table, source dir, the name other crates use for it).
const CRATES: &[(&str, &str, &str)] = &[
    ("model", "model/src", "bosun_model"),
    ("agent", "agent/src", "bosun_agent"),
    ("control", "control/src", "bosun_control"),
];

fn root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    here.canonicalize().unwrap_or(here)
}

/// A module path inside one crate: `["telemetry", "logs"]`. The crate root is `[]`.
type ModPath = Vec<String>;

struct Crate {
    name: &'static str,
    /// Every module backed by a file, with its file.
    modules: BTreeMap<ModPath, PathBuf>,
}

fn read_crate(name: &'static str, dir: &str) -> Crate {
    let base = root().join(dir);
    let mut modules = BTreeMap::new();
    let mut stack = vec![base.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&base).unwrap();
            let mut parts: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            let last = parts.pop().unwrap();
            match last.as_str() {
                "lib.rs" | "main.rs" if parts.is_empty() => {
                    // The binary's main.rs sits beside lib.rs in the agent: name it `main`.
                    if last == "main.rs" && base.join("lib.rs").exists() {
                        parts.push("main".into());
                    }
                }
                "mod.rs" => {}
                other => parts.push(other.trim_end_matches(".rs").to_string()),
            }
            modules.insert(parts, path);
        }
    }
    Crate { name, modules }
}

/// The text of a file without comments, string contents and `#[cfg(test)]` modules, with its
/// line structure kept (so line numbers stay true).
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut block = 0usize;
    let mut in_str = false;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\n' {
            out.push('\n');
            i += 1;
            continue;
        }
        if block > 0 {
            if bytes[i..].starts_with(b"*/") {
                block -= 1;
                i += 2;
            } else if bytes[i..].starts_with(b"/*") {
                block += 1;
                i += 2;
            } else {
                i += 1;
            }
            continue;
        }
        if in_str {
            if c == b'\\' {
                i += 2;
            } else {
                if c == b'"' {
                    in_str = false;
                }
                i += 1;
            }
            continue;
        }
        if bytes[i..].starts_with(b"//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if bytes[i..].starts_with(b"/*") {
            block += 1;
            i += 2;
            continue;
        }
        if c == b'"' {
            // Raw strings (r"…", r#"…"#) hold no paths we care about; skip them whole.
            let raw_hashes = raw_prefix(&out);
            if let Some(hashes) = raw_hashes {
                let end = format!("\"{}", "#".repeat(hashes));
                let rest = &text[i + 1..];
                let len = rest.find(&end).map_or(rest.len(), |p| p + end.len());
                for ch in text[i..i + 1 + len].chars() {
                    if ch == '\n' {
                        out.push('\n');
                    }
                }
                i += 1 + len;
                continue;
            }
            in_str = true;
            i += 1;
            continue;
        }
        if c == b'\'' {
            // A char literal ('"', '\'') must not open a string; lifetimes pass through.
            if let Some(len) = char_literal_len(&bytes[i..]) {
                i += len;
                continue;
            }
        }
        let ch = text[i..].chars().next().unwrap();
        out.push(ch);
        i += ch.len_utf8();
    }
    cut_test_modules(&out)
}

/// `Some(n)` when the code before a `"` ends a raw-string prefix `r`, `r#`, `br##`….
fn raw_prefix(before: &str) -> Option<usize> {
    let trimmed = before.trim_end_matches('#');
    let hashes = before.len() - trimmed.len();
    let is_raw = trimmed.ends_with('r')
        && !trimmed[..trimmed.len() - 1]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() && c != 'b' || c == '_');
    is_raw.then_some(hashes)
}

fn char_literal_len(b: &[u8]) -> Option<usize> {
    if b.len() >= 4 && b[1] == b'\\' {
        let end = b[2..].iter().position(|&c| c == b'\'')?;
        return (end <= 10).then_some(end + 3);
    }
    let s = std::str::from_utf8(b).ok().or_else(|| {
        (1..=4)
            .rev()
            .find_map(|n| std::str::from_utf8(&b[..b.len().min(n + 2)]).ok())
    })?;
    let mut chars = s.chars();
    chars.next();
    let c = chars.next()?;
    (chars.next() == Some('\'')).then_some(2 + c.len_utf8())
}

/// Blanks `#[cfg(test)] mod … { … }` (lines kept).
fn cut_test_modules(code: &str) -> String {
    let mut out = code.to_string();
    let mut from = 0;
    while let Some(p) = out[from..].find("#[cfg(test)]") {
        let start = from + p;
        let after = &out[start + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        let is_mod = trimmed.starts_with("mod ") || trimmed.starts_with("pub(crate) mod ");
        if !is_mod {
            from = start + 1;
            continue;
        }
        let open = match out[start..].find(['{', ';']) {
            Some(o) if out.as_bytes()[start + o] == b'{' => start + o,
            _ => {
                from = start + 1;
                continue;
            }
        };
        let mut depth = 0;
        let mut end = out.len();
        for (k, c) in out[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        let blank: String = out[start..end]
            .chars()
            .map(|c| if c == '\n' { '\n' } else { ' ' })
            .collect();
        out.replace_range(start..end, &blank);
        from = end;
    }
    out
}

/// A path named in a file: where, which crate, the module path it names (may end in an item).
struct Named {
    line: usize,
    krate: &'static str,
    path: Vec<String>,
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The paths after each `prefix` (`crate::`, `super::`, `bosun_model::`) on a line, with
/// `{a, b::c}` groups expanded one level (each entry's leading segments).
fn paths_after(line: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(p) = line[from..].find(prefix) {
        let start = from + p;
        from = start + prefix.len();
        if line[..start].chars().last().is_some_and(is_ident_char) {
            continue;
        }
        let mut segs: Vec<String> = Vec::new();
        let mut rest = &line[start + prefix.len()..];
        // `super::super::x`
        if prefix == "super::" {
            let mut supers = 1;
            while let Some(r) = rest.strip_prefix("super::") {
                supers += 1;
                rest = r;
            }
            segs.extend(std::iter::repeat_n("super".to_string(), supers));
        }
        let group_paths = |rest: &str| -> Vec<Vec<String>> {
            let inner = &rest[1..];
            let mut depth = 0;
            let mut items = Vec::new();
            let mut cur = String::new();
            for c in inner.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        cur.push(c)
                    }
                    '}' if depth == 0 => break,
                    '}' => {
                        depth -= 1;
                        cur.push(c)
                    }
                    ',' if depth == 0 => items.push(std::mem::take(&mut cur)),
                    _ => cur.push(c),
                }
            }
            items.push(cur);
            items
                .iter()
                .map(|i| {
                    i.trim()
                        .split("::")
                        .map(|s| {
                            s.chars()
                                .take_while(|&c| is_ident_char(c))
                                .collect::<String>()
                        })
                        .take_while(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                })
                .filter(|v| !v.is_empty())
                .collect()
        };
        loop {
            if rest.starts_with('{') {
                for g in group_paths(rest) {
                    let mut p = segs.clone();
                    p.extend(g);
                    found.push(p);
                }
                break;
            }
            let ident: String = rest.chars().take_while(|&c| is_ident_char(c)).collect();
            if ident.is_empty() {
                if !segs.is_empty() {
                    found.push(segs);
                }
                break;
            }
            rest = &rest[ident.len()..];
            segs.push(ident);
            match rest.strip_prefix("::") {
                Some(r) => rest = r,
                None => {
                    found.push(segs);
                    break;
                }
            }
        }
    }
    found
}

/// Every path a file names, resolved to (crate, absolute module path within it).
fn named_in(krate: &'static str, module: &ModPath, text: &str) -> Vec<Named> {
    let mut named = Vec::new();
    for (n, line) in code_of(text).lines().enumerate() {
        for p in paths_after(line, "crate::") {
            named.push(Named {
                line: n + 1,
                krate,
                path: p,
            });
        }
        for p in paths_after(line, "super::") {
            // `super` of a file module `a/b.rs` ([a, b]) is [a]; of `a/mod.rs` ([a]) it is [].
            let supers = p.iter().take_while(|s| *s == "super").count();
            let mut base: Vec<String> = module.clone();
            for _ in 0..supers {
                base.pop();
            }
            base.extend(p[supers..].iter().cloned());
            named.push(Named {
                line: n + 1,
                krate,
                path: base,
            });
        }
        // The agent's binary (main.rs) names its own library as `bosun_agent::`.
        for &(other, _, extern_name) in CRATES {
            for p in paths_after(line, &format!("{extern_name}::")) {
                named.push(Named {
                    line: n + 1,
                    krate: other,
                    path: p,
                });
            }
        }
    }
    named
}

/// The table: `crate::module` → what it may use (`crate::module`, or a whole crate `model`).
struct Table {
    rows: BTreeMap<String, BTreeSet<String>>,
    /// Line of each row in ARCHITECTURE.md.
    lines: BTreeMap<String, usize>,
}

fn read_table() -> Table {
    let path = root().join("ARCHITECTURE.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let begin = text
        .find("<!-- layers:begin -->")
        .expect("ARCHITECTURE.md has no `<!-- layers:begin -->` marker");
    let end = text
        .find("<!-- layers:end -->")
        .expect("ARCHITECTURE.md has no `<!-- layers:end -->` marker");
    let first_line = text[..begin].lines().count();
    let mut rows = BTreeMap::new();
    let mut lines = BTreeMap::new();
    for (k, line) in text[begin..end].lines().enumerate() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 || !cells[1].starts_with('`') {
            continue;
        }
        let names = |cell: &str| -> Vec<String> {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect()
        };
        let module = names(cells[1])
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("ARCHITECTURE.md:{}: no module name", first_line + k));
        let uses: BTreeSet<String> = names(cells[2]).into_iter().collect();
        lines.insert(module.clone(), first_line + k);
        assert!(
            rows.insert(module.clone(), uses).is_none(),
            "ARCHITECTURE.md:{}: `{module}` has two rows",
            first_line + k
        );
    }
    assert!(
        !rows.is_empty(),
        "the layers table in ARCHITECTURE.md is empty"
    );
    Table { rows, lines }
}

/// The node a named path stands for at the table's level: `agent::steps`, or the crate
/// (`model`) for a crate root item.
fn table_node(krate: &str, path: &[String]) -> String {
    match path.first() {
        Some(top) => format!("{krate}::{top}"),
        None => krate.to_string(),
    }
}

/// Finds a cycle in a graph, as the list of nodes around it.
fn find_cycle<N: Ord + Clone>(edges: &BTreeMap<N, BTreeSet<N>>) -> Option<Vec<N>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit<N: Ord + Clone>(
        n: &N,
        edges: &BTreeMap<N, BTreeSet<N>>,
        marks: &mut BTreeMap<N, Mark>,
        stack: &mut Vec<N>,
    ) -> Option<Vec<N>> {
        match marks.get(n) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let at = stack.iter().position(|s| s == n).unwrap();
                let mut cycle = stack[at..].to_vec();
                cycle.push(n.clone());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(n.clone(), Mark::Open);
        stack.push(n.clone());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, marks, stack) {
                return Some(c);
            }
        }
        stack.pop();
        marks.insert(n.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for n in edges.keys() {
        if let Some(c) = visit(n, edges, &mut marks, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

struct Edge {
    from_file: PathBuf,
    line: usize,
    /// Table level: `agent::host` → `agent::steps`.
    from: String,
    to: String,
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

#[test]
fn every_import_is_an_edge_the_layers_table_allows_and_no_modules_form_a_cycle() {
    let table = read_table();
    let crates: Vec<Crate> = CRATES
        .iter()
        .map(|&(name, dir, _)| read_crate(name, dir))
        .collect();
    let by_name: BTreeMap<&str, &Crate> = crates.iter().map(|c| (c.name, c)).collect();
    let mut problems = Vec::new();

    // The table names modules that exist, and is itself acyclic.
    let mut existing: BTreeSet<String> = BTreeSet::new();
    for c in &crates {
        existing.insert(c.name.to_string());
        for m in c.modules.keys() {
            for depth in 1..=m.len() {
                existing.insert(format!("{}::{}", c.name, m[..depth].join("::")));
            }
        }
    }
    for (module, uses) in &table.rows {
        for name in std::iter::once(module).chain(uses) {
            if !existing.contains(name) {
                problems.push(format!(
                    "ARCHITECTURE.md:{}: the layers table names `{name}`, which does not exist",
                    table.lines[module]
                ));
            }
        }
    }
    if let Some(cycle) = find_cycle(&table.rows) {
        problems.push(format!(
            "ARCHITECTURE.md: the layers table itself has a cycle: {}",
            cycle.join(" → ")
        ));
    }

    let mut edges: Vec<Edge> = Vec::new();
    // Edges between sibling submodules (`agent::telemetry::logs` → `agent::telemetry::sinks`),
    // checked against the table where it has rows for that module's children.
    let mut sub_edges: Vec<(String, String, PathBuf, usize)> = Vec::new();
    // Per parent module (crate, path), the edges between its children, with a witness.
    let mut sibling: BTreeMap<(String, ModPath), BTreeMap<String, BTreeSet<String>>> =
        BTreeMap::new();
    let mut witness: BTreeMap<(String, ModPath, String, String), (PathBuf, usize)> =
        BTreeMap::new();
    for c in &crates {
        for (module, file) in &c.modules {
            let text = std::fs::read_to_string(file).unwrap();
            let from = table_node(c.name, module);
            if module.is_empty() {
                // The crate root (lib.rs) declares modules and re-exports; it is not a layer.
                continue;
            }
            for n in named_in(c.name, module, &text) {
                let target = by_name[n.krate];
                // Trim the path to the deepest module that exists (the rest names an item).
                let mut path = n.path.clone();
                while !path.is_empty() && !target.modules.contains_key(&path) {
                    path.pop();
                }
                let to = table_node(n.krate, &path);
                if n.krate != c.name || (path.first() != module.first() && !path.is_empty()) {
                    edges.push(Edge {
                        from_file: file.clone(),
                        line: n.line,
                        from: from.clone(),
                        to: to.clone(),
                    });
                }
                if n.krate != c.name {
                    continue;
                }
                // Siblings under the longest common parent.
                let common = module.iter().zip(&path).take_while(|(a, b)| a == b).count();
                if common < module.len() && common < path.len() {
                    let parent: ModPath = module[..common].to_vec();
                    let a = module[common].clone();
                    let b = path[common].clone();
                    sub_edges.push((
                        format!("{}::{}", c.name, module[..=common].join("::")),
                        format!("{}::{}", c.name, path[..=common].join("::")),
                        file.clone(),
                        n.line,
                    ));
                    sibling
                        .entry((c.name.to_string(), parent.clone()))
                        .or_default()
                        .entry(a.clone())
                        .or_default()
                        .insert(b.clone());
                    witness
                        .entry((c.name.to_string(), parent, a, b))
                        .or_insert((file.clone(), n.line));
                }
            }
        }
    }

    if std::env::var_os("BOSUN_LAYERS_DUMP").is_some() {
        let all: BTreeSet<(String, String)> = edges
            .iter()
            .map(|e| (e.from.clone(), e.to.clone()))
            .collect();
        for (from, to) in all {
            eprintln!("edge {from} {to}");
        }
    }
    for e in &edges {
        let allowed = table.rows.get(&e.from);
        let Some(allowed) = allowed else {
            problems.push(format!(
                "{}:{}: `{}` is not in ARCHITECTURE.md's layers table: add a row saying what it may use",
                rel(&e.from_file),
                e.line,
                e.from
            ));
            continue;
        };
        // A use of a whole crate (`model`) allows any of its modules.
        let krate = e.to.split("::").next().unwrap();
        if !allowed.contains(&e.to) && !allowed.contains(krate) {
            problems.push(format!(
                "{}:{}: `{}` may not use `{}` (ARCHITECTURE.md:{} allows: {})",
                rel(&e.from_file),
                e.line,
                e.from,
                e.to,
                table.lines[&e.from],
                allowed.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
    }

    for (from, to, file, line) in &sub_edges {
        let parent = &from[..from.rfind("::").unwrap()];
        let has_rows = table
            .rows
            .keys()
            .any(|k| k.rfind("::").is_some_and(|i| &k[..i] == parent));
        if !has_rows || from.matches("::").count() < 2 {
            continue;
        }
        match table.rows.get(from) {
            None => problems.push(format!(
                "{}:{line}: `{from}` is not in ARCHITECTURE.md's layers table, which has rows for the other modules of `{parent}`",
                rel(file)
            )),
            Some(allowed) if !allowed.contains(to) => problems.push(format!(
                "{}:{line}: `{from}` may not use `{to}` (ARCHITECTURE.md:{} allows: {})",
                rel(file),
                table.lines[from],
                allowed.iter().cloned().collect::<Vec<_>>().join(", ")
            )),
            Some(_) => {}
        }
    }

    for ((krate, parent), graph) in &sibling {
        if let Some(cycle) = find_cycle(graph) {
            let hops: Vec<String> = cycle
                .windows(2)
                .map(|w| {
                    let (f, l) =
                        &witness[&(krate.clone(), parent.clone(), w[0].clone(), w[1].clone())];
                    format!("{} → {} ({}:{l})", w[0], w[1], rel(f))
                })
                .collect();
            problems.push(format!(
                "import cycle between the modules of {krate}::{}: {}",
                if parent.is_empty() {
                    "(root)".to_string()
                } else {
                    parent.join("::")
                },
                hops.join(", ")
            ));
        }
    }

    problems.sort();
    problems.dedup();
    assert!(
        problems.is_empty(),
        "{} layering problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_path_reader_sees_groups_supers_and_skips_comments_strings_and_tests() {
    let text = r#"
use crate::a::b;
use super::{c, d::e};
// use crate::commented;
/// [`crate::doc`]
let s = "crate::in_string";
use bosun_model::steps::Action;
#[cfg(test)]
mod tests {
    use crate::tested;
}
fn f() { crate::after::call(); }
"#;
    let named = named_in("agent", &vec!["x".into(), "y".into()], text);
    let got: Vec<(usize, &str, String)> = named
        .iter()
        .map(|n| (n.line, n.krate, n.path.join("::")))
        .collect();
    assert_eq!(
        got,
        vec![
            (2, "agent", "a::b".to_string()),
            (3, "agent", "x::c".to_string()),
            (3, "agent", "x::d::e".to_string()),
            (7, "model", "steps::Action".to_string()),
            (12, "agent", "after::call".to_string()),
        ]
    );
}

#[test]
fn a_cycle_is_found_and_named() {
    let mut g: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    g.entry("a").or_default().insert("b");
    g.entry("b").or_default().insert("c");
    g.entry("c").or_default().insert("a");
    assert_eq!(find_cycle(&g), Some(vec!["a", "b", "c", "a"]));
    g.get_mut("c").unwrap().clear();
    assert_eq!(find_cycle(&g), None);
}

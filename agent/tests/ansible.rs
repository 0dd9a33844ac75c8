//! Side by side with Ansible: generated cases (seeded, 40 per module) run by `bosund apply` and
//! by `ansible-playbook` (ansible-core from PyPI in the test venv, `connection: local`) from
//! the same starting files must leave the same bytes, modes and kinds of file, and report the
//! same changed/ok/failed, on the first run and on the second.
//!
//! One playbook per tool per module holds every case (each bosun case in a block whose
//! `rescue` lets the run go on, each Ansible task with `ignore_errors`), so a module costs two
//! `ansible-playbook` runs, not two per case.
//!
//! Modules: line_in_file, block_in_file, file, copy, template, get_url (against a loopback
//! HTTP server), unarchive (tar.gz, tar.zst, tar, zip; local and by URL); directories are
//! compared as whole trees.
//!
//! Not generated, because they are deliberate differences (stated in each module's doc):
//! templates outside the subset Jinja2 and minijinja render alike (a block tag right before a
//! line end: Ansible's `trim_blocks`); `get_url` on an existing file without `checksum` or
//! `force` (Ansible makes a conditional request, bosun downloads nothing); `unarchive` over
//! files with the archive's bytes and mode but another mtime (Ansible's `tar --diff` calls that
//! a change), zip directories whose mode differs from an existing directory (unzip leaves it,
//! so Ansible never converges);
//! `file` with `state = "file"` on a missing path (bosun creates it, Ansible fails) or on a
//! symlink (Ansible follows it, bosun refuses), and `state = "touch"` on an existing path
//! (Ansible updates its times and reports a change);
//! Python-only regex syntax; a missing parent directory (Ansible creates it for `create`).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use bosun_model::event::StepStatus;
use common::Sandbox;
use serde_json::{Map, Value, json};

const CASES: usize = 40;

/// A small deterministic generator (xorshift64*), so a failing case is the same every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// What is at the case's path before the first run.
#[derive(Debug, Clone)]
enum Start {
    Missing,
    File { text: String, mode: u32 },
    Dir,
    Link(String),
}

/// One case: the starting state and the arguments, with `@P@` standing for the path, `@D@`
/// for the case's directory and `@U@` for the URL of the test's HTTP server.
#[derive(Debug)]
struct Case {
    start: Start,
    /// Further files written before the first run, relative to the case's directory
    /// (`target/x` inside a starting directory): (path, bytes, mode).
    files: Vec<Extra>,
    /// Variables of the step (bosun's step `vars`, Ansible's task `vars`).
    vars: Map<String, Value>,
    /// bosun's arguments (the action's table).
    bosun: Map<String, Value>,
    /// Ansible's module arguments.
    ansible: Map<String, Value>,
}

/// A file written before the first run: (path, bytes, mode); shown without its bytes.
struct Extra(String, Vec<u8>, u32);

impl std::fmt::Debug for Extra {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} bytes, {:04o})", self.0, self.1.len(), self.2)
    }
}

/// The observable result at a path: kind, bytes, permission bits, link target.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Missing,
    File(String, u32),
    /// A directory's bits and what it holds, by name.
    Dir(u32, Vec<(String, Seen)>),
    Link(String),
}

fn seen(path: &Path) -> Seen {
    match fs::symlink_metadata(path) {
        Err(_) => Seen::Missing,
        Ok(m) if m.file_type().is_symlink() => {
            Seen::Link(fs::read_link(path).unwrap().display().to_string())
        }
        Ok(m) if m.is_dir() => {
            let mut inside: Vec<(String, Seen)> = fs::read_dir(path)
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        seen(&e.path()),
                    )
                })
                .collect();
            inside.sort_by(|a, b| a.0.cmp(&b.0));
            Seen::Dir(m.permissions().mode() & 0o7777, inside)
        }
        Ok(m) => Seen::File(
            String::from_utf8_lossy(&fs::read(path).unwrap()).into_owned(),
            m.permissions().mode() & 0o7777,
        ),
    }
}

fn prepare(root: &Path, cases: &[Case]) {
    for (i, case) in cases.iter().enumerate() {
        let dir = root.join(format!("case-{i}"));
        fs::create_dir_all(&dir).unwrap();
        // Link targets, relative and inside the case: a link never leads out of the sandbox.
        for peer in ["peer", "peer2"] {
            fs::write(dir.join(peer), format!("{peer}\n")).unwrap();
        }
        let path = dir.join("target");
        match &case.start {
            Start::Missing => {}
            Start::File { text, mode } => {
                fs::write(&path, text).unwrap();
                fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap();
            }
            Start::Dir => fs::create_dir(&path).unwrap(),
            Start::Link(to) => symlink(to, &path).unwrap(),
        }
        for Extra(rel, bytes, mode) in &case.files {
            let at = dir.join(rel);
            fs::create_dir_all(at.parent().unwrap()).unwrap();
            fs::write(&at, bytes).unwrap();
            fs::set_permissions(&at, fs::Permissions::from_mode(*mode)).unwrap();
        }
    }
}

fn with_path(args: &Map<String, Value>, path: &Path, url: &str) -> Map<String, Value> {
    let dir = path.parent().unwrap().display().to_string();
    args.iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => Value::String(
                    s.replace("@P@", &path.display().to_string())
                        .replace("@D@", &dir)
                        .replace("@U@", url),
                ),
                other => other.clone(),
            };
            (k.clone(), v)
        })
        .collect()
}

fn status_word(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Changed => "changed",
        StepStatus::Ok => "ok",
        StepStatus::Failed => "failed",
        StepStatus::Skipped => "skipped",
    }
}

/// Runs every case through `bosund apply` (one playbook); each case's status.
fn run_bosun(sb: &Sandbox, root: &Path, module: &str, cases: &[Case], url: &str) -> Vec<String> {
    let steps: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let path = root.join(format!("case-{i}/target"));
            let mut step =
                json!({ "name": format!("case-{i}"), module: with_path(&c.bosun, &path, url) });
            if !c.vars.is_empty() {
                step["vars"] = Value::Object(c.vars.clone());
            }
            json!({
                "name": format!("case {i}"),
                "block": [step],
                "rescue": [{ "name": format!("rescued {i}"), "command": { "run": "true" } }],
            })
        })
        .collect();
    let text =
        toml::to_string(&json!({ "name": format!("vs-ansible-{module}"), "step": steps })).unwrap();
    let pb = sb.write(&format!("{module}.toml"), &text);
    let run = sb.apply(&pb, &[]);
    assert!(run.code == 0, "bosund failed as a whole: {run:#?}\n{text}");
    (0..cases.len())
        .map(|i| status_word(run.step(&format!("case-{i}")).status).to_string())
        .collect()
}

/// Runs every case through one `ansible-playbook`; each case's status.
fn run_ansible(sb: &Sandbox, root: &Path, module: &str, cases: &[Case], url: &str) -> Vec<String> {
    let mut tasks: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let path = root.join(format!("case-{i}/target"));
            let mut task = json!({
                "name": format!("case-{i}"),
                format!("ansible.builtin.{module}"): with_path(&c.ansible, &path, url),
                "register": format!("r{i}"),
                "ignore_errors": true,
            });
            if !c.vars.is_empty() {
                task["vars"] = Value::Object(c.vars.clone());
            }
            task
        })
        .collect();
    let out = sb.path(&format!("ansible-{module}.json"));
    let pairs: Vec<String> = (0..cases.len())
        .map(|i| format!("[r{i}.changed | default(false), r{i}.failed | default(false)]"))
        .collect();
    tasks.push(json!({
        "name": "results",
        "ansible.builtin.copy": {
            "dest": out.display().to_string(),
            "content": format!("{{{{ [{}] | to_json }}}}", pairs.join(", ")),
        },
    }));
    let play = json!([{ "hosts": "localhost", "connection": "local", "gather_facts": false, "tasks": tasks }]);
    // YAML is a superset of JSON: the playbook is written as JSON, quoting included.
    let site = sb.write(&format!("{module}.yml"), &play.to_string());
    let tmp = sb.path("ansible-tmp");
    fs::create_dir_all(&tmp).unwrap();
    let cfg = sb.write(
        "ansible.cfg",
        &format!(
            "[defaults]\nlocal_tmp = {0}\nremote_tmp = {0}\nretry_files_enabled = false\n",
            tmp.display()
        ),
    );
    let python = bosun_harness::venv_program("python");
    let output = Command::new(bosun_harness::venv_program("ansible-playbook"))
        .args(["-i", "localhost,", "-e"])
        .arg(format!("ansible_python_interpreter={}", python.display()))
        .arg(&site)
        .env("ANSIBLE_CONFIG", &cfg)
        .env("ANSIBLE_NOCOLOR", "1")
        .current_dir(sb.root())
        .output()
        .expect("running ansible-playbook (scripts/test installs ansible-core in the venv)");
    assert!(
        output.status.success(),
        "ansible-playbook failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Vec<(bool, bool)> =
        serde_json::from_str(&fs::read_to_string(&out).unwrap()).unwrap();
    results
        .into_iter()
        .map(|(changed, failed)| {
            match (failed, changed) {
                (true, _) => "failed",
                (false, true) => "changed",
                (false, false) => "ok",
            }
            .to_string()
        })
        .collect()
}

/// Both tools, two runs each, from the same start: every difference, described.
fn compare(module: &str, bosun_module: &str, cases: Vec<Case>) {
    compare_at(module, bosun_module, cases, "")
}

/// [`compare`], with `@U@` in arguments standing for `url`.
fn compare_at(module: &str, bosun_module: &str, cases: Vec<Case>, url: &str) {
    let sb = Sandbox::new();
    let (b_root, a_root) = (sb.path("bosun"), sb.path("ansible"));
    prepare(&b_root, &cases);
    prepare(&a_root, &cases);
    let mut differences = Vec::new();
    for run in ["first", "second"] {
        let b = run_bosun(&sb, &b_root, bosun_module, &cases, url);
        let a = run_ansible(&sb, &a_root, module, &cases, url);
        for (i, case) in cases.iter().enumerate() {
            let bs = seen(&b_root.join(format!("case-{i}/target")));
            let a_s = seen(&a_root.join(format!("case-{i}/target")));
            if b[i] != a[i] || bs != a_s {
                differences.push(format!(
                    "{run} run, case {i}: {case:?}\n  bosun:   {} {bs:?}\n  ansible: {} {a_s:?}",
                    b[i], a[i]
                ));
            }
        }
    }
    assert!(
        differences.is_empty(),
        "{} difference(s) from Ansible's {module}:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

fn lines(rng: &mut Rng, pool: &[&str]) -> Start {
    if rng.chance(10) {
        return Start::Missing;
    }
    let n = rng.below(6);
    let mut text: String = (0..n).map(|_| format!("{}\n", rng.pick(pool))).collect();
    if !text.is_empty() && rng.chance(15) {
        text.pop();
    }
    let mode = *rng.pick(&[0o644, 0o600, 0o640]);
    Start::File { text, mode }
}

fn map(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[test]
fn line_in_file_matches_ansible_lineinfile() {
    let mut rng = Rng(0x16_1f11e);
    let pool = ["a=1", "b=2", "#b=3", "[s]", "c = 4", "", "key=val", "b=7"];
    let cases = (0..CASES)
        .map(|_| {
            let start = lines(&mut rng, &pool);
            let absent = rng.chance(15);
            let backrefs = !absent && rng.chance(15);
            let regexp = if backrefs {
                json!("^(b)=(\\d)$")
            } else {
                rng.pick(&[
                    Value::Null,
                    json!("^b="),
                    json!("^#?b="),
                    json!("^a"),
                    json!("^zzz"),
                ])
                .clone()
            };
            let line = if backrefs {
                json!("\\1=\\2\\2")
            } else {
                json!(rng.pick(&["b=9", "a=1", "new=1", "[s]", "c = 4"]))
            };
            let line = if absent && regexp.is_null() {
                line
            } else if absent {
                Value::Null
            } else {
                line
            };
            let (after, before) = if absent || rng.chance(40) {
                (Value::Null, Value::Null)
            } else if rng.chance(50) {
                (
                    json!(rng.pick(&["^\\[s\\]", "EOF", "BOF", "^c", "^nomatch"])),
                    Value::Null,
                )
            } else {
                (
                    Value::Null,
                    json!(rng.pick(&["^\\[s\\]", "BOF", "^c", "^nomatch"])),
                )
            };
            let firstmatch = json!(rng.chance(20));
            let create = json!(matches!(start, Start::Missing) && rng.chance(70));
            let mode = if rng.chance(25) {
                json!("0600")
            } else {
                Value::Null
            };
            let state = json!(if absent { "absent" } else { "present" });
            let common = [
                ("path", json!("@P@")),
                ("line", line),
                ("regexp", regexp),
                ("state", state),
                ("create", create),
                ("mode", mode),
                ("backrefs", json!(backrefs)),
                ("firstmatch", firstmatch),
            ];
            let mut bosun = map(&common);
            let mut ansible = map(&common);
            for (b, a, v) in [
                ("insert_after", "insertafter", after),
                ("insert_before", "insertbefore", before),
            ] {
                if !v.is_null() {
                    bosun.insert(b.into(), v.clone());
                    ansible.insert(a.into(), v);
                }
            }
            Case {
                start,
                files: Vec::new(),
                vars: Map::new(),
                bosun,
                ansible,
            }
        })
        .collect();
    compare("lineinfile", "line_in_file", cases);
}

#[test]
fn block_in_file_matches_ansible_blockinfile() {
    let mut rng = Rng(0xb10c);
    let markers = ["# {mark} MANAGED BY BOSUN", "; {mark} cfg"];
    let cases = (0..CASES)
        .map(|_| {
            let marker = *rng.pick(&markers);
            let begin = marker.replace("{mark}", "BEGIN");
            let end = marker.replace("{mark}", "END");
            let pool = [
                "a=1",
                "[s]",
                "Match all",
                "",
                "x",
                begin.as_str(),
                end.as_str(),
                "old managed",
            ];
            let start = match lines(&mut rng, &pool) {
                // A whole old block in the middle, now and then.
                Start::File { text, mode } if rng.chance(35) => Start::File {
                    text: format!("top\n{begin}\nold\n{end}\n{text}"),
                    mode,
                },
                other => other,
            };
            let absent = rng.chance(15);
            let block = json!(rng.pick(&["x=1\ny=2", "z", "", "line\n", "a=1\n[s]"]));
            let (after, before) = if rng.chance(40) {
                (Value::Null, Value::Null)
            } else if rng.chance(50) {
                (
                    json!(rng.pick(&["^\\[s\\]", "EOF", "^Match", "^nomatch"])),
                    Value::Null,
                )
            } else {
                (
                    Value::Null,
                    json!(rng.pick(&["^\\[s\\]", "BOF", "^Match", "^nomatch"])),
                )
            };
            let create = json!(matches!(start, Start::Missing) && rng.chance(70));
            let mode = if rng.chance(25) {
                json!("0640")
            } else {
                Value::Null
            };
            let common = [
                ("path", json!("@P@")),
                ("block", block),
                ("marker", json!(marker)),
                ("state", json!(if absent { "absent" } else { "present" })),
                ("create", create),
                ("mode", mode),
            ];
            let mut bosun = map(&common);
            let mut ansible = map(&common);
            for (b, a, v) in [
                ("insert_after", "insertafter", after),
                ("insert_before", "insertbefore", before),
            ] {
                if !v.is_null() {
                    bosun.insert(b.into(), v.clone());
                    ansible.insert(a.into(), v);
                }
            }
            Case {
                start,
                files: Vec::new(),
                vars: Map::new(),
                bosun,
                ansible,
            }
        })
        .collect();
    compare("blockinfile", "block_in_file", cases);
}

#[test]
fn file_matches_ansible_file() {
    let mut rng = Rng(0xf11e);
    let cases = (0..CASES)
        .map(|_| {
            let start = match rng.below(4) {
                0 => Start::Missing,
                1 => Start::File {
                    text: "data\n".into(),
                    mode: *rng.pick(&[0o644, 0o600, 0o755]),
                },
                2 => Start::Dir,
                _ => Start::Link("peer".into()),
            };
            let state = match &start {
                // Deliberate differences (module doc): `file` on a missing path or through a
                // symlink, and `touch`.
                Start::Missing | Start::Link(_) => *rng.pick(&["directory", "absent", "link"]),
                _ => *rng.pick(&["directory", "absent", "link", "file"]),
            };
            let mode = match state {
                "directory" | "file" if rng.chance(60) => {
                    json!(rng.pick(&["0750", "0600", "0755"]))
                }
                _ => Value::Null,
            };
            let src = if state == "link" {
                json!(rng.pick(&["peer", "peer2"]))
            } else {
                Value::Null
            };
            let args = map(&[
                ("path", json!("@P@")),
                ("state", json!(state)),
                ("mode", mode),
                ("src", src),
            ]);
            Case {
                start,
                files: Vec::new(),
                vars: Map::new(),
                bosun: args.clone(),
                ansible: args,
            }
        })
        .collect();
    compare("file", "file", cases);
}

/// The generator covers what it claims: every module's cases include each outcome.
#[test]
fn the_generator_is_seeded_and_varied() {
    let mut a = Rng(7);
    let mut b = Rng(7);
    let xs: Vec<usize> = (0..50).map(|_| a.below(1000)).collect();
    let ys: Vec<usize> = (0..50).map(|_| b.below(1000)).collect();
    assert_eq!(xs, ys);
    let distinct: BTreeMap<usize, ()> = xs.iter().map(|x| (*x, ())).collect();
    assert!(distinct.len() > 40, "{xs:?}");
}

/// Lines for generated file contents (no Jinja markup: `copy` content is rendered by both).
const TEXT: &[&str] = &[
    "alpha",
    "beta=2",
    "",
    "# comment",
    "γ unicode",
    "key: value",
];

fn text(rng: &mut Rng) -> String {
    let n = rng.below(5);
    let mut t: String = (0..n).map(|_| format!("{}\n", rng.pick(TEXT))).collect();
    if !t.is_empty() && rng.chance(20) {
        t.pop();
    }
    t
}

/// A starting file for `copy`/`template`/`get_url`: missing, the wanted bytes, or others.
fn start_for(rng: &mut Rng, wanted: &str) -> Start {
    let mode = *rng.pick(&[0o644, 0o600, 0o755]);
    match rng.below(4) {
        0 => Start::Missing,
        1 => Start::File {
            text: wanted.to_string(),
            mode,
        },
        _ => Start::File {
            text: text(rng),
            mode,
        },
    }
}

fn some_mode(rng: &mut Rng) -> Value {
    if rng.chance(40) {
        json!(rng.pick(&["0600", "0640", "0755", "0644"]))
    } else {
        Value::Null
    }
}

#[test]
fn copy_matches_ansible_copy() {
    let mut rng = Rng(0xc0b1);
    let cases = (0..CASES)
        .map(|_| {
            let wanted = text(&mut rng);
            let start = start_for(&mut rng, &wanted);
            let from_src = rng.chance(50);
            let mut files = Vec::new();
            let (content, src) = if from_src {
                files.push(Extra("src".to_string(), wanted.clone().into_bytes(), 0o644));
                (Value::Null, json!("@D@/src"))
            } else {
                (json!(wanted), Value::Null)
            };
            let args = map(&[
                ("dest", json!("@P@")),
                ("content", content),
                ("src", src),
                ("mode", some_mode(&mut rng)),
            ]);
            Case {
                start,
                files,
                vars: Map::new(),
                bosun: args.clone(),
                ansible: args,
            }
        })
        .collect();
    compare("copy", "copy", cases);
}

/// Templates in the subset Jinja2 (Ansible) and minijinja (bosun) render alike: no block tag
/// right before a line end (Ansible's `trim_blocks` would eat it), common filters only.
const TEMPLATES: &[&str] = &[
    "name={{ name }}\n",
    "{{ name | upper }} has {{ items | length }} items\n",
    "items: {% for i in items %}{{ i }};{% endfor %}.\n",
    "{% if flag %}on{% else %}off{% endif %}.\nport={{ port }}\n",
    "joined={{ items | join(',') }}\n{{ missing | default('fallback') }}\n",
    "{{ name | replace('a', 'o') }} {{ port + 1 }}",
    "{% for i in items %}- {{ loop.index }} {{ i | lower }}\n{% endfor %}end\n",
    "static text only\n",
    "{{ undefined_variable }}\n",
];

#[test]
fn template_matches_ansible_template() {
    let mut rng = Rng(0x7e3b1a7e);
    let cases = (0..CASES)
        .map(|_| {
            let template = *rng.pick(TEMPLATES);
            let items: Vec<&str> = (0..rng.below(4))
                .map(|_| *rng.pick(&["Web", "db", "Cache"]))
                .collect();
            let vars = map(&[
                ("name", json!(rng.pick(&["alpha", "banana", "x"]))),
                ("items", json!(items)),
                ("flag", json!(rng.chance(50))),
                ("port", json!(rng.pick(&[80, 8080, 443]))),
            ]);
            // The wanted bytes are only known once rendered: start from a plain file or none.
            let start = start_for(&mut rng, "static text only\n");
            let args = map(&[
                ("src", json!("@D@/t.j2")),
                ("dest", json!("@P@")),
                ("mode", some_mode(&mut rng)),
            ]);
            Case {
                start,
                files: vec![Extra("t.j2".into(), template.as_bytes().to_vec(), 0o644)],
                vars,
                bosun: args.clone(),
                ansible: args,
            }
        })
        .collect();
    compare("template", "template", cases);
}

#[test]
fn get_url_matches_ansible_get_url() {
    let site = tempfile::tempdir().unwrap();
    let bodies = ["one\n", "two\ntwo\n", "", "binary\u{0}\u{1}bytes"];
    let mut sums = String::new();
    for (i, b) in bodies.iter().enumerate() {
        fs::write(site.path().join(format!("f{i}")), b).unwrap();
        sums.push_str(&format!("{}  f{i}\n", sha256_hex(b.as_bytes())));
    }
    fs::write(site.path().join("SUMS"), sums).unwrap();
    let server = bosun_harness::ArtifactServer::serve(site.path()).unwrap();
    let mut rng = Rng(0x6e7);
    let cases = (0..CASES)
        .map(|_| {
            let missing_url = rng.chance(10);
            let i = rng.below(bodies.len());
            let body = bodies[i];
            let url = if missing_url {
                "@U@/nothing-here".to_string()
            } else {
                format!("@U@/f{i}")
            };
            let mut start = start_for(&mut rng, body);
            let checksum = match rng.below(4) {
                0 => Value::Null,
                1 => json!(format!("sha256:{}", sha256_hex(body.as_bytes()))),
                2 => json!(format!("sha256:{}", "0".repeat(64))),
                _ => json!("sha256:@U@/SUMS"),
            };
            let checksum = if missing_url && checksum == json!("sha256:@U@/SUMS") {
                Value::Null
            } else {
                checksum
            };
            let force = checksum.is_null() && rng.chance(50);
            // Deliberate difference (module doc): without checksum and force, Ansible makes a
            // conditional request for an existing file; bosun leaves it alone. Only a file
            // that already matches is generated for that combination.
            if checksum.is_null()
                && !force
                && matches!(&start, Start::File { text, .. } if missing_url || text != body)
            {
                start = Start::Missing;
            }
            let args = map(&[
                ("url", json!(url)),
                ("dest", json!("@P@")),
                ("checksum", checksum),
                ("force", if force { json!(true) } else { Value::Null }),
                ("mode", some_mode(&mut rng)),
            ]);
            Case {
                start,
                files: Vec::new(),
                vars: Map::new(),
                bosun: args.clone(),
                ansible: args,
            }
        })
        .collect();
    compare_at("get_url", "get_url", cases, &server.url());
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// An archive's entries: (path, mode, content); a path ending in `/` is a directory, a
/// content starting with `->` a symlink.
type Tree = Vec<(String, u32, String)>;

fn archive_bytes(format: &str, tree: &Tree) -> Vec<u8> {
    if format == "zip" {
        use std::io::Write;
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (path, m, content) in tree {
            let opts = zip::write::SimpleFileOptions::default()
                .unix_permissions(*m)
                .last_modified_time(
                    zip::DateTime::from_date_and_time(2024, 1, 2, 3, 4, 6).unwrap(),
                );
            if let Some(dir) = path.strip_suffix('/') {
                w.add_directory(dir, opts).unwrap();
            } else {
                w.start_file(path.as_str(), opts).unwrap();
                w.write_all(content.as_bytes()).unwrap();
            }
        }
        return w.finish().unwrap().into_inner();
    }
    let mut b = tar::Builder::new(Vec::new());
    for (path, m, content) in tree {
        let mut h = tar::Header::new_gnu();
        h.set_mode(*m);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_username("root").unwrap();
        h.set_groupname("root").unwrap();
        if let Some(target) = content.strip_prefix("->") {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, path, target).unwrap();
        } else if path.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            b.append_data(&mut h, path, &[][..]).unwrap();
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(content.len() as u64);
            b.append_data(&mut h, path, content.as_bytes()).unwrap();
        }
    }
    let tar = b.into_inner().unwrap();
    match format {
        "tar.gz" => {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&tar).unwrap();
            gz.finish().unwrap()
        }
        "tar.zst" => zstd::encode_all(&tar[..], 3).unwrap(),
        _ => tar,
    }
}

#[test]
fn unarchive_matches_ansible_unarchive() {
    let site = tempfile::tempdir().unwrap();
    let server = bosun_harness::ArtifactServer::serve(site.path()).unwrap();
    let mut rng = Rng(0xa2c41e);
    let cases = (0..CASES)
        .enumerate()
        .map(|(n, _)| {
            let format = *rng.pick(&["tar.gz", "tar.zst", "zip", "tar"]);
            // unzip leaves the mode of a directory that exists already as it is, and Ansible
            // then reports `changed` on every run: zip archives keep their directories 0755.
            let top = if format == "zip" {
                0o755
            } else {
                *rng.pick(&[0o755, 0o750])
            };
            let mut tree: Tree = vec![("app/".into(), top, String::new())];
            if rng.chance(60) {
                tree.push(("app/sub/".into(), 0o755, String::new()));
            }
            let subdir = tree.len() > 1;
            for f in 0..1 + rng.below(4) {
                let dir = if subdir && rng.chance(50) {
                    "app/sub"
                } else {
                    "app"
                };
                tree.push((
                    format!("{dir}/f{f}"),
                    *rng.pick(&[0o644, 0o600, 0o755]),
                    text(&mut rng),
                ));
            }
            if format != "zip" && rng.chance(30) {
                tree.push(("app/link".into(), 0o777, "->f0".into()));
            }
            let bytes = archive_bytes(format, &tree);
            let by_url = rng.chance(20);
            let (src, checksum) = if by_url {
                let name = format!("a{n}.{format}");
                fs::write(site.path().join(&name), &bytes).unwrap();
                (
                    json!(format!("@U@/{name}")),
                    json!(format!("sha256:{}", sha256_hex(&bytes))),
                )
            } else {
                (json!(format!("@D@/archive.{format}")), Value::Null)
            };
            let mut files = vec![Extra(format!("archive.{format}"), bytes, 0o644)];
            // The start: no directory (both fail), an empty one, or an earlier unpacking with
            // a difference (content or mode: equal bytes and mode but another mtime would be a
            // change for Ansible's `tar --diff` and not for bosun, see the module doc).
            let start = if rng.chance(8) {
                Start::Missing
            } else {
                Start::Dir
            };
            if matches!(start, Start::Dir) && rng.chance(50) {
                let (path, mode, content) = tree
                    .iter()
                    .rfind(|(p, _, c)| !p.ends_with('/') && !c.starts_with("->"))
                    .unwrap()
                    .clone();
                let (content, mode) = if rng.chance(50) {
                    (format!("{content}changed\n"), mode)
                } else {
                    (content, if mode == 0o600 { 0o644 } else { 0o600 })
                };
                files.push(Extra(format!("target/{path}"), content.into_bytes(), mode));
                if rng.chance(50) {
                    files.push(Extra("target/app/extra".into(), b"mine\n".to_vec(), 0o644));
                }
            }
            let creates = if rng.chance(15) {
                json!(rng.pick(&["@P@/app", "@P@/app/none"]))
            } else {
                Value::Null
            };
            let common = [("dest", json!("@P@")), ("creates", creates)];
            let mut bosun = map(&common);
            bosun.insert("src".into(), src.clone());
            if !checksum.is_null() {
                bosun.insert("checksum".into(), checksum);
            }
            let mut ansible = map(&common);
            ansible.insert("src".into(), src);
            ansible.insert("remote_src".into(), json!(true));
            Case {
                start,
                files,
                vars: Map::new(),
                bosun,
                ansible,
            }
        })
        .collect();
    compare_at("unarchive", "unarchive", cases, &server.url());
}

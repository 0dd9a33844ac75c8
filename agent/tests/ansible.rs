//! Side by side with Ansible: generated cases (seeded, 40 per module) run by `bosund apply` and
//! by `ansible-playbook` (ansible-core from PyPI in the test venv, `connection: local`) from
//! the same starting files must leave the same bytes, modes and kinds of file, and report the
//! same changed/ok/failed, on the first run and on the second.
//!
//! One playbook per tool per module holds every case (each bosun case in a block whose
//! `rescue` lets the run go on, each Ansible task with `ignore_errors`), so a module costs two
//! `ansible-playbook` runs, not two per case.
//!
//! Not generated, because they are deliberate differences (stated in each module's doc):
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

/// One case: the starting state and the arguments, with `@P@` standing for the path.
#[derive(Debug)]
struct Case {
    start: Start,
    /// bosun's arguments (the action's table).
    bosun: Map<String, Value>,
    /// Ansible's module arguments.
    ansible: Map<String, Value>,
}

/// The observable result at a path: kind, bytes, permission bits, link target.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Missing,
    File(String, u32),
    Dir(u32),
    Link(String),
}

fn seen(path: &Path) -> Seen {
    match fs::symlink_metadata(path) {
        Err(_) => Seen::Missing,
        Ok(m) if m.file_type().is_symlink() => {
            Seen::Link(fs::read_link(path).unwrap().display().to_string())
        }
        Ok(m) if m.is_dir() => Seen::Dir(m.permissions().mode() & 0o7777),
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
    }
}

fn with_path(args: &Map<String, Value>, path: &Path) -> Map<String, Value> {
    args.iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => Value::String(s.replace("@P@", &path.display().to_string())),
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
fn run_bosun(sb: &Sandbox, root: &Path, module: &str, cases: &[Case]) -> Vec<String> {
    let steps: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let path = root.join(format!("case-{i}/target"));
            json!({
                "name": format!("case {i}"),
                "block": [{ "name": format!("case-{i}"), module: with_path(&c.bosun, &path) }],
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
fn run_ansible(sb: &Sandbox, root: &Path, module: &str, cases: &[Case]) -> Vec<String> {
    let mut tasks: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let path = root.join(format!("case-{i}/target"));
            json!({
                "name": format!("case-{i}"),
                format!("ansible.builtin.{module}"): with_path(&c.ansible, &path),
                "register": format!("r{i}"),
                "ignore_errors": true,
            })
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
    let sb = Sandbox::new();
    let (b_root, a_root) = (sb.path("bosun"), sb.path("ansible"));
    prepare(&b_root, &cases);
    prepare(&a_root, &cases);
    let mut differences = Vec::new();
    for run in ["first", "second"] {
        let b = run_bosun(&sb, &b_root, bosun_module, &cases);
        let a = run_ansible(&sb, &a_root, module, &cases);
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

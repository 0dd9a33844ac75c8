//! Side by side with Ansible for the kinds that change the system: `group`, `user` (ansible-core)
//! and `sysctl` (`ansible.posix.sysctl`). Generated cases (seeded, [`CASES`] per module, varied
//! arguments and starting states) run by `bosund apply` and by `ansible-playbook` (the test
//! venv's ansible-core, copied into the box with its dependencies and run by the box's Python,
//! `connection: local`) inside one booted Debian box ([`HostBox`]); never on the machine running
//! the tests. Each tool starts from the same state (the account files and `/home` are put back
//! from a snapshot between the tools) and runs twice; after each run the whole `/etc/passwd`,
//! `/etc/group`, `/etc/shadow`, `/etc/gshadow`, `/etc/subuid`, `/etc/subgid`, the homes (path,
//! kind, mode, owner) or the sysctl files (bytes, mode) and running values must be the same, and
//! every case must report the same changed/ok/failed.
//!
//! One playbook per tool per module per run holds every case (bosun: each case in a block whose
//! `rescue` lets the run go on; Ansible: `ignore_errors`).
//!
//! `sysctl` runs in a network namespace per tool (fresh kernel defaults for `net.*`, which the
//! kernel keeps per namespace) with a writable `/proc` of its own, and uses `net.*` keys only.
//! Its cases share a few keys across their files (as two files in `/etc/sysctl.d` may on a
//! real host), so a later case's reload can undo an earlier one's running value and the
//! earlier case reports `changed` again on the second run: for both tools alike.
//!
//! Not generated, being deliberate differences (stated in the kinds' docs): arguments bosun
//! refuses at validation (`append` without `groups`, keys with `state = "absent"`), unknown
//! sysctl keys (bosun fails before changing anything; Ansible writes the file, then fails).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use bosun_harness::{BoxSpec, HostBox};
use bosun_model::event::StepStatus;
use common::{BOSUND, Run};
use serde_json::{Map, Value, json};

const CASES: usize = 36;
/// The rootfs of `system.rs` (the same package list: one cached tarball).
const PACKAGES: &[&str] = &["procps", "python3"];
const ENV: &[(&str, &str)] = &[("BOSUN_IMDS_ENDPOINT", "http://127.0.0.1:1")];
/// What ansible-core needs from the venv's site-packages.
const ANSIBLE_PACKAGES: &[&str] = &[
    "ansible",
    "jinja2",
    "markupsafe",
    "yaml",
    "_yaml",
    "pyyaml",
    "cryptography",
    "cffi",
    "_cffi_backend",
    "pycparser",
    "packaging",
    "resolvelib",
];
/// The files the account kinds change, compared whole.
const ACCOUNT_FILES: &[&str] = &[
    "/etc/passwd",
    "/etc/group",
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/subuid",
    "/etc/subgid",
];

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

/// One generated case: a shell line that makes its starting state, and the arguments.
#[derive(Debug)]
struct Case {
    start: String,
    args: Map<String, Value>,
}

fn map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn boot() -> HostBox {
    HostBox::available().expect("host box prerequisites");
    let hb = HostBox::boot_with(&BoxSpec::new().packages(PACKAGES)).expect("booting a host box");
    hb.copy_in(Path::new(BOSUND), "/usr/local/bin/bosund")
        .unwrap();
    // ansible-core and its dependencies, from the venv: pure Python or built for CPython 3.11,
    // the box's Python (Debian bookworm's, the one scripts/test's venv is made with in CI).
    let venv_python = bosun_harness::venv_program("python");
    let site = Command::new(&venv_python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ])
        .output()
        .expect("asking the venv's python for its site-packages");
    let site = PathBuf::from(String::from_utf8_lossy(&site.stdout).trim());
    let dest = hb.path("/opt/ansible/site");
    std::fs::create_dir_all(&dest).unwrap();
    for entry in std::fs::read_dir(&site).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().to_lowercase();
        if ANSIBLE_PACKAGES.iter().any(|p| {
            name == *p
                || name.starts_with(&format!("{p}-"))
                || name.starts_with(&format!("{p}."))
                || name.starts_with(&format!("{p}_core"))
        }) {
            copy(&entry.path(), &dest);
        }
    }
    let collections = std::env::var_os("BOSUN_TEST_ANSIBLE_COLLECTIONS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/bosun/ansible-collections")
        });
    assert!(
        collections
            .join("ansible_collections/ansible/posix/plugins/modules/sysctl.py")
            .is_file(),
        "ansible.posix is not in {}: run scripts/test, which installs it with ansible-galaxy",
        collections.display()
    );
    let dest = hb.path("/opt/ansible/collections");
    std::fs::create_dir_all(&dest).unwrap();
    copy(&collections.join("ansible_collections"), &dest);
    hb
}

fn copy(from: &Path, into: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(into)
        .status()
        .unwrap();
    assert!(ok.success(), "cp -a {} {}", from.display(), into.display());
}

fn sh(hb: &HostBox, script: &str) -> String {
    hb.sh(script).unwrap_or_else(|e| panic!("{script}: {e:#}"))
}

/// The argv prefix that runs a command in network namespace `ns` with a writable `/proc`.
fn in_netns(ns: &str) -> Vec<String> {
    [
        "ip",
        "netns",
        "exec",
        ns,
        "unshare",
        "--mount",
        "sh",
        "-c",
        "mount -t proc proc /proc && exec \"$@\"",
        "sh",
    ]
    .map(str::to_string)
    .to_vec()
}

fn status_word(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Changed => "changed",
        StepStatus::Ok => "ok",
        StepStatus::Failed => "failed",
        StepStatus::Skipped => "skipped",
    }
}

fn run_bosun(hb: &HostBox, prefix: &[String], module: &str, cases: &[Case]) -> Vec<String> {
    let steps: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "name": format!("case {i}"),
                "block": [{ "name": format!("case-{i}"), module: c.args }],
                "rescue": [{ "name": format!("rescued {i}"), "command": { "run": "true" } }],
            })
        })
        .collect();
    let text =
        toml::to_string(&json!({ "name": format!("vs-ansible-{module}"), "step": steps })).unwrap();
    let path = format!("/root/{module}.toml");
    hb.write_file(&path, text.as_bytes(), 0o644).unwrap();
    let mut argv: Vec<String> = prefix.to_vec();
    argv.extend(["bosund", "apply", &path, "--output", "json"].map(str::to_string));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let run = Run::from_command(hb.command(&argv, ENV), None);
    assert_eq!(
        run.code, 0,
        "bosund failed as a whole: {}\n{text}",
        run.stderr
    );
    (0..cases.len())
        .map(|i| status_word(run.step(&format!("case-{i}")).status).to_string())
        .collect()
}

fn run_ansible(
    hb: &HostBox,
    prefix: &[String],
    module: &str,
    fqcn: &str,
    cases: &[Case],
) -> Vec<String> {
    let mut tasks: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "name": format!("case-{i}"),
                fqcn: c.args,
                "register": format!("r{i}"),
                "ignore_errors": true,
            })
        })
        .collect();
    let out = format!("/root/ansible-{module}.json");
    let pairs: Vec<String> = (0..cases.len())
        .map(|i| format!("[r{i}.changed | default(false), r{i}.failed | default(false)]"))
        .collect();
    tasks.push(json!({
        "name": "results",
        "ansible.builtin.copy": { "dest": out, "content": format!("{{{{ [{}] | to_json }}}}", pairs.join(", ")) },
    }));
    let play = json!([{ "hosts": "localhost", "connection": "local", "gather_facts": false, "tasks": tasks }]);
    let site = format!("/root/{module}.yml");
    hb.write_file(&site, play.to_string().as_bytes(), 0o644)
        .unwrap();
    let mut argv: Vec<String> = prefix.to_vec();
    argv.extend(
        [
            "python3",
            "-m",
            "ansible.cli.playbook",
            "-i",
            "localhost,",
            "-e",
            "ansible_python_interpreter=/usr/bin/python3",
            &site,
        ]
        .map(str::to_string),
    );
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let env = [
        ("PYTHONPATH", "/opt/ansible/site"),
        ("ANSIBLE_COLLECTIONS_PATH", "/opt/ansible/collections"),
        ("ANSIBLE_NOCOLOR", "1"),
        ("ANSIBLE_RETRY_FILES_ENABLED", "0"),
        ("ANSIBLE_LOCALHOST_WARNING", "0"),
    ];
    let output = hb.command(&argv, &env).output().unwrap();
    assert!(
        output.status.success(),
        "ansible-playbook failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Vec<(bool, bool)> =
        serde_json::from_str(&std::fs::read_to_string(hb.path(&out)).unwrap()).unwrap();
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

/// What the tools leave, for comparison: named parts of the box's state.
type State = Vec<(String, String)>;

/// Runs both tools twice from the same start (`reset` then each case's start line) and
/// returns every difference, described.
#[allow(clippy::too_many_arguments)]
fn compare(
    hb: &HostBox,
    module: &str,
    fqcn: &str,
    cases: &[Case],
    bosun_cases: &[Case],
    reset: &dyn Fn(&str),
    prefix: &dyn Fn(&str) -> Vec<String>,
    state: &dyn Fn(&str) -> State,
) -> Vec<String> {
    let start: String = cases.iter().map(|c| format!("{}\n", c.start)).collect();
    let mut seen: Vec<(Vec<String>, State)> = Vec::new();
    for tool in ["bosun", "ansible"] {
        reset(tool);
        sh(hb, &format!("set -e\n{start}"));
        for _run in 0..2 {
            let statuses = if tool == "bosun" {
                run_bosun(hb, &prefix(tool), module, bosun_cases)
            } else {
                run_ansible(hb, &prefix(tool), module, fqcn, cases)
            };
            seen.push((statuses, state(tool)));
        }
    }
    assert_varied(module, &seen[0].0, &seen[1].0);
    let mut differences = Vec::new();
    for run in 0..2 {
        let (b, bs) = &seen[run];
        let (a, a_s) = &seen[2 + run];
        let which = ["first", "second"][run];
        for (i, case) in cases.iter().enumerate() {
            if b[i] != a[i] {
                differences.push(format!(
                    "{module}, {which} run, case {i}: bosun {} ansible {}: {case:?}",
                    b[i], a[i]
                ));
            }
        }
        for ((name, bv), (_, av)) in bs.iter().zip(a_s) {
            if bv != av {
                differences.push(format!(
                    "{module}, {which} run, {name} differs:\n--- bosun\n{bv}\n--- ansible\n{av}"
                ));
            }
        }
    }
    differences
}

/// The generated cases exercise every outcome: on the first run some change, some find
/// nothing to do and some fail; on the second run nothing changes that succeeded before.
fn assert_varied(module: &str, first: &[String], second: &[String]) {
    let count = |run: &[String], word: &str| run.iter().filter(|s| s.as_str() == word).count();
    eprintln!(
        "{module}: first run changed {} ok {} failed {}; second run changed {} ok {} failed {}",
        count(first, "changed"),
        count(first, "ok"),
        count(first, "failed"),
        count(second, "changed"),
        count(second, "ok"),
        count(second, "failed")
    );
    assert!(
        count(first, "changed") >= 5 && count(first, "ok") >= 2 && count(first, "failed") >= 1,
        "{module}: {first:?}"
    );
    assert!(
        count(second, "ok") >= count(first, "changed") / 2,
        "{module}: {second:?}"
    );
}

fn account_state(hb: &HostBox) -> State {
    let mut out: State = ACCOUNT_FILES
        .iter()
        .map(|f| {
            (
                f.to_string(),
                std::fs::read_to_string(hb.path(f)).unwrap_or_default(),
            )
        })
        .collect();
    out.push((
        "homes".into(),
        sh(
            hb,
            "find /home /srv /opt/homes -printf '%p %y %m %u %g\\n' 2>/dev/null | sort; true",
        ),
    ));
    out
}

/// Snapshot of the account files and homes, taken once; put back before each tool.
const SNAPSHOT: &str = "set -e; mkdir -p /root/base; touch /etc/subuid /etc/subgid
groupadd -g 3900 pa; groupadd -g 3901 pb; groupadd -g 3902 pc
cp -a /etc/passwd /etc/group /etc/shadow /etc/gshadow /etc/subuid /etc/subgid /root/base/
tar -C / -cf /root/base/home.tar home";
const RESTORE: &str = "set -e; cp -a /root/base/passwd /root/base/group /root/base/shadow /root/base/gshadow /root/base/subuid /root/base/subgid /etc/
rm -rf /home /srv /opt/homes; tar -C / -xf /root/base/home.tar; rm -f /var/mail/*";

fn group_cases(rng: &mut Rng) -> Vec<Case> {
    (0..CASES)
        .map(|i| {
            let name = format!("gr{i}");
            let gid = 5000 + 3 * i;
            let start = match rng.below(4) {
                0 => String::new(),
                1 => format!("groupadd -g {gid} {name}"),
                2 => format!("groupadd {name}"),
                _ => format!("groupadd -r {name}"),
            };
            let mut args = map(json!({ "name": name }));
            if rng.chance(20) {
                args.insert("state".into(), json!("absent"));
            } else {
                match rng.below(5) {
                    0 | 1 => {}
                    2 => {
                        args.insert("gid".into(), json!(gid));
                    }
                    3 => {
                        args.insert("gid".into(), json!(gid + 1));
                    }
                    // Taken by `users`: groupadd/groupmod refuse it.
                    _ => {
                        args.insert("gid".into(), json!(100));
                    }
                }
                if rng.chance(30) {
                    args.insert("system".into(), json!(true));
                }
            }
            Case { start, args }
        })
        .collect()
}

fn user_cases(rng: &mut Rng) -> Vec<Case> {
    let shells = ["/bin/bash", "/bin/sh", "/usr/sbin/nologin"];
    let pool = ["pa", "pb", "pc"];
    (0..CASES)
        .map(|i| {
            let name = format!("us{i}");
            let uid = 6000 + 3 * i;
            let mut start = Vec::new();
            if rng.chance(30) {
                start.push(format!("groupadd {name}"));
            }
            if rng.chance(60) {
                let mut line = format!("useradd -u {uid} -s {}", rng.pick(&shells));
                if start.is_empty() {
                    line.push_str(" -U");
                } else {
                    line.push_str(" -N");
                }
                let n = rng.below(3);
                if n > 0 {
                    let groups: Vec<&str> = pool[..n].to_vec();
                    line.push_str(&format!(" -G {}", groups.join(",")));
                }
                if rng.chance(50) {
                    line.push_str(" -m");
                } else {
                    line.push_str(" -M");
                }
                if rng.chance(40) {
                    line.push_str(&format!(" -c 'User {i}'"));
                }
                start.push(format!("{line} {name}"));
            }
            let mut args = map(json!({ "name": name }));
            if rng.chance(15) {
                args.insert("state".into(), json!("absent"));
                if rng.chance(50) {
                    args.insert("remove".into(), json!(true));
                }
                return Case {
                    start: start.join("; "),
                    args,
                };
            }
            match rng.below(4) {
                0 => {
                    args.insert("uid".into(), json!(uid));
                }
                1 => {
                    args.insert("uid".into(), json!(uid + 1));
                }
                _ => {}
            }
            match rng.below(4) {
                0 => {
                    args.insert("group".into(), json!(*rng.pick(&pool)));
                }
                1 => {
                    args.insert("group".into(), json!("no-such-group"));
                }
                _ => {}
            }
            match rng.below(4) {
                0 => {
                    args.insert("groups".into(), json!([]));
                }
                1 | 2 => {
                    let n = 1 + rng.below(3);
                    let g: Vec<&str> = pool.iter().copied().skip(rng.below(3)).take(n).collect();
                    let g = if g.is_empty() { vec!["pc"] } else { g };
                    args.insert("groups".into(), json!(g));
                    if rng.chance(50) {
                        args.insert("append".into(), json!(true));
                    }
                }
                _ => {}
            }
            if rng.chance(50) {
                args.insert("shell".into(), json!(*rng.pick(&shells)));
            }
            match rng.below(5) {
                0 => {
                    args.insert("home".into(), json!(format!("/home/{name}")));
                }
                1 => {
                    args.insert("home".into(), json!(format!("/srv/{name}")));
                }
                2 => {
                    args.insert("home".into(), json!(format!("/opt/homes/{name}")));
                }
                _ => {}
            }
            if rng.chance(30) {
                args.insert(
                    "comment".into(),
                    json!(rng.pick(&["User X", "Ops, team", ""])),
                );
            }
            if rng.chance(25) {
                args.insert("system".into(), json!(true));
            }
            match rng.below(4) {
                0 => {
                    args.insert("create_home".into(), json!(false));
                }
                1 => {
                    args.insert("create_home".into(), json!(true));
                }
                _ => {}
            }
            Case {
                start: start.join("; "),
                args,
            }
        })
        .collect()
}

/// `net.*` settings the kernel keeps per network namespace, with values to pick from.
const SYSCTLS: &[(&str, &[&str])] = &[
    ("net.ipv4.ip_forward", &["0", "1", "yes", "false"]),
    ("net.ipv4.tcp_fin_timeout", &["30", "45", "60"]),
    ("net.ipv4.tcp_keepalive_time", &["600", "7200"]),
    ("net.core.somaxconn", &["128", "1024", "4096"]),
    (
        "net.ipv4.ip_local_port_range",
        &["20000 60000", "32768\t60999", "32768 60999"],
    ),
    ("net.ipv4.tcp_syncookies", &["0", "1"]),
];

fn sysctl_cases(rng: &mut Rng) -> Vec<Case> {
    (0..CASES)
        .map(|i| {
            let file = format!("/etc/sysctl.d/case-{i}.conf");
            let (key, values) = *rng.pick(SYSCTLS);
            let mut lines = Vec::new();
            if !rng.chance(25) {
                for _ in 0..rng.below(6) {
                    let (k, vs) = *rng.pick(SYSCTLS);
                    let v = rng.pick(vs);
                    lines.push(match rng.below(6) {
                        0 => format!("# about {k}"),
                        1 => "; old style".to_string(),
                        2 => String::new(),
                        3 => format!("  {k} = {v}  "),
                        _ => format!("{k}={v}"),
                    });
                }
                if rng.chance(50) {
                    lines.push(format!("{key} = {}", rng.pick(values)));
                }
            }
            let start = if lines.is_empty() && rng.chance(50) {
                format!("rm -f {file}")
            } else {
                let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
                let mode = rng.pick(&["644", "600"]);
                format!(
                    "printf '%s' '{}' > {file}; chmod {mode} {file}",
                    text.replace('\'', "'\\''")
                )
            };
            let mut args = map(json!({ "name": key, "sysctl_file": file }));
            if rng.chance(20) {
                args.insert("state".into(), json!("absent"));
            } else {
                let v = *rng.pick(values);
                let value = match v {
                    "yes" => json!(true),
                    "false" => json!(false),
                    _ if rng.chance(30) && v.parse::<i64>().is_ok() => {
                        json!(v.parse::<i64>().unwrap())
                    }
                    _ => json!(v),
                };
                args.insert("value".into(), value);
            }
            if rng.chance(30) {
                args.insert("reload".into(), json!(false));
            }
            Case { start, args }
        })
        .collect()
}

/// bosun's arguments for a sysctl case (`file`, not `sysctl_file`).
fn for_bosun(cases: &[Case]) -> Vec<Case> {
    cases
        .iter()
        .map(|c| {
            let mut args = c.args.clone();
            if let Some(f) = args.remove("sysctl_file") {
                args.insert("file".into(), f);
            }
            Case {
                start: c.start.clone(),
                args,
            }
        })
        .collect()
}

#[test]
fn group_user_and_sysctl_match_ansible_in_a_booted_debian() {
    let hb = boot();
    sh(&hb, SNAPSHOT);
    let mut rng = Rng(0x16a0_5eed);
    let mut differences = Vec::new();
    let reset_accounts = |_: &str| {
        sh(&hb, RESTORE);
    };
    let no_prefix = |_: &str| Vec::new();
    let accounts = |_: &str| account_state(&hb);

    let groups = group_cases(&mut rng);
    differences.extend(compare(
        &hb,
        "group",
        "ansible.builtin.group",
        &groups,
        &groups,
        &reset_accounts,
        &no_prefix,
        &accounts,
    ));
    let users = user_cases(&mut rng);
    differences.extend(compare(
        &hb,
        "user",
        "ansible.builtin.user",
        &users,
        &users,
        &reset_accounts,
        &no_prefix,
        &accounts,
    ));

    let sysctls = sysctl_cases(&mut rng);
    let bosun_sysctls = for_bosun(&sysctls);
    let netns = |tool: &str| format!("bosun-vs-{tool}");
    let reset_sysctl = |tool: &str| {
        sh(
            &hb,
            &format!(
                "ip netns del {0} 2>/dev/null; ip netns add {0}; rm -f /etc/sysctl.d/case-*.conf",
                netns(tool)
            ),
        );
    };
    let prefix = |tool: &str| in_netns(&netns(tool));
    let sysctl_state = |tool: &str| -> State {
        let mut out: State = (0..CASES)
            .map(|i| {
                let f = format!("/etc/sysctl.d/case-{i}.conf");
                let mode = sh(&hb, &format!("stat -c %a {f} 2>/dev/null; true"));
                (
                    f.clone(),
                    format!(
                        "{mode}{}",
                        std::fs::read_to_string(hb.path(&f)).unwrap_or_default()
                    ),
                )
            })
            .collect();
        let keys: Vec<String> = SYSCTLS
            .iter()
            .map(|(k, _)| format!("/proc/sys/{}", k.replace('.', "/")))
            .collect();
        out.push((
            "running values".into(),
            sh(
                &hb,
                &format!("ip netns exec {} cat {}", netns(tool), keys.join(" ")),
            ),
        ));
        out
    };
    differences.extend(compare(
        &hb,
        "sysctl",
        "ansible.posix.sysctl",
        &sysctls,
        &bosun_sysctls,
        &reset_sysctl,
        &prefix,
        &sysctl_state,
    ));
    assert!(
        differences.is_empty(),
        "{} difference(s) from Ansible:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

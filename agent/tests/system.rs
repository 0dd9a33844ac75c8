//! The system step kinds (`group`, `user`, `authorized_key`, `sysctl`, `hostname`, `timezone`,
//! `mount`) run by the real `bosund` inside a booted Debian bookworm host ([`HostBox`]): the
//! shadow tools, `sysctl`, `hostnamectl`, `mount` are the real ones. One box for all the checks
//! (booting is the slow part).
//!
//! Each kind: `--check` first (reports `changed`, changes nothing: the files compared byte for
//! byte before and after), then the real run (`changed`, the state asserted), then a second run
//! (`ok`), then a change of arguments and removal.
//!
//! Kernel settings: `/proc/sys` is read-only in the box (nspawn mounts it so), and most settings
//! are the whole machine's. The `sysctl` checks therefore run bosund in a network namespace of
//! their own (`ip netns add` inside the box) with a fresh `/proc` mounted in a mount namespace
//! of their own, and use only `net.*` settings, which the kernel keeps per network namespace:
//! nothing reaches the machine running the tests.

mod common;

use std::path::Path;
use std::time::Instant;

use bosun_harness::{BoxSpec, HostBox};
use bosun_model::event::StepStatus;
use common::{BOSUND, Run};

/// Packages the box needs besides the base: `sysctl` (procps) and Python (for
/// ansible-core, which the Ansible comparison runs in the same rootfs).
pub const PACKAGES: &[&str] = &["procps", "python3"];
/// Facts gathering never waits for an IMDS.
const ENV: &[(&str, &str)] = &[("BOSUN_IMDS_ENDPOINT", "http://127.0.0.1:1")];
/// The network namespace the sysctl checks run in.
const NETNS: &str = "bosun-sysctl";

fn boot() -> HostBox {
    HostBox::available().expect("host box prerequisites");
    let started = Instant::now();
    let hb = HostBox::boot_with(&BoxSpec::new().packages(PACKAGES)).expect("booting a host box");
    hb.copy_in(Path::new(BOSUND), "/usr/local/bin/bosund")
        .expect("copying bosund into the box");
    eprintln!(
        "[{}] boot {:.1} s",
        hb.machine(),
        started.elapsed().as_secs_f64()
    );
    hb
}

/// Writes the playbook as `/root/NAME.toml` and runs `bosund apply` on it, in the network
/// namespace [`NETNS`] with a writable `/proc` when `netns`.
fn apply_in(hb: &HostBox, netns: bool, name: &str, text: &str, args: &[&str]) -> Run {
    let path = format!("/root/{name}.toml");
    hb.write_file(&path, text.as_bytes(), 0o644).unwrap();
    let mut argv: Vec<&str> = Vec::new();
    if netns {
        argv.extend([
            "ip",
            "netns",
            "exec",
            NETNS,
            "unshare",
            "--mount",
            "sh",
            "-c",
            "mount -t proc proc /proc && exec \"$@\"",
            "sh",
        ]);
    }
    argv.extend(["bosund", "apply", path.as_str(), "--output", "json"]);
    argv.extend_from_slice(args);
    let run = Run::from_command(hb.command(&argv, ENV), None);
    eprintln!(
        "[{}] {name} {}: {:.1} s {:?}",
        hb.machine(),
        args.join(" "),
        run.elapsed.as_secs_f64(),
        run.statuses()
    );
    run
}

fn apply(hb: &HostBox, name: &str, text: &str, args: &[&str]) -> Run {
    apply_in(hb, false, name, text, args)
}

/// Every step of `run` ended `want`.
#[track_caller]
fn all(run: &Run, want: StepStatus) {
    let statuses = run.statuses();
    assert!(!statuses.is_empty(), "no steps ran: {}", run.stderr);
    for (name, status) in &statuses {
        assert_eq!(
            *status,
            want,
            "step {name}: {statuses:?}: {:?}\n{}",
            run.step(name).message,
            run.stderr
        );
    }
}

/// A file of the box, as text ("" when missing).
fn read(hb: &HostBox, path: &str) -> String {
    std::fs::read_to_string(hb.path(path)).unwrap_or_default()
}

fn sh(hb: &HostBox, script: &str) -> String {
    hb.sh(script)
        .unwrap_or_else(|e| panic!("{script}: {e:#}"))
        .trim()
        .to_string()
}

/// The line of `name` in an account database of the box.
fn entry(hb: &HostBox, db: &str, name: &str) -> Option<String> {
    read(hb, db)
        .lines()
        .find(|l| l.split(':').next() == Some(name))
        .map(str::to_string)
}

/// The files the account kinds change, for "--check changed nothing".
fn account_files(hb: &HostBox) -> Vec<String> {
    ["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"]
        .iter()
        .map(|f| read(hb, f))
        .collect()
}

/// `--check`, then for real, then again: changed (nothing touched), changed, ok.
fn converge(hb: &HostBox, name: &str, text: &str, files: impl Fn() -> Vec<String>) -> Run {
    let before = files();
    let check = apply(hb, name, text, &["--check"]);
    all(&check, StepStatus::Changed);
    assert_eq!(files(), before, "{name}: --check changed something");
    let first = apply(hb, name, text, &[]);
    all(&first, StepStatus::Changed);
    let second = apply(hb, name, text, &[]);
    all(&second, StepStatus::Ok);
    first
}

const KEY_A: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop";
const KEY_B: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBuZtHPuUQ2bDAvfxRn4D6k0HDaFWTbpRVAlbCyeFpBc bob@laptop";
const KEY_C: &str =
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEXAMPLE= carol";

#[test]
fn system_kinds_converge_in_a_booted_debian() {
    let hb = boot();
    accounts(&hb);
    authorized_keys(&hb);
    sysctl(&hb);
    hostname_and_timezone(&hb);
    mounts(&hb);
}

fn accounts(hb: &HostBox) {
    let create = r#"name = "accounts"
[[step]]
name = "group ops"
group = { name = "ops", gid = 2100 }
[[step]]
name = "group deploy"
group = { name = "deploy" }
[[step]]
name = "group metrics"
group = { name = "metrics", system = true }
[[step]]
name = "user deploy"
user = { name = "deploy", uid = 2200, group = "deploy", groups = ["ops", "adm"], shell = "/bin/bash", comment = "Deploy bot" }
[[step]]
name = "user prom"
user = { name = "prom", system = true, create_home = false, shell = "/usr/sbin/nologin", group = "metrics" }
"#;
    converge(hb, "accounts", create, || account_files(hb));
    assert_eq!(entry(hb, "/etc/group", "ops").unwrap(), "ops:x:2100:deploy");
    let deploy_gid = entry(hb, "/etc/group", "deploy").unwrap();
    let deploy_gid = deploy_gid.split(':').nth(2).unwrap();
    assert_eq!(
        entry(hb, "/etc/passwd", "deploy").unwrap(),
        format!("deploy:x:2200:{deploy_gid}:Deploy bot:/home/deploy:/bin/bash")
    );
    assert!(entry(hb, "/etc/group", "adm").unwrap().ends_with(":deploy"));
    let metrics_gid: u32 = entry(hb, "/etc/group", "metrics")
        .unwrap()
        .split(':')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert!(metrics_gid < 1000, "a system group: {metrics_gid}");
    let prom = entry(hb, "/etc/passwd", "prom").unwrap();
    let prom_uid: u32 = prom.split(':').nth(2).unwrap().parse().unwrap();
    assert!(prom_uid < 1000, "a system user: {prom}");
    assert!(
        prom.ends_with(&format!(":{metrics_gid}::/home/prom:/usr/sbin/nologin")),
        "{prom}"
    );
    assert!(
        !hb.path("/home/prom").exists(),
        "create_home = false made a home"
    );
    assert_eq!(
        sh(hb, "stat -c %u:%g /home/deploy"),
        format!("2200:{deploy_gid}")
    );
    assert!(
        hb.path("/home/deploy/.bashrc").exists(),
        "the home is a copy of /etc/skel"
    );

    // Changes: a uid, a shell, one more group kept with the others (append), a gid, a removal.
    let change = r#"name = "accounts-change"
[[step]]
name = "user deploy"
user = { name = "deploy", uid = 2201, shell = "/bin/sh", groups = ["metrics"], append = true }
[[step]]
name = "group ops"
group = { name = "ops", gid = 2150 }
[[step]]
name = "user prom"
user = { name = "prom", state = "absent" }
"#;
    converge(hb, "accounts-change", change, || account_files(hb));
    let deploy = entry(hb, "/etc/passwd", "deploy").unwrap();
    assert!(
        deploy.starts_with("deploy:x:2201:") && deploy.ends_with(":/bin/sh"),
        "{deploy}"
    );
    assert_eq!(entry(hb, "/etc/group", "ops").unwrap(), "ops:x:2150:deploy");
    assert!(
        entry(hb, "/etc/group", "metrics")
            .unwrap()
            .ends_with(":deploy")
    );
    assert!(entry(hb, "/etc/group", "adm").unwrap().ends_with(":deploy"));
    assert_eq!(entry(hb, "/etc/passwd", "prom"), None);

    // Exactly these groups (no append): the others are left.
    let exact = r#"name = "accounts-exact"
[[step]]
name = "user deploy"
user = { name = "deploy", groups = ["ops"] }
"#;
    converge(hb, "accounts-exact", exact, || account_files(hb));
    assert_eq!(entry(hb, "/etc/group", "ops").unwrap(), "ops:x:2150:deploy");
    assert!(!entry(hb, "/etc/group", "adm").unwrap().contains("deploy"));
    assert!(
        !entry(hb, "/etc/group", "metrics")
            .unwrap()
            .contains("deploy")
    );

    // A group that does not exist fails the step and creates nothing.
    let missing = r#"name = "accounts-missing"
[[step]]
name = "user ghost"
user = { name = "ghost", groups = ["no-such-group"] }
"#;
    let run = apply(hb, "accounts-missing", missing, &[]);
    assert_eq!(
        run.statuses(),
        [("user ghost".to_string(), StepStatus::Failed)]
    );
    assert!(
        run.step("user ghost")
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("\"no-such-group\" does not exist")
    );
    assert_eq!(entry(hb, "/etc/passwd", "ghost"), None);
}

fn authorized_keys(hb: &HostBox) {
    let keys = format!(
        r#"name = "keys"
[[step]]
name = "keys"
authorized_key = {{ user = "deploy", key = '''
from="10.0.0.0/8",no-pty {KEY_A}
{KEY_B}
''' }}
"#
    );
    let ssh = "/home/deploy/.ssh";
    let file = "/home/deploy/.ssh/authorized_keys";
    converge(hb, "keys", &keys, || {
        vec![read(hb, file), sh(hb, "ls -la /home/deploy")]
    });
    assert_eq!(
        read(hb, file),
        format!("from=\"10.0.0.0/8\",no-pty {KEY_A}\n{KEY_B}\n")
    );
    assert_eq!(
        sh(hb, &format!("stat -c '%a %U' {ssh} {file}")),
        "700 deploy\n600 deploy"
    );

    // Someone edited the file (and its mode): key A's line with other options is replaced in
    // place; the comment and key C stay; the mode comes back.
    hb.sh(&format!(
        "printf '# ops\\n{KEY_A}\\n{KEY_C}\\n{KEY_B}\\n' > {file} && chmod 644 {file}"
    ))
    .unwrap();
    let run = apply(hb, "keys", &keys, &[]);
    all(&run, StepStatus::Changed);
    assert!(
        run.step("keys")
            .diff
            .as_deref()
            .unwrap_or_default()
            .contains(&format!("-{KEY_A}"))
    );
    assert_eq!(
        read(hb, file),
        format!("# ops\nfrom=\"10.0.0.0/8\",no-pty {KEY_A}\n{KEY_C}\n{KEY_B}\n")
    );
    assert_eq!(sh(hb, &format!("stat -c %a {file}")), "600");

    let exclusive = format!(
        "name = \"keys-exclusive\"\n[[step]]\nname = \"keys\"\nauthorized_key = {{ user = \"deploy\", key = \"{KEY_B}\", exclusive = true }}\n"
    );
    converge(hb, "keys-exclusive", &exclusive, || vec![read(hb, file)]);
    assert_eq!(read(hb, file), format!("# ops\n{KEY_B}\n"));

    let absent = format!(
        "name = \"keys-absent\"\n[[step]]\nname = \"keys\"\nauthorized_key = {{ user = \"deploy\", key = \"{KEY_B}\", state = \"absent\" }}\n"
    );
    converge(hb, "keys-absent", &absent, || vec![read(hb, file)]);
    assert_eq!(read(hb, file), "# ops\n");

    let nobody = format!(
        "name = \"keys-nobody\"\n[[step]]\nname = \"keys\"\nauthorized_key = {{ user = \"nobody-here\", key = \"{KEY_B}\" }}\n"
    );
    let run = apply(hb, "keys-nobody", &nobody, &[]);
    assert_eq!(run.statuses(), [("keys".to_string(), StepStatus::Failed)]);
    assert!(
        run.step("keys")
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("does not exist")
    );
}

fn sysctl(hb: &HostBox) {
    sh(hb, &format!("ip netns add {NETNS}"));
    let proc = |key: &str| {
        sh(
            hb,
            &format!(
                "ip netns exec {NETNS} cat /proc/sys/{}",
                key.replace('.', "/")
            ),
        )
    };
    let conf = "/etc/sysctl.d/99-bosun.conf";
    hb.write_file(
        conf,
        b"# keep me\n  net.ipv4.tcp_fin_timeout = 31  \n",
        0o644,
    )
    .unwrap();
    let text = r#"name = "sysctl"
[[step]]
name = "forward"
sysctl = { name = "net.ipv4.ip_forward", value = true }
[[step]]
name = "ports"
sysctl = { name = "net.ipv4.ip_local_port_range", value = "20000 60000" }
[[step]]
name = "somaxconn"
sysctl = { name = "net.core.somaxconn", value = 1024, file = "/etc/sysctl.d/60-net.conf", reload = false }
"#;
    let files = || {
        vec![
            read(hb, conf),
            read(hb, "/etc/sysctl.d/60-net.conf"),
            proc("net.ipv4.ip_forward"),
        ]
    };
    let before = files();
    let check = apply_in(hb, true, "sysctl", text, &["--check"]);
    all(&check, StepStatus::Changed);
    assert_eq!(files(), before, "--check changed something");
    let first = apply_in(hb, true, "sysctl", text, &[]);
    all(&first, StepStatus::Changed);
    assert!(
        first
            .step("forward")
            .diff
            .as_deref()
            .unwrap_or_default()
            .contains("+net.ipv4.ip_forward=1")
    );
    // Rewritten as Ansible does: lines trimmed, `key=value`.
    assert_eq!(
        read(hb, conf),
        "# keep me\nnet.ipv4.tcp_fin_timeout=31\nnet.ipv4.ip_forward=1\nnet.ipv4.ip_local_port_range=20000 60000\n"
    );
    assert_eq!(
        read(hb, "/etc/sysctl.d/60-net.conf"),
        "net.core.somaxconn=1024\n"
    );
    assert_eq!(proc("net.ipv4.ip_forward"), "1");
    assert_eq!(
        proc("net.ipv4.ip_local_port_range")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["20000", "60000"]
    );
    // The reload applied the whole file; `reload = false` left the running value alone.
    assert_eq!(proc("net.ipv4.tcp_fin_timeout"), "31");
    assert_ne!(proc("net.core.somaxconn"), "1024");
    all(&apply_in(hb, true, "sysctl", text, &[]), StepStatus::Ok);

    // The running value drifted: the file is right, the step reloads it.
    sh(
        hb,
        &format!(
            "ip netns exec {NETNS} unshare --mount sh -c 'mount -t proc proc /proc && echo 0 > /proc/sys/net/ipv4/ip_forward'"
        ),
    );
    let conf_before = read(hb, conf);
    let run = apply_in(hb, true, "sysctl", text, &[]);
    assert_eq!(run.step("forward").status, StepStatus::Changed);
    assert_eq!(run.step("ports").status, StepStatus::Ok);
    assert_eq!(proc("net.ipv4.ip_forward"), "1");
    assert_eq!(read(hb, conf), conf_before);

    let absent = r#"name = "sysctl-absent"
[[step]]
name = "forward"
sysctl = { name = "net.ipv4.ip_forward", state = "absent" }
"#;
    let run = apply_in(hb, true, "sysctl-absent", absent, &[]);
    all(&run, StepStatus::Changed);
    assert!(!read(hb, conf).contains("ip_forward"));
    all(
        &apply_in(hb, true, "sysctl-absent", absent, &[]),
        StepStatus::Ok,
    );

    let unknown = r#"name = "sysctl-unknown"
[[step]]
name = "nope"
sysctl = { name = "net.ipv4.no_such_setting", value = 1 }
"#;
    let run = apply_in(hb, true, "sysctl-unknown", unknown, &[]);
    assert_eq!(run.step("nope").status, StepStatus::Failed);
    assert!(
        run.step("nope")
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("the kernel has no setting")
    );
    assert!(!read(hb, conf).contains("no_such_setting"));
}

fn hostname_and_timezone(hb: &HostBox) {
    let text = r#"name = "identity"
[[step]]
name = "hostname"
hostname = { name = "web-1" }
[[step]]
name = "timezone"
timezone = { name = "Europe/Paris" }
"#;
    converge(hb, "identity", text, || {
        vec![
            read(hb, "/etc/hostname"),
            sh(hb, "hostname"),
            sh(hb, "readlink /etc/localtime"),
            read(hb, "/etc/timezone"),
        ]
    });
    assert_eq!(read(hb, "/etc/hostname"), "web-1\n");
    assert_eq!(sh(hb, "hostname"), "web-1");
    assert!(sh(hb, "readlink /etc/localtime").ends_with("zoneinfo/Europe/Paris"));
    assert_eq!(read(hb, "/etc/timezone"), "Europe/Paris\n");
    assert_eq!(sh(hb, "date +%Z"), sh(hb, "TZ=Europe/Paris date +%Z"));

    // Without systemd (hidden here by a tmpfs over /run/systemd, in a UTS namespace of its
    // own): /etc/hostname written, the kernel told with sethostname(2).
    let other = "name = \"h2\"\n[[step]]\nname = \"hostname\"\nhostname = { name = \"db-2\" }\n";
    hb.write_file("/root/h2.toml", other.as_bytes(), 0o644)
        .unwrap();
    let script =
        "mount -t tmpfs tmpfs /run/systemd && exec bosund apply /root/h2.toml --output json";
    let run = Run::from_command(
        hb.command(&["unshare", "--uts", "--mount", "sh", "-c", script], ENV),
        None,
    );
    assert_eq!(
        run.step("hostname").status,
        StepStatus::Changed,
        "{}",
        run.stderr
    );
    let message = run.step("hostname").message.clone().unwrap_or_default();
    assert!(
        message.contains("/etc/hostname and sethostname"),
        "{message}"
    );
    assert_eq!(read(hb, "/etc/hostname"), "db-2\n");
    assert_eq!(
        sh(hb, "hostname"),
        "web-1",
        "the box's own UTS namespace is untouched"
    );

    let unknown =
        "name = \"tz\"\n[[step]]\nname = \"tz\"\ntimezone = { name = \"Mars/Olympus\" }\n";
    let run = apply(hb, "tz", unknown, &[]);
    assert_eq!(run.step("tz").status, StepStatus::Failed);
    assert!(
        run.step("tz")
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("unknown time zone")
    );
    assert!(sh(hb, "readlink /etc/localtime").ends_with("zoneinfo/Europe/Paris"));
}

fn mounts(hb: &HostBox) {
    let fstab_start =
        "# static\nproc /proc proc defaults 0 0\n#tmpfs /mnt/scratch tmpfs size=1m 0 0\n";
    hb.write_file("/etc/fstab", fstab_start.as_bytes(), 0o644)
        .unwrap();
    let mounted = |opts: &str| {
        format!(
            "name = \"mount\"\n[[step]]\nname = \"scratch\"\nmount = {{ path = \"/mnt/scratch\", src = \"tmpfs\", fstype = \"tmpfs\", opts = \"{opts}\", state = \"mounted\" }}\n"
        )
    };
    let is_mounted = || sh(hb, "findmnt -n -o OPTIONS /mnt/scratch || true");
    converge(hb, "mount", &mounted("size=16m"), || {
        vec![read(hb, "/etc/fstab"), is_mounted()]
    });
    assert_eq!(
        read(hb, "/etc/fstab"),
        format!("{fstab_start}tmpfs /mnt/scratch tmpfs size=16m 0 0\n")
    );
    assert!(is_mounted().contains("size=16384k"), "{}", is_mounted());

    // Other options: the line is replaced in place and the file system mounted again.
    converge(hb, "mount", &mounted("size=32m,mode=0750"), || {
        vec![read(hb, "/etc/fstab")]
    });
    assert_eq!(
        read(hb, "/etc/fstab"),
        format!("{fstab_start}tmpfs /mnt/scratch tmpfs size=32m,mode=0750 0 0\n")
    );
    assert!(is_mounted().contains("size=32768k"), "{}", is_mounted());
    assert_eq!(sh(hb, "stat -c %a /mnt/scratch"), "750");

    let state = |s: &str| {
        format!(
            "name = \"mount-{s}\"\n[[step]]\nname = \"scratch\"\nmount = {{ path = \"/mnt/scratch\", state = \"{s}\" }}\n"
        )
    };
    converge(hb, "mount-unmounted", &state("unmounted"), || {
        vec![is_mounted()]
    });
    assert_eq!(is_mounted(), "");
    assert!(read(hb, "/etc/fstab").contains("/mnt/scratch tmpfs"));
    converge(hb, "mount-absent", &state("absent"), || {
        vec![read(hb, "/etc/fstab")]
    });
    assert_eq!(read(hb, "/etc/fstab"), fstab_start);
}

//! `bosun run k3s-upgrade` rolling across a cluster of three booted hosts: one server, two
//! agents, each a Debian booted with systemd in a [`HostBox`] and reached by `bosun` over real
//! SSH: one sshd per box on the machine's loopback whose `ForceCommand` runs the session inside
//! that box (`nsenter`), so bosund, systemd, the units and k3s are each box's own.
//!
//! k3s is the fixtures' stand-in (`fake-k3s`, serving as `kubectl` too), which honours k3s's
//! join contract and kubectl's cordon/drain/uncordon (checked against their sources, see its
//! doc comment) and records every node operation, join and leave in the server's
//! `fake-k3s/calls.log`. The boxes share the machine's network, so the server listens on
//! 127.0.0.1 on a port of its own. The releases are served from an [`ArtifactServer`].
//!
//! The story, on one set of boots:
//! 1. a skew refusal (a version two minors ahead): nothing runs, the message names the nodes;
//! 2. the first agent's new version crashes on start: the server is upgraded, the agent is
//!    cordoned, drained, upgraded, fails its health check, is rolled back by `k3s_upgrade`,
//!    and made schedulable again; the second agent is never touched;
//! 3. the fault removed: every node at the new version, in the order cordon, drain, swap
//!    (the agent re-joins at the new version), Ready, uncordon, one agent after the other.

use std::path::{Path, PathBuf};
use std::process::Output;

use bosun_harness::{ArtifactServer, HostBox, Sshd};
use serde_json::Value;
use sha2::{Digest, Sha256};

mod common;

const V30: &str = "v1.30.6+k3s1";
const V31: &str = "v1.31.4+k3s1";
const V32: &str = "v1.32.2+k3s1";
const DATA: &str = "/var/lib/rancher/k3s";

/// Release file names for this machine, as k3s names them.
fn arch_files() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "aarch64" => ("k3s-arm64", "sha256sum-arm64.txt"),
        _ => ("k3s", "sha256sum-amd64.txt"),
    }
}

/// `releases/<version>/{k3s,sha256sum-*.txt}` as GitHub lays them out, served over HTTP.
struct Releases {
    _dir: tempfile::TempDir,
    server: ArtifactServer,
}

impl Releases {
    fn new(versions: &[&str]) -> Releases {
        let dir = tempfile::tempdir().unwrap();
        let (binary, sums) = arch_files();
        for v in versions {
            let d = dir.path().join("releases").join(v);
            std::fs::create_dir_all(&d).unwrap();
            let bytes = bosun_fixtures::k3s_release(v);
            let digest = hex::encode(Sha256::digest(&bytes));
            std::fs::write(d.join(binary), bytes).unwrap();
            std::fs::write(d.join(sums), format!("{digest}  {binary}\n")).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("v1-release")).unwrap();
        std::fs::write(dir.path().join("v1-release/channels"), r#"{"data":[]}"#).unwrap();
        let server = ArtifactServer::serve(dir.path()).unwrap();
        Releases { _dir: dir, server }
    }

    fn mirror(&self) -> String {
        format!("{}/releases", self.server.url())
    }
}

/// A booted box and the sshd whose sessions run inside it.
struct Host {
    name: &'static str,
    hb: HostBox,
    sshd: Sshd,
}

impl Host {
    fn boot(name: &'static str) -> Host {
        let hb = HostBox::boot().expect("booting a host box");
        let force = format!(
            "ForceCommand exec /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 {} -t {} -a -- /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"\n",
            nsenter().display(),
            hb.leader_pid()
        );
        let sshd = Sshd::start_with(&force).expect("starting the box's sshd");
        Host { name, hb, sshd }
    }

    fn sh(&self, script: &str) -> String {
        self.hb.sh(script).unwrap().trim().to_string()
    }

    fn k3s_version(&self) -> String {
        let out = self.sh("/usr/local/bin/k3s --version | head -1");
        out.split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_string()
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.hb.path(path)).unwrap_or_default()
    }
}

fn nsenter() -> PathBuf {
    ["/usr/bin/nsenter", "/bin/nsenter"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("nsenter (util-linux)")
}

/// bosun's HOME (known hosts of every box), work dir, the inventory.
struct Operator {
    home: tempfile::TempDir,
    work: tempfile::TempDir,
    keys: Vec<PathBuf>,
}

impl Operator {
    fn new(hosts: &[&Host]) -> Operator {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
        let known: String = hosts
            .iter()
            .map(|h| format!("{}\n", h.sshd.known_hosts_line()))
            .collect();
        std::fs::write(home.path().join(".ssh/known_hosts"), known).unwrap();
        let work = tempfile::tempdir().unwrap();
        let mut inventory = String::new();
        for h in hosts {
            let role = if h.name == "server" {
                "server"
            } else {
                "agent"
            };
            inventory.push_str(&format!(
                "[hosts.{n}]\naddress = \"127.0.0.1\"\nport = {p}\nuser = \"{u}\"\nvars = {{ k3s_role = \"{role}\", k3s_node_name = \"{n}\" }}\n\n",
                n = h.name,
                p = h.sshd.port(),
                u = h.sshd.user()
            ));
        }
        std::fs::write(work.path().join("cluster.toml"), inventory).unwrap();
        let keys = hosts.iter().map(|h| h.sshd.client_key_path()).collect();
        Operator { home, work, keys }
    }

    /// `bosun run PLAYBOOK --inventory cluster.toml --output json ARGS...`.
    fn run(&self, playbook: &Path, args: &[&str]) -> (i32, Vec<Value>, String) {
        let mut cmd = std::process::Command::new(common::BOSUN);
        cmd.env("HOME", self.home.path())
            .env_remove("SSH_AUTH_SOCK")
            .current_dir(self.work.path())
            .arg("run")
            .arg(playbook)
            .args([
                "--inventory",
                "cluster.toml",
                "--output",
                "json",
                "--bosund",
            ])
            .arg(common::bosund());
        for k in &self.keys {
            cmd.arg("-i").arg(k);
        }
        let out: Output = cmd.args(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let records = stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect();
        (out.status.code().unwrap_or(-1), records, stderr)
    }

    fn playbook(&self, name: &str, text: &str) -> PathBuf {
        let p = self.work.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// The failed steps' events, for assertion messages.
fn failures(records: &[Value]) -> String {
    records
        .iter()
        .filter(|r| r["status"] == "failed" || r["event"] == "host_note")
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `host_finished` record of `host`.
fn finished<'a>(records: &'a [Value], host: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["event"] == "host_finished" && r["host"] == host)
        .unwrap_or_else(|| panic!("no host_finished for {host} in {records:#?}"))
}

/// Index of the first line of `calls` at or after `from` equal to `line`.
fn at(calls: &[String], line: &str, from: usize) -> usize {
    calls[from..]
        .iter()
        .position(|c| c == line)
        .map(|i| i + from)
        .unwrap_or_else(|| panic!("no {line:?} after line {from} in {calls:#?}"))
}

/// Checks cordon < drain < join at `version` < a Ready look < uncordon for `node`, from
/// `from`; returns where its uncordon is.
fn rolled_in_order(calls: &[String], node: &str, version: &str, from: usize) -> usize {
    let cordon = at(calls, &format!("cordon {node}"), from);
    let drain = at(calls, &format!("drain {node}"), cordon);
    let join = at(calls, &format!("join {node} {version}"), drain);
    let ready = at(calls, &format!("get node {node}"), join);
    at(calls, &format!("uncordon {node}"), ready)
}

#[test]
fn k3s_is_upgraded_across_a_cluster_servers_first_then_agents_one_at_a_time() {
    HostBox::available().expect("host box prerequisites");
    let releases = Releases::new(&[V30, V31, V32]);
    let server = Host::boot("server");
    let a1 = Host::boot("a1");
    let a2 = Host::boot("a2");
    let op = Operator::new(&[&server, &a1, &a2]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mirror = releases.mirror();

    // The cluster at V30: the server, then the agents with its token.
    let install_server = op.playbook(
        "server.toml",
        &format!(
            r#"name = "server"
[[step]]
name = "install k3s"
k3s_install = {{ version = "{V30}", mirror = "{mirror}", node_name = "server", ready_timeout = "60s", config = {{ "bind-address" = "127.0.0.1", "https-listen-port" = {port} }} }}
"#
        ),
    );
    let (code, records, stderr) = op.run(&install_server, &["--limit", "server"]);
    assert_eq!(code, 0, "{records:#?}\n{stderr}");
    let token = server.read(&format!("{DATA}/server/node-token"));
    let install_agent = op.playbook(
        "agent.toml",
        &format!(
            r#"name = "agent"
[vars]
token = ""
[[step]]
name = "install k3s"
k3s_install = {{ role = "agent", version = "{V30}", mirror = "{mirror}", node_name = "{{{{ k3s_node_name }}}}", server_url = "https://127.0.0.1:{port}", token = "{{{{ token }}}}", ready_timeout = "60s" }}
"#
        ),
    );
    let token_var = format!("token={}", token.trim());
    let (code, records, stderr) =
        op.run(&install_agent, &["--limit", "a1,a2", "--var", &token_var]);
    assert_eq!(code, 0, "{records:#?}\n{stderr}");
    // A replica on each agent, for the drains to evict.
    std::fs::write(
        server.hb.path(&format!("{DATA}/fake-k3s/workloads")),
        "a1 shop/web-1\na2 shop/web-2\n",
    )
    .unwrap();
    let upgrade = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks/k3s-upgrade.toml");
    let mirror_var = format!("mirror={mirror}");
    let common_args = |version: &'static str| {
        vec![
            "--var".to_string(),
            format!("version={version}"),
            "--var".into(),
            mirror_var.clone(),
            "--var".into(),
            "health_timeout=20s".into(),
            "--var".into(),
            "drain_timeout=30s".into(),
            "--serial".into(),
            "1".into(),
        ]
    };
    let calls = || -> Vec<String> {
        server
            .read(&format!("{DATA}/fake-k3s/calls.log"))
            .lines()
            .map(str::to_string)
            .collect()
    };
    let changes = |calls: &[String]| -> Vec<String> {
        calls
            .iter()
            .filter(|c| {
                c.starts_with("cordon") || c.starts_with("drain") || c.starts_with("uncordon")
            })
            .cloned()
            .collect()
    };

    // 1. Two minors ahead of the server: refused before anything changes.
    let before = calls();
    let args = common_args(V32);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, records, stderr) = op.run(&upgrade, &args);
    assert_eq!(code, 1, "{records:#?}\n{stderr}");
    let why = finished(&records, "a1")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        why.contains(&format!(
            "server server (host server) runs {V30}: {V32} skips minor version(s)"
        )),
        "{why}"
    );
    assert_eq!(finished(&records, "server")["status"], "not_started");
    assert_eq!(changes(&calls()), changes(&before));
    assert_eq!(server.k3s_version(), V30);

    // 2. a1's new version crashes on start: rolled back, schedulable again; a2 untouched.
    std::fs::create_dir_all(a1.hb.path(&format!("{DATA}/fake-k3s/faults"))).unwrap();
    std::fs::write(a1.hb.path(&format!("{DATA}/fake-k3s/faults/{V31}")), "exit").unwrap();
    let args = common_args(V31);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, records, stderr) = op.run(&upgrade, &args);
    assert_eq!(code, 1, "{records:#?}\n{stderr}");
    assert_eq!(finished(&records, "server")["status"], "changed");
    let a1_end = finished(&records, "a1");
    assert_eq!(a1_end["status"], "failed", "{a1_end}");
    let why = a1_end["error"].as_str().unwrap();
    assert!(
        why.contains("schedulable again"),
        "{why}\n{}",
        failures(&records)
    );
    let a2_end = finished(&records, "a2");
    assert_eq!(a2_end["status"], "not_started", "{a2_end}");
    assert!(
        a2_end["error"]
            .as_str()
            .unwrap()
            .contains("stopped at agent a1"),
        "{a2_end}"
    );
    assert_eq!(server.k3s_version(), V31);
    assert_eq!(a1.k3s_version(), V30, "rolled back");
    assert_eq!(a2.k3s_version(), V30, "never touched");
    let log = calls();
    let uncordoned = at(
        &log,
        "uncordon a1",
        at(
            &log,
            &format!("join a1 {V30}"),
            at(&log, "drain a1", at(&log, "cordon a1", 0)),
        ),
    );
    assert!(
        !log.iter().any(|c| c == &format!("join a1 {V31}")),
        "{log:#?}"
    );
    assert!(
        !log.iter()
            .any(|c| c.ends_with(" a2") && !c.starts_with("join")),
        "a2 was touched: {log:#?}"
    );
    let node = server.sh("k3s kubectl get node a1 -o json");
    let node: Value = serde_json::from_str(&node).unwrap();
    assert!(node["spec"]["unschedulable"].is_null(), "{node}");
    assert_eq!(node["status"]["nodeInfo"]["kubeletVersion"], V30);

    // 3. The fault gone: every node at V31, a1 then a2, each in the order asked for. a1's
    // replica was evicted by the last drain: the scheduler has put another one there since.
    std::fs::remove_file(a1.hb.path(&format!("{DATA}/fake-k3s/faults/{V31}"))).unwrap();
    let workloads = server.hb.path(&format!("{DATA}/fake-k3s/workloads"));
    let mut placed = std::fs::read_to_string(&workloads).unwrap();
    placed.push_str("a1 shop/web-3\n");
    std::fs::write(&workloads, placed).unwrap();
    let (code, records, stderr) = op.run(&upgrade, &args);
    assert_eq!(code, 0, "{records:#?}\n{stderr}");
    assert_eq!(
        finished(&records, "server")["status"],
        "ok",
        "already at {V31}"
    );
    let log = calls();
    let a1_done = rolled_in_order(&log, "a1", V31, uncordoned + 1);
    let a2_cordon = at(&log, "cordon a2", 0);
    assert!(a2_cordon > a1_done, "a2 began before a1 was done: {log:#?}");
    rolled_in_order(&log, "a2", V31, a2_cordon);
    for h in [&server, &a1, &a2] {
        assert_eq!(h.k3s_version(), V31, "{}", h.name);
    }
    let workloads = server.read(&format!("{DATA}/fake-k3s/workloads"));
    assert!(
        !workloads.contains("a1 ") && !workloads.contains("a2 "),
        "replicas left on drained nodes: {workloads}"
    );
    // A second run changes nothing: no node is cordoned again.
    let before = changes(&calls());
    let (code, records, stderr) = op.run(&upgrade, &args);
    assert_eq!(code, 0, "{records:#?}\n{stderr}");
    assert_eq!(changes(&calls()), before);
}

//! A k3s cluster of three booted hosts on a private bridge: `playbooks/bootstrap.toml` as
//! shipped makes one box a server (it publishes its join token to SSM, moto) and two boxes
//! agents (they read the token there and join `k3s_server_url`); a second run of bootstrap
//! changes nothing on any of them.
//!
//! The boxes ([`HostBox`], systemd-nspawn) sit on the bridge of a network namespace this test
//! creates ([`PrivateNet`]): they reach each other and, through relays on the bridge's
//! gateway, the moto server and the release mirror on the host's loopback, nothing else (the
//! packages bootstrap installs are baked into their rootfs). k3s and helm are the fixtures'
//! stand-ins; `fake-k3s` honours k3s's join contract, checked against k3s's sources
//! (tests/fixtures/src/bin/fake-k3s/join.rs): an agent joins with `K3S_URL` and the right
//! token, a wrong token is refused with k3s's own message and `k3s_install` fails with it.
//!
//! The second agent is first set up as the official installer leaves a host (its
//! `k3s-agent.service` with an `INSTALL_K3S_EXEC` flag, an env file with an extra entry, a
//! `kubectl` already on PATH): bootstrap adopts it, keeping the flag and the entry, and links
//! no `kubectl` over the one on PATH.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use bosun_harness::{ArtifactServer, BoxSpec, HostBox, Moto, PrivateNet};
use bosun_model::event::StepStatus;
use common::{BOSUND, Run};
use serde_json::Value;

const K3S_VERSION: &str = "v1.31.4+k3s1";
const HELM_VERSION: &str = "3.16.3";
const TOKEN_PARAMETER: &str = "/bosun/join/k3s-token";
/// What bootstrap installs from the Debian mirror, baked into the boxes' rootfs: the private
/// net reaches no mirror.
const PACKAGES: &[&str] = &["ca-certificates", "curl", "jq", "gzip", "tar", "docker.io"];
/// Ports on the bridge's gateway relayed to the host's moto and release mirror.
const MOTO_PORT: u16 = 4566;
const MIRROR_PORT: u16 = 8080;
/// `k3s-agent.service` as install.sh writes it for `INSTALL_K3S_EXEC="agent
/// --node-label=tier=web"` (its `create_systemd_service_file`).
const INSTALLER_AGENT_UNIT: &str = "[Unit]\nDescription=Lightweight Kubernetes\nDocumentation=https://k3s.io\nWants=network-online.target\nAfter=network-online.target\n\n[Install]\nWantedBy=multi-user.target\n\n[Service]\nType=notify\nEnvironmentFile=-/etc/default/%N\nEnvironmentFile=-/etc/sysconfig/%N\nEnvironmentFile=-/etc/systemd/system/k3s-agent.service.env\nKillMode=process\nDelegate=yes\nUser=root\nLimitNOFILE=1048576\nLimitNPROC=infinity\nLimitCORE=infinity\nTasksMax=infinity\nTimeoutStartSec=0\nRestart=always\nRestartSec=5s\nExecStartPre=-/sbin/modprobe br_netfilter\nExecStartPre=-/sbin/modprobe overlay\nExecStart=/usr/local/bin/k3s \\\n    agent \\\n\t'--node-label=tier=web' \\\n\n";

struct Node {
    hb: HostBox,
    address: String,
}

impl Node {
    fn boot(net: &PrivateNet, n: u8) -> Node {
        let address = net.address(n);
        let hb = HostBox::boot_with(&BoxSpec::new().packages(PACKAGES).network(net, &address))
            .expect("booting a host box on the private net");
        hb.copy_in(Path::new(BOSUND), "/usr/local/sbin/bosund")
            .unwrap();
        let playbooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks");
        hb.copy_in(&playbooks.join("bootstrap.toml"), "/root/bootstrap.toml")
            .unwrap();
        Node { hb, address }
    }

    /// `bosund apply <playbook> --vars-file /root/vars.toml --output json` in the box, with
    /// moto reached through the gateway.
    fn apply(&self, net: &PrivateNet, playbook: &str) -> Run {
        let endpoint = format!("http://{}:{MOTO_PORT}", net.gateway());
        let env = [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("BOSUN_IMDS_ENDPOINT", "http://127.0.0.1:1"),
        ];
        Run::from_command(
            self.hb.command(
                &[
                    "/usr/local/sbin/bosund",
                    "apply",
                    playbook,
                    "--vars-file",
                    "/root/vars.toml",
                    "--output",
                    "json",
                ],
                &env,
            ),
            None,
        )
    }

    fn vars(&self, net: &PrivateNet, extra: &str) {
        let mirror = format!("http://{}:{MIRROR_PORT}", net.gateway());
        let vars = format!(
            r#"k3s_mirror = "{mirror}/k3s"
helm_mirror = "{mirror}/helm"
k3s_version = "{K3S_VERSION}"
helm_version = "{HELM_VERSION}"
k3s_token_parameter = "{TOKEN_PARAMETER}"
{extra}
[docker_daemon]
iptables = false
ip-forward = false
bridge = "none"
"#
        );
        self.hb
            .write_file("/root/vars.toml", vars.as_bytes(), 0o600)
            .unwrap();
    }

    fn sh(&self, script: &str) -> String {
        self.hb.sh(script).unwrap().trim().to_string()
    }
}

/// No event or stderr of `run` holds `secret`.
fn assert_hidden(run: &Run, secret: &str, what: &str) {
    let out = format!(
        "{}{}",
        serde_json::to_string(&run.events).unwrap(),
        run.stderr
    );
    assert!(!out.contains(secret), "{what}: the token is in the events");
}

fn ready(node: &Value) -> bool {
    node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

#[test]
fn a_server_and_two_agents_join_on_a_private_bridge_and_a_second_bootstrap_changes_nothing() {
    HostBox::available().expect("host box prerequisites");
    let t0 = Instant::now();
    let releases = tempfile::tempdir().unwrap();
    bosun_fixtures::publish_releases(releases.path(), K3S_VERSION, HELM_VERSION);
    let mirror = ArtifactServer::serve(releases.path()).unwrap();
    let moto = Moto::start().expect("start moto");
    let mut net = PrivateNet::create().expect("a private network namespace");
    let to = |port: u16| -> SocketAddr { format!("127.0.0.1:{port}").parse().unwrap() };
    net.forward(MOTO_PORT, to(moto.port())).unwrap();
    net.forward(MIRROR_PORT, to(mirror.port())).unwrap();

    // Three boxes, booted together.
    let (server, agent_a, agent_b) = std::thread::scope(|s| {
        let net = &net;
        let a = s.spawn(move || Node::boot(net, 2));
        let b = s.spawn(move || Node::boot(net, 3));
        let c = s.spawn(move || Node::boot(net, 4));
        (a.join().unwrap(), b.join().unwrap(), c.join().unwrap())
    });
    eprintln!(
        "k3s_join: three boxes booted in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    // The boxes reach the relays on the gateway, not the host's loopback where moto runs.
    let tcp = |node: &Node, addr: &str, port: u16| {
        node.hb
            .exec(&["bash", "-c", &format!("exec 3<>/dev/tcp/{addr}/{port}")])
            .unwrap()
            .status
            .success()
    };
    assert!(
        tcp(&agent_a, &net.gateway(), MOTO_PORT),
        "the relay to moto is not reachable"
    );
    assert!(
        !tcp(&agent_a, "127.0.0.1", moto.port()),
        "the box reached the host's loopback"
    );

    // --- the server: k3s Ready, its token published to SSM -----------------------------------
    server.vars(&net, "");
    let first = server.apply(&net, "/root/bootstrap.toml");
    first.assert_success();
    assert_eq!(
        first.step("publish the k3s join token").status,
        StepStatus::Changed
    );
    assert_eq!(first.step("k3s agent").status, StepStatus::Skipped);
    let token = server.sh("cat /var/lib/rancher/k3s/server/node-token");
    assert!(
        token.starts_with("K10") && token.contains("::server:"),
        "{token}"
    );
    assert_hidden(&first, &token, "server bootstrap");
    let server_url = format!("https://{}:6443", server.address);

    // --- a wrong token: the agent's k3s_install fails with k3s's message, token unquoted ----
    let wrong = format!(
        "{}::server:{}",
        token.split("::").next().unwrap(),
        "0".repeat(32)
    );
    agent_a.vars(&net, "");
    agent_a
        .hb
        .write_file(
            "/root/wrong.toml",
            format!(
                r#"name = "wrong token"
[[step]]
name = "join"
k3s_install = {{ role = "agent", version = "{K3S_VERSION}", mirror = "http://{gw}:{MIRROR_PORT}/k3s", server_url = "{server_url}", token = "{wrong}", ready_timeout = "60s" }}
"#,
                gw = net.gateway()
            )
            .as_bytes(),
            0o600,
        )
        .unwrap();
    let refused = agent_a.apply(&net, "/root/wrong.toml");
    assert_eq!(refused.summary().failed, 1, "{:?}", refused.statuses());
    let msg = refused.step("join").message.clone().unwrap_or_default();
    assert!(msg.contains("the server refused this agent"), "{msg}");
    assert!(msg.contains("401 Unauthorized"), "{msg}");
    assert!(
        !msg.contains(&"0".repeat(32)),
        "the wrong token is quoted: {msg}"
    );
    let nodes: Value = serde_json::from_str(&server.sh("k3s kubectl get nodes -o json")).unwrap();
    assert_eq!(
        nodes["items"].as_array().unwrap().len(),
        1,
        "a refused agent joined"
    );

    // --- agent A: bootstrap joins it under its host name -----------------------------------
    agent_a.vars(
        &net,
        &format!("k3s_role = \"agent\"\nk3s_server_url = \"{server_url}\"\n"),
    );
    let a_first = agent_a.apply(&net, "/root/bootstrap.toml");
    a_first.assert_success();
    assert_hidden(&a_first, &token, "agent A bootstrap");
    assert_eq!(agent_a.sh("systemctl is-active k3s-agent"), "active");
    assert!(
        agent_a
            .hb
            .exec(&["test", "-e", "/etc/systemd/system/k3s.service"])
            .unwrap()
            .status
            .code()
            == Some(1)
    );
    let env_mode = agent_a.sh("stat -c %a /etc/systemd/system/k3s-agent.service.env");
    assert_eq!(env_mode, "600");
    let env = agent_a.sh("cat /etc/systemd/system/k3s-agent.service.env");
    assert!(env.contains(&format!("K3S_URL=\"{server_url}\"")), "{env}");
    assert!(
        env.contains(&format!("K3S_TOKEN=\"{token}\"")),
        "the right token replaced the wrong one"
    );

    // --- agent B: an installer's host, adopted; node name from the variable ----------------
    agent_b
        .hb
        .write_file(
            "/etc/systemd/system/k3s-agent.service",
            INSTALLER_AGENT_UNIT.as_bytes(),
            0o644,
        )
        .unwrap();
    agent_b
        .hb
        .write_file(
            "/etc/systemd/system/k3s-agent.service.env",
            format!("K3S_URL='{server_url}'\nK3S_TOKEN='stale'\nCONTAINERD_LOG_LEVEL='warn'\n")
                .as_bytes(),
            0o600,
        )
        .unwrap();
    // A distribution's kubectl, already on PATH.
    agent_b
        .hb
        .write_file(
            "/usr/bin/kubectl",
            b"#!/bin/sh\necho distro kubectl\n",
            0o755,
        )
        .unwrap();
    agent_b.vars(
        &net,
        &format!("k3s_role = \"agent\"\nk3s_server_url = \"{server_url}\"\nk3s_node_name = \"worker-b\"\n"),
    );
    let b_first = agent_b.apply(&net, "/root/bootstrap.toml");
    b_first.assert_success();
    assert_hidden(&b_first, &token, "agent B bootstrap");
    let unit = agent_b.sh("cat /etc/systemd/system/k3s-agent.service");
    assert!(
        unit.contains("--node-label=tier=web"),
        "the installer's flag was dropped:\n{unit}"
    );
    let env = agent_b.sh("cat /etc/systemd/system/k3s-agent.service.env");
    assert!(
        env.contains("CONTAINERD_LOG_LEVEL=\"warn\""),
        "the installer's entry was dropped"
    );
    assert!(!env.contains("stale"), "the stale token was kept");
    assert_eq!(agent_b.sh("readlink /usr/local/bin/crictl"), "k3s");
    assert!(
        agent_b
            .hb
            .exec(&["test", "-e", "/usr/local/bin/kubectl"])
            .unwrap()
            .status
            .code()
            == Some(1),
        "kubectl linked over the one on PATH"
    );
    assert_eq!(
        agent_b.sh("readlink /usr/local/bin/kubectl || kubectl"),
        "distro kubectl"
    );

    // --- the cluster: three nodes Ready, by their names -----------------------------------
    let nodes: Value = serde_json::from_str(&server.sh("k3s kubectl get nodes -o json")).unwrap();
    let mut names: Vec<(String, bool)> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["metadata"]["name"].as_str().unwrap().to_string(),
                ready(n),
            )
        })
        .collect();
    names.sort();
    let mut want = vec![
        (server.hb.machine().to_lowercase(), true),
        (agent_a.hb.machine().to_lowercase(), true),
        ("worker-b".to_string(), true),
    ];
    want.sort();
    assert_eq!(names, want);

    // --- second runs: nothing changes anywhere ---------------------------------------------
    for (node, name) in [
        (&server, "server"),
        (&agent_a, "agent A"),
        (&agent_b, "agent B"),
    ] {
        let pid_before =
            node.sh("systemctl show -p MainPID --value k3s k3s-agent | grep -v '^0$' | head -1");
        let again = node.apply(&net, "/root/bootstrap.toml");
        again.assert_success();
        assert_eq!(again.summary().changed, 0, "{name}: {:?}", again.statuses());
        assert_hidden(&again, &token, name);
        let pid_after =
            node.sh("systemctl show -p MainPID --value k3s k3s-agent | grep -v '^0$' | head -1");
        assert_eq!(pid_before, pid_after, "{name}: k3s was restarted");
    }
    eprintln!(
        "k3s_join: whole story in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}

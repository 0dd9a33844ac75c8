//! `playbooks/bootstrap.toml` as shipped, on a real Debian host booted with systemd
//! (`HostBox`): packages from the Debian mirror, Docker, k3s and Helm, then a second run that
//! changes nothing.
//!
//! k3s and helm cannot be fetched here: their release files are `fake-k3s` and `fake-helm`
//! (bosun-fixtures), which honour the command-line contract bosun uses, served in the real
//! release layout from a loopback HTTP server the box reaches through the shared network. The
//! Docker settings the box needs (`iptables`, `ip-forward` and `bridge` off: /proc/sys is
//! read-only in a container) are this test's vars, not the playbook's defaults.

mod common;

use std::path::Path;

use bosun_harness::{ArtifactServer, HostBox};
use common::{BOSUND, Run};

const K3S_VERSION: &str = "v1.31.4+k3s1";
const HELM_VERSION: &str = "3.16.3";

/// Publishes the pinned k3s and helm releases under `dir` (see bosun-fixtures).
fn publish_releases(dir: &Path) {
    bosun_fixtures::publish_releases(dir, K3S_VERSION, HELM_VERSION);
}

fn apply(hb: &HostBox) -> Run {
    Run::from_command(
        hb.command(
            &[
                "/usr/local/sbin/bosund",
                "apply",
                "/root/bootstrap.toml",
                "--vars-file",
                "/root/vars.toml",
                "--output",
                "json",
            ],
            &[],
        ),
        None,
    )
}

#[test]
fn bootstrap_brings_up_docker_k3s_and_helm_then_changes_nothing() {
    HostBox::available().expect("host box prerequisites");
    let releases = tempfile::tempdir().unwrap();
    publish_releases(releases.path());
    let server = ArtifactServer::serve(releases.path()).unwrap();

    let hb = HostBox::boot().expect("booting a host box");
    hb.copy_in(Path::new(BOSUND), "/usr/local/sbin/bosund")
        .unwrap();
    let playbook = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks/bootstrap.toml");
    hb.copy_in(&playbook, "/root/bootstrap.toml").unwrap();
    let vars = format!(
        r#"k3s_mirror = "{url}/k3s"
helm_mirror = "{url}/helm"
k3s_version = "{K3S_VERSION}"
helm_version = "{HELM_VERSION}"

[docker_daemon]
iptables = false
ip-forward = false
bridge = "none"
"#,
        url = server.url()
    );
    hb.write_file("/root/vars.toml", vars.as_bytes(), 0o600)
        .unwrap();

    let first = apply(&hb);
    let s = first.summary();
    assert_eq!((first.code, s.failed), (0, 0), "{first:#?}");
    assert!(s.changed >= 5, "{first:#?}");

    // Docker answers, with the small-host defaults and the box's settings merged.
    let driver = hb
        .sh("docker info --format '{{.LoggingDriver}} {{.LiveRestoreEnabled}}'")
        .unwrap();
    assert_eq!(driver.trim(), "local true");
    // k3s runs under systemd and its node is Ready at the pinned version.
    assert_eq!(hb.sh("systemctl is-active k3s").unwrap().trim(), "active");
    let nodes: serde_json::Value =
        serde_json::from_str(&hb.sh("k3s kubectl get nodes -o json").unwrap()).unwrap();
    let node = &nodes["items"][0];
    assert_eq!(node["status"]["nodeInfo"]["kubeletVersion"], K3S_VERSION);
    let ready = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    assert!(ready, "{node:#}");
    // helm is installed at the pinned version.
    let helm = hb.sh("/usr/local/bin/helm version --short").unwrap();
    assert!(helm.starts_with(&format!("v{HELM_VERSION}")), "{helm}");
    let k3s_pid = hb.sh("systemctl show -p MainPID --value k3s").unwrap();

    let second = apply(&hb);
    let s = second.summary();
    assert_eq!((second.code, s.changed, s.failed), (0, 0, 0), "{second:#?}");
    // Nothing was restarted or downloaded again.
    assert_eq!(
        hb.sh("systemctl show -p MainPID --value k3s").unwrap(),
        k3s_pid
    );
    let k3s_file = if std::env::consts::ARCH == "aarch64" {
        "k3s-arm64"
    } else {
        "k3s"
    };
    assert_eq!(
        server.downloads(&format!("/k3s/{K3S_VERSION}/{k3s_file}")),
        1
    );
}

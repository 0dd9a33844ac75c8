//! `playbooks/bootstrap.toml` and `playbooks/edge.toml` as shipped, on a real Debian host
//! booted with systemd (`HostBox`): packages from the Debian mirror, Docker, k3s and Helm, then
//! the ingress behind CloudFront (`[edge]`: Traefik left on, its HelmChartConfig written into
//! k3s's manifests directory with the origin secret read from SSM in moto), then second runs
//! of both that change nothing.
//!
//! k3s and helm cannot be fetched here: their release files are `fake-k3s` and `fake-helm`
//! (bosun-fixtures), which honour the command-line contract bosun uses, served in the real
//! release layout from a loopback HTTP server the box reaches through the shared network. The
//! Docker settings the box needs (`iptables`, `ip-forward` and `bridge` off: /proc/sys is
//! read-only in a container) are this test's vars, not the playbook's defaults.

mod common;

use std::path::Path;

use bosun_harness::{ArtifactServer, HostBox, Moto};
use common::{BOSUND, Run};

const K3S_VERSION: &str = "v1.31.4+k3s1";
const HELM_VERSION: &str = "3.16.3";

/// Publishes the pinned k3s and helm releases under `dir` (see bosun-fixtures).
fn publish_releases(dir: &Path) {
    bosun_fixtures::publish_releases(dir, K3S_VERSION, HELM_VERSION);
}

fn apply(hb: &HostBox, playbook: &str, env: &[(&str, &str)]) -> Run {
    Run::from_command(
        hb.command(
            &[
                "/usr/local/sbin/bosund",
                "apply",
                playbook,
                "--vars-file",
                "/root/vars.toml",
                "--output",
                "json",
            ],
            env,
        ),
        None,
    )
}

/// Where k3s reads manifests (its default data dir), and the file edge.toml writes there.
const EDGE_MANIFEST: &str = "/var/lib/rancher/k3s/server/manifests/bosun-traefik-edge.yaml";
const ORIGIN_PARAMETER: &str = "/bosun/box/edge/origin-secret";
const ORIGIN_SECRET: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// The origin secret in moto's Parameter Store, as `bosun up` leaves it.
fn put_origin_secret(moto: &Moto) {
    let rt = common::runtime();
    let client = aws_sdk_ssm::Client::new(&common::moto_sdk_config(&rt, moto));
    rt.block_on(
        client
            .put_parameter()
            .name(ORIGIN_PARAMETER)
            .value(ORIGIN_SECRET)
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .send(),
    )
    .unwrap();
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
    let playbooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks");
    hb.copy_in(&playbooks.join("bootstrap.toml"), "/root/bootstrap.toml")
        .unwrap();
    hb.copy_in(&playbooks.join("edge.toml"), "/root/edge.toml")
        .unwrap();
    hb.sh("mkdir -p /root/templates").unwrap();
    hb.copy_in(
        &playbooks.join("templates/traefik-edge.j2"),
        "/root/templates/traefik-edge.j2",
    )
    .unwrap();
    let moto = Moto::start().expect("start moto");
    put_origin_secret(&moto);
    let aws_env: Vec<(String, String)> = moto.env();
    let aws_env: Vec<(&str, &str)> = aws_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let vars = format!(
        r#"k3s_mirror = "{url}/k3s"
helm_mirror = "{url}/helm"
k3s_version = "{K3S_VERSION}"
helm_version = "{HELM_VERSION}"
# What `bosun up` adds with [edge] (StackConfig::first_boot_vars).
origin_secret_parameter = "{ORIGIN_PARAMETER}"

[k3s_config]
disable = ["servicelb", "metrics-server"]

[docker_daemon]
iptables = false
ip-forward = false
bridge = "none"
"#,
        url = server.url()
    );
    hb.write_file("/root/vars.toml", vars.as_bytes(), 0o600)
        .unwrap();

    let first = apply(&hb, "/root/bootstrap.toml", &[]);
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
    // With [edge], k3s's bundled Traefik stays on.
    let k3s_config = hb.sh("cat /etc/rancher/k3s/config.yaml").unwrap();
    assert!(
        k3s_config.contains("servicelb") && !k3s_config.contains("traefik"),
        "{k3s_config}"
    );

    // The ingress behind CloudFront: the secret comes from SSM (moto), the HelmChartConfig
    // lands where k3s reads manifests, root-only.
    let edge = apply(&hb, "/root/edge.toml", &aws_env);
    let s = edge.summary();
    assert_eq!((edge.code, s.failed), (0, 0), "{edge:#?}");
    assert!(s.changed >= 1, "{edge:#?}");
    let manifest = hb.sh(&format!("cat {EDGE_MANIFEST}")).unwrap();
    let config: serde_norway::Value = serde_norway::from_str(&manifest).unwrap();
    assert_eq!(config["kind"], "HelmChartConfig");
    assert_eq!(config["metadata"]["name"], "traefik");
    assert_eq!(config["metadata"]["namespace"], "kube-system");
    let values: serde_norway::Value =
        serde_norway::from_str(config["spec"]["valuesContent"].as_str().unwrap()).unwrap();
    let objects = values["extraObjects"].as_sequence().unwrap();
    let route = objects
        .iter()
        .find(|o| o["kind"] == "IngressRoute")
        .unwrap();
    assert_eq!(
        route["spec"]["routes"][0]["match"],
        format!("Headers(`X-Origin-Verify`, `{ORIGIN_SECRET}`)").as_str()
    );
    let args = format!("{:?}", values["additionalArguments"]);
    assert!(
        args.contains("kube-system-origin-verify@kubernetescrd"),
        "{args}"
    );
    assert!(args.contains("forwardedheaders.insecure=true"), "{args}");
    assert!(
        objects
            .iter()
            .any(|o| o["spec"]["forwardAuth"].is_mapping())
    );
    assert_eq!(values["ports"]["web"]["hostPort"], 80);
    assert!(values["resources"]["limits"]["memory"].is_string());
    assert_eq!(
        hb.sh(&format!("stat -c %a {EDGE_MANIFEST}"))
            .unwrap()
            .trim(),
        "600"
    );
    // The secret is never shown: the diff and messages carry it masked.
    let events = serde_json::to_string(&edge.events).unwrap();
    assert!(!events.contains(ORIGIN_SECRET), "{events}");

    let second = apply(&hb, "/root/bootstrap.toml", &[]);
    let s = second.summary();
    assert_eq!((second.code, s.changed, s.failed), (0, 0, 0), "{second:#?}");
    let edge_again = apply(&hb, "/root/edge.toml", &aws_env);
    let s = edge_again.summary();
    assert_eq!(
        (edge_again.code, s.changed, s.failed),
        (0, 0, 0),
        "{edge_again:#?}"
    );
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

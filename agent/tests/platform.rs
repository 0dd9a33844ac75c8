//! playbooks/platform.toml as shipped, through the built `bosund`, against the k3s and helm
//! stand-ins (real ones cannot be fetched here; tests/fixtures/src/bin/fake-{k3s,helm}.rs say
//! what of their contracts they honour). The capacity check reads the cluster through the
//! `kubectl` link to fake-k3s (its node's memory set per test) before any step runs.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bosun_model::event::StepStatus;
use common::{Run, Sandbox, summary};

const K3S: &str = "v1.31.4+k3s1";

/// A running fake k3s server whose node reports `memory`, with `kubectl` linked in `bin/`.
struct Cluster {
    sb: Sandbox,
    server: Child,
}

impl Cluster {
    fn start(memory: &str) -> Cluster {
        let sb = Sandbox::new();
        let bin = sb.path("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let k3s = bin.join("k3s");
        std::fs::write(&k3s, bosun_fixtures::k3s_release(K3S)).unwrap();
        std::fs::set_permissions(&k3s, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::os::unix::fs::symlink(&k3s, bin.join("kubectl")).unwrap();
        let config = sb.write(
            "k3s/config.yaml",
            &format!(
                "data-dir: {}\nwrite-kubeconfig: {}\n",
                sb.path("k3s/data").display(),
                sb.path("k3s/k3s.yaml").display()
            ),
        );
        sb.write("k3s/data/fake-k3s/node-memory", memory);
        let sock = sb.path("notify.sock");
        let notify = UnixDatagram::bind(&sock).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        // Another test thread that forks while this file is still open for writing makes the
        // exec fail with ETXTBSY until that child has exec'd (its copy of the descriptor is
        // close-on-exec): try again, a bounded number of times.
        let mut tries = 0;
        let server = loop {
            match Command::new(&k3s)
                .args(["server", "--config"])
                .arg(&config)
                .env("NOTIFY_SOCKET", &sock)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
            {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 1000 => {
                    tries += 1;
                    std::thread::yield_now();
                }
                other => break other.unwrap(),
            }
        };
        // READY=1 comes once the kubeconfig is written and kubectl gets answers.
        let mut buf = [0u8; 256];
        let n = notify
            .recv(&mut buf)
            .expect("fake k3s sent no READY within 20 s");
        assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
        Cluster { sb, server }
    }

    fn playbook() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks/platform.toml")
    }

    /// `bosund apply playbooks/platform.toml` with the stand-ins and `vars`.
    fn apply(&self, vars: &[&str]) -> Run {
        self.apply_with(&[], vars)
    }

    /// [`Cluster::apply`] with more flags for `bosund apply`.
    fn apply_with(&self, flags: &[&str], vars: &[&str]) -> Run {
        let mut cmd = self.sb.bosund();
        let path = format!(
            "{}:{}",
            self.sb.path("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.env("PATH", path)
            .env("FAKE_HELM_STATE", self.sb.path("helm"))
            .arg("apply")
            .arg(Self::playbook())
            .args(["--output", "json"])
            .args(flags);
        let fixed = [
            format!("kubeconfig={}", self.sb.path("k3s/k3s.yaml").display()),
            format!("helm={}", bosun_fixtures::bin("fake-helm").display()),
            format!("k3s_manifests_dir={}", self.sb.path("manifests").display()),
        ];
        for v in fixed.iter().map(String::as_str).chain(vars.iter().copied()) {
            cmd.args(["--var", v]);
        }
        Run::from_command(cmd, None)
    }

    /// The releases fake helm holds, by name.
    fn releases(&self) -> Vec<String> {
        let out = Command::new(bosun_fixtures::bin("fake-helm"))
            .env("FAKE_HELM_STATE", self.sb.path("helm"))
            .env_remove("KUBECONFIG")
            .args(["list", "-A", "-o", "json"])
            .output()
            .unwrap();
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let mut names: Vec<String> = list
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

#[test]
fn learner_installs_on_a_1_gib_node_and_a_second_run_changes_nothing_but_full_is_refused() {
    let c = Cluster::start("1Gi");
    let first = c.apply(&["profile=learner"]);
    first.assert_success();
    assert_eq!(c.releases(), ["prometheus", "prometheus-blackbox-exporter"]);
    assert!(c.sb.path("manifests/bosun-traefik.yaml").is_file());
    let second = c.apply(&["profile=learner"]);
    second.assert_success();
    assert_eq!(second.summary().changed, 0, "{:?}", second.summary());

    // The full profile on the same node: refused before any step, with the table.
    let c = Cluster::start("1Gi");
    let full = c.apply(&[
        "profile=full",
        &format!("secrets_dir={}", c.sb.path("secrets").display()),
    ]);
    assert_eq!(full.summary(), summary(0, 0, 1, 0));
    let refusal = full.step("[capacity]");
    assert_eq!(refusal.status, StepStatus::Failed);
    let message = refusal.message.clone().unwrap_or_default();
    for part in [
        "refused before anything was installed",
        "jenkins",
        "sonarqube",
        "kafka",
        "logs",
        "room on the cluster (1 node): allocatable 1 CPU, 924Mi, already requested 200m CPU, 140Mi",
        "the smallest instance type that fits is t3.xlarge",
    ] {
        assert!(message.contains(part), "{part:?} missing in:\n{message}");
    }
    assert!(!c.sb.path("secrets").exists(), "a step ran");
    assert!(!c.sb.path("helm/calls.jsonl").exists(), "helm was called");
    assert!(c.releases().is_empty());
    assert!(!c.sb.path("manifests").exists(), "a manifest was written");
}

#[test]
fn small_installs_on_an_8_gib_node() {
    let c = Cluster::start("8Gi");
    let run = c.apply(&["profile=small"]);
    run.assert_success();
    assert_eq!(
        c.releases(),
        [
            "grafana",
            "jenkins",
            "prometheus",
            "prometheus-blackbox-exporter"
        ]
    );
}

/// A cluster whose kubeconfig is there but which cannot be read (its server is down): the run
/// is refused before anything is installed, saying why and how to go on; `--skip-capacity`
/// goes on without the check.
#[test]
fn a_cluster_that_cannot_be_read_is_refused_unless_the_check_is_skipped() {
    let mut c = Cluster::start("8Gi");
    c.server.kill().unwrap();
    c.server.wait().unwrap();
    let refused = c.apply(&["profile=learner"]);
    assert_eq!(refused.summary(), summary(0, 0, 1, 0));
    let report = refused.step("[capacity]");
    assert_eq!(report.status, StepStatus::Failed);
    let message = report.message.clone().unwrap_or_default();
    for part in [
        "refused before anything was installed",
        "the cluster's room cannot be read",
        "kubectl get nodes -o json exited",
        "--skip-capacity",
    ] {
        assert!(message.contains(part), "{part:?} missing in:\n{message}");
    }
    assert!(!c.sb.path("helm/calls.jsonl").exists(), "helm was called");
    assert!(!c.sb.path("manifests").exists(), "a manifest was written");

    let skipped = c.apply_with(&["--skip-capacity"], &["profile=learner"]);
    assert!(!skipped.ran("[capacity]"), "{:?}", skipped.statuses());
    // The steps ran: the ingress manifest is written, then helm is called.
    assert!(c.sb.path("manifests/bosun-traefik.yaml").is_file());
    assert!(
        c.sb.path("helm/calls.jsonl").exists(),
        "helm was not called"
    );
}

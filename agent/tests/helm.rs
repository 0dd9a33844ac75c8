//! `helm_install` and `helm_release` through the built `bosund`.
//!
//! helm cannot be fetched on the machines these tests run on (and a real one would need a
//! cluster), so `fake-helm` (tests/fixtures/src/bin/fake-helm.rs) stands in for it: it honours
//! helm's command-line contract and output shapes, keeps its releases in a state directory
//! (`FAKE_HELM_STATE`, inside each test's sandbox), logs every call, and fails on request. The
//! tests read the release back through the fake's own `helm list/get values/history`, as an
//! operator would.
//!
//! `helm_install` downloads from an `ArtifactServer` (bosun-harness) serving a real-layout
//! release: `helm-v3.16.2-linux-<arch>.tar.gz` holding `linux-<arch>/helm` (the fake, built to
//! report that version) and its `.sha256sum`.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use bosun_harness::ArtifactServer;
use bosun_model::event::StepStatus;
use common::{Run, Sandbox, mode, summary};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// helm_release
// ---------------------------------------------------------------------------------------------

/// A sandbox with a fake helm's state directory and a kubeconfig for it.
struct Cluster {
    sb: Sandbox,
    fake: PathBuf,
    state: PathBuf,
    kubeconfig: PathBuf,
}

impl Cluster {
    fn new() -> Self {
        let sb = Sandbox::new();
        let kubeconfig = sb.write("kubeconfig.yaml", "apiVersion: v1\nkind: Config\n");
        let state = sb.path("helm-state");
        Cluster {
            fake: bosun_fixtures::bin("fake-helm"),
            sb,
            state,
            kubeconfig,
        }
    }

    /// A playbook with one `helm_release` step called "release": release `web` of chart
    /// `example/nginx` at `version` in namespace `web` (created unless `extra` sets
    /// `create_namespace`), with `extra` (`, key = value` pairs) added to the step's table.
    fn playbook(&self, version: &str, extra: &str) -> PathBuf {
        let extra = if extra.contains("create_namespace") {
            extra.to_string()
        } else {
            format!(", create_namespace = true{extra}")
        };
        self.sb.playbook(&format!(
            r#"
name = "t"
[[step]]
name = "release"
helm_release = {{ name = "web", chart = "example/nginx", version = "{version}", namespace = "web", timeout = "5m", kubeconfig = "{kc}", helm = "{helm}"{extra} }}
"#,
            kc = self.kubeconfig.display(),
            helm = self.fake.display(),
        ))
    }

    /// `bosund apply PLAYBOOK --output json ARGS` with the fake's state directory.
    fn apply(&self, playbook: &Path, args: &[&str]) -> Run {
        let mut cmd = self.sb.bosund();
        cmd.env("FAKE_HELM_STATE", &self.state)
            .arg("apply")
            .arg(playbook)
            .args(["--output", "json"])
            .args(args);
        Run::from_command(cmd, None)
    }

    /// Runs the fake helm itself: (exit code, stdout, stderr).
    fn helm(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(&self.fake)
            .env("FAKE_HELM_STATE", &self.state)
            .env_remove("KUBECONFIG")
            .args(args)
            .output()
            .expect("running fake-helm");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn helm_json(&self, args: &[&str]) -> Value {
        let (rc, stdout, stderr) = self.helm(args);
        assert_eq!(rc, 0, "fake-helm {args:?} failed: {stderr}");
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?} printed {stdout:?}: {e}"))
    }

    /// The release `web` as `helm list --all` shows it (any status).
    fn release(&self) -> Option<Value> {
        let list = self.helm_json(&["list", "-n", "web", "--all", "-o", "json"]);
        list.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "web")
            .cloned()
    }

    fn values(&self) -> Value {
        self.helm_json(&["get", "values", "web", "-n", "web", "-o", "json"])
    }

    fn history(&self) -> Vec<(u64, String, String)> {
        let h = self.helm_json(&["history", "web", "-n", "web", "-o", "json"]);
        h.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["revision"].as_u64().unwrap(),
                    r["status"].as_str().unwrap().to_string(),
                    r["chart"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// Every call the fake received, in order (its own arguments, without the program).
    fn calls(&self) -> Vec<Vec<String>> {
        match fs::read_to_string(self.state.join("calls.jsonl")) {
            Ok(text) => text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The commands (first argument) of the calls after the first `from`.
    fn commands_since(&self, from: usize) -> Vec<String> {
        self.calls()[from..].iter().map(|c| c[0].clone()).collect()
    }

    /// Makes the fake's next operation of that kind fail (see fake-helm's doc comment).
    fn inject(&self, marker: &str) {
        fs::create_dir_all(&self.state).unwrap();
        fs::write(self.state.join(marker), "").unwrap();
    }

    /// The fake's release store, byte for byte (`None` when it was never written).
    fn stored(&self) -> Option<Vec<u8>> {
        fs::read(self.state.join("state.json")).ok()
    }
}

fn message(run: &Run) -> String {
    run.step("release").message.clone().unwrap_or_default()
}

#[test]
fn installs_with_merged_values_then_a_second_run_is_ok_without_an_upgrade() {
    let c = Cluster::new();
    let base = c.sb.write(
        "values/base.yaml",
        "replicas: 1\nimage:\n  repository: nginx\n  tag: '1.27'\nports: [80, 443]\n",
    );
    c.sb.write(
        "values/prod.yaml",
        "image:\n  tag: '1.27.2'\nports: [8080]\n",
    );
    let pb = c.playbook(
        "1.2.3",
        r#", values_files = ["values/base.yaml", "values/prod.yaml"], values = { replicas = 2, resources = { limits = { memory = "128Mi" } } }"#,
    );

    // The values set requests, so the engine's capacity check wants the cluster's room; this
    // test has helm's stand-in and no cluster to read it from (a machine with a real kubectl
    // gets an error from it, one without gets none): go on without the check.
    let first = c.apply(&pb, &["--skip-capacity"]);
    first.assert_success();
    assert_eq!(first.step("release").status, StepStatus::Changed);
    let msg = message(&first);
    assert!(
        msg.contains("installed web (nginx-1.2.3) in namespace web as revision 1"),
        "{msg}"
    );
    let release = c.release().expect("release web exists");
    assert_eq!(release["revision"], "1");
    assert_eq!(release["status"], "deployed");
    assert_eq!(release["chart"], "nginx-1.2.3");
    // Files merged in order (maps deep, lists replaced), the inline table on top.
    assert_eq!(
        c.values(),
        json!({
            "replicas": 2,
            "image": {"repository": "nginx", "tag": "1.27.2"},
            "ports": [8080],
            "resources": {"limits": {"memory": "128Mi"}},
        })
    );
    let diff = first.step("release").diff.clone().unwrap_or_default();
    assert!(
        diff.contains("--- /dev/null") && diff.contains("+replicas: 2"),
        "{diff}"
    );

    // The upgrade call: pinned version, namespace created, values reset to exactly ours, files
    // in order with the inline values last, wait with helm's timeout, the kubeconfig.
    let upgrade = c
        .calls()
        .into_iter()
        .find(|a| a[0] == "upgrade")
        .expect("an upgrade call");
    let joined = upgrade.join(" ");
    for part in [
        "upgrade web example/nginx --install",
        "--version 1.2.3",
        "--namespace web",
        "--create-namespace",
        "--reset-values",
        "--wait",
        "--timeout 300s",
    ] {
        assert!(joined.contains(part), "{part:?} missing in {joined}");
    }
    assert!(
        joined.contains(&format!("--kubeconfig {}", c.kubeconfig.display())),
        "{joined}"
    );
    let files: Vec<&String> = upgrade
        .iter()
        .zip(upgrade.iter().skip(1))
        .filter(|(flag, _)| *flag == "--values")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(files.len(), 3, "{joined}");
    assert_eq!(files[0], &base.display().to_string());
    assert!(
        files[1].ends_with("values/prod.yaml") && files[2].ends_with(".json"),
        "{joined}"
    );

    let calls_before = c.calls().len();
    let second = c.apply(&pb, &["--skip-capacity"]);
    second.assert_success();
    assert_eq!(second.summary(), summary(1, 0, 0, 0));
    let msg = message(&second);
    assert!(
        msg.contains("is deployed: nginx-1.2.3 with the wanted values (revision 1)"),
        "{msg}"
    );
    let commands = c.commands_since(calls_before);
    assert!(
        !commands.is_empty(),
        "the second run did not look at the release"
    );
    assert!(
        commands.iter().all(|c| c == "list" || c == "get"),
        "the second run changed the release: {commands:?}"
    );
    assert_eq!(c.release().unwrap()["revision"], "1");
}

/// Release names with hyphens (most platform releases: `node-exporter`, `kafka-connect`): bosun
/// finds its release with `helm list --filter ^name$` where the name is regex-escaped
/// (`^my\-app$`), which helm (and the fake, since it models the filter as helm's regular
/// expression) matches; a neighbour whose name starts the same is not taken for it.
#[test]
fn hyphenated_release_names_are_found_so_a_second_run_changes_nothing() {
    let c = Cluster::new();
    let pb = c.sb.playbook(&format!(
        r#"
name = "t"
[[step]]
name = "my-app"
helm_release = {{ name = "my-app", chart = "example/nginx", version = "1.0.0", namespace = "web", create_namespace = true, kubeconfig = "{kc}", helm = "{helm}" }}
[[step]]
name = "my-app-canary"
helm_release = {{ name = "my-app-canary", chart = "example/nginx", version = "2.0.0", namespace = "web", create_namespace = true, kubeconfig = "{kc}", helm = "{helm}" }}
"#,
        kc = c.kubeconfig.display(),
        helm = c.fake.display(),
    ));
    let first = c.apply(&pb, &[]);
    first.assert_success();
    assert_eq!(first.summary(), summary(0, 2, 0, 0));
    let calls_before = c.calls().len();
    let second = c.apply(&pb, &[]);
    second.assert_success();
    assert_eq!(second.summary(), summary(2, 0, 0, 0));
    assert!(
        c.commands_since(calls_before)
            .iter()
            .all(|c| c == "list" || c == "get"),
        "the second run changed a release"
    );
    let msg = second.step("my-app").message.clone().unwrap_or_default();
    assert!(msg.contains("nginx-1.0.0"), "{msg}");
}

#[test]
fn a_values_change_upgrades_to_revision_2_with_a_diff_then_a_chart_version_change_to_3() {
    let c = Cluster::new();
    let v1 = c.playbook(
        "1.2.3",
        r#", values = { replicas = 1, image = { tag = "1.27" } }"#,
    );
    c.apply(&v1, &[]).assert_success();
    assert_eq!(c.release().unwrap()["revision"], "1");

    let v2 = c.playbook(
        "1.2.3",
        r#", values = { replicas = 2, image = { tag = "1.27" } }"#,
    );
    let run = c.apply(&v2, &[]);
    run.assert_success();
    let report = run.step("release");
    assert_eq!(report.status, StepStatus::Changed);
    let msg = message(&run);
    assert!(msg.contains("upgraded web to revision 2"), "{msg}");
    let diff = report.diff.clone().expect("a diff of the values");
    assert!(diff.contains("--- web values (revision 1)"), "{diff}");
    assert!(diff.contains("+++ web values (wanted)"), "{diff}");
    assert!(
        diff.contains("-replicas: 1") && diff.contains("+replicas: 2"),
        "{diff}"
    );
    assert!(
        !diff.contains("-image:"),
        "an unchanged key is shown as changed: {diff}"
    );
    assert_eq!(c.release().unwrap()["revision"], "2");
    assert_eq!(c.values()["replicas"], 2);

    let v3 = c.playbook(
        "1.3.0",
        r#", values = { replicas = 2, image = { tag = "1.27" } }"#,
    );
    let run = c.apply(&v3, &[]);
    run.assert_success();
    let msg = message(&run);
    assert!(
        msg.contains("upgraded web to revision 3 (nginx-1.2.3 → nginx-1.3.0)"),
        "{msg}"
    );
    assert!(
        run.step("release").diff.is_none(),
        "values did not change, yet a diff is shown"
    );
    let release = c.release().unwrap();
    assert_eq!(
        (release["revision"].as_str(), release["chart"].as_str()),
        (Some("3"), Some("nginx-1.3.0"))
    );

    // Values removed from the playbook are removed from the release (no reuse of old values).
    let v4 = c.playbook("1.3.0", "");
    c.apply(&v4, &[]).assert_success();
    assert_eq!(c.values(), Value::Null);
    assert_eq!(c.apply(&v4, &[]).summary(), summary(1, 0, 0, 0));
}

#[test]
fn a_failed_upgrade_rolls_back_to_the_last_deployed_revision_and_fails_the_step() {
    let c = Cluster::new();
    let good = c.playbook("1.2.3", r#", values = { replicas = 1 }"#);
    c.apply(&good, &[]).assert_success();

    c.inject("fail-next-upgrade");
    let bad = c.playbook("1.3.0", r#", values = { replicas = 2 }"#);
    let run = c.apply(&bad, &[]);
    assert_eq!(run.code, 1, "a failed step exits 1: {run:#?}");
    assert_eq!(run.summary(), summary(0, 0, 1, 0));
    let msg = message(&run);
    assert!(
        msg.contains("UPGRADE FAILED: context deadline exceeded"),
        "{msg}"
    );
    assert!(
        msg.contains("rolled back to revision 1 (nginx-1.2.3)"),
        "{msg}"
    );

    // Revision 2 failed; revision 3 is revision 1 again: its chart and its values.
    assert_eq!(
        c.history(),
        vec![
            (1, "superseded".into(), "nginx-1.2.3".into()),
            (2, "superseded".into(), "nginx-1.3.0".into()),
            (3, "deployed".into(), "nginx-1.2.3".into()),
        ]
    );
    assert_eq!(c.values(), json!({"replicas": 1}));

    // Once the cause is gone, the next run upgrades.
    let run = c.apply(&bad, &[]);
    run.assert_success();
    assert!(
        message(&run).contains("upgraded web to revision 4"),
        "{}",
        message(&run)
    );
    assert_eq!(c.release().unwrap()["chart"], "nginx-1.3.0");
}

#[test]
fn a_failed_first_install_is_uninstalled_and_the_next_run_installs() {
    let c = Cluster::new();
    c.inject("fail-next-upgrade");
    let pb = c.playbook("1.2.3", "");
    let run = c.apply(&pb, &[]);
    assert_eq!(run.code, 1);
    let msg = message(&run);
    assert!(msg.contains("helm install of web failed"), "{msg}");
    assert!(msg.contains("the failed release was uninstalled"), "{msg}");
    assert_eq!(c.release(), None, "the failed release is still there");

    c.apply(&pb, &[]).assert_success();
    assert_eq!(c.release().unwrap()["status"], "deployed");
}

/// helm killed during an uninstall leaves the release `uninstalling` (some resources gone):
/// the step finishes the uninstall and installs fresh, never rolls the half-deleted release
/// back; a status no helm writes (`unknown`) fails the step without touching anything.
#[test]
fn a_release_left_uninstalling_is_uninstalled_then_installed_and_unknown_is_refused() {
    let c = Cluster::new();
    let v1 = c.playbook("1.2.3", r#", values = { replicas = 1 }"#);
    c.apply(&v1, &[]).assert_success();
    c.inject("leave-uninstalling");
    let (rc, _, _) = c.helm(&["uninstall", "web", "-n", "web"]);
    assert_eq!(rc, 137);
    assert_eq!(c.release().unwrap()["status"], "uninstalling");

    let check = c.apply(&v1, &["--check"]);
    check.assert_success();
    let msg = message(&check);
    assert!(
        msg.contains("web was left uninstalling (revision 1")
            && msg.contains("would finish the uninstall, then install"),
        "{msg}"
    );
    let from = c.calls().len();
    let run = c.apply(&v1, &[]);
    run.assert_success();
    let msg = message(&run);
    assert!(
        msg.contains("finished the uninstall of web that had stopped mid-way (revision 1 was left uninstalling)")
            && msg.contains("installed web (nginx-1.2.3) in namespace web as revision 1"),
        "{msg}"
    );
    let commands = c.commands_since(from);
    assert!(!commands.iter().any(|c| c == "rollback"), "{commands:?}");
    assert_eq!(
        c.history(),
        vec![(1, "deployed".to_string(), "nginx-1.2.3".to_string())]
    );
    assert_eq!(c.values(), json!({"replicas": 1}));

    // A status no helm action writes: refused, nothing run but the looks.
    let mut state: Value = serde_json::from_slice(&c.stored().unwrap()).unwrap();
    for r in state["revisions"].as_array_mut().unwrap() {
        r["status"] = "unknown".into();
    }
    fs::write(
        c.state.join("state.json"),
        serde_json::to_vec(&state).unwrap(),
    )
    .unwrap();
    let before = c.stored();
    let from = c.calls().len();
    let run = c.apply(&v1, &[]);
    assert_eq!(run.step("release").status, StepStatus::Failed);
    let msg = message(&run);
    assert!(
        msg.contains("revision 1 has status \"unknown\", which no helm action writes")
            && msg.contains("helm history web -n web"),
        "{msg}"
    );
    assert_eq!(c.stored(), before);
    assert!(
        c.commands_since(from)
            .iter()
            .all(|c| c == "list" || c == "get" || c == "history"),
        "{:?}",
        c.commands_since(from)
    );
}

#[test]
fn a_release_left_pending_upgrade_is_rolled_back_then_upgraded() {
    let c = Cluster::new();
    let v1 = c.playbook("1.2.3", r#", values = { replicas = 1 }"#);
    c.apply(&v1, &[]).assert_success();

    // A helm killed during an upgrade leaves the release pending; helm then refuses upgrades.
    c.inject("leave-pending");
    let (rc, _, _) = c.helm(&[
        "upgrade",
        "web",
        "example/nginx",
        "--install",
        "--version",
        "1.3.0",
        "-n",
        "web",
    ]);
    assert_eq!(rc, 137);
    assert_eq!(c.release().unwrap()["status"], "pending-upgrade");
    let (rc, _, stderr) = c.helm(&[
        "upgrade",
        "web",
        "example/nginx",
        "--install",
        "--version",
        "1.3.0",
        "-n",
        "web",
    ]);
    assert_eq!(rc, 1);
    assert!(stderr.contains("another operation"), "{stderr}");

    let v2 = c.playbook("1.3.0", r#", values = { replicas = 2 }"#);
    let check = c.apply(&v2, &["--check"]);
    check.assert_success();
    let msg = message(&check);
    assert!(
        msg.contains("stuck in pending-upgrade (revision 2): would roll back to revision 1"),
        "{msg}"
    );

    let run = c.apply(&v2, &[]);
    run.assert_success();
    assert_eq!(run.step("release").status, StepStatus::Changed);
    let msg = message(&run);
    assert!(
        msg.contains("recovered web from pending-upgrade: rolled back to revision 1"),
        "{msg}"
    );
    assert!(
        msg.contains("upgraded web to revision 4 (nginx-1.2.3 → nginx-1.3.0)"),
        "{msg}"
    );
    let diff = run.step("release").diff.clone().unwrap_or_default();
    assert!(
        diff.contains("-replicas: 1") && diff.contains("+replicas: 2"),
        "{diff}"
    );
    let release = c.release().unwrap();
    assert_eq!(
        (release["status"].as_str(), release["chart"].as_str()),
        (Some("deployed"), Some("nginx-1.3.0"))
    );
    assert_eq!(c.values(), json!({"replicas": 2}));
    assert_eq!(c.apply(&v2, &[]).summary(), summary(1, 0, 0, 0));
}

#[test]
fn an_upgrade_killed_midway_is_not_rolled_back_at_once_and_the_next_run_recovers_it() {
    let c = Cluster::new();
    c.apply(&c.playbook("1.2.3", ""), &[]).assert_success();

    // This time the helm that bosun runs is the one killed mid-upgrade.
    c.inject("leave-pending");
    let v2 = c.playbook("1.3.0", "");
    let run = c.apply(&v2, &[]);
    assert_eq!(run.code, 1);
    let msg = message(&run);
    assert!(msg.contains("exit code 137"), "{msg}");
    assert!(
        msg.contains("revision 2 is pending-upgrade") && msg.contains("nothing was rolled back"),
        "{msg}"
    );
    assert_eq!(c.release().unwrap()["status"], "pending-upgrade");
    assert!(
        !c.calls().iter().any(|a| a[0] == "rollback"),
        "{:?}",
        c.calls()
    );

    let run = c.apply(&v2, &[]);
    run.assert_success();
    let msg = message(&run);
    assert!(
        msg.contains("recovered web from pending-upgrade: rolled back to revision 1"),
        "{msg}"
    );
    assert_eq!(c.release().unwrap()["chart"], "nginx-1.3.0");
}

#[test]
fn an_install_into_a_missing_namespace_fails_saying_so_and_records_nothing() {
    let c = Cluster::new();
    let run = c.apply(&c.playbook("1.2.3", ", create_namespace = false"), &[]);
    assert_eq!(run.code, 1);
    let msg = message(&run);
    assert!(msg.contains("namespaces \"web\" not found"), "{msg}");
    assert!(
        msg.contains("helm recorded no release, so there is nothing to roll back"),
        "{msg}"
    );
    assert_eq!(c.release(), None);
    assert!(
        !c.calls()
            .iter()
            .any(|a| a[0] == "rollback" || a[0] == "uninstall"),
        "{:?}",
        c.calls()
    );
}

#[test]
fn a_release_left_pending_install_is_uninstalled_then_installed() {
    let c = Cluster::new();
    c.inject("leave-pending");
    let (rc, _, _) = c.helm(&[
        "upgrade",
        "web",
        "example/nginx",
        "--install",
        "--version",
        "1.2.3",
        "-n",
        "web",
        "--create-namespace",
    ]);
    assert_eq!(rc, 137);
    assert_eq!(c.release().unwrap()["status"], "pending-install");

    let pb = c.playbook("1.2.3", "");
    let run = c.apply(&pb, &[]);
    run.assert_success();
    let msg = message(&run);
    assert!(
        msg.contains("recovered web from pending-install: uninstalled it"),
        "{msg}"
    );
    assert!(
        msg.contains("installed web (nginx-1.2.3) in namespace web as revision 1"),
        "{msg}"
    );
    assert_eq!(
        c.history(),
        vec![(1, "deployed".into(), "nginx-1.2.3".into())]
    );
}

#[test]
fn check_mode_reports_but_changes_no_release() {
    let c = Cluster::new();
    let v1 = c.playbook("1.2.3", r#", values = { replicas = 1 }"#);

    // Nothing installed yet: a change is reported, the fake's store is never written.
    let run = c.apply(&v1, &["--check"]);
    run.assert_success();
    assert_eq!(run.step("release").status, StepStatus::Changed);
    assert!(
        message(&run).contains("would install web (nginx-1.2.3)"),
        "{}",
        message(&run)
    );
    assert_eq!(c.stored(), None, "--check wrote the fake's release store");
    assert!(c.calls().iter().all(|a| a[0] == "list"), "{:?}", c.calls());

    c.apply(&v1, &[]).assert_success();
    let before = c.stored();
    let calls = c.calls().len();
    let v2 = c.playbook("1.3.0", r#", values = { replicas = 3 }"#);
    let run = c.apply(&v2, &["--check", "--diff"]);
    run.assert_success();
    assert_eq!(run.step("release").status, StepStatus::Changed);
    let msg = message(&run);
    assert!(
        msg.contains("would upgrade web: chart nginx-1.2.3 → nginx-1.3.0; values differ"),
        "{msg}"
    );
    let diff = run.step("release").diff.clone().unwrap_or_default();
    assert!(diff.contains("+replicas: 3"), "{diff}");
    assert_eq!(c.stored(), before, "--check changed the release");
    let commands = c.commands_since(calls);
    assert!(
        commands.iter().all(|c| c == "list" || c == "get"),
        "{commands:?}"
    );
}

#[test]
fn a_missing_kubeconfig_fails_with_what_to_do_but_check_mode_reports_an_install() {
    let c = Cluster::new();
    fs::remove_file(&c.kubeconfig).unwrap();
    let pb = c.playbook("1.2.3", "");
    let check = c.apply(&pb, &["--check"]);
    check.assert_success();
    assert!(
        message(&check).contains("once the cluster is up"),
        "{}",
        message(&check)
    );
    let run = c.apply(&pb, &[]);
    assert_eq!(run.code, 1);
    let msg = message(&run);
    assert!(
        msg.contains("does not exist: is k3s installed and running?"),
        "{msg}"
    );
    assert!(
        c.calls().is_empty(),
        "helm was run without a cluster: {:?}",
        c.calls()
    );
}

#[test]
fn the_shipped_helm_release_playbook_installs_from_its_vars() {
    let c = Cluster::new();
    let values = c.sb.write("app-values.yaml", "replicas: 2\n");
    let playbook = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks/helm-release.toml");
    let vars = [
        format!("helm={}", c.fake.display()),
        format!("kubeconfig={}", c.kubeconfig.display()),
        "name=app".to_string(),
        "namespace=apps".to_string(),
        "chart=oci://registry.example/charts/app".to_string(),
        "version=0.4.0".to_string(),
        format!("values_file={}", values.display()),
    ];
    let mut args: Vec<&str> = Vec::new();
    for v in &vars {
        args.extend(["--var", v]);
    }
    let run = c.apply(&playbook, &args);
    run.assert_success();
    assert_eq!(run.summary(), summary(0, 1, 0, 0));
    let list = c.helm_json(&["list", "-n", "apps", "-o", "json"]);
    assert_eq!(list[0]["name"], "app");
    assert_eq!(list[0]["chart"], "app-0.4.0");
    assert_eq!(
        c.helm_json(&["get", "values", "app", "-n", "apps", "-o", "json"]),
        json!({"replicas": 2})
    );
    let upgrade = c.calls().into_iter().find(|a| a[0] == "upgrade").unwrap();
    assert!(
        upgrade.contains(&"oci://registry.example/charts/app".to_string()),
        "{upgrade:?}"
    );
    assert!(
        !upgrade.contains(&"--repo".to_string()),
        "an empty repo_url was passed: {upgrade:?}"
    );
    assert_eq!(c.apply(&playbook, &args).summary(), summary(1, 0, 0, 0));
}

// ---------------------------------------------------------------------------------------------
// helm_install
// ---------------------------------------------------------------------------------------------

/// helm's name for this machine's architecture, as in its release file names.
fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A directory laid out like get.helm.sh: `helm-v{version}-linux-<arch>.tar.gz` (holding
/// `linux-<arch>/helm` reporting `binary_version`, LICENSE and README.md) and its `.sha256sum`
/// (`<hex>  <file>`), whose digest is the tarball's unless `digest` says otherwise.
struct Mirror {
    dir: tempfile::TempDir,
    server: ArtifactServer,
}

impl Mirror {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server = ArtifactServer::serve(dir.path()).unwrap();
        Mirror { dir, server }
    }

    fn tarball_name(version: &str) -> String {
        format!("helm-v{version}-linux-{}.tar.gz", arch())
    }

    /// Publishes release `version`; returns the tarball's bytes.
    fn publish(&self, version: &str, binary_version: &str, digest: Option<&str>) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        let binary = bosun_fixtures::helm_release(binary_version);
        for (name, bytes, mode) in [
            (format!("linux-{}/helm", arch()), binary.as_slice(), 0o755),
            (
                format!("linux-{}/LICENSE", arch()),
                b"Apache License 2.0\n".as_slice(),
                0o644,
            ),
            (
                format!("linux-{}/README.md", arch()),
                b"Helm\n".as_slice(),
                0o644,
            ),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(mode);
            header.set_cksum();
            tar.append_data(&mut header, name, bytes).unwrap();
        }
        let tarball = tar.into_inner().unwrap().finish().unwrap();
        let name = Self::tarball_name(version);
        fs::write(self.dir.path().join(&name), &tarball).unwrap();
        let digest = digest.map_or_else(|| sha256(&tarball), str::to_string);
        let mut sums = fs::File::create(self.dir.path().join(format!("{name}.sha256sum"))).unwrap();
        writeln!(sums, "{digest}  {name}").unwrap();
        tarball
    }

    fn downloads(&self, version: &str) -> usize {
        self.server
            .downloads(&format!("/{}", Self::tarball_name(version)))
    }

    fn playbook(&self, sb: &Sandbox, version: &str) -> PathBuf {
        sb.playbook(&format!(
            r#"
name = "t"
[[step]]
name = "helm"
helm_install = {{ version = "{version}", mirror = "{}/", install_dir = "@ROOT@/bin" }}
"#,
            self.server.url()
        ))
    }
}

/// What `helm version --short` of `binary` prints.
fn reported_version(binary: &Path) -> String {
    let out = Command::new(binary)
        .args(["version", "--short"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} version --short failed",
        binary.display()
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn helm_install_downloads_verifies_and_installs_then_is_ok() {
    let sb = Sandbox::new();
    let mirror = Mirror::new();
    mirror.publish("3.16.2", "v3.16.2", None);
    let pb = mirror.playbook(&sb, "3.16.2");

    let (check, first, second) = common::converge(&sb, &pb);
    let msg = |r: &Run| r.step("helm").message.clone().unwrap_or_default();
    assert!(
        msg(&check).contains("would install helm v3.16.2"),
        "{}",
        msg(&check)
    );
    assert_eq!(first.step("helm").status, StepStatus::Changed);
    assert!(
        msg(&first).contains("installed helm v3.16.2 at"),
        "{}",
        msg(&first)
    );
    let helm = sb.path("bin/helm");
    assert_eq!(mode(&helm), 0o755);
    assert!(
        reported_version(&helm).starts_with("v3.16.2+g"),
        "{}",
        reported_version(&helm)
    );
    assert!(
        msg(&second).contains("helm v3.16.2 is installed"),
        "{}",
        msg(&second)
    );
    // Only the real run downloaded: not --check, not the second run.
    assert_eq!(mirror.downloads("3.16.2"), 1);
    assert_eq!(
        common::listing(&sb.path("bin")),
        vec!["helm"],
        "staging files were left behind"
    );
}

#[test]
fn helm_install_replaces_an_older_helm() {
    let sb = Sandbox::new();
    let mirror = Mirror::new();
    mirror.publish("3.16.2", "v3.16.2", None);
    let helm = sb.path("bin/helm");
    fs::create_dir_all(helm.parent().unwrap()).unwrap();
    fs::write(&helm, bosun_fixtures::helm_release("v3.15.0")).unwrap();
    common::chmod(&helm, 0o755);

    let run = sb.apply(&mirror.playbook(&sb, "v3.16.2"), &[]);
    run.assert_success();
    let msg = run.step("helm").message.clone().unwrap_or_default();
    assert!(
        msg.contains("installed helm v3.16.2") && msg.contains("(was v3.15.0)"),
        "{msg}"
    );
    assert!(
        reported_version(&helm).starts_with("v3.16.2+"),
        "{}",
        reported_version(&helm)
    );
}

#[test]
fn helm_install_refuses_a_checksum_mismatch_and_installs_nothing() {
    let sb = Sandbox::new();
    let mirror = Mirror::new();
    mirror.publish("3.16.2", "v3.16.2", Some(&sha256(b"something else")));
    let helm = sb.path("bin/helm");
    fs::create_dir_all(helm.parent().unwrap()).unwrap();
    let old = bosun_fixtures::helm_release("v3.15.0");
    fs::write(&helm, &old).unwrap();
    common::chmod(&helm, 0o755);

    let run = sb.apply(&mirror.playbook(&sb, "3.16.2"), &[]);
    assert_eq!(run.code, 1);
    let report = run.step("helm");
    assert_eq!(report.status, StepStatus::Failed);
    let msg = report.message.clone().unwrap_or_default();
    assert!(
        msg.contains("checksum mismatch") && msg.contains("nothing was installed"),
        "{msg}"
    );
    assert_eq!(
        mirror.downloads("3.16.2"),
        1,
        "the archive was not even fetched"
    );
    assert_eq!(
        fs::read(&helm).unwrap(),
        old,
        "the installed helm was touched"
    );
    assert_eq!(
        common::listing(&sb.path("bin")),
        vec!["helm"],
        "staging files were left behind"
    );
}

#[test]
fn helm_install_refuses_an_archive_whose_helm_reports_another_version() {
    let sb = Sandbox::new();
    let mirror = Mirror::new();
    mirror.publish("3.16.2", "v3.17.0", None);
    let run = sb.apply(&mirror.playbook(&sb, "3.16.2"), &[]);
    assert_eq!(run.code, 1);
    let msg = run.step("helm").message.clone().unwrap_or_default();
    assert!(
        msg.contains("reports version v3.17.0, not v3.16.2")
            && msg.contains("nothing was installed"),
        "{msg}"
    );
    assert!(
        common::listing(&sb.path("bin")).is_empty(),
        "something was installed"
    );
}

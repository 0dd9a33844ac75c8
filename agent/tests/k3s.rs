//! `k3s_install` and `k3s_upgrade` on a real host: a Debian booted with systemd in a
//! [`HostBox`], driven by the built `bosund` copied into it.
//!
//! Real k3s cannot be fetched on the machines these tests run on, so `fake-k3s`
//! (tests/fixtures/src/bin/fake-k3s/main.rs) stands in for it: it honours k3s's command-line
//! contract (`--version`, `server` with sd_notify READY, `kubectl get nodes|pods -o json`,
//! `kubectl get --raw /readyz`), keeps a file standing for the datastore, and fails on request.
//! Each release is the fake with its version baked in, served by an [`ArtifactServer`] on the
//! host's loopback (the box shares the host's network) in GitHub's layout:
//! `<mirror>/v1.31.4%2Bk3s1/k3s` and `sha256sum-amd64.txt`, beside the update server's channel
//! list. systemd inside the box really runs the unit bosun writes, so `Type=notify`, restarts,
//! stops and `is-active` are systemd's own.
//!
//! Boots are few: one box carries a whole install → upgrade → rollback → step-through story.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use bosun_harness::{ArtifactServer, HostBox};
use bosun_model::event::{RunEvent, StepReport, StepStatus};
use common::{BOSUND, Run, summary};
use serde_json::Value;
use sha2::{Digest, Sha256};

const V30: &str = "v1.30.6+k3s1";
const V31: &str = "v1.31.4+k3s1";
const V32: &str = "v1.32.2+k3s1";
const V33: &str = "v1.33.1+k3s1";
const V34: &str = "v1.34.0+k3s1";
const V35: &str = "v1.35.0+k3s1";
/// Where the state dir lives inside the box (bosund's default as root).
const STATE: &str = "/var/lib/bosun";
const DATA: &str = "/var/lib/rancher/k3s";

/// Release file names for this machine, as k3s names them.
fn arch_files() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "aarch64" => ("k3s-arm64", "sha256sum-arm64.txt"),
        _ => ("k3s", "sha256sum-amd64.txt"),
    }
}

/// A release site: `releases/<version>/...` and `v1-release/channels`, served over HTTP.
struct Releases {
    dir: tempfile::TempDir,
    server: ArtifactServer,
}

impl Releases {
    fn new(versions: &[&str], channels: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server = ArtifactServer::serve(dir.path()).unwrap();
        let r = Releases { dir, server };
        for v in versions {
            r.publish(v);
        }
        let data: Vec<Value> = channels
            .iter()
            .map(|(id, latest)| {
                serde_json::json!({
                    "id": id, "type": "channel", "name": id, "latest": latest,
                    "links": { "self": format!("{}/v1-release/channels/{id}", r.server.url()) },
                })
            })
            .collect();
        let doc =
            serde_json::json!({ "type": "collection", "resourceType": "channels", "data": data });
        std::fs::create_dir_all(r.dir.path().join("v1-release")).unwrap();
        std::fs::write(r.dir.path().join("v1-release/channels"), doc.to_string()).unwrap();
        r
    }

    fn release_dir(&self, version: &str) -> PathBuf {
        self.dir.path().join("releases").join(version)
    }

    /// Writes the binary and its checksum list, as GitHub lays a release out.
    fn publish(&self, version: &str) {
        let (binary, sums) = arch_files();
        let dir = self.release_dir(version);
        std::fs::create_dir_all(&dir).unwrap();
        let bytes = bosun_fixtures::k3s_release(version);
        let digest = hex::encode(Sha256::digest(&bytes));
        std::fs::write(dir.join(binary), bytes).unwrap();
        let other = "0".repeat(64);
        std::fs::write(
            dir.join(sums),
            format!("{other}  k3s-airgap-images-amd64.tar.zst\n{digest}  {binary}\n{other}  k3s-images.txt\n"),
        )
        .unwrap();
    }

    /// Replaces the binary's digest in the list by another: downloads must be refused.
    fn corrupt_checksum(&self, version: &str) {
        let path = self.release_dir(version).join(arch_files().1);
        let text = std::fs::read_to_string(&path).unwrap();
        let wrong = format!("{}  {}", "ab".repeat(32), arch_files().0);
        let fixed: Vec<String> = text
            .lines()
            .map(|l| {
                if l.ends_with(&format!("  {}", arch_files().0)) {
                    wrong.clone()
                } else {
                    l.to_string()
                }
            })
            .collect();
        std::fs::write(path, fixed.join("\n") + "\n").unwrap();
    }

    fn mirror(&self) -> String {
        format!("{}/releases", self.server.url())
    }

    fn channel_url(&self) -> String {
        format!("{}/v1-release/channels", self.server.url())
    }

    /// GETs of a release's binary answered 200.
    fn binary_downloads(&self, version: &str) -> usize {
        self.server
            .downloads(&format!("/releases/{version}/{}", arch_files().0))
    }
}

/// A booted box with `bosund` in it.
struct K3sHost {
    hb: HostBox,
}

impl K3sHost {
    fn boot() -> Self {
        HostBox::available().expect("host box prerequisites");
        let hb = HostBox::boot().expect("booting a host box");
        eprintln!("k3s: box booted in {:.1}s", hb.boot_time().as_secs_f64());
        hb.copy_in(Path::new(BOSUND), "/usr/local/sbin/bosund")
            .unwrap();
        K3sHost { hb }
    }

    /// Writes `text` as `/root/<name>` in the box.
    fn playbook(&self, name: &str, text: &str) -> String {
        let path = format!("/root/{name}");
        self.hb.write_file(&path, text.as_bytes(), 0o644).unwrap();
        path
    }

    /// `bosund apply PLAYBOOK --output json ARGS...` inside the box.
    fn apply(&self, playbook: &str, args: &[&str]) -> Run {
        self.apply_env(playbook, args, &[])
    }

    /// [`K3sHost::apply`] with extra environment. The run may end without its summary (a
    /// bosund killed by `BOSUN_TEST_KILL_AT`): its events are whatever was written.
    fn apply_env(&self, playbook: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
        let started = Instant::now();
        let mut argv = vec![
            "/usr/local/sbin/bosund",
            "--state-dir",
            STATE,
            "apply",
            playbook,
        ];
        argv.extend(["--output", "json"]);
        argv.extend_from_slice(args);
        // An IMDS endpoint that refuses at once: facts gathering is quick and has no ec2 part.
        let mut env = env.to_vec();
        env.push(("BOSUN_IMDS_ENDPOINT", "http://127.0.0.1:1"));
        let out = self.hb.exec_env(&argv, &env).unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let events: Vec<RunEvent> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{stderr}")))
            .collect();
        Run {
            code: out.status.code().unwrap_or(-1),
            events,
            stderr,
            elapsed: started.elapsed(),
        }
    }

    fn sh(&self, script: &str) -> String {
        self.hb.sh(script).unwrap().trim().to_string()
    }

    /// What `k3s --version` says in the box.
    fn k3s_version(&self) -> String {
        let out = self.sh("/usr/local/bin/k3s --version | head -1");
        out.split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_string()
    }

    /// The pid systemd knows for k3s (0: not running).
    fn k3s_pid(&self) -> String {
        self.sh("systemctl show -p MainPID --value k3s.service")
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.hb.path(path)).unwrap_or_default()
    }

    fn exists(&self, path: &str) -> bool {
        std::fs::symlink_metadata(self.hb.path(path)).is_ok()
    }

    /// `k3s kubectl get nodes -o json` in the box: (Ready, kubelet version).
    fn node(&self) -> (bool, String) {
        let nodes: Value = serde_json::from_str(&self.sh("k3s kubectl get nodes -o json")).unwrap();
        let node = &nodes["items"][0];
        let ready = node["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        let kubelet = node["status"]["nodeInfo"]["kubeletVersion"]
            .as_str()
            .unwrap()
            .to_string();
        (ready, kubelet)
    }

    /// Names of the upgrade backups in the state dir.
    fn backups(&self) -> Vec<String> {
        let dir = self.hb.path(&format!("{STATE}/k3s-backups"));
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

fn report<'a>(run: &'a Run, name: &str) -> &'a StepReport {
    run.step(name)
}

fn message(run: &Run, name: &str) -> String {
    report(run, name).message.clone().unwrap_or_default()
}

fn install_playbook(r: &Releases, extra: &str) -> String {
    format!(
        r#"name = "k3s"
[vars]
k3s_version = "{V30}"
[[step]]
name = "install k3s"
k3s_install = {{ version = "{{{{ k3s_version }}}}", mirror = "{mirror}", channel_url = "{channels}", ready_timeout = "60s"{extra} }}
"#,
        mirror = r.mirror(),
        channels = r.channel_url(),
    )
}

fn upgrade_playbook(r: &Releases, version: &str, extra: &str) -> String {
    format!(
        r#"name = "k3s-upgrade"
[[step]]
name = "upgrade k3s"
k3s_upgrade = {{ version = "{version}", mirror = "{mirror}", channel_url = "{channels}", health_timeout = "10s"{extra} }}
"#,
        mirror = r.mirror(),
        channels = r.channel_url(),
    )
}

#[test]
fn k3s_is_installed_upgraded_rolled_back_and_stepped_through_minors_on_a_booted_host() {
    let t0 = Instant::now();
    let releases = Releases::new(
        &[V30, V31, V32, V33, V34, V35],
        &[
            ("stable", V31),
            ("v1.30", V30),
            ("v1.31", V31),
            ("v1.32", V32),
            ("v1.33", V33),
            ("v1.34", V34),
            ("v1.35", V35),
        ],
    );
    let host = K3sHost::boot();
    let phase = |what: &str, since: &mut Instant| {
        eprintln!("k3s: {what}: {:.1}s", since.elapsed().as_secs_f64());
        *since = Instant::now();
    };
    let mut clock = Instant::now();

    // --- install: --check plans and touches nothing; a bad checksum installs nothing ---------
    releases.corrupt_checksum(V30);
    let install = host.playbook("install.toml", &install_playbook(&releases, ""));
    let check = host.apply(&install, &["--check"]);
    check.assert_success();
    assert_eq!(report(&check, "install k3s").status, StepStatus::Changed);
    assert!(
        message(&check, "install k3s").contains("install k3s v1.30.6+k3s1"),
        "{check:#?}"
    );
    // A channel is resolved through the update server's channel list.
    let by_channel = install_playbook(&releases, "")
        .replace(r#"version = "{{ k3s_version }}""#, r#"channel = "stable""#);
    let by_channel = host.playbook("channel.toml", &by_channel);
    let check = host.apply(&by_channel, &["--check"]);
    check.assert_success();
    let msg = message(&check, "install k3s");
    assert!(
        msg.contains("install k3s v1.31.4+k3s1"),
        "stable is v1.31.4: {msg}"
    );
    let bad = host.apply(&install, &[]);
    assert_eq!(bad.code, 1, "{bad:#?}");
    let msg = message(&bad, "install k3s");
    assert!(msg.contains("checksum mismatch"), "{msg}");
    for path in [
        "/usr/local/bin/k3s",
        "/etc/systemd/system/k3s.service",
        "/etc/systemd/system/k3s.service.env",
        "/etc/rancher/k3s/config.yaml",
        "/usr/local/bin/kubectl",
    ] {
        assert!(
            !host.exists(path),
            "{path} was written despite the checksum mismatch"
        );
    }
    let leftovers = host.sh("ls -A /usr/local/bin");
    assert!(
        !leftovers.contains("bosun"),
        "a partial download was left: {leftovers}"
    );
    releases.publish(V30);
    phase("install refused on a bad checksum", &mut clock);

    // --- install: binary, config, unit, env file; started; node Ready; second run ok --------
    let first = host.apply(&install, &["--var", "k3s_version=v1.30.6+k3s1"]);
    first.assert_success();
    assert_eq!(first.summary(), summary(0, 1, 0, 0));
    let msg = message(&first, "install k3s");
    assert!(
        msg.contains("installed k3s v1.30.6+k3s1") && msg.contains("node Ready"),
        "{msg}"
    );
    assert_eq!(host.k3s_version(), V30);
    assert_eq!(host.sh("systemctl is-active k3s"), "active");
    assert_eq!(host.sh("systemctl is-enabled k3s"), "enabled");
    assert_eq!(host.node(), (true, V30.to_string()));
    let config: Value = serde_norway::from_str(&host.read("/etc/rancher/k3s/config.yaml")).unwrap();
    assert_eq!(
        config["disable"],
        serde_json::json!(["traefik", "servicelb", "metrics-server"])
    );
    assert!(
        config["kubelet-arg"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap().starts_with("eviction-hard=")),
        "{config}"
    );
    assert_eq!(
        host.sh("stat -c %a /etc/systemd/system/k3s.service.env"),
        "600"
    );
    assert_eq!(host.sh("stat -c %a /etc/rancher/k3s/config.yaml"), "600");
    assert_eq!(host.sh("readlink /usr/local/bin/kubectl"), "k3s");
    assert_eq!(host.sh("systemctl show -p Type --value k3s"), "notify");
    // The fake read the config bosun wrote: the disabled add-ons are not among the pods.
    let pods = host.sh("kubectl get pods -n kube-system -o json");
    assert!(
        pods.contains("coredns") && !pods.contains("metrics-server"),
        "{pods}"
    );
    let pid = host.k3s_pid();
    // One download refused above, one installed.
    assert_eq!(releases.binary_downloads(V30), 2);
    let again = host.apply(&install, &[]);
    again.assert_success();
    assert_eq!(again.summary(), summary(1, 0, 0, 0));
    assert_eq!(host.k3s_pid(), pid, "an unchanged run restarted k3s");
    assert_eq!(
        releases.binary_downloads(V30),
        2,
        "an unchanged run downloaded k3s"
    );
    phase("install, Ready, second run unchanged", &mut clock);

    // --- a config change restarts k3s, once -------------------------------------------------
    let labelled = host.playbook(
        "install-labelled.toml",
        &install_playbook(&releases, r#", config = { node-label = ["tier=test"] }"#),
    );
    let changed = host.apply(&labelled, &["--diff"]);
    changed.assert_success();
    let r = report(&changed, "install k3s");
    assert_eq!(r.status, StepStatus::Changed);
    assert!(
        r.message.as_deref().unwrap().contains("restarted"),
        "{r:#?}"
    );
    assert!(
        r.diff
            .as_deref()
            .unwrap_or_default()
            .contains("+- tier=test"),
        "{r:#?}"
    );
    assert_ne!(host.k3s_pid(), pid, "a config change must restart k3s");
    let pid = host.k3s_pid();
    assert_eq!(host.apply(&labelled, &[]).summary(), summary(1, 0, 0, 0));
    assert_eq!(host.k3s_pid(), pid);
    phase("config change restarts once", &mut clock);

    // --- upgrade: skipping a minor is refused --------------------------------------------------
    let skip = host.playbook("skip.toml", &upgrade_playbook(&releases, V32, ""));
    let refused = host.apply(&skip, &[]);
    assert_eq!(refused.code, 1);
    let msg = message(&refused, "upgrade k3s");
    assert!(msg.contains("skips minor version(s) v1.31"), "{msg}");
    assert!(msg.contains("step_through_minors"), "{msg}");
    assert_eq!(host.k3s_version(), V30);
    assert_eq!(host.k3s_pid(), pid, "a refused upgrade touched k3s");
    assert_eq!(releases.binary_downloads(V32), 0);

    // --- upgrade: a checksum mismatch changes nothing ------------------------------------------
    let binary_before = std::fs::read(host.hb.path("/usr/local/bin/k3s")).unwrap();
    let unit_before = host.read("/etc/systemd/system/k3s.service");
    let db_before = host.read(&format!("{DATA}/server/db/state.db"));
    releases.corrupt_checksum(V31);
    let to31 = host.playbook("to31.toml", &upgrade_playbook(&releases, V31, ""));
    let bad = host.apply(&to31, &[]);
    assert_eq!(bad.code, 1);
    let msg = message(&bad, "upgrade k3s");
    assert!(
        msg.contains("checksum mismatch") && msg.contains("left running, untouched"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read(host.hb.path("/usr/local/bin/k3s")).unwrap(),
        binary_before
    );
    assert_eq!(host.read("/etc/systemd/system/k3s.service"), unit_before);
    assert_eq!(host.read(&format!("{DATA}/server/db/state.db")), db_before);
    assert_eq!(
        host.k3s_pid(),
        pid,
        "k3s was stopped for a download that failed"
    );
    assert!(
        host.backups().is_empty(),
        "a backup was made: {:?}",
        host.backups()
    );
    releases.publish(V31);
    phase("upgrade refusals (minor skip, checksum)", &mut clock);

    // --- upgrade: a failed health check rolls back binary and datastore ----------------------
    // Two ways v1.31 fails: up but never Ready, and crashing on start (systemd restarting it).
    // Either way it has already migrated the datastore, which v1.30 then refuses to open: the
    // rollback only brings v1.30 back if the datastore is restored too.
    let token_before = host.read(&format!("{DATA}/server/token"));
    assert!(!token_before.is_empty());
    let fault = format!("{DATA}/fake-k3s/faults/{V31}");
    for (round, (word, reason)) in [("never-ready", "/readyz"), ("exit", "unit k3s.service is")]
        .into_iter()
        .enumerate()
    {
        let db_before = host.read(&format!("{DATA}/server/db/state.db"));
        host.hb.write_file(&fault, word.as_bytes(), 0o644).unwrap();
        let failed = host.apply(&to31, &[]);
        assert_eq!(failed.code, 1, "{failed:#?}");
        let msg = message(&failed, "upgrade k3s");
        eprintln!("k3s: fault {word}: {msg}");
        assert!(msg.contains("rolled back to v1.30.6+k3s1"), "{msg}");
        assert!(msg.contains("failed its health check within 10s"), "{msg}");
        assert!(msg.contains(reason), "the reason is named: {msg}");
        assert_eq!(host.k3s_version(), V30);
        assert_eq!(host.sh("systemctl is-active k3s"), "active");
        assert_eq!(host.node(), (true, V30.to_string()));
        let db = host.read(&format!("{DATA}/server/db/state.db"));
        assert!(
            db.starts_with(&db_before) && !db.contains(&format!("written-by {V31}")),
            "the datastore was not restored from the backup:\n{db}"
        );
        assert_eq!(host.read(&format!("{DATA}/server/token")), token_before);
        let backups = host.backups();
        assert_eq!(backups.len(), round + 1, "{backups:?}");
        assert!(backups[round].ends_with(&format!("-{V30}")), "{backups:?}");
    }
    std::fs::remove_file(host.hb.path(&fault)).unwrap();
    phase(
        "failed health checks rolled back (never Ready, crash on start)",
        &mut clock,
    );

    // --- upgrade: the happy path, through the shipped playbook --------------------------------
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks/k3s-upgrade.toml"),
    )
    .unwrap();
    let shipped = host.playbook("k3s-upgrade.toml", &shipped);
    let mirror = format!("mirror={}", releases.mirror());
    let channels = format!("channel_url={}", releases.channel_url());
    let vars = |version: &str| {
        vec![
            "--var".to_string(),
            format!("version={version}"),
            "--var".into(),
            mirror.clone(),
            "--var".into(),
            channels.clone(),
            "--var".into(),
            "health_timeout=60s".into(),
        ]
    };
    let args31 = vars(V31);
    let args31: Vec<&str> = args31.iter().map(String::as_str).collect();
    let up = host.apply(&shipped, &args31);
    up.assert_success();
    assert_eq!(up.summary(), summary(0, 1, 0, 0));
    let msg = message(&up, "upgrade k3s");
    assert!(
        msg.contains("upgraded k3s v1.30.6+k3s1 → v1.31.4+k3s1"),
        "{msg}"
    );
    assert_eq!(host.k3s_version(), V31);
    assert_eq!(host.node(), (true, V31.to_string()));
    assert_eq!(host.read(&format!("{DATA}/server/token")), token_before);
    let backups = host.backups();
    assert_eq!(backups.len(), 3, "{backups:?}");
    let newest = format!("{STATE}/k3s-backups/{}", backups[2]);
    assert_eq!(host.read(&format!("{newest}/token")), token_before);
    assert!(
        host.read(&format!("{newest}/db/state.db"))
            .contains(&format!("written-by {V30}"))
    );
    assert_eq!(
        host.sh(&format!("{newest}/k3s --version | head -1 | cut -d' ' -f3")),
        V30
    );
    assert_eq!(host.sh(&format!("stat -c %a {STATE}/k3s-backups")), "700");
    let same = host.apply(&shipped, &args31);
    same.assert_success();
    assert_eq!(same.summary(), summary(1, 0, 0, 0));
    assert!(message(&same, "upgrade k3s").contains("k3s is at v1.31.4+k3s1"));
    phase("upgrade happy path, then unchanged", &mut clock);

    // --- upgrade two minors ahead, stepping through the latest patch of the one between ------
    let mut args33 = vars(V33);
    args33.extend(["--var".into(), "step_through_minors=true".into()]);
    let args33: Vec<&str> = args33.iter().map(String::as_str).collect();
    let stepped = host.apply(&shipped, &args33);
    stepped.assert_success();
    let msg = message(&stepped, "upgrade k3s");
    assert!(msg.contains("→ v1.33.1+k3s1"), "{msg}");
    assert_eq!(host.k3s_version(), V33);
    assert_eq!(host.node(), (true, V33.to_string()));
    assert_eq!(
        releases.binary_downloads(V32),
        1,
        "v1.32 was not stepped through"
    );
    let db = host.read(&format!("{DATA}/server/db/state.db"));
    let order: Vec<&str> = db
        .lines()
        .filter_map(|l| l.strip_prefix("written-by "))
        .collect();
    assert_eq!(order.last(), Some(&V33), "{db}");
    assert_eq!(
        order[order.len() - 2],
        V32,
        "the v1.32 hop did not run k3s: {db}"
    );
    // Five backups were made (two rollbacks, three upgrades); the newest three are kept.
    let kept = host.backups();
    assert_eq!(kept.len(), 3, "{kept:?}");
    assert!(
        kept[2].ends_with(&format!("-{V32}")) && kept[1].ends_with(&format!("-{V31}")),
        "{kept:?}"
    );
    phase("stepped through v1.32 to v1.33", &mut clock);

    // --- re-running the bootstrap install never changes the version ---------------------------
    // (The labelled playbook: its config is what the host has now.)
    let rerun = host.apply(&labelled, &[]);
    rerun.assert_success();
    assert_eq!(rerun.summary(), summary(1, 0, 0, 0));
    let msg = message(&rerun, "install k3s");
    assert!(msg.contains("left at v1.33.1+k3s1"), "{msg}");
    assert_eq!(host.k3s_version(), V33);
    phase("install re-run keeps the upgraded version", &mut clock);

    // --- bosund killed (kill -9) at each phase of an upgrade, then the step run again --------
    // Every kill leaves the phase record; the next run settles it before planning: k3s back
    // at v1.33 with its datastore, or v1.34 finished once healthy; never an unchecked swap.
    let record = format!("{STATE}/k3s-upgrade.json");
    let to34 = host.playbook("to34.toml", &upgrade_playbook(&releases, V34, ""));
    let stay33 = host.playbook("stay33.toml", &upgrade_playbook(&releases, V33, ""));
    let fault34 = format!("{DATA}/fake-k3s/faults/{V34}");
    let token = host.read(&format!("{DATA}/server/token"));
    for (point, fault, settled) in [
        (
            "stopped",
            None,
            "stopped before the swap: v1.33.1+k3s1 (unchanged) was started again",
        ),
        (
            "backed-up",
            None,
            "stopped before the swap: v1.33.1+k3s1 (unchanged) was started again",
        ),
        (
            "swapped",
            Some("never-ready"),
            "was rolled back: v1.34.0+k3s1 failed its health check",
        ),
        (
            "started",
            Some("exit"),
            "was rolled back: v1.34.0+k3s1 failed its health check",
        ),
    ] {
        if let Some(word) = fault {
            host.hb
                .write_file(&fault34, word.as_bytes(), 0o644)
                .unwrap();
        }
        let killed = host.apply_env(&to34, &[], &[("BOSUN_TEST_KILL_AT", point)]);
        assert_eq!(
            killed.code, -1,
            "bosund was not killed at {point}: {killed:#?}"
        );
        assert!(
            host.exists(&record),
            "no phase record after a kill at {point}"
        );
        let again = host.apply(&stay33, &[]);
        again.assert_success();
        let msg = message(&again, "upgrade k3s");
        eprintln!("k3s: killed at {point}: {msg}");
        assert!(
            msg.contains(&format!("the interrupted k3s upgrade {V33} → {V34}")),
            "{msg}"
        );
        assert!(msg.contains(settled), "{point}: {msg}");
        assert_eq!(host.k3s_version(), V33, "{point}");
        assert_eq!(host.node(), (true, V33.to_string()), "{point}");
        let db = host.read(&format!("{DATA}/server/db/state.db"));
        assert!(
            db.starts_with(&db_before) && !db.contains(&format!("written-by {V34}")),
            "{point}: the datastore is not v1.33's:\n{db}"
        );

        assert_eq!(host.read(&format!("{DATA}/server/token")), token);
        assert!(!host.exists(&record), "{point}: the record was left");
        assert_eq!(
            host.sh("ls -A /usr/local/bin | grep bosun-staged || true"),
            "",
            "{point}: a staged download was left"
        );
        let _ = std::fs::remove_file(host.hb.path(&fault34));
    }
    phase(
        "killed at stopped/backed-up/swapped/started: settled on the next run",
        &mut clock,
    );

    // Killed right after the new version started, healthy: the next run finishes the upgrade.
    let killed = host.apply_env(&to34, &[], &[("BOSUN_TEST_KILL_AT", "started")]);
    assert_eq!(killed.code, -1);
    let again = host.apply(&to34, &[]);
    again.assert_success();
    let msg = message(&again, "upgrade k3s");
    assert!(
        msg.contains("was finished: v1.34.0+k3s1 is healthy"),
        "{msg}"
    );
    assert_eq!(host.k3s_version(), V34);
    assert_eq!(host.node(), (true, V34.to_string()));
    assert!(!host.exists(&record));
    phase(
        "killed after starting a healthy version: finished",
        &mut clock,
    );

    // Killed after v1.35 (never Ready) started; then `bosund run` starts (as systemd would
    // restart it): its runner settles the upgrade before any run, rolling v1.35 back.
    let fault35 = format!("{DATA}/fake-k3s/faults/{V35}");
    host.hb.write_file(&fault35, b"never-ready", 0o644).unwrap();
    let to35 = host.playbook("to35-kill.toml", &upgrade_playbook(&releases, V35, ""));
    let db34 = host.read(&format!("{DATA}/server/db/state.db"));
    let killed = host.apply_env(&to35, &[], &[("BOSUN_TEST_KILL_AT", "started")]);
    assert_eq!(killed.code, -1);
    assert!(host.exists(&record));
    host.hb
        .write_file(
            "/root/agent.toml",
            b"playbooks_dir = \"/root\"\n[api]\nsocket = \"/run/bosun-settle/api.sock\"\n",
            0o644,
        )
        .unwrap();
    host.sh(&format!(
        "systemd-run --unit bosund-settle -p Type=notify -p NotifyAccess=main \
         --setenv=BOSUN_IMDS_ENDPOINT=http://127.0.0.1:1 /usr/local/sbin/bosund \
         --state-dir {STATE} run --config /root/agent.toml"
    ));
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    let log = loop {
        let log = host.sh("journalctl -u bosund-settle --no-pager -o cat");
        if log.contains("at start:") {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not settle the upgrade:\n{log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    eprintln!(
        "k3s: daemon start: {}",
        log.lines()
            .find(|l| l.contains("at start:"))
            .unwrap_or_default()
    );
    assert!(
        log.contains(&format!(
            "at start: the interrupted k3s upgrade {V34} → {V35} (phase started) was rolled back"
        )),
        "{log}"
    );
    assert_eq!(host.sh("systemctl is-active bosund-settle"), "active");
    host.sh("systemctl stop bosund-settle");
    assert!(!host.exists(&record));
    assert_eq!(host.k3s_version(), V34);
    assert_eq!(host.node(), (true, V34.to_string()));
    let db = host.read(&format!("{DATA}/server/db/state.db"));
    assert!(
        db.starts_with(&db34) && !db.contains(&format!("written-by {V35}")),
        "the datastore is not v1.34's:\n{db}"
    );
    std::fs::remove_file(host.hb.path(&fault35)).unwrap();
    phase(
        "killed mid-upgrade, settled by the daemon's start",
        &mut clock,
    );

    // The step's own timeout fires while v1.35 (never Ready) is being checked: the dropped
    // upgrade is settled at once, and the step's message says how.
    let fault35 = format!("{DATA}/fake-k3s/faults/{V35}");
    host.hb.write_file(&fault35, b"never-ready", 0o644).unwrap();
    let timed = host.playbook(
        "to35.toml",
        &upgrade_playbook(&releases, V35, "").replace(
            "[[step]]\nname = \"upgrade k3s\"\n",
            "[[step]]\nname = \"upgrade k3s\"\ntimeout = \"4s\"\n",
        ),
    );
    let db34 = host.read(&format!("{DATA}/server/db/state.db"));
    let out = host.apply(&timed, &[]);
    assert_eq!(out.code, 1, "{out:#?}");
    let msg = message(&out, "upgrade k3s");
    eprintln!("k3s: step timeout: {msg}");
    assert!(
        msg.contains(&format!(
            "timed out after 4s; the interrupted k3s upgrade {V34} → {V35}"
        )) && msg.contains("was rolled back"),
        "{msg}"
    );
    assert_eq!(host.k3s_version(), V34);
    assert_eq!(host.node(), (true, V34.to_string()));
    let db = host.read(&format!("{DATA}/server/db/state.db"));
    assert!(
        db.starts_with(&db34) && !db.contains(&format!("written-by {V35}")),
        "the datastore is not v1.34's:\n{db}"
    );
    assert!(!host.exists(&record));
    std::fs::remove_file(host.hb.path(&fault35)).unwrap();
    phase("a step timeout mid-upgrade rolls back at once", &mut clock);
    let halt = Instant::now();
    drop(host);
    eprintln!(
        "k3s: halt {:.1}s; whole story {:.1}s",
        halt.elapsed().as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}

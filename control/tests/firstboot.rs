//! The first boot, end to end: `bosun up` against moto uploads `bosund` and the playbooks to
//! the stack's bucket, `bosun user-data` gives the instance's `#cloud-config`, and a Debian
//! host in a box (`HostBox`, systemd under systemd-nspawn) with Debian's cloud-init boots with
//! that user-data as its NoCloud seed. Booting runs cloud-init, whose user-data fetches
//! `bosund` from the bucket in moto (anonymous, path-style, over the shared loopback), checks
//! its SHA-256, installs and starts `bosund.service` and runs, in the order the user-data says:
//! `playbooks/registry.toml` (`[registries."ghcr.io"]`: its password from SSM in moto into
//! k3s's registries.yaml), `playbooks/ecr-credential-provider.toml` (an ECR registry: the
//! kubelet credential provider, a stand-in binary from the loopback mirror),
//! `playbooks/bootstrap.toml`, then `playbooks/platform.toml` with the `learner` profile of
//! `[platform]` (its releases through the helm stand-in, its capacity checked through the k3s
//! stand-in's `kubectl`). The registry password is in no user-data, template, run event or log.
//!
//! What is the box's and not bosun's, kept in this test: cloud-init is told to leave the
//! network, the disk and the root file system alone (the box shares the test machine's
//! network and kernel), Docker gets the daemon settings a container needs, and k3s and helm
//! come from loopback fixtures (`fake-k3s`, `fake-helm`, as in agent/tests/bootstrap.rs), all
//! through `stack.toml`'s `[bootstrap_vars]`, as an operator would point the first boot at an
//! internal mirror. On AWS the fetch goes through the VPC's S3 endpoint under the bucket
//! policy; moto does not apply that policy, so here the same anonymous `curl` simply works.
//! The instance role is the box's too: cloud-init's final stage (which runs the user-data)
//! gets moto's endpoint and test credentials in its environment (a systemd drop-in), where
//! an instance gets its role's credentials from IMDS; `FAKE_HELM_STATE` tells the helm
//! stand-in where to keep its releases.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bosun_harness::{ArtifactServer, BoxSpec, HostBox, Moto};
use serde_json::Value;
use sha2::{Digest, Sha256};

const BOSUN: &str = env!("CARGO_BIN_EXE_bosun");
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnmhb2Bx2dM6Kp1pH2kzM2nXv3YZ0PLb5zmV8WFxyZ1 op@laptop";
const K3S_VERSION: &str = "v1.31.4+k3s1";
const HELM_VERSION: &str = "3.16.3";
/// Packages the box's rootfs gets besides the base ones: what a Debian cloud image has and
/// the first boot uses.
const BOX_PACKAGES: &[&str] = &["cloud-init", "curl"];
/// From `systemd-nspawn` to systemd `running`: cloud-init's final stage (the whole bootstrap,
/// Docker from the Debian mirror included) is part of the boot.
const BOOT_TIMEOUT: Duration = Duration::from_secs(900);
/// A registry token with characters YAML and shells care about; in SSM (moto) only.
const REGISTRY_TOKEN: &str = "ghp_f1rst\"b00t: #'tok&en";
const ECR_HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
/// Where the helm stand-in keeps its state in the box.
const HELM_STATE: &str = "/var/lib/fake-helm";

/// cloud-init settings of the box: NoCloud only (no probing of other clouds), and no
/// network, partition or file-system changes, which would reach the test machine.
const CLOUD_CFG: &str = "\
# The bosun host-in-a-box shares the test machine's network and kernel.
datasource_list: [NoCloud]
network: {config: disabled}
growpart: {mode: 'off'}
resize_rootfs: false
# The box has neither sshd nor the en_US locale a Debian cloud image ships.
ssh_genkeytypes: []
locale: C.UTF-8
";

/// The `bosund` binary of this workspace, built (or found fresh) by cargo. Built together with
/// `bosun-control`'s binaries so that cargo unifies dependency features as for this test's
/// own build: `-p bosun-agent` alone selects other features (rustls, reqwest) and rebuilds
/// them and the agent, back and forth, on every run.
fn bosund() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "-q",
            "-p",
            "bosun-agent",
            "-p",
            "bosun-control",
            "--bins",
        ])
        .status()
        .expect("running cargo build for bosund");
    assert!(status.success(), "building bosund failed");
    let path = Path::new(BOSUN).with_file_name("bosund");
    assert!(path.is_file(), "bosund not found at {}", path.display());
    path
}

/// Publishes the pinned k3s and helm releases under `dir` (see bosun-fixtures).
fn publish_releases(dir: &Path) {
    bosun_fixtures::publish_releases(dir, K3S_VERSION, HELM_VERSION);
}

/// Runs the real `bosun` with `--output json`, against moto; returns its JSON.
fn bosun_json(dir: &Path, moto: &Moto, args: &[&str]) -> Value {
    let out = Command::new(BOSUN)
        .arg("--output")
        .arg("json")
        .args(args)
        .current_dir(dir)
        .envs(moto.env())
        .output()
        .expect("run bosun");
    assert!(
        out.status.success(),
        "bosun {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bosun {args:?} printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The name of the one bucket in `moto` (ListBuckets, anonymous: moto does not check).
fn only_bucket(moto: &Moto) -> String {
    let resp = bosun_harness::http::request("GET", &format!("{}/", moto.endpoint()), &[], &[])
        .expect("ListBuckets");
    let xml = resp.text();
    let names: Vec<&str> = xml
        .split("<Name>")
        .skip(1)
        .filter_map(|s| s.split_once("</Name>").map(|(n, _)| n))
        .collect();
    assert_eq!(names.len(), 1, "one bucket, the stack's: {xml}");
    names[0].to_string()
}

/// A program from the test venv (`$BOSUN_TEST_VENV`, else `~/.cache/bosun/venv`).
fn venv_program(name: &str) -> PathBuf {
    let venv = std::env::var_os("BOSUN_TEST_VENV")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/bosun/venv")
        });
    let p = venv.join("bin").join(name);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/test, which creates the venv with moto and boto3",
        p.display()
    );
    p
}

/// The registry password as the operator puts it: an SSM SecureString under the stack's prefix.
fn put_registry_password(moto: &Moto) {
    let out = Command::new(venv_program("python"))
        .arg("-c")
        .arg("import boto3, sys\nboto3.client('ssm').put_parameter(Name=sys.argv[1], Value=sys.argv[2], Type='SecureString')")
        .arg("/bosun/firstboot/registries/ghcr.io")
        .arg(REGISTRY_TOKEN)
        .envs(moto.env())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "put_parameter failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A stand-in `ecr-credential-provider` in artifacts.k8s.io's layout under `dir/ecr`, with its
/// `.sha256` beside it.
fn publish_ecr_provider(dir: &Path) -> Vec<u8> {
    let arch = if std::env::consts::ARCH == "aarch64" {
        "arm64"
    } else {
        "amd64"
    };
    let version_dir = dir.join(format!("ecr/v1.31.7/linux/{arch}"));
    std::fs::create_dir_all(&version_dir).unwrap();
    let binary = b"#!/bin/sh\n# stand-in ecr-credential-provider\n".to_vec();
    let file = version_dir.join(format!("ecr-credential-provider-linux-{arch}"));
    std::fs::write(&file, &binary).unwrap();
    std::fs::write(
        format!("{}.sha256", file.display()),
        hex::encode(Sha256::digest(&binary)),
    )
    .unwrap();
    binary
}

/// The user-data of the (one) launch template in moto, decoded.
fn launch_template_user_data(moto: &Moto) -> String {
    let script = "import boto3, base64, sys
ec2 = boto3.client('ec2')
lts = ec2.describe_launch_templates()['LaunchTemplates']
assert len(lts) == 1, lts
v = ec2.describe_launch_template_versions(LaunchTemplateId=lts[0]['LaunchTemplateId'])
sys.stdout.buffer.write(base64.b64decode(v['LaunchTemplateVersions'][0]['LaunchTemplateData']['UserData']))";
    let out = Command::new(venv_program("python"))
        .arg("-c")
        .arg(script)
        .envs(moto.env())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "reading the launch template failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Puts on the bucket in moto the statements of the template's bucket policy that allow
/// reads (moto's CloudFormation does not create `AWS::S3::BucketPolicy`). Their condition,
/// `aws:SourceVpce` = the stack's S3 endpoint, is what confines the reads to the VPC on AWS;
/// a request to moto on loopback comes through no endpoint, so it is left out here. The
/// statement must still name the action and the keys the first boot fetches, or the fetch
/// fails.
fn apply_first_boot_policy(moto: &Moto, dir: &Path, bosund: &str, bucket: &str) {
    let out = Command::new(BOSUN)
        .args(["template", "--bosund", bosund])
        .current_dir(dir)
        .output()
        .expect("run bosun template");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let template: Value = serde_json::from_slice(&out.stdout).unwrap();
    let document = &template["Resources"]["BucketPolicy"]["Properties"]["PolicyDocument"];
    let arn = format!("arn:aws:s3:::{bucket}");
    let allows: Vec<Value> = document["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["Effect"] == "Allow")
        .map(|s| {
            let mut s = s.clone();
            let condition = s.as_object_mut().unwrap().remove("Condition");
            assert!(
                condition.is_some_and(|c| c["StringEquals"]["aws:SourceVpce"].is_object()),
                "reads are only allowed through the VPC endpoint: {s}"
            );
            let resources: Vec<Value> = s["Resource"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| match r["Fn::Sub"].as_str() {
                    Some(sub) => Value::from(sub.replace("${Bucket.Arn}", &arn)),
                    None => panic!("unexpected resource in the bucket policy: {r}"),
                })
                .collect();
            s["Resource"] = Value::from(resources);
            s
        })
        .collect();
    let policy = serde_json::json!({"Version": "2012-10-17", "Statement": allows});
    let out = Command::new(venv_program("python"))
        .arg("-c")
        .arg("import boto3, sys\nboto3.client('s3').put_bucket_policy(Bucket=sys.argv[1], Policy=sys.argv[2])")
        .arg(bucket)
        .arg(policy.to_string())
        .envs(moto.env())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "put_bucket_policy failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What went on in the box, for a failure message.
fn diagnose(hb: &HostBox) -> String {
    let script = "cloud-init status --long 2>&1; \
        echo '--- cloud-init-output.log'; grep -v '^ci-info' /var/log/cloud-init-output.log | tail -n 80 2>&1; \
        echo '--- WARN/ERROR in cloud-init.log'; grep -E 'WARN|ERROR|Traceback' /var/log/cloud-init.log 2>&1 | tail -n 40; \
        echo '--- state'; ls -la /var/lib/bosun 2>&1; journalctl -u bosund --no-pager 2>&1 | tail -n 20; \
        echo '--- units'; systemctl --failed --no-legend 2>&1; systemctl status bosund --no-pager 2>&1 | tail -n 20";
    match hb.exec(&["/bin/sh", "-c", script]) {
        Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
        Err(e) => format!("(cannot look into the box: {e:#})"),
    }
}

#[test]
fn first_boot_fetches_verifies_and_starts_bosund_then_bootstraps() {
    HostBox::available().expect("host box prerequisites");
    let started = Instant::now();
    let bosund = bosund();
    let build_took = started.elapsed();
    let bosund_sha = hex::encode(Sha256::digest(std::fs::read(&bosund).unwrap()));

    // Loopback stand-ins: AWS (moto, holding the bucket) and the k3s/helm release mirrors.
    let releases = tempfile::tempdir().unwrap();
    publish_releases(releases.path());
    let ecr_provider = publish_ecr_provider(releases.path());
    let mirror = ArtifactServer::serve(releases.path()).unwrap();
    let moto = Moto::start().expect("start moto");
    put_registry_password(&moto);

    // The operator's side: stack.toml with the repository's playbooks and `bosun up`.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.pub"), format!("{KEY}\n")).unwrap();
    let playbooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks");
    let stack_toml = format!(
        r#"name = "firstboot"
region = "us-east-1"
operator_cidr = "203.0.113.7/32"
ssh_public_key = "key.pub"
# moto knows Amazon Linux's public AMI parameters, not Debian's; the user-data is the same.
os = "al2023"
playbooks = "{playbooks}"

[endpoints]
artifacts = "{moto}"

[platform]
profile = "learner"

[registries."ghcr.io"]
username = "ci-bot"

[registries."{ECR_HOST}"]

[bootstrap_vars]
# The box has no AWS credentials or region: the host publishes no k3s join token to SSM.
k3s_token_parameter = ""
k3s_mirror = "{mirror}/k3s"
helm_mirror = "{mirror}/helm"
k3s_version = "{K3S_VERSION}"
helm_version = "{HELM_VERSION}"
ecr_credential_provider_mirror = "{mirror}/ecr"

[bootstrap_vars.docker_daemon]
iptables = false
ip-forward = false
bridge = "none"
"#,
        playbooks = playbooks.display(),
        moto = moto.endpoint(),
        mirror = mirror.url(),
    );
    std::fs::write(dir.path().join("stack.toml"), stack_toml).unwrap();
    let bosund_arg = bosund.to_str().unwrap();

    let started = Instant::now();
    let up = bosun_json(dir.path(), &moto, &["up", "--bosund", bosund_arg]);
    let up_took = started.elapsed();
    assert_eq!(up["status"], "UPDATE_COMPLETE", "{up}");
    let uploads = up["uploads"].as_array().unwrap();
    assert!(
        uploads
            .iter()
            .any(|u| u["key"] == format!("artifacts/bosund/{bosund_sha}") && u["uploaded"] == true),
        "bosun up uploaded this bosund: {up}"
    );
    // moto leaves the stack's outputs empty; the stack's bucket is the only one in it.
    let bucket = only_bucket(&moto);
    let bosund_url = format!("{}/{bucket}/artifacts/bosund/{bosund_sha}", moto.endpoint());
    // The bucket is private: an anonymous GET is refused...
    let anonymous = bosun_harness::http::request("GET", &bosund_url, &[], &[]).unwrap();
    assert_eq!(anonymous.status, 403, "the artefacts are not public");
    // ...until the template's bucket policy lets the first boot read artifacts/*.
    apply_first_boot_policy(&moto, dir.path(), bosund_arg, &bucket);
    let fetched = bosun_harness::http::request("GET", &bosund_url, &[], &[]).unwrap();
    assert_eq!(fetched.status, 200, "{}", fetched.text());
    // The seed is the user-data `bosun up` put in the stack's launch template (moto resolves
    // its Fn::Join and Fn::Base64), and `bosun user-data` prints the same bytes.
    let user_data = launch_template_user_data(&moto);
    let printed = bosun_json(
        dir.path(),
        &moto,
        &["user-data", "--bosund", bosund_arg, "--bucket", &bucket],
    );
    assert_eq!(printed["user_data"].as_str().unwrap(), user_data);
    assert!(
        user_data.contains(&format!("{}/{bucket}/artifacts", moto.endpoint())),
        "the user-data fetches from the bucket in moto:\n{user_data}"
    );

    // No credential in what anyone can read: the user-data (IMDS) and the template.
    assert!(!user_data.contains(REGISTRY_TOKEN), "{user_data}");
    let template = Command::new(BOSUN)
        .args(["template", "--bosund", bosund_arg])
        .current_dir(dir.path())
        .output()
        .expect("run bosun template");
    assert!(template.status.success());
    assert!(!String::from_utf8_lossy(&template.stdout).contains(REGISTRY_TOKEN));

    // The box's stand-in for the instance role: moto's endpoint and test credentials for
    // cloud-init's final stage, which runs the user-data.
    let role_env: String = moto
        .env()
        .iter()
        .map(|(k, v)| format!("Environment={k}={v}\n"))
        .collect();
    let drop_in = format!("[Service]\n{role_env}Environment=FAKE_HELM_STATE={HELM_STATE}\n");

    // The instance's side: a Debian host with cloud-init, seeded with that user-data.
    let spec = BoxSpec::new()
        .file(
            "/etc/systemd/system/cloud-final.service.d/bosun-hostbox.conf",
            drop_in.as_bytes(),
            0o644,
        )
        .packages(BOX_PACKAGES)
        .file(
            "/etc/cloud/cloud.cfg.d/99-bosun-hostbox.cfg",
            CLOUD_CFG,
            0o644,
        )
        .file(
            "/var/lib/cloud/seed/nocloud/meta-data",
            "instance-id: i-firstboot0001\nlocal-hostname: firstboot\n",
            0o600,
        )
        .file(
            "/var/lib/cloud/seed/nocloud/user-data",
            user_data.as_bytes(),
            0o600,
        )
        .boot_timeout(BOOT_TIMEOUT);
    let hb = HostBox::boot_with(&spec).expect("booting the host box with cloud-init");
    let boot_took = hb.boot_time();
    assert!(
        !hb.path("/etc/cloud/cloud-init.disabled").exists(),
        "cloud-init is enabled in the box"
    );

    // cloud-init ran every stage, from the NoCloud seed, without errors.
    let status = hb
        .exec(&["cloud-init", "status", "--wait", "--long"])
        .unwrap();
    let status_text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        status.status.success() && status_text.contains("status: done"),
        "cloud-init did not finish cleanly:\n{status_text}\n{}",
        diagnose(&hb)
    );
    let result: Value = serde_json::from_str(
        &std::fs::read_to_string(hb.path("/var/lib/cloud/data/result.json")).unwrap(),
    )
    .unwrap();
    let v1 = &result["v1"];
    assert!(
        v1["datasource"].as_str().unwrap_or("").contains("NoCloud"),
        "{result:#}"
    );
    assert_eq!(
        v1["errors"],
        serde_json::json!([]),
        "{result:#}\n{}",
        diagnose(&hb)
    );

    // What runs is what `bosun up` uploaded.
    let installed = std::fs::read(hb.path("/usr/local/bin/bosund")).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&installed)), bosund_sha);
    // The daemon runs under systemd with the config from the user-data.
    assert_eq!(
        hb.sh("systemctl is-active bosund").unwrap().trim(),
        "active",
        "{}",
        diagnose(&hb)
    );
    assert_eq!(
        hb.sh("systemctl is-enabled bosund").unwrap().trim(),
        "enabled"
    );
    let agent_toml = std::fs::read_to_string(hb.path("/etc/bosun/agent.toml")).unwrap();
    assert!(agent_toml.contains("stack firstboot"), "{agent_toml}");

    // The bootstrap ran, is in the agent's journal and succeeded.
    // JSON Lines: a run per line.
    let history: Value = hb
        .sh("bosund history --output json")
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .collect();
    let runs = history
        .as_array()
        .unwrap_or_else(|| panic!("history is a list of runs: {history:#}"));
    let bootstrap = runs
        .iter()
        .find(|r| r["playbook"] == "bootstrap")
        .unwrap_or_else(|| {
            panic!(
                "no bootstrap run in the journal: {history:#}\n{}",
                diagnose(&hb)
            )
        });
    assert_eq!(
        (
            &bootstrap["status"],
            &bootstrap["failed"],
            &bootstrap["check"]
        ),
        (&Value::from("ok"), &Value::from(0), &Value::from(false)),
        "{bootstrap:#}\n{}",
        diagnose(&hb)
    );
    assert!(bootstrap["changed"].as_i64().unwrap() >= 5, "{bootstrap:#}");
    // And it did what bootstrap.toml says, with the stack's vars.
    assert_eq!(
        hb.sh("systemctl is-active docker").unwrap().trim(),
        "active"
    );
    assert_eq!(hb.sh("systemctl is-active k3s").unwrap().trim(), "active");
    let helm = hb.sh("/usr/local/bin/helm version --short").unwrap();
    assert!(helm.starts_with(&format!("v{HELM_VERSION}")), "{helm}");

    // [registries]: registry.toml ran before bootstrap and wrote the password from SSM into
    // k3s's registries.yaml, root-only.
    let run_of = |playbook: &str| {
        runs.iter()
            .position(|r| r["playbook"] == playbook)
            .unwrap_or_else(|| panic!("no {playbook} run: {history:#}\n{}", diagnose(&hb)))
    };
    for playbook in ["registry", "ecr-credential-provider", "platform"] {
        let run = &runs[run_of(playbook)];
        assert_eq!(
            (&run["status"], &run["failed"]),
            (&Value::from("ok"), &Value::from(0)),
            "{run:#}\n{}",
            diagnose(&hb)
        );
    }
    // History lists the newest run first: registry and ECR before bootstrap, platform after.
    assert!(run_of("registry") > run_of("bootstrap"), "{history:#}");
    assert!(
        run_of("ecr-credential-provider") > run_of("bootstrap"),
        "{history:#}"
    );
    assert!(run_of("platform") < run_of("bootstrap"), "{history:#}");
    let registries = hb.path("/etc/rancher/k3s/registries.yaml");
    let yaml: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(&registries).unwrap()).unwrap();
    assert_eq!(yaml["configs"]["ghcr.io"]["auth"]["username"], "ci-bot");
    assert_eq!(
        yaml["configs"]["ghcr.io"]["auth"]["password"],
        REGISTRY_TOKEN
    );
    assert_eq!(
        hb.sh("stat -c %a /etc/rancher/k3s/registries.yaml")
            .unwrap()
            .trim(),
        "600"
    );
    // ECR: the credential provider k3s finds at its default paths, for that registry only.
    assert_eq!(
        std::fs::read(hb.path("/var/lib/rancher/credentialprovider/bin/ecr-credential-provider"))
            .unwrap(),
        ecr_provider
    );
    let provider: serde_norway::Value = serde_norway::from_str(
        &std::fs::read_to_string(hb.path("/var/lib/rancher/credentialprovider/config.yaml"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(provider["providers"][0]["matchImages"][0], ECR_HOST);
    // [platform] learner: its releases are installed and Traefik's HelmChartConfig is written.
    let releases: Value = serde_json::from_str(
        &hb.sh(&format!(
            "FAKE_HELM_STATE={HELM_STATE} /usr/local/bin/helm list -A -o json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut names: Vec<&str> = releases
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["prometheus", "prometheus-blackbox-exporter"]);
    assert!(
        hb.path("/var/lib/rancher/k3s/server/manifests/bosun-traefik.yaml")
            .is_file()
    );
    // The password is nowhere else: not in bosund's journal (run events), its logs or
    // cloud-init's output.
    let leaks = hb
        .exec(&[
            "grep",
            "-rlF",
            "--",
            REGISTRY_TOKEN,
            "/var/lib/bosun",
            "/var/log",
            "/etc/bosun",
            "/run/log",
        ])
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&leaks.stdout),
        "",
        "the registry password leaked into these files"
    );

    eprintln!(
        "firstboot: cargo build bosund {:.1} s; bosun up against moto {:.1} s; \
         box boot incl. cloud-init and bootstrap {:.1} s",
        build_took.as_secs_f64(),
        up_took.as_secs_f64(),
        boot_took.as_secs_f64()
    );
}

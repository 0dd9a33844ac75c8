//! `bosun platform budget` and the same check at the start of `plan`/`up`, against the shipped
//! playbooks/platform.toml and its values: the requests of a profile against a fresh k3s node
//! of the stack's instance type. No AWS call is made (none is reachable here).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BOSUN: &str = env!("CARGO_BIN_EXE_bosun");
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnmhb2Bx2dM6Kp1pH2kzM2nXv3YZ0PLb5zmV8WFxyZ1 op@laptop";

fn playbooks() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks")
}

/// A stack.toml for `instance_type` with `platform` as its `[platform]` body (none when empty).
fn stack(dir: &Path, name: &str, instance_type: &str, platform: &str) -> PathBuf {
    std::fs::write(dir.join("key.pub"), format!("{KEY}\n")).unwrap();
    std::fs::write(dir.join("bosund"), b"\x7fELF bosund v1").unwrap();
    let section = if platform.is_empty() {
        String::new()
    } else {
        format!("[platform]\n{platform}\n")
    };
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "name = \"demo\"\nregion = \"eu-west-1\"\noperator_cidr = \"203.0.113.7/32\"\n\
             ssh_public_key = \"key.pub\"\ninstance_type = \"{instance_type}\"\nplaybooks = \"{}\"\n{section}",
            playbooks().display()
        ),
    )
    .unwrap();
    path
}

fn bosun(args: &[&str]) -> (i32, String, String) {
    let out: Output = Command::new(BOSUN)
        .args(args)
        // Any AWS call would go here and fail: the budget must not make one.
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn budget(config: &Path) -> (i32, String, String) {
    bosun(&["platform", "budget", "--config", config.to_str().unwrap()])
}

#[test]
fn full_on_a_micro_does_not_fit_and_names_the_type_that_does_which_then_fits() {
    let dir = tempfile::tempdir().unwrap();
    let micro = stack(dir.path(), "micro.toml", "t2.micro", "profile = \"full\"");
    let (rc, out, err) = budget(&micro);
    assert_eq!(rc, 1, "{out}{err}");
    for component in [
        "ingress",
        "monitoring",
        "blackbox",
        "jenkins",
        "sonarqube",
        "kafka",
        "logs",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(component)),
            "{component} missing:\n{out}"
        );
    }
    assert!(out.contains("room on t2.micro (1 vCPU, 1024 MiB)"), "{out}");
    let fits_on = out
        .lines()
        .find_map(|l| l.split("the smallest instance type that fits is ").nth(1))
        .unwrap_or_else(|| panic!("no instance type named:\n{out}"));
    let named = fits_on.split_whitespace().next().unwrap();
    assert_eq!(named, "t3.xlarge", "{out}");

    let there = stack(dir.path(), "there.toml", named, "profile = \"full\"");
    let (rc, out, err) = budget(&there);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.ends_with("fits\n"), "{out}");

    // The same as JSON Lines: one value.
    let (rc, out, _) = bosun(&[
        "--output",
        "json",
        "platform",
        "budget",
        "--config",
        micro.to_str().unwrap(),
    ]);
    assert_eq!(rc, 1);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["fits"], false);
    assert_eq!(v["fits_on"]["instance_type"], "t3.xlarge");
    assert_eq!(v["components"].as_array().unwrap().len(), 7);
}

#[test]
fn profiles_fit_the_nodes_they_are_sized_for() {
    let dir = tempfile::tempdir().unwrap();
    for (instance, selection, rc_wanted) in [
        ("t2.micro", "profile = \"learner\"", 0),
        ("t2.micro", "profile = \"small\"", 1),
        ("t3.medium", "profile = \"small\"", 0),
        // An explicit list replaces the profile's.
        ("t2.micro", "components = [\"ingress\", \"blackbox\"]", 0),
        ("t3.medium", "components = [\"sonarqube\", \"logs\"]", 1),
        // Logs through ECK: operator 150Mi + Elasticsearch 2Gi + Kibana 1Gi.
        ("t3.medium", "components = [\"logs-eck\"]", 0),
        ("t3.small", "components = [\"logs-eck\"]", 1),
    ] {
        let config = stack(dir.path(), "s.toml", instance, selection);
        let (rc, out, err) = budget(&config);
        assert_eq!(rc, rc_wanted, "{instance} {selection}:\n{out}{err}");
    }
    let config = stack(
        dir.path(),
        "s.toml",
        "t2.micro",
        "components = [\"ingress\", \"blackbox\"]",
    );
    let (_, out, _) = budget(&config);
    let names: Vec<&str> = out
        .lines()
        .skip(1)
        .take(2)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names, ["ingress", "blackbox"], "{out}");

    // The ECK option is summed from its own values: 450m CPU, 150Mi + 2Gi + 1Gi.
    let config = stack(
        dir.path(),
        "s.toml",
        "t3.small",
        "components = [\"logs-eck\"]",
    );
    let (_, out, _) = budget(&config);
    let row = out
        .lines()
        .find(|l| l.starts_with("logs-eck"))
        .unwrap_or_else(|| panic!("no logs-eck row:\n{out}"));
    assert!(row.contains("450m") && row.contains("3222Mi"), "{row}");
}

#[test]
fn invalid_input_exits_2_saying_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    for (instance, platform, says) in [
        (
            "t9.huge",
            "profile = \"small\"",
            "instance_type \"t9.huge\": bosun does not know its size",
        ),
        (
            "t3.small",
            "profile = \"medium\"",
            "platform.profile \"medium\" is not one of learner, small, full",
        ),
        (
            "t3.small",
            "components = [\"nagios\"]",
            "platform.components: \"nagios\" is not one of",
        ),
        ("t3.small", "", "has no [platform] section"),
        (
            "t3.large",
            "components = [\"logs\", \"logs-eck\"]",
            "\"logs\" (OpenSearch) and \"logs-eck\" (Elasticsearch through ECK) are alternatives",
        ),
    ] {
        let config = stack(dir.path(), "bad.toml", instance, platform);
        let (rc, out, err) = budget(&config);
        assert_eq!(rc, 2, "{instance} {platform}: {out}{err}");
        assert!(err.contains(says), "{err}");
    }
}

#[test]
fn plan_and_up_refuse_a_platform_the_instance_cannot_hold_before_any_aws_call() {
    let dir = tempfile::tempdir().unwrap();
    let config = stack(dir.path(), "stack.toml", "t2.micro", "profile = \"full\"");
    for command in ["plan", "up"] {
        let (rc, out, err) = bosun(&[
            command,
            "--config",
            config.to_str().unwrap(),
            "--bosund",
            dir.path().join("bosund").to_str().unwrap(),
        ]);
        assert_eq!(rc, 1, "{command}: {out}{err}");
        assert!(
            err.contains("refused: instance_type t2.micro cannot hold the [platform]")
                && err.contains("nothing was created or changed")
                && err.contains("t3.xlarge"),
            "{command}: {err}"
        );
        // Refused before the AWS endpoint was tried (it would have failed differently).
        assert!(!err.contains("127.0.0.1:9"), "{err}");
    }
}

/// `bosun user-data` of `config`: its text, and the files its cloud-config writes by path.
fn user_data(config: &Path, bosund: &Path) -> (String, std::collections::BTreeMap<String, String>) {
    let (rc, out, err) = bosun(&[
        "user-data",
        "--config",
        config.to_str().unwrap(),
        "--bosund",
        bosund.to_str().unwrap(),
        "--bucket",
        "b",
    ]);
    assert_eq!(rc, 0, "{err}");
    let doc: serde_json::Value =
        serde_norway::from_str(out.trim_start_matches("#cloud-config\n")).unwrap();
    let files = doc["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| {
            Some((
                f["path"].as_str()?.to_string(),
                f["content"].as_str()?.to_string(),
            ))
        })
        .collect();
    (out, files)
}

#[test]
fn the_first_boot_applies_the_platform_with_its_profile_and_keeps_traefik_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = stack(
        dir.path(),
        "stack.toml",
        "t2.micro",
        "profile = \"learner\"",
    );
    let (_, files) = user_data(&config, &dir.path().join("bosund"));
    let file = |path: &str| {
        files
            .get(path)
            .unwrap_or_else(|| panic!("{path} not written"))
            .clone()
    };
    let vars: toml::Table = toml::from_str(&file("/etc/bosun/bootstrap-vars.toml")).unwrap();
    assert_eq!(vars["profile"].as_str(), Some("learner"));
    assert_eq!(vars["edge"].as_bool(), Some(false));
    assert_eq!(
        vars["k3s_config"]["disable"].as_array().unwrap(),
        &vec![toml::Value::from("servicelb")]
    );
    let script = file("/usr/local/lib/bosun/first-boot");
    assert!(
        script.ends_with(
            "bosund apply /etc/bosun/playbooks/platform.toml --vars-file /etc/bosun/bootstrap-vars.toml\n"
        ),
        "{script}"
    );
}

/// `[registries]`: the first boot runs playbooks/registry.toml per registry before bootstrap
/// starts k3s, passing names only; the user-data and the template hold no credential (a
/// `password` in stack.toml is refused without being echoed), and ECR is refused with the
/// reason. The file registry.toml writes is tested in agent/tests/registries.rs.
#[test]
fn registries_reach_the_first_boot_as_names_and_never_as_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let base = stack(dir.path(), "base.toml", "t3.medium", "");
    let base_text = std::fs::read_to_string(&base).unwrap();
    let write = |name: &str, extra: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{base_text}{extra}")).unwrap();
        path
    };
    let good = write(
        "stack.toml",
        "[registries.\"ghcr.io\"]\nusername = \"ci-bot\"\n[registries.\"docker.io\"]\nusername = \"hub-user\"\n",
    );
    let bosund = dir.path().join("bosund");
    let (out, files) = user_data(&good, &bosund);
    let script = &files["/usr/local/lib/bosun/first-boot"];
    let hub = script
        .find("--var 'registry_host=docker.io' --var 'registry_username=hub-user' --var 'registry_password_parameter=/bosun/demo/registries/docker.io'\n")
        .unwrap_or_else(|| panic!("{script}"));
    let ghcr = script
        .find("--var 'registry_host=ghcr.io' --var 'registry_username=ci-bot' --var 'registry_password_parameter=/bosun/demo/registries/ghcr.io'\n")
        .unwrap_or_else(|| panic!("{script}"));
    let bootstrap = script.find("playbooks/bootstrap.toml").unwrap();
    assert!(hub < bootstrap && ghcr < bootstrap, "{script}");
    assert!(
        !out.contains("registries.yaml"),
        "the user-data writes no registry file"
    );

    let template = Command::new(BOSUN)
        .args([
            "template",
            "--config",
            good.to_str().unwrap(),
            "--bosund",
            bosund.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        template.status.success(),
        "{}",
        String::from_utf8_lossy(&template.stderr)
    );
    let template = String::from_utf8_lossy(&template.stdout);
    assert!(
        template.contains("registry.toml"),
        "the template carries the user-data"
    );

    // A password in stack.toml is refused, not echoed; so is ECR (12-hour tokens).
    let (rc, out, err) = budget(&write(
        "leaky.toml",
        "[registries.\"ghcr.io\"]\nusername = \"ci-bot\"\npassword = \"ghp_hunter2secret\"\n",
    ));
    assert_eq!(rc, 2, "{out}{err}");
    assert!(err.contains("password"), "{err}");
    assert!(!format!("{out}{err}").contains("hunter2"), "{out}{err}");
    let (rc, out, err) = budget(&write(
        "ecr.toml",
        "[registries.\"123456789012.dkr.ecr.eu-west-1.amazonaws.com\"]\nusername = \"AWS\"\n\
         [registries.\"12345.dkr.ecr.eu-west-1.amazonaws.com\"]\n\
         [registries.\"GHCR.io;x\"]\nusername = \"ci\"\n\
         [registries.\"quay.io\"]\nusername = \"a b\"\n",
    ));
    assert_eq!(rc, 2, "{out}{err}");
    for want in [
        "ECR takes no username: the kubelet's credential provider logs in with the instance role",
        "an ECR registry is <12-digit account>.dkr.ecr.<region>.amazonaws.com",
        "not a registry host",
        "registries.\"quay.io\".username: use letters",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
}

/// `[registries]` naming ECR hosts: no credential anywhere; the first boot installs the
/// kubelet's credential provider for exactly those hosts before bootstrap starts k3s (the
/// playbook is tested in agent/tests/ecr.rs), and the host role may get pull tokens and pull
/// from those registries' repositories only.
#[test]
fn ecr_registries_are_pulled_from_with_the_instance_role_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(stack(dir.path(), "base.toml", "t3.medium", "")).unwrap();
    let config = dir.path().join("stack.toml");
    std::fs::write(
        &config,
        format!(
            "{base}[registries.\"123456789012.dkr.ecr.eu-west-1.amazonaws.com\"]\n\
             [registries.\"210987654321.dkr.ecr.us-east-1.amazonaws.com\"]\n\
             [registries.\"ghcr.io\"]\nusername = \"ci-bot\"\n"
        ),
    )
    .unwrap();
    let bosund = dir.path().join("bosund");
    let (_, files) = user_data(&config, &bosund);
    let script = &files["/usr/local/lib/bosun/first-boot"];
    // Before bootstrap, with the hosts comma-separated (after the vars file, when there is one).
    let line_of = |needle: &str| {
        script
            .lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle}: {script}"))
    };
    let ecr = line_of("playbooks/ecr-credential-provider.toml");
    assert!(
        script.lines().nth(ecr).unwrap().ends_with(
            " --var 'ecr_registries=123456789012.dkr.ecr.eu-west-1.amazonaws.com,210987654321.dkr.ecr.us-east-1.amazonaws.com'"
        ),
        "{script}"
    );
    assert!(ecr < line_of("playbooks/bootstrap.toml"), "{script}");
    // registry.toml runs for GHCR only: ECR has no password parameter.
    assert_eq!(
        script.matches("playbooks/registry.toml").count(),
        1,
        "{script}"
    );
    assert!(!script.contains("registries/123456789012"), "{script}");

    let template = Command::new(BOSUN)
        .args(["template", "--config", config.to_str().unwrap(), "--bosund"])
        .arg(&bosund)
        .output()
        .unwrap();
    assert!(
        template.status.success(),
        "{}",
        String::from_utf8_lossy(&template.stderr)
    );
    let template: serde_json::Value = serde_json::from_slice(&template.stdout).unwrap();
    let policies = template["Resources"]["HostRole"]["Properties"]["Policies"]
        .as_array()
        .unwrap();
    let images = policies
        .iter()
        .find(|p| p["PolicyName"] == "images")
        .unwrap_or_else(|| panic!("no images policy: {policies:#?}"));
    let statements = images["PolicyDocument"]["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 2, "{statements:#?}");
    assert_eq!(
        statements[0]["Action"],
        serde_json::json!(["ecr:GetAuthorizationToken"])
    );
    assert_eq!(statements[0]["Resource"], serde_json::json!(["*"]));
    assert_eq!(
        statements[1]["Action"],
        serde_json::json!([
            "ecr:BatchGetImage",
            "ecr:GetDownloadUrlForLayer",
            "ecr:BatchCheckLayerAvailability"
        ])
    );
    assert_eq!(
        statements[1]["Resource"],
        serde_json::json!([
            {"Fn::Sub": "arn:${AWS::Partition}:ecr:eu-west-1:123456789012:repository/*"},
            {"Fn::Sub": "arn:${AWS::Partition}:ecr:us-east-1:210987654321:repository/*"}
        ])
    );
    // No ECR permission is added for a stack without ECR registries.
    let plain = Command::new(BOSUN)
        .args(["template", "--config"])
        .arg(dir.path().join("base.toml"))
        .arg("--bosund")
        .arg(&bosund)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("ecr:"));
}

/// `bosun token create` against moto: the token lands in SSM as a SecureString under the
/// stack's prefix, its SHA-256 is what bosun prints for agent.toml (which bosund's own parser
/// accepts), the token itself is printed nowhere, and an existing token is replaced only with
/// --rotate.
#[test]
fn a_scoped_token_is_made_in_ssm_and_only_its_hash_is_printed() {
    let moto = bosun_harness::Moto::start().expect("start moto");
    let dir = tempfile::tempdir().unwrap();
    let config = stack(dir.path(), "stack.toml", "t3.medium", "");
    let create = |json: bool, extra: &[&str]| {
        let out = Command::new(BOSUN)
            .args(if json { &["--output", "json"][..] } else { &[] })
            .args(["token", "create", "jenkins-deploy", "--config"])
            .arg(&config)
            .args([
                "--playbook",
                "helm-release",
                "--var",
                "name",
                "--var",
                "version",
            ])
            .args(extra)
            .envs(moto.env())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let read = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let config = aws_sdk_ssm::Config::builder()
                    .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
                    .region(aws_sdk_ssm::config::Region::new("eu-west-1"))
                    .endpoint_url(moto.endpoint())
                    .credentials_provider(aws_sdk_ssm::config::Credentials::new(
                        "test", "test", None, None, "test",
                    ))
                    .http_client(bosun_aws::https_client())
                    .build();
                let p = aws_sdk_ssm::Client::from_conf(config)
                    .get_parameter()
                    .name("/bosun/demo/api-tokens/jenkins-deploy")
                    .with_decryption(true)
                    .send()
                    .await
                    .expect("the token's parameter")
                    .parameter
                    .unwrap();
                (p.r#type.unwrap(), p.value.unwrap())
            })
    };
    let (rc, out, err) = create(true, &[]);
    assert_eq!(rc, 0, "{out}{err}");
    let printed: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let (kind, token) = read();
    assert_eq!(kind, aws_sdk_ssm::types::ParameterType::SecureString);
    assert!(token.len() >= 64, "a long random token");
    let sha = printed["sha256"].as_str().unwrap();
    assert_eq!(
        sha,
        hex::encode(ring::digest::digest(
            &ring::digest::SHA256,
            token.as_bytes()
        ))
    );
    assert_eq!(
        printed["parameter"],
        "/bosun/demo/api-tokens/jenkins-deploy"
    );
    assert!(
        !out.contains(&token) && !err.contains(&token),
        "the token was printed"
    );

    // Human output: the agent.toml lines, which bosund's parser accepts; no token.
    let (rc, out, err) = create(false, &["--rotate"]);
    assert_eq!(rc, 0, "{out}{err}");
    let (_, rotated) = read();
    assert_ne!(rotated, token, "--rotate makes a new token");
    assert!(
        !out.contains(&rotated) && !err.contains(&rotated),
        "the token was printed"
    );
    let table = &out[out
        .find("[[api.tcp.scoped_token]]")
        .expect("agent.toml lines")..];
    let agent = format!("[api.tcp]\nlisten = \"127.0.0.1:8443\"\n{table}");
    let parsed = bosun_agent::config::parse(bosun_model::playbook::Source::new(
        "agent.toml",
        agent.clone(),
    ))
    .unwrap_or_else(|e| panic!("{agent}: {e:?}"));
    let scoped = &parsed.api.tcp.unwrap().scoped_tokens[0];
    assert_eq!(
        hex::encode(scoped.hash),
        hex::encode(ring::digest::digest(
            &ring::digest::SHA256,
            rotated.as_bytes()
        ))
    );
    assert!(scoped.scope.allows_playbook("helm-release"));

    // Without --rotate an existing token is kept.
    let (rc, out, err) = create(false, &[]);
    assert_eq!(rc, 2, "{out}{err}");
    assert!(err.contains("--rotate"), "{err}");
    assert_eq!(read().1, rotated);
}

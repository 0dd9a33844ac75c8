//! `playbooks/registry.toml` (stack.toml `[registries]`): k3s's registries.yaml gets each
//! registry's credentials, the password read from SSM Parameter Store (moto) at run time, the
//! file root-only (0600), a second run changes nothing, and the password appears in no event.
//! The format is k3s's (`configs.<host>.auth.username/password`), checked against k3s-io/k3s
//! `pkg/agent/containerd/config.go` (configs keyed by registry host; `docker.io` for Docker
//! Hub, which k3s maps to registry-1.docker.io).

mod common;

use std::path::Path;

use bosun_harness::Moto;
use common::{Sandbox, mode};

/// A token with characters YAML and shells care about.
const GHCR_TOKEN: &str = "ghp_\"q:u o#t'e<d>\\tok&en";
const HUB_TOKEN: &str = "dckr_pat_plain-0123";

fn put(moto: &Moto, name: &str, value: &str) {
    let rt = common::runtime();
    let client = aws_sdk_ssm::Client::new(&common::moto_sdk_config(&rt, moto));
    rt.block_on(
        client
            .put_parameter()
            .name(name)
            .value(value)
            .overwrite(true)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .send(),
    )
    .unwrap();
}

#[test]
fn each_registry_gets_its_credentials_from_ssm_in_a_root_only_file() {
    let moto = Moto::start().expect("start moto");
    put(&moto, "/bosun/t/registries/ghcr.io", GHCR_TOKEN);
    put(&moto, "/bosun/t/registries/docker.io", HUB_TOKEN);
    let sb = Sandbox::new();
    let playbook = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks/registry.toml");
    let dir = sb.path("etc/rancher/k3s");
    let file = dir.join("registries.yaml");
    let apply = |host: &str, user: &str| {
        let mut cmd = sb.bosund();
        cmd.arg("apply")
            .arg(&playbook)
            .args(["--output", "json"])
            .args(["--var", &format!("registry_host={host}")])
            .args(["--var", &format!("registry_username={user}")])
            .args([
                "--var",
                &format!("registry_password_parameter=/bosun/t/registries/{host}"),
            ])
            .args(["--var", &format!("k3s_config_dir={}", dir.display())]);
        for (k, v) in moto.env() {
            cmd.env(k, v);
        }
        common::Run::from_command(cmd, None)
    };
    let first = apply("ghcr.io", "ci-bot");
    first.assert_success();
    apply("docker.io", "hub-user").assert_success();
    assert_eq!(mode(&file), 0o600, "registries.yaml must be root-only");

    let text = std::fs::read_to_string(&file).unwrap();
    let yaml: serde_norway::Value = serde_norway::from_str(&text).expect("registries.yaml is YAML");
    let auth = |host: &str, key: &str| {
        yaml["configs"][host]["auth"][key]
            .as_str()
            .unwrap_or_else(|| panic!("configs.{host}.auth.{key} in\n{text}"))
            .to_string()
    };
    assert_eq!(auth("ghcr.io", "username"), "ci-bot");
    assert_eq!(auth("ghcr.io", "password"), GHCR_TOKEN);
    assert_eq!(auth("docker.io", "username"), "hub-user");
    assert_eq!(auth("docker.io", "password"), HUB_TOKEN);

    // Idempotent; a new token in SSM is picked up by the next run.
    let again = apply("ghcr.io", "ci-bot");
    again.assert_success();
    assert_eq!(again.summary().changed, 0, "{:?}", again.statuses());
    put(&moto, "/bosun/t/registries/ghcr.io", "ghp_rotated");
    let rotated = apply("ghcr.io", "ci-bot");
    assert_eq!(rotated.summary().changed, 1, "{:?}", rotated.statuses());
    let yaml: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(
        yaml["configs"]["ghcr.io"]["auth"]["password"].as_str(),
        Some("ghp_rotated")
    );
    assert_eq!(
        yaml["configs"]["docker.io"]["auth"]["password"].as_str(),
        Some(HUB_TOKEN)
    );
    assert_eq!(mode(&file), 0o600);

    for run in [&first, &again, &rotated] {
        let out = format!(
            "{}{}",
            serde_json::to_string(&run.events).unwrap(),
            run.stderr
        );
        for secret in [GHCR_TOKEN, HUB_TOKEN, "ghp_rotated", "tok&en"] {
            assert!(!out.contains(secret), "a token is in the events: {out}");
        }
    }
}

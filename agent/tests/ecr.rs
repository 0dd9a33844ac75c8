//! `playbooks/ecr-credential-provider.toml` (stack.toml `[registries]` naming ECR hosts): the
//! kubelet image credential provider is installed where k3s looks for it by default
//! (`/var/lib/rancher/credentialprovider/{bin,config.yaml}`, k3s-io/k3s pkg/cli/cmds/agent.go),
//! only after its SHA-256 matched, with a CredentialProviderConfig naming exactly the given
//! registries; a second run downloads nothing; a binary whose checksum does not match is
//! never installed.
//!
//! The binary is a stand-in served in the release layout of artifacts.k8s.io
//! (`<version>/linux/<arch>/ecr-credential-provider-linux-<arch>` with its `.sha256` beside
//! it) by a loopback server: there is no network here, so the real file, its published
//! checksum and a pull from ECR with the instance role are not exercised.

mod common;

use std::path::Path;

use bosun_harness::ArtifactServer;
use common::{Run, Sandbox, mode};
use sha2::{Digest, Sha256};

const VERSION: &str = "v1.31.7";
const REGISTRIES: &[&str] = &[
    "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
    "210987654321.dkr.ecr.us-east-1.amazonaws.com",
];

fn arch() -> &'static str {
    if std::env::consts::ARCH == "aarch64" {
        "arm64"
    } else {
        "amd64"
    }
}

/// Publishes `binary` as `version` (with its `.sha256`, as artifacts.k8s.io does, or `sha` when
/// given); returns the download path.
fn publish(root: &Path, version: &str, binary: &[u8], sha: Option<&str>) -> String {
    let rel = format!(
        "{version}/linux/{a}/ecr-credential-provider-linux-{a}",
        a = arch()
    );
    let file = root.join(&rel);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, binary).unwrap();
    let digest = sha
        .map(str::to_string)
        .unwrap_or_else(|| hex::encode(Sha256::digest(binary)));
    std::fs::write(format!("{}.sha256", file.display()), format!("{digest}\n")).unwrap();
    format!("/{rel}")
}

fn apply(sb: &Sandbox, server: &ArtifactServer, vars: &[String]) -> Run {
    let playbook =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks/ecr-credential-provider.toml");
    let mut cmd = sb.bosund();
    cmd.arg("apply")
        .arg(&playbook)
        .args(["--output", "json"])
        .args([
            "--var",
            &format!(
                "credential_provider_dir={}",
                sb.path("credentialprovider").display()
            ),
        ])
        .args([
            "--var",
            &format!("ecr_credential_provider_mirror={}", server.url()),
        ]);
    for v in vars {
        cmd.args(["--var", v]);
    }
    Run::from_command(cmd, None)
}

#[test]
fn the_provider_is_installed_verified_and_configured_for_the_named_registries_only() {
    let mirror = tempfile::tempdir().unwrap();
    let server = ArtifactServer::serve(mirror.path()).unwrap();
    let binary = b"#!/bin/sh\n# stand-in ecr-credential-provider\n".to_vec();
    let path = publish(mirror.path(), VERSION, &binary, None);
    let sb = Sandbox::new();
    // A `--var` value is a string: the hosts go comma-separated, as the first boot passes them.
    let registries = format!("ecr_registries={}", REGISTRIES.join(","));
    let vars = [
        registries.clone(),
        format!("ecr_credential_provider_version={VERSION}"),
    ];

    let first = apply(&sb, &server, &vars);
    first.assert_success();
    let installed = sb.path("credentialprovider/bin/ecr-credential-provider");
    assert_eq!(std::fs::read(&installed).unwrap(), binary);
    assert_eq!(mode(&installed), 0o755);
    // The config: kubelet's CredentialProviderConfig, the provider named as its file in the
    // bin directory (kubelet runs <bin-dir>/<name>), matching the two registries exactly.
    let config: serde_norway::Value = serde_norway::from_str(
        &std::fs::read_to_string(sb.path("credentialprovider/config.yaml")).unwrap(),
    )
    .expect("config.yaml is YAML");
    assert_eq!(config["apiVersion"], "kubelet.config.k8s.io/v1");
    assert_eq!(config["kind"], "CredentialProviderConfig");
    let providers = config["providers"].as_sequence().unwrap();
    assert_eq!(providers.len(), 1);
    let p = &providers[0];
    assert_eq!(p["name"], "ecr-credential-provider");
    assert_eq!(p["apiVersion"], "credentialprovider.kubelet.k8s.io/v1");
    assert_eq!(p["defaultCacheDuration"], "12h");
    let matched: Vec<&str> = p["matchImages"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(matched, REGISTRIES);

    // A second run changes nothing and downloads nothing.
    let second = apply(&sb, &server, &vars);
    second.assert_success();
    assert_eq!(second.summary().changed, 0, "{:?}", second.summary());
    assert_eq!(server.downloads(&path), 1);

    // A new version whose published checksum does not match: refused, the old one stays, no
    // download is left behind.
    publish(
        mirror.path(),
        "v1.99.0",
        b"tampered",
        Some(&hex::encode(Sha256::digest(b"something else"))),
    );
    let bad = apply(
        &sb,
        &server,
        &[
            registries.clone(),
            "ecr_credential_provider_version=v1.99.0".into(),
        ],
    );
    assert_eq!(bad.summary().failed, 1, "{:?}", bad.statuses());
    let message = bad
        .step("ecr-credential-provider")
        .message
        .clone()
        .unwrap_or_default();
    assert!(
        message.contains("is not the expected") && message.contains("nothing installed"),
        "{message}"
    );
    assert_eq!(std::fs::read(&installed).unwrap(), binary);
    // Sorted: the dot-file first.
    assert_eq!(
        common::listing(&sb.path("credentialprovider/bin")),
        [
            format!(".ecr-credential-provider-{VERSION}"),
            "ecr-credential-provider".to_string()
        ],
        "only the installed binary and its version marker are left"
    );

    // A pinned checksum wins over the server's file: the same binary, pinned to another digest.
    let pinned = apply(
        &sb,
        &server,
        &[
            registries,
            "ecr_credential_provider_version=v1.99.0".into(),
            format!("ecr_credential_provider_sha256={}", "0".repeat(64)),
        ],
    );
    assert_eq!(pinned.summary().failed, 1, "{:?}", pinned.statuses());
    assert_eq!(std::fs::read(&installed).unwrap(), binary);

    // No registries named: refused before anything is written.
    let sb2 = Sandbox::new();
    let empty = apply(&sb2, &server, &[]);
    assert_eq!(empty.summary().failed, 1, "{:?}", empty.statuses());
    assert!(!sb2.path("credentialprovider").exists());
}

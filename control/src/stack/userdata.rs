//! The instance's cloud-init user-data (`#cloud-config`), generated from typed Rust.
//!
//! How the instance gets `bosund` without credentials in the user-data: the VPC has an S3
//! gateway endpoint and the bucket policy allows `s3:GetObject` on `artifacts/*` only to
//! requests arriving through that endpoint (`aws:SourceVpce`). So plain `curl` fetches the
//! artefacts (Debian images have no `aws` CLI), nothing secret or expiring is written into the
//! user-data (a presigned URL would be both: a bearer credential readable from IMDS by any
//! process, and dead after its expiry, which breaks a later instance recovery or replacement),
//! and the artefacts stay private to the VPC. The SHA-256 of each artefact is in the
//! user-data and checked with `sha256sum -c` before anything is installed: what runs is what
//! `bosun up` uploaded, whoever else can write to the bucket.

use serde::Serialize;

/// The unit file cloud-init installs, from the repository (one source of truth).
pub const BOSUND_SERVICE: &str = include_str!("../../../systemd/bosund.service");

/// Values the user-data needs. Strings may be placeholders that the template replaces with
/// stack values (see [`super::template`]).
#[derive(Debug, Clone)]
pub struct UserDataSpec<'a> {
    /// Stack name (for comments and the agent config).
    pub stack: &'a str,
    /// AWS region.
    pub region: &'a str,
    /// The bucket's name.
    pub bucket: &'a str,
    /// URL prefix of the `artifacts/` keys, without trailing slash.
    pub artifacts_url: &'a str,
    /// SHA-256 of `bosund`.
    pub bosund_sha256: &'a str,
    /// SHA-256 of the playbook tarball.
    pub playbooks_sha256: &'a str,
    /// CloudWatch log group name.
    pub log_group: &'a str,
    /// CloudWatch metrics namespace of the agent.
    pub metrics_namespace: &'a str,
    /// Variables for `bootstrap.toml` (`StackConfig::first_boot_vars`); none when empty.
    pub bootstrap_vars: &'a toml::Table,
    /// `[edge]` is on: `edge.toml` runs after `bootstrap.toml`.
    pub edge: bool,
    /// `[rds]` is on: `database.toml` runs after `bootstrap.toml` (creates the backup user).
    pub database: bool,
    /// `[platform]` is set: `platform.toml` runs last, with the profile in the vars file.
    pub platform: bool,
    /// `[registries]`: `registry.toml` runs once per registry before `bootstrap.toml` starts
    /// k3s (names only: the password is read from SSM on the host).
    pub registries: &'a [super::config::RegistryBoot],
    /// The ECR registries of `[registries]`: `ecr-credential-provider.toml` runs before
    /// `bootstrap.toml` starts k3s (host names only: the instance role logs in).
    pub ecr_registries: &'a [super::config::EcrRegistry],
}

/// Where the first boot writes `[bootstrap_vars]` for `bosund apply --vars-file`.
pub const BOOTSTRAP_VARS_PATH: &str = "/etc/bosun/bootstrap-vars.toml";

#[derive(Serialize)]
struct CloudConfig {
    write_files: Vec<WriteFile>,
    runcmd: Vec<Vec<String>>,
}

#[derive(Serialize)]
struct WriteFile {
    path: String,
    owner: String,
    permissions: String,
    content: String,
}

/// Renders the `#cloud-config` document.
pub fn render(spec: &UserDataSpec<'_>) -> String {
    let mut config = CloudConfig {
        write_files: vec![
            WriteFile {
                path: "/etc/bosun/agent.toml".into(),
                owner: "root:root".into(),
                permissions: "0600".into(),
                content: agent_toml(spec),
            },
            WriteFile {
                path: "/etc/systemd/system/bosund.service".into(),
                owner: "root:root".into(),
                permissions: "0644".into(),
                content: BOSUND_SERVICE.to_string(),
            },
            WriteFile {
                path: "/usr/local/lib/bosun/first-boot".into(),
                owner: "root:root".into(),
                permissions: "0700".into(),
                content: first_boot_script(spec),
            },
        ],
        runcmd: vec![vec!["/usr/local/lib/bosun/first-boot".into()]],
    };
    if !spec.bootstrap_vars.is_empty() {
        config.write_files.push(WriteFile {
            path: BOOTSTRAP_VARS_PATH.into(),
            owner: "root:root".into(),
            permissions: "0600".into(),
            content: toml::to_string(spec.bootstrap_vars).expect("a TOML table serialises"),
        });
    }
    let yaml = serde_norway::to_string(&config).expect("cloud-config serialises to YAML");
    format!(
        "#cloud-config\n# bosun first boot for stack {}\n{yaml}",
        spec.stack
    )
}

/// The agent's config, in `bosund run`'s own format (`bosun_agent::config`, which rejects
/// unknown keys): only what it knows today. The stack's bucket, log group and metrics namespace
/// are recorded as comments until the telemetry and backup sections of that format exist.
fn agent_toml(spec: &UserDataSpec<'_>) -> String {
    format!(
        r#"# Written at first boot by cloud-init, from `bosun up` (stack {stack}, {region}).
# Read by `bosund run --config /etc/bosun/agent.toml` (bosund.service).
# Stack resources: bucket {bucket} (artifacts/, backups/), log group {log_group},
# metrics namespace {ns}.
playbooks_dir = "/etc/bosun/playbooks"
"#,
        stack = spec.stack,
        region = spec.region,
        bucket = spec.bucket,
        ns = spec.metrics_namespace,
        log_group = spec.log_group,
    )
}

fn first_boot_script(spec: &UserDataSpec<'_>) -> String {
    let vars = if spec.bootstrap_vars.is_empty() {
        String::new()
    } else {
        format!(" --vars-file {BOOTSTRAP_VARS_PATH}")
    };
    format!(
        r#"#!/bin/sh
# bosun first boot: fetch bosund and the playbooks from the stack's bucket (through the VPC's
# S3 gateway endpoint, no credentials), verify their SHA-256, install, start, bootstrap.
set -eu
base='{base}'
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fetch() {{
    curl --fail --silent --show-error --retry 10 --retry-delay 3 --retry-connrefused \
        --output "$work/$2" "$base/$1"
}}
fetch 'bosund/{bosund}' bosund
echo '{bosund}  '"$work/bosund" | sha256sum -c -
install -m 0755 "$work/bosund" /usr/local/bin/bosund
fetch 'playbooks/{playbooks}.tar.gz' playbooks.tar.gz
echo '{playbooks}  '"$work/playbooks.tar.gz" | sha256sum -c -
mkdir -p /etc/bosun/playbooks
tar -xzf "$work/playbooks.tar.gz" -C /etc/bosun/playbooks
systemctl daemon-reload
systemctl enable --now bosund
{registries}{ecr}bosund apply /etc/bosun/playbooks/bootstrap.toml{vars}
{edge}{platform}"#,
        base = spec.artifacts_url,
        registries = spec
            .registries
            .iter()
            .map(|r| format!(
                "bosund apply /etc/bosun/playbooks/registry.toml --var {} --var {} --var {}\n",
                sh_quote(&format!("registry_host={}", r.host)),
                sh_quote(&format!("registry_username={}", r.username)),
                sh_quote(&format!(
                    "registry_password_parameter={}",
                    r.password_parameter
                )),
            ))
            .collect::<String>(),
        ecr = if spec.ecr_registries.is_empty() {
            String::new()
        } else {
            let hosts: Vec<&str> = spec
                .ecr_registries
                .iter()
                .map(|r| r.host.as_str())
                .collect();
            format!(
                "bosund apply /etc/bosun/playbooks/ecr-credential-provider.toml{vars} --var {}\n",
                // A `--var` value is a string: the hosts go comma-separated.
                sh_quote(&format!("ecr_registries={}", hosts.join(",")))
            )
        },
        bosund = spec.bosund_sha256,
        playbooks = spec.playbooks_sha256,
        edge = [("edge.toml", spec.edge), ("database.toml", spec.database)]
            .iter()
            .filter(|(_, on)| *on)
            .map(|(pb, _)| format!("bosund apply /etc/bosun/playbooks/{pb}{vars}\n"))
            .collect::<String>(),
        platform = if spec.platform {
            format!("bosund apply /etc/bosun/playbooks/platform.toml{vars}\n")
        } else {
            String::new()
        },
    )
}

/// `s` as one single-quoted shell word (config validation already limits these values to
/// host and account characters; quoting keeps that from being the only guard).
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> UserDataSpec<'static> {
        UserDataSpec {
            stack: "prod-1",
            region: "eu-west-1",
            bucket: "b",
            artifacts_url: "https://b.s3.eu-west-1.amazonaws.com/artifacts",
            bosund_sha256: "aa",
            playbooks_sha256: "bb",
            log_group: "/bosun/prod-1",
            metrics_namespace: "Bosun/Host",
            bootstrap_vars: Box::leak(Box::default()),
            edge: false,
            database: false,
            platform: false,
            registries: &[],
            ecr_registries: &[],
        }
    }

    #[test]
    fn registries_run_before_bootstrap_with_names_only() {
        let regs = [super::super::config::RegistryBoot {
            host: "ghcr.io".into(),
            username: "ci-bot".into(),
            password_parameter: "/bosun/prod-1/registries/ghcr.io".into(),
        }];
        let ecr =
            [
                super::super::config::ecr_registry("123456789012.dkr.ecr.eu-west-1.amazonaws.com")
                    .unwrap(),
            ];
        let script = first_boot_script(&UserDataSpec {
            registries: &regs,
            ecr_registries: &ecr,
            ..spec()
        });
        assert!(
            script.contains("bosund apply /etc/bosun/playbooks/registry.toml --var 'registry_host=ghcr.io' --var 'registry_username=ci-bot' --var 'registry_password_parameter=/bosun/prod-1/registries/ghcr.io'\nbosund apply /etc/bosun/playbooks/ecr-credential-provider.toml --var 'ecr_registries=123456789012.dkr.ecr.eu-west-1.amazonaws.com'\nbosund apply /etc/bosun/playbooks/bootstrap.toml\n"),
            "{script}"
        );
        assert_eq!(sh_quote("a'b"), "'a'\\''b'");
    }

    #[test]
    fn platform_runs_last_with_the_vars_file() {
        assert!(!render(&spec()).contains("platform.toml"));
        let vars: toml::Table = toml::from_str("profile = \"learner\"\n").unwrap();
        let script = first_boot_script(&UserDataSpec {
            bootstrap_vars: &vars,
            edge: true,
            platform: true,
            ..spec()
        });
        assert!(
            script.ends_with(&format!(
                "bosund apply /etc/bosun/playbooks/edge.toml --vars-file {BOOTSTRAP_VARS_PATH}\nbosund apply /etc/bosun/playbooks/platform.toml --vars-file {BOOTSTRAP_VARS_PATH}\n"
            )),
            "{script}"
        );
    }

    #[test]
    fn bootstrap_vars_reach_the_bootstrap_only_when_given() {
        let plain = render(&spec());
        assert!(!plain.contains(BOOTSTRAP_VARS_PATH));
        let vars: toml::Table =
            toml::from_str("k3s_version = \"v1.2.3+k3s1\"\n[docker_daemon]\niptables = false\n")
                .unwrap();
        let ud = render(&UserDataSpec {
            bootstrap_vars: &vars,
            ..spec()
        });
        let parsed: serde_norway::Value = serde_norway::from_str(&ud).unwrap();
        let files = parsed["write_files"].as_sequence().unwrap();
        let written = files
            .iter()
            .find(|f| f["path"] == BOOTSTRAP_VARS_PATH)
            .unwrap();
        assert_eq!(written["permissions"], "0600");
        let back: toml::Table = toml::from_str(written["content"].as_str().unwrap()).unwrap();
        assert_eq!(back, vars);
        assert!(ud.contains(&format!(
            "bosund apply /etc/bosun/playbooks/bootstrap.toml --vars-file {BOOTSTRAP_VARS_PATH}\n"
        )));
        assert!(!ud.contains("edge.toml"));
        // The script as cloud-init writes it (inside the YAML it is an indented block).
        let edge = first_boot_script(&UserDataSpec {
            bootstrap_vars: &vars,
            edge: true,
            database: true,
            ..spec()
        });
        let at = |pb: &str| {
            edge.find(&format!(
                "bosund apply /etc/bosun/playbooks/{pb} --vars-file {BOOTSTRAP_VARS_PATH}\n"
            ))
            .unwrap_or_else(|| panic!("{pb} is run:\n{edge}"))
        };
        assert!(at("bootstrap.toml") < at("edge.toml") && at("edge.toml") < at("database.toml"));
    }

    #[test]
    fn user_data_installs_the_repository_unit_and_verifies_before_installing() {
        let ud = render(&spec());
        assert!(ud.starts_with("#cloud-config\n"));
        let parsed: serde_norway::Value = serde_norway::from_str(&ud).unwrap();
        let files = parsed["write_files"].as_sequence().unwrap();
        let unit = files
            .iter()
            .find(|f| f["path"] == "/etc/systemd/system/bosund.service")
            .unwrap();
        assert_eq!(unit["content"].as_str().unwrap(), BOSUND_SERVICE);
        let script = files
            .iter()
            .find(|f| f["path"] == "/usr/local/lib/bosun/first-boot")
            .unwrap();
        let script = script["content"].as_str().unwrap();
        let check = script.find("echo 'aa  '").unwrap();
        let install = script.find("install -m 0755").unwrap();
        assert!(
            check < install,
            "the digest is checked before bosund is installed"
        );
        assert!(!ud.contains("AWS_SECRET") && !ud.contains("X-Amz-Signature"));
    }

    #[test]
    fn agent_config_is_accepted_by_the_agent() {
        let text = agent_toml(&spec());
        let config = bosun_agent::config::parse(bosun_model::playbook::Source::new(
            "agent.toml",
            text.clone(),
        ))
        .unwrap_or_else(|d| panic!("bosund would refuse its config:\n{}", d.render(false)));
        assert_eq!(
            config.playbooks_dir,
            std::path::PathBuf::from("/etc/bosun/playbooks"),
            "where first-boot extracts the playbooks"
        );
    }
}

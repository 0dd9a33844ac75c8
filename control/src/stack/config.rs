//! `stack.toml`: what an operator chooses about the stack. Plain serde structs with
//! `deny_unknown_fields`; every default lives here, next to its field.
//!
//! ```toml
//! name = "prod-1"
//! region = "eu-west-1"
//! operator_cidr = "203.0.113.7/32"
//! ssh_public_key = "~/.ssh/id_ed25519.pub"
//! # instance_type = "t2.micro"; os = "debian12" | "al2023"; public_http = false
//! [backups]
//! glacier_after_days = 30
//! expire_after_days = 365
//! [rds]            # optional: RDS MySQL
//! [dns]            # optional: Route 53 record (at the Elastic IP) and ACM certificate
//! hosted_zone_id = "Z0123456789ABCDEFGHIJ"
//! record_name = "prod-1.example.com"
//! certificate = true
//! [edge]           # optional: CloudFront in front of the host's ingress (see template::edge)
//! domain_names = ["app.example.com", "jenkins.example.com"]
//! hosted_zone_id = "Z0123456789ABCDEFGHIJ"
//! origin_prefix_list = "pl-4fa04526"   # CloudFront's origin-facing list in `region`
//! health_check_path = "/healthz"
//! [alarms]
//! email = ["ops@example.com"]
//! [bootstrap_vars] # optional: over bootstrap.toml's [vars] at first boot
//! k3s_version = "v1.31.4+k3s1"
//! [nodes]          # optional: k3s agents in an Auto Scaling group (see template::nodes)
//! count = 2        # min = max = count unless given
//! max = 4
//! instance_type = "t3.small"
//! public_address = false   # reached through the server (ProxyJump)
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The whole `stack.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackConfig {
    /// Stack name (CloudFormation stack, tags, log group `/bosun/<name>`, SSM path
    /// `/bosun/<name>/`): letters, digits and hyphens, starting with a letter, at most 32.
    pub name: String,
    /// AWS region, e.g. `eu-west-1`.
    pub region: String,
    /// The only source address allowed to reach SSH (port 22), e.g. `203.0.113.7/32`.
    pub operator_cidr: String,
    /// The operator's SSH public key (OpenSSH format), imported as the instance's key pair.
    /// `~/` is the home directory; a relative path is relative to `stack.toml`.
    pub ssh_public_key: PathBuf,
    /// EC2 instance type.
    #[serde(default = "default_instance_type")]
    pub instance_type: String,
    /// Operating system of the AMI, looked up in AWS's public SSM parameters.
    #[serde(default)]
    pub os: Os,
    /// A fixed AMI id instead of the latest one for `os` (the latest changes when the
    /// distribution publishes a new image, and a new image replaces the instance).
    #[serde(default)]
    pub ami: Option<String>,
    /// Root volume size in GiB (gp3, encrypted).
    #[serde(default = "default_root_volume_gb")]
    pub root_volume_gb: u32,
    /// Open HTTP and HTTPS (80/443) to the world for the cluster's ingress.
    #[serde(default)]
    pub public_http: bool,
    /// A customer-managed KMS key (per region) for the log group and the alarm topic (a
    /// trade-off left off by default: 1 USD a month per key; both are encrypted at rest by
    /// AWS-owned keys anyway, and CloudWatch alarms cannot publish to a topic under the
    /// AWS-managed `alias/aws/sns` key).
    #[serde(default)]
    pub kms_key: bool,
    /// The VPC's address range; the public subnet is its first /24.
    #[serde(default = "default_vpc_cidr")]
    pub vpc_cidr: String,
    /// Directory of playbooks uploaded for the first boot (must hold `bootstrap.toml`);
    /// relative to `stack.toml`.
    #[serde(default = "default_playbooks")]
    pub playbooks: PathBuf,
    /// CloudWatch Logs.
    #[serde(default)]
    pub logs: LogsConfig,
    /// Backups in the stack's bucket.
    #[serde(default)]
    pub backups: BackupsConfig,
    /// Alarm thresholds.
    #[serde(default)]
    pub alarms: AlarmsConfig,
    /// Optional RDS MySQL database.
    #[serde(default)]
    pub rds: Option<RdsConfig>,
    /// Optional DNS record (and certificate) for the host.
    #[serde(default)]
    pub dns: Option<DnsConfig>,
    /// Optional CloudFront distribution in front of the host's ingress.
    #[serde(default)]
    pub edge: Option<EdgeConfig>,
    /// The platform (playbooks/platform.toml) the host will run: its profile or components,
    /// which `bosun platform budget`, `plan` and `up` check against `instance_type`.
    #[serde(default)]
    pub platform: Option<PlatformConfig>,
    /// `[registries."<host>"]`: private container registries k3s pulls from with credentials
    /// (`docker.io`, `ghcr.io`, ...). Only the username is written here; the password (token)
    /// is a SecureString the operator puts in SSM at [`StackConfig::registry_password_parameter`],
    /// read on the host at boot (playbooks/registry.toml), never in the template or user-data.
    /// An ECR host (`<account>.dkr.ecr.<region>.amazonaws.com`) takes no username: the kubelet's
    /// credential provider gets its tokens with the instance role
    /// (playbooks/ecr-credential-provider.toml), which may pull from the named registries only.
    #[serde(default)]
    pub registries: std::collections::BTreeMap<String, RegistryConfig>,
    /// `[nodes]`: k3s agents in an Auto Scaling group beside the host (the server).
    #[serde(default)]
    pub nodes: Option<toml::Spanned<NodesConfig>>,
    /// Endpoint overrides, for tests against moto and the host-in-a-box.
    #[serde(default)]
    pub endpoints: EndpointsConfig,
    /// Variables for the first boot's `bootstrap.toml` over its `[vars]` (versions, release
    /// mirrors, `docker_daemon`, ...): written to the instance with its user-data and passed
    /// with `--vars-file`. The user-data is readable through IMDS: no secrets here.
    #[serde(default)]
    pub bootstrap_vars: toml::Table,
}

/// `[platform]`: which of playbooks/platform.toml's components the host runs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformConfig {
    /// `learner` (a 1 GiB node), `small` (4 GiB) or `full` (16 GiB or several nodes).
    #[serde(default)]
    pub profile: Option<String>,
    /// An explicit component list instead of (or over) the profile's.
    #[serde(default)]
    pub components: Vec<String>,
}

/// `[registries."<host>"]`: who k3s logs in as (the password is in SSM, never here).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// The registry user name (Docker Hub / GHCR account or bot); none for ECR.
    #[serde(default)]
    pub username: Option<String>,
    /// Read only to be refused without being quoted (a parse error would show its line).
    #[serde(default, alias = "token", alias = "auth", alias = "identitytoken")]
    pub password: Option<serde::de::IgnoredAny>,
}

/// An ECR registry: `<account>.dkr.ecr.<region>.amazonaws.com`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrRegistry {
    /// The host, as images name it.
    pub host: String,
    /// The 12-digit account id.
    pub account: String,
    /// The region.
    pub region: String,
}

/// `host` as an ECR registry, when it is one (a private registry in a commercial region:
/// `<12 digits>.dkr.ecr.<region>.amazonaws.com`).
pub fn ecr_registry(host: &str) -> Option<EcrRegistry> {
    let rest = host.strip_suffix(".amazonaws.com")?;
    let (account, rest) = rest.split_once(".dkr.ecr.")?;
    let region_ok = !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    (account.len() == 12 && account.chars().all(|c| c.is_ascii_digit()) && region_ok).then(|| {
        EcrRegistry {
            host: host.to_string(),
            account: account.to_string(),
            region: rest.to_string(),
        }
    })
}

/// What the first boot passes to playbooks/registry.toml for one registry: host, username and
/// the SSM parameter holding its password. Names only, no credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryBoot {
    /// The registry host as k3s keys it (`docker.io`, `ghcr.io`, `registry.example.com:5000`).
    pub host: String,
    /// The user name.
    pub username: String,
    /// The SSM parameter with the password.
    pub password_parameter: String,
}

/// `[nodes]`: k3s agents in an Auto Scaling group, joined to the host (the k3s server) with
/// the token it publishes at [`StackConfig::k3s_token_parameter`]. Values keep their place in
/// the file, so a bad one is reported at its line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodesConfig {
    /// How many agents run (the group's desired capacity). Changing it changes only the group.
    pub count: toml::Spanned<u32>,
    /// The fewest agents the group keeps (default: `count`).
    #[serde(default)]
    pub min: Option<toml::Spanned<u32>>,
    /// The most agents the group may run (default: `count`).
    #[serde(default)]
    pub max: Option<toml::Spanned<u32>>,
    /// The agents' EC2 instance type (default: the host's `instance_type`).
    #[serde(default)]
    pub instance_type: Option<toml::Spanned<String>>,
    /// Agents get a public IPv4 address (SSH from `operator_cidr` only). With `false` they have
    /// private addresses only: `bosun run --inventory aws:<stack>` reaches them through the
    /// host (ProxyJump), and they reach the internet only through the VPC's S3 endpoint (no NAT
    /// gateway: the k3s release must come from a mirror they can reach, see KNOWN_GAPS.md).
    #[serde(default = "default_true")]
    pub public_address: bool,
}

impl NodesConfig {
    /// The group's desired capacity.
    pub fn count(&self) -> u32 {
        *self.count.get_ref()
    }
    /// The group's minimum size.
    pub fn min(&self) -> u32 {
        self.min.as_ref().map_or(self.count(), |m| *m.get_ref())
    }
    /// The group's maximum size.
    pub fn max(&self) -> u32 {
        self.max.as_ref().map_or(self.count(), |m| *m.get_ref())
    }
    /// The agents' instance type, `host_type` when not given.
    pub fn instance_type<'a>(&'a self, host_type: &'a str) -> &'a str {
        self.instance_type
            .as_ref()
            .map_or(host_type, |t| t.get_ref())
    }
}

/// Tag keys on the stack's instances (and the agents' Auto Scaling group), read back by
/// `bosun run --inventory aws:<stack>`.
pub mod tags {
    /// The stack's name.
    pub const STACK: &str = "bosun:stack";
    /// `server` (the host) or `agent` (the `[nodes]` group).
    pub const ROLE: &str = "bosun:role";
    /// How the operator reaches the instance: `public` (its public address) or `private`
    /// (its private address, through a server with a public one).
    pub const ADDRESS: &str = "bosun:address";
    /// The AMI's login user (`admin`, `ec2-user`).
    pub const LOGIN_USER: &str = "bosun:login-user";
}

/// The profiles of playbooks/platform.toml.
pub const PLATFORM_PROFILES: &[&str] = &["learner", "small", "full"];
/// The components of playbooks/platform.toml.
pub const PLATFORM_COMPONENTS: &[&str] = &[
    "ingress",
    "monitoring",
    "blackbox",
    "jenkins",
    "sonarqube",
    "kafka",
    "logs",
    // Logs through ECK (Elastic License 2.0) instead of OpenSearch: playbooks/platform/logs-eck.toml.
    "logs-eck",
];

/// The host's operating system.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Os {
    /// Debian 12 (bookworm), amd64.
    #[default]
    Debian12,
    /// Amazon Linux 2023, x86_64.
    Al2023,
}

impl Os {
    /// The public SSM parameter holding the latest AMI id for this OS (x86_64, the t2/t3 arch).
    pub fn ami_parameter(self) -> &'static str {
        match self {
            Os::Debian12 => "/aws/service/debian/release/12/latest/amd64",
            Os::Al2023 => "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
        }
    }

    /// The login user of the AMI (for the ssh command in the outputs).
    pub fn login_user(self) -> &'static str {
        match self {
            Os::Debian12 => "admin",
            Os::Al2023 => "ec2-user",
        }
    }
}

/// `[logs]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsConfig {
    /// Retention of the log group, in days (one of CloudWatch's allowed values).
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            retention_days: default_retention_days(),
        }
    }
}

/// `[backups]`: lifecycle of `backups/` in the bucket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupsConfig {
    /// Days after which backups move to S3 Glacier Flexible Retrieval.
    #[serde(default = "default_glacier_days")]
    pub glacier_after_days: u32,
    /// Days after which backups (and old versions) are deleted; more than `glacier_after_days`.
    #[serde(default = "default_expire_days")]
    pub expire_after_days: u32,
    /// Server access logging of the bucket into a second, log-only bucket (a trade-off left
    /// off by default: a few cents a month of log objects, and one more bucket to keep).
    #[serde(default)]
    pub access_logging: bool,
}

impl Default for BackupsConfig {
    fn default() -> Self {
        BackupsConfig {
            glacier_after_days: default_glacier_days(),
            expire_after_days: default_expire_days(),
            access_logging: false,
        }
    }
}

/// `[alarms]`: thresholds, in percent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmsConfig {
    /// Average CPU above this for 15 minutes.
    #[serde(default = "default_cpu_percent")]
    pub cpu_percent: u32,
    /// Memory used above this for 15 minutes (the agent's `mem_used_percent`).
    #[serde(default = "default_memory_percent")]
    pub memory_percent: u32,
    /// Root file system used above this (the agent's `disk_used_percent` for `/`).
    #[serde(default = "default_disk_percent")]
    pub disk_percent: u32,
    /// Who is told when an alarm fires: e-mail subscriptions of the stack's SNS topic (each
    /// address confirms its subscription once, from the mail AWS sends).
    #[serde(default)]
    pub email: Vec<String>,
}

impl Default for AlarmsConfig {
    fn default() -> Self {
        AlarmsConfig {
            cpu_percent: default_cpu_percent(),
            memory_percent: default_memory_percent(),
            disk_percent: default_disk_percent(),
            email: Vec::new(),
        }
    }
}

/// `[rds]`: an RDS MySQL instance in two private subnets, reachable only from the host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RdsConfig {
    /// Instance class.
    #[serde(default = "default_db_class")]
    pub instance_class: String,
    /// Storage in GiB (gp3, encrypted).
    #[serde(default = "default_db_storage")]
    pub allocated_storage_gb: u32,
    /// Days RDS keeps automated backups (1–35).
    #[serde(default = "default_db_backup_days")]
    pub backup_retention_days: u32,
    /// Master user name; its password is generated and kept by Secrets Manager.
    #[serde(default = "default_db_user")]
    pub master_username: String,
    /// The database user the host's role may connect as with an IAM token
    /// (`rds-db:connect`, nothing else); bootstrap creates it with the `mysql_user` step.
    #[serde(default = "default_db_backup_user")]
    pub backup_user: String,
    /// A standby in a second zone (a trade-off left off by default: it doubles the instance
    /// and storage cost, about 15 USD a month for a db.t3.micro with 20 GiB).
    #[serde(default)]
    pub multi_az: bool,
    /// Enhanced monitoring interval in seconds (0 = off, the default; 1, 5, 10, 15, 30 or
    /// 60): OS metrics from the database host, billed as CloudWatch Logs ingestion.
    #[serde(default)]
    pub monitoring_interval: u32,
}

/// `[dns]`: an A record for the host in an existing hosted zone, optionally an ACM certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// The Route 53 hosted zone id.
    pub hosted_zone_id: String,
    /// The record's fully qualified name, e.g. `prod-1.example.com`.
    pub record_name: String,
    /// Also request an ACM certificate for `record_name`, validated by DNS in the zone.
    #[serde(default)]
    pub certificate: bool,
}

/// `[edge]`: a CloudFront distribution in front of the host's ingress, for `domain_names`.
///
/// What must live in us-east-1 (the certificate CloudFront uses, the Route 53 health checks'
/// alarms) goes into a second stack `<name>-edge` there when `region` is another one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// The public names, e.g. `["app.example.com", "jenkins.example.com"]`: the
    /// distribution's aliases, the certificate's names, one alias A and AAAA record each.
    pub domain_names: Vec<String>,
    /// The Route 53 hosted zone holding every name (records and certificate validation).
    pub hosted_zone_id: String,
    /// An issued ACM certificate in us-east-1 covering every name, instead of one bosun requests.
    #[serde(default)]
    pub certificate_arn: Option<String>,
    /// The id of CloudFront's origin-facing managed prefix list in `region`
    /// (`com.amazonaws.global.cloudfront.origin-facing`; `aws ec2 describe-managed-prefix-lists
    /// --filters Name=prefix-list-name,Values=com.amazonaws.global.cloudfront.origin-facing`):
    /// the only source the host accepts HTTP from.
    pub origin_prefix_list: String,
    /// The path Route 53's health checks request on each name, through CloudFront.
    #[serde(default = "default_health_check_path")]
    pub health_check_path: String,
    /// CloudFront standard access logs into the stack's bucket under `cloudfront/` (a
    /// trade-off left off by default: log objects cost cents, but the bucket would need ACLs).
    #[serde(default)]
    pub access_logging: bool,
    /// An AWS WAF web ACL on the distribution with AWS's common and known-bad-inputs rule
    /// groups (a trade-off left off by default: about 7 USD a month, 5 for the ACL, 1 per rule
    /// group, plus 0.60 per million requests).
    #[serde(default)]
    pub waf: bool,
}

/// The region whose ACM certificates CloudFront can use, and where Route 53 health-check
/// metrics live.
pub const EDGE_REGION: &str = "us-east-1";

impl StackConfig {
    /// Whether `[edge]` needs a second stack in [`EDGE_REGION`].
    pub fn has_edge_stack(&self) -> bool {
        self.edge.is_some() && self.region != EDGE_REGION
    }

    /// The name of the second stack (in [`EDGE_REGION`]).
    pub fn edge_stack_name(&self) -> String {
        format!("{}-edge", self.name)
    }

    /// The SSM parameter (a SecureString the operator creates) holding the password of the
    /// registry `host`: under /bosun/<stack>/, which the host's role may read.
    pub fn registry_password_parameter(&self, host: &str) -> String {
        format!("/bosun/{}/registries/{host}", self.name)
    }

    /// `[registries]` as the first boot runs playbooks/registry.toml, in host order (ECR
    /// registries are not among them: see [`StackConfig::ecr_registries`]).
    pub fn registry_boot(&self) -> Vec<RegistryBoot> {
        self.registries
            .iter()
            .filter(|(host, _)| ecr_registry(host).is_none())
            .map(|(host, r)| RegistryBoot {
                host: host.clone(),
                username: r.username.clone().unwrap_or_default(),
                password_parameter: self.registry_password_parameter(host),
            })
            .collect()
    }

    /// The ECR registries of `[registries]`, in host order: the kubelet's credential provider
    /// pulls from them with the instance role (playbooks/ecr-credential-provider.toml).
    pub fn ecr_registries(&self) -> Vec<EcrRegistry> {
        self.registries
            .keys()
            .filter_map(|host| ecr_registry(host))
            .collect()
    }

    /// The SSM parameter (SecureString, AWS-managed key `alias/aws/ssm`) where the host's first
    /// boot publishes the k3s join token and agents read it: never in a template, user-data or
    /// output. The host's role may put it; the agents' role may only get it, and nothing else.
    pub fn k3s_token_parameter(&self) -> String {
        format!("/bosun/{}/k3s-token", self.name)
    }

    /// The host's (the k3s server's) first-boot variables: [`Self::first_boot_vars`] and what
    /// bootstrap's `k3s_install` and `ssm_parameter` steps need to run the server and publish
    /// its join token (always: a stack that gains `[nodes]` later must not need a new host).
    /// `[bootstrap_vars] k3s_token_parameter = ""` turns publishing off, for a host that
    /// cannot reach SSM (the host-in-a-box of control/tests/firstboot.rs).
    pub fn server_boot_vars(&self, db_host: &str, db_secret_arn: &str) -> toml::Table {
        let mut vars = self.first_boot_vars(db_host, db_secret_arn);
        vars.insert("k3s_role".into(), "server".into());
        vars.entry("k3s_token_parameter")
            .or_insert_with(|| self.k3s_token_parameter().into());
        vars
    }

    /// An agent's first-boot variables: `[bootstrap_vars]` (versions and mirrors, as on the
    /// server), then the agent role, the server's URL at `server_address` (its private address)
    /// and the token parameter, over any of the operator's. No secret: the token is read from
    /// SSM on the agent.
    pub fn agent_boot_vars(&self, server_address: &str) -> toml::Table {
        let mut vars = self.bootstrap_vars.clone();
        vars.insert("k3s_role".into(), "agent".into());
        vars.insert(
            "k3s_server_url".into(),
            format!("https://{server_address}:6443").into(),
        );
        vars.insert(
            "k3s_token_parameter".into(),
            self.k3s_token_parameter().into(),
        );
        vars
    }

    /// The SSM parameter holding the secret CloudFront sends to the origin; created by
    /// `bosun up`, never written into a template, user-data or output.
    pub fn origin_secret_parameter(&self) -> String {
        format!("/bosun/{}/edge/origin-secret", self.name)
    }
    /// The variables of the first boot's playbooks: `[bootstrap_vars]`; with `[edge]` the
    /// origin secret's parameter name (edge.toml reads the value itself) and a k3s config that
    /// keeps the bundled Traefik (unless `[bootstrap_vars]` sets `k3s_config` itself); with
    /// `[rds]` what database.toml needs: `db_host` and `db_secret_arn` as given (the template
    /// passes placeholders it replaces with the database's attributes), the user names and the
    /// region. None of them is a secret (the user-data is readable through IMDS).
    pub fn first_boot_vars(&self, db_host: &str, db_secret_arn: &str) -> toml::Table {
        let mut vars = self.bootstrap_vars.clone();
        if let Some(rds) = &self.rds {
            for (k, v) in [
                ("db_host", db_host),
                ("db_secret_arn", db_secret_arn),
                ("db_master_user", &rds.master_username),
                ("db_backup_user", &rds.backup_user),
                ("db_region", &self.region),
            ] {
                vars.insert(k.into(), v.into());
            }
        }
        if self.edge.is_some() {
            vars.insert(
                "origin_secret_parameter".into(),
                self.origin_secret_parameter().into(),
            );
            if !vars.contains_key("k3s_config") {
                let mut k3s = toml::Table::new();
                k3s.insert(
                    "disable".into(),
                    toml::Value::Array(vec!["servicelb".into(), "metrics-server".into()]),
                );
                vars.insert("k3s_config".into(), k3s.into());
            }
        }
        if let Some(platform) = &self.platform {
            // platform.toml's selection (outside variables win inside its includes too).
            if let Some(profile) = &platform.profile {
                vars.insert("profile".into(), profile.as_str().into());
            }
            if !platform.components.is_empty() {
                vars.insert(
                    "components".into(),
                    toml::Value::Array(
                        platform
                            .components
                            .iter()
                            .map(|c| c.as_str().into())
                            .collect(),
                    ),
                );
            }
            vars.insert("edge".into(), self.edge.is_some().into());
            // The ingress component sizes k3s's bundled Traefik: keep it on (bootstrap's
            // small-host default disables it).
            if !vars.contains_key("k3s_config") {
                let mut k3s = toml::Table::new();
                k3s.insert(
                    "disable".into(),
                    toml::Value::Array(vec!["servicelb".into()]),
                );
                vars.insert("k3s_config".into(), k3s.into());
            }
        }
        vars
    }
}

/// `[endpoints]`: where bosun and the instance reach AWS, when not AWS itself.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointsConfig {
    /// One endpoint for every AWS API bosun calls (like `AWS_ENDPOINT_URL`); `--endpoint-url`
    /// and `AWS_ENDPOINT_URL` win over it.
    #[serde(default)]
    pub aws: Option<String>,
    /// Base URL the instance fetches artefacts from, path-style (`<url>/<bucket>/artifacts/…`),
    /// instead of the bucket's regional HTTPS endpoint.
    #[serde(default)]
    pub artifacts: Option<String>,
}

fn default_true() -> bool {
    true
}
fn default_instance_type() -> String {
    "t2.micro".into()
}
fn default_root_volume_gb() -> u32 {
    20
}
fn default_vpc_cidr() -> String {
    "10.42.0.0/16".into()
}
fn default_playbooks() -> PathBuf {
    "playbooks".into()
}
fn default_retention_days() -> u32 {
    30
}
fn default_glacier_days() -> u32 {
    30
}
fn default_expire_days() -> u32 {
    365
}
fn default_cpu_percent() -> u32 {
    80
}
fn default_memory_percent() -> u32 {
    90
}
fn default_disk_percent() -> u32 {
    85
}
fn default_db_class() -> String {
    "db.t3.micro".into()
}
fn default_db_storage() -> u32 {
    20
}
fn default_db_backup_days() -> u32 {
    7
}
fn default_db_user() -> String {
    "bosun_admin".into()
}
fn default_db_backup_user() -> String {
    "bosun_backup".into()
}
fn default_health_check_path() -> String {
    "/".into()
}

/// CloudWatch Logs' allowed retention values.
const RETENTION_DAYS: &[u32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// A loaded config with its paths resolved and the public key read.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The parsed file.
    pub stack: StackConfig,
    /// Contents of `ssh_public_key`, trimmed.
    pub public_key: String,
    /// `playbooks`, resolved against the config's directory.
    pub playbooks_dir: PathBuf,
}

impl StackConfig {
    /// Parses and validates `stack.toml` text; every problem is reported, not just the first.
    pub fn parse(text: &str, origin: &str) -> Result<StackConfig> {
        let config: StackConfig =
            toml::from_str(text).with_context(|| format!("{origin}: invalid stack config"))?;
        let mut problems = config.problems();
        if let Some(nodes) = &config.nodes {
            problems.extend(nodes_problems(nodes.get_ref(), text, origin));
        }
        if !problems.is_empty() {
            bail!(
                "{origin}: invalid stack config:\n  - {}",
                problems.join("\n  - ")
            );
        }
        Ok(config)
    }

    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let name_ok = self.name.len() <= 32
            && self.name.starts_with(|c: char| c.is_ascii_alphabetic())
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !name_ok {
            p.push(format!(
                "name {:?}: use letters, digits and hyphens, starting with a letter, at most 32",
                self.name
            ));
        }
        if !is_cidr(&self.operator_cidr) {
            p.push(format!(
                "operator_cidr {:?} is not an IPv4 CIDR like 203.0.113.7/32",
                self.operator_cidr
            ));
        } else if self.operator_cidr.ends_with("/0") {
            p.push("operator_cidr must not be /0: SSH would be open to the world".into());
        }
        if !is_cidr(&self.vpc_cidr) || !self.vpc_cidr.ends_with("/16") {
            p.push(format!("vpc_cidr {:?} must be an IPv4 /16", self.vpc_cidr));
        }
        if !RETENTION_DAYS.contains(&self.logs.retention_days) {
            p.push(format!(
                "logs.retention_days = {} is not a CloudWatch value; use one of {RETENTION_DAYS:?}",
                self.logs.retention_days
            ));
        }
        if self.backups.expire_after_days <= self.backups.glacier_after_days {
            p.push(format!(
                "backups.expire_after_days ({}) must be more than glacier_after_days ({})",
                self.backups.expire_after_days, self.backups.glacier_after_days
            ));
        }
        if let Some(rds) = &self.rds
            && !(1..=35).contains(&rds.backup_retention_days)
        {
            p.push("rds.backup_retention_days must be 1 to 35 (0 would disable backups)".into());
        }
        if let Some(rds) = &self.rds
            && ![0, 1, 5, 10, 15, 30, 60].contains(&rds.monitoring_interval)
        {
            p.push(format!(
                "rds.monitoring_interval = {} is not one of 0, 1, 5, 10, 15, 30, 60",
                rds.monitoring_interval
            ));
        }
        if let Some(rds) = &self.rds
            && !is_mysql_user(&rds.backup_user)
        {
            p.push(format!(
                "rds.backup_user {:?}: use letters, digits and underscores, at most 32",
                rds.backup_user
            ));
        }
        for e in &self.alarms.email {
            if !e.contains('@') || e.contains(char::is_whitespace) {
                p.push(format!("alarms.email {e:?} is not an e-mail address"));
            }
        }
        if let Some(edge) = &self.edge {
            p.extend(edge_problems(edge));
            if self.public_http {
                p.push(
                    "public_http = true and [edge] exclude each other: with [edge] the host takes \
                     HTTP from CloudFront only; remove public_http"
                        .into(),
                );
            }
        }
        if let Some(platform) = &self.platform {
            if let Some(profile) = &platform.profile
                && !PLATFORM_PROFILES.contains(&profile.as_str())
            {
                p.push(format!(
                    "platform.profile {profile:?} is not one of {}",
                    PLATFORM_PROFILES.join(", ")
                ));
            }
            for c in &platform.components {
                if !PLATFORM_COMPONENTS.contains(&c.as_str()) {
                    p.push(format!(
                        "platform.components: {c:?} is not one of {}",
                        PLATFORM_COMPONENTS.join(", ")
                    ));
                }
            }
            if platform.components.iter().any(|c| c == "logs")
                && platform.components.iter().any(|c| c == "logs-eck")
            {
                p.push(
                    "platform.components: \"logs\" (OpenSearch) and \"logs-eck\" (Elasticsearch \
                     through ECK) are alternatives: name one"
                        .into(),
                );
            }
            if platform.profile.is_none() && platform.components.is_empty() {
                p.push("[platform] names neither a profile nor components".into());
            }
        }
        for (host, r) in &self.registries {
            p.extend(registry_problems(host, r.username.as_deref()));
            if r.password.is_some() {
                p.push(format!(
                    "registries.{host:?}: a password or token never goes in stack.toml (the \
                     template and user-data are readable); put it in SSM as a SecureString at {}",
                    self.registry_password_parameter(host)
                ));
            }
        }
        if let Some(ami) = &self.ami
            && !ami.starts_with("ami-")
        {
            p.push(format!("ami {ami:?} is not an AMI id (ami-…)"));
        }
        p
    }

    /// Reads, parses and validates `path`, then reads the public key it names.
    pub fn load(path: &Path) -> Result<LoadedConfig> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read stack config {} (create it, or pass --config)",
                path.display()
            )
        })?;
        let stack = StackConfig::parse(&text, &path.display().to_string())?;
        let base = path.parent().unwrap_or(Path::new("."));
        let key_path = resolve(base, &stack.ssh_public_key);
        let public_key = std::fs::read_to_string(&key_path)
            .with_context(|| {
                format!(
                    "cannot read ssh_public_key {} (generate one with ssh-keygen -t ed25519)",
                    key_path.display()
                )
            })?
            .trim()
            .to_string();
        let known = ["ssh-ed25519 ", "ssh-rsa ", "ecdsa-sha2-nistp"];
        if !known.iter().any(|k| public_key.starts_with(k)) || public_key.contains('\n') {
            bail!(
                "{} is not one OpenSSH public key (ssh-ed25519, ssh-rsa or ecdsa): point \
                 ssh_public_key at the .pub file",
                key_path.display()
            );
        }
        let playbooks_dir = resolve(base, &stack.playbooks);
        Ok(LoadedConfig {
            stack,
            public_key,
            playbooks_dir,
        })
    }
}

/// `origin:line` of a byte offset in `text`.
fn at(origin: &str, text: &str, offset: usize) -> String {
    let line = text
        .get(..offset)
        .map_or(0, |before| before.matches('\n').count())
        + 1;
    format!("{origin}:{line}")
}

/// What is wrong with `[nodes]`, each problem at its line in `text`.
fn nodes_problems(n: &NodesConfig, text: &str, origin: &str) -> Vec<String> {
    let mut p = Vec::new();
    let count_at = at(origin, text, n.count.span().start);
    if let Some(min) = &n.min
        && n.min() > n.count()
    {
        p.push(format!(
            "{}: nodes.min = {} is more than nodes.count = {} (expected min <= count <= max)",
            at(origin, text, min.span().start),
            n.min(),
            n.count()
        ));
    }
    if let Some(max) = &n.max
        && n.max() < n.count()
    {
        p.push(format!(
            "{}: nodes.max = {} is less than nodes.count = {} (expected min <= count <= max)",
            at(origin, text, max.span().start),
            n.max(),
            n.count()
        ));
    }
    if n.max() == 0 {
        p.push(format!(
            "{count_at}: [nodes] allows no agent (max 0): remove [nodes], or set count to 1 or more"
        ));
    } else if n.max() > MAX_NODES {
        p.push(format!(
            "{}: [nodes] allows {} agents; bosun's one server takes at most {MAX_NODES} (expected \
             max <= {MAX_NODES})",
            at(
                origin,
                text,
                n.max.as_ref().map_or(n.count.span(), |m| m.span()).start
            ),
            n.max()
        ));
    }
    if let Some(t) = &n.instance_type
        && !is_instance_type(t.get_ref())
    {
        p.push(format!(
            "{}: nodes.instance_type {:?} is not an EC2 instance type (expected family.size, \
             e.g. \"t3.small\")",
            at(origin, text, t.span().start),
            t.get_ref()
        ));
    }
    p
}

/// The most agents one stack's server is sized for here (k3s's guide: 0–350 agents need a
/// 2 vCPU / 4 GiB server; bosun's defaults are far smaller).
pub const MAX_NODES: u32 = 100;

/// `family.size`, lower case (`t3.small`, `m7g.xlarge`, `c6in.2xlarge`).
fn is_instance_type(s: &str) -> bool {
    let Some((family, size)) = s.split_once('.') else {
        return false;
    };
    family.starts_with(|c: char| c.is_ascii_lowercase())
        && family
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !size.is_empty()
        && size
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

fn edge_problems(edge: &EdgeConfig) -> Vec<String> {
    let mut p = Vec::new();
    if edge.domain_names.is_empty() {
        p.push("edge.domain_names is empty: name at least one, e.g. [\"app.example.com\"]".into());
    }
    for name in &edge.domain_names {
        let ok = name.len() <= 253
            && name.contains('.')
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !ok {
            p.push(format!(
                "edge.domain_names: {name:?} is not a fully qualified name like app.example.com \
                 (wildcards and trailing dots are not taken)"
            ));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for name in &edge.domain_names {
        if !seen.insert(name.to_ascii_lowercase()) {
            p.push(format!("edge.domain_names lists {name:?} twice"));
        }
    }
    if !edge.hosted_zone_id.starts_with('Z') {
        p.push(format!(
            "edge.hosted_zone_id {:?} is not a Route 53 zone id (Z…)",
            edge.hosted_zone_id
        ));
    }
    if !edge.origin_prefix_list.starts_with("pl-") {
        p.push(format!(
            "edge.origin_prefix_list {:?} is not a prefix list id (pl-…)",
            edge.origin_prefix_list
        ));
    }
    if let Some(arn) = &edge.certificate_arn
        && !arn.starts_with(&format!("arn:aws:acm:{EDGE_REGION}:"))
    {
        p.push(format!(
            "edge.certificate_arn {arn:?} is not an ACM certificate in {EDGE_REGION}: \
             CloudFront uses certificates from {EDGE_REGION} only"
        ));
    }
    if !edge.health_check_path.starts_with('/') || edge.health_check_path.len() > 255 {
        p.push(format!(
            "edge.health_check_path {:?} must start with / (at most 255 characters)",
            edge.health_check_path
        ));
    }
    p
}

/// A MySQL user name bosun is willing to put into SQL and IAM policies unquoted.
fn is_mysql_user(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `playbooks` of the config at `config_path`, resolved against the config's directory.
pub fn playbooks_dir(config_path: &Path, stack: &StackConfig) -> PathBuf {
    resolve(
        config_path.parent().unwrap_or(Path::new(".")),
        &stack.playbooks,
    )
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if let Ok(rest) = p.strip_prefix("~")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    base.join(p)
}

fn is_cidr(s: &str) -> bool {
    let Some((addr, len)) = s.split_once('/') else {
        return false;
    };
    addr.parse::<std::net::Ipv4Addr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 32)
}

/// What is wrong with `[registries."<host>"] username = ...` (both end up in a shell line and
/// an SSM parameter name, so each is limited to the characters a host or an account name has).
/// An ECR host takes no username (the instance role logs in); any other needs one.
fn registry_problems(host: &str, username: Option<&str>) -> Vec<String> {
    let mut p = Vec::new();
    let (name, port) = host.split_once(':').unwrap_or((host, "1"));
    let host_ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
        && port.parse::<u16>().is_ok_and(|n| n > 0);
    if !host_ok {
        p.push(format!(
            "registries.{host:?}: not a registry host (lower-case name, optional :port), e.g. \"ghcr.io\" or \"docker.io\""
        ));
        return p;
    }
    if name.contains(".dkr.ecr.") {
        if ecr_registry(host).is_none() {
            p.push(format!(
                "registries.{host:?}: an ECR registry is <12-digit account>.dkr.ecr.<region>.amazonaws.com"
            ));
        } else if username.is_some() {
            p.push(format!(
                "registries.{host:?}: ECR takes no username: the kubelet's credential provider \
                 logs in with the instance role (remove `username`)"
            ));
        }
        return p;
    }
    let user_ok = username.is_some_and(|u| {
        !u.is_empty()
            && u.len() <= 256
            && u.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._@+-".contains(c))
    });
    if !user_ok {
        p.push(format!(
            "registries.{host:?}.username: use letters, digits and . _ @ + - (the password goes \
             in SSM as a SecureString at /bosun/<stack>/registries/{host}, not here)"
        ));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "prod-1"
region = "eu-west-1"
operator_cidr = "203.0.113.7/32"
ssh_public_key = "key.pub"
"#;

    #[test]
    fn defaults_live_next_to_the_type() {
        let c = StackConfig::parse(MINIMAL, "t").unwrap();
        assert_eq!(c.instance_type, "t2.micro");
        assert_eq!(c.os, Os::Debian12);
        assert_eq!(c.logs.retention_days, 30);
        assert!(c.rds.is_none() && c.dns.is_none());
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let e = StackConfig::parse(&format!("{MINIMAL}\ninstance_typ = \"t3.small\""), "t")
            .unwrap_err();
        assert!(format!("{e:#}").contains("instance_typ"), "{e:#}");
    }

    #[test]
    fn edge_first_boot_vars_name_the_secret_and_keep_traefik() {
        let text = format!(
            "{MINIMAL}[edge]\ndomain_names = [\"app.example.com\"]\nhosted_zone_id = \"Z1\"\n\
             origin_prefix_list = \"pl-1\"\n"
        );
        let c = StackConfig::parse(&text, "t").unwrap();
        assert!(c.has_edge_stack());
        assert_eq!(c.edge_stack_name(), "prod-1-edge");
        let vars = c.first_boot_vars("h", "s");
        assert_eq!(
            vars["origin_secret_parameter"].as_str(),
            Some("/bosun/prod-1/edge/origin-secret")
        );
        let disable = vars["k3s_config"]["disable"].as_array().unwrap();
        assert!(!disable.iter().any(|d| d.as_str() == Some("traefik")));
        // An operator's own k3s_config wins; without [edge] nothing is added.
        let own = StackConfig::parse(
            &format!("{text}[bootstrap_vars.k3s_config]\nnode-label = [\"a=b\"]\n"),
            "t",
        )
        .unwrap();
        assert!(
            own.first_boot_vars("h", "s")["k3s_config"]
                .get("disable")
                .is_none()
        );
        let plain = StackConfig::parse(MINIMAL, "t").unwrap();
        assert!(plain.first_boot_vars("h", "s").is_empty());
        let rds = StackConfig::parse(&format!("{MINIMAL}[rds]\n"), "t").unwrap();
        let vars = rds.first_boot_vars("db.example", "arn:secret");
        assert_eq!(vars["db_host"].as_str(), Some("db.example"));
        assert_eq!(vars["db_secret_arn"].as_str(), Some("arn:secret"));
        assert_eq!(vars["db_backup_user"].as_str(), Some("bosun_backup"));
        assert_eq!(vars["db_region"].as_str(), Some("eu-west-1"));
    }

    #[test]
    fn nodes_default_to_a_fixed_size_and_bad_sizes_name_their_line() {
        let c = StackConfig::parse(&format!("{MINIMAL}[nodes]\ncount = 2\n"), "t").unwrap();
        let n = c.nodes.as_ref().unwrap().get_ref();
        assert_eq!((n.min(), n.count(), n.max()), (2, 2, 2));
        assert_eq!(n.instance_type("t2.micro"), "t2.micro");
        assert!(n.public_address);
        assert_eq!(
            c.agent_boot_vars("10.42.0.9")["k3s_server_url"].as_str(),
            Some("https://10.42.0.9:6443")
        );
        assert_eq!(
            c.server_boot_vars("h", "s")["k3s_token_parameter"].as_str(),
            Some("/bosun/prod-1/k3s-token")
        );
        let off = StackConfig::parse(
            &format!("{MINIMAL}[bootstrap_vars]\nk3s_token_parameter = \"\"\n"),
            "t",
        )
        .unwrap();
        assert_eq!(
            off.server_boot_vars("h", "s")["k3s_token_parameter"].as_str(),
            Some(""),
            "an operator can turn publishing off"
        );
        assert_eq!(
            off.server_boot_vars("h", "s")["k3s_role"].as_str(),
            Some("server")
        );
        // MINIMAL is 5 lines (a leading newline): [nodes] starts at line 6.
        let text =
            format!("{MINIMAL}[nodes]\ncount = 3\nmin = 4\nmax = 2\ninstance_type = \"big\"\n");
        let e = format!("{:#}", StackConfig::parse(&text, "stack.toml").unwrap_err());
        assert!(
            e.contains("stack.toml:8: nodes.min = 4 is more than nodes.count = 3"),
            "{e}"
        );
        assert!(
            e.contains("stack.toml:9: nodes.max = 2 is less than nodes.count = 3"),
            "{e}"
        );
        assert!(
            e.contains("stack.toml:10: nodes.instance_type \"big\" is not an EC2 instance type"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            StackConfig::parse(&format!("{MINIMAL}[nodes]\ncount = 0\n"), "s").unwrap_err()
        );
        assert!(e.contains("s:7: [nodes] allows no agent"), "{e}");
        let e = format!(
            "{:#}",
            StackConfig::parse(&format!("{MINIMAL}[nodes]\ncount = 1\nmax = 500\n"), "s")
                .unwrap_err()
        );
        assert!(e.contains("s:8: [nodes] allows 500 agents"), "{e}");
        let e = format!(
            "{:#}",
            StackConfig::parse(&format!("{MINIMAL}[nodes]\ncount = 1\nsize = 2\n"), "s")
                .unwrap_err()
        );
        assert!(e.contains("line 8") && e.contains("size"), "{e}");
        assert!(StackConfig::parse(&format!("{MINIMAL}[nodes]\nmax = 2\n"), "s").is_err());
    }

    #[test]
    fn every_problem_is_reported() {
        let text = MINIMAL
            .replace("203.0.113.7/32", "0.0.0.0/0")
            .replace("prod-1", "1prod")
            + "[logs]\nretention_days = 31\n";
        let e = format!("{:#}", StackConfig::parse(&text, "t").unwrap_err());
        assert!(
            e.contains("name") && e.contains("/0") && e.contains("31"),
            "{e}"
        );
    }
}

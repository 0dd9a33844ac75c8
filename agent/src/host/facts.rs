//! Facts about the host, offered to playbooks as the variable `facts`.
//!
//! Gathering must be cheap: it runs at the start of every `bosund apply`. The EC2 part asks the
//! instance metadata service (IMDSv2: a token, then the documents) only when the machine says
//! it is an EC2 instance (its DMI vendor data), or when `BOSUN_IMDS_ENDPOINT` points somewhere
//! (tests, or a proxy), and gives up after a short timeout: off EC2 those facts are absent.

use std::time::Duration;

use serde::Serialize;

/// The facts of one host.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Facts {
    /// `ID` from os-release: `debian`, `amzn`, `ubuntu`.
    pub os_id: String,
    /// `VERSION_ID` from os-release: `12`, `2023`.
    pub os_version: String,
    /// `x86_64`, `aarch64`.
    pub arch: String,
    /// Kubernetes-style architecture name: `amd64`, `arm64` (release files are named this way).
    pub arch_alias: String,
    /// The host name.
    pub hostname: String,
    /// Logical CPUs.
    pub cpu_count: usize,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// Total memory in MiB.
    pub memory_mb: u64,
    /// EC2 identity, when on EC2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ec2: Option<Ec2Facts>,
}

/// What IMDSv2 says about this instance.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Ec2Facts {
    /// `i-0123...`.
    pub instance_id: String,
    /// `eu-west-1`.
    pub region: String,
    /// `eu-west-1a`.
    pub availability_zone: String,
}

/// Environment variable overriding the IMDS address (default `http://169.254.169.254`).
pub const IMDS_ENDPOINT_ENV: &str = "BOSUN_IMDS_ENDPOINT";
const IMDS_DEFAULT: &str = "http://169.254.169.254";
const IMDS_TIMEOUT: Duration = Duration::from_millis(800);

impl Facts {
    /// Gathers the facts of this host.
    pub async fn gather() -> Facts {
        let mut facts = local();
        let endpoint = std::env::var(IMDS_ENDPOINT_ENV).ok();
        if endpoint.is_some() || looks_like_ec2() {
            let endpoint = endpoint.unwrap_or_else(|| IMDS_DEFAULT.to_string());
            match tokio::time::timeout(IMDS_TIMEOUT, imds(&endpoint)).await {
                Ok(Ok(ec2)) => facts.ec2 = Some(ec2),
                Ok(Err(e)) => tracing::debug!("no EC2 facts from {endpoint}: {e:#}"),
                Err(_) => {
                    tracing::debug!("no EC2 facts: {endpoint} did not answer in {IMDS_TIMEOUT:?}")
                }
            }
        }
        facts
    }
}

fn local() -> Facts {
    use sysinfo::{MemoryRefreshKind, RefreshKind, System};
    let sys = System::new_with_specifics(
        RefreshKind::nothing().with_memory(MemoryRefreshKind::nothing().with_ram()),
    );
    let arch = std::env::consts::ARCH.to_string();
    let arch_alias = match arch.as_str() {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
    .to_string();
    let (os_id, os_version) = os_release();
    let memory_bytes = sys.total_memory();
    Facts {
        os_id,
        os_version,
        arch,
        arch_alias,
        hostname: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        cpu_count: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_bytes,
        memory_mb: memory_bytes / (1024 * 1024),
        ec2: None,
    }
}

/// `ID` and `VERSION_ID` from /etc/os-release (or /usr/lib/os-release).
fn os_release() -> (String, String) {
    let text = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    parse_os_release(&text)
}

fn parse_os_release(text: &str) -> (String, String) {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_string())
            .unwrap_or_default()
    };
    (field("ID"), field("VERSION_ID"))
}

/// EC2 instances (Xen and Nitro) say so in their DMI data.
fn looks_like_ec2() -> bool {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    read("/sys/class/dmi/id/sys_vendor").contains("amazon")
        || read("/sys/class/dmi/id/bios_vendor").contains("amazon")
        || read("/sys/hypervisor/uuid").starts_with("ec2")
        || read("/sys/class/dmi/id/product_uuid").starts_with("ec2")
}

async fn imds(endpoint: &str) -> anyhow::Result<Ec2Facts> {
    let client = reqwest::Client::builder()
        .timeout(IMDS_TIMEOUT)
        .no_proxy()
        .build()?;
    let token = client
        .put(format!("{endpoint}/latest/api/token"))
        .header("X-aws-ec2-metadata-token-ttl-seconds", "60")
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let get = |path: &'static str| {
        let client = &client;
        let token = &token;
        async move {
            client
                .get(format!("{endpoint}/latest/meta-data/{path}"))
                .header("X-aws-ec2-metadata-token", token)
                .send()
                .await?
                .error_for_status()?
                .text()
                .await
        }
    };
    let (instance_id, region, availability_zone) = tokio::try_join!(
        get("instance-id"),
        get("placement/region"),
        get("placement/availability-zone")
    )?;
    Ok(Ec2Facts {
        instance_id,
        region,
        availability_zone,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_fields_are_unquoted() {
        let (id, version) = parse_os_release(
            "NAME=\"Amazon Linux\"\nVERSION_ID=\"2023\"\nID=amzn\nID_LIKE=\"fedora\"\n",
        );
        assert_eq!((id.as_str(), version.as_str()), ("amzn", "2023"));
    }

    #[test]
    fn local_facts_are_plausible() {
        let f = local();
        assert!(f.cpu_count >= 1);
        assert!(f.memory_bytes > 64 * 1024 * 1024);
        assert_eq!(f.arch, std::env::consts::ARCH);
        assert!(f.ec2.is_none());
    }
}

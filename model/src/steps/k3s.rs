//! What the arguments of [`k3s_install`](super::k3s_install) and
//! [`k3s_upgrade`](super::k3s_upgrade) share: k3s release versions and the names of their
//! files, the paths of an installation, and the argument types and defaults both kinds take.
//! Downloading a release, reading the installed version and the probes that say whether k3s is
//! up and healthy run in the agent (`bosun_agent::steps::k3s`).
//!
//! Releases follow GitHub's layout: `<mirror>/<version>/<binary>` and
//! `<mirror>/<version>/sha256sum-<arch>.txt`, the `+` of the version percent-encoded
//! (`v1.31.4%2Bk3s1`) as GitHub writes it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Official release downloads.
pub const DEFAULT_MIRROR: &str = "https://github.com/k3s-io/k3s/releases/download";
/// The official update server's channel list (JSON).
pub const DEFAULT_CHANNEL_URL: &str = "https://update.k3s.io/v1-release/channels";
/// Where the official installer puts the binary.
pub const DEFAULT_BIN_DIR: &str = "/usr/local/bin";
/// k3s's configuration directory (`config.yaml`, the kubeconfig `k3s.yaml`).
pub const DEFAULT_CONFIG_DIR: &str = "/etc/rancher/k3s";
/// Where the unit and its env file go.
pub const DEFAULT_UNIT_DIR: &str = "/etc/systemd/system";
/// k3s's default data directory (datastore under `server/db`, token at `server/token`).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/rancher/k3s";
/// The server's systemd unit name (without `.service`), as the official installer names it.
pub const SERVICE: &str = "k3s";
/// An agent's systemd unit name (without `.service`), as the official installer names it.
pub const AGENT_SERVICE: &str = "k3s-agent";

/// Default of `mirror`.
pub fn default_mirror() -> String {
    DEFAULT_MIRROR.into()
}
/// Default of `channel_url`.
pub fn default_channel_url() -> String {
    DEFAULT_CHANNEL_URL.into()
}
/// Default of `bin_dir`.
pub fn default_bin_dir() -> String {
    DEFAULT_BIN_DIR.into()
}
/// Default of `config_dir`.
pub fn default_config_dir() -> String {
    DEFAULT_CONFIG_DIR.into()
}
/// Default of `unit_dir`.
pub fn default_unit_dir() -> String {
    DEFAULT_UNIT_DIR.into()
}
/// Default of `data_dir`.
pub fn default_data_dir() -> String {
    DEFAULT_DATA_DIR.into()
}

// ---------------------------------------------------------------------------------------------
// Versions
// ---------------------------------------------------------------------------------------------

/// A k3s release version such as `v1.31.4+k3s1` (Kubernetes version, optional pre-release such
/// as `-rc1`, then the k3s build). Ordered as releases are: by Kubernetes version, a
/// pre-release before its release, then by k3s build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K3sRelease {
    /// Kubernetes major version (1).
    pub major: u32,
    /// Kubernetes minor version: what "one minor at a time" counts.
    pub minor: u32,
    /// Kubernetes patch version.
    pub patch: u32,
    /// Pre-release tag (`rc1`), if any.
    pub pre: Option<String>,
    /// The k3s build number (`k3s1` → 1).
    pub build: u32,
}

impl K3sRelease {
    /// Parses `v1.31.4+k3s1` (the leading `v` is optional).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a k3s version; k3s versions look like v1.31.4+k3s1");
        let t = text.trim();
        let t = t.strip_prefix('v').unwrap_or(t);
        let (kube, build) = t.split_once("+k3s").ok_or_else(bad)?;
        let build = build.parse().map_err(|_| bad())?;
        let (core, pre) = match kube.split_once('-') {
            Some((c, p)) if !p.is_empty() => (c, Some(p.to_string())),
            Some(_) => return Err(bad()),
            None => (kube, None),
        };
        let nums: Vec<u32> = core
            .split('.')
            .map(|n| n.parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        let [major, minor, patch] = nums[..] else {
            return Err(bad());
        };
        Ok(Self {
            major,
            minor,
            patch,
            pre,
            build,
        })
    }

    /// `v1.31`: the name of the update server's channel for this minor.
    pub fn minor_channel(&self) -> String {
        format!("v{}.{}", self.major, self.minor)
    }

    /// The version as it appears in URLs: `+` percent-encoded, as GitHub's release links do.
    pub fn url_segment(&self) -> String {
        self.to_string().replace('+', "%2B")
    }

    fn order_key(&self) -> (u32, u32, u32, bool, &str, u32) {
        (
            self.major,
            self.minor,
            self.patch,
            self.pre.is_none(),
            self.pre.as_deref().unwrap_or(""),
            self.build,
        )
    }
}

impl fmt::Display for K3sRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)?;
        if let Some(pre) = &self.pre {
            write!(f, "-{pre}")?;
        }
        write!(f, "+k3s{}", self.build)
    }
}

impl PartialOrd for K3sRelease {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for K3sRelease {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order_key().cmp(&other.order_key())
    }
}

// ---------------------------------------------------------------------------------------------
// Release files
// ---------------------------------------------------------------------------------------------

/// The release files of one architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchFiles {
    /// The binary's name in a release: `k3s`, `k3s-arm64`, `k3s-armhf`.
    pub binary: &'static str,
    /// The checksum list: `sha256sum-amd64.txt`, ...
    pub checksums: &'static str,
}

/// Release file names for `arch` (`amd64`, `arm64`, `arm`; Rust's `x86_64` and `aarch64` too),
/// or for the machine bosund runs on when `None`.
pub fn arch_files(arch: Option<&str>) -> Result<ArchFiles, String> {
    let arch = arch.unwrap_or(std::env::consts::ARCH);
    Ok(match arch {
        "amd64" | "x86_64" => ArchFiles {
            binary: "k3s",
            checksums: "sha256sum-amd64.txt",
        },
        "arm64" | "aarch64" => ArchFiles {
            binary: "k3s-arm64",
            checksums: "sha256sum-arm64.txt",
        },
        "arm" | "armhf" => ArchFiles {
            binary: "k3s-armhf",
            checksums: "sha256sum-arm.txt",
        },
        other => {
            return Err(format!(
                "k3s is not released for architecture {other:?}; use amd64, arm64 or arm"
            ));
        }
    })
}

/// `<mirror>/<version>/<file>`.
pub fn release_url(mirror: &str, version: &K3sRelease, file: &str) -> String {
    format!(
        "{}/{}/{file}",
        mirror.trim_end_matches('/'),
        version.url_segment()
    )
}

// ---------------------------------------------------------------------------------------------
// An installation
// ---------------------------------------------------------------------------------------------

/// Where one k3s installation lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K3sPaths {
    /// Directory of the `k3s` binary.
    pub bin_dir: PathBuf,
    /// `config.yaml` and the kubeconfig `k3s.yaml`.
    pub config_dir: PathBuf,
    /// The unit `k3s.service` and its env file.
    pub unit_dir: PathBuf,
    /// k3s's data dir.
    pub data_dir: PathBuf,
}

/// install.sh's places (the steps' defaults).
impl Default for K3sPaths {
    fn default() -> Self {
        K3sPaths {
            bin_dir: DEFAULT_BIN_DIR.into(),
            config_dir: DEFAULT_CONFIG_DIR.into(),
            unit_dir: DEFAULT_UNIT_DIR.into(),
            data_dir: DEFAULT_DATA_DIR.into(),
        }
    }
}

impl K3sPaths {
    /// The binary.
    pub fn binary(&self) -> PathBuf {
        self.bin_dir.join("k3s")
    }
    /// `config.yaml`.
    pub fn config_file(&self) -> PathBuf {
        self.config_dir.join("config.yaml")
    }
    /// The kubeconfig k3s writes and bosun's probes read.
    pub fn kubeconfig(&self) -> PathBuf {
        self.config_dir.join("k3s.yaml")
    }
    /// `k3s.service`.
    pub fn unit_file(&self) -> PathBuf {
        self.unit_file_of(SERVICE)
    }
    /// `k3s.service.env` (mode 0600: it may hold the cluster token).
    pub fn env_file(&self) -> PathBuf {
        self.env_file_of(SERVICE)
    }
    /// `<unit_dir>/<service>.service`.
    pub fn unit_file_of(&self, service: &str) -> PathBuf {
        self.unit_dir.join(format!("{service}.service"))
    }
    /// `<unit_dir>/<service>.service.env`, the installer's env file name.
    pub fn env_file_of(&self, service: &str) -> PathBuf {
        self.unit_dir.join(format!("{service}.service.env"))
    }
    /// The server's join token, as the official docs name it (`node-token`, a link to
    /// `token`): what an agent's `K3S_TOKEN` holds.
    pub fn node_token(&self) -> PathBuf {
        self.data_dir.join("server/node-token")
    }
    /// The kubelet's kubeconfig on an agent: its own credentials, enough to read its node.
    pub fn kubelet_kubeconfig(&self) -> PathBuf {
        self.data_dir.join("agent/kubelet.kubeconfig")
    }
    /// The datastore directory (SQLite by default; embedded etcd also lives here).
    pub fn db_dir(&self) -> PathBuf {
        self.data_dir.join("server/db")
    }
    /// The server token.
    pub fn token(&self) -> PathBuf {
        self.data_dir.join("server/token")
    }
    /// True when the config dir is k3s's default (then no `--config` is needed).
    pub fn default_config_dir(&self) -> bool {
        self.config_dir == Path::new(DEFAULT_CONFIG_DIR)
    }
}

/// Parses a timeout argument written as a duration (`"90s"`, `"5m"`); strings because a
/// template (`"{{ timeout }}"`) must survive parsing the playbook.
pub fn parse_timeout(name: &str, text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("`{name}` = {text:?} is not a duration such as \"90s\" or \"5m\" ({e})")
    })
}

// ---------------------------------------------------------------------------------------------
// Arguments shared by the kinds
// ---------------------------------------------------------------------------------------------

/// A yes/no argument that may also be written as a template (`"{{ step_through }}"`), since
/// `--var` values are strings. After rendering it must be `true`/`false` or `"true"`/`"false"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Toggle {
    /// `true` or `false`.
    Bool(bool),
    /// `"true"`, `"false"`, or a template that renders to one of them.
    Text(String),
}

impl Default for Toggle {
    fn default() -> Self {
        Toggle::Bool(false)
    }
}

impl Toggle {
    /// The value, once rendered.
    pub fn value(&self, name: &str) -> anyhow::Result<bool> {
        match self {
            Toggle::Bool(b) => Ok(*b),
            Toggle::Text(t) => match t.trim() {
                "true" => Ok(true),
                "false" => Ok(false),
                other => bail!("`{name}` must be true or false, got {other:?}"),
            },
        }
    }

    /// A problem with an unrendered value, for `validate`.
    pub fn problem(&self, name: &str) -> Option<String> {
        match self {
            Toggle::Text(t) if !crate::jinja::is_templated(t) => {
                self.value(name).err().map(|e| e.to_string())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> K3sRelease {
        K3sRelease::parse(s).unwrap()
    }

    #[test]
    fn versions_parse_print_and_order_like_releases() {
        assert_eq!(v("v1.31.4+k3s1").to_string(), "v1.31.4+k3s1");
        assert_eq!(v("1.31.4+k3s2").to_string(), "v1.31.4+k3s2");
        assert_eq!(v("v1.32.0-rc1+k3s1").to_string(), "v1.32.0-rc1+k3s1");
        assert!(v("v1.31.4+k3s1") < v("v1.31.4+k3s2"));
        assert!(v("v1.31.4+k3s2") < v("v1.31.10+k3s1"));
        assert!(v("v1.32.0-rc1+k3s1") < v("v1.32.0+k3s1"));
        assert!(v("v1.9.0+k3s1") < v("v1.10.0+k3s1"));
        for bad in [
            "",
            "v1.31.4",
            "v1.31+k3s1",
            "v1.31.x+k3s1",
            "latest",
            "v1.31.4+k3s",
        ] {
            assert!(K3sRelease::parse(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(v("v1.31.4+k3s1").url_segment(), "v1.31.4%2Bk3s1");
        assert_eq!(
            release_url("https://m.example/dl/", &v("v1.31.4+k3s1"), "k3s"),
            "https://m.example/dl/v1.31.4%2Bk3s1/k3s"
        );
    }

    #[test]
    fn arch_names_map_to_release_files() {
        assert_eq!(arch_files(Some("x86_64")).unwrap().binary, "k3s");
        assert_eq!(
            arch_files(Some("arm64")).unwrap().checksums,
            "sha256sum-arm64.txt"
        );
        assert!(arch_files(Some("s390x")).is_err());
    }

    #[test]
    fn toggles_accept_booleans_and_rendered_text() {
        assert!(Toggle::Text("true".into()).value("x").unwrap());
        assert!(!Toggle::Bool(false).value("x").unwrap());
        assert!(Toggle::Text("yes".into()).value("x").is_err());
        assert_eq!(Toggle::Text("{{ s }}".into()).problem("x"), None);
        assert!(Toggle::Text("maybe".into()).problem("x").is_some());
    }
}

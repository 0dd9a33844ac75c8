//! `helm_install`: the helm binary of a pinned version, from a release mirror, checksum verified.
//!
//! ```toml
//! helm_install = { version = "3.16.2" }
//! helm_install = { version = "v3.16.2", mirror = "https://artifacts.example.internal/helm" }
//! ```
//! Downloads `{mirror}/helm-v{version}-linux-{arch}.tar.gz` and the digest beside it
//! (`….tar.gz.sha256sum`, the layout of the official `https://get.helm.sh`), refuses the
//! archive when its SHA-256 differs, takes `linux-{arch}/helm` out of it, checks that this
//! binary reports the wanted version, and only then renames it over `{install_dir}/helm`.
//! Anything that goes wrong before that rename leaves the installed helm as it was.
//!
//! Unchanged (no download) when `{install_dir}/helm version --short` already reports the
//! version.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ActionArgs;
use crate::jinja::is_templated;

/// Where helm's own release files are published.
pub const DEFAULT_MIRROR: &str = "https://get.helm.sh";
/// Where the binary goes unless told otherwise.
pub const DEFAULT_INSTALL_DIR: &str = "/usr/local/bin";

/// Arguments of `helm_install`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HelmInstallArgs {
    /// The helm version, e.g. "3.16.2" or "v3.16.2".
    pub version: String,
    /// Base URL of the release files: `{mirror}/helm-v{version}-linux-{arch}.tar.gz` and its
    /// `.sha256sum` must be there.
    #[serde(default = "default_mirror")]
    pub mirror: String,
    /// Directory the `helm` binary is installed into (created when missing).
    #[serde(default = "default_install_dir")]
    pub install_dir: String,
    /// Architecture as helm's release files name it (`amd64`, `arm64`); default: this host's
    /// (`facts.arch_alias`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
}

fn default_mirror() -> String {
    DEFAULT_MIRROR.into()
}

fn default_install_dir() -> String {
    DEFAULT_INSTALL_DIR.into()
}

impl HelmInstallArgs {
    /// The version as helm prints it: `v3.16.2`.
    pub fn tag(&self) -> String {
        format!("v{}", self.version.trim().trim_start_matches('v'))
    }

    /// Where the binary goes: `{install_dir}/helm`.
    pub fn binary(&self) -> PathBuf {
        Path::new(&self.install_dir).join("helm")
    }
}

impl ActionArgs for HelmInstallArgs {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !is_templated(&self.version) && !is_version(&self.version) {
            problems.push(format!(
                "version {:?} is not a helm release version such as \"3.16.2\"",
                self.version
            ));
        }
        let http = self.mirror.starts_with("https://") || self.mirror.starts_with("http://");
        if !is_templated(&self.mirror) && !http {
            problems.push(format!(
                "mirror {:?} is not an http(s) URL such as \"{DEFAULT_MIRROR}\"",
                self.mirror
            ));
        }
        if !is_templated(&self.install_dir) && !Path::new(&self.install_dir).is_absolute() {
            problems.push(format!(
                "install_dir {:?} must be an absolute path such as \"{DEFAULT_INSTALL_DIR}\"",
                self.install_dir
            ));
        }
        problems
    }
}

/// `3.16.2`, `v3.16.2`, `3.17.0-rc.1`: digits, dots and a pre-release suffix, nothing that
/// could leave the URL's path.
fn is_version(v: &str) -> bool {
    let v = v.trim_start_matches('v');
    let (core, pre) = v.split_once('-').unwrap_or((v, ""));
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        && pre.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_plain_release_numbers() {
        for ok in ["3.16.2", "v3.16.2", "3.17.0-rc.1"] {
            assert!(is_version(ok), "{ok}");
        }
        for bad in ["3.16", "latest", "3.16.2/../../x", "v3..2", "3.16.2-rc/1"] {
            assert!(!is_version(bad), "{bad}");
        }
    }

    #[test]
    fn validation_names_each_bad_argument() {
        let args = HelmInstallArgs {
            version: "latest".into(),
            mirror: "ftp://mirror".into(),
            install_dir: "bin".into(),
            arch: None,
        };
        let problems = args.validate().join("\n");
        assert!(problems.contains("version \"latest\""), "{problems}");
        assert!(problems.contains("mirror \"ftp://mirror\""), "{problems}");
        assert!(problems.contains("install_dir \"bin\""), "{problems}");
        let templated = HelmInstallArgs {
            version: "{{ helm_version }}".into(),
            ..args
        };
        assert!(!templated.validate().join("").contains("version"));
    }
}

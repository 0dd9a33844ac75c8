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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ActionArgs, Check, Outcome, StepContext, StepKind};
use crate::host::download::{client, digest_in_list, fetch_text, fetch_verified};
use crate::host::{archive, fs::sync_dir, process};
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
    fn tag(&self) -> String {
        format!("v{}", self.version.trim().trim_start_matches('v'))
    }

    fn binary(&self) -> PathBuf {
        Path::new(&self.install_dir).join("helm")
    }

    fn arch(&self, ctx: &StepContext<'_>) -> anyhow::Result<String> {
        if let Some(a) = &self.arch {
            return Ok(a.clone());
        }
        ctx.vars
            .get_attr("facts")
            .and_then(|f| f.get_attr("arch_alias"))
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .filter(|a| !a.is_empty())
            .context("this host's architecture is unknown (no `facts.arch_alias`): set `arch`, e.g. \"amd64\"")
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

/// What `helm version --short` of `binary` reports (`v3.16.2` of `v3.16.2+g13654a5`); `None`
/// when there is no file there, a description of the problem when it does not answer.
async fn installed_version(binary: &Path) -> anyhow::Result<Option<Result<String, String>>> {
    if !binary.exists() {
        return Ok(None);
    }
    let argv = [
        binary.display().to_string(),
        "version".into(),
        "--short".into(),
    ];
    let out = match process::run(&argv, None, &BTreeMap::new()).await {
        Ok(out) => out,
        Err(e) => return Ok(Some(Err(format!("{e:#}")))),
    };
    let first = out.stdout.trim();
    let version = first.split('+').next().unwrap_or_default().trim();
    if out.rc == 0 && version.starts_with('v') {
        Ok(Some(Ok(version.to_string())))
    } else {
        Ok(Some(Err(format!(
            "`{} version --short` answered exit code {} with {:?}",
            binary.display(),
            out.rc,
            first
        ))))
    }
}

impl StepKind for HelmInstallArgs {
    /// What is installed now, for the message.
    type Change = Option<String>;

    async fn check(&self, _ctx: &StepContext<'_>) -> anyhow::Result<Check<Option<String>>> {
        let want = self.tag();
        let binary = self.binary();
        Ok(match installed_version(&binary).await? {
            Some(Ok(have)) if have == want => Check::unchanged(Some(format!(
                "helm {want} is installed at {}",
                binary.display()
            ))),
            Some(Ok(have)) => Check::change(
                Some(have.clone()),
                format!(
                    "would replace helm {have} with {want} at {}",
                    binary.display()
                ),
            ),
            Some(Err(problem)) => Check::change(
                Some("an unusable binary".into()),
                format!(
                    "would replace {} ({problem}) with helm {want}",
                    binary.display()
                ),
            ),
            None => Check::change(
                None,
                format!("would install helm {want} to {}", binary.display()),
            ),
        })
    }

    async fn apply(&self, ctx: &StepContext<'_>, was: Option<String>) -> anyhow::Result<Outcome> {
        let want = self.tag();
        let arch = self.arch(ctx)?;
        let file = format!("helm-{want}-linux-{arch}.tar.gz");
        let url = format!("{}/{file}", self.mirror.trim_end_matches('/'));
        let sums_url = format!("{url}.sha256sum");
        let http = client()?;
        let sums = fetch_text(&http, &sums_url).await.with_context(|| {
            format!("fetching the checksum of helm {want}: does the mirror have release {want} for {arch}?")
        })?;
        // `.sha256sum` is `<hex>  <file>`; a mirror may serve the bare digest (`.sha256` style).
        let digest = digest_in_list(&sums, &file)
            .or_else(|| {
                let bare = sums.trim();
                (bare.len() == 64 && bare.chars().all(|c| c.is_ascii_hexdigit()))
                    .then(|| bare.to_ascii_lowercase())
            })
            .with_context(|| format!("{sums_url} has no SHA-256 for {file}"))?;

        let dir = Path::new(&self.install_dir);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // Staged beside the destination (same file system, so the final rename is atomic);
        // removed with everything in it when this function returns.
        let staging = tempfile::Builder::new()
            .prefix(".bosun-helm-")
            .tempdir_in(dir)
            .with_context(|| format!("creating a staging directory in {}", dir.display()))?;
        let tarball = staging.path().join(&file);
        fetch_verified(&http, &url, &digest, &tarball, 0o600).await?;
        let staged = staging.path().join("helm");
        archive::extract_member(&tarball, &format!("linux-{arch}/helm"), &staged, 0o755)?;
        match installed_version(&staged).await? {
            Some(Ok(v)) if v == want => {}
            Some(Ok(v)) => bail!(
                "the helm in {url} reports version {v}, not {want}: the mirror serves the wrong release; nothing was installed"
            ),
            Some(Err(problem)) => bail!(
                "the helm in {url} does not run on this host ({problem}): is `arch` ({arch}) right? Nothing was installed"
            ),
            None => bail!("{} vanished while it was being installed", staged.display()),
        }
        let binary = self.binary();
        std::fs::rename(&staged, &binary)
            .with_context(|| format!("renaming {} into {}", staged.display(), binary.display()))?;
        sync_dir(dir)?;
        Ok(Outcome {
            changed: true,
            message: Some(match was {
                Some(old) => format!("installed helm {want} at {} (was {old})", binary.display()),
                None => format!("installed helm {want} at {}", binary.display()),
            }),
            ..Outcome::default()
        })
    }
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

//! Runs `helm_install` on the host; its arguments and their validation are the model's
//! (`bosun_model::steps::helm_install`).

use std::path::Path;

use anyhow::{Context, bail};
use bosun_model::steps::helm_install::HelmInstallArgs;

use super::{Check, Outcome, StepContext, StepKind};
use crate::host::download::{client, digest_in_list, fetch_text, fetch_verified};
use crate::host::helm::installed_version;
use crate::host::{archive, fs as host_fs};

/// The architecture to install: `arch`, else this host's (`facts.arch_alias`).
fn arch(args: &HelmInstallArgs, ctx: &StepContext<'_>) -> anyhow::Result<String> {
    if let Some(a) = &args.arch {
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
        let arch = arch(self, ctx)?;
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
        host_fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // Staged beside the destination (same file system, so the final rename is atomic);
        // removed with everything in it when this function returns.
        let staging = host_fs::staging_dir(dir, ".bosun-helm-")
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
        host_fs::rename(&staged, &binary)
            .with_context(|| format!("renaming {} into {}", staged.display(), binary.display()))?;
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

//! `apt_repository`: a third-party apt repository as a deb822 `.sources` file whose
//! `Signed-By:` names a key file the step writes, the package lists refreshed when either
//! changed.
//!
//! ```toml
//! apt_repository = { name = "hashicorp", uris = ["https://apt.releases.hashicorp.com"], suites = ["bookworm"], components = ["main"], key_url = "https://apt.releases.hashicorp.com/gpg", key_checksum = "sha256:…" }
//! apt_repository = { name = "internal", uris = ["http://repo.internal/debian"], suites = ["stable"], components = ["main"], key = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n…" }
//! apt_repository = { name = "hashicorp", state = "absent" }
//! ```
//! Writes `/etc/apt/sources.list.d/<name>.sources` (`Types`, `URIs`, `Suites`, `Components`,
//! `Architectures`, `Signed-By`) and the key as `/etc/apt/keyrings/<name>.asc` (inline keys,
//! which must be ASCII-armoured, and key URLs not ending in `.gpg`) or `<name>.gpg` (a key URL
//! ending in `.gpg`: a binary keyring). A key from a URL is verified against `key_checksum`
//! and downloaded only when the file there does not match it. When a file changed (and
//! `update_cache`, the default), `apt-get update` runs for this source only; when it fails, the
//! files are put back as they were and the step fails with apt's message. `state = "absent"`
//! removes both files (the lists are not refreshed).
//!
//! Compared with Ansible's `deb822_repository` (the same file format and `Signed-By` layout;
//! Ansible's `apt_repository` writes one-line `.list` files): the key is always a file beside
//! the sources (never embedded), a key URL needs a checksum, and the refresh covers only this
//! source.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ActionArgs;
use super::get_url::{Checksum, url_problem};
use crate::jinja::is_templated;

/// Where the `.sources` files go.
pub const SOURCES_DIR: &str = "/etc/apt/sources.list.d";
/// Where the key files go.
pub const KEYRINGS_DIR: &str = "/etc/apt/keyrings";

/// Arguments of `apt_repository`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AptRepositoryArgs {
    /// Names the files: `<name>.sources` and `<name>.asc`/`.gpg` (letters, digits, `.`, `_`, `-`).
    pub name: String,
    /// `present` (default) or `absent`.
    #[serde(default)]
    pub state: RepositoryState,
    /// `Types:` (default `["deb"]`).
    #[serde(default = "default_types")]
    pub types: Vec<String>,
    /// `URIs:`.
    #[serde(default)]
    pub uris: Vec<String>,
    /// `Suites:` (a suite ending in `/` is a flat repository, without components).
    #[serde(default)]
    pub suites: Vec<String>,
    /// `Components:`.
    #[serde(default)]
    pub components: Vec<String>,
    /// `Architectures:` (default: apt's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub architectures: Vec<String>,
    /// The signing key, ASCII-armoured, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The signing key's URL (http or https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_url: Option<String>,
    /// With `key_url`: `sha256:<hex>` or `sha256:<URL of a checksum list>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_checksum: Option<String>,
    /// Run `apt-get update` for this source when a file changed (default true).
    #[serde(default = "yes")]
    pub update_cache: bool,
}

fn default_types() -> Vec<String> {
    vec!["deb".into()]
}

fn yes() -> bool {
    true
}

/// Whether the repository is configured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RepositoryState {
    /// Its files are there.
    #[default]
    Present,
    /// Its files are removed.
    Absent,
}

/// The first line of an ASCII-armoured public key.
pub const ARMOR_BEGIN: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";

impl AptRepositoryArgs {
    /// The `.sources` file.
    pub fn sources_path(&self) -> String {
        format!("{SOURCES_DIR}/{}.sources", self.name)
    }

    /// The key file `Signed-By:` names.
    pub fn key_path(&self) -> String {
        let binary = self
            .key_url
            .as_deref()
            .is_some_and(|u| u.split(['?', '#']).next().unwrap_or(u).ends_with(".gpg"));
        let ext = if binary { "gpg" } else { "asc" };
        format!("{KEYRINGS_DIR}/{}.{ext}", self.name)
    }

    /// The deb822 text of the `.sources` file.
    pub fn sources_text(&self) -> String {
        let mut out = String::new();
        let mut field = |name: &str, values: &[String]| {
            if !values.is_empty() {
                out.push_str(&format!("{name}: {}\n", values.join(" ")));
            }
        };
        field("Types", &self.types);
        field("URIs", &self.uris);
        field("Suites", &self.suites);
        field("Components", &self.components);
        field("Architectures", &self.architectures);
        out.push_str(&format!("Signed-By: {}\n", self.key_path()));
        out
    }
}

impl ActionArgs for AptRepositoryArgs {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let name_ok = !self.name.is_empty()
            && !self.name.starts_with('.')
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !is_templated(&self.name) && !name_ok {
            problems.push(format!(
                "`name` {:?} must be letters, digits, `.`, `_` or `-` (it names files in {SOURCES_DIR} and {KEYRINGS_DIR})",
                self.name
            ));
        }
        if self.state == RepositoryState::Absent {
            return problems;
        }
        if self.uris.is_empty() {
            problems.push("`uris` is empty: where is the repository?".into());
        }
        for uri in &self.uris {
            if !is_templated(uri) && !uri.starts_with("file:/") {
                problems.extend(url_problem("uris", uri));
            }
        }
        if self.suites.is_empty() {
            problems.push(
                "`suites` is empty (e.g. [\"bookworm\"], or [\"./\"] for a flat repository)".into(),
            );
        }
        let flat = self.suites.iter().any(|s| s.ends_with('/'));
        match (flat, self.components.is_empty()) {
            (true, false) => {
                problems.push("a flat repository (suite ending in `/`) has no `components`".into())
            }
            (false, true) => problems.push("`components` is empty (e.g. [\"main\"])".into()),
            _ => {}
        }
        for t in &self.types {
            if t != "deb" && t != "deb-src" {
                problems.push(format!(
                    "`types` holds {t:?}; use \"deb\" and/or \"deb-src\""
                ));
            }
        }
        match (&self.key, &self.key_url) {
            (None, None) => problems.push(
                "give the signing key: `key` (ASCII-armoured) or `key_url` with `key_checksum`"
                    .into(),
            ),
            (Some(_), Some(_)) => problems.push("give either `key` or `key_url`, not both".into()),
            (Some(k), None) => {
                if !is_templated(k) && !k.trim_start().starts_with(ARMOR_BEGIN) {
                    problems.push(format!(
                        "`key` must be an ASCII-armoured public key ({ARMOR_BEGIN} ...)"
                    ));
                }
                if self.key_checksum.is_some() {
                    problems.push("`key_checksum` is for `key_url`".into());
                }
            }
            (None, Some(url)) => {
                problems.extend(url_problem("key_url", url));
                match self.key_checksum.as_deref() {
                    None => problems.push(
                        "`key_url` needs `key_checksum` (sha256:<hex>): the key decides what this host trusts"
                            .into(),
                    ),
                    Some(c) if !is_templated(c) => {
                        problems.extend(Checksum::parse(c).err().map(|e| e.replace("`checksum`", "`key_checksum`")))
                    }
                    Some(_) => {}
                }
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sources_file_is_deb822_with_signed_by() {
        let args: AptRepositoryArgs = serde_json::from_value(serde_json::json!({
            "name": "hc", "uris": ["https://h/apt"], "suites": ["bookworm"],
            "components": ["main", "extra"], "key_url": "https://h/gpg.gpg",
            "key_checksum": format!("sha256:{}", "a".repeat(64)),
        }))
        .unwrap();
        assert!(args.validate().is_empty(), "{:?}", args.validate());
        assert_eq!(
            args.sources_text(),
            "Types: deb\nURIs: https://h/apt\nSuites: bookworm\nComponents: main extra\nSigned-By: /etc/apt/keyrings/hc.gpg\n"
        );
    }
}

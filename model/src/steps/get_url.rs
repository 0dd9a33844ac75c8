//! `get_url`: a file downloaded over HTTP(S), verified, written atomically.
//!
//! ```toml
//! get_url = { url = "https://example.org/tool-1.2.tar.gz", dest = "/opt/tool.tar.gz", checksum = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" }
//! get_url = { url = "https://example.org/tool", dest = "/usr/local/bin/tool", checksum = "sha256:https://example.org/SHA256SUMS", mode = "0755" }
//! ```
//! With a `checksum`, nothing is downloaded while `dest` already has that digest; otherwise the
//! file is streamed to a temporary file in `dest`'s directory, its SHA-256 computed on the way,
//! and renamed over `dest` only when the digest matches: a mismatch fails the step and leaves
//! `dest` as it was. `checksum = "sha256:<url>"` names a `sha256sum`-style list; the line for
//! the file name of `url` is used (or the list's only digest). Without a `checksum`, an
//! existing `dest` is left alone unless `force = true`, which downloads it again and replaces it
//! when the bytes differ (reported `ok` when they do not).
//!
//! `timeout` bounds connecting and each read (not the whole transfer, so a large file on a slow
//! link is not cut off); default 10 s, as Ansible's. `headers` are sent with both requests and
//! never shown in reports.
//!
//! Compared with Ansible's `get_url` on generated cases (`agent/tests/ansible.rs`). Deliberate
//! differences: only `sha256` checksums (the others are weak or rare); `dest` must name a file
//! (Ansible also takes a directory and picks a name from the response); no `validate_certs =
//! false`, `url_username`/`url_password` (put credentials in `headers`), `backup`, or
//! `tmp_dest`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ActionArgs;
use super::common::DurationSpec;
use crate::jinja::is_templated;

/// Default `timeout`: Ansible's.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;

/// Arguments of `get_url`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetUrlArgs {
    /// What to download: an `http://` or `https://` URL.
    pub url: String,
    /// The file to write (its directory must exist).
    pub dest: String,
    /// `sha256:<64 hex digits>`, or `sha256:<URL of a sha256sum-style list>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// Without `checksum`: download again even when `dest` exists.
    #[serde(default)]
    pub force: bool,
    /// Octal permission bits, e.g. "0755" (default: kept for an existing file, 0644 for a new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Owner, by name or numeric id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Group, by name or numeric id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// HTTP headers sent with the request (e.g. `Authorization`); never reported.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Limit on connecting and on each read: seconds or "30s" (default 10 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationSpec>,
}

impl GetUrlArgs {
    /// The `timeout`, or the default.
    pub fn timeout(&self) -> std::time::Duration {
        self.timeout
            .map_or(std::time::Duration::from_secs(DEFAULT_TIMEOUT_SECS), |d| {
                d.0
            })
    }
}

impl ActionArgs for GetUrlArgs {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        problems.extend(url_problem("url", &self.url));
        if !is_templated(&self.dest) && self.dest.ends_with('/') {
            problems.push(format!(
                "`dest` {:?} names a directory; give the path of the file to write",
                self.dest
            ));
        }
        if let Some(c) = self.checksum.as_deref().filter(|c| !is_templated(c)) {
            if let Err(e) = Checksum::parse(c) {
                problems.push(e);
            }
            if self.force {
                problems.push(
                    "`force` means nothing with `checksum`: a file that does not match is downloaded again anyway"
                        .into(),
                );
            }
        }
        problems.extend(header_problems(&self.headers));
        if self.timeout.is_some_and(|t| t.0.is_zero()) {
            problems.push("`timeout` must be more than 0".into());
        }
        problems.extend(super::mode_problem(self.mode.as_deref()));
        problems
    }
}

/// A parsed `checksum` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// The expected SHA-256, lower-case hex.
    Sha256(String),
    /// The URL of a `sha256sum`-style list holding the expected digest.
    Sha256List(String),
}

impl Checksum {
    /// Reads `sha256:<hex>` or `sha256:<http(s) URL>`.
    pub fn parse(text: &str) -> Result<Checksum, String> {
        let Some((algo, value)) = text.split_once(':') else {
            return Err(format!(
                "`checksum` {text:?} is not `sha256:<hex digest>` or `sha256:<URL of a checksum list>`"
            ));
        };
        if !algo.eq_ignore_ascii_case("sha256") {
            return Err(format!(
                "`checksum` algorithm `{algo}` is not supported; use sha256"
            ));
        }
        let value = value.trim();
        if value.starts_with("http://") || value.starts_with("https://") {
            return Ok(Checksum::Sha256List(value.to_string()));
        }
        if value.len() == 64 && value.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(Checksum::Sha256(value.to_ascii_lowercase()));
        }
        Err(format!(
            "`checksum` sha256 value {value:?} is neither 64 hex digits nor an http(s) URL"
        ))
    }
}

/// The problem with a URL argument `key`, if any: only `http://` and `https://` with a host.
pub fn url_problem(key: &str, url: &str) -> Option<String> {
    if is_templated(url) {
        return None;
    }
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') => None,
        Some(_) => Some(format!("`{key}` {url:?} has no host")),
        None => Some(format!("`{key}` {url:?} is not an http:// or https:// URL")),
    }
}

fn header_problems(headers: &BTreeMap<String, String>) -> Vec<String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    headers
        .iter()
        .filter_map(|(name, value)| {
            if name.is_empty() || !name.chars().all(token) {
                Some(format!(
                    "`headers` name {name:?} is not a valid HTTP header name"
                ))
            } else if value.contains(['\r', '\n']) {
                Some(format!("`headers` value of {name} holds a line break"))
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_a_digest_or_a_list_url() {
        let d = "AB".repeat(32);
        assert_eq!(
            Checksum::parse(&format!("sha256:{d}")),
            Ok(Checksum::Sha256(d.to_lowercase()))
        );
        assert_eq!(
            Checksum::parse("sha256:https://h/SHA256SUMS"),
            Ok(Checksum::Sha256List("https://h/SHA256SUMS".into()))
        );
        for bad in ["abc", "md5:abc", "sha256:abc", "sha256:ftp://h/x"] {
            assert!(Checksum::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_need_http_and_a_host() {
        assert_eq!(url_problem("url", "https://h/x"), None);
        assert_eq!(url_problem("url", "{{ u }}"), None);
        assert!(
            url_problem("url", "ftp://h/x")
                .unwrap()
                .contains("not an http")
        );
        assert!(url_problem("url", "http:///x").unwrap().contains("no host"));
    }
}

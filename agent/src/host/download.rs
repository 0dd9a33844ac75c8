//! Downloads of release artefacts (k3s, helm, bosund): streamed to a temporary file beside the
//! destination while their SHA-256 is computed, and renamed into place only when the digest
//! matches. A mismatch, a short read or an HTTP error leaves the destination untouched.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use super::fs::sync_dir;

/// An HTTP client for artefact downloads: rustls, connect timeout, no overall timeout (large
/// files on slow links), transient failures retried by the caller's step `retries`.
pub fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .user_agent(concat!("bosund/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the HTTP client")
}

/// Fetches a small text document (a checksum list, a channel answer).
pub async fn fetch_text(client: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let resp = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let resp = resp
        .error_for_status()
        .with_context(|| format!("GET {url}"))?;
    resp.text().await.with_context(|| format!("reading {url}"))
}

/// An HTTP client for a step's download (`get_url`, `unarchive`): rustls, `timeout` on
/// connecting and on each read, none on the whole transfer.
pub fn client_with_timeout(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(timeout)
        .read_timeout(timeout)
        .user_agent(concat!("bosund/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the HTTP client")
}

/// `url` as it may be shown: without a `user:password@` part.
pub fn shown_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..end].rfind('@') {
                Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

/// `GET url` with `headers`, answered with a success status. Errors name the URL without its
/// credentials and never the headers.
pub async fn get(
    client: &reqwest::Client,
    url: &str,
    headers: &BTreeMap<String, String>,
) -> anyhow::Result<reqwest::Response> {
    let mut request = client.get(url);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let shown = shown_url(url);
    let resp = request
        .send()
        .await
        .map_err(reqwest::Error::without_url)
        .with_context(|| format!("GET {shown}"))?;
    let status = resp.status();
    if !status.is_success() {
        bail!("GET {shown}: the server answered {status}");
    }
    Ok(resp)
}

/// A download held in a temporary file, removed when dropped unless installed.
pub struct Downloaded {
    /// The temporary file, fully written and flushed.
    pub file: tempfile::NamedTempFile,
    /// Its SHA-256, lower-case hex.
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
}

/// Streams `GET url` into a new temporary file in `dir`, computing its SHA-256 on the way.
/// Memory use is one network chunk whatever the size; a failed transfer leaves nothing.
pub async fn to_temp(
    client: &reqwest::Client,
    url: &str,
    headers: &BTreeMap<String, String>,
    dir: &Path,
) -> anyhow::Result<Downloaded> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".bosun-download-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let mut resp = get(client, url, headers).await?;
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(reqwest::Error::without_url)
        .with_context(|| format!("reading {}", shown_url(url)))?
    {
        hasher.update(&chunk);
        tmp.write_all(&chunk)
            .with_context(|| format!("writing {}", tmp.path().display()))?;
        bytes += chunk.len() as u64;
    }
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("flushing {}", tmp.path().display()))?;
    Ok(Downloaded {
        file: tmp,
        sha256: hex::encode(hasher.finalize()),
        bytes,
    })
}

/// The SHA-256 a step's `checksum` expects for `url`: the digest written, or the one a
/// checksum list at a URL gives for `url`'s file name (or the list's only digest).
pub async fn expected_digest(
    client: &reqwest::Client,
    checksum: &bosun_model::steps::get_url::Checksum,
    url: &str,
    headers: &BTreeMap<String, String>,
) -> anyhow::Result<String> {
    use bosun_model::steps::get_url::Checksum;
    let list_url = match checksum {
        Checksum::Sha256(hex) => return Ok(hex.clone()),
        Checksum::Sha256List(list_url) => list_url,
    };
    let resp = get(client, list_url, headers).await?;
    let list = resp
        .text()
        .await
        .map_err(reqwest::Error::without_url)
        .with_context(|| format!("reading {}", shown_url(list_url)))?;
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let name = path.rsplit('/').next().unwrap_or(path);
    if let Some(d) = digest_in_list(&list, name) {
        return Ok(d);
    }
    let only: Vec<&str> = list.split_whitespace().collect();
    if let [d] = only.as_slice()
        && d.len() == 64
        && d.chars().all(|c| c.is_ascii_hexdigit())
    {
        return Ok(d.to_ascii_lowercase());
    }
    bail!(
        "the checksum list {} has no sha256 for {name}",
        shown_url(list_url)
    )
}

/// Hex SHA-256 of a file; `None` when it does not exist.
pub fn sha256_file(path: &Path) -> anyhow::Result<Option<String>> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(hex::encode(hasher.finalize())))
}

/// Finds the digest of `file_name` in a `sha256sum`-style list (`<hex>  <name>` per line, the
/// name optionally prefixed with `*` or a path).
pub fn digest_in_list(list: &str, file_name: &str) -> Option<String> {
    list.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        let digest = parts.next()?;
        let name = parts.next()?.trim_start_matches('*');
        let base = name.rsplit('/').next().unwrap_or(name);
        (base == file_name && digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()))
            .then(|| digest.to_ascii_lowercase())
    })
}

/// Downloads `url` to `dest` with `mode`, only if its SHA-256 equals `sha256` (hex). Memory use
/// is one network chunk whatever the size.
pub async fn fetch_verified(
    client: &reqwest::Client,
    url: &str,
    sha256: &str,
    dest: &Path,
    mode: u32,
) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = dest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".bosun-download-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let mut resp = client
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("GET {url}"))?;
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    while let Some(chunk) = resp
        .chunk()
        .await
        .with_context(|| format!("reading {url}"))?
    {
        hasher.update(&chunk);
        tmp.write_all(&chunk)
            .with_context(|| format!("writing {}", tmp.path().display()))?;
        bytes += chunk.len() as u64;
    }
    let got = hex::encode(hasher.finalize());
    if !got.eq_ignore_ascii_case(sha256.trim()) {
        bail!(
            "checksum mismatch for {url}: expected sha256 {}, got {got} ({bytes} bytes); nothing was installed",
            sha256.trim()
        );
    }
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("flushing {}", tmp.path().display()))?;
    tmp.persist(dest)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming into {}", dest.display()))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_digests_in_sha256sum_lists() {
        let d = "a".repeat(64);
        let list = format!(
            "{d}  k3s\n{}  *k3s-arm64\n{}  dist/helm-v3.16.0-linux-amd64.tar.gz\n",
            "b".repeat(64),
            "c".repeat(64)
        );
        assert_eq!(digest_in_list(&list, "k3s"), Some(d));
        assert_eq!(digest_in_list(&list, "k3s-arm64"), Some("b".repeat(64)));
        assert_eq!(
            digest_in_list(&list, "helm-v3.16.0-linux-amd64.tar.gz"),
            Some("c".repeat(64))
        );
        assert_eq!(digest_in_list(&list, "k3s-armhf"), None);
        assert_eq!(digest_in_list("zz  k3s\n", "k3s"), None);
    }

    #[test]
    fn shown_urls_drop_credentials() {
        assert_eq!(shown_url("https://u:p@h/x@y"), "https://h/x@y");
        assert_eq!(shown_url("http://h:8080/a"), "http://h:8080/a");
    }
}

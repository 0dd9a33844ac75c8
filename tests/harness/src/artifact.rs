//! [`ArtifactServer`]: a loopback static file server standing in for release download sites.

use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, Result, bail};

use crate::http::{Body, HttpServer, Request, Response};

/// One request the [`ArtifactServer`] answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedRequest {
    /// `GET` or `HEAD` (anything else is answered 405 and logged too).
    pub method: String,
    /// The decoded path, e.g. `/k3s/v1.31.4+k3s1/k3s`, without the query string.
    pub path: String,
    /// The status answered: 200, 404, 405 or 400.
    pub status: u16,
}

/// A static HTTP/1.1 file server over a directory, on a free 127.0.0.1 port.
///
/// Contract:
/// - `GET` and `HEAD` of `/a/b` serve the regular file `dir/a/b` with `Content-Length`
///   (HEAD: headers only); a missing file or a directory is 404; with
///   [`serve_requiring`](Self::serve_requiring), a request without the header is 401; `..` in a path is 400; other
///   methods are 405. Percent-escapes in paths are decoded; the query string is ignored.
/// - Files are read at request time, so a test may add or change files while it runs.
/// - Every request is logged in arrival order ([`requests`](Self::requests),
///   [`request_log`](Self::request_log)) so tests can assert e.g. "downloaded only once".
/// - Dropping it closes the listener and every open connection and joins its threads; the
///   port then refuses connections. The directory itself is the caller's and is left alone.
#[derive(Debug)]
pub struct ArtifactServer {
    server: HttpServer,
    root: PathBuf,
    log: Arc<Mutex<Vec<ServedRequest>>>,
}

impl ArtifactServer {
    /// Serves `dir` (which must exist) until dropped.
    pub fn serve(dir: &Path) -> Result<Self> {
        Self::serve_requiring(dir, None)
    }

    /// Like [`serve`](Self::serve), but a request without the header `name: value` is
    /// answered 401 (a download site behind a token).
    pub fn serve_requiring(dir: &Path, header: Option<(&str, &str)>) -> Result<Self> {
        let header = header.map(|(n, v)| (n.to_string(), v.to_string()));
        let root = dir
            .canonicalize()
            .with_context(|| format!("artifact server: cannot open {}", dir.display()))?;
        if !root.is_dir() {
            bail!("artifact server: {} is not a directory", root.display());
        }
        let log: Arc<Mutex<Vec<ServedRequest>>> = Arc::default();
        let handler = {
            let root = root.clone();
            let log = log.clone();
            Arc::new(move |req: &Request| {
                let (path, resp) = match &header {
                    Some((name, value)) if req.header(name) != Some(value.as_str()) => (
                        req.path().to_string(),
                        Response::text(401, "unauthorized\n"),
                    ),
                    _ => answer(&root, req),
                };
                log.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(ServedRequest {
                        method: req.method.clone(),
                        path,
                        status: resp.status,
                    });
                resp
            })
        };
        let server = HttpServer::start("artifact-server", handler)?;
        Ok(ArtifactServer { server, root, log })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash); a file `dir/x/y` is at `{url}/x/y`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port())
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The directory served (canonicalised).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of every request so far, in arrival order, whatever its method or status.
    pub fn requests(&self) -> Vec<String> {
        self.request_log().into_iter().map(|r| r.path).collect()
    }

    /// Every request so far with method and status.
    pub fn request_log(&self) -> Vec<ServedRequest> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many times `path` was downloaded: `GET` answered 200.
    pub fn downloads(&self, path: &str) -> usize {
        self.request_log()
            .iter()
            .filter(|r| r.method == "GET" && r.status == 200 && r.path == path)
            .count()
    }
}

fn answer(root: &Path, req: &Request) -> (String, Response) {
    let Some(path) = percent_decode(req.path()) else {
        return (req.path().to_string(), Response::text(400, "bad path\n"));
    };
    if req.method != "GET" && req.method != "HEAD" {
        return (path, Response::text(405, "method not allowed\n"));
    }
    let mut file = root.to_path_buf();
    for comp in Path::new(&path).components() {
        match comp {
            Component::Normal(c) => file.push(c),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return (path, Response::text(400, "'..' is not allowed\n"));
            }
        }
    }
    match std::fs::metadata(&file) {
        Ok(meta) if meta.is_file() => {
            let resp = Response {
                status: 200,
                content_type: content_type(&file),
                extra_headers: Vec::new(),
                body: Body::File(file, meta.len()),
            };
            (path, resp)
        }
        _ => (path, Response::text(404, "not found\n")),
    }
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("txt" | "sha256" | "sha256sum" | "asc") => "text/plain",
        Some("json") => "application/json",
        Some("html") => "text/html",
        Some("gz" | "tgz") => "application/gzip",
        Some("zst") => "application/zstd",
        _ => "application/octet-stream",
    }
}

/// Decodes `%XX` escapes; `None` on a malformed escape, invalid UTF-8 or a NUL byte.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    if out.contains(&0) {
        return None;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(
            percent_decode("/v1.31.4%2Bk3s1/k3s").as_deref(),
            Some("/v1.31.4+k3s1/k3s")
        );
        assert_eq!(percent_decode("/a%2"), None);
        assert_eq!(percent_decode("/a%00"), None);
    }
}

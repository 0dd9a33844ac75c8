//! `--via api`: the run goes to the agent's daemon (`bosund run`) instead of a one-off
//! `bosund apply`: `POST /v1/runs` with the playbook's TOML (or, for a playbook with includes or
//! local files, its bundle: `GET /v1/bundles/{sha256}`, `PUT` only when the agent lacks it,
//! then the run names it), then `GET /v1/runs/{id}/events`
//! (Server-Sent Events) followed to the `summary`; Ctrl-C is `POST /v1/runs/{id}/cancel`.
//! The daemon queues runs (one at a time per host): a full queue is an error that says so.
//!
//! Two ways to reach it ([`Agent`]):
//! - through the SSH connection to its Unix socket (direct-streamlocal, so nothing listens on
//!   the network): hyper's HTTP/1.1 client over the channel, one request per channel;
//! - straight to its TCP listener over HTTPS with a bearer token ([`Direct`], reqwest with
//!   rustls): the server's certificate is always verified, against `--api-ca` when given
//!   (then only that CA), else the bundled web PKI roots. There is no way to skip that.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};

use super::ssh::Ssh;

/// The daemon's default socket.
pub const DEFAULT_SOCKET: &str = "/run/bosun/api.sock";

/// The environment variable holding the bearer token (when no `--api-token-file`).
pub const TOKEN_ENV: &str = "BOSUN_API_TOKEN";

/// A request's body.
#[derive(Clone, Copy)]
enum Body<'a> {
    None,
    Json(&'a Value),
    /// A bundle's tar stream.
    Tar(&'a [u8]),
}

impl Body<'_> {
    fn content_type(self) -> Option<&'static str> {
        match self {
            Body::None => None,
            Body::Json(_) => Some("application/json"),
            Body::Tar(_) => Some("application/octet-stream"),
        }
    }

    fn bytes(self) -> Vec<u8> {
        match self {
            Body::None => Vec::new(),
            Body::Json(v) => serde_json::to_vec(v).expect("JSON serialises"),
            Body::Tar(b) => b.to_vec(),
        }
    }
}

/// Where the agent's API is.
#[derive(Clone, Copy)]
pub enum Agent<'a> {
    /// Its Unix socket, through an SSH connection.
    Tunnel {
        /// The connection.
        ssh: &'a Ssh,
        /// The socket's path on the host.
        socket: &'a str,
    },
    /// Its TCP listener, over HTTPS.
    Direct(&'a Direct),
}

/// An HTTPS client for one agent's TCP listener: base URL, bearer token, verified TLS.
pub struct Direct {
    client: reqwest::Client,
    base: reqwest::Url,
    /// Never printed: [`Direct`] has no `Debug`, and errors name the URL only.
    token: String,
}

/// The token: from `file` (first line, trimmed), else from [`TOKEN_ENV`].
pub fn read_token(file: Option<&Path>) -> Result<String> {
    let token = match file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the API token file {}", f.display()))?
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string(),
        None => std::env::var(TOKEN_ENV)
            .unwrap_or_default()
            .trim()
            .to_string(),
    };
    if token.is_empty() {
        bail!(
            "no API token: the agent's TCP listener wants one. Put it in a file (--api-token-file \
             FILE, mode 0600) or in {TOKEN_ENV}"
        );
    }
    if token.chars().any(|c| c.is_control()) {
        bail!("the API token contains control characters; it must be one line of text");
    }
    Ok(token)
}

/// Checks an agent API URL: `https://host[:port]`, nothing after it.
pub fn parse_url(url: &str) -> Result<reqwest::Url> {
    let base = reqwest::Url::parse(url)
        .with_context(|| format!("{url:?} is not a URL (expected https://host:port)"))?;
    if base.scheme() != "https" {
        bail!(
            "{url}: only https:// is supported: the bearer token must not travel in clear \
             text (give the agent's [api.tcp] tls_cert and tls_key)"
        );
    }
    if base.host_str().is_none() || base.path() != "/" || base.query().is_some() {
        bail!("{url}: expected https://host:port and nothing after it");
    }
    Ok(base)
}

impl Direct {
    /// A client for `url` (`https://host:port`): `ca` (PEM) is the only trusted CA when given.
    pub fn new(url: &str, token: String, ca: Option<&Path>) -> Result<Direct> {
        let base = parse_url(url)?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .https_only(true);
        if let Some(ca) = ca {
            let pem = std::fs::read(ca)
                .with_context(|| format!("cannot read the CA certificate {}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{}: expected PEM certificates", ca.display()))?;
            if certs.is_empty() {
                bail!("{}: no PEM certificate in it", ca.display());
            }
            builder = builder.tls_built_in_root_certs(false);
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder.build().context("cannot set up the HTTPS client")?;
        Ok(Direct {
            client,
            base,
            token,
        })
    }

    fn url(&self, path: &str) -> reqwest::Url {
        self.base.join(path).expect("paths are absolute")
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Body<'_>,
    ) -> Result<reqwest::Response> {
        let mut req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&self.token);
        if let Some(t) = body.content_type() {
            req = req
                .header(reqwest::header::CONTENT_TYPE, t)
                .body(body.bytes());
        }
        let r = req.send().await.map_err(|e| {
            // reqwest's chain says which part failed (DNS, TCP, TLS: certificate, name).
            let mut msg = format!("cannot reach the agent's API at {}", self.base);
            let mut source: Option<&dyn std::error::Error> = Some(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            anyhow::anyhow!(
                "{msg}. Check the address, that bosund's [api.tcp] listener is on, and that \
                 --api-ca names the CA that signed its certificate"
            )
        })?;
        if r.status() == reqwest::StatusCode::UNAUTHORIZED {
            bail!(
                "the agent at {} refused the token (HTTP 401): check --api-token-file or {TOKEN_ENV} \
                 against the hashes in its [api.tcp] tokens",
                self.base
            );
        }
        Ok(r)
    }
}

/// A response over the tunnel; its connection task ends when this is dropped.
struct Tunneled {
    response: hyper::Response<Incoming>,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for Tunneled {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// One request to the agent's socket through a new SSH channel.
async fn request(
    ssh: &Ssh,
    socket: &str,
    method: &str,
    path: &str,
    body: Body<'_>,
) -> Result<Tunneled> {
    let channel = ssh.open_streamlocal(socket).await.with_context(|| {
        format!(
            "cannot reach the agent's API socket {socket} through SSH: is `bosund run` \
             (bosund.service) running, and may this user open the socket (root only by default)?"
        )
    })?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(channel.into_stream()))
            .await
            .context("starting HTTP on the agent's API socket")?;
    // Its errors reach the request or the body being read; nothing else to do with them.
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "bosund")
        .header(hyper::header::ACCEPT, "*/*");
    if let Some(t) = body.content_type() {
        req = req.header(hyper::header::CONTENT_TYPE, t);
    }
    let req = req
        .body(Full::new(Bytes::from(body.bytes())))
        .context("building the request")?;
    let response = sender
        .send_request(req)
        .await
        .with_context(|| format!("{method} {path} on the agent's API socket"))?;
    Ok(Tunneled {
        response,
        connection,
    })
}

async fn json_call(
    agent: Agent<'_>,
    method: &str,
    path: &str,
    body: Body<'_>,
) -> Result<(u16, Value)> {
    let (status, all) = match agent {
        Agent::Tunnel { ssh, socket } => {
            let mut r = request(ssh, socket, method, path, body).await?;
            let status = r.response.status().as_u16();
            let all = r
                .response
                .body_mut()
                .collect()
                .await
                .context("reading the agent's answer")?
                .to_bytes();
            (status, all.to_vec())
        }
        Agent::Direct(d) => {
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
            let r = d.send(method, path, body).await?;
            let status = r.status().as_u16();
            let all = r
                .bytes()
                .await
                .with_context(|| format!("reading the agent's answer from {}", d.base))?;
            (status, all.to_vec())
        }
    };
    let value = serde_json::from_slice(&all)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&all).into_owned()));
    Ok((status, value))
}

/// What a run submitted through the API runs.
#[derive(Clone, Copy)]
pub enum Playbook<'a> {
    /// A self-contained playbook's text.
    Toml(&'a str),
    /// A bundle the agent holds (see [`ensure_bundle`]), by its SHA-256.
    Bundle(&'a str),
}

/// Makes sure the agent holds the bundle `sha256` (`GET /v1/bundles/{sha256}`), sending
/// `bytes` when it does not (`PUT`); `true` when they were sent.
pub async fn ensure_bundle(agent: Agent<'_>, sha256: &str, bytes: &[u8]) -> Result<bool> {
    let path = format!("/v1/bundles/{sha256}");
    let (status, v) = json_call(agent, "GET", &path, Body::None).await?;
    match status {
        200 => return Ok(false),
        // An older bosund has no such endpoint: its fallback answers 404 with this error.
        404 if v["error"] == "no such endpoint" => bail!(
            "the agent's bosund takes no bundles (it is older than this bosun): upgrade it, or \
             run a playbook without includes or local files"
        ),
        404 => {}
        _ => bail!(
            "the agent did not say whether it holds the bundle: HTTP {status}: {}",
            v.get("error").unwrap_or(&v)
        ),
    }
    let (status, v) = json_call(agent, "PUT", &path, Body::Tar(bytes)).await?;
    if status != 201 {
        bail!(
            "the agent did not store the bundle: HTTP {status}: {}",
            v.get("error").unwrap_or(&v)
        );
    }
    Ok(true)
}

/// Submits a run; returns its id.
pub async fn submit(
    agent: Agent<'_>,
    playbook: Playbook<'_>,
    vars: &Map<String, Value>,
    check: bool,
    tags: &[String],
    skip_tags: &[String],
) -> Result<String> {
    let mut body = json!({"vars": vars, "check": check, "tags": tags, "skip_tags": skip_tags});
    match playbook {
        Playbook::Toml(text) => body["playbook_toml"] = json!(text),
        Playbook::Bundle(sha256) => body["bundle"] = json!(sha256),
    }
    let (status, v) = json_call(agent, "POST", "/v1/runs", Body::Json(&body)).await?;
    if status != 202 {
        let hint = match status {
            409 | 429 => " (the agent is busy: its run queue is full; try again later)",
            _ => "",
        };
        bail!(
            "the agent refused the run: HTTP {status}{hint}: {}",
            v.get("error").unwrap_or(&v)
        );
    }
    v["id"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("the agent's answer has no run id: {v}"))
}

/// Asks the agent to cancel a run (its step's processes are killed, it ends `cancelled`).
pub async fn cancel(agent: Agent<'_>, id: &str) -> Result<()> {
    let (status, v) =
        json_call(agent, "POST", &format!("/v1/runs/{id}/cancel"), Body::None).await?;
    match status {
        202 | 409 => Ok(()), // 409: it had already ended
        _ => bail!(
            "the agent did not cancel run {id}: HTTP {status}: {}",
            v.get("error").unwrap_or(&v)
        ),
    }
}

/// Follows a run's events (SSE) until its summary; `on_event` gets each `data:` payload.
pub async fn follow(
    agent: Agent<'_>,
    id: &str,
    on_event: &mut (dyn FnMut(&str) -> bool + Send),
) -> Result<()> {
    let path = format!("/v1/runs/{id}/events");
    let mut parser = SseLines::default();
    match agent {
        Agent::Tunnel { ssh, socket } => {
            let mut r = request(ssh, socket, "GET", &path, Body::None).await?;
            if r.response.status() != hyper::StatusCode::OK {
                bail!("cannot follow run {id}: HTTP {}", r.response.status());
            }
            let body = r.response.body_mut();
            while let Some(frame) = body.frame().await {
                let frame = frame.with_context(|| format!("reading run {id}'s events"))?;
                if let Some(bytes) = frame.data_ref()
                    && !parser.feed(bytes, on_event)
                {
                    break;
                }
            }
            Ok(())
        }
        Agent::Direct(d) => {
            let mut r = d.send(reqwest::Method::GET, &path, Body::None).await?;
            if !r.status().is_success() {
                bail!("cannot follow run {id}: HTTP {}", r.status());
            }
            while let Some(bytes) = r
                .chunk()
                .await
                .with_context(|| format!("reading run {id}'s events from {}", d.base))?
            {
                if !parser.feed(&bytes, on_event) {
                    break;
                }
            }
            Ok(())
        }
    }
}

/// Splits a Server-Sent Events stream into the `data` of each event.
#[derive(Default)]
struct SseLines {
    pending: Vec<u8>,
    data: String,
}

impl SseLines {
    /// Takes more bytes; `false` once `on_event` asked to stop.
    fn feed(&mut self, bytes: &[u8], on_event: &mut (dyn FnMut(&str) -> bool + Send)) -> bool {
        let (pending, data) = (&mut self.pending, &mut self.data);
        pending.extend_from_slice(bytes);
        while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line[..nl]);
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                // The end of one SSE event.
                if !data.is_empty() && !on_event(&std::mem::take(data)) {
                    return false;
                }
            } else if let Some(d) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(d.strip_prefix(' ').unwrap_or(d));
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_are_split_across_chunks() {
        let mut p = SseLines::default();
        let mut seen = Vec::new();
        let mut on = |d: &str| {
            seen.push(d.to_string());
            true
        };
        assert!(p.feed(b"id: 0\ndata: {\"a\"", &mut on));
        assert!(p.feed(
            b":1}\n\n: keep-alive\n\ndata: x\r\ndata: y\r\n\r\n",
            &mut on
        ));
        assert_eq!(seen, vec![r#"{"a":1}"#.to_string(), "x\ny".into()]);
    }

    #[test]
    fn only_https_with_a_token() {
        assert!(Direct::new("http://h:1", "t".into(), None).is_err());
        assert!(Direct::new("https://h:1/v1", "t".into(), None).is_err());
        assert!(Direct::new("https://h:8443", "t".into(), None).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "  s3cret \n").unwrap();
        assert_eq!(read_token(Some(&f)).unwrap(), "s3cret");
        std::fs::write(&f, "\n").unwrap();
        let e = read_token(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("--api-token-file"), "{e}");
    }
}

//! `--via api`: the run goes to the agent's daemon (`bosund run`) instead of a one-off
//! `bosund apply`. HTTP/1.1 to its Unix socket through the SSH connection
//! (direct-streamlocal, so nothing listens on the network): `POST /v1/runs` with the playbook's
//! TOML, then `GET /v1/runs/{id}/events` (Server-Sent Events) followed to the `summary`.
//! The daemon queues runs (one at a time per host): a full queue is an error that says so.
//!
//! A minimal client on purpose: one request per channel, `Connection: close`, bodies with
//! `Content-Length` or chunked (as axum streams SSE).

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::ssh::Ssh;

/// The daemon's default socket.
pub const DEFAULT_SOCKET: &str = "/run/bosun/api.sock";

/// A response's status and, for non-streamed calls, its body.
struct Response<R> {
    status: u16,
    chunked: bool,
    length: Option<usize>,
    body: R,
}

async fn request(
    ssh: &Ssh,
    socket: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<Response<BufReader<russh::ChannelStream<russh::client::Msg>>>> {
    let channel = ssh.open_streamlocal(socket).await.with_context(|| {
        format!(
            "cannot reach the agent's API socket {socket} through SSH: is `bosund run` \
             (bosund.service) running, and may this user open the socket (root only by default)?"
        )
    })?;
    let mut stream = channel.into_stream();
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: bosund\r\nConnection: close\r\nAccept: */*\r\n");
    if let Some(b) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    if let Some(b) = body {
        stream.write_all(b).await?;
    }
    stream.flush().await?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("the API answered something other than HTTP: {line:?}"))?;
    let mut chunked = false;
    let mut length = None;
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if k == "content-length" {
                length = v.parse().ok();
            }
        }
    }
    Ok(Response {
        status,
        chunked,
        length,
        body: reader,
    })
}

/// Reads the body, calling `on_bytes` with each piece as it arrives.
async fn read_body<R: AsyncBufRead + Unpin>(
    r: &mut Response<R>,
    on_bytes: &mut (dyn FnMut(&[u8]) -> bool + Send),
) -> Result<()> {
    if r.chunked {
        let mut line = String::new();
        loop {
            line.clear();
            if r.body.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .with_context(|| format!("bad chunk size {line:?}"))?;
            if size == 0 {
                return Ok(());
            }
            let mut buf = vec![0; size];
            r.body.read_exact(&mut buf).await?;
            let mut crlf = [0; 2];
            r.body.read_exact(&mut crlf).await?;
            if !on_bytes(&buf) {
                return Ok(());
            }
        }
    }
    let mut buf = Vec::new();
    match r.length {
        Some(n) => {
            buf.resize(n, 0);
            r.body.read_exact(&mut buf).await?;
        }
        None => {
            r.body.read_to_end(&mut buf).await?;
        }
    }
    on_bytes(&buf);
    Ok(())
}

async fn json_call(
    ssh: &Ssh,
    socket: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value)> {
    let bytes = body.map(|b| serde_json::to_vec(b).expect("JSON serialises"));
    let mut r = request(ssh, socket, method, path, bytes.as_deref()).await?;
    let mut all = Vec::new();
    read_body(&mut r, &mut |b| {
        all.extend_from_slice(b);
        true
    })
    .await?;
    let value = serde_json::from_slice(&all)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&all).into_owned()));
    Ok((r.status, value))
}

/// Submits a run; returns its id.
pub async fn submit(
    ssh: &Ssh,
    socket: &str,
    playbook_toml: &str,
    vars: &Map<String, Value>,
    check: bool,
) -> Result<String> {
    let body = json!({"playbook_toml": playbook_toml, "vars": vars, "check": check});
    let (status, v) = json_call(ssh, socket, "POST", "/v1/runs", Some(&body)).await?;
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

/// Follows a run's events (SSE) until its summary; `on_event` gets each `data:` payload.
pub async fn follow(
    ssh: &Ssh,
    socket: &str,
    id: &str,
    on_event: &mut (dyn FnMut(&str) -> bool + Send),
) -> Result<()> {
    let mut r = request(ssh, socket, "GET", &format!("/v1/runs/{id}/events"), None).await?;
    if r.status != 200 {
        bail!("cannot follow run {id}: HTTP {}", r.status);
    }
    let mut pending = Vec::new();
    let mut data = String::new();
    read_body(&mut r, &mut |bytes| {
        pending.extend_from_slice(bytes);
        while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line[..nl]);
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                // The end of one SSE event.
                if !data.is_empty() && !on_event(&std::mem::take(&mut data)) {
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
    })
    .await
}

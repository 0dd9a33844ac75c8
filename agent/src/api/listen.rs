//! The API's listeners: the root-only Unix socket, and the optional TCP listener with TLS and
//! bearer tokens. Each connection is served by hyper (HTTP/1.1) with a header read timeout;
//! stopping a listener lets open requests finish for a bounded time.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types::pem::PemObject};

use super::Failure;
use crate::config::{AgentConfig, TlsFiles, TokenScope};

/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish once a listener stops.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the Unix socket at `path`: its directory is created mode 0700 when missing, a stale
/// socket from an earlier bosund is removed, and the socket itself is mode 0600 (root only,
/// when bosund runs as root). Refuses when another process is serving on it.
pub fn bind_unix(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating the socket directory {}", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                anyhow::bail!(
                    "another process is serving on {}; stop it (systemctl stop bosund) or set another [api] socket",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))?;
        }
        Ok(_) => anyhow::bail!(
            "{} exists and is not a socket; remove it or set another [api] socket",
            path.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("looking at {}", path.display())),
    }
    // The socket is created with the process umask; narrow it so there is no moment at which
    // another user could connect.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.with_context(|| format!("binding the API socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting mode 0600 on {}", path.display()))?;
    Ok(listener)
}

/// Loads the TLS certificate chain and key for the TCP listener.
pub fn tls_acceptor(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            anyhow::anyhow!("reading the TLS certificate {}: {e}", files.cert.display())
        })?;
    if certs.is_empty() {
        anyhow::bail!("no certificate in {} (expected PEM)", files.cert.display());
    }
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| anyhow::anyhow!("reading the TLS key {}: {e}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "the TLS key {} does not fit the certificate {}",
                files.key.display(),
                files.cert.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Adds bearer-token authentication (against the hashes of the configuration in force, so a
/// reload rotates tokens) to `router`.
pub fn with_tokens(router: Router, config: Arc<RwLock<Arc<AgentConfig>>>) -> Router {
    router.layer(middleware::from_fn_with_state(config, require_token))
}

async fn require_token(
    State(config): State<Arc<RwLock<Arc<AgentConfig>>>>,
    mut req: Request,
    next: Next,
) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let caller = presented.and_then(|token| {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let config = config.read().unwrap_or_else(|e| e.into_inner()).clone();
        let tcp = config.api.tcp.as_ref()?;
        // Compare against every hash, without an early exit.
        let full: bool = tcp
            .token_hashes
            .iter()
            .fold(subtle::Choice::from(0), |found, h| found | digest.ct_eq(h))
            .into();
        let mut scoped = None;
        for s in &tcp.scoped_tokens {
            if bool::from(digest.ct_eq(&s.hash)) {
                scoped = Some(s.scope.clone());
            }
        }
        match (full, scoped) {
            (true, _) => Some(Caller::Full),
            (false, Some(scope)) => Some(Caller::Scoped(scope)),
            (false, None) => None,
        }
    });
    let Some(caller) = caller else {
        // The token is never logged, only that one was wrong or missing.
        tracing::warn!(
            path = %req.uri().path(),
            token = if presented.is_some() { "wrong" } else { "missing" },
            "refused an unauthenticated API request"
        );
        let mut response = Failure::new(
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is required",
            Some("send Authorization: Bearer <token>; its SHA-256 must be in [api.tcp] tokens"),
        )
        .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return response;
    };
    if let Caller::Scoped(_) = &caller
        && !(req.method() == Method::GET
            || (req.method() == Method::POST && req.uri().path() == "/v1/runs"))
    {
        tracing::warn!(path = %req.uri().path(), method = %req.method(), "refused a scoped token outside its scope");
        return Failure::new(
            StatusCode::FORBIDDEN,
            format!(
                "a scoped token may submit runs and read them, not {} {}",
                req.method(),
                req.uri().path()
            ),
            Some("use a token from [api.tcp] tokens, or the root-only socket"),
        )
        .into_response();
    }
    if let Caller::Scoped(scope) = caller {
        req.extensions_mut().insert(scope);
    }
    next.run(req).await
}

/// Who a request comes from, as its token says.
enum Caller {
    /// A token of `[api.tcp] tokens`: anything.
    Full,
    /// A scoped token: its playbooks and variables (handlers read it as a request extension).
    Scoped(Arc<TokenScope>),
}

/// Serves `router` on the Unix socket until `stop` turns true, then lets open requests finish
/// for a bounded time and removes the socket file.
pub async fn serve_unix(
    listener: UnixListener,
    path: PathBuf,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => spawn_connection(stream, router.clone(), &graceful),
                Err(e) => {
                    tracing::warn!("accepting on {}: {e}", path.display());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = stopped(&mut stop) => break,
        }
    }
    drop(listener);
    let _ = std::fs::remove_file(&path);
    close(graceful).await;
}

/// Serves `router` on TCP (through TLS when `tls` is set) until `stop` turns true.
pub async fn serve_tcp(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match &tls {
                    None => spawn_connection(stream, router.clone(), &graceful),
                    Some(acceptor) => {
                        // The handshake runs in the connection's own task so that a slow
                        // client cannot hold up the accept loop.
                        let acceptor = acceptor.clone();
                        let router = router.clone();
                        let watcher = graceful.watcher();
                        tokio::spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => {
                                    if let Err(e) = watcher.watch(connection(tls, router)).await {
                                        tracing::debug!(%peer, "connection: {e}");
                                    }
                                }
                                Ok(Err(e)) => tracing::info!(%peer, "TLS handshake failed: {e}"),
                                Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                            }
                        });
                    }
                },
                Err(e) => {
                    tracing::warn!("accepting on TCP: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = stopped(&mut stop) => break,
        }
    }
    drop(listener);
    close(graceful).await;
}

type Connection<S> =
    hyper::server::conn::http1::Connection<TokioIo<S>, TowerToHyperService<Router>>;

fn connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    router: Router,
) -> Connection<S> {
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router))
}

fn spawn_connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    router: Router,
    graceful: &GracefulShutdown,
) {
    let conn = graceful.watch(connection(stream, router));
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("connection: {e}");
        }
    });
}

async fn close(graceful: GracefulShutdown) {
    if tokio::time::timeout(CLOSE_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!(
            "closing open API connections after {} s",
            CLOSE_TIMEOUT.as_secs()
        );
    }
}

/// Completes once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, not held across the caller's awaits.
    let _ = stop.wait_for(|s| *s).await;
}

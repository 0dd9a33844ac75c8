//! The agent's HTTP API (axum): submit a run, look at runs, follow a run's events (SSE),
//! cancel, health, Prometheus metrics, and the OpenAPI document of all this.
//!
//! The API validates every input at the boundary (playbook names cannot leave the playbooks
//! directory, bodies are at most [`BODY_LIMIT`] (a bundle at most [`bundle::MAX_BYTES`]),
//! handlers at most [`HANDLER_TIMEOUT`]) and hands runs to the [`RunQueue`]; the one thing it
//! keeps on the host is `bosun run`'s bundles, through [`crate::host::bundle`]'s cache.
//! Listeners and authentication are in [`listen`].
//!
//! Bundles (`--via api` of a playbook with includes or local files): `GET /v1/bundles/{sha256}`
//! says whether the host has it, `PUT` stores it (verified against its name), and
//! `POST /v1/runs` with `"bundle": sha256` runs it from a private directory removed when the
//! run ends — the same bundle and cache as `bosund apply --bundle` over SSH. A scoped token
//! may do none of this: a bundle is a playbook of the caller's, not one of its list.

pub mod listen;
pub mod scope;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{OpenApi, ToSchema};

use crate::config::{AgentConfig, playbook_path};
use crate::engine::RunOptions;
use crate::host::bundle;
use crate::journal::{Journal, RunRecord};
use crate::queue::{CancelError, RunQueue, RunState, RunView, SubmitError};
use bosun_model::event::{RunEvent, Summary};
use bosun_model::playbook::{self, LocatedDiagnostic, Source};

/// Largest request body accepted (a playbook is a few KiB).
pub const BODY_LIMIT: usize = 1024 * 1024;
/// Largest bundle upload accepted: the bundle's files plus the tar stream's headers.
const BUNDLE_BODY_LIMIT: usize = bundle::MAX_BYTES as usize + BODY_LIMIT;
/// Longest a handler may take to produce its response (an SSE stream's body is not bounded).
pub const HANDLER_TIMEOUT: Duration = Duration::from_secs(30);

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The runs.
    pub queue: Arc<RunQueue>,
    /// The configuration in force; replaced on reload.
    pub config: Arc<RwLock<Arc<AgentConfig>>>,
    /// The journal's directory (fixed for the life of the process).
    pub state_dir: PathBuf,
    /// When bosund started.
    pub started: Instant,
}

impl ApiState {
    fn config(&self) -> Arc<AgentConfig> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// `POST /v1/runs`: which playbook, with what.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRun {
    /// The name of a playbook under the agent's playbooks directory (`site` or `site.toml`).
    /// Exactly one of `playbook`, `playbook_toml` and `bundle`.
    #[serde(default)]
    pub playbook: Option<String>,
    /// A playbook's TOML text. Exactly one of `playbook`, `playbook_toml` and `bundle`.
    #[serde(default)]
    pub playbook_toml: Option<String>,
    /// The SHA-256 of a bundle stored with `PUT /v1/bundles/{sha256}` (made by `bosun run`:
    /// the playbook, its includes and the files its steps read). Exactly one of `playbook`,
    /// `playbook_toml` and `bundle`.
    #[serde(default)]
    pub bundle: Option<String>,
    /// Variables, winning over the playbook's `[vars]` (like `--var`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub vars: Map<String, Value>,
    /// Check mode: report what would change, change nothing.
    #[serde(default)]
    pub check: bool,
    /// Run only the steps with one of these tags (and those tagged `always`), like `--tags`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Run none of the steps with one of these tags, like `--skip-tags`.
    #[serde(default)]
    pub skip_tags: Vec<String>,
}

/// A run accepted (202) or cancelled.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunAccepted {
    /// The run's id.
    pub id: String,
    /// `queued` (it starts when the runs before it have ended) or `cancelled`.
    pub status: RunState,
}

/// Step counts of a run.
#[derive(Debug, Serialize, ToSchema)]
pub struct Counts {
    /// Steps that found nothing to change.
    pub ok: usize,
    /// Steps that changed something.
    pub changed: usize,
    /// Steps that failed.
    pub failed: usize,
    /// Steps skipped by `when`.
    pub skipped: usize,
}

impl From<Summary> for Counts {
    fn from(s: Summary) -> Self {
        Counts {
            ok: s.ok,
            changed: s.changed,
            failed: s.failed,
            skipped: s.skipped,
        }
    }
}

/// A run's status.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunInfo {
    /// The run's id (a UUIDv7).
    pub id: String,
    /// The playbook's name.
    pub playbook: String,
    /// Check mode.
    pub check: bool,
    /// `queued`, `running`, `ok`, `failed` or `cancelled`.
    pub status: RunState,
    /// RFC 3339: accepted (runs of this bosund) or started (older runs, from the journal).
    pub submitted_at: String,
    /// Step counts so far; final once the run has ended.
    pub summary: Counts,
    /// Why it was cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<String>,
    /// The run's events can be followed at `/v1/runs/{id}/events` (runs of this bosund, the
    /// most recent ones only; older ones are in the journal).
    pub events: bool,
    /// The `[[schedule]]` of the agent config that started the run; absent for runs submitted
    /// through the API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
}

impl From<RunView> for RunInfo {
    fn from(v: RunView) -> Self {
        RunInfo {
            id: v.id,
            playbook: v.playbook,
            check: v.check,
            status: v.state,
            submitted_at: v.submitted_at,
            summary: v.summary.into(),
            cancel_reason: v.cancel_reason,
            events: true,
            schedule: v.schedule,
        }
    }
}

impl From<RunRecord> for RunInfo {
    fn from(r: RunRecord) -> Self {
        let count = |n: i64| usize::try_from(n).unwrap_or(0);
        RunInfo {
            status: match r.status.as_str() {
                "ok" => RunState::Ok,
                "running" => RunState::Running,
                _ => RunState::Failed,
            },
            id: r.id,
            playbook: r.playbook,
            check: r.check,
            submitted_at: r.started_at,
            summary: Counts {
                ok: count(r.ok),
                changed: count(r.changed),
                failed: count(r.failed),
                skipped: count(r.skipped),
            },
            cancel_reason: None,
            events: false,
            schedule: r.schedule,
        }
    }
}

/// `GET /v1/runs`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    /// Newest first: this bosund's runs, then older ones from the journal.
    pub runs: Vec<RunInfo>,
}

/// A problem in a submitted playbook, located.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiDiagnostic {
    /// `<request>` for `playbook_toml`, else the playbook's file name.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// What was expected, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl From<LocatedDiagnostic> for ApiDiagnostic {
    fn from(d: LocatedDiagnostic) -> Self {
        ApiDiagnostic {
            file: d.file,
            line: d.line,
            column: d.column,
            message: d.message,
            help: d.help,
        }
    }
}

/// Every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    /// What failed.
    pub error: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// For an invalid playbook (422): every problem found.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<ApiDiagnostic>,
}

/// A bundle the host holds (`GET`/`PUT /v1/bundles/{sha256}`).
#[derive(Debug, Serialize, ToSchema)]
pub struct BundleInfo {
    /// Its SHA-256, hex.
    pub sha256: String,
    /// Its size in bytes.
    pub bytes: u64,
}

/// `GET /v1/health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` when bosund answers.
    pub status: String,
    /// bosund's version.
    pub version: String,
    /// Seconds since bosund started.
    pub uptime_seconds: u64,
    /// The running run's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running: Option<String>,
    /// Runs waiting behind it.
    pub queued: usize,
}

/// An error response: status and body.
pub struct Failure(StatusCode, ApiError);

impl Failure {
    fn new(status: StatusCode, error: impl Into<String>, help: Option<&str>) -> Self {
        Failure(
            status,
            ApiError {
                error: error.into(),
                help: help.map(str::to_string),
                diagnostics: Vec::new(),
            },
        )
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

/// The OpenAPI document of this API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "bosund API",
        description = "bosun's host agent: submit playbook runs, follow their events, cancel them. \
            Served on a root-only Unix socket, and optionally on TCP with TLS and bearer tokens."
    ),
    paths(submit_run, list_runs, get_run, run_events, cancel_run, get_bundle, put_bundle, health, metrics),
    components(schemas(SubmitRun, RunAccepted, RunInfo, RunList, Counts, RunState, ApiError, ApiDiagnostic, BundleInfo, Health)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "Required on the TCP listener only; the Unix socket is root-only.",
                    ))
                    .build(),
            ),
        );
        openapi.security = Some(vec![
            SecurityRequirement::default(),
            SecurityRequirement::new("bearer", Vec::<String>::new()),
        ]);
    }
}

/// The OpenAPI document as pretty JSON with a final newline (what `agent/openapi.json` holds).
pub fn openapi_json() -> String {
    let mut doc = ApiDoc::openapi();
    // The committed document must not change with every release.
    doc.info.version = "v1".into();
    let mut value =
        serde_json::to_value(&doc).unwrap_or_else(|e| serde_json::json!({"error": e.to_string()}));
    add_run_links(&mut value);
    let mut text =
        serde_json::to_string_pretty(&value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

/// OpenAPI links from an accepted run (202 of `POST /v1/runs`) to the operations that take its
/// id, so clients and test generators (schemathesis) can follow a run they submitted. Added to
/// the JSON: utoipa 5.5 writes a link's `operationId` as `operation_id`.
fn add_run_links(doc: &mut Value) {
    let Some(accepted) = doc
        .pointer_mut("/paths/~1v1~1runs/post/responses/202")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let link = |operation: &str| serde_json::json!({"operationId": operation, "parameters": {"id": "$response.body#/id"}});
    accepted.insert(
        "links".into(),
        serde_json::json!({
            "GetRun": link("get_run"),
            "RunEvents": link("run_events"),
            "CancelRun": link("cancel_run"),
        }),
    );
}

/// The API's routes, without authentication (the Unix socket's; [`listen`] adds bearer tokens
/// for TCP).
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/runs", post(submit_run).get(list_runs))
        .route("/v1/runs/{id}", get(get_run))
        .route("/v1/runs/{id}/events", get(run_events))
        .route("/v1/runs/{id}/cancel", post(cancel_run))
        .route(
            "/v1/bundles/{sha256}",
            // Route layers run inside the router's: this limit replaces BODY_LIMIT here.
            get(get_bundle)
                .put(put_bundle)
                .layer(DefaultBodyLimit::max(BUNDLE_BODY_LIMIT)),
        )
        .route("/v1/health", get(health))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            Failure::new(
                StatusCode::NOT_FOUND,
                "no such endpoint",
                Some("see /v1/openapi.json"),
            )
        })
        .layer(middleware::from_fn(handler_timeout))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn handler_timeout(req: Request, next: Next) -> Response {
    match tokio::time::timeout(HANDLER_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the request took longer than {} s",
                HANDLER_TIMEOUT.as_secs()
            ),
            Some("retry; a body must arrive within that time"),
        )
        .into_response(),
    }
}

/// Submit a run.
#[utoipa::path(post, path = "/v1/runs", request_body = SubmitRun,
    responses(
        (status = 202, description = "Accepted: queued, starts when the runs before it have ended", body = RunAccepted),
        (status = 400, description = "Malformed request", body = ApiError),
        (status = 404, description = "No such playbook in the playbooks directory, or no such bundle on this host (PUT it first)", body = ApiError),
        (status = 403, description = "A scoped token outside its scope: another playbook, a playbook's text or a bundle, a variable it may not set, or a playbook in which a value could become program text; nothing runs", body = ApiError),
        (status = 413, description = "Body larger than 1 MiB"),
        (status = 422, description = "The playbook is invalid; nothing runs", body = ApiError),
        (status = 429, description = "The queue is full", body = ApiError),
        (status = 503, description = "bosund is shutting down", body = ApiError),
    ))]
async fn submit_run(
    State(state): State<ApiState>,
    token_scope: Option<axum::Extension<Arc<crate::config::TokenScope>>>,
    body: Result<Json<SubmitRun>, JsonRejection>,
) -> Result<(StatusCode, Json<RunAccepted>), Failure> {
    let Json(req) = body.map_err(|e| {
        Failure::new(
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            },
            e.body_text(),
            Some("send JSON: {\"playbook\": NAME}, {\"playbook_toml\": TEXT} or {\"bundle\": SHA256}, optional \"vars\" and \"check\""),
        )
    })?;
    let token_scope = token_scope.map(|axum::Extension(s)| s);
    if let Some(scope) = &token_scope {
        scope::check_request(scope, req.playbook.as_deref(), &req.vars).map_err(out_of_scope)?;
    }
    let config = state.config();
    // A bundle's private directory: kept with the run, removed when it has ended.
    let mut files: Option<bundle::Unpacked> = None;
    let (source, base_dir) = match (req.playbook, req.playbook_toml, req.bundle) {
        (Some(name), None, None) => {
            let path = playbook_path(&config.playbooks_dir, &name).map_err(|msg| {
                Failure::new(StatusCode::BAD_REQUEST, msg, Some("name a file directly in the playbooks directory, e.g. \"site\" or \"site.toml\""))
            })?;
            let text = tokio::fs::read_to_string(&path).await.map_err(|e| {
                let status = if e.kind() == std::io::ErrorKind::NotFound {
                    StatusCode::NOT_FOUND
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                };
                Failure::new(
                    status,
                    format!("reading playbook {}: {e}", path.display()),
                    Some("install the playbook there, or send its text as playbook_toml"),
                )
            })?;
            let file = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or(name);
            (Source::new(file, text), config.playbooks_dir.clone())
        }
        (None, Some(text), None) => (Source::new("<request>", text), config.playbooks_dir.clone()),
        (None, None, Some(digest)) => {
            let unpacked = unpack_bundle(&state, digest).await?;
            let text = tokio::fs::read_to_string(&unpacked.playbook)
                .await
                .map_err(|e| {
                    Failure::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("reading the bundle's playbook: {e}"),
                        None,
                    )
                })?;
            let source = Source::new(unpacked.playbook.display().to_string(), text);
            let dir = unpacked
                .playbook
                .parent()
                .unwrap_or(unpacked.dir())
                .to_path_buf();
            files = Some(unpacked);
            (source, dir)
        }
        _ => {
            return Err(Failure::new(
                StatusCode::BAD_REQUEST,
                "give exactly one of `playbook`, `playbook_toml` and `bundle`",
                None,
            ));
        }
    };
    let names: Vec<String> = req.vars.keys().cloned().collect();
    let base = playbook::BaseDir {
        path: base_dir.clone(),
        origin: playbook::BaseOrigin::Configured("the agent's playbooks_dir".into()),
    };
    let bundle_root = files.as_ref().map(|f| format!("{}/", f.dir().display()));
    // Includes are read from inside the bundle, or the playbooks directory.
    let within = Some(
        files
            .as_ref()
            .map_or(config.playbooks_dir.as_path(), bundle::Unpacked::dir),
    );
    let playbook =
        crate::config::load_playbook_within(source, &names, &base, within).map_err(|diags| {
            Failure(
                StatusCode::UNPROCESSABLE_ENTITY,
                ApiError {
                    error: format!(
                        "the playbook is invalid ({} problems); nothing ran",
                        diags.items.len()
                    ),
                    help: Some("fix each problem at its line and column, then submit again".into()),
                    diagnostics: diags
                        .located()
                        .into_iter()
                        .map(|mut d| {
                            // A bundle's files by their paths in the bundle, as on the laptop.
                            if let Some(rest) = bundle_root
                                .as_deref()
                                .and_then(|root| d.file.strip_prefix(root))
                            {
                                d.file = rest.to_string();
                            }
                            d.into()
                        })
                        .collect(),
                },
            )
        })?;
    if let Some(token_scope) = &token_scope {
        let found = scope::templated_programs(&playbook, token_scope);
        if !found.is_empty() {
            return Err(out_of_scope(format!(
                "a scoped token may not run a playbook in which a value could become program text ({}); nothing ran",
                found.join("; ")
            )));
        }
    }
    let opts = RunOptions {
        run_id: uuid::Uuid::now_v7().to_string(),
        check: req.check,
        base_dir,
        extra_vars: req.vars,
        facts: Value::Null,
        state_dir: state.state_dir.clone(),
        schedule: None,
        tags: req.tags,
        skip_tags: req.skip_tags,
        skip_capacity: false,
    };
    let files = files.map(|f| Box::new(f) as Box<dyn Send>);
    let view = state
        .queue
        .submit_with_files(playbook, opts, files)
        .map_err(|e| match e {
            SubmitError::QueueFull(_) => {
                Failure::new(StatusCode::TOO_MANY_REQUESTS, e.to_string(), None)
            }
            SubmitError::ShuttingDown => Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                e.to_string(),
                Some("retry once bosund is back"),
            ),
        })?;
    tracing::info!(run = %view.id, playbook = %view.playbook, check = view.check, "run accepted");
    Ok((
        StatusCode::ACCEPTED,
        Json(RunAccepted {
            id: view.id,
            status: view.state,
        }),
    ))
}

/// 403 for a scoped token's request outside its scope (logged without values).
fn out_of_scope(message: String) -> Failure {
    tracing::warn!("refused a scoped token's run: {message}");
    Failure::new(
        StatusCode::FORBIDDEN,
        message,
        Some(
            "ask for a token whose [[api.tcp.scoped_token]] lists it, or use argv without a shell for values from outside",
        ),
    )
}

/// The bundles' directory (`bosund apply --bundle` uses the same one).
fn bundles_dir(state: &ApiState) -> PathBuf {
    state.state_dir.join("bundles")
}

/// 400 unless `digest` is a SHA-256; 403 for a scoped token (bundles are never in scope).
fn bundle_request(
    token_scope: Option<&axum::Extension<Arc<crate::config::TokenScope>>>,
    digest: &str,
) -> Result<(), Failure> {
    if token_scope.is_some() {
        return Err(out_of_scope(
            "a scoped token may only run playbooks by name, not a bundle".into(),
        ));
    }
    bundle::check_digest(digest)
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, format!("{e:#}"), None))
}

/// Runs `f` (file work) off the async threads; its error is a 500.
async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, Failure> {
    let internal = |e: String| {
        tracing::warn!("{what}: {e}");
        Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{what}: {e}"),
            None,
        )
    };
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(internal(format!("{e:#}"))),
        Err(e) => Err(internal(e.to_string())),
    }
}

/// The cached bundle `digest` unpacked into a private directory; 404 when it is not here.
async fn unpack_bundle(state: &ApiState, digest: String) -> Result<bundle::Unpacked, Failure> {
    bundle::check_digest(&digest)
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, format!("{e:#}"), None))?;
    let dir = bundles_dir(state);
    let d = digest.clone();
    blocking("unpacking the bundle", move || {
        bundle::unpack_cached(&dir, &d)
    })
    .await?
    .ok_or_else(|| {
        Failure::new(
            StatusCode::NOT_FOUND,
            format!("no bundle {digest} on this host"),
            Some("store it first: PUT /v1/bundles/{sha256} with the tar stream"),
        )
    })
}

/// Whether this host holds a bundle (made by `bosun run`), by its SHA-256.
#[utoipa::path(get, path = "/v1/bundles/{sha256}", params(("sha256" = String, Path, description = "The bundle's SHA-256, hex")),
    responses(
        (status = 200, description = "Held here: a run may name it", body = BundleInfo),
        (status = 400, description = "Not a SHA-256", body = ApiError),
        (status = 403, description = "A scoped token: bundles are never in its scope", body = ApiError),
        (status = 404, description = "Not held here: PUT it", body = ApiError)))]
async fn get_bundle(
    State(state): State<ApiState>,
    token_scope: Option<axum::Extension<Arc<crate::config::TokenScope>>>,
    UrlPath(digest): UrlPath<String>,
) -> Result<Json<BundleInfo>, Failure> {
    bundle_request(token_scope.as_ref(), &digest)?;
    let digest = digest.to_ascii_lowercase();
    let dir = bundles_dir(&state);
    let d = digest.clone();
    let found = blocking("reading the bundle cache", move || {
        let Some(path) = bundle::cached(&dir, &d)? else {
            return Ok(None);
        };
        Ok(Some(std::fs::metadata(path)?.len()))
    })
    .await?;
    match found {
        Some(bytes) => Ok(Json(BundleInfo {
            sha256: digest,
            bytes,
        })),
        None => Err(Failure::new(
            StatusCode::NOT_FOUND,
            format!("no bundle {digest} on this host"),
            Some("store it: PUT /v1/bundles/{sha256} with the tar stream"),
        )),
    }
}

/// Store a bundle (the tar stream `bosun run` makes) under its SHA-256, which the body must
/// have. The host keeps the most recently used bundles.
#[utoipa::path(put, path = "/v1/bundles/{sha256}", params(("sha256" = String, Path, description = "The bundle's SHA-256, hex")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The bundle: the tar stream `bosun run` makes"),
    responses(
        (status = 201, description = "Stored", body = BundleInfo),
        (status = 400, description = "Not a SHA-256, an empty body, a body with another digest, or not a bundle; nothing stored", body = ApiError),
        (status = 403, description = "A scoped token: bundles are never in its scope", body = ApiError),
        (status = 413, description = "Body larger than 65 MiB (64 MiB of files and the tar stream's headers)")))]
async fn put_bundle(
    State(state): State<ApiState>,
    token_scope: Option<axum::Extension<Arc<crate::config::TokenScope>>>,
    UrlPath(digest): UrlPath<String>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<BundleInfo>), Failure> {
    bundle_request(token_scope.as_ref(), &digest)?;
    let digest = digest.to_ascii_lowercase();
    let body = body.map_err(|e| Failure::new(e.status(), e.body_text(), None))?;
    if body.is_empty() {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "the body is empty: send the bundle's tar stream",
            None,
        ));
    }
    let got = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&body))
    };
    if !got.eq_ignore_ascii_case(&digest) {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            format!("the body has sha256 {got}, not {digest}: nothing was stored"),
            None,
        ));
    }
    let dir = bundles_dir(&state);
    let bytes = body.len() as u64;
    let stored = tokio::task::spawn_blocking(move || bundle::store(&body[..], &dir, &digest)).await;
    match stored {
        Ok(Ok(_)) => {}
        Ok(Err(e)) if e.downcast_ref::<bundle::Unusable>().is_some() => {
            return Err(Failure::new(
                StatusCode::BAD_REQUEST,
                e.to_string(),
                Some("send the tar stream `bosun run` makes"),
            ));
        }
        Ok(Err(e)) => {
            tracing::warn!("storing a bundle: {e:#}");
            return Err(Failure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("storing the bundle: {e:#}"),
                None,
            ));
        }
        Err(e) => {
            return Err(Failure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("storing the bundle: {e}"),
                None,
            ));
        }
    }
    tracing::info!(bundle = %got, bytes, "bundle stored");
    Ok((StatusCode::CREATED, Json(BundleInfo { sha256: got, bytes })))
}

/// List runs.
#[utoipa::path(get, path = "/v1/runs", responses((status = 200, body = RunList)))]
async fn list_runs(State(state): State<ApiState>) -> Json<RunList> {
    let mut runs: Vec<RunInfo> = state.queue.list().into_iter().map(Into::into).collect();
    for record in journal_runs(&state, 50).await {
        if !runs.iter().any(|r| r.id == record.id) {
            runs.push(record.into());
        }
    }
    Json(RunList { runs })
}

async fn journal_runs(state: &ApiState, limit: usize) -> Vec<RunRecord> {
    let dir = state.state_dir.clone();
    let read = tokio::task::spawn_blocking(move || Journal::open(&dir)?.recent_runs(limit)).await;
    match read {
        Ok(Ok(runs)) => runs,
        Ok(Err(e)) => {
            tracing::warn!("reading the journal: {e:#}");
            Vec::new()
        }
        Err(e) => {
            tracing::warn!("reading the journal: {e}");
            Vec::new()
        }
    }
}

/// A run's status and step counts.
#[utoipa::path(get, path = "/v1/runs/{id}", params(("id" = String, Path, description = "Run id")),
    responses((status = 200, body = RunInfo), (status = 404, body = ApiError)))]
async fn get_run(
    State(state): State<ApiState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<RunInfo>, Failure> {
    if let Some(v) = state.queue.get(&id) {
        return Ok(Json(v.into()));
    }
    journal_runs(&state, 500)
        .await
        .into_iter()
        .find(|r| r.id == id)
        .map(|r| Json(r.into()))
        .ok_or_else(|| not_found(&id))
}

fn not_found(id: &str) -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        format!("no run {id}"),
        Some("list runs with GET /v1/runs"),
    )
}

/// Follow a run's events (Server-Sent Events). Each `data` is one `RunEvent` as JSON, the same
/// as a line of `bosund apply --output json`; `id` is the event's index (send `Last-Event-ID`
/// to resume). The stream replays the run from its start, then follows it live, and ends when
/// the run has ended (its last event is the `summary`); the run's outcome is then recorded.
#[utoipa::path(get, path = "/v1/runs/{id}/events", params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "text/event-stream of RunEvent JSON objects", content_type = "text/event-stream", body = String),
        (status = 404, body = ApiError)))]
async fn run_events(
    State(state): State<ApiState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>>, Failure> {
    let from = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(0, |i| i + 1);
    if state.queue.events_from(&id, from).is_none() {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            format!("no events of run {id} are in memory"),
            Some(
                "only recent runs of this bosund can be followed; GET /v1/runs/{id} has its outcome",
            ),
        ));
    }
    let follow = Follow {
        queue: state.queue.clone(),
        id,
        next: from,
        pending: VecDeque::new(),
    };
    // The stream ends when the run has ended, not at its summary event: the summary is sent
    // before the run's outcome is recorded, and a client that reads the run right after the
    // stream closed must find it finished.
    let events = stream::unfold(follow, |mut f| async move {
        loop {
            if let Some(event) = f.pending.pop_front() {
                let index = f.next;
                f.next += 1;
                let sse = Event::default()
                    .id(index.to_string())
                    .json_data(&event)
                    .unwrap_or_else(|e| {
                        Event::default().comment(format!("unserialisable event: {e}"))
                    });
                return Some((Ok(sse), f));
            }
            // Events and the receiver come from one lock: none can slip in between.
            let (batch, mut changed) = f.queue.events_from(&f.id, f.next)?;
            if batch.events.is_empty() {
                if batch.finished {
                    return None;
                }
                // Wakes on a new event, on the run's end, and when the run is forgotten.
                if changed.changed().await.is_err() {
                    return None;
                }
            }
            f.pending.extend(batch.events);
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// Where an SSE follower is in a run's events.
struct Follow {
    queue: Arc<RunQueue>,
    id: String,
    /// Index of the next event to send.
    next: usize,
    /// Fetched, not yet sent.
    pending: VecDeque<RunEvent>,
}

/// Cancel a run: a queued one never starts; the running one's step is stopped (its processes
/// killed) and the run ends `cancelled`.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", params(("id" = String, Path, description = "Run id")),
    responses((status = 202, body = RunAccepted), (status = 404, body = ApiError), (status = 409, description = "Already finished", body = ApiError)))]
async fn cancel_run(
    State(state): State<ApiState>,
    UrlPath(id): UrlPath<String>,
) -> Result<(StatusCode, Json<RunAccepted>), Failure> {
    match state.queue.cancel(&id, "cancelled through the API") {
        Ok(v) => {
            tracing::info!(run = %id, "cancel requested");
            Ok((
                StatusCode::ACCEPTED,
                Json(RunAccepted {
                    id: v.id,
                    status: v.state,
                }),
            ))
        }
        Err(e @ CancelError::NotFound(_)) => {
            Err(Failure::new(StatusCode::NOT_FOUND, e.to_string(), None))
        }
        Err(e @ CancelError::Finished(..)) => {
            Err(Failure::new(StatusCode::CONFLICT, e.to_string(), None))
        }
    }
}

/// Liveness, version, and what is running.
#[utoipa::path(get, path = "/v1/health", responses((status = 200, body = Health)))]
async fn health(State(state): State<ApiState>) -> Json<Health> {
    let (queued, running) = state.queue.depth();
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_seconds: state.started.elapsed().as_secs(),
        running,
        queued,
    })
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json())
}

/// Prometheus metrics (text exposition format 0.0.4).
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    let dir = state.state_dir.clone();
    let drift = tokio::task::spawn_blocking(move || match Journal::open_existing(&dir)? {
        Some(j) => j.drift(),
        None => Ok(Vec::new()),
    })
    .await;
    let drift = match drift {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => {
            tracing::warn!("reading drift from the journal: {e:#}");
            Vec::new()
        }
        Err(e) => {
            tracing::warn!("reading drift from the journal: {e}");
            Vec::new()
        }
    };
    let mut text = render_metrics(&state);
    render_drift(&mut text, &drift);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// `bosun_drift_steps{playbook="…"}`: per playbook, the steps its last scheduled check run
/// found would change.
fn render_drift(out: &mut String, drift: &[crate::journal::DriftRow]) {
    if drift.is_empty() {
        return;
    }
    out.push_str("# HELP bosun_drift_steps Steps the last scheduled check run of a playbook found would change (0: the host is as the playbook says).\n# TYPE bosun_drift_steps gauge\n");
    for row in drift {
        let label = row.playbook.replace('\\', "\\\\").replace('"', "\\\"");
        out.push_str(&format!(
            "bosun_drift_steps{{playbook=\"{label}\"}} {}\n",
            row.steps.len()
        ));
    }
}

fn render_metrics(state: &ApiState) -> String {
    let o = state.queue.outcomes();
    let (queued, running) = state.queue.depth();
    let mut out = String::new();
    out.push_str("# HELP bosun_runs_total Runs ended since bosund started, by outcome.\n");
    out.push_str("# TYPE bosun_runs_total counter\n");
    for (outcome, n) in [
        ("ok", o.ok),
        ("failed", o.failed),
        ("cancelled", o.cancelled),
    ] {
        out.push_str(&format!("bosun_runs_total{{outcome=\"{outcome}\"}} {n}\n"));
    }
    out.push_str(
        "# HELP bosun_runs_rejected_total Submissions refused because the queue was full.\n",
    );
    out.push_str("# TYPE bosun_runs_rejected_total counter\n");
    out.push_str(&format!("bosun_runs_rejected_total {}\n", o.rejected));
    out.push_str("# HELP bosun_run_queue_depth Runs waiting behind the running one.\n# TYPE bosun_run_queue_depth gauge\n");
    out.push_str(&format!("bosun_run_queue_depth {queued}\n"));
    out.push_str(
        "# HELP bosun_run_running 1 while a run executes.\n# TYPE bosun_run_running gauge\n",
    );
    out.push_str(&format!(
        "bosun_run_running {}\n",
        u8::from(running.is_some())
    ));
    out.push_str("# HELP bosun_build_info bosund's version.\n# TYPE bosun_build_info gauge\n");
    out.push_str(&format!(
        "bosun_build_info{{version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    ));
    out.push_str("# HELP bosun_uptime_seconds Seconds since bosund started.\n# TYPE bosun_uptime_seconds gauge\n");
    out.push_str(&format!(
        "bosun_uptime_seconds {}\n",
        state.started.elapsed().as_secs()
    ));
    crate::telemetry::stats::render_prometheus(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn playbook_names_cannot_leave_the_directory() {
        let dir = Path::new("/etc/bosun/playbooks");
        assert_eq!(playbook_path(dir, "site").unwrap(), dir.join("site.toml"));
        assert_eq!(
            playbook_path(dir, "site.toml").unwrap(),
            dir.join("site.toml")
        );
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "a/b",
            "..",
            ".",
            ".hidden",
            "",
            "x\0y",
        ] {
            assert!(playbook_path(dir, bad).is_err(), "{bad:?} accepted");
        }
    }
}

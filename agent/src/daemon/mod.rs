//! `bosund run`: the long-running agent. It serves the API, executes runs one at a time, and
//! speaks systemd's notify protocol.
//!
//! Life cycle:
//! 1. read and validate the config (invalid: exit 2 with every problem located); with
//!    telemetry configured, find its AWS region (none: exit 2, located at the section);
//! 2. start the run queue's thread, bind the Unix socket (and the TCP listener);
//! 3. `READY=1` once every listener accepts, then `WATCHDOG=1` every half `WATCHDOG_USEC`
//!    from the API's runtime (a wedged API stops the pings and systemd restarts bosund);
//! 4. SIGHUP: re-read the config; if valid, switch to it (queue limit, playbooks dir and
//!    tokens at once; listener addresses and the state dir need a restart, which is logged);
//!    if not, log every problem and keep the old one. Queued runs are untouched.
//! 5. SIGTERM or SIGINT: `STOPPING=1`, stop accepting, cancel queued runs, let the running run
//!    go on for `shutdown_timeout`, then cancel it (its end is journaled), close connections,
//!    exit 0.
//! 6. SIGUSR2 (sent by `bosun run` after it installed another build at bosund's path): when
//!    the file at the path bosund was started from is not the running build, stop accepting
//!    runs, let every run already accepted (running and queued) finish, stop as in 5 (nothing
//!    left to cancel), then exec the new build in place (same PID, same arguments: systemd
//!    sees the same service, which says READY again). The same build there: nothing to do.
//!
//! `[[schedule]]` runs are started by [`schedule`], a task on the API's runtime that submits
//! them to the same queue as API runs (evaluated as soon as it starts: slots missed while bosund
//! was down are caught up then; given each reloaded config; stopped with the listeners on
//! SIGTERM, before the queue drains).
//!
//! Telemetry (`[metrics]`, `[[logs]]`) runs on its own thread ([`crate::telemetry`]), started
//! after the listeners, restarted on a SIGHUP that changes those sections (positions are in the
//! journal), and stopped on SIGTERM alongside the run's drain (at most 10 s: what it read is
//! sent and checkpointed, the rest is read again after the restart).
//!
//! The API runs on a current-thread runtime: on a 1-vCPU host a worker pool only adds memory,
//! and all the API does is move requests and events. Runs execute on their own thread (see
//! [`crate::queue`]), so a busy step never delays a request or a watchdog ping.

pub mod schedule;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::api::{self, ApiState, listen};
use crate::config::{self, AgentConfig, ConfigError};
use crate::queue::RunQueue;

/// How `bosund run` was started.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The config file.
    pub config_path: PathBuf,
    /// The path was given explicitly: a missing file is an error rather than "use defaults".
    pub config_explicit: bool,
    /// `--state-dir` / `BOSUN_STATE_DIR`, which win over the config's `state_dir`.
    pub state_dir: Option<PathBuf>,
}

/// Reads the config for `bosund run` and `bosund check-config`: the defaults when the default
/// path does not exist, an error when an explicit one does not.
pub fn load_config(path: &Path, explicit: bool) -> Result<AgentConfig, ConfigError> {
    match config::read(path) {
        Err(ConfigError::Read { source, .. })
            if !explicit && source.kind() == std::io::ErrorKind::NotFound =>
        {
            tracing::info!("no {}: using the defaults", path.display());
            Ok(AgentConfig::default())
        }
        other => other,
    }
}

/// Runs the daemon until SIGTERM or SIGINT. Exit 0 after a clean drain, 2 when the config is
/// invalid; an error when a listener cannot be set up.
pub fn run(opts: DaemonOptions) -> anyhow::Result<ExitCode> {
    let config = match load_config(&opts.config_path, opts.config_explicit) {
        Ok(c) => c,
        Err(ConfigError::Invalid(diags)) => {
            eprint!("{}", diags.render(false));
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Before anything is started: telemetry without a region would leave bosund serving but
    // shipping nothing.
    let placement = match runtime.block_on(find_placement(&config)) {
        Ok(p) => p,
        Err(crate::telemetry::NoRegion(text)) => {
            eprint!("{text}");
            return Ok(ExitCode::from(2));
        }
    };
    let ended = runtime.block_on(serve(config, placement, opts))?;
    drop(runtime);
    match ended {
        Ended::Stopped => Ok(ExitCode::SUCCESS),
        Ended::Update(path) => {
            tracing::info!(path = %path.display(), "starting the new build");
            let err = crate::host::process::reexec(&path);
            Err(anyhow::anyhow!(
                "starting the new build {} failed: {err}; start bosund again (systemctl restart bosund)",
                path.display()
            ))
        }
    }
}

/// Where telemetry ships from, when the config has any.
async fn find_placement(
    config: &AgentConfig,
) -> Result<Option<crate::telemetry::Placement>, crate::telemetry::NoRegion> {
    if config.telemetry.is_empty() {
        return Ok(None);
    }
    crate::telemetry::Placement::find(&config.telemetry)
        .await
        .map(Some)
}

/// How [`serve`] ended.
enum Ended {
    /// SIGTERM or SIGINT: exit.
    Stopped,
    /// SIGUSR2 found another build at this path: exec it.
    Update(PathBuf),
}

/// The path bosund was started from, when the file there now is another build than the one
/// running (compared by device and inode: an install renames a new file over the path).
fn new_build_at(started_from: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let there = std::fs::metadata(started_from).ok()?;
    let running = std::fs::metadata("/proc/self/exe").ok()?;
    ((there.dev(), there.ino()) != (running.dev(), running.ino()))
        .then(|| started_from.to_path_buf())
}

async fn serve(
    config: AgentConfig,
    placement: Option<crate::telemetry::Placement>,
    opts: DaemonOptions,
) -> anyhow::Result<Ended> {
    // Read before any update can rename another file over it.
    let started_from = std::env::current_exe().context("finding bosund's own path")?;
    let state_dir = opts
        .state_dir
        .clone()
        .or_else(|| config.state_dir.clone())
        .unwrap_or_else(crate::journal::default_state_dir);
    // Listeners first: a port or socket that cannot be had is the likeliest failure.
    let unix = listen::bind_unix(&config.api.socket)?;
    let tcp = match &config.api.tcp {
        None => None,
        Some(t) => {
            let tls = t.tls.as_ref().map(listen::tls_acceptor).transpose()?;
            let listener = tokio::net::TcpListener::bind(t.listen)
                .await
                .with_context(|| format!("binding the API's TCP listener {}", t.listen))?;
            Some((listener, tls))
        }
    };
    // A journal the disk damaged is moved aside here, once, before anything else opens it:
    // bosund starts with a new one rather than failing (and being restarted) forever.
    match crate::journal::Journal::open_checked(&state_dir) {
        Ok((_, Some(note))) => tracing::error!("{note}"),
        Ok((_, None)) => {}
        Err(e) => tracing::error!("the journal cannot be opened: {e:#}; runs are not journaled"),
    }
    let (queue, runner) = RunQueue::start(config.queue_limit, state_dir.clone())
        .context("starting the runner thread")?;
    let shared = Arc::new(RwLock::new(Arc::new(config.clone())));
    let (stop_tx, stop_rx) = watch::channel(false);
    let schedules = schedule::start(
        &current(&shared),
        queue.clone(),
        &state_dir,
        stop_rx.clone(),
    )?;
    let mut telemetry = start_telemetry(&config, placement, &state_dir)?;
    // What the telemetry thread runs with (a reload it could not apply leaves it behind the
    // served config, and the next SIGHUP tries again).
    let mut shipping = config.telemetry.clone();
    let state = ApiState {
        queue: queue.clone(),
        config: shared.clone(),
        state_dir: state_dir.clone(),
        started: Instant::now(),
    };
    let router = api::router(state);
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(listen::serve_unix(
        unix,
        config.api.socket.clone(),
        router.clone(),
        stop_rx.clone(),
    ));
    if let Some((listener, tls)) = tcp {
        let secured = listen::with_tokens(router, shared.clone());
        servers.spawn(listen::serve_tcp(listener, tls, secured, stop_rx.clone()));
    }

    let mut term = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("handling SIGHUP")?;
    let mut usr2 = signal(SignalKind::user_defined2()).context("handling SIGUSR2")?;
    let mut update: Option<PathBuf> = None;
    let mut updated: Option<tokio::sync::oneshot::Receiver<()>> = None;
    tracing::info!(
        socket = %config.api.socket.display(),
        tcp = ?config.api.tcp.as_ref().map(|t| t.listen),
        state_dir = %state_dir.display(),
        "bosund is serving"
    );
    notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
    let watchdog = watchdog_interval();

    loop {
        tokio::select! {
            _ = term.recv() => { update = None; break }
            _ = int.recv() => { update = None; break }
            _ = hup.recv() => {
                reload(&opts, &shared, &queue);
                let after = current(&shared);
                schedules.send_replace(after.clone());
                if after.telemetry != shipping {
                    match find_placement(&after).await {
                        Ok(placement) => {
                            // Positions are in the journal: the new tasks resume where the old
                            // stopped.
                            if let Some(t) = telemetry.take() {
                                t.stop(TELEMETRY_RELOAD_GRACE).await;
                            }
                            telemetry = start_telemetry(&after, placement, &state_dir)?;
                            shipping = after.telemetry.clone();
                            tracing::info!("telemetry restarted with the new [metrics] and [[logs]]");
                        }
                        Err(crate::telemetry::NoRegion(text)) => tracing::error!(
                            "{}; telemetry goes on with the previous configuration",
                            text.trim_end()
                        ),
                    }
                }
            }
            _ = usr2.recv(), if update.is_none() => match new_build_at(&started_from) {
                None => tracing::info!(path = %started_from.display(), "SIGUSR2: the build at this path is the running one; nothing to update"),
                Some(path) => {
                    tracing::info!(path = %path.display(), "SIGUSR2: a new build is installed; no new runs are accepted, the accepted ones finish, then it starts");
                    notify(&[NotifyState::Status("updating: finishing the accepted runs")]);
                    update = Some(path);
                    let q = queue.clone();
                    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
                    tokio::spawn(async move {
                        q.finish_accepted().await;
                        let _ = done_tx.send(());
                    });
                    updated = Some(done_rx);
                }
            },
            _ = async { if let Some(rx) = updated.as_mut() { let _ = rx.await; } else { std::future::pending::<()>().await } } => break,
            _ = tick(watchdog) => notify(&[NotifyState::Watchdog]),
        }
    }

    if update.is_some() {
        notify(&[NotifyState::Status("updating: starting the new build")]);
    } else {
        notify(&[NotifyState::Stopping, NotifyState::Status("draining")]);
    }
    tracing::info!("stopping: no new runs are accepted");
    let _ = stop_tx.send(true);
    let grace = shared
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .shutdown_timeout;
    // Telemetry flushes and checkpoints alongside the run's drain, within the same bound.
    let telemetry_stopped =
        telemetry.map(|t| tokio::spawn(t.stop(grace.min(TELEMETRY_STOP_GRACE))));
    // The watchdog still expects pings while the run drains.
    let drain = queue.drain(grace);
    tokio::pin!(drain);
    let dropped = loop {
        tokio::select! {
            dropped = &mut drain => break dropped,
            _ = tick(watchdog) => notify(&[NotifyState::Watchdog]),
        }
    };
    if !dropped.is_empty() {
        tracing::warn!(runs = ?dropped, "queued runs were dropped without starting");
    }
    while servers.join_next().await.is_some() {}
    if let Some(t) = telemetry_stopped {
        let _ = t.await;
    }
    // The runner's loop ends now that the queue dropped its sender (drain); it has journaled
    // the last run.
    let joined = tokio::task::spawn_blocking(move || runner.join());
    if tokio::time::timeout(Duration::from_secs(5), joined)
        .await
        .is_err()
    {
        tracing::error!("the runner thread did not end; exiting anyway");
    }
    tracing::info!("bosund stopped");
    Ok(match update {
        Some(path) => Ended::Update(path),
        None => Ended::Stopped,
    })
}

/// Longest telemetry may take on SIGTERM to send what it read and checkpoint.
const TELEMETRY_STOP_GRACE: Duration = Duration::from_secs(10);
/// Same, when a SIGHUP changed `[metrics]` or `[[logs]]`.
const TELEMETRY_RELOAD_GRACE: Duration = Duration::from_secs(5);

fn current(shared: &RwLock<Arc<AgentConfig>>) -> Arc<AgentConfig> {
    shared.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Starts the telemetry thread when the config asks for metrics or logs.
fn start_telemetry(
    config: &AgentConfig,
    placement: Option<crate::telemetry::Placement>,
    state_dir: &Path,
) -> anyhow::Result<Option<crate::telemetry::Telemetry>> {
    match placement {
        Some(p) if !config.telemetry.is_empty() => {
            crate::telemetry::Telemetry::start(config.telemetry.clone(), p, state_dir.to_path_buf())
                .map(Some)
        }
        _ => Ok(None),
    }
}

/// Re-reads the config; switches to it only when valid.
fn reload(opts: &DaemonOptions, shared: &RwLock<Arc<AgentConfig>>, queue: &RunQueue) {
    notify(&[NotifyState::Reloading, NotifyState::Status("reloading")]);
    match load_config(&opts.config_path, opts.config_explicit) {
        Ok(new) => {
            let old = shared.read().unwrap_or_else(|e| e.into_inner()).clone();
            if new.api.socket != old.api.socket || listeners_differ(&old, &new) {
                tracing::warn!(
                    "the API's listeners changed in the config: that takes a restart (systemctl restart bosund)"
                );
            }
            if new.state_dir != old.state_dir {
                tracing::warn!("state_dir changed in the config: that takes a restart");
            }
            queue.set_limit(new.queue_limit);
            *shared.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
            tracing::info!(config = %opts.config_path.display(), "configuration reloaded");
        }
        Err(ConfigError::Invalid(diags)) => {
            for d in diags.located() {
                tracing::error!(
                    "{}:{}:{}: {}{}",
                    d.file,
                    d.line,
                    d.column,
                    d.message,
                    d.help.map(|h| format!(" ({h})")).unwrap_or_default()
                );
            }
            tracing::error!(
                "the new configuration is invalid; still serving with the previous one"
            );
        }
        Err(e) => tracing::error!("{e}; still serving with the previous configuration"),
    }
    notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// The TCP listener's address or TLS files changed (tokens alone apply at once).
fn listeners_differ(old: &AgentConfig, new: &AgentConfig) -> bool {
    let key = |c: &AgentConfig| c.api.tcp.as_ref().map(|t| (t.listen, t.tls.clone()));
    key(old) != key(new)
}

fn notify(states: &[NotifyState]) {
    // Without NOTIFY_SOCKET (not under systemd) this does nothing.
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!("sd_notify: {e}");
    }
}

/// Half of systemd's `WATCHDOG_USEC`, when the watchdog is on for this process.
fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2))
}

/// Completes after `every`, or never when there is no watchdog.
async fn tick(every: Option<Duration>) {
    match every {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

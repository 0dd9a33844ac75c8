//! Telemetry: host metrics to CloudWatch and logs to CloudWatch Logs, on their own thread.
//!
//! ```text
//! telemetry
//!   config          [metrics] and [[logs]]: serde sections and their validated form
//!   metrics         sample → journal backlog → PutMetricData, back-filled in order
//!     collect       /proc and statvfs readings
//!   logs            one task per [[logs]] source: read → batch → send → checkpoint
//!     event         LogEvent, multi-line assembly, timestamps, filters, oversize split
//!     batch         LogBatch within PutLogEvents' limits
//!     file          tailing with rotation (rename, copytruncate), identity, globs
//!     cri           k3s/kubelet container log lines
//!     journald      journalctl -o json entries
//!   sinks           one per AWS API: cloudwatch (metrics), cloudwatch_logs
//!   stats           counters and the latest sample for GET /metrics
//! ```
//!
//! The thread runs a current-thread runtime with its own journal connection, so a slow SQLite
//! write or a file read never delays the API, and the API never delays shipping. [`Telemetry`]
//! is the handle: [`Telemetry::stop`] asks every task to send what it read and checkpoint,
//! within a deadline, and joins the thread.

pub mod config;
pub mod logs;
pub mod metrics;
pub mod sinks;
pub mod stats;

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;

use crate::aws::{Aws, AwsTarget};
use crate::journal::Journal;
use config::{LogKind, LogSourceConfig, MetricsConfig};

/// Memory for all log sources' queued events together (each source gets an equal share, at
/// least 2 MiB: two full batches).
pub const LOG_BUFFER_BUDGET: usize = 32 * 1024 * 1024;

/// What to ship: `[metrics]` and `[[logs]]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TelemetryConfig {
    /// Host metrics, when `[metrics]` is present.
    pub metrics: Option<MetricsConfig>,
    /// Log sources.
    pub logs: Vec<LogSourceConfig>,
}

impl TelemetryConfig {
    /// Whether anything is to be shipped.
    pub fn is_empty(&self) -> bool {
        self.metrics.is_none() && self.logs.is_empty()
    }
}

/// The running telemetry thread.
#[derive(Debug)]
pub struct Telemetry {
    stop: watch::Sender<Option<Instant>>,
    thread: std::thread::JoinHandle<()>,
}

impl Telemetry {
    /// Starts shipping on a new thread. Fails only when the thread cannot be made; AWS and
    /// journal problems are logged by the thread and retried.
    pub fn start(config: TelemetryConfig, state_dir: PathBuf) -> anyhow::Result<Telemetry> {
        let (stop, stop_rx) = watch::channel(None);
        let thread = std::thread::Builder::new()
            .name("telemetry".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("telemetry: starting its runtime: {e}; nothing is shipped");
                        return;
                    }
                };
                let local = tokio::task::LocalSet::new();
                if let Err(e) = local.block_on(&rt, run(config, state_dir, stop_rx)) {
                    tracing::error!("telemetry stopped: {e:#}");
                }
            })
            .context("starting the telemetry thread")?;
        Ok(Telemetry { stop, thread })
    }

    /// Asks every task to send what it has read and checkpoint, waits up to `grace`, then
    /// returns (whatever was not accepted by then is read again after the restart).
    pub async fn stop(self, grace: Duration) {
        let deadline = Instant::now() + grace;
        let _ = self.stop.send(Some(deadline));
        let thread = self.thread;
        let joined = tokio::task::spawn_blocking(move || thread.join());
        // A little past the deadline: the tasks give up at it.
        if tokio::time::timeout(grace + Duration::from_secs(2), joined)
            .await
            .is_err()
        {
            tracing::warn!(
                "telemetry did not stop in time; unsent lines are sent after the restart"
            );
        }
    }
}

async fn run(
    config: TelemetryConfig,
    state_dir: PathBuf,
    stop: watch::Receiver<Option<Instant>>,
) -> anyhow::Result<()> {
    if config.is_empty() {
        return Ok(());
    }
    let journal = Rc::new(RefCell::new(
        Journal::open(&state_dir).context("opening the journal for telemetry")?,
    ));
    let facts = crate::host::facts::Facts::gather().await;
    let found_id = facts.ec2.as_ref().map(|e| e.instance_id.clone());
    let aws = Aws::connect(&AwsTarget {
        region: facts.ec2.as_ref().map(|e| e.region.clone()).filter(|_| {
            std::env::var_os("AWS_REGION").is_none()
                && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        }),
        endpoint_url: None,
    })
    .await
    .context(
        "telemetry needs AWS: set AWS_REGION in bosund's environment (on EC2 it comes from IMDS)",
    )?;
    let ident_for = |over: &Option<String>| logs::Identity {
        instance_id: over
            .clone()
            .or_else(|| found_id.clone())
            .unwrap_or_else(|| facts.hostname.clone()),
        hostname: facts.hostname.clone(),
    };
    let mut tasks = Vec::new();
    if let Some(m) = config.metrics.clone() {
        let id = ident_for(&m.instance_id).instance_id;
        tracing::info!(namespace = %m.namespace, interval = ?m.interval, instance_id = %id, "shipping host metrics");
        tasks.push(tokio::task::spawn_local(metrics::run(
            m,
            id,
            journal.clone(),
            aws.cloudwatch(),
            stop.clone(),
        )));
    }
    let budget =
        (LOG_BUFFER_BUDGET / config.logs.len().max(1)).max(2 * logs::batch::MAX_BATCH_BYTES);
    for source in config.logs {
        let ident = ident_for(&source.instance_id);
        let sink = sinks::cloudwatch_logs::CloudWatchLogs::new(aws.cloudwatch_logs());
        tracing::info!(source = %source.id, group = %source.log_group, "shipping logs");
        let task = match source.kind {
            LogKind::Journald => tokio::task::spawn_local(logs::run_journald(
                source,
                ident,
                journal.clone(),
                sink,
                budget,
                stop.clone(),
            )),
            LogKind::File | LogKind::Cri => tokio::task::spawn_local(logs::run_files(
                source,
                ident,
                journal.clone(),
                sink,
                budget,
                stop.clone(),
            )),
        };
        tasks.push(task);
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

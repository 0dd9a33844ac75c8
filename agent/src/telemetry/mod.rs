//! Telemetry: host metrics to CloudWatch and logs to CloudWatch Logs, on their own thread.
//!
//! ```text
//! telemetry
//!   config          [metrics] and [[logs]]: serde sections and their validated form
//!   point           Point: one figure of a host sample
//!   stop            the stop signal every task watches
//!   stats           counters and the latest sample for GET /metrics
//!   sinks           one per AWS API: cloudwatch (metrics), cloudwatch_logs
//!   metrics         sample → journal backlog → PutMetricData, back-filled in order
//!     collect       /proc and statvfs readings
//!   logs            one task per [[logs]] source: read → batch → send → checkpoint
//!     event         LogEvent, multi-line assembly, timestamps, filters, oversize split
//!     batch         LogBatch within PutLogEvents' limits
//!     cri           k3s/kubelet container log lines
//!     tail          reading one file with rotation (rename, copytruncate), identity, globs
//!     ship          per-stream queues → batches → a LogSink with backoff → acks
//!     file          the file and CRI source: discover, tail, decode, checkpoint
//!     journald      journalctl -o json entries, and the source running journalctl
//! ```
//!
//! The modules of telemetry depend on each other one way only, down the list: `config`,
//! `point`, `stop` → `stats` → `sinks` → `metrics`, `logs` → this module (`config` and
//! `stats` are also used from outside telemetry). So the sinks know nothing of metrics or
//! logs, and metrics and logs nothing of each other; the layers table in ARCHITECTURE.md
//! has a row for each of them, and `tests/architecture` keeps it so.
//!
//! The thread runs a current-thread runtime with its own journal connection, so a slow SQLite
//! write or a file read never delays the API, and the API never delays shipping. [`Telemetry`]
//! is the handle: [`Telemetry::stop`] asks every task to send what it read and checkpoint,
//! within a deadline, and joins the thread.

pub mod config;
#[cfg(feature = "aws")]
mod logs;
#[cfg(feature = "aws")]
mod metrics;
mod point;
#[cfg(feature = "aws")]
mod sinks;
pub mod stats;
mod stop;

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

/// What to ship: `[metrics]` and `[[logs]]`, and where.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TelemetryConfig {
    /// The top-level `region`; `None`: AWS_REGION / AWS_DEFAULT_REGION, IMDS, the profile.
    pub region: Option<String>,
    /// Host metrics, when `[metrics]` is present.
    pub metrics: Option<MetricsConfig>,
    /// Log sources.
    pub logs: Vec<LogSourceConfig>,
    /// Where the first section was written (`[metrics]`, else the first `[[logs]]`).
    pub origin: Option<config::Origin>,
}

impl TelemetryConfig {
    /// Whether anything is to be shipped.
    pub fn is_empty(&self) -> bool {
        self.metrics.is_none() && self.logs.is_empty()
    }
}

/// Where bosund runs, as telemetry needs it: found once before the thread starts, so a host
/// with no AWS region refuses to start instead of serving without its telemetry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The region to use when it is not left to the SDK's chain (config, then IMDS).
    pub region: Option<String>,
    /// The EC2 instance id from IMDS, when on EC2.
    pub instance_id: Option<String>,
    /// This host's name.
    pub hostname: String,
}

/// Telemetry cannot start: no AWS region (the message is located at the section that needs
/// it, rendered like a config error).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NoRegion(pub String);

impl Placement {
    /// Finds the region and the instance's identity for `config`. The region comes from, in
    /// order: the config's `region`, AWS_REGION / AWS_DEFAULT_REGION, IMDS (on EC2), the SDK's
    /// chain (the shared profile). None of them: [`NoRegion`].
    pub async fn find(config: &TelemetryConfig) -> Result<Placement, NoRegion> {
        if cfg!(not(feature = "aws")) {
            let text = "[metrics] and [[logs]] ship to AWS";
            return Err(NoRegion(format!("{text}: {}\n", crate::WITHOUT_AWS)));
        }
        let facts = crate::host::facts::Facts::gather().await;
        let env_region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
            .iter()
            .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()));
        let region = config.region.clone().or_else(|| {
            facts
                .ec2
                .as_ref()
                .map(|e| e.region.clone())
                .filter(|_| !env_region)
        });
        // Without one of ours, the chain must find one (environment, profile).
        if region.is_none() && !env_region && Aws::connect(&AwsTarget::default()).await.is_err() {
            let what = if config.metrics.is_some() {
                "`[metrics]` ships to CloudWatch"
            } else {
                "`[[logs]]` ships to CloudWatch Logs"
            };
            let message = format!("{what}, but no AWS region was found");
            let help = "set `region = \"eu-west-1\"` at the top of the config, or AWS_REGION in \
                        bosund's environment (on EC2 the region comes from IMDS)";
            let text = match &config.origin {
                Some(o) => o.diagnostic(&message, help).render(false),
                None => format!("{message}\n  help: {help}\n"),
            };
            return Err(NoRegion(text));
        }
        Ok(Placement {
            region,
            instance_id: facts.ec2.map(|e| e.instance_id),
            hostname: facts.hostname,
        })
    }
}

/// The running telemetry thread.
#[derive(Debug)]
pub struct Telemetry {
    stop: watch::Sender<Option<Instant>>,
    thread: std::thread::JoinHandle<()>,
}

impl Telemetry {
    /// Starts shipping on a new thread, where [`Placement::find`] said. Fails only when the
    /// thread cannot be made; AWS and journal problems are logged by the thread and retried.
    pub fn start(
        config: TelemetryConfig,
        placement: Placement,
        state_dir: PathBuf,
    ) -> anyhow::Result<Telemetry> {
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
                if let Err(e) = local.block_on(&rt, run(config, placement, state_dir, stop_rx)) {
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

/// Without the `aws` feature nothing ships ([`Placement::find`] refuses a config that asks).
#[cfg(not(feature = "aws"))]
async fn run(
    _config: TelemetryConfig,
    _placement: Placement,
    _state_dir: PathBuf,
    _stop: watch::Receiver<Option<Instant>>,
) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(feature = "aws")]
async fn run(
    config: TelemetryConfig,
    placement: Placement,
    state_dir: PathBuf,
    stop: watch::Receiver<Option<Instant>>,
) -> anyhow::Result<()> {
    if config.is_empty() {
        return Ok(());
    }
    let journal = Rc::new(RefCell::new(
        Journal::open(&state_dir).context("opening the journal for telemetry")?,
    ));
    let aws = Aws::connect(&AwsTarget {
        region: placement.region.clone(),
        endpoint_url: None,
    })
    .await
    .context("telemetry: loading the AWS configuration")?;
    let ident_for = |over: &Option<String>| logs::Identity {
        instance_id: over
            .clone()
            .or_else(|| placement.instance_id.clone())
            .unwrap_or_else(|| placement.hostname.clone()),
        hostname: placement.hostname.clone(),
    };
    let mut tasks = Vec::new();
    if let Some(m) = config.metrics.clone() {
        let id = ident_for(&m.instance_id).instance_id;
        tracing::info!(namespace = %m.namespace, interval = ?m.interval, instance_id = %id, "shipping host metrics");
        // Sampler and sender are separate tasks: a blocked PutMetricData costs no sample.
        let taken = Rc::new(tokio::sync::Notify::new());
        tasks.push(tokio::task::spawn_local(metrics::sample(
            m.clone(),
            journal.clone(),
            taken.clone(),
            stop.clone(),
        )));
        tasks.push(tokio::task::spawn_local(metrics::send(
            m,
            id,
            journal.clone(),
            aws.cloudwatch(),
            taken,
            stop.clone(),
        )));
    }
    let budget =
        (LOG_BUFFER_BUDGET / config.logs.len().max(1)).max(2 * logs::batch::MAX_BATCH_BYTES);
    for source in config.logs {
        let ident = ident_for(&source.instance_id);
        let sink = sinks::cloudwatch_logs::CloudWatchLogs::new(
            aws.cloudwatch_logs(),
            source.log_group.clone(),
            source.retention_days,
        );
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

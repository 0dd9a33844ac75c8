//! Host metrics → CloudWatch (PutMetricData), kept on disk until accepted.
//!
//! Every interval a sample is taken ([`collect`]) and written to the journal's backlog first;
//! the sender then ships the backlog oldest first, each point with its original timestamp, and
//! deletes what CloudWatch accepted. Through an outage samples pile up (bounded by age,
//! default 24 h) and are back-filled in order when CloudWatch answers again; a crash loses
//! nothing already sampled.

pub mod collect;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::journal::Journal;
use crate::telemetry::config::MetricsConfig;
use crate::telemetry::logs::Stop;
use crate::telemetry::sinks::{
    self,
    cloudwatch::{self, TimedPoint},
};
use crate::telemetry::stats;

/// One figure of a sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Metric name (`mem_used_percent`).
    #[serde(rename = "n")]
    pub name: String,
    /// CloudWatch unit (`Percent`, `Bytes`, `Count`, `None`).
    #[serde(rename = "u")]
    pub unit: String,
    /// The value.
    #[serde(rename = "v")]
    pub value: f64,
    /// Dimensions besides InstanceId and the configured ones (`path`, `interface`, ...).
    #[serde(rename = "d", default)]
    pub dims: Vec<(String, String)>,
}

/// Samples read from the backlog per send round (each ~100 points: at most ~10 calls).
const SAMPLES_PER_ROUND: usize = 10;

/// Runs the metrics loop until stopped: sample, keep, ship, back-fill.
pub async fn run(
    cfg: MetricsConfig,
    instance_id: String,
    journal: Rc<RefCell<Journal>>,
    client: aws_sdk_cloudwatch::Client,
    mut stop: Stop,
) {
    let mut collector = collect::Collector::new(cfg.processes.clone());
    let mut dims = vec![("InstanceId".to_string(), instance_id)];
    dims.extend(cfg.dimensions.iter().cloned());
    let high_res = cfg.interval < Duration::from_secs(60);
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut delays = sinks::backoff();
    let mut retry_at: Option<Instant> = None;
    // Prime the counters so the first stored sample already has CPU and rates.
    collector.sample();
    loop {
        let stopping = stop.borrow().is_some();
        if stopping {
            // One last attempt at the backlog; what is left is sent after the restart.
            let deadline = stop.borrow().unwrap_or_else(Instant::now);
            let mut stop2 = stop.clone();
            let last = ship(&cfg, &dims, high_res, &journal, &client, &mut stop2);
            if let Ok(Err(e)) = tokio::time::timeout_at(deadline.into(), last).await {
                tracing::warn!("{e}; the backlog is sent after the restart");
            }
            break;
        }
        let wait_retry = async {
            match retry_at {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ticker.tick() => {
                let points = collector.sample();
                let ts = chrono::Utc::now().timestamp_millis();
                stats::set_host(points.clone());
                match serde_json::to_string(&points) {
                    Ok(json) => {
                        if let Err(e) = journal.borrow().push_metric_sample(ts, &json) {
                            stats::add(&stats::STATS.metric_errors, 1);
                            tracing::error!("keeping a metric sample in the journal: {e:#}");
                        }
                    }
                    Err(e) => tracing::error!("encoding a metric sample: {e}"),
                }
                if retry_at.is_some_and(|t| Instant::now() < t) {
                    continue;
                }
            }
            _ = wait_retry => {}
            changed = stop.changed() => {
                if changed.is_err() { break; }
                continue;
            }
        }
        // Bounded, so a hung endpoint delays the next sample by at most this; what was not
        // accepted stays in the backlog.
        let budget = cfg.interval.max(Duration::from_secs(5));
        let shipped = tokio::time::timeout(
            budget,
            ship(&cfg, &dims, high_res, &journal, &client, &mut stop),
        )
        .await
        .unwrap_or_else(|_| Err(format!("PutMetricData took longer than {budget:?}")));
        match shipped {
            Ok(()) => {
                retry_at = None;
                delays = sinks::backoff();
            }
            Err(e) => {
                stats::add(&stats::STATS.metric_errors, 1);
                let d = delays.next().unwrap_or(Duration::from_secs(30));
                tracing::warn!("{e}; points are kept and sent in order, retrying in {d:?}");
                retry_at = Some(Instant::now() + d);
            }
        }
    }
}

/// Sends the backlog, oldest first, until it is empty or a call fails.
async fn ship(
    cfg: &MetricsConfig,
    dims: &[(String, String)],
    high_res: bool,
    journal: &Rc<RefCell<Journal>>,
    client: &aws_sdk_cloudwatch::Client,
    stop: &mut Stop,
) -> Result<(), String> {
    loop {
        let cutoff = chrono::Utc::now().timestamp_millis() - cfg.backlog.as_millis() as i64;
        let samples = {
            let j = journal.borrow();
            match j.drop_metric_samples(i64::MIN, cutoff) {
                Ok(0) => {}
                Ok(n) => {
                    stats::add(&stats::STATS.metric_samples_dropped, n as u64);
                    tracing::warn!(
                        samples = n,
                        "metric samples older than the backlog bound were dropped unsent"
                    );
                }
                Err(e) => tracing::error!("pruning the metric backlog: {e:#}"),
            }
            let s = j
                .metric_samples(SAMPLES_PER_ROUND)
                .map_err(|e| format!("reading the metric backlog: {e:#}"))?;
            stats::STATS.metric_backlog.store(
                j.metric_backlog_len().unwrap_or(0),
                std::sync::atomic::Ordering::Relaxed,
            );
            s
        };
        let Some(last) = samples.last().map(|s| s.id) else {
            return Ok(());
        };
        let mut points = Vec::new();
        for s in &samples {
            match serde_json::from_str::<Vec<Point>>(&s.points) {
                Ok(ps) => points.extend(ps.into_iter().map(|point| TimedPoint {
                    ts_ms: s.ts_ms,
                    point,
                })),
                Err(e) => {
                    tracing::error!(sample = s.id, "an unreadable metric sample is skipped: {e}")
                }
            }
        }
        for range in cloudwatch::chunks(&points, dims) {
            cloudwatch::put(
                client,
                &cfg.namespace,
                dims,
                &points[range.clone()],
                high_res,
            )
            .await?;
            stats::add(&stats::STATS.metric_points_shipped, range.len() as u64);
        }
        // Accepted: forget them. (A crash between the call and this line sends them twice;
        // CloudWatch keeps both values of the same timestamp, which only matters for sums.)
        journal
            .borrow()
            .drop_metric_samples(last, i64::MIN)
            .map_err(|e| format!("removing sent metric samples: {e:#}"))?;
        if stop.borrow().is_some_and(|d| Instant::now() >= d) {
            return Ok(());
        }
    }
}

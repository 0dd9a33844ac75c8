//! Host metrics → CloudWatch (PutMetricData), kept on disk until accepted.
//!
//! Two tasks share the journal's backlog and nothing else:
//! - [`sample`] takes a sample ([`collect`]) on every tick of its own timer and writes it to
//!   the backlog with the time it was taken. It never waits for CloudWatch, so an outage or a
//!   slow endpoint costs no tick.
//! - [`send`] ships the backlog oldest first, each point with its original timestamp, and
//!   deletes what CloudWatch accepted; on failure it retries with backoff while the sampler
//!   goes on filling the backlog.
//!
//! Through an outage samples pile up (bounded by age, default 24 h) and are back-filled in order
//! when CloudWatch answers again; a crash loses nothing already sampled.

pub(crate) mod collect;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::journal::Journal;
use crate::telemetry::config::MetricsConfig;
use crate::telemetry::point::Point;
use crate::telemetry::sinks::{
    self,
    cloudwatch::{self, TimedPoint},
};
use crate::telemetry::stats;
use crate::telemetry::stop::Stop;

/// Samples read from the backlog per send round (each ~100 points: at most ~10 calls).
const SAMPLES_PER_ROUND: usize = 10;

/// The sampler: one sample per tick into the journal's backlog until stopped; `taken` is
/// notified after each, to wake the sender.
///
/// The first sample is taken one interval after the start, so CPU shares and rates cover a
/// whole interval. Ticks stay on the grid set at the start (a tick delayed past the next one
/// is skipped rather than shifting the ones after it).
pub(crate) async fn sample(
    cfg: MetricsConfig,
    journal: Rc<RefCell<Journal>>,
    taken: Rc<Notify>,
    mut stop: Stop,
) {
    let mut collector = collect::Collector::new(cfg.processes.clone());
    // Prime the counters so the first stored sample already has CPU and rates.
    collector.sample();
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + cfg.interval, cfg.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        if stop.borrow().is_some() {
            return;
        }
        tokio::select! {
            _ = ticker.tick() => {}
            changed = stop.changed() => {
                if changed.is_err() { return; }
                continue;
            }
        }
        let ts = chrono::Utc::now().timestamp_millis();
        let points = collector.sample();
        let mut stored = points.clone();
        stored.extend(drift_points(&journal.borrow()));
        match serde_json::to_string(&stored) {
            Ok(json) => match journal.borrow().push_metric_sample(ts, &json) {
                Ok(()) => {
                    stats::STATS
                        .metric_backlog
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => {
                    stats::add(&stats::STATS.metric_errors, 1);
                    tracing::error!("keeping a metric sample in the journal: {e:#}");
                }
            },
            Err(e) => tracing::error!("encoding a metric sample: {e}"),
        }
        stats::set_host(points);
        taken.notify_one();
    }
}

/// `DriftSteps` from the journal's drift report: one point per playbook (dimension
/// `playbook`) and their sum without it (what the stack's alarm watches: an alarm names its
/// dimensions exactly, and the stack does not know the playbooks). None before any scheduled
/// check ran.
fn drift_points(journal: &Journal) -> Vec<Point> {
    let rows = match journal.drift() {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!("reading drift from the journal: {e:#}");
            return Vec::new();
        }
    };
    if rows.is_empty() {
        return Vec::new();
    }
    let point = |value: usize, dims: Vec<(String, String)>| Point {
        name: "DriftSteps".into(),
        unit: "Count".into(),
        value: value as f64,
        dims,
    };
    let total = rows.iter().map(|r| r.steps.len()).sum();
    let mut points: Vec<Point> = rows
        .iter()
        .map(|r| point(r.steps.len(), vec![("playbook".into(), r.playbook.clone())]))
        .collect();
    points.push(point(total, Vec::new()));
    points
}

/// The sender: ships the backlog whenever a sample was taken, retrying failures with backoff
/// and jitter, until stopped; then one last attempt within the stop deadline (what is left is
/// sent after the restart).
pub(crate) async fn send(
    cfg: MetricsConfig,
    instance_id: String,
    journal: Rc<RefCell<Journal>>,
    client: aws_sdk_cloudwatch::Client,
    taken: Rc<Notify>,
    mut stop: Stop,
) {
    let mut dims = vec![("InstanceId".to_string(), instance_id)];
    dims.extend(cfg.dimensions.iter().cloned());
    let high_res = cfg.interval < Duration::from_secs(60);
    let mut delays = sinks::backoff();
    // Samples left by a previous run are sent at once.
    let mut wait: Option<Duration> = Some(Duration::ZERO);
    loop {
        if stop.borrow().is_some() {
            break;
        }
        let woken = async {
            match wait {
                Some(d) => tokio::time::sleep(d).await,
                None => taken.notified().await,
            }
        };
        tokio::select! {
            _ = woken => {}
            changed = stop.changed() => {
                if changed.is_err() { return; }
                continue;
            }
        }
        // Each call is bounded by the client's timeouts (`aws::TELEMETRY_CALL_TIMEOUT`); a stop
        // request ends the round at once, and what was not accepted stays in the backlog.
        let mut round_stop = stop.clone();
        let shipped = tokio::select! {
            r = ship(&cfg, &dims, high_res, &journal, &client, &mut round_stop) => r,
            changed = stop.changed() => {
                if changed.is_err() { return; }
                continue;
            }
        };
        match shipped {
            Ok(()) => {
                delays = sinks::backoff();
                wait = None;
            }
            Err(e) => {
                stats::add(&stats::STATS.metric_errors, 1);
                let d = delays.next().unwrap_or(Duration::from_secs(30));
                tracing::warn!("{e}; points are kept and sent in order, retrying in {d:?}");
                wait = Some(d);
            }
        }
    }
    let deadline = stop.borrow().unwrap_or_else(Instant::now);
    let last = ship(&cfg, &dims, high_res, &journal, &client, &mut stop);
    if let Ok(Err(e)) = tokio::time::timeout_at(deadline.into(), last).await {
        tracing::warn!("{e}; the backlog is sent after the restart");
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

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_model::event::{RunEvent, StepReport, StepStatus, Summary};

    #[test]
    fn drift_is_sent_per_playbook_and_summed() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        assert!(drift_points(&j).is_empty(), "no check ran: no points");
        for (id, playbook, drifted) in [("r1", "site", 2), ("r2", "edge", 1)] {
            j.record(&RunEvent::RunStarted {
                run_id: id.into(),
                playbook: playbook.into(),
                check: true,
                started_at: "2026-01-01T00:00:00Z".into(),
                schedule: Some(format!("{playbook}-drift")),
            })
            .unwrap();
            for i in 0..drifted {
                j.record(&RunEvent::StepFinished(StepReport {
                    index: i,
                    name: format!("step {i}"),
                    action: "file".into(),
                    handler: false,
                    status: StepStatus::Changed,
                    duration_ms: 1.0,
                    attempts: 1,
                    message: None,
                    diff: None,
                    output: None,
                }))
                .unwrap();
            }
            j.record(&RunEvent::Summary(Summary {
                changed: drifted,
                ..Summary::default()
            }))
            .unwrap();
        }
        let points = drift_points(&j);
        let got: Vec<(f64, Vec<(String, String)>)> =
            points.iter().map(|p| (p.value, p.dims.clone())).collect();
        assert!(
            points
                .iter()
                .all(|p| p.name == "DriftSteps" && p.unit == "Count")
        );
        assert_eq!(
            got,
            vec![
                (1.0, vec![("playbook".to_string(), "edge".to_string())]),
                (2.0, vec![("playbook".to_string(), "site".to_string())]),
                (3.0, vec![]),
            ]
        );
    }
}

//! The agent's own telemetry counters and the latest host sample, for `GET /metrics`.
//!
//! Process-wide (a static) so the API renders them without holding the telemetry's handle,
//! and counters keep counting across a SIGHUP restart of the telemetry tasks.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::point::Point;

/// Counters (monotonic) and gauges of log and metric shipping.
#[derive(Debug)]
pub(crate) struct Stats {
    /// Log events accepted by CloudWatch Logs.
    pub log_events_shipped: AtomicU64,
    /// Their bytes (message + 26 per event).
    pub log_bytes_shipped: AtomicU64,
    /// Failed PutLogEvents calls (each retried).
    pub log_errors: AtomicU64,
    /// Events refused as too old.
    pub log_rejected_too_old: AtomicU64,
    /// Events refused as too new.
    pub log_rejected_too_new: AtomicU64,
    /// Events refused as past the retention.
    pub log_rejected_expired: AtomicU64,
    /// Events too large, split into parts.
    pub log_events_split: AtomicU64,
    /// Metric points accepted by CloudWatch.
    pub metric_points_shipped: AtomicU64,
    /// Failed PutMetricData calls (each retried).
    pub metric_errors: AtomicU64,
    /// Samples dropped because they were older than the backlog bound.
    pub metric_samples_dropped: AtomicU64,
    /// Samples waiting on disk.
    pub metric_backlog: AtomicU64,
    /// Per log source: bytes queued and the age of the oldest queued event.
    sources: Mutex<BTreeMap<String, (u64, Duration)>>,
    /// The latest host sample.
    host: Mutex<Vec<Point>>,
}

/// The process's counters.
pub(crate) static STATS: Stats = Stats {
    log_events_shipped: AtomicU64::new(0),
    log_bytes_shipped: AtomicU64::new(0),
    log_errors: AtomicU64::new(0),
    log_rejected_too_old: AtomicU64::new(0),
    log_rejected_too_new: AtomicU64::new(0),
    log_rejected_expired: AtomicU64::new(0),
    log_events_split: AtomicU64::new(0),
    metric_points_shipped: AtomicU64::new(0),
    metric_errors: AtomicU64::new(0),
    metric_samples_dropped: AtomicU64::new(0),
    metric_backlog: AtomicU64::new(0),
    sources: Mutex::new(BTreeMap::new()),
    host: Mutex::new(Vec::new()),
};

/// Adds to a counter.
pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Sets a log source's queue gauges.
pub(crate) fn set_source(id: &str, queued_bytes: u64, lag: Duration) {
    let mut s = STATS.sources.lock().unwrap_or_else(|e| e.into_inner());
    s.insert(id.to_string(), (queued_bytes, lag));
}

/// Replaces the latest host sample.
pub(crate) fn set_host(points: Vec<Point>) {
    *STATS.host.lock().unwrap_or_else(|e| e.into_inner()) = points;
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Appends the telemetry figures in Prometheus text format.
pub fn render_prometheus(out: &mut String) {
    let s = &STATS;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let counters: [(&str, &str, u64); 10] = [
        (
            "bosun_log_events_shipped_total",
            "Log events accepted by CloudWatch Logs.",
            get(&s.log_events_shipped),
        ),
        (
            "bosun_log_bytes_shipped_total",
            "Bytes of log events accepted (message + 26 per event).",
            get(&s.log_bytes_shipped),
        ),
        (
            "bosun_log_errors_total",
            "Failed log deliveries (each retried).",
            get(&s.log_errors),
        ),
        (
            "bosun_log_events_split_total",
            "Log events over the size limit, split into parts.",
            get(&s.log_events_split),
        ),
        (
            "bosun_log_rejected_too_old_total",
            "Log events refused as too old.",
            get(&s.log_rejected_too_old),
        ),
        (
            "bosun_log_rejected_too_new_total",
            "Log events refused as too far in the future.",
            get(&s.log_rejected_too_new),
        ),
        (
            "bosun_log_rejected_expired_total",
            "Log events refused as past the retention.",
            get(&s.log_rejected_expired),
        ),
        (
            "bosun_metric_points_shipped_total",
            "Metric points accepted by CloudWatch.",
            get(&s.metric_points_shipped),
        ),
        (
            "bosun_metric_errors_total",
            "Failed PutMetricData calls (each retried).",
            get(&s.metric_errors),
        ),
        (
            "bosun_metric_samples_dropped_total",
            "Metric samples dropped past the backlog bound.",
            get(&s.metric_samples_dropped),
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP bosun_metric_backlog_samples Metric samples kept on disk, not yet accepted.\n# TYPE bosun_metric_backlog_samples gauge\nbosun_metric_backlog_samples {}",
        get(&s.metric_backlog)
    );
    let sources = s.sources.lock().unwrap_or_else(|e| e.into_inner()).clone();
    out.push_str("# HELP bosun_log_queue_bytes Log bytes read and waiting to be sent, per source.\n# TYPE bosun_log_queue_bytes gauge\n");
    for (id, (bytes, _)) in &sources {
        let _ = writeln!(
            out,
            "bosun_log_queue_bytes{{source=\"{}\"}} {bytes}",
            escape(id)
        );
    }
    out.push_str("# HELP bosun_log_lag_seconds Age of the oldest log event waiting to be sent, per source.\n# TYPE bosun_log_lag_seconds gauge\n");
    for (id, (_, lag)) in &sources {
        let _ = writeln!(
            out,
            "bosun_log_lag_seconds{{source=\"{}\"}} {:.3}",
            escape(id),
            lag.as_secs_f64()
        );
    }
    let mut host = s.host.lock().unwrap_or_else(|e| e.into_inner()).clone();
    host.sort_by(|a, b| a.name.cmp(&b.name));
    let mut last = "";
    for p in &host {
        if p.name != last {
            let _ = writeln!(out, "# TYPE bosun_host_{} gauge", p.name);
            last = &p.name;
        }
        let labels: Vec<String> = p
            .dims
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let labels = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", labels.join(","))
        };
        let _ = writeln!(out, "bosun_host_{}{labels} {}", p.name, p.value);
    }
}

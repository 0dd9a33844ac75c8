//! Log sources → CloudWatch Logs. One task per `[[logs]]` entry; each reads, batches and sends
//! in turn, so a slow or absent CloudWatch stops the reading (the files are the buffer) and
//! memory stays bounded by the source's share of the budget.
//!
//! ```text
//! logs
//!   event      LogEvent, multi-line assembly, timestamps, filters, oversize split (pure)
//!   batch      LogBatch within PutLogEvents' limits, and what it acknowledges (pure)
//!   cri        k3s/kubelet container log lines (pure)
//!   tail       reading one file: identity, rotation, truncation; globs
//!   ship       Shipper: per-stream queues → batches → a LogSink with backoff → acks
//!   file       the file and CRI source: discover, tail, decode, ship, checkpoint
//!   journald   journalctl -o json entries, and the source that runs journalctl
//! ```
//!
//! Each uses only those above it; the two sources (`file`, `journald`) are generic over the
//! [`ship::LogSink`] they send to, and telemetry's `run` gives them CloudWatch Logs.
//!
//! Invariant: a position (file offset, journald cursor) is written to the journal only after
//! the sink accepted every event before it. After a crash the source resumes there: lines
//! are sent again at most once per batch in flight, never lost.

pub(crate) mod batch;
pub(crate) mod cri;
pub(crate) mod event;
pub(crate) mod file;
pub(crate) mod journald;
pub(crate) mod ship;
pub(crate) mod tail;

use std::time::Duration;

pub(crate) use file::run_files;
pub(crate) use journald::run_journald;

/// How often sources look at their input when idle.
pub(crate) const POLL: Duration = Duration::from_millis(250);

/// Who this host is, for stream names.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    /// EC2 instance id (or the configured one, or the host name).
    pub instance_id: String,
    /// Host name.
    pub hostname: String,
}

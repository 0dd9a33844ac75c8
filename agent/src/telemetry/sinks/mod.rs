//! Sinks: one per AWS API. Each turns a batch into one call and says whether it was accepted;
//! retrying (backoff with jitter) is the caller's, so a stop request can cut it short.
//!
//! Invariant: sinks know nothing of metrics or logs (they take plain points and
//! `(timestamp, message)` pairs), so `metrics` and `logs` depend on them, never the reverse.

pub(crate) mod cloudwatch;
pub(crate) mod cloudwatch_logs;

use std::time::Duration;

use backon::BackoffBuilder;

/// Backoff between attempts: exponential from 200 ms to 30 s, with jitter, never giving up
/// (delivery is retried until it succeeds or bosund stops; nothing is dropped on error).
pub(crate) fn backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
}

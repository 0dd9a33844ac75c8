//! The stop signal every telemetry task watches: `None` while running, `Some(deadline)` once
//! `Telemetry::stop` was called. A task that sees it sends what it has read until the
//! deadline, checkpoints, and returns; a closed channel (the handle is gone) stops it at once.

use std::time::{Duration, Instant};

use tokio::sync::watch;

/// The receiving end of the stop signal: `None` while running, `Some(deadline)` once stopping
/// (flush until then).
pub(crate) type Stop = watch::Receiver<Option<Instant>>;

/// Waits for `d` or a stop request, whichever comes first; returns at once when already
/// stopping. `false` when the stop channel is gone (stop now, without flushing).
pub(crate) async fn pause(d: Duration, stop: &mut Stop) -> bool {
    if stop.borrow().is_some() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        changed = stop.changed() => changed.is_ok(),
    }
}

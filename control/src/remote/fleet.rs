//! Running one job on many hosts: `--forks` hosts at once, `--serial` rolling batches,
//! `--max-fail` stopping new starts. The policy is pure (batches, the failure limit) and the
//! scheduler is generic over the per-host job, so both are tested without a network.
//!
//! The contract (documented in `bosun run --help` and ARCHITECTURE.md):
//! - Hosts run in the order given (inventory or `--limit` order, or `--host` order).
//! - `--serial N` (or `N%` of the hosts, rounded down, at least 1) cuts them into batches;
//!   a batch starts only when every host of the previous one has finished. Without it, all
//!   hosts are one batch.
//! - At most `--forks` hosts run at once, within a batch.
//! - A host *fails* when a step failed, bosund could not run, or it was unreachable.
//! - `--max-fail N` or `N%` (of all selected hosts, rounded down): once more hosts than that
//!   have failed, no new host starts (hosts already running finish); the rest are reported
//!   `not_started`. Without `--max-fail`, a batch in which every host failed stops the run
//!   (as Ansible does with `serial`), and otherwise every host runs.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Result, bail};
use serde::Serialize;
use tokio::sync::Semaphore;

/// A count or a percentage of the hosts (`5`, `20%`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// An absolute number.
    Count(usize),
    /// Percent of the hosts selected.
    Percent(u32),
}

impl Size {
    /// Parses `N` or `N%`.
    pub fn parse(s: &str) -> Result<Size> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            match p.trim().parse::<u32>() {
                Ok(p) if p <= 100 => Ok(Size::Percent(p)),
                _ => bail!("{s:?}: expected a percentage from 0% to 100%"),
            }
        } else {
            match s.parse::<usize>() {
                Ok(n) => Ok(Size::Count(n)),
                Err(_) => bail!("{s:?}: expected a number (5) or a percentage (20%)"),
            }
        }
    }

    /// The number this means out of `total`, rounded down.
    pub fn of(self, total: usize) -> usize {
        match self {
            Size::Count(n) => n,
            Size::Percent(p) => total * p as usize / 100,
        }
    }
}

/// `[start, end)` index ranges of the batches of `total` hosts.
pub fn batches(total: usize, serial: Option<Size>) -> Vec<std::ops::Range<usize>> {
    let size = serial.map_or(total, |s| s.of(total)).max(1);
    (0..total)
        .step_by(size)
        .map(|start| start..(start + size).min(total))
        .collect()
}

/// How a host's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostStatus {
    /// Every step ok (or skipped).
    Ok,
    /// Some step changed the host.
    Changed,
    /// A step failed, or bosund could not be installed or run.
    Failed,
    /// No SSH session: connection, host key or authentication failed.
    Unreachable,
    /// Never started: `--max-fail` (or a fully failed batch) stopped the run first.
    NotStarted,
    /// Interrupted (Ctrl-C): its run was cancelled, or it never started because of that.
    Cancelled,
}

impl HostStatus {
    /// Counts towards `--max-fail`.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            HostStatus::Failed | HostStatus::Unreachable | HostStatus::Cancelled
        )
    }

    /// The word shown.
    pub fn as_str(self) -> &'static str {
        match self {
            HostStatus::Ok => "ok",
            HostStatus::Changed => "changed",
            HostStatus::Failed => "failed",
            HostStatus::Unreachable => "unreachable",
            HostStatus::NotStarted => "not started",
            HostStatus::Cancelled => "cancelled",
        }
    }
}

/// Where a host was in the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Slot {
    /// Its position in the host list.
    pub index: usize,
    /// Its batch (0-based).
    pub batch: usize,
    /// The order it started in across the run (0-based).
    pub started: usize,
}

/// `--forks`, `--serial`, `--max-fail`.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Hosts at once (at least 1).
    pub forks: usize,
    /// Batch size.
    pub serial: Option<Size>,
    /// Failures tolerated.
    pub max_fail: Option<Size>,
}

/// Runs `job` on hosts `0..total` under `policy`. `job` gets the host's [`Slot`] and returns
/// its status; `not_started` is called for each host that never starts. Returns each host's
/// status, in host order.
pub async fn schedule<J, F>(
    total: usize,
    policy: Policy,
    job: J,
    mut not_started: impl FnMut(usize, usize),
) -> Vec<HostStatus>
where
    J: Fn(Slot) -> F,
    F: Future<Output = HostStatus> + Send + 'static,
{
    let limit = policy.max_fail.map(|m| m.of(total));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut statuses = vec![HostStatus::NotStarted; total];
    let mut started = 0;
    let mut stop = false;
    let forks = Arc::new(Semaphore::new(policy.forks.max(1)));
    for (b, range) in batches(total, policy.serial).into_iter().enumerate() {
        let mut running = tokio::task::JoinSet::new();
        for index in range.clone() {
            // Wait for a free fork first: the hosts that finish meanwhile count.
            let permit = forks.clone().acquire_owned().await.expect("never closed");
            if stop || limit.is_some_and(|l| failed.load(Ordering::SeqCst) > l) {
                stop = true;
                not_started(index, b);
                continue;
            }
            let fut = job(Slot {
                index,
                batch: b,
                started,
            });
            started += 1;
            let failed = failed.clone();
            running.spawn(async move {
                let status = fut.await;
                if status.is_failure() {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
                drop(permit); // only after the failure is counted
                (index, status)
            });
        }
        let mut ran = 0;
        let mut batch_failed = 0;
        while let Some(done) = running.join_next().await {
            let (index, status) = done.expect("host jobs do not panic");
            statuses[index] = status;
            ran += 1;
            batch_failed += usize::from(status.is_failure());
        }
        if limit.is_some_and(|l| failed.load(Ordering::SeqCst) > l)
            || (limit.is_none() && policy.serial.is_some() && ran > 0 && batch_failed == ran)
        {
            stop = true;
        }
    }
    statuses
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn sizes_and_batches() {
        assert_eq!(Size::parse("5").unwrap(), Size::Count(5));
        assert_eq!(Size::parse("25%").unwrap(), Size::Percent(25));
        assert!(Size::parse("101%").is_err());
        assert!(Size::parse("x").is_err());
        assert_eq!(batches(20, Some(Size::Count(5))).len(), 4);
        assert_eq!(batches(7, Some(Size::Count(3))), vec![0..3, 3..6, 6..7]);
        assert_eq!(
            batches(10, Some(Size::Percent(30))),
            vec![0..3, 3..6, 6..9, 9..10]
        );
        // 10% of 5 hosts rounds down to 0: still one host per batch.
        assert_eq!(batches(5, Some(Size::Percent(10))).len(), 5);
        assert_eq!(batches(4, None), vec![0..4]);
        assert_eq!(Size::Percent(10).of(20), 2);
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Runs a schedule where the hosts in `failing` fail; returns statuses, slots started,
    /// not-started indexes, and the peak concurrency seen.
    fn simulate(
        total: usize,
        policy: Policy,
        failing: &'static [usize],
    ) -> (Vec<HostStatus>, Vec<Slot>, Vec<usize>, usize) {
        let slots = Arc::new(Mutex::new(Vec::new()));
        let live = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut skipped = Vec::new();
        let statuses = rt().block_on(schedule(
            total,
            policy,
            |slot| {
                slots.lock().unwrap().push(slot);
                let (live, peak) = (live.clone(), peak.clone());
                async move {
                    let now = live.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    live.fetch_sub(1, Ordering::SeqCst);
                    if failing.contains(&slot.index) {
                        HostStatus::Failed
                    } else {
                        HostStatus::Ok
                    }
                }
            },
            |i, _| skipped.push(i),
        ));
        let slots = slots.lock().unwrap().clone();
        (statuses, slots, skipped, peak.load(Ordering::SeqCst))
    }

    #[test]
    fn forks_bound_concurrency_within_a_batch() {
        let policy = Policy {
            forks: 3,
            serial: None,
            max_fail: None,
        };
        let (statuses, slots, skipped, peak) = simulate(10, policy, &[]);
        assert!(statuses.iter().all(|s| *s == HostStatus::Ok));
        assert_eq!(slots.len(), 10);
        assert!(skipped.is_empty());
        assert!((2..=3).contains(&peak), "peak {peak}");
    }

    #[test]
    fn max_fail_stops_new_batches_and_lets_the_running_one_finish() {
        let policy = Policy {
            forks: 10,
            serial: Some(Size::Count(5)),
            max_fail: Some(Size::Count(0)),
        };
        // Host 6 (second batch) fails: the second batch finishes, the third and fourth never start.
        let (statuses, slots, skipped, _) = simulate(20, policy, &[6]);
        assert_eq!(slots.len(), 10);
        assert_eq!(skipped, (10..20).collect::<Vec<_>>());
        assert_eq!(statuses[6], HostStatus::Failed);
        assert_eq!(statuses[9], HostStatus::Ok);
        assert_eq!(statuses[10], HostStatus::NotStarted);
        assert!(slots.iter().all(|s| s.batch == s.index / 5));
    }

    #[test]
    fn failures_within_the_limit_do_not_stop() {
        let policy = Policy {
            forks: 10,
            serial: Some(Size::Count(5)),
            max_fail: Some(Size::Percent(10)), // 2 of 20 tolerated
        };
        let (statuses, _, skipped, _) = simulate(20, policy, &[1, 12]);
        assert!(skipped.is_empty());
        assert_eq!(
            statuses
                .iter()
                .filter(|s| **s == HostStatus::Failed)
                .count(),
            2
        );
        // A third failure crosses the limit: batch 3 (hosts 15..20) never starts.
        let (_, _, skipped, _) = simulate(20, policy, &[1, 12, 13]);
        assert_eq!(skipped, (15..20).collect::<Vec<_>>());
    }

    #[test]
    fn with_forks_below_the_batch_size_the_limit_applies_within_the_batch() {
        let policy = Policy {
            forks: 1,
            serial: None,
            max_fail: Some(Size::Count(0)),
        };
        let (_, slots, skipped, _) = simulate(5, policy, &[1]);
        assert_eq!(slots.len(), 2);
        assert_eq!(skipped, vec![2, 3, 4]);
    }

    #[test]
    fn without_max_fail_a_fully_failed_batch_stops_the_run() {
        let policy = Policy {
            forks: 10,
            serial: Some(Size::Count(2)),
            max_fail: None,
        };
        let (_, _, skipped, _) = simulate(6, policy, &[0]);
        assert!(skipped.is_empty(), "one failure of two does not stop");
        let (_, _, skipped, _) = simulate(6, policy, &[2, 3]);
        assert_eq!(skipped, vec![4, 5]);
    }
}

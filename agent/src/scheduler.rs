//! When scheduled playbooks run: cron expressions with a jitter, a missed run caught up once,
//! never two runs of one schedule at once. Pure: the time comes from a [`Clock`], the state is
//! plain data (for the journal to keep), and nothing here starts a run.
//!
//! A schedule's *slots* are its cron times (UTC) plus a fixed offset in `[0, jitter)` derived
//! from its name, so a fleet of hosts with the same schedule name spreads out only if they use
//! different names, and one host's times are stable across restarts (they can be listed).
//!
//! Rules, for one schedule:
//! - a slot whose time has come is due, unless a run of this schedule is still going: then it
//!   waits, and runs once when that run finishes (no overlap, nothing lost);
//! - slots missed while the agent was down (or busy) collapse into one catch-up run, for the
//!   newest missed slot;
//! - a schedule seen for the first time has missed nothing: its first slot is the next one.
//!
//! [`crate::daemon::schedule`] drives this for `bosund run`: `[[schedule]]` entries from the
//! config ([`crate::config::schedule`]), the state in the journal, runs through the daemon's
//! queue.

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};

/// Where the time comes from; tests substitute a settable one.
pub trait Clock {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// One schedule: a cron expression, a jitter and the name the jitter derives from.
#[derive(Debug, Clone)]
pub struct Schedule {
    name: String,
    cron: croner::Cron,
    offset: Duration,
}

impl Schedule {
    /// Parses a five-field cron expression (`0 3 * * *`; optional seconds as a sixth, leading
    /// field) with a jitter (`15m`, `0s` for none). Errors say which part is wrong.
    pub fn new(name: &str, cron: &str, jitter: &str) -> Result<Schedule, String> {
        let jitter =
            parse_jitter(jitter).map_err(|e| format!("schedule {name}: jitter {jitter:?}: {e}"))?;
        Schedule::with_jitter(name, cron, jitter)
    }

    /// [`Schedule::new`] with the jitter already parsed.
    pub fn with_jitter(
        name: &str,
        cron: &str,
        jitter: std::time::Duration,
    ) -> Result<Schedule, String> {
        let parsed = parse_cron(cron)
            .map_err(|e| format!("schedule {name}: cron expression {cron:?}: {e}"))?;
        let offset = jitter_offset(name, jitter.as_secs());
        Ok(Schedule {
            name: name.to_string(),
            cron: parsed,
            offset: Duration::seconds(offset as i64),
        })
    }

    /// The schedule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Slots are cron times shifted by the offset: look for the cron time after t - offset.
        self.cron
            .find_next_occurrence(&(t - self.offset), false)
            .ok()
            .map(|c| c + self.offset)
    }

    /// The next `n` slots after `t` (for `bosund schedule list`).
    pub fn upcoming(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut at = t;
        while out.len() < n {
            match self.next_after(at) {
                Some(next) => {
                    out.push(next);
                    at = next;
                }
                None => break,
            }
        }
        out
    }

    /// The newest slot at or before `t` that is after `since`, if any.
    fn newest_slot_between(&self, since: DateTime<Utc>, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut newest = None;
        let mut at = since;
        while let Some(next) = self.next_after(at).filter(|n| *n <= t) {
            newest = Some(next);
            at = next;
        }
        newest
    }
}

/// Parses a cron expression as [`Schedule::new`] does; the error says what is wrong.
pub fn parse_cron(cron: &str) -> Result<croner::Cron, String> {
    croner::Cron::new(cron)
        .with_seconds_optional()
        .parse()
        .map_err(|e| e.to_string())
}

/// Parses a jitter (`"15m"`, `"0s"`) as [`Schedule::new`] does.
pub fn parse_jitter(jitter: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(jitter).map_err(|e| format!("{e} (e.g. \"15m\")"))
}

/// `[0, jitter_secs)` seconds, the same for the same name on every start.
fn jitter_offset(name: &str, jitter_secs: u64) -> u64 {
    if jitter_secs == 0 {
        return 0;
    }
    let digest = Sha256::digest(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % jitter_secs
}

/// What the journal keeps per schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScheduleState {
    /// The slot the last run was started for; `None` before the first decision.
    pub last_slot: Option<DateTime<Utc>>,
    /// When the schedule was first seen, or its times last changed (no catch-up for slots
    /// before it).
    pub since: Option<DateTime<Utc>>,
    /// A run of this schedule is going on.
    pub running: bool,
}

/// What to do about one schedule now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start a run for this slot (possibly a catch-up of missed slots).
    Run {
        /// The slot.
        slot: DateTime<Utc>,
    },
    /// Nothing until then.
    Wait {
        /// The next slot.
        until: DateTime<Utc>,
    },
    /// A slot is due but the previous run is still going; ask again when it finishes.
    Busy,
    /// The expression has no future times.
    Never,
}

/// Decides for `schedule` at `now`, updating `state` when a run is to start (it is then
/// `running` until [`finished`] is called).
pub fn decide(schedule: &Schedule, state: &mut ScheduleState, now: DateTime<Utc>) -> Decision {
    let since = *state.since.get_or_insert(now);
    // Normally the last slot is after `since`; a schedule whose times were changed gets a new
    // `since`, so slots of the new expression before the change are not caught up.
    let after = state.last_slot.map_or(since, |last| last.max(since));
    match schedule.newest_slot_between(after, now) {
        Some(_) if state.running => Decision::Busy,
        Some(slot) => {
            state.last_slot = Some(slot);
            state.running = true;
            Decision::Run { slot }
        }
        None => match schedule.next_after(after.max(now)) {
            Some(until) => Decision::Wait { until },
            None => Decision::Never,
        },
    }
}

/// Records that the run started by [`decide`] ended (however it ended).
pub fn finished(state: &mut ScheduleState) {
    state.running = false;
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::cell::Cell;

    /// A clock the test moves.
    struct TestClock(Cell<DateTime<Utc>>);

    impl Clock for TestClock {
        fn now(&self) -> DateTime<Utc> {
            self.0.get()
        }
    }

    impl TestClock {
        fn set(&self, t: DateTime<Utc>) {
            self.0.set(t);
        }
    }

    fn at(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, d, h, m, 0).unwrap()
    }

    #[test]
    fn jitter_is_stable_per_name_and_within_bounds() {
        let a = Schedule::new("backup-rds", "0 3 * * *", "15m").unwrap();
        let again = Schedule::new("backup-rds", "0 3 * * *", "15m").unwrap();
        assert_eq!(a.offset, again.offset);
        assert!(a.offset >= Duration::zero() && a.offset < Duration::minutes(15));
        let offsets: std::collections::HashSet<i64> = (0..20)
            .map(|i| {
                Schedule::new(&format!("s{i}"), "0 3 * * *", "15m")
                    .unwrap()
                    .offset
                    .num_seconds()
            })
            .collect();
        assert!(offsets.len() > 10, "names do not spread: {offsets:?}");
        let none = Schedule::new("x", "0 3 * * *", "0s").unwrap();
        assert_eq!(
            none.upcoming(at(1, 0, 0), 2),
            vec![at(1, 3, 0), at(2, 3, 0)]
        );
    }

    #[test]
    fn upcoming_slots_are_cron_times_plus_the_offset() {
        let s = Schedule::new("backup-rds", "0 3 * * *", "15m").unwrap();
        let next = s.upcoming(at(1, 12, 0), 3);
        assert_eq!(
            next,
            vec![
                at(2, 3, 0) + s.offset,
                at(3, 3, 0) + s.offset,
                at(4, 3, 0) + s.offset
            ]
        );
    }

    #[test]
    fn bad_expressions_are_named() {
        let e = Schedule::new("b", "0 25 * * *", "1m").unwrap_err();
        assert!(
            e.contains("schedule b: cron expression \"0 25 * * *\""),
            "{e}"
        );
        let e = Schedule::new("b", "0 3 * * *", "soon").unwrap_err();
        assert!(e.contains("jitter \"soon\""), "{e}");
    }

    #[test]
    fn a_new_schedule_waits_for_its_next_slot_then_runs_it() {
        let s = Schedule::new("n", "0 3 * * *", "0s").unwrap();
        let clock = TestClock(Cell::new(at(1, 12, 0)));
        let mut st = ScheduleState::default();
        assert_eq!(
            decide(&s, &mut st, clock.now()),
            Decision::Wait { until: at(2, 3, 0) }
        );
        clock.set(at(2, 3, 0));
        assert_eq!(
            decide(&s, &mut st, clock.now()),
            Decision::Run { slot: at(2, 3, 0) }
        );
        finished(&mut st);
        assert_eq!(
            decide(&s, &mut st, clock.now()),
            Decision::Wait { until: at(3, 3, 0) }
        );
    }

    #[test]
    fn missed_runs_are_caught_up_once_for_the_newest_slot() {
        let s = Schedule::new("n", "0 3 * * *", "0s").unwrap();
        let mut st = ScheduleState {
            last_slot: Some(at(1, 3, 0)),
            since: Some(at(1, 0, 0)),
            running: false,
        };
        // Down from the 1st to the 5th at noon: slots of the 2nd..5th were missed.
        let now = at(5, 12, 0);
        assert_eq!(
            decide(&s, &mut st, now),
            Decision::Run { slot: at(5, 3, 0) }
        );
        finished(&mut st);
        assert_eq!(
            decide(&s, &mut st, now),
            Decision::Wait { until: at(6, 3, 0) }
        );
    }

    #[test]
    fn a_slot_during_a_run_waits_for_it_and_runs_once_after() {
        let s = Schedule::new("n", "*/10 * * * *", "0s").unwrap();
        let clock = TestClock(Cell::new(at(1, 0, 0)));
        let mut st = ScheduleState::default();
        decide(&s, &mut st, clock.now());
        clock.set(at(1, 0, 10));
        assert_eq!(
            decide(&s, &mut st, clock.now()),
            Decision::Run { slot: at(1, 0, 10) }
        );
        // The run takes 35 minutes: three slots pass, none starts a second run.
        for m in [20, 30, 40] {
            clock.set(at(1, 0, m));
            assert_eq!(decide(&s, &mut st, clock.now()), Decision::Busy);
        }
        clock.set(at(1, 0, 45));
        finished(&mut st);
        assert_eq!(
            decide(&s, &mut st, clock.now()),
            Decision::Run { slot: at(1, 0, 40) }
        );
        // Running again, but no slot is due: just the next slot.
        assert_eq!(
            decide(&s, &mut st, clock.now()),
            Decision::Wait {
                until: at(1, 0, 50)
            }
        );
        finished(&mut st);
        assert_eq!(
            decide(&s, &mut st, clock.now()),
            Decision::Wait {
                until: at(1, 0, 50)
            }
        );
    }

    #[test]
    fn changed_times_catch_up_nothing_from_before_the_change() {
        // Daily at 03:00 until noon on the 1st, then hourly: the hours between 03:00 and noon
        // were never slots of the schedule as it is now.
        let hourly = Schedule::new("n", "0 * * * *", "0s").unwrap();
        let mut st = ScheduleState {
            last_slot: Some(at(1, 3, 0)),
            since: Some(at(1, 12, 30)),
            running: false,
        };
        assert_eq!(
            decide(&hourly, &mut st, at(1, 12, 30)),
            Decision::Wait {
                until: at(1, 13, 0)
            }
        );
        assert_eq!(
            decide(&hourly, &mut st, at(1, 13, 0)),
            Decision::Run { slot: at(1, 13, 0) }
        );
    }
}

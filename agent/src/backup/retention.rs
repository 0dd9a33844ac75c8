//! Retention: which backups a policy keeps. Pure: no I/O, no clock. The policy itself
//! ([`Policy`]) is the model's: `backup_prune`'s arguments are checked with it.
//!
//! The rule, over backups ordered newest first (ties broken by id, larger first):
//! - `keep_last` N: the N newest;
//! - `daily` D: the newest backup of each of the D newest days (UTC) that have a backup;
//! - `weekly` W: likewise for ISO weeks; `monthly` M: for calendar months;
//! - always the newest *verified* backup, whatever the counts say.
//!
//! A backup is kept when any rule keeps it; the rest are deleted. Planning again over the kept
//! set keeps all of it (every rule picks the same backups from a set that holds its picks), so
//! a second prune deletes nothing.

use chrono::{DateTime, Datelike, Utc};
use std::collections::HashSet;

pub use bosun_model::backup::retention::Policy;

/// One backup as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its identity (the object key).
    pub id: String,
    /// When it was taken.
    pub time: DateTime<Utc>,
    /// A verification succeeded.
    pub verified: bool,
}

/// Why a backup is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Among the `keep_last` newest.
    Last,
    /// Newest of a kept day.
    Daily,
    /// Newest of a kept ISO week.
    Weekly,
    /// Newest of a kept month.
    Monthly,
    /// The newest verified backup.
    NewestVerified,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reason::Last => "last",
            Reason::Daily => "daily",
            Reason::Weekly => "weekly",
            Reason::Monthly => "monthly",
            Reason::NewestVerified => "newest verified",
        })
    }
}

/// The outcome of [`plan`]: both lists newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Kept backups with every reason that keeps them.
    pub keep: Vec<(Candidate, Vec<Reason>)>,
    /// Backups to delete.
    pub delete: Vec<Candidate>,
}

/// Applies `policy` to `backups` (any order; ids should be unique).
pub fn plan(policy: &Policy, backups: &[Candidate]) -> Plan {
    let mut sorted: Vec<&Candidate> = backups.iter().collect();
    sorted.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
    let mut reasons: Vec<Vec<Reason>> = vec![Vec::new(); sorted.len()];

    for r in reasons.iter_mut().take(policy.keep_last as usize) {
        r.push(Reason::Last);
    }
    newest_per_period(&sorted, &mut reasons, policy.daily, Reason::Daily, |t| {
        (t.year(), t.ordinal(), 0)
    });
    newest_per_period(&sorted, &mut reasons, policy.weekly, Reason::Weekly, |t| {
        let w = t.iso_week();
        (w.year(), w.week(), 1)
    });
    newest_per_period(
        &sorted,
        &mut reasons,
        policy.monthly,
        Reason::Monthly,
        |t| (t.year(), t.month(), 2),
    );
    if let Some(i) = sorted.iter().position(|c| c.verified) {
        reasons[i].push(Reason::NewestVerified);
    }

    let mut out = Plan::default();
    for (c, why) in sorted.into_iter().zip(reasons) {
        if why.is_empty() {
            out.delete.push(c.clone());
        } else {
            out.keep.push((c.clone(), why));
        }
    }
    out
}

/// Marks the first (newest) backup of each of the `count` newest periods.
fn newest_per_period(
    sorted: &[&Candidate],
    reasons: &mut [Vec<Reason>],
    count: u32,
    reason: Reason,
    period: impl Fn(&DateTime<Utc>) -> (i32, u32, u8),
) {
    let mut seen = HashSet::new();
    for (i, c) in sorted.iter().enumerate() {
        if seen.len() >= count as usize {
            break;
        }
        if seen.insert(period(&c.time)) {
            reasons[i].push(reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn c(id: &str, y: i32, m: u32, d: u32, h: u32, verified: bool) -> Candidate {
        Candidate {
            id: id.into(),
            time: Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap(),
            verified,
        }
    }

    fn ids(v: &[Candidate]) -> Vec<&str> {
        v.iter().map(|c| c.id.as_str()).collect()
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day() {
        let b = vec![
            c("d1-early", 2026, 1, 1, 1, false),
            c("d1-late", 2026, 1, 1, 23, false),
            c("d2", 2026, 1, 2, 3, false),
            c("d3", 2026, 1, 3, 3, false),
        ];
        let p = plan(
            &Policy {
                daily: 2,
                ..Policy::default()
            },
            &b,
        );
        let kept: Vec<&str> = p.keep.iter().map(|(c, _)| c.id.as_str()).collect();
        assert_eq!(kept, ["d3", "d2"]);
        assert_eq!(ids(&p.delete), ["d1-late", "d1-early"]);
    }

    #[test]
    fn newest_verified_survives_a_policy_that_would_drop_it() {
        let b = vec![
            c("old-verified", 2025, 1, 1, 0, true),
            c("new", 2026, 1, 1, 0, false),
        ];
        let p = plan(
            &Policy {
                keep_last: 1,
                ..Policy::default()
            },
            &b,
        );
        assert!(p.delete.is_empty());
        assert_eq!(p.keep[1].1, vec![Reason::NewestVerified]);
    }

    #[test]
    fn weekly_and_monthly_pick_period_heads() {
        // 2026-01-05 is a Monday; 01-04 belongs to the previous ISO week.
        let b = vec![
            c("sun", 2026, 1, 4, 0, false),
            c("mon", 2026, 1, 5, 0, false),
            c("tue", 2026, 1, 6, 0, false),
            c("dec", 2025, 12, 31, 0, false),
        ];
        let p = plan(
            &Policy {
                weekly: 2,
                monthly: 2,
                ..Policy::default()
            },
            &b,
        );
        let kept: Vec<(&str, &Vec<Reason>)> =
            p.keep.iter().map(|(c, r)| (c.id.as_str(), r)).collect();
        assert_eq!(
            kept,
            vec![
                ("tue", &vec![Reason::Weekly, Reason::Monthly]),
                ("sun", &vec![Reason::Weekly]),
                ("dec", &vec![Reason::Monthly]),
            ]
        );
    }

    mod property {
        use super::super::*;
        use chrono::TimeZone;
        use proptest::prelude::*;

        /// The rule written out once more, per backup and without sorting: kept when fewer
        /// than N backups are newer, or when it is the newest of its period and fewer than the
        /// count of periods with backups lie after its own, or when it is the newest verified.
        fn expected(policy: &Policy, all: &[Candidate]) -> Vec<String> {
            let newer = |a: &Candidate, b: &Candidate| (a.time, &a.id) > (b.time, &b.id);
            let period_rule =
                |b: &Candidate, count: u32, period: &dyn Fn(&Candidate) -> (i32, u32)| {
                    let head = !all.iter().any(|x| period(x) == period(b) && newer(x, b));
                    let mut later: Vec<(i32, u32)> =
                        all.iter().map(period).filter(|p| *p > period(b)).collect();
                    later.sort();
                    later.dedup();
                    head && later.len() < count as usize
                };
            let day = |c: &Candidate| (c.time.year(), c.time.ordinal());
            let week = |c: &Candidate| (c.time.iso_week().year(), c.time.iso_week().week());
            let month = |c: &Candidate| (c.time.year(), c.time.month());
            let mut kept: Vec<String> = all
                .iter()
                .filter(|b| {
                    all.iter().filter(|x| newer(x, b)).count() < policy.keep_last as usize
                        || period_rule(b, policy.daily, &day)
                        || period_rule(b, policy.weekly, &week)
                        || period_rule(b, policy.monthly, &month)
                        || (b.verified && !all.iter().any(|x| x.verified && newer(x, b)))
                })
                .map(|b| b.id.clone())
                .collect();
            kept.sort();
            kept
        }

        fn backups() -> impl Strategy<Value = Vec<Candidate>> {
            // Minutes over ~14 months, so days, weeks, months and year ends all repeat and
            // collide; equal times are allowed (ties break on the id).
            prop::collection::vec((0i64..(430 * 24 * 60), any::<bool>()), 0..40).prop_map(|v| {
                let base = Utc.with_ymd_and_hms(2025, 11, 20, 0, 0, 0).unwrap();
                v.into_iter()
                    .enumerate()
                    .map(|(i, (min, verified))| Candidate {
                        id: format!("b{i:02}"),
                        time: base + chrono::Duration::minutes(min - min % 180),
                        verified,
                    })
                    .collect()
            })
        }

        fn policies() -> impl Strategy<Value = Policy> {
            (0u32..5, 0u32..8, 0u32..5, 0u32..4)
                .prop_map(|(keep_last, daily, weekly, monthly)| Policy {
                    keep_last,
                    daily,
                    weekly,
                    monthly,
                })
                .prop_filter("a policy that keeps something", |p| p.problem().is_none())
        }

        proptest! {
            #[test]
            fn kept_set_matches_the_rule_and_pruning_again_deletes_nothing(
                all in backups(),
                policy in policies(),
            ) {
                let p = plan(&policy, &all);
                let mut kept: Vec<String> = p.keep.iter().map(|(c, _)| c.id.clone()).collect();
                kept.sort();
                prop_assert_eq!(&kept, &expected(&policy, &all));
                prop_assert_eq!(p.keep.len() + p.delete.len(), all.len());

                let newest_verified = all
                    .iter()
                    .filter(|c| c.verified)
                    .max_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
                if let Some(v) = newest_verified {
                    prop_assert!(!p.delete.iter().any(|d| d.id == v.id), "deleted the newest verified backup");
                }

                let survivors: Vec<Candidate> = p.keep.iter().map(|(c, _)| c.clone()).collect();
                let again = plan(&policy, &survivors);
                prop_assert!(again.delete.is_empty(), "second prune deletes {:?}", again.delete);
            }
        }
    }
}

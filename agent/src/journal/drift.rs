//! Drift in the journal: per playbook, the steps its last scheduled check run (a `[[schedule]]`
//! with `check = true`) found would change. Written when such a run ends without a failed
//! step (a failed check says nothing sure, so the previous report stands); read by
//! `GET /metrics` (`bosun_drift_steps`), the CloudWatch sampler (`DriftSteps`) and
//! `bosund drift` (what `bosun status` shows).

use rusqlite::params;
use serde::Serialize;

use super::Journal;

/// One playbook's drift as last checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriftRow {
    /// The playbook's name.
    pub playbook: String,
    /// The steps that would change, in run order (empty: no drift).
    pub steps: Vec<String>,
    /// The check run that found them.
    pub run_id: String,
    /// When that run ended (RFC 3339).
    pub checked_at: String,
}

impl Journal {
    pub(super) fn put_drift(
        &mut self,
        playbook: &str,
        steps: &[String],
        run_id: &str,
    ) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO drift (playbook, steps, run_id, checked_at) VALUES (?1, ?2, ?3, ?4)",
            params![
                playbook,
                serde_json::to_string(steps)?,
                run_id,
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ],
        )?;
        Ok(())
    }

    /// Every playbook's last drift report, by playbook name.
    pub fn drift(&self) -> anyhow::Result<Vec<DriftRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT playbook, steps, run_id, checked_at FROM drift ORDER BY playbook",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (playbook, steps, run_id, checked_at) = row?;
            out.push(DriftRow {
                playbook,
                steps: serde_json::from_str(&steps)?,
                run_id,
                checked_at,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_model::event::{RunEvent, StepReport, StepStatus, Summary};

    fn run(
        j: &mut Journal,
        id: &str,
        check: bool,
        schedule: Option<&str>,
        steps: &[(&str, StepStatus)],
    ) {
        j.record(&RunEvent::RunStarted {
            run_id: id.into(),
            playbook: "site".into(),
            check,
            started_at: "2026-01-01T00:00:00Z".into(),
            schedule: schedule.map(str::to_string),
        })
        .unwrap();
        let mut summary = Summary::default();
        for (i, (name, status)) in steps.iter().enumerate() {
            summary.count(*status);
            j.record(&RunEvent::StepFinished(StepReport {
                index: i,
                name: (*name).into(),
                action: "file".into(),
                handler: false,
                status: *status,
                duration_ms: 1.0,
                attempts: 1,
                message: None,
                diff: None,
                output: None,
            }))
            .unwrap();
        }
        j.record(&RunEvent::Summary(summary)).unwrap();
    }

    #[test]
    fn a_scheduled_check_records_the_steps_that_would_change() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        // Not a scheduled check: no drift row.
        run(&mut j, "r0", true, None, &[("a", StepStatus::Changed)]);
        run(
            &mut j,
            "r1",
            false,
            Some("nightly"),
            &[("a", StepStatus::Changed)],
        );
        assert!(j.drift().unwrap().is_empty());
        run(
            &mut j,
            "r2",
            true,
            Some("drift"),
            &[
                ("a", StepStatus::Changed),
                ("b", StepStatus::Ok),
                ("c", StepStatus::Changed),
            ],
        );
        let d = j.drift().unwrap();
        assert_eq!(
            (
                d[0].playbook.as_str(),
                d[0].steps.clone(),
                d[0].run_id.as_str()
            ),
            ("site", vec!["a".to_string(), "c".to_string()], "r2")
        );
        // A failed check leaves the last report; a clean one clears it.
        run(
            &mut j,
            "r3",
            true,
            Some("drift"),
            &[("a", StepStatus::Failed)],
        );
        assert_eq!(j.drift().unwrap()[0].run_id, "r2");
        run(&mut j, "r4", true, Some("drift"), &[("a", StepStatus::Ok)]);
        let d = j.drift().unwrap();
        assert_eq!((d[0].steps.len(), d[0].run_id.as_str()), (0, "r4"));
    }
}

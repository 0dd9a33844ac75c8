//! Schedules' rows in the journal: per `[[schedule]]` name, when it was first seen (or its
//! times changed), the last slot a run was started for, and that run's id and outcome. The
//! daemon writes the slot *before* it submits the run, so a restart never runs a slot twice.

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{OptionalExtension, Row, params};

use super::Journal;

/// What the journal keeps of one schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRow {
    /// The schedule's name (`[[schedule]] name`).
    pub name: String,
    /// First seen, or when its cron or jitter last changed: no catch-up before it.
    pub since: DateTime<Utc>,
    /// The slot the last run was started for.
    pub last_slot: Option<DateTime<Utc>>,
    /// The id of that run (none when its playbook could not be loaded).
    pub last_run_id: Option<String>,
    /// When that run was submitted.
    pub last_started_at: Option<DateTime<Utc>>,
    /// `queued`, `ok`, `failed`, `cancelled`, or `invalid` (the playbook could not be loaded).
    pub last_outcome: Option<String>,
    /// Why the last slot did not run (`invalid`).
    pub last_error: Option<String>,
}

impl ScheduleRow {
    /// A schedule seen for the first time at `since`.
    pub fn new(name: &str, since: DateTime<Utc>) -> Self {
        ScheduleRow {
            name: name.to_string(),
            since,
            last_slot: None,
            last_run_id: None,
            last_started_at: None,
            last_outcome: None,
            last_error: None,
        }
    }
}

fn text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn time(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    let s: Option<String> = r.get(i)?;
    s.map(|s| {
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
            })
    })
    .transpose()
}

const COLUMNS: &str =
    "name, since, last_slot, last_run_id, last_started_at, last_outcome, last_error";

fn row(r: &Row<'_>) -> rusqlite::Result<ScheduleRow> {
    Ok(ScheduleRow {
        name: r.get(0)?,
        since: time(r, 1)?.unwrap_or_default(),
        last_slot: time(r, 2)?,
        last_run_id: r.get(3)?,
        last_started_at: time(r, 4)?,
        last_outcome: r.get(5)?,
        last_error: r.get(6)?,
    })
}

impl Journal {
    /// Every schedule's row, by name.
    pub fn schedules(&self) -> anyhow::Result<Vec<ScheduleRow>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM schedules ORDER BY name"))?;
        let rows = stmt.query_map([], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One schedule's row.
    pub fn schedule(&self, name: &str) -> anyhow::Result<Option<ScheduleRow>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM schedules WHERE name = ?1"),
                [name],
                row,
            )
            .optional()?)
    }

    /// Writes a schedule's row (insert or replace).
    pub fn put_schedule(&self, s: &ScheduleRow) -> anyhow::Result<()> {
        self.conn.execute(
            &format!(
                "INSERT OR REPLACE INTO schedules ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            ),
            params![
                s.name,
                text(s.since),
                s.last_slot.map(text),
                s.last_run_id,
                s.last_started_at.map(text),
                s.last_outcome,
                s.last_error
            ],
        )?;
        Ok(())
    }

    /// Forgets a schedule (removed from the config).
    pub fn forget_schedule(&self, name: &str) -> anyhow::Result<()> {
        self.conn
            .execute("DELETE FROM schedules WHERE name = ?1", [name])?;
        Ok(())
    }

    /// The journaled status of run `id` (`running` when bosund died during it).
    pub fn run_status(&self, id: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT status FROM runs WHERE id = ?1", [id], |r| r.get(0))
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_row_round_trips_and_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let t = Utc.with_ymd_and_hms(2026, 3, 1, 3, 7, 12).unwrap();
        let mut row = ScheduleRow::new("nightly", t);
        j.put_schedule(&row).unwrap();
        assert_eq!(j.schedule("nightly").unwrap(), Some(row.clone()));
        row.last_slot = Some(t);
        row.last_run_id = Some("r1".into());
        row.last_started_at = Some(t);
        row.last_outcome = Some("queued".into());
        j.put_schedule(&row).unwrap();
        assert_eq!(j.schedules().unwrap(), vec![row]);
        j.forget_schedule("nightly").unwrap();
        assert_eq!(j.schedule("nightly").unwrap(), None);
        assert_eq!(j.run_status("r1").unwrap(), None);
    }
}

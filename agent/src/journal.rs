//! The run journal: an SQLite database (`journal.db`) in the state directory, with a row per run
//! and per step (and telemetry's positions, schedules' last slots). The only module that
//! touches SQLite.
//!
//! Writes go through SQLite transactions in WAL mode, so a crash leaves the journal as it was
//! after the last completed write. A run that never wrote its summary (the agent was killed)
//! keeps the status `running` and shows so in `bosund history`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use bosun_model::event::{RunEvent, StepReport};

mod schedule;
mod telemetry;
pub use schedule::ScheduleRow;
pub use telemetry::{FileCheckpoint, MetricSample};

const SCHEMA: &[&str] = &[
    // version 1
    "CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        playbook TEXT NOT NULL,
        check_mode INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        status TEXT NOT NULL,
        ok INTEGER NOT NULL DEFAULT 0,
        changed INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        skipped INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE steps (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        name TEXT NOT NULL,
        action TEXT NOT NULL,
        handler INTEGER NOT NULL,
        status TEXT NOT NULL,
        changed INTEGER NOT NULL,
        duration_ms REAL NOT NULL,
        attempts INTEGER NOT NULL,
        error TEXT,
        PRIMARY KEY (run_id, idx)
    );
    CREATE INDEX runs_started ON runs(started_at);",
    // version 2: telemetry (log checkpoints, journald cursors, unsent metric points)
    "CREATE TABLE log_checkpoints (
        source TEXT NOT NULL,
        dev INTEGER NOT NULL,
        ino INTEGER NOT NULL,
        path TEXT NOT NULL,
        fp_len INTEGER NOT NULL,
        fp TEXT NOT NULL,
        offset INTEGER NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (source, dev, ino)
    );
    CREATE TABLE log_cursors (
        source TEXT PRIMARY KEY,
        cursor TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE metric_backlog (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts_ms INTEGER NOT NULL,
        points TEXT NOT NULL
    );",
    // version 3: schedules (their last slot and run) and the schedule that started a run
    "ALTER TABLE runs ADD COLUMN schedule TEXT;
    CREATE TABLE schedules (
        name TEXT PRIMARY KEY,
        since TEXT NOT NULL,
        last_slot TEXT,
        last_run_id TEXT,
        last_started_at TEXT,
        last_outcome TEXT,
        last_error TEXT
    );",
];

/// The state directory: `--state-dir`, else `$BOSUN_STATE_DIR`, else `/var/lib/bosun` as root,
/// else `$XDG_STATE_HOME/bosun` (default `~/.local/state/bosun`).
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BOSUN_STATE_DIR") {
        return PathBuf::from(dir);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/bosun");
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("bosun")
}

/// One run as recorded.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RunRecord {
    /// The run's id.
    pub id: String,
    /// The playbook's name.
    pub playbook: String,
    /// Run under `--check`.
    pub check: bool,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339; none while running (or when the agent died mid-run).
    pub finished_at: Option<String>,
    /// `running`, `ok` or `failed`.
    pub status: String,
    /// Steps ok.
    pub ok: i64,
    /// Steps changed.
    pub changed: i64,
    /// Steps failed.
    pub failed: i64,
    /// Steps skipped.
    pub skipped: i64,
    /// The `[[schedule]]` that started the run; absent for runs asked for by someone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
}

/// One step as recorded.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StepRecord {
    /// Position in the run.
    pub index: i64,
    /// The step's name.
    pub name: String,
    /// Its action key.
    pub action: String,
    /// `ok`, `changed`, `failed`, `skipped`.
    pub status: String,
    /// Wall time.
    pub duration_ms: f64,
    /// Why it failed.
    pub error: Option<String>,
}

/// An open journal. Also an [`bosun_model::event::EventSink`]-friendly recorder: feed it every event.
pub struct Journal {
    conn: Connection,
    current_run: Option<String>,
}

impl Journal {
    /// Opens (creating when needed) the journal in `state_dir`, which is created with mode 0700.
    pub fn open(state_dir: &Path) -> anyhow::Result<Self> {
        create_private_dir(state_dir)?;
        let path = state_dir.join("journal.db");
        let conn = Connection::open(&path)
            .with_context(|| format!("opening journal {}", path.display()))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
        )
        .context("configuring the journal")?;
        migrate(&conn).with_context(|| format!("migrating journal {}", path.display()))?;
        Ok(Self {
            conn,
            current_run: None,
        })
    }

    /// Opens the journal in `state_dir` for reading, creating nothing: `None` when there is no
    /// journal there. A journal of an older schema is migrated (it is the journal's own state
    /// brought up to date), as [`Journal::open`] would.
    pub fn open_existing(state_dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = state_dir.join("journal.db");
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            Ok(_) => {}
        }
        let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("opening journal {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .with_context(|| format!("reading journal {}", path.display()))?;
        if usize::try_from(version).ok() != Some(SCHEMA.len()) {
            drop(conn);
            return Self::open(state_dir).map(Some);
        }
        Ok(Some(Self {
            conn,
            current_run: None,
        }))
    }

    /// Records one event of a run.
    pub fn record(&mut self, event: &RunEvent) -> anyhow::Result<()> {
        match event {
            RunEvent::RunStarted {
                run_id,
                playbook,
                check,
                started_at,
                schedule,
            } => {
                self.conn.execute(
                    "INSERT INTO runs (id, playbook, check_mode, started_at, status, schedule) VALUES (?1, ?2, ?3, ?4, 'running', ?5)",
                    params![run_id, playbook, check, started_at, schedule],
                )?;
                self.current_run = Some(run_id.clone());
            }
            RunEvent::StepFinished(StepReport {
                index,
                name,
                action,
                handler,
                status,
                duration_ms,
                attempts,
                message,
                ..
            }) => {
                let Some(run_id) = &self.current_run else {
                    return Ok(());
                };
                let error = (status.as_str() == "failed")
                    .then_some(message.as_deref())
                    .flatten();
                self.conn.execute(
                    "INSERT OR REPLACE INTO steps (run_id, idx, name, action, handler, status, changed, duration_ms, attempts, error)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    params![run_id, *index as i64, name, action, handler, status.as_str(), status.as_str() == "changed", duration_ms, attempts, error],
                )?;
            }
            RunEvent::Summary(s) => {
                let Some(run_id) = self.current_run.take() else {
                    return Ok(());
                };
                let status = if s.failed > 0 { "failed" } else { "ok" };
                self.conn.execute(
                    "UPDATE runs SET finished_at = ?2, status = ?3, ok = ?4, changed = ?5, failed = ?6, skipped = ?7 WHERE id = ?1",
                    params![
                        run_id,
                        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        status,
                        s.ok as i64,
                        s.changed as i64,
                        s.failed as i64,
                        s.skipped as i64
                    ],
                )?;
            }
            RunEvent::StepStarted { .. } | RunEvent::Invalid { .. } => {}
        }
        Ok(())
    }

    /// The most recent runs, newest first.
    pub fn recent_runs(&self, limit: usize) -> anyhow::Result<Vec<RunRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, playbook, check_mode, started_at, finished_at, status, ok, changed, failed, skipped, schedule
             FROM runs ORDER BY started_at DESC, id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(RunRecord {
                id: r.get(0)?,
                playbook: r.get(1)?,
                check: r.get(2)?,
                started_at: r.get(3)?,
                finished_at: r.get(4)?,
                status: r.get(5)?,
                ok: r.get(6)?,
                changed: r.get(7)?,
                failed: r.get(8)?,
                skipped: r.get(9)?,
                schedule: r.get(10)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The steps of one run, in order.
    pub fn steps(&self, run_id: &str) -> anyhow::Result<Vec<StepRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT idx, name, action, status, duration_ms, error FROM steps WHERE run_id = ?1 ORDER BY idx",
        )?;
        let rows = stmt.query_map([run_id], |r| {
            Ok(StepRecord {
                index: r.get(0)?,
                name: r.get(1)?,
                action: r.get(2)?,
                status: r.get(3)?,
                duration_ms: r.get(4)?,
                error: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn migrate(conn: &Connection) -> anyhow::Result<()> {
    // Several connections may open a new journal at once (the daemon's runner and its
    // telemetry thread): each step takes the write lock first (BEGIN IMMEDIATE waits for it,
    // up to busy_timeout), then reads the version, so no step runs twice.
    loop {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let version = usize::try_from(version).unwrap_or(0);
        if version > SCHEMA.len() {
            conn.execute_batch("ROLLBACK")?;
            anyhow::bail!(
                "the journal has schema version {version}, newer than this bosund knows ({}); use a newer bosund",
                SCHEMA.len()
            );
        }
        if version == SCHEMA.len() {
            conn.execute_batch("COMMIT")?;
            break;
        }
        let step = conn
            .execute_batch(SCHEMA[version])
            .and_then(|()| conn.pragma_update(None, "user_version", (version + 1) as i64));
        match step {
            Ok(()) => conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e.into());
            }
        }
    }
    let _: Option<i64> = conn
        .query_row("SELECT 1 FROM runs LIMIT 1", [], |r| r.get(0))
        .optional()?;
    Ok(())
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating state directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_model::event::{StepStatus, Summary};

    #[test]
    fn records_a_run_and_its_steps() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("state")).unwrap();
        j.record(&RunEvent::RunStarted {
            run_id: "r1".into(),
            playbook: "demo".into(),
            check: false,
            started_at: "2026-01-01T00:00:00Z".into(),
            schedule: None,
        })
        .unwrap();
        j.record(&RunEvent::StepFinished(StepReport {
            index: 0,
            name: "s".into(),
            action: "command".into(),
            handler: false,
            status: StepStatus::Failed,
            duration_ms: 1.5,
            attempts: 2,
            message: Some("exit code 1".into()),
            diff: None,
            output: None,
        }))
        .unwrap();
        j.record(&RunEvent::Summary(Summary {
            ok: 0,
            changed: 0,
            failed: 1,
            skipped: 0,
        }))
        .unwrap();
        let runs = j.recent_runs(10).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!((runs[0].status.as_str(), runs[0].failed), ("failed", 1));
        assert!(runs[0].finished_at.is_some());
        let steps = j.steps("r1").unwrap();
        assert_eq!(steps[0].error.as_deref(), Some("exit code 1"));
        // Reopening keeps the data and does not re-run migrations.
        drop(j);
        let j = Journal::open(&dir.path().join("state")).unwrap();
        assert_eq!(j.recent_runs(10).unwrap().len(), 1);
    }
}

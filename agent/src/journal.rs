//! The run journal: an SQLite database (`journal.db`) in the state directory, with a row per run
//! and per step (and telemetry's positions, schedules' last slots). The only module that
//! touches SQLite.
//!
//! Writes go through SQLite transactions in WAL mode, so a crash leaves the journal as it was
//! after the last completed write. A run that never wrote its summary (the agent was killed)
//! keeps the status `running` and shows so in `bosund history`.
//!
//! A journal the disk damaged is found when bosund starts ([`Journal::open_checked`]: SQLite's
//! `quick_check`), moved aside as `journal.db.corrupt-<time>` and replaced by a new one, so a
//! bad file never keeps the daemon from starting (no crash loop under systemd). What a lost
//! journal costs is chosen to be duplicates, not loss: a log file without a checkpoint is read
//! from its start, journald from the start of the boot; unsent metric points are gone.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use bosun_model::event::{RunEvent, StepReport};

mod drift;
mod schedule;
mod telemetry;
pub use drift::DriftRow;
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
    // version 4: drift, per playbook: the steps a scheduled check run found would change
    "CREATE TABLE drift (
        playbook TEXT PRIMARY KEY,
        steps TEXT NOT NULL,
        run_id TEXT NOT NULL,
        checked_at TEXT NOT NULL
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
    /// The running run is a scheduled check (a drift report): its playbook, and the steps
    /// that would change so far.
    drift: Option<(String, Vec<String>)>,
}

impl Journal {
    /// Opens (creating when needed) the journal in `state_dir`, which is created with mode 0700.
    pub fn open(state_dir: &Path) -> anyhow::Result<Self> {
        create_private_dir(state_dir)?;
        let path = state_dir.join("journal.db");
        // bosund opens the journal from several tasks at start (the runner, the scheduler).
        // Switching a new file to WAL upgrades a shared lock to an exclusive one, and SQLite
        // answers two connections doing that at once with "database is locked" at once, without
        // its busy handler (waiting could deadlock). Opening one at a time within the process
        // avoids that; the busy timeout covers other processes (`bosund apply`, `history`).
        static OPENING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = OPENING.lock().unwrap_or_else(|e| e.into_inner());
        let conn = Connection::open(&path)
            .with_context(|| format!("opening journal {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .context("configuring the journal")?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
        )
        .context("configuring the journal")?;
        migrate(&conn).with_context(|| format!("migrating journal {}", path.display()))?;
        Ok(Self {
            conn,
            current_run: None,
            drift: None,
        })
    }

    /// [`Journal::open`] after checking the file: a `journal.db` that is not a database or
    /// fails SQLite's `quick_check` is renamed `journal.db.corrupt-<UTC time>` (with its
    /// `-wal` and `-shm`), and a new journal is started. Returns the journal and, when one was
    /// moved aside, what was done, for the log. Other errors (permissions, a full disk) are
    /// returned as they are.
    pub fn open_checked(state_dir: &Path) -> anyhow::Result<(Self, Option<String>)> {
        let path = state_dir.join("journal.db");
        let damage = if path.exists() {
            damage(&path).with_context(|| format!("checking journal {}", path.display()))?
        } else {
            None
        };
        let Some(reason) = damage else {
            return Ok((Self::open(state_dir)?, None));
        };
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        let aside = state_dir.join(format!("journal.db.corrupt-{stamp}"));
        for suffix in ["", "-wal", "-shm"] {
            let from = state_dir.join(format!("journal.db{suffix}"));
            let to = PathBuf::from(format!("{}{suffix}", aside.display()));
            match std::fs::rename(&from, &to) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| {
                        format!("moving the damaged journal {} aside", from.display())
                    });
                }
                _ => {}
            }
        }
        let journal = Self::open(state_dir)?;
        Ok((
            journal,
            Some(format!(
                "journal {} failed its integrity check ({reason}): moved aside to {} and a new \
                 journal started; the runs before are in that file; log sources send their \
                 files again from the start (duplicates, not loss)",
                path.display(),
                aside.display()
            )),
        ))
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
        let read = |immutable: bool| -> rusqlite::Result<(Connection, i64)> {
            use rusqlite::OpenFlags;
            let conn = if immutable {
                let uri = format!("file:{}?immutable=1", path.display());
                Connection::open_with_flags(
                    uri,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
                )?
            } else {
                Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?
            };
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            let version = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            Ok((conn, version))
        };
        // A WAL journal is read through its shared-memory index (`journal.db-shm`) and locks,
        // which cannot be set up on a full disk. Then the database file alone is read
        // (`immutable`): everything up to the last checkpoint (bosund checkpoints when it
        // closes the journal), so `history` still answers while the disk is full.
        let (conn, version) = match read(false) {
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::SystemIoFailure) => {
                read(true)
            }
            other => other,
        }
        .with_context(|| format!("reading journal {}", path.display()))?;
        if usize::try_from(version).ok() != Some(SCHEMA.len()) {
            drop(conn);
            return Self::open(state_dir).map(Some);
        }
        Ok(Some(Self {
            conn,
            current_run: None,
            drift: None,
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
                self.drift = (*check && schedule.is_some()).then(|| (playbook.clone(), Vec::new()));
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
                if *status == bosun_model::event::StepStatus::Changed
                    && let Some((_, drifted)) = &mut self.drift
                {
                    drifted.push(name.clone());
                }
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
                // A check that failed part-way says nothing sure: the last report stands.
                if let Some((playbook, steps)) = self.drift.take()
                    && s.failed == 0
                {
                    self.put_drift(&playbook, &steps, &run_id)?;
                }
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

/// What is wrong with the SQLite file at `path`: `None` when `quick_check` says `ok`. An error
/// only for what is not damage (the file locked, unreadable).
fn damage(path: &Path) -> anyhow::Result<Option<String>> {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    let is_damage =
        |e: &rusqlite::Error| matches!(e.sqlite_error_code(), Some(DatabaseCorrupt | NotADatabase));
    let conn = match Connection::open(path) {
        Ok(c) => c,
        Err(e) if is_damage(&e) => return Ok(Some(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let rows: Result<Vec<String>, rusqlite::Error> = conn
        .prepare("PRAGMA quick_check(5)")
        .and_then(|mut stmt| stmt.query_map([], |r| r.get(0))?.collect());
    match rows {
        Ok(rows) if rows == ["ok"] => Ok(None),
        Ok(rows) => Ok(Some(rows.join("; "))),
        Err(e) if is_damage(&e) => Ok(Some(e.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// Whether `err` says the disk is full (SQLite's `SQLITE_FULL`, or `ENOSPC`).
pub fn is_disk_full(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<rusqlite::Error>()
            .is_some_and(|e| e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull))
            || c.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::StorageFull)
    })
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
            rescued: 0,
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

    #[test]
    fn a_damaged_journal_is_moved_aside_and_a_new_one_started() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (j, note) = Journal::open_checked(&state).unwrap();
        assert_eq!(note, None);
        drop(j);
        let (j, note) = Journal::open_checked(&state).unwrap();
        assert_eq!(note, None, "a sound journal is kept");
        drop(j);
        // Garbage over the pages after the first (the schema's tables).
        let db = state.join("journal.db");
        let mut bytes = std::fs::read(&db).unwrap();
        assert!(bytes.len() > 8192, "{}", bytes.len());
        for b in &mut bytes[4096..8192] {
            *b = 0xA5;
        }
        std::fs::write(&db, &bytes).unwrap();
        let (mut j, note) = Journal::open_checked(&state).unwrap();
        let note = note.expect("the damage was not found");
        assert!(note.contains("failed its integrity check"), "{note}");
        assert!(note.contains("moved aside to"), "{note}");
        j.record(&RunEvent::RunStarted {
            run_id: "r2".into(),
            playbook: "demo".into(),
            check: false,
            started_at: "2026-01-01T00:00:00Z".into(),
            schedule: None,
        })
        .unwrap();
        assert_eq!(j.recent_runs(10).unwrap().len(), 1);
        let aside: Vec<String> = std::fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("journal.db.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert_eq!(std::fs::read(state.join(&aside[0])).unwrap(), bytes);
        // Not a database at all: the same.
        drop(j);
        std::fs::write(&db, b"this is not SQLite").unwrap();
        let (_, note) = Journal::open_checked(&state).unwrap();
        assert!(note.unwrap().contains("failed its integrity check"));
    }
}

//! Telemetry's rows in the journal: file checkpoints (advanced only after CloudWatch accepted
//! the batch), journald cursors, and metric samples not yet accepted by CloudWatch.

use rusqlite::{OptionalExtension, params};

use super::Journal;

/// Where a source stands in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCheckpoint {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// Where the file was last seen.
    pub path: String,
    /// How many leading bytes the fingerprint covers.
    pub fp_len: u64,
    /// Hex digest of those bytes.
    pub fp: String,
    /// Bytes accepted by CloudWatch.
    pub offset: u64,
}

/// One metric sample (every point of one collection), as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricSample {
    /// Row id (order of collection).
    pub id: i64,
    /// Collection time, milliseconds since the epoch.
    pub ts_ms: i64,
    /// The points, JSON.
    pub points: String,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Journal {
    /// Every file checkpoint of `source`.
    pub fn file_checkpoints(&self, source: &str) -> anyhow::Result<Vec<FileCheckpoint>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT dev, ino, path, fp_len, fp, offset FROM log_checkpoints WHERE source = ?1",
        )?;
        let rows = stmt.query_map([source], |r| {
            Ok(FileCheckpoint {
                dev: r.get::<_, i64>(0)? as u64,
                ino: r.get::<_, i64>(1)? as u64,
                path: r.get(2)?,
                fp_len: r.get::<_, i64>(3)? as u64,
                fp: r.get(4)?,
                offset: r.get::<_, i64>(5)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records positions of `source` (one transaction).
    pub fn save_file_checkpoints(
        &mut self,
        source: &str,
        checkpoints: &[FileCheckpoint],
    ) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO log_checkpoints (source, dev, ino, path, fp_len, fp, offset, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            let at = now();
            for c in checkpoints {
                stmt.execute(params![
                    source,
                    c.dev as i64,
                    c.ino as i64,
                    c.path,
                    c.fp_len as i64,
                    c.fp,
                    c.offset as i64,
                    at
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgets the checkpoint of a file that was read to its end and closed.
    pub fn forget_file_checkpoint(&self, source: &str, dev: u64, ino: u64) -> anyhow::Result<()> {
        self.conn.execute(
            "DELETE FROM log_checkpoints WHERE source = ?1 AND dev = ?2 AND ino = ?3",
            params![source, dev as i64, ino as i64],
        )?;
        Ok(())
    }

    /// The journald cursor of `source`.
    pub fn log_cursor(&self, source: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT cursor FROM log_cursors WHERE source = ?1",
                [source],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Records the journald cursor of `source`.
    pub fn save_log_cursor(&self, source: &str, cursor: &str) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO log_cursors (source, cursor, updated_at) VALUES (?1, ?2, ?3)",
            params![source, cursor, now()],
        )?;
        Ok(())
    }

    /// Keeps a metric sample until CloudWatch accepts it.
    pub fn push_metric_sample(&self, ts_ms: i64, points: &str) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT INTO metric_backlog (ts_ms, points) VALUES (?1, ?2)",
            params![ts_ms, points],
        )?;
        Ok(())
    }

    /// The oldest unsent samples, oldest first.
    pub fn metric_samples(&self, limit: usize) -> anyhow::Result<Vec<MetricSample>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, ts_ms, points FROM metric_backlog ORDER BY id LIMIT ?1")?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(MetricSample {
                id: r.get(0)?,
                ts_ms: r.get(1)?,
                points: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Drops samples up to and including `id` (accepted), and any older than `cutoff_ms`
    /// (past the backlog bound); returns how many old ones were dropped.
    pub fn drop_metric_samples(&self, up_to_id: i64, cutoff_ms: i64) -> anyhow::Result<usize> {
        self.conn
            .execute("DELETE FROM metric_backlog WHERE id <= ?1", [up_to_id])?;
        Ok(self
            .conn
            .execute("DELETE FROM metric_backlog WHERE ts_ms < ?1", [cutoff_ms])?)
    }

    /// Samples waiting.
    pub fn metric_backlog_len(&self) -> anyhow::Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM metric_backlog", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_cursors_and_backlog_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        let c = FileCheckpoint {
            dev: u64::MAX - 1,
            ino: 42,
            path: "/var/log/a.log".into(),
            fp_len: 10,
            fp: "ab".into(),
            offset: 99,
        };
        j.save_file_checkpoints("file:/var/log/*.log", std::slice::from_ref(&c))
            .unwrap();
        assert_eq!(j.file_checkpoints("file:/var/log/*.log").unwrap(), vec![c]);
        assert!(j.file_checkpoints("other").unwrap().is_empty());
        j.forget_file_checkpoint("file:/var/log/*.log", u64::MAX - 1, 42)
            .unwrap();
        assert!(
            j.file_checkpoints("file:/var/log/*.log")
                .unwrap()
                .is_empty()
        );

        j.save_log_cursor("journald", "s=1").unwrap();
        j.save_log_cursor("journald", "s=2").unwrap();
        assert_eq!(j.log_cursor("journald").unwrap().as_deref(), Some("s=2"));

        for t in [10, 20, 30] {
            j.push_metric_sample(t, "[]").unwrap();
        }
        let s = j.metric_samples(2).unwrap();
        assert_eq!(s.iter().map(|s| s.ts_ms).collect::<Vec<_>>(), vec![10, 20]);
        assert_eq!(j.drop_metric_samples(s[0].id, 15).unwrap(), 0);
        assert_eq!(j.drop_metric_samples(0, 25).unwrap(), 1);
        assert_eq!(j.metric_backlog_len().unwrap(), 1);
    }
}

//! The PostgreSQL command-line tools, as `postgres_backup` and `backup_verify` use them:
//! `psql` for short queries and restores, `pg_dump` (plain format) streamed out.
//!
//! Invariants (those of [`super::mysql`], in libpq's terms):
//! - The connection travels in libpq's environment only (`PGHOST`, `PGPORT`, `PGUSER`,
//!   `PGPASSWORD`): never on a command line, and the password never in an error (tool stderr
//!   passes through [`Secret::redact`]). Every tool runs with `-w` (never prompt) and psql with
//!   `-X` (no `~/.psqlrc`). `host` may be a directory: libpq then uses the Unix socket there.
//! - A database name is never a connection string: the model refuses `=` and URIs in names
//!   (`bosun_model::steps::postgres_backup::database_problem`), since libpq would read one.
//! - Streaming children run in their own process group, killed when dropped
//!   ([`StreamingChild`]).
//! - Errors quote the tools' own lines only (`psql:...: ERROR:  ...`, `pg_dump: error: ...`),
//!   with the datum after `: "` or `near "` hidden; `DETAIL:`/`CONTEXT:`/`LINE n:` lines, which
//!   repeat rows and statements, are counted, not shown ([`tool_error`]).

use std::collections::BTreeMap;

use anyhow::{Context, bail};

use super::manifest::TableStats;
use super::mysql::{Exit, StreamingChild, find_tool, scan_dump, summarise, tool_version};
use super::pg_dump_scan::CopyScanner;
use crate::host::process;
use crate::secrets::Secret;

/// What `pg_dump` always gets: plain SQL (what psql restores and [`CopyScanner`] reads),
/// without owners and grants, so it restores as any account into any database.
pub const DUMP_OPTIONS: &[&str] = &["-w", "--format=plain", "--no-owner", "--no-privileges"];

/// A server and the account to use on it.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Host name, address, or the directory of the server's Unix socket.
    pub host: String,
    /// Port (also names the socket file).
    pub port: u16,
    /// User.
    pub user: String,
    /// Password, handed over in `PGPASSWORD`.
    pub password: Secret,
    /// libpq settings (`sslmode = "verify-full"` → `PGSSLMODE`), added to the environment.
    pub settings: BTreeMap<String, String>,
}

impl Connection {
    /// `host:port`, for messages.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn env(&self) -> BTreeMap<String, String> {
        let mut env = self.settings.clone();
        env.extend([
            ("PGHOST".to_string(), self.host.clone()),
            ("PGPORT".to_string(), self.port.to_string()),
            ("PGUSER".to_string(), self.user.clone()),
            ("PGPASSWORD".to_string(), self.password.expose().to_string()),
            ("PGCONNECT_TIMEOUT".to_string(), "20".to_string()),
            ("PGAPPNAME".to_string(), "bosun".to_string()),
        ]);
        env
    }
}

/// The datum a PostgreSQL message quotes follows these words (`invalid input syntax for type
/// integer: "abc"`, `syntax error at or near "garbage"`).
const DATA_QUOTES: &[&str] = &[": \"", "near \""];

/// What an error message may say of a PostgreSQL tool's stderr (password already redacted):
/// its own lines (`psql:<stdin>:12: ERROR:  ...`, `pg_dump: error: ...`, `ERROR:`, `FATAL:`),
/// each with a quoted datum replaced by a count of hidden bytes, then a count of the other lines
/// left out (`DETAIL:` repeats key values, `CONTEXT:` a COPY row, `LINE n:` the statement).
pub fn tool_error(stderr: &str, cut: usize) -> String {
    let mut kept = Vec::new();
    let mut hidden = 0usize;
    for line in stderr.lines() {
        let line = line.trim_end();
        if is_tool_line(line) {
            kept.push(mask_data(line));
        } else if !line.trim().is_empty() {
            hidden += 1;
        }
    }
    summarise(&kept, hidden, cut)
}

fn is_tool_line(line: &str) -> bool {
    let own = ["psql:", "pg_dump:", "ERROR:", "FATAL:"]
        .iter()
        .any(|p| line.starts_with(p));
    own && !["DETAIL:", "CONTEXT:", "LINE "].iter().any(|p| {
        line.split_once(":  ")
            .is_some_and(|(_, rest)| rest.starts_with(p))
    })
}

fn mask_data(line: &str) -> String {
    let mut line = line.to_string();
    for marker in DATA_QUOTES {
        let Some(i) = line.find(marker) else {
            continue;
        };
        let start = i + marker.len();
        let rest = &line[start..];
        let end = rest.rfind('"').unwrap_or(rest.len());
        line = format!(
            "{}[{} bytes not shown]{}",
            &line[..start],
            end,
            &rest[end..]
        );
    }
    line
}

/// `psql`'s argv: as given, or `psql` from `PATH`.
pub fn client_argv(given: &Option<Vec<String>>) -> anyhow::Result<Vec<String>> {
    tool_argv(given, "psql")
}

/// `pg_dump`'s argv: as given, or `pg_dump` from `PATH`.
pub fn dump_argv(given: &Option<Vec<String>>) -> anyhow::Result<Vec<String>> {
    tool_argv(given, "pg_dump")
}

fn tool_argv(given: &Option<Vec<String>>, name: &str) -> anyhow::Result<Vec<String>> {
    match given {
        Some(argv) if !argv.is_empty() => Ok(argv.clone()),
        _ => find_tool(&[name]).map(|p| vec![p]).with_context(|| {
            format!(
                "`{name}` is not on PATH: install the client (apt-get install postgresql-client)"
            )
        }),
    }
}

/// Quotes an identifier for SQL: double quotes, inner ones doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `psql` and what to run it as.
#[derive(Debug, Clone)]
pub struct Client {
    /// Program and leading arguments.
    pub argv: Vec<String>,
    /// Where and as whom.
    pub conn: Connection,
}

impl Client {
    fn args(&self, database: &str) -> Vec<String> {
        let mut argv = self.argv.clone();
        argv.extend(
            ["-X", "-w", "-q", "-v", "ON_ERROR_STOP=1"]
                .iter()
                .map(|s| s.to_string()),
        );
        argv.push(format!("--dbname={database}"));
        argv
    }

    /// Runs `sql` in `database`; returns its rows, tab-separated fields (`-A -t`).
    pub async fn query(&self, database: &str, sql: &str) -> anyhow::Result<Vec<Vec<String>>> {
        let mut argv = self.args(database);
        argv.extend(["-A".into(), "-t".into(), "-F".into(), "\t".into()]);
        argv.push(format!("--command={sql}"));
        let out = process::run(&argv, None, &self.conn.env()).await?;
        if out.rc != 0 {
            bail!(
                "{} on {} failed (exit code {}): {}",
                self.argv[0],
                self.conn.endpoint(),
                out.rc,
                tool_error(&self.conn.password.redact(&out.stderr), 0)
            );
        }
        Ok(out
            .stdout
            .lines()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect())
    }

    /// `SELECT version()`, asked in `database`.
    pub async fn server_version(&self, database: &str) -> anyhow::Result<String> {
        let rows = self.query(database, "SELECT version()").await?;
        rows.first()
            .and_then(|r| r.first())
            .cloned()
            .context("the server did not answer SELECT version()")
    }

    /// Starts psql reading SQL on stdin into `database` (a restore; stops at the first error).
    pub fn spawn_restore(&self, database: &str) -> anyhow::Result<StreamingChild> {
        StreamingChild::spawn_with(
            &self.args(database),
            &self.conn.env(),
            &self.conn.password,
            process::Pipe::Piped,
            process::Pipe::Null,
        )
    }

    /// A blocking `DROP DATABASE IF EXISTS ... WITH (FORCE)` run from `maintenance`, for
    /// cleanup from a destructor (no runtime needed).
    pub fn drop_database_blocking(&self, maintenance: &str, database: &str) -> anyhow::Result<()> {
        let mut argv = self.args(maintenance);
        argv.push(format!("--command={}", drop_database_sql(database)));
        let out = process::run_blocking(&argv, &self.conn.env())?;
        if out.rc != 0 {
            bail!(
                "dropping database {database} on {}: {}",
                self.conn.endpoint(),
                tool_error(&self.conn.password.redact(&out.stderr), 0)
            );
        }
        Ok(())
    }
}

/// `DROP DATABASE IF EXISTS "name" WITH (FORCE)` (PostgreSQL 13 and later): a restore that
/// failed may leave a session behind.
pub fn drop_database_sql(database: &str) -> String {
    format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_ident(database)
    )
}

/// What an error may quote of psql's or pg_dump's stderr once it exited ([`tool_error`]).
pub fn exit_message(exit: &Exit) -> String {
    exit.message_with(tool_error)
}

/// `pg_dump` and how to run it.
#[derive(Debug, Clone)]
pub struct Dumper {
    /// Program and leading arguments.
    pub argv: Vec<String>,
    /// Where and as whom.
    pub conn: Connection,
}

impl Dumper {
    /// First line of `--version`.
    pub async fn version(&self) -> anyhow::Result<String> {
        tool_version(&self.argv).await
    }

    /// Starts dumping `database` ([`DUMP_OPTIONS`]: no `CREATE DATABASE`, so it restores into
    /// any database) to the child's stdout.
    pub fn spawn(&self, database: &str) -> anyhow::Result<StreamingChild> {
        let mut argv = self.argv.clone();
        argv.extend(DUMP_OPTIONS.iter().map(|s| s.to_string()));
        argv.push(format!("--dbname={database}"));
        StreamingChild::spawn_with(
            &argv,
            &self.conn.env(),
            &self.conn.password,
            process::Pipe::Null,
            process::Pipe::Piped,
        )
    }

    /// Dumps `database` and reads each table's row count and digest off the dump
    /// ([`CopyScanner`]); nothing is stored. How a restore is compared with its manifest.
    pub async fn table_digests(&self, database: &str) -> anyhow::Result<Vec<TableStats>> {
        scan_dump(
            self.spawn(database)?,
            CopyScanner::new(),
            database,
            exit_message,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_errors_keep_the_tools_lines_and_hide_data() {
        let stderr = "psql:<stdin>:40: ERROR:  duplicate key value violates unique constraint \"t_pkey\"\n\
            DETAIL:  Key (email)=(alice@example.com) already exists.\n\
            CONTEXT:  COPY t, line 2: \"2\talice@example.com\"\n\
            psql:<stdin>:41: ERROR:  invalid input syntax for type integer: \"4111 1111\"\n";
        let msg = tool_error(stderr, 0);
        assert!(
            msg.starts_with("psql:<stdin>:40: ERROR:  duplicate key value violates unique constraint \"t_pkey\"\npsql:<stdin>:41: ERROR:  invalid input syntax for type integer: \"[9 bytes not shown]\""),
            "{msg}"
        );
        assert!(msg.contains("2 other lines"), "{msg}");
        for datum in ["alice", "4111"] {
            assert!(!msg.contains(datum), "{datum} in {msg}");
        }
        let own = "pg_dump: error: connection to server on socket \"/run/pg/.s.PGSQL.5432\" failed: FATAL:  password authentication failed for user \"bosun\"";
        assert!(tool_error(own, 0).starts_with(
            "pg_dump: error: connection to server on socket \"/run/pg/.s.PGSQL.5432\""
        ));
    }

    #[test]
    fn the_password_is_only_in_the_environment() {
        let conn = Connection {
            host: "/run/pg".into(),
            port: 5432,
            user: "backup".into(),
            password: Secret::new("pw-123".into()),
            settings: BTreeMap::new(),
        };
        let client = Client {
            argv: vec!["psql".into()],
            conn: conn.clone(),
        };
        assert!(client.args("shop").iter().all(|a| !a.contains("pw-123")));
        assert_eq!(conn.env()["PGPASSWORD"], "pw-123");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}

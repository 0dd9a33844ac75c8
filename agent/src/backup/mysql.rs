//! The MySQL/MariaDB command-line tools, as the backup steps use them: short queries through the
//! client, a dump streamed out of `mariadb-dump`/`mysqldump`, a restore streamed into the client.
//!
//! Invariants:
//! - The password travels in the child's `MYSQL_PWD` only: never on a command line (visible in
//!   `ps`), never in an error (tool stderr is passed through [`Secret::redact`]).
//! - Every tool runs with `--no-defaults` first, so option files on the host (a `[client]`
//!   password, a socket path) do not change what a step does; TLS and the like go in `extra_args`.
//! - Streaming children run in their own process group, killed when their handle is dropped
//!   (a step's timeout), like [`crate::host::process`].
//! - A tool's output can hold customer data: the client repeats a failed statement, and the
//!   server's error quotes the text near a syntax error, a duplicate key, a bad value. Error
//!   messages therefore quote only its `ERROR` lines and its own `tool:` lines, with those
//!   quotations replaced ([`tool_error`]); the whole (capped) stderr reaches only `register`
//!   ([`crate::host::process::Failed`]).

use std::path::Path;

use anyhow::{Context, bail};

use super::manifest::TableStats;
use crate::host::process;
use crate::secrets::Secret;

/// Options the dump always gets: a consistent InnoDB snapshot without locking, rows streamed
/// (not buffered in the tool), and every kind of object; `--hex-blob` keeps binary columns
/// intact through any character set.
pub const DUMP_OPTIONS: &[&str] = &[
    "--single-transaction",
    "--quick",
    "--routines",
    "--events",
    "--triggers",
    "--hex-blob",
];

/// Options the client always gets: fail fast on an unreachable server (the dump tool has no
/// such option and relies on the system's TCP timeout).
const CLIENT_OPTIONS: &[&str] = &["--connect-timeout=20"];

/// A server and the account to use on it.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Host name or address (TCP is always used).
    pub host: String,
    /// Port.
    pub port: u16,
    /// User.
    pub user: String,
    /// Password, handed over in `MYSQL_PWD`.
    pub password: Secret,
    /// Extra client options (`--ssl-ca=...`), after the connection options.
    pub extra_args: Vec<String>,
    /// The password is an RDS IAM token: the clients may send it in clear text (inside the
    /// TLS that `extra_args` require, see [`super::iam`]).
    pub cleartext: bool,
}

impl Connection {
    /// `host:port`, for messages.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `--no-defaults` and the connection options, for a client or dump tool.
    fn args(&self) -> Vec<String> {
        let mut a = vec![
            "--no-defaults".to_string(),
            "--protocol=tcp".to_string(),
            format!("--host={}", self.host),
            format!("--port={}", self.port),
            format!("--user={}", self.user),
        ];
        a.extend(self.extra_args.iter().cloned());
        a
    }

    fn env(&self) -> std::collections::BTreeMap<String, String> {
        let mut env: std::collections::BTreeMap<String, String> =
            [("MYSQL_PWD".to_string(), self.password.expose().to_string())].into();
        if self.cleartext {
            let (k, v) = super::iam::CLEARTEXT_ENV;
            env.insert(k.into(), v.into());
        }
        env
    }
}

/// Where a server or client error quotes data: the literal after these words (`near '...' at
/// line 1`, `Duplicate entry '...' for key`, `Incorrect integer value: '...' for column`).
const DATA_QUOTES: &[&str] = &["near '", "entry '", "value: '", "value '"];

/// How a quoted datum ends: the message's own words after it, else the line's last quote.
const QUOTE_ENDS: &[&str] = &["' at line", "' for key", "' for column"];

/// What an error message may say of a MySQL/MariaDB tool's stderr (password already
/// redacted): its `ERROR ...` lines and its own `mariadb: ...`-style lines, each with quoted
/// data replaced by a count of hidden bytes (also when the quotation runs over many lines, as
/// the server's `near '...'` does for a dump's multi-line INSERT), then a count of the other
/// lines (statement echoes, warnings) left out; the end of that, capped ([`process::quote_end`]). `cut` is how
/// much of the start of stderr was dropped already.
pub fn tool_error(stderr: &str, cut: usize) -> String {
    // An entry is a tool line and the lines after it up to the next one: the server's error
    // text runs over many lines when the statement it quotes does (a dump's rows).
    let mut entries: Vec<String> = Vec::new();
    let mut hidden = 0usize;
    for line in stderr.lines() {
        if is_tool_line(line.trim_start()) {
            entries.push(line.trim_start().to_string());
        } else if let Some(entry) = entries.last_mut() {
            entry.push('\n');
            entry.push_str(line);
        } else if !line.trim().is_empty() {
            hidden += 1;
        }
    }
    let mut kept = Vec::new();
    for entry in &entries {
        // Masking folds a quotation over many lines into its first; what is left after that
        // line is not the tool's own words.
        let masked = mask_data(entry);
        let mut lines = masked.lines();
        kept.push(lines.next().unwrap_or_default().trim_end().to_string());
        hidden += lines.filter(|l| !l.trim().is_empty()).count();
    }
    summarise(&kept, hidden, cut)
}

/// The lines an error message keeps of a tool's stderr, then a count of the `hidden` lines and
/// the `cut` bytes left out, the end of that capped ([`process::quote_end`]). Shared by the
/// MySQL and PostgreSQL tools' [`tool_error`]s.
pub(crate) fn summarise(kept: &[String], hidden: usize, cut: usize) -> String {
    let mut text = kept.join("\n");
    let mut left_out = Vec::new();
    if hidden > 0 {
        let s = if hidden == 1 { "" } else { "s" };
        left_out.push(format!("{hidden} other line{s}"));
    }
    if cut > 0 {
        left_out.push(format!("{cut} earlier bytes"));
    }
    if !left_out.is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&format!(
            "[bosun: {} of the tool's output not shown: they can hold data]",
            left_out.join(" and ")
        ));
    }
    process::quote_end(&text, 0)
}

/// `ERROR 1064 (42000) at line 3: ...`, `ERROR at line 5: ...`, `mariadb: ...`,
/// `mysqldump: ...`: what the tools say themselves, as opposed to text they repeat.
fn is_tool_line(line: &str) -> bool {
    if line.starts_with("ERROR ") || line.starts_with("ERROR:") {
        return true;
    }
    ["mariadb", "mysql", "mariadb-dump", "mysqldump"]
        .iter()
        .any(|tool| {
            line.strip_prefix(tool)
                .is_some_and(|rest| rest.starts_with(": "))
        })
}

/// `line` with each datum quoted after one of [`DATA_QUOTES`] replaced.
fn mask_data(line: &str) -> String {
    let mut line = line.to_string();
    for marker in DATA_QUOTES {
        let Some(i) = line.find(marker) else {
            continue;
        };
        let start = i + marker.len();
        let rest = &line[start..];
        let end = QUOTE_ENDS
            .iter()
            .filter_map(|e| rest.rfind(e))
            .max()
            .or_else(|| rest.rfind('\''))
            .unwrap_or(rest.len());
        line = format!(
            "{}[{} bytes not shown]{}",
            &line[..start],
            end,
            &rest[end..]
        );
    }
    line
}

/// The first of `candidates` found on `PATH` (or as given, when it holds a `/`).
pub fn find_tool(candidates: &[&str]) -> Option<String> {
    candidates.iter().find_map(|name| {
        if name.contains('/') {
            return Path::new(name).exists().then(|| name.to_string());
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .map(|p| p.display().to_string())
    })
}

/// The dump tool's argv: as given, or `mariadb-dump`/`mysqldump` from `PATH`.
pub fn dump_argv(given: &Option<Vec<String>>) -> anyhow::Result<Vec<String>> {
    match given {
        Some(argv) if !argv.is_empty() => Ok(argv.clone()),
        _ => find_tool(&["mariadb-dump", "mysqldump"]).map(|p| vec![p]).context(
            "neither `mariadb-dump` nor `mysqldump` is on PATH: install the client (apt-get install mariadb-client) or set dump_command",
        ),
    }
}

/// Quotes an identifier for SQL: backticks, inner backticks doubled.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Quotes a string literal for SQL.
pub fn quote_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// The client program (`mariadb` or `mysql`) and what to run it as.
#[derive(Debug, Clone)]
pub struct Client {
    /// Program and leading arguments.
    pub argv: Vec<String>,
    /// Where and as whom.
    pub conn: Connection,
}

impl Client {
    /// Runs `sql` (one or more statements) in `database` (if any) and returns the rows of the
    /// output, tab-separated fields (`--batch --skip-column-names`; NULL prints as `NULL`).
    pub async fn query(
        &self,
        database: Option<&str>,
        sql: &str,
    ) -> anyhow::Result<Vec<Vec<String>>> {
        let mut argv = self.argv.clone();
        argv.extend(self.conn.args());
        argv.extend(CLIENT_OPTIONS.iter().map(|s| s.to_string()));
        argv.extend(["--batch".into(), "--skip-column-names".into()]);
        argv.push(format!("--execute={sql}"));
        if let Some(db) = database {
            argv.push(format!("--database={db}"));
        }
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

    /// `SELECT VERSION()`.
    pub async fn server_version(&self) -> anyhow::Result<String> {
        let rows = self.query(None, "SELECT VERSION()").await?;
        first_field(&rows).context("the server did not answer SELECT VERSION()")
    }

    /// The base tables of `database`, sorted by name.
    pub async fn tables(&self, database: &str) -> anyhow::Result<Vec<String>> {
        let sql = format!(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = {} AND table_type = 'BASE TABLE' ORDER BY table_name",
            quote_str(database)
        );
        Ok(self
            .query(None, &sql)
            .await?
            .into_iter()
            .filter_map(|r| r.into_iter().next())
            .collect())
    }

    /// Row count and `CHECKSUM TABLE` of every base table of `database`, in one session inside
    /// one consistent snapshot (InnoDB), so the counts belong together. How format 1 manifests
    /// were made, and how a restore of one is checked.
    pub async fn table_stats(&self, database: &str) -> anyhow::Result<Vec<TableStats>> {
        let tables = self.tables(database).await?;
        if tables.is_empty() {
            return Ok(Vec::new());
        }
        let db = quote_ident(database);
        let mut sql = String::from(
            "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ; START TRANSACTION WITH CONSISTENT SNAPSHOT;",
        );
        for (i, t) in tables.iter().enumerate() {
            sql.push_str(&format!(
                "SELECT 'rows', {i}, COUNT(*) FROM {db}.{};",
                quote_ident(t)
            ));
        }
        let list: Vec<String> = tables
            .iter()
            .map(|t| format!("{db}.{}", quote_ident(t)))
            .collect();
        sql.push_str(&format!("CHECKSUM TABLE {}; COMMIT;", list.join(", ")));
        let rows = self.query(None, &sql).await?;
        let mut counts = vec![None; tables.len()];
        let mut checksums = Vec::new();
        for r in &rows {
            match r.as_slice() {
                [tag, i, n] if tag == "rows" => {
                    let i: usize = i.parse().context("row count index")?;
                    let n: u64 = n.parse().with_context(|| format!("row count {n:?}"))?;
                    if let Some(slot) = counts.get_mut(i) {
                        *slot = Some(n);
                    }
                }
                [_, sum] => checksums.push(if sum == "NULL" {
                    None
                } else {
                    Some(sum.parse().with_context(|| format!("checksum {sum:?}"))?)
                }),
                _ => bail!("unexpected line from the client: {r:?}"),
            }
        }
        if checksums.len() != tables.len() {
            bail!(
                "CHECKSUM TABLE gave {} rows for {} tables of {database}",
                checksums.len(),
                tables.len()
            );
        }
        tables
            .into_iter()
            .zip(counts)
            .zip(checksums)
            .map(|((name, rows), checksum)| {
                let rows = rows.with_context(|| format!("no row count for table {name}"))?;
                Ok(TableStats {
                    name,
                    rows,
                    checksum,
                    digest: None,
                })
            })
            .collect()
    }

    /// Starts the client reading SQL on stdin into `database` (a restore).
    pub fn spawn_restore(&self, database: &str) -> anyhow::Result<StreamingChild> {
        let mut argv = self.argv.clone();
        argv.extend(self.conn.args());
        argv.extend(CLIENT_OPTIONS.iter().map(|s| s.to_string()));
        argv.push("--batch".into());
        argv.push(format!("--database={database}"));
        StreamingChild::spawn(&argv, &self.conn, process::Pipe::Piped, process::Pipe::Null)
    }

    /// A blocking `DROP DATABASE IF EXISTS`, for cleanup from a destructor (no runtime needed).
    pub fn drop_database_blocking(&self, database: &str) -> anyhow::Result<()> {
        let mut argv = self.argv.clone();
        argv.extend(self.conn.args());
        argv.extend(CLIENT_OPTIONS.iter().map(|s| s.to_string()));
        argv.push(format!(
            "--execute=DROP DATABASE IF EXISTS {}",
            quote_ident(database)
        ));
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

fn first_field(rows: &[Vec<String>]) -> Option<String> {
    rows.first()?.first().cloned()
}

/// The dump tool and how to run it.
#[derive(Debug, Clone)]
pub struct Dumper {
    /// Program and leading arguments (`mariadb-dump`, or a wrapper).
    pub argv: Vec<String>,
    /// Where and as whom.
    pub conn: Connection,
}

impl Dumper {
    /// First line of `--version`.
    pub async fn version(&self) -> anyhow::Result<String> {
        tool_version(&self.argv).await
    }

    /// Starts dumping `database` (its tables, routines, events and triggers; no `CREATE
    /// DATABASE`, so it restores into any database) to the child's stdout.
    pub fn spawn(&self, database: &str) -> anyhow::Result<StreamingChild> {
        let mut argv = self.argv.clone();
        argv.extend(self.conn.args());
        argv.extend(DUMP_OPTIONS.iter().map(|s| s.to_string()));
        argv.push(database.to_string());
        StreamingChild::spawn(&argv, &self.conn, process::Pipe::Null, process::Pipe::Piped)
    }
}

impl Dumper {
    /// Dumps `database` with the backup's options and reads each table's row count and digest
    /// off the dump ([`super::dump_scan`]); nothing is stored. How a restore of a format 2
    /// backup is compared with its manifest.
    pub async fn table_digests(&self, database: &str) -> anyhow::Result<Vec<TableStats>> {
        scan_dump(
            self.spawn(database)?,
            super::dump_scan::DumpScanner::new(),
            database,
            Exit::dump_message,
        )
        .await
    }
}

/// The first line of `argv --version` (a dump tool's, for the manifest).
pub(crate) async fn tool_version(argv: &[String]) -> anyhow::Result<String> {
    let mut argv = argv.to_vec();
    argv.push("--version".into());
    let out = process::run(&argv, None, &Default::default()).await?;
    if out.rc != 0 {
        bail!(
            "{} --version failed: {}",
            argv[0],
            process::quote_end(&out.stderr, 0)
        );
    }
    Ok(out
        .stdout
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string())
}

/// Reads a started dump of `database` to its end through `scanner`, storing nothing: each
/// table's row count and digest, as a backup's manifest has them. `message` says what an error
/// may quote of the tool's stderr. How a restore is compared with its manifest.
pub(crate) async fn scan_dump<S: super::dump_scan::Scan + Send + 'static>(
    mut dump: StreamingChild,
    scanner: S,
    database: &str,
    message: fn(&Exit) -> String,
) -> anyhow::Result<Vec<TableStats>> {
    let stdout = dump.take_stdout()?;
    let scan = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<TableStats>> {
        let mut reader = super::dump_scan::Scanning::with(stdout, scanner);
        std::io::copy(&mut reader, &mut std::io::sink()).context("reading the dump")?;
        reader.finish()
    });
    let scanned = scan.await.context("the dump reader thread failed")?;
    if scanned.is_err() {
        // Whatever the tool had left to say would go to a closed pipe.
        dump.kill();
    }
    let program = dump.program().to_string();
    let exit = dump.wait().await?;
    match scanned {
        Err(e) => Err(e.context(format!("dumping {database} with {program} to compare it"))),
        Ok(_) if !exit.success() => bail!(
            "{program} exited with code {} while dumping {database} to compare it: {}",
            exit.code(),
            message(&exit)
        ),
        Ok(tables) => Ok(tables),
    }
}

/// A tool whose stdin or stdout is a stream ([`process::Streaming`]), its password in
/// `MYSQL_PWD`; the password is redacted from the stderr it ends with.
pub struct StreamingChild {
    inner: process::Streaming,
    password: Secret,
}

/// How a MySQL/MariaDB tool ended (stderr redacted of the password).
#[derive(Debug)]
pub struct Exit {
    inner: process::Exit,
}

impl Exit {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.inner.success()
    }

    /// Exit code; negative: killed by that signal.
    pub fn code(&self) -> i32 {
        self.inner.code
    }

    /// What an error message may say of a client's stderr ([`tool_error`]: the client
    /// repeats the statement it failed on).
    pub fn message(&self) -> String {
        self.message_with(tool_error)
    }

    /// [`Exit::message`] with another tool's `tool_error` (`super::postgres`).
    pub fn message_with(&self, tool_error: fn(&str, usize) -> String) -> String {
        tool_error(&self.inner.stderr, self.inner.stderr_cut)
    }

    /// What an error message says of a dump tool's stderr: its end
    /// ([`process::quote_end`]); a dump tool does not repeat data, and a wrapper's own
    /// words are worth reading.
    pub fn dump_message(&self) -> String {
        self.inner.stderr_for_message()
    }

    /// Its whole stderr (the last [`process::STREAM_STDERR_CAP`] bytes), for `register` only.
    pub fn output(&self) -> bosun_model::event::CommandOutput {
        bosun_model::event::CommandOutput {
            stdout: String::new(),
            stderr: self.inner.stderr.clone(),
            rc: self.inner.code,
        }
    }
}

impl StreamingChild {
    fn spawn(
        argv: &[String],
        conn: &Connection,
        stdin: process::Pipe,
        stdout: process::Pipe,
    ) -> anyhow::Result<StreamingChild> {
        Self::spawn_with(argv, &conn.env(), &conn.password, stdin, stdout)
    }

    /// Starts `argv` with `env` (where its password travels); `password` is redacted from the
    /// stderr it ends with. For other databases' tools (`super::postgres`).
    pub(crate) fn spawn_with(
        argv: &[String],
        env: &std::collections::BTreeMap<String, String>,
        password: &Secret,
        stdin: process::Pipe,
        stdout: process::Pipe,
    ) -> anyhow::Result<StreamingChild> {
        Ok(StreamingChild {
            inner: process::Streaming::spawn(argv, env, stdin, stdout)?,
            password: password.clone(),
        })
    }

    /// The program's name, for messages.
    pub fn program(&self) -> &str {
        self.inner.program()
    }

    /// The child's stdout as a blocking file (for a compressor thread).
    pub fn take_stdout(&mut self) -> anyhow::Result<std::fs::File> {
        self.inner.take_stdout()
    }

    /// The child's stdin as a blocking file (for a decompressor thread).
    pub fn take_stdin(&mut self) -> anyhow::Result<std::fs::File> {
        self.inner.take_stdin()
    }

    /// Kills the process group now.
    pub fn kill(&mut self) {
        self.inner.kill();
    }

    /// Waits for the program to exit and returns its code and stderr (password redacted).
    pub async fn wait(self) -> anyhow::Result<Exit> {
        let mut inner = self.inner.wait().await?;
        inner.stderr = self.password.redact(&inner.stderr);
        Ok(Exit { inner })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_doubles_the_quote_character() {
        assert_eq!(quote_ident("a`b"), "`a``b`");
        assert_eq!(quote_str(r"it's \ here"), r"'it''s \\ here'");
    }

    #[test]
    fn tool_errors_keep_the_error_line_and_hide_data() {
        let stderr = "INSERT INTO `customers` VALUES (1,'Alice Rich'),(2,'Bob Card 4111')\n\
            ERROR 1064 (42000) at line 42: You have an error in your SQL syntax; check the manual that corresponds to your MariaDB server version for the right syntax to use near 'garbage,'Bob Card 4111'),(3,'it''s')' at line 1\n";
        let msg = tool_error(stderr, 0);
        assert!(
            msg.starts_with("ERROR 1064 (42000) at line 42: You have an error in your SQL syntax;"),
            "{msg}"
        );
        assert!(
            msg.contains("near '[36 bytes not shown]' at line 1"),
            "{msg}"
        );
        assert!(
            msg.ends_with(
                "[bosun: 1 other line of the tool's output not shown: they can hold data]"
            ),
            "{msg}"
        );
        for datum in ["Alice", "Bob", "4111", "garbage"] {
            assert!(!msg.contains(datum), "{datum} in {msg}");
        }
        let dup = tool_error(
            "ERROR 1062 (23000) at line 9: Duplicate entry 'alice@example.com' for key 'email'",
            100,
        );
        assert!(
            dup.contains("Duplicate entry '[17 bytes not shown]' for key 'email'"),
            "{dup}"
        );
        assert!(
            dup.ends_with(
                "[bosun: 100 earlier bytes of the tool's output not shown: they can hold data]"
            ),
            "{dup}"
        );
        // The tool's own words and errors without data stay whole.
        let own = "mariadb-dump: Got error: 1045: \"Access denied for user 'root'@'localhost'\"";
        assert_eq!(tool_error(own, 0), own);
        let table = "ERROR 1146 (42S02) at line 3: Table 'fresh.no_such_table' doesn't exist";
        assert_eq!(tool_error(table, 0), table);
        // The server quotes a multi-line statement (a dump's rows, one a line) whole.
        let rows: String = (250..760)
            .map(|i| format!(",({i},'customer {i}')\n"))
            .collect();
        let multi = format!(
            "ERROR 1064 (42000) at line 60: You have an error in your SQL syntax; check the manual that corresponds to your MariaDB server version for the right syntax to use near 'garbage)\n{rows}' at line 1\n"
        );
        let msg = tool_error(&multi, 0);
        assert_eq!(
            msg,
            format!(
                "ERROR 1064 (42000) at line 60: You have an error in your SQL syntax; check the manual that corresponds to your MariaDB server version for the right syntax to use near '[{} bytes not shown]' at line 1",
                rows.len() + 9
            )
        );
        // Thousands of statement echoes cost a count, and the message stays small.
        let echo = "INSERT INTO t VALUES (1,'x')\n".repeat(10_000)
            + "ERROR 1136 (21S01) at line 2: Column count doesn't match value count at row 1";
        let msg = tool_error(&echo, 0);
        assert!(msg.len() < 300, "{msg}");
        assert!(msg.contains("10000 other lines"), "{msg}");
    }

    #[test]
    fn the_password_is_never_in_the_arguments() {
        let conn = Connection {
            host: "db".into(),
            port: 3306,
            user: "backup".into(),
            password: Secret::new("pw-123".into()),
            extra_args: vec!["--ssl".into()],
            cleartext: false,
        };
        let args = conn.args();
        assert_eq!(args[0], "--no-defaults");
        assert!(args.iter().all(|a| !a.contains("pw-123")));
        assert_eq!(conn.env()["MYSQL_PWD"], "pw-123");
        assert!(!conn.env().contains_key(super::super::iam::CLEARTEXT_ENV.0));
    }

    #[test]
    fn an_iam_login_has_tls_the_cleartext_plugin_and_the_token_only_in_the_environment() {
        let token = "db.example:3306/?Action=connect&DBUser=bosun_backup&X-Amz-Signature=ab12";
        let conn = Connection {
            host: "db.example".into(),
            port: 3306,
            user: "bosun_backup".into(),
            password: Secret::new(token.into()),
            extra_args: super::super::iam::client_args("/etc/bosun/rds-global-bundle.pem"),
            cleartext: true,
        };
        let args = conn.args();
        for want in [
            "--ssl-ca=/etc/bosun/rds-global-bundle.pem",
            "--ssl-verify-server-cert",
            "--default-auth=mysql_clear_password",
        ] {
            assert!(args.iter().any(|a| a == want), "{want} in {args:?}");
        }
        assert!(
            args.iter()
                .all(|a| !a.contains("X-Amz") && !a.starts_with("--password")),
            "{args:?}"
        );
        let env = conn.env();
        assert_eq!(env["MYSQL_PWD"], token);
        assert_eq!(env["LIBMYSQL_ENABLE_CLEARTEXT_PLUGIN"], "Y");
    }
}

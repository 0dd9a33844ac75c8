//! [`MariaDb`]: a real MariaDB server with its own datadir on a free loopback port.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::process::{
    PeerProcess, StartFailure, current_user, find_program, is_root, random_hex, run_checked,
    start_with_retries,
};

const SERVER_HINT: &str =
    "run scripts/test, which installs mariadb-server (or: apt-get install mariadb-server)";
const CLIENT_HINT: &str =
    "run scripts/test, which installs mariadb-client (or: apt-get install mariadb-client)";
const SYSTEM_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"];
/// Unix socket paths must fit in `sun_path` (108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 100;

/// A `mariadbd` on `127.0.0.1:PORT` with a fresh datadir (from `mariadb-install-db`) and a Unix
/// socket, all in its own temporary directory.
///
/// Contract:
/// - `root` has a random password ([`password`](Self::password)) for every host it can come
///   from (`localhost`, `127.0.0.1`, `::1`, `%`) and all privileges; nothing else can log in.
///   The server runs with `--skip-name-resolve`.
/// - Pass the password to clients through the environment (`MYSQL_PWD`) or a file, never on a
///   command line: [`exec`](Self::exec) and [`client_command`](Self::client_command) do so.
/// - `start()` returns once root can run SQL over TCP with the password.
/// - Dropping it kills and reaps the server and removes the datadir; the port then refuses
///   connections.
pub struct MariaDb {
    process: PeerProcess,
    port: u16,
    password: String,
    client: PathBuf,
    dir: TempDir,
}

impl std::fmt::Debug for MariaDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MariaDb")
            .field("port", &self.port)
            .field("pid", &self.process.pid())
            .field("dir", &self.dir.path())
            .field("password", &"<redacted>")
            .finish()
    }
}

impl MariaDb {
    /// Initialises a datadir, starts the server on a free port, sets root's password and waits
    /// (up to 30 s) until an authenticated query over TCP succeeds.
    pub fn start() -> Result<MariaDb> {
        let install_db = find_program("mariadb-install-db", SYSTEM_DIRS, SERVER_HINT)?;
        let mariadbd = find_program("mariadbd", SYSTEM_DIRS, SERVER_HINT)?;
        let client = find_program("mariadb", SYSTEM_DIRS, CLIENT_HINT)?;
        let admin = find_program("mariadb-admin", SYSTEM_DIRS, CLIENT_HINT)?;
        let user = current_user()?;
        let root = is_root();
        start_with_retries("mariadbd", |port| {
            let dir = tempfile::Builder::new()
                .prefix("bosun-mariadb-")
                .tempdir()
                .context("cannot create a temporary directory for MariaDB")?;
            let d = dir.path();
            let socket = d.join("mysqld.sock");
            if socket.as_os_str().len() > MAX_SOCKET_PATH {
                return Err(StartFailure::Fatal(anyhow::anyhow!(
                    "MariaDB socket path {} is too long for a Unix socket: set TMPDIR to a shorter directory",
                    socket.display()
                )));
            }
            let datadir = d.join("data");
            let mut init = Command::new(&install_db);
            init.arg("--no-defaults")
                .arg(format!("--datadir={}", datadir.display()))
                .arg(format!("--user={user}"))
                // Its own tmpdir: a bootstrapping server deletes stray #sql files in its
                // tmpdir, which would break another test's install running in parallel.
                .arg(format!("--tmpdir={}", d.display()))
                .args([
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                    "--skip-name-resolve",
                    "--innodb-log-file-size=16M",
                ])
                .current_dir(d);
            run_checked(&mut init, "mariadb-install-db")?;

            let mut cmd = Command::new(&mariadbd);
            cmd.arg("--no-defaults")
                .arg(format!("--datadir={}", datadir.display()))
                .arg(format!("--port={port}"))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--socket={}", socket.display()))
                .arg(format!("--pid-file={}", d.join("mariadbd.pid").display()))
                .arg(format!("--tmpdir={}", d.display()))
                .args([
                    "--skip-name-resolve",
                    "--innodb-buffer-pool-size=64M",
                    "--innodb-log-file-size=16M",
                    "--max-connections=200",
                ])
                .current_dir(d);
            if root {
                // mariadbd refuses to run as root unless told to; as anyone else it just runs.
                cmd.arg("--user=root");
            }
            let process = PeerProcess::spawn("mariadbd", cmd, &d.join("mariadbd.log"), &[])?;
            let password = random_hex(16)?;
            let mut db = MariaDb {
                process,
                port,
                password,
                client: client.clone(),
                dir,
            };
            // 1. The server answers (ping succeeds even before we can log in).
            let ping_socket = socket.clone();
            let admin = admin.clone();
            db.process.wait_ready(|| {
                run_checked(
                    Command::new(&admin)
                        .args(["--no-defaults", "--connect-timeout=2", "-uroot"])
                        .arg(format!("--socket={}", ping_socket.display()))
                        .arg("ping"),
                    "mariadb-admin ping",
                )
                .map(|_| ())
            })?;
            // 2. Root gets a password everywhere, via the socket (no password yet).
            db.set_root_password(&socket)?;
            // 3. An authenticated query over TCP works.
            let check = db
                .exec("SELECT 1")
                .context("login over TCP with the new password")?;
            if check.trim() != "1" {
                return Err(StartFailure::Fatal(anyhow::anyhow!(
                    "MariaDB answered {check:?} to SELECT 1"
                )));
            }
            Ok(db)
        })
    }

    fn set_root_password(&self, socket: &Path) -> Result<()> {
        let pw = &self.password; // hex only: safe inside a SQL string literal
        let sql = format!(
            "ALTER USER root@localhost IDENTIFIED BY '{pw}';
             ALTER USER IF EXISTS root@'127.0.0.1' IDENTIFIED BY '{pw}';
             ALTER USER IF EXISTS root@'::1' IDENTIFIED BY '{pw}';
             CREATE USER IF NOT EXISTS root@'%' IDENTIFIED BY '{pw}';
             GRANT ALL PRIVILEGES ON *.* TO root@'%' WITH GRANT OPTION;
             FLUSH PRIVILEGES;\n"
        );
        let mut cmd = Command::new(&self.client);
        cmd.args(["--no-defaults", "--batch", "-uroot"])
            .arg(format!("--socket={}", socket.display()))
            .env_remove("MYSQL_PWD");
        run_sql(cmd, &sql).context("setting root's password")?;
        Ok(())
    }

    /// The TCP port (bound to 127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Always `127.0.0.1`.
    pub fn host(&self) -> String {
        "127.0.0.1".into()
    }

    /// The server's Unix socket.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }

    /// Always `root`.
    pub fn user(&self) -> String {
        "root".into()
    }

    /// root's password (random per instance, hex).
    pub fn password(&self) -> String {
        self.password.clone()
    }

    /// The PID of the server process.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The server's temporary directory (datadir under `data/`, log, socket).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The `mariadb` client connected as root over TCP (`--no-defaults --protocol=tcp
    /// --host=127.0.0.1 --port=PORT --user=root`), the password in `MYSQL_PWD`. Add your own
    /// args (e.g. `--batch`, a database name) and stdin.
    pub fn client_command(&self) -> Command {
        let mut cmd = Command::new(&self.client);
        cmd.args(["--no-defaults", "--protocol=tcp", "--host=127.0.0.1"])
            .arg(format!("--port={}", self.port))
            .arg("--user=root")
            .env("MYSQL_PWD", &self.password);
        cmd
    }

    /// Runs `sql` (one or more `;`-separated statements, fed on stdin) as root over TCP with
    /// `--batch --skip-column-names`; returns stdout (tab-separated rows, one per line).
    /// A failing statement is an error carrying the client's stderr.
    pub fn exec(&self, sql: &str) -> Result<String> {
        let mut cmd = self.client_command();
        cmd.args(["--batch", "--skip-column-names"]);
        run_sql(cmd, sql)
    }

    /// The tail of the server's log (for a failing test's message).
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}

fn run_sql(mut cmd: Command, sql: &str) -> Result<String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run the mariadb client")?;
    // Write stdin from another thread: a large result could otherwise fill stdout's pipe
    // while we are still writing a large statement.
    let mut stdin = child.stdin.take().context("mariadb client has no stdin")?;
    let sql_owned = sql.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(sql_owned.as_bytes()));
    let out = child
        .wait_with_output()
        .context("waiting for the mariadb client")?;
    let written = writer.join();
    if !out.status.success() {
        bail!(
            "mariadb client failed ({}) running {:?}: {}",
            out.status,
            abbreviate(sql),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => bail!("cannot send SQL to the mariadb client: {e}"),
        Err(_) => bail!("the thread sending SQL to the mariadb client panicked"),
    }
    String::from_utf8(out.stdout).context("mariadb client output is not UTF-8")
}

fn abbreviate(sql: &str) -> String {
    let s: String = sql.chars().take(200).collect();
    if s.len() < sql.len() {
        format!("{s}...")
    } else {
        s
    }
}

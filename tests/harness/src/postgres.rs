//! [`Postgres`]: a real PostgreSQL server (Debian's packages) in a throwaway cluster, reachable
//! only through a Unix socket in its own private directory.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::process::{PeerProcess, StartFailure, find_program, is_root, random_hex, run_checked};

const HINT: &str = "run scripts/test, which installs postgresql (or: apt-get install postgresql)";
/// The socket's port number: only names the socket file (`.s.PGSQL.5432`), no TCP is opened.
const PORT: u16 = 5432;
/// The superuser initdb creates.
const USER: &str = "bosun";
/// Unix socket paths must fit in `sun_path` (108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 100;

/// A `postgres` cluster from `initdb`, started by the test and killed on drop.
///
/// Contract:
/// - `listen_addresses = ''`: no TCP port at all; the only way in is the socket in
///   [`socket_dir`](Self::socket_dir), a fresh temporary directory (pass it as libpq's host).
/// - Run as root (as in CI containers), the cluster belongs to `nobody`: initdb and postgres
///   refuse to run as root. Otherwise it runs as the current user.
/// - The superuser [`user`](Self::user) has a random password ([`password`](Self::password)),
///   required for every connection (`scram-sha-256`, also over the socket); hand it to clients in
///   `PGPASSWORD` ([`psql`](Self::psql) does), never on a command line.
/// - `start()` returns once a password-authenticated query succeeds.
/// - Dropping it kills the server and removes the cluster.
pub struct Postgres {
    process: PeerProcess,
    password: String,
    psql: PathBuf,
    dir: TempDir,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("dir", &self.dir.path())
            .field("pid", &self.process.pid())
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Debian keeps the server binaries in `/usr/lib/postgresql/<major>/bin`: the newest there.
fn server_bin_dir() -> Result<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .with_context(|| format!("no /usr/lib/postgresql: {HINT}"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop()
        .map(|(_, d)| d)
        .with_context(|| format!("no initdb under /usr/lib/postgresql/*/bin: {HINT}"))
}

/// uid and gid of `nobody`, whom the cluster runs as when the tests run as root.
fn nobody() -> Result<(u32, u32)> {
    let id = |flag: &str| -> Result<u32> {
        let out = run_checked(Command::new("id").args([flag, "nobody"]), "id nobody")?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .context("id printed no number")
    };
    Ok((id("-u")?, id("-g")?))
}

impl Postgres {
    /// Creates a cluster (`initdb`), starts `postgres` on a private socket directory and waits
    /// until the superuser can log in with its password.
    pub fn start() -> Result<Postgres> {
        let bin = server_bin_dir()?;
        let psql = find_program("psql", &["/usr/bin"], HINT)?;
        let owner = if is_root() { Some(nobody()?) } else { None };
        let dir = tempfile::Builder::new()
            .prefix("bosun-pg-")
            .tempdir()
            .context("cannot create a temporary directory for PostgreSQL")?;
        let d = dir.path();
        let socket = d.join(format!(".s.PGSQL.{PORT}"));
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            bail!(
                "PostgreSQL socket path {} is too long for a Unix socket: set TMPDIR to a shorter directory",
                socket.display()
            );
        }
        let password = random_hex(16)?;
        let pwfile = d.join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n"))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(d, Some(uid), Some(gid))?;
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))?;
        }
        let as_owner = |cmd: &mut Command| {
            if let Some((uid, gid)) = owner {
                // As root, std also drops the supplementary groups (setgroups(0)).
                cmd.uid(uid).gid(gid);
            }
            cmd.env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("LC_ALL", "C.UTF-8")
                .current_dir("/");
        };
        let data = d.join("data");
        let mut init = Command::new(bin.join("initdb"));
        init.arg("-D")
            .arg(&data)
            .args(["-U", USER, "--auth=scram-sha-256", "--encoding=UTF8"])
            .args(["--locale=C.UTF-8", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()));
        as_owner(&mut init);
        run_checked(&mut init, "initdb")?;
        std::fs::remove_file(&pwfile)?;

        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-c", "listen_addresses="])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", d.display()))
            .args(["-p", &PORT.to_string()])
            .args(["-c", "fsync=off", "-c", "shared_buffers=16MB"]);
        as_owner(&mut cmd);
        let mut process = PeerProcess::spawn("postgres", cmd, &d.join("postgres.log"), &[])?;
        let (socket_dir, probe_psql, probe_pw) = (d.to_path_buf(), psql.clone(), password.clone());
        let ready = process.wait_ready(|| {
            let mut cmd = psql_command(&probe_psql, &socket_dir, &probe_pw, "postgres");
            run_sql(&mut cmd, "SELECT 1").map(|_| ())
        });
        match ready {
            Ok(()) => Ok(Postgres {
                process,
                password,
                psql,
                dir,
            }),
            Err(StartFailure::Exited(e) | StartFailure::Fatal(e)) => Err(e),
        }
    }

    /// The directory holding the server's socket: libpq's `host`.
    pub fn socket_dir(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// The port naming the socket file (no TCP port is open).
    pub fn port(&self) -> u16 {
        PORT
    }

    /// The superuser.
    pub fn user(&self) -> String {
        USER.into()
    }

    /// The superuser's password (random per cluster, hex).
    pub fn password(&self) -> String {
        self.password.clone()
    }

    /// `psql -X -w -q -v ON_ERROR_STOP=1 -A -t` connected to `database` as the superuser, the
    /// password in `PGPASSWORD`. Add stdin or `-c`.
    pub fn psql(&self, database: &str) -> Command {
        psql_command(&self.psql, self.dir.path(), &self.password, database)
    }

    /// Runs `sql` (fed on stdin) in `database`; returns stdout (`|`-separated rows, one a line).
    /// A failing statement is an error carrying psql's stderr.
    pub fn exec(&self, database: &str, sql: &str) -> Result<String> {
        run_sql(&mut self.psql(database), sql)
    }

    /// The tail of the server's log (for a failing test's message).
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}

fn psql_command(psql: &Path, socket_dir: &Path, password: &str, database: &str) -> Command {
    let mut cmd = Command::new(psql);
    cmd.args(["-X", "-w", "-q", "-v", "ON_ERROR_STOP=1", "-A", "-t"])
        .arg(format!("--dbname={database}"))
        .env("PGHOST", socket_dir)
        .env("PGPORT", PORT.to_string())
        .env("PGUSER", USER)
        .env("PGPASSWORD", password);
    cmd
}

fn run_sql(cmd: &mut Command, sql: &str) -> Result<String> {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run psql")?;
    let mut stdin = child.stdin.take().context("psql has no stdin")?;
    let owned = sql.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(owned.as_bytes()));
    let out = child.wait_with_output().context("waiting for psql")?;
    let _ = writer.join();
    if !out.status.success() {
        bail!(
            "psql failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).context("psql output is not UTF-8")
}

//! [`Sshd`]: a real OpenSSH server on a free loopback port with its own keys and config.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::process::{
    PeerProcess, StartFailure, current_user, find_program, is_root, port_is_open, run_checked,
    start_with_retries,
};

const SERVER_HINT: &str =
    "run scripts/test, which installs openssh-server (or: apt-get install openssh-server)";
const CLIENT_HINT: &str =
    "run scripts/test, which installs openssh-client (or: apt-get install openssh-client)";
const SYSTEM_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"];

/// An OpenSSH `sshd -D` on `127.0.0.1:PORT`, with everything in its own temporary directory:
/// an ed25519 host key, an ed25519 client key (the only authorized key), `sshd_config`, the
/// log, and a `known_hosts` holding exactly this server's host key.
///
/// Contract:
/// - Logins are as the current user ([`user`](Self::user)) with the client key only
///   (`PasswordAuthentication no`, `UsePAM no`). TCP and Unix-socket forwarding are allowed,
///   so tests can tunnel to an agent's API socket.
/// - `start()` returns once the real `ssh` client has run `true` through it.
/// - Dropping it kills and reaps the listener and removes the directory; the port then refuses
///   connections. Sessions still open at that moment end when their client disconnects.
/// - `/run/sshd` must exist (sshd's privilege-separation directory): created when running
///   as root, else the error says to run scripts/test.
#[derive(Debug)]
pub struct Sshd {
    process: PeerProcess,
    port: u16,
    user: String,
    host_key_pub: String,
    ssh: PathBuf,
    dir: TempDir,
}

impl Sshd {
    /// Writes keys and config, starts sshd on a free port and waits (up to 30 s) until an
    /// `ssh ... true` through it succeeds.
    pub fn start() -> Result<Sshd> {
        Self::start_with("")
    }

    /// [`Sshd::start`] with `extra` appended to its sshd_config (sshd(8) takes the first value
    /// of a keyword, so `extra` adds keywords, such as a `ForceCommand` that runs every session
    /// inside a [`crate::HostBox`]).
    pub fn start_with(extra: &str) -> Result<Sshd> {
        let sshd = find_program("sshd", SYSTEM_DIRS, SERVER_HINT)?;
        let ssh = find_program("ssh", SYSTEM_DIRS, CLIENT_HINT)?;
        let keygen = find_program("ssh-keygen", SYSTEM_DIRS, CLIENT_HINT)?;
        ensure_privsep_dir()?;
        let user = current_user()?;
        start_with_retries("sshd", |port| {
            let dir = tempfile::Builder::new()
                .prefix("bosun-sshd-")
                .tempdir()
                .context("cannot create a temporary directory for sshd")?;
            let d = dir.path();
            for key in ["host_ed25519", "client"] {
                run_checked(
                    Command::new(&keygen)
                        .args(["-q", "-t", "ed25519", "-N", "", "-C"])
                        .arg(format!("bosun-test-{key}"))
                        .arg("-f")
                        .arg(d.join(key)),
                    "ssh-keygen",
                )?;
            }
            let host_key_pub = read_pub_key(&d.join("host_ed25519.pub"))?;
            std::fs::write(
                d.join("known_hosts"),
                format!("{}\n", known_hosts_line(port, &host_key_pub)),
            )
            .context("cannot write known_hosts")?;
            std::fs::write(d.join("sshd_config"), sshd_config(d, port) + extra)
                .context("cannot write sshd_config")?;

            let mut cmd = Command::new(&sshd);
            cmd.arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(d.join("sshd_config"))
                .arg("-E")
                .arg(d.join("sshd.log"));
            let process =
                PeerProcess::spawn("sshd", cmd, &d.join("sshd.out"), &[d.join("sshd.log")])?;
            let mut server = Sshd {
                process,
                port,
                user: user.clone(),
                host_key_pub,
                ssh: ssh.clone(),
                dir,
            };
            server.wait_ready()?;
            Ok(server)
        })
    }

    fn wait_ready(&mut self) -> std::result::Result<(), StartFailure> {
        let port = self.port;
        let mut probe = self.ssh_command();
        probe.arg("true");
        self.process.wait_ready(|| {
            if !port_is_open(port) {
                bail!("port {port} does not accept connections yet");
            }
            let out = probe
                .stdin(Stdio::null())
                .output()
                .context("cannot run ssh")?;
            if !out.status.success() {
                bail!(
                    "ssh ... true failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(())
        })
    }

    /// The port sshd listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PID of the listening sshd.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The host's public key line, e.g. `ssh-ed25519 AAAA...` (without the comment).
    pub fn host_key_pub(&self) -> String {
        self.host_key_pub.clone()
    }

    /// The line a `known_hosts` file needs for this server:
    /// `[127.0.0.1]:PORT ssh-ed25519 AAAA...`.
    pub fn known_hosts_line(&self) -> String {
        known_hosts_line(self.port, &self.host_key_pub)
    }

    /// A `known_hosts` file holding just [`known_hosts_line`](Self::known_hosts_line).
    pub fn known_hosts_path(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// The client's private key (ed25519, no passphrase, mode 0600); its `.pub` beside it.
    pub fn client_key_path(&self) -> PathBuf {
        self.dir.path().join("client")
    }

    /// The user to log in as: the user running the tests.
    pub fn user(&self) -> String {
        self.user.clone()
    }

    /// The server's temporary directory (keys, config, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// An `ssh_config` block for `Host alias` pointing at this server with the client key and
    /// this server's `known_hosts`, for code that honours `~/.ssh/config`.
    pub fn ssh_config_entry(&self, alias: &str) -> String {
        format!(
            "Host {alias}\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  StrictHostKeyChecking yes\n",
            self.port,
            self.user,
            self.client_key_path().display(),
            self.known_hosts_path().display()
        )
    }

    /// The real `ssh` client, ready to run a remote command: append the command as args.
    /// Ignores `~/.ssh/config` and any agent; checks the host key strictly against
    /// [`known_hosts_path`](Self::known_hosts_path); never prompts (`BatchMode`).
    pub fn ssh_command(&self) -> Command {
        self.ssh_command_with_known_hosts(&self.known_hosts_path())
    }

    /// Like [`ssh_command`](Self::ssh_command) but checking the host key against
    /// `known_hosts` (e.g. one with a wrong key, to see the connection refused).
    pub fn ssh_command_with_known_hosts(&self, known_hosts: &Path) -> Command {
        let mut cmd = Command::new(&self.ssh);
        cmd.args(["-F", "/dev/null", "-i"])
            .arg(self.client_key_path())
            .args(["-p", &self.port.to_string()])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args([
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "IdentityAgent=none",
                "-o",
                "UpdateHostKeys=no",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg(format!("{}@127.0.0.1", self.user));
        cmd
    }

    /// The tail of sshd's log (for a failing test's message).
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}

fn known_hosts_line(port: u16, key: &str) -> String {
    format!("[127.0.0.1]:{port} {key}")
}

/// `ssh-ed25519 AAAA...` from a `.pub` file, without the comment.
fn read_pub_key(path: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut fields = text.split_whitespace();
    match (fields.next(), fields.next()) {
        (Some(kind), Some(key)) => Ok(format!("{kind} {key}")),
        _ => bail!("{} is not a public key: {text:?}", path.display()),
    }
}

fn sshd_config(d: &Path, port: u16) -> String {
    format!(
        "Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {pid}
AuthorizedKeysFile {authorized}
PubkeyAuthentication yes
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
LogLevel VERBOSE
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
StreamLocalBindUnlink yes
MaxStartups 64
MaxSessions 64
Subsystem sftp internal-sftp
",
        host_key = d.join("host_ed25519").display(),
        pid = d.join("sshd.pid").display(),
        authorized = d.join("client.pub").display(),
    )
}

/// sshd refuses to start without `/run/sshd` (a tmpfs path, gone after each reboot).
fn ensure_privsep_dir() -> Result<()> {
    let dir = Path::new("/run/sshd");
    if dir.is_dir() {
        return Ok(());
    }
    if is_root() {
        std::fs::create_dir_all(dir).with_context(|| "cannot create /run/sshd")?;
        return Ok(());
    }
    bail!(
        "sshd needs the directory /run/sshd: run scripts/test (it creates it), or `sudo mkdir -p /run/sshd`"
    )
}

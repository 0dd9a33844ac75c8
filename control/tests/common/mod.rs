//! What the control CLI's SSH tests share: the workspace's `bosund`, and a loopback sshd with a
//! HOME of bosun's own (so `~/.ssh` is exactly what a test writes, and no ssh-agent is seen).
#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use bosun_harness::Sshd;

/// The `bosun` binary under test.
pub const BOSUN: &str = env!("CARGO_BIN_EXE_bosun");

/// The `bosund` of this workspace, built once per test binary.
pub fn bosund() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "bosun-agent", "--bin", "bosund"])
            .status()
            .expect("running cargo build for bosund");
        assert!(status.success(), "building bosund failed");
        let path = Path::new(BOSUN).with_file_name("bosund");
        assert!(path.is_file(), "bosund not found at {}", path.display());
        path
    })
}

/// An sshd on loopback (the "host" is this machine), a HOME for bosun with an empty `.ssh`,
/// and a work directory.
pub struct SshHost {
    /// The server.
    pub sshd: Sshd,
    /// bosun's HOME.
    pub home: tempfile::TempDir,
    /// Playbooks, remote paths, output.
    pub work: tempfile::TempDir,
}

impl SshHost {
    /// Starts the sshd; its host key is not trusted yet (see [`SshHost::trust_host`]).
    pub fn start() -> SshHost {
        let sshd = Sshd::start().expect("starting sshd");
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
        let work = tempfile::tempdir().unwrap();
        SshHost { sshd, home, work }
    }

    /// bosun's `~/.ssh/known_hosts`.
    pub fn known_hosts(&self) -> PathBuf {
        self.home.path().join(".ssh/known_hosts")
    }

    /// Records the sshd's host key in bosun's known_hosts.
    pub fn trust_host(&self) {
        std::fs::write(
            self.known_hosts(),
            format!("{}\n", self.sshd.known_hosts_line()),
        )
        .unwrap();
    }

    /// A path in the work directory.
    pub fn w(&self, p: &str) -> PathBuf {
        self.work.path().join(p)
    }

    /// `user@127.0.0.1:port`.
    pub fn host(&self) -> String {
        format!("{}@127.0.0.1:{}", self.sshd.user(), self.sshd.port())
    }

    /// A `bosun` command with this HOME, no ssh-agent, run from the work directory.
    pub fn bosun_command(&self) -> Command {
        let mut cmd = Command::new(BOSUN);
        cmd.env("HOME", self.home.path())
            .env_remove("SSH_AUTH_SOCK")
            .current_dir(self.work.path());
        cmd
    }
}

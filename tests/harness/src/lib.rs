//! # bosun-harness
//!
//! Starts **real** peers for bosun's tests, each on a free 127.0.0.1 port and in its own
//! temporary directory, so tests run in parallel without sharing ports, paths or state:
//!
//! | type | peer |
//! | --- | --- |
//! | [`Moto`] | `moto_server` (AWS APIs) from the venv `scripts/test` prepares |
//! | [`Sshd`] | OpenSSH `sshd` with its own host key, client key and config |
//! | [`MariaDb`] | `mariadbd` with a fresh datadir and a random root password |
//! | [`ArtifactServer`] | a static HTTP file server over a directory (release downloads) |
//! | [`Imds`] | an IMDSv2 stub (token flow, instance identity, role credentials) |
//! | [`PrivateNet`] | a network namespace with a bridge for [`HostBox`]es (`BoxSpec::network`) |
//!
//! Common contract:
//! - `start()` returns only once the peer really answers (polled, never a fixed sleep); if it
//!   is not ready within 30 s the error says what was checked and quotes the peer's log.
//! - A missing program is an error naming the package that provides it and pointing at
//!   `scripts/test`, which installs everything: a test never passes silently without its peer.
//! - If a process peer exits while starting (typically: its port was taken by another test in
//!   the race between probing a free port and binding it), it is started again on a fresh
//!   port, up to 3 times.
//! - Dropping a peer kills it and waits for it (no zombies), and removes its temporary
//!   directory; its port then refuses connections. A test process killed by SIGKILL cannot
//!   run destructors, so its peers outlive it (Ctrl-C in a terminal reaches them too, as they
//!   stay in the test's process group).

mod artifact;
pub mod hostbox;
pub mod http;
mod imds;
mod mariadb;
mod moto;
mod netns;
mod postgres;
mod process;
mod sshd;
mod venv;

pub use artifact::{ArtifactServer, ServedRequest};
pub use hostbox::{BoxSpec, HostBox};
pub use imds::{Imds, ImdsConfig};
pub use mariadb::MariaDb;
pub use moto::Moto;
pub use netns::PrivateNet;
pub use postgres::Postgres;
pub use process::{current_user, free_port, port_is_open};
pub use sshd::Sshd;
pub use venv::{checkov_program, venv_program};

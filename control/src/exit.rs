//! `bosun`'s exit codes, one list for every command.

/// Every host ok or changed; the command did what was asked.
pub const OK: u8 = 0;
/// Some host had a failed step, or hosts were not started.
pub const FAILED: u8 = 1;
/// Invalid playbook, stack file or command line; nothing ran.
pub const INVALID: u8 = 2;
/// Some host was unreachable (wins over [`FAILED`]: its state is unknown).
pub const UNREACHABLE: u8 = 4;
/// Interrupted (Ctrl-C or SIGTERM); the runs were cancelled (wins over the rest).
pub const CANCELLED: u8 = 130;

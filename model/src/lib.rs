//! bosun's model: what a playbook says, checked, without running anything.
//!
//! Playbook text → [`playbook::Playbook`] or every [`playbook::Diagnostic`] with its span; each
//! step kind's argument types and their validation ([`steps`]); the playbook JSON Schema; the
//! run events both binaries exchange ([`event`]) and their renderings ([`output`]); variable
//! names and Jinja analysis ([`jinja`]).
//!
//! Invariant: this crate does no I/O. It starts no process, opens no socket and reads or
//! writes no file; it has no async runtime. Its callers hand it text and get values back. That
//! is what lets `bosun` (the operator's CLI) and the fuzz target build it without the agent's
//! runtime (tokio, the AWS SDK, SQLite), and what keeps its logic testable without a host.

pub mod backup;
pub mod cli_docs;
pub mod event;
pub mod jinja;
pub mod mode;
pub mod output;
pub mod platform;
pub mod playbook;
pub mod secret_source;
pub mod steps;
pub mod vars;

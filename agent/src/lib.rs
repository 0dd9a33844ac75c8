//! bosund's library: the engine and how each step kind runs on a host, the daemon and its API,
//! telemetry, backups, the run journal. The playbook model it executes (parsing, validation,
//! step arguments, run events) is the `bosun_model` crate. The `bosund` binary is a thin
//! command line over this; see ARCHITECTURE.md for the map and the layers.

pub mod api;
pub(crate) mod aws;
pub mod backup;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod host;
pub mod journal;
pub mod queue;
pub mod scheduler;
pub(crate) mod secrets;
pub(crate) mod steps;
pub(crate) mod telemetry;
pub mod vars;

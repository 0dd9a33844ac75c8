//! bosun's agent library: the playbook model and its validation, the engine and the step kinds,
//! the run journal, and the event types shared with the control CLI. The `bosund` binary is a
//! thin command line over it; see ARCHITECTURE.md for the map.

pub mod api;
pub mod aws;
pub mod backup;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod event;
pub mod host;
pub mod jinja;
pub mod journal;
pub mod output;
pub mod playbook;
pub mod scheduler;
pub mod secrets;
pub mod steps;
pub mod telemetry;
pub mod vars;

//! bosund's library: the engine and how each step kind runs on a host, the daemon and its API,
//! telemetry, backups, the run journal. The playbook model it executes (parsing, validation,
//! step arguments, run events) is the `bosun_model` crate. The `bosund` binary is a thin
//! command line over this; see ARCHITECTURE.md for the map and the layers.

// Without the `aws` feature (scripts/demo's build) the AWS-only modules are left out and
// `aws` is a stand-in whose `Aws::connect` says so; helpers only they use go unused.
#![cfg_attr(not(feature = "aws"), allow(dead_code, unused_imports))]

pub mod api;
#[cfg_attr(not(feature = "aws"), path = "aws_off.rs")]
pub(crate) mod aws;
#[cfg(feature = "aws")]
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

/// What a bosund built without the `aws` cargo feature says when asked for something that
/// calls AWS.
pub(crate) const WITHOUT_AWS: &str = "this bosund was built without AWS support (the `aws` cargo feature, on by default; scripts/demo leaves it out): build it with `cargo build -p bosun-agent`";

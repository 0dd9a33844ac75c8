//! The AWS stack around the host, as data: `stack.toml` ([`config`]), the CloudFormation
//! model ([`cfn`]) and template ([`template`]), the first boot's user-data ([`userdata`]) and
//! artefacts ([`artifacts`]). Nothing here talks to AWS; `crate::cloud` does.

pub mod artifacts;
pub mod cfn;
pub mod config;
pub mod template;
pub mod userdata;

//! The AWS stack around the host, as data: `stack.toml` ([`config`]), the CloudFormation
//! model ([`cfn`]), the resource property types ([`resources`]), the templates ([`template`],
//! with [`edge`] for CloudFront and what must live in us-east-1, [`nodes`] for the k3s agents'
//! Auto Scaling group, and [`notify`] for the alarm topic), the first boot's user-data
//! ([`userdata`], placed in the template by [`boot`]) and artefacts ([`artifacts`]). Nothing here talks to AWS; `crate::cloud`
//! does.

pub mod artifacts;
pub mod boot;
pub mod cfn;
pub mod config;
pub mod edge;
pub mod nodes;
pub mod notify;
pub mod resources;
pub mod template;
pub mod userdata;

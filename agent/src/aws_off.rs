//! The stand-in for `aws` in a bosund built without the `aws` cargo feature (scripts/demo's
//! build): the same names, and [`Aws::connect`] fails saying how to get the real thing. No
//! [`Aws`] can exist, so nothing that needs one runs. The step kinds and telemetry sinks that
//! call AWS are not compiled at all (`steps`, `telemetry`); see `aws.rs` for the real module.

/// Where to reach AWS (as `bosun_aws::AwsTarget`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsTarget {
    /// Region.
    pub region: Option<String>,
    /// Endpoint for every service.
    pub endpoint_url: Option<String>,
}

/// No AWS clients in this build: a value of this type cannot be made.
#[derive(Debug, Clone)]
pub enum Aws {}

impl Aws {
    /// Fails: this build has no AWS support.
    pub async fn connect(_target: &AwsTarget) -> anyhow::Result<Aws> {
        anyhow::bail!(crate::WITHOUT_AWS)
    }

    /// Unreachable: no [`Aws`] exists.
    pub async fn ssm_parameter(&self, _name: &str) -> Result<String, String> {
        match *self {}
    }

    /// Unreachable: no [`Aws`] exists.
    pub async fn secret_string(&self, _id: &str) -> Result<String, String> {
        match *self {}
    }
}

//! [`Point`]: one figure of a host sample, as sampled, kept in the journal's backlog, sent to
//! CloudWatch and shown in `GET /metrics`. A plain type shared by `metrics` (which makes
//! points), `sinks::cloudwatch` (which sends them) and `stats` (which renders the latest), so
//! none of those depends on another for it.

use serde::{Deserialize, Serialize};

/// One figure of a sample. The serde names are short because every sample is kept as JSON in
/// the journal's backlog until sent: renaming them makes a backlog left by an older bosund
/// unreadable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Point {
    /// Metric name (`mem_used_percent`).
    #[serde(rename = "n")]
    pub name: String,
    /// CloudWatch unit (`Percent`, `Bytes`, `Count`, `None`).
    #[serde(rename = "u")]
    pub unit: String,
    /// The value.
    #[serde(rename = "v")]
    pub value: f64,
    /// Dimensions besides InstanceId and the configured ones (`path`, `interface`, ...).
    #[serde(rename = "d", default)]
    pub dims: Vec<(String, String)>,
}

//! CloudWatch metrics: PutMetricData, in chunks within the API's limits (1,000 metrics and
//! 1 MB per request since 2023; each point carries its own timestamp, so back-filled points
//! keep their original time).

use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};

use crate::aws::describe_error;
use crate::telemetry::point::Point;

/// Most metrics in one PutMetricData.
pub(crate) const MAX_METRICS: usize = 1000;
/// Most bytes of one PutMetricData body (1 MB), with room for the envelope.
pub(crate) const MAX_BYTES: usize = 1_000_000 - 10_000;

/// A point with its time, as sent.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TimedPoint {
    /// Milliseconds since the epoch.
    pub ts_ms: i64,
    /// The point.
    pub point: Point,
}

/// The size a point takes in a query-protocol body (an overestimate: every field name and
/// value URL-encoded, index numbers included).
pub(crate) fn encoded_size(p: &TimedPoint, common_dims: &[(String, String)]) -> usize {
    let dims: usize = p
        .point
        .dims
        .iter()
        .chain(common_dims)
        .map(|(k, v)| 3 * (k.len() + v.len()) + 120)
        .sum();
    3 * p.point.name.len() + dims + 250
}

/// Splits points into requests within [`MAX_METRICS`] and [`MAX_BYTES`].
pub(crate) fn chunks(
    points: &[TimedPoint],
    common_dims: &[(String, String)],
) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, p) in points.iter().enumerate() {
        let size = encoded_size(p, common_dims);
        if i > start && (i - start >= MAX_METRICS || bytes + size > MAX_BYTES) {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < points.len() {
        out.push(start..points.len());
    }
    out
}

/// Sends one chunk. `high_resolution`: stored at 1-second resolution (intervals under 60 s).
pub(crate) async fn put(
    client: &Client,
    namespace: &str,
    common_dims: &[(String, String)],
    points: &[TimedPoint],
    high_resolution: bool,
) -> Result<(), String> {
    let data: Vec<MetricDatum> = points
        .iter()
        .map(|tp| {
            let dims = common_dims
                .iter()
                .chain(&tp.point.dims)
                .map(|(k, v)| Dimension::builder().name(k).value(v).build())
                .collect();
            let mut d = MetricDatum::builder()
                .metric_name(&tp.point.name)
                .value(tp.point.value)
                .unit(StandardUnit::from(tp.point.unit.as_str()))
                .timestamp(DateTime::from_millis(tp.ts_ms))
                .set_dimensions(Some(dims));
            if high_resolution {
                d = d.storage_resolution(1);
            }
            d.build()
        })
        .collect();
    client
        .put_metric_data()
        .namespace(namespace)
        .set_metric_data(Some(data))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("PutMetricData to {namespace}: {}", describe_error(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(name: &str) -> TimedPoint {
        TimedPoint {
            ts_ms: 0,
            point: Point {
                name: name.into(),
                unit: "Percent".into(),
                value: 1.0,
                dims: vec![("path".into(), "/".into())],
            },
        }
    }

    #[test]
    fn chunks_stay_within_count_and_bytes() {
        let pts: Vec<_> = (0..2500).map(|_| tp("m")).collect();
        let c = chunks(&pts, &[]);
        assert_eq!(c, vec![0..1000, 1000..2000, 2000..2500]);
        let big: Vec<_> = (0..900).map(|_| tp(&"x".repeat(250))).collect();
        let dims = vec![("InstanceId".to_string(), "i-1".to_string())];
        for r in chunks(&big, &dims) {
            let bytes: usize = big[r.clone()].iter().map(|p| encoded_size(p, &dims)).sum();
            assert!(bytes <= MAX_BYTES && r.len() <= MAX_METRICS);
        }
        assert!(chunks(&[], &[]).is_empty());
    }
}

//! AWS clients for the steps that talk to AWS (backups to S3, RDS snapshots, secrets from SSM).
//!
//! Credentials and region come from the standard chain (environment, shared profile, IMDS on
//! EC2). The endpoint can be replaced for every service with `AWS_ENDPOINT_URL` (or per service
//! with `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL_SSM`: the SDK reads both), or by a step's
//! `endpoint_url` argument, which wins. A replaced endpoint (moto, s3s-fs, a VPC endpoint by IP)
//! gets path-style S3 addressing: such endpoints have no per-bucket host names.
//!
//! HTTPS goes through rustls with ring, as in the rest of the workspace (no aws-lc build).

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::RequestChecksumCalculation;
use aws_smithy_http_client::tls;

/// Where to reach AWS: optional region and endpoint overrides on top of the standard chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsTarget {
    /// Region; `None` takes it from the chain (`AWS_REGION`, profile, IMDS).
    pub region: Option<String>,
    /// Endpoint for every service; `None` takes it from `AWS_ENDPOINT_URL*` or AWS's own.
    pub endpoint_url: Option<String>,
}

/// Clients built from one [`AwsTarget`].
#[derive(Clone)]
pub struct Aws {
    sdk: SdkConfig,
    path_style: bool,
}

impl std::fmt::Debug for Aws {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aws")
            .field("region", &self.sdk.region())
            .field("path_style", &self.path_style)
            .finish_non_exhaustive()
    }
}

fn https_client() -> aws_sdk_s3::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// An endpoint override in the environment that applies to S3.
fn env_endpoint() -> bool {
    ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"]
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
}

impl Aws {
    /// Loads the shared configuration (credentials are resolved lazily, on first use).
    /// Fails when no region can be found, saying how to give one.
    pub async fn connect(target: &AwsTarget) -> anyhow::Result<Aws> {
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).http_client(https_client());
        if let Some(region) = &target.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &target.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            anyhow::bail!(
                "no AWS region: set `region` on the step or AWS_REGION in bosund's environment"
            );
        }
        Ok(Aws {
            sdk,
            path_style: target.endpoint_url.is_some() || env_endpoint(),
        })
    }

    /// An S3 client. Checksums are sent only where S3 requires them: SigV4 already signs each
    /// part's SHA-256, and some S3-compatible endpoints reject the SDK's trailing checksums.
    pub fn s3(&self) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::from_conf(self.s3_config().build())
    }

    /// An S3 client with its own HTTP connection pool, for work that must run on another
    /// runtime (cleanup after the step's future was dropped): connections of the first pool
    /// belong to the step's runtime and cannot be driven from elsewhere.
    pub fn s3_detached(&self) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::from_conf(self.s3_config().http_client(https_client()).build())
    }

    fn s3_config(&self) -> aws_sdk_s3::config::Builder {
        aws_sdk_s3::config::Builder::from(&self.sdk)
            .force_path_style(self.path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
    }

    /// An RDS client in the target's region.
    pub fn rds(&self) -> aws_sdk_rds::Client {
        aws_sdk_rds::Client::new(&self.sdk)
    }

    /// An RDS client in `region` (a cross-region snapshot copy is made by the destination's
    /// RDS), with the same credentials and endpoint override.
    pub fn rds_in(&self, region: &str) -> aws_sdk_rds::Client {
        aws_sdk_rds::Client::from_conf(
            aws_sdk_rds::config::Builder::from(&self.sdk)
                .region(Region::new(region.to_string()))
                .build(),
        )
    }

    /// The region clients are built for.
    pub fn region(&self) -> Option<&str> {
        self.sdk.region().map(|r| r.as_ref())
    }

    /// An SSM client.
    pub fn ssm(&self) -> aws_sdk_ssm::Client {
        aws_sdk_ssm::Client::new(&self.sdk)
    }

    /// A CloudWatch client (telemetry: PutMetricData). Each call is bounded by
    /// [`TELEMETRY_CALL_TIMEOUT`] so a hung endpoint cannot stall shipping.
    pub fn cloudwatch(&self) -> aws_sdk_cloudwatch::Client {
        aws_sdk_cloudwatch::Client::from_conf(
            aws_sdk_cloudwatch::config::Builder::from(&self.sdk)
                .timeout_config(telemetry_timeouts())
                .build(),
        )
    }

    /// A CloudWatch Logs client (telemetry: PutLogEvents), bounded like [`Aws::cloudwatch`].
    pub fn cloudwatch_logs(&self) -> aws_sdk_cloudwatchlogs::Client {
        aws_sdk_cloudwatchlogs::Client::from_conf(
            aws_sdk_cloudwatchlogs::config::Builder::from(&self.sdk)
                .timeout_config(telemetry_timeouts())
                .build(),
        )
    }
}

/// Longest one telemetry call (all its SDK attempts) may take.
pub const TELEMETRY_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn telemetry_timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .operation_attempt_timeout(std::time::Duration::from_secs(10))
        .operation_timeout(TELEMETRY_CALL_TIMEOUT)
        .build()
}

/// One line for an AWS SDK error: the service's code and message when there is one, else the
/// error chain (connection refused, timeout, bad credentials).
pub fn describe_error<E>(err: &aws_sdk_s3::error::SdkError<E>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_s3::error::ProvideErrorMetadata;
    match (err.code(), err.message()) {
        (Some(code), Some(msg)) => format!("{code}: {msg}"),
        (Some(code), None) => code.to_string(),
        _ => format!("{}", aws_sdk_s3::error::DisplayErrorContext(err)),
    }
}

//! AWS clients for the steps that talk to AWS (backups to S3, RDS snapshots, secrets from SSM)
//! and for telemetry (CloudWatch, CloudWatch Logs).
//!
//! How AWS is reached (the standard chain, `AWS_ENDPOINT_URL*` or a step's `endpoint_url`, which
//! wins; path-style S3 on a replaced endpoint; rustls with ring) is `bosun_aws`'s, shared with
//! `bosun`; this module builds the service clients the agent needs from it.

use aws_config::{Region, SdkConfig};
use aws_sdk_s3::config::RequestChecksumCalculation;
use bosun_aws::{AwsConfig, https_client};
pub use bosun_aws::{AwsTarget, describe_error};

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

impl Aws {
    /// Loads the shared configuration (credentials are resolved lazily, on first use).
    /// Fails when no region can be found, saying how to give one.
    pub async fn connect(target: &AwsTarget) -> anyhow::Result<Aws> {
        let AwsConfig { sdk, path_style } = AwsConfig::load(target).await;
        if sdk.region().is_none() {
            anyhow::bail!(
                "no AWS region: set `region` on the step or AWS_REGION in bosund's environment"
            );
        }
        Ok(Aws { sdk, path_style })
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

    /// The value of SSM parameter `name`, decrypted (an `ssm:` secret); the error in one line.
    pub async fn ssm_parameter(&self, name: &str) -> Result<String, String> {
        let out = self
            .ssm()
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| describe_error(&e))?;
        out.parameter
            .and_then(|p| p.value)
            .ok_or_else(|| "the parameter has no value".to_string())
    }

    /// A Secrets Manager client (the `secretsmanager:` secret source).
    pub fn secretsmanager(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.sdk)
    }

    /// The string value of Secrets Manager secret `id` (a `secretsmanager:` secret); the error
    /// in one line.
    pub async fn secret_string(&self, id: &str) -> Result<String, String> {
        let out = self
            .secretsmanager()
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| describe_error(&e))?;
        out.secret_string
            .ok_or_else(|| "the secret has no string value (a binary secret?)".to_string())
    }

    /// The shared SDK configuration (credentials, region, time source): what the RDS IAM
    /// token generator signs with.
    pub fn sdk_config(&self) -> &SdkConfig {
        &self.sdk
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

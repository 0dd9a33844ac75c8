//! The AWS SDK configuration `bosund` and `bosun` share: one way to reach AWS, from which each
//! builds the service clients it needs (this crate links no `aws-sdk-<service>` crate).
//!
//! - Credentials and region come from the standard chain (environment, shared profile, IMDS on
//!   EC2), unless a region is given.
//! - The endpoint can be replaced for every service with `AWS_ENDPOINT_URL` (or per service with
//!   `AWS_ENDPOINT_URL_S3`, ...: the SDK reads them), or by an explicit `endpoint_url`, which wins.
//!   A replaced endpoint (moto, s3s-fs, a VPC endpoint by IP) gets path-style S3 addressing
//!   ([`AwsConfig::path_style`]): such endpoints have no per-bucket host names.
//! - HTTPS goes through rustls with ring, as in the rest of the workspace (no aws-lc C build).
//! - [`describe_error`] is the one line an SDK error becomes in a message for the operator.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// Where to reach AWS: optional region and endpoint overrides on top of the standard chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsTarget {
    /// Region; `None` takes it from the chain (`AWS_REGION`, profile, IMDS).
    pub region: Option<String>,
    /// Endpoint for every service; `None` takes it from `AWS_ENDPOINT_URL*` or AWS's own.
    pub endpoint_url: Option<String>,
}

/// The loaded configuration every service client is built from
/// (`aws_sdk_<service>::config::Builder::from(&config.sdk)`).
#[derive(Debug, Clone)]
pub struct AwsConfig {
    /// Region, credentials provider (resolved lazily, on first use), endpoint and HTTP client.
    pub sdk: SdkConfig,
    /// S3 must address buckets by path (`https://host/bucket/key`): the endpoint was replaced,
    /// by the target or by `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_S3`.
    pub path_style: bool,
}

impl AwsConfig {
    /// Loads the shared configuration for `target`. No request is made: credentials are
    /// resolved on first use. The region may still be missing ([`AwsConfig::region`]) when
    /// neither the target nor the chain names one; callers say how to give one.
    pub async fn load(target: &AwsTarget) -> AwsConfig {
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).http_client(https_client());
        if let Some(region) = &target.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &target.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        AwsConfig {
            sdk: loader.load().await,
            path_style: path_style(target, |k| std::env::var_os(k)),
        }
    }

    /// The region clients are built for, if any.
    pub fn region(&self) -> Option<&str> {
        self.sdk.region().map(|r| r.as_ref())
    }
}

/// A new HTTPS client (rustls with ring) with its own connection pool. [`AwsConfig::load`]
/// puts one in the shared config; a client that must run on another tokio runtime than the
/// one its first requests ran on needs its own (pooled connections belong to their runtime).
pub fn https_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// Whether the endpoint S3 sees is replaced: by the target, or by a non-empty
/// `AWS_ENDPOINT_URL` or `AWS_ENDPOINT_URL_S3` (`env` looks a variable up).
fn path_style(target: &AwsTarget, env: impl Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    target.endpoint_url.is_some()
        || ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"]
            .iter()
            .any(|k| env(k).is_some_and(|v| !v.is_empty()))
}

/// One line for an AWS SDK error: the service's code and message when the service answered,
/// else the chain of causes (connection refused, timeout, no credentials), each cause's text
/// once, without the error's debug dump.
pub fn describe_error<E, R>(err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match (err.code(), err.message()) {
        (Some(code), Some(msg)) => format!("{code}: {msg}"),
        (Some(code), None) => code.to_string(),
        _ => {
            let mut text = err.to_string();
            let mut cause = std::error::Error::source(err);
            while let Some(c) = cause {
                text.push_str(": ");
                text.push_str(&c.to_string());
                cause = c.source();
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_types::error::ErrorMetadata;

    type Error = SdkError<ErrorMetadata, ()>;

    fn service(code: Option<&str>, message: Option<&str>) -> Error {
        let mut meta = ErrorMetadata::builder();
        if let Some(c) = code {
            meta = meta.code(c);
        }
        if let Some(m) = message {
            meta = meta.message(m);
        }
        SdkError::service_error(meta.build(), ())
    }

    #[test]
    fn a_service_answer_is_its_code_and_message() {
        let e = service(Some("NoSuchBucket"), Some("The bucket does not exist"));
        assert_eq!(
            describe_error(&e),
            "NoSuchBucket: The bucket does not exist"
        );
        assert_eq!(describe_error(&service(Some("NotFound"), None)), "NotFound");
    }

    #[test]
    fn without_an_answer_the_causes_are_chained_without_a_debug_dump() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e: Error = SdkError::timeout_error(refused);
        assert_eq!(describe_error(&e), "request has timed out: refused");
        let text = describe_error(&service(None, Some("only a message")));
        assert!(text.starts_with("service error: "), "{text}");
        assert!(text.contains("only a message"), "{text}");
    }

    #[test]
    fn a_replaced_endpoint_means_path_style_s3() {
        let none = |_: &str| None;
        let env = |name: &'static str, value: &'static str| {
            move |k: &str| (k == name).then(|| value.into())
        };
        let explicit = AwsTarget {
            region: None,
            endpoint_url: Some("http://127.0.0.1:5000".into()),
        };
        assert!(path_style(&explicit, none));
        assert!(!path_style(&AwsTarget::default(), none));
        let all = env("AWS_ENDPOINT_URL", "http://moto:5000");
        assert!(path_style(&AwsTarget::default(), all));
        let s3 = env("AWS_ENDPOINT_URL_S3", "http://s3s:8014");
        assert!(path_style(&AwsTarget::default(), s3));
        // Another service's override leaves S3 on AWS; an empty variable is no override.
        let ssm = env("AWS_ENDPOINT_URL_SSM", "http://moto:5000");
        assert!(!path_style(&AwsTarget::default(), ssm));
        let empty = env("AWS_ENDPOINT_URL", "");
        assert!(!path_style(&AwsTarget::default(), empty));
    }

    #[tokio::test]
    async fn the_target_wins_over_the_chain() {
        let config = AwsConfig::load(&AwsTarget {
            region: Some("eu-north-1".into()),
            endpoint_url: Some("http://127.0.0.1:1".into()),
        })
        .await;
        assert_eq!(config.region(), Some("eu-north-1"));
        assert_eq!(config.sdk.endpoint_url(), Some("http://127.0.0.1:1"));
        assert!(config.path_style);
        assert!(config.sdk.http_client().is_some());
    }
}

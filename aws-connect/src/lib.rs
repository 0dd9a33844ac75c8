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
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
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

    /// Where requests go, for messages: the replaced endpoint's URL, else "AWS in REGION".
    pub fn endpoint_label(&self) -> String {
        match (self.sdk.endpoint_url(), self.region()) {
            (Some(url), _) => url.to_string(),
            (None, Some(region)) => format!("AWS in {region}"),
            (None, None) => "AWS".to_string(),
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

/// One line for an AWS SDK error: the service and operation, then the service's error code and
/// message when it answered with an AWS error, else the HTTP status when it answered with
/// something else (a proxy's error page, a broken endpoint), else the chain of causes
/// (connection refused, timeout, no credentials), each cause's text once; the request id when
/// the response has one. For example `CloudFormation ExecuteChangeSet failed: HTTP 500 Internal
/// Server Error, not an AWS error (request id 7a1f…)`. The SDK's own `Debug` output, 1–2 KiB of
/// internal structures, goes only to the debug log (`RUST_LOG=debug`).
pub fn describe_error<E, R>(err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    describe(err, None)
}

/// [`describe_error`], naming `endpoint` (a URL, or "AWS in eu-west-1") when the answer was
/// not an AWS error or there was no answer: that is when the endpoint is what to look at.
pub fn describe_error_at<E, R>(err: &SdkError<E, R>, endpoint: &str) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    describe(err, Some(endpoint))
}

fn describe<E, R>(err: &SdkError<E, R>, endpoint: Option<&str>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    tracing::debug!(error = ?err, "AWS SDK error");
    let raw = err
        .raw_response()
        .and_then(|r| (r as &dyn std::any::Any).downcast_ref::<HttpResponse>());
    let from = endpoint.map(|e| format!(" from {e}")).unwrap_or_default();
    let what = match (err.code(), err.message(), raw) {
        (Some(code), Some(msg), _) => format!("{code}: {msg}"),
        (Some(code), None, _) => code.to_string(),
        (None, _, Some(raw)) if !raw.status().is_success() => {
            let status = raw.status().as_u16();
            let reason = http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("");
            format!("HTTP {status} {reason}{from}, not an AWS error")
        }
        _ => {
            let mut text = err.to_string();
            let mut cause = std::error::Error::source(err);
            while let Some(c) = cause {
                text.push_str(": ");
                text.push_str(&c.to_string());
                cause = c.source();
            }
            if let (Some(e), None) = (endpoint, raw) {
                text.push_str(&format!(" (endpoint {e})"));
            }
            text
        }
    };
    let request_id = raw
        .and_then(|r| {
            ["x-amzn-requestid", "x-amz-request-id", "x-amzn-request-id"]
                .iter()
                .find_map(|h| r.headers().get(*h))
        })
        .map(|id| format!(" (request id {id})"))
        .unwrap_or_default();
    format!("{} failed: {what}{request_id}", operation_of::<E>())
}

/// "CloudFormation ExecuteChangeSet" for an `aws_sdk_cloudformation::…::ExecuteChangeSetError`,
/// from the error's type: every SDK operation has its own error type, named after it, in its
/// service's crate. "AWS request" for any other type.
fn operation_of<E>() -> String {
    operation_named(std::any::type_name::<E>())
}

fn operation_named(path: &str) -> String {
    let path = path.split('<').next().unwrap_or(path);
    let crate_name = path.split("::").next().unwrap_or_default();
    let (Some(service), Some(op)) = (
        crate_name.strip_prefix("aws_sdk_"),
        path.rsplit("::")
            .next()
            .and_then(|t| t.strip_suffix("Error")),
    ) else {
        return "AWS request".into();
    };
    let service = match service {
        "cloudformation" => "CloudFormation",
        "cloudwatch" => "CloudWatch",
        "cloudwatchlogs" => "CloudWatch Logs",
        "s3" => "S3",
        "ssm" => "SSM",
        "rds" => "RDS",
        "sts" => "STS",
        "ec2" => "EC2",
        "iam" => "IAM",
        other => other,
    };
    format!("{service} {op}")
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
            "AWS request failed: NoSuchBucket: The bucket does not exist"
        );
        assert_eq!(
            describe_error(&service(Some("NotFound"), None)),
            "AWS request failed: NotFound"
        );
    }

    #[test]
    fn without_an_answer_the_causes_are_chained_without_a_debug_dump() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e: Error = SdkError::timeout_error(refused);
        assert_eq!(
            describe_error(&e),
            "AWS request failed: request has timed out: refused"
        );
        let text = describe_error(&service(None, Some("only a message")));
        assert!(
            text.starts_with("AWS request failed: service error: "),
            "{text}"
        );
        assert!(text.contains("only a message"), "{text}");
    }

    /// An HTTP 500 whose body is not an AWS error (the SDK's `Unhandled(… XmlDecodeError …)`)
    /// is its status, the endpoint and the request id, on one line.
    #[test]
    fn an_answer_that_is_not_an_aws_error_is_its_status_and_endpoint() {
        use aws_smithy_runtime_api::http::StatusCode;
        use aws_smithy_types::body::SdkBody;
        let mut raw = HttpResponse::new(
            StatusCode::try_from(500).unwrap(),
            SdkBody::from("<html>oops</html>"),
        );
        raw.headers_mut().insert("x-amzn-RequestId", "rid-42");
        let e: SdkError<ErrorMetadata, HttpResponse> =
            SdkError::service_error(ErrorMetadata::builder().build(), raw);
        assert_eq!(
            describe_error_at(&e, "http://127.0.0.1:9"),
            "AWS request failed: HTTP 500 Internal Server Error from http://127.0.0.1:9, not an AWS error (request id rid-42)"
        );
    }

    #[test]
    fn the_operation_and_service_come_from_the_error_type() {
        assert_eq!(
            operation_named(
                "aws_sdk_cloudformation::operation::execute_change_set::ExecuteChangeSetError"
            ),
            "CloudFormation ExecuteChangeSet"
        );
        assert_eq!(
            operation_named("aws_sdk_cloudwatchlogs::operation::put_log_events::PutLogEventsError"),
            "CloudWatch Logs PutLogEvents"
        );
        assert_eq!(operation_of::<ErrorMetadata>(), "AWS request");
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

//! [`Imds`]: an IMDSv2-only stub of the EC2 instance metadata service on loopback.

use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Result;

use crate::http::{HttpServer, Request, Response};
use crate::process::random_hex;

/// The values the [`Imds`] stub serves. `Default` gives a plausible t2.micro in us-east-1a.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImdsConfig {
    /// `/latest/meta-data/instance-id`.
    pub instance_id: String,
    /// `/latest/meta-data/placement/region`.
    pub region: String,
    /// `/latest/meta-data/placement/availability-zone`.
    pub availability_zone: String,
    /// `/latest/meta-data/instance-type`.
    pub instance_type: String,
    /// `/latest/meta-data/ami-id`.
    pub image_id: String,
    /// `/latest/meta-data/local-ipv4`.
    pub private_ip: String,
    /// `accountId` in the identity document.
    pub account_id: String,
    /// The instance profile's role: `/latest/meta-data/iam/security-credentials/` lists it and
    /// `.../ROLE` returns the credentials below. `None`: both are 404, as on an instance
    /// without a profile.
    pub iam_role: Option<String>,
    /// Credentials served for `iam_role` (moto accepts any).
    pub access_key_id: String,
    /// See `access_key_id`.
    pub secret_access_key: String,
}

impl Default for ImdsConfig {
    fn default() -> Self {
        ImdsConfig {
            instance_id: "i-0123456789abcdef0".into(),
            region: "us-east-1".into(),
            availability_zone: "us-east-1a".into(),
            instance_type: "t2.micro".into(),
            image_id: "ami-0123456789abcdef0".into(),
            private_ip: "10.0.1.10".into(),
            account_id: "123456789012".into(),
            iam_role: Some("bosun-host".into()),
            access_key_id: "test".into(),
            secret_access_key: "test".into(),
        }
    }
}

/// An IMDSv2 stub HTTP server on a free 127.0.0.1 port, behaving like an instance with
/// `HttpTokens=required`.
///
/// Contract:
/// - `PUT /latest/api/token` needs `X-aws-ec2-metadata-token-ttl-seconds` (1–21600), else
///   400; it answers a new token (each PUT issues another; all stay valid).
/// - Every `GET` needs `X-aws-ec2-metadata-token` equal to an issued token, else 401.
///   Served: `/latest/meta-data/instance-id`, `instance-type`, `ami-id`, `local-ipv4`,
///   `placement/region`, `placement/availability-zone`, `iam/security-credentials/[ROLE]`
///   and `/latest/dynamic/instance-identity/document` (JSON with `instanceId`, `region`,
///   `availabilityZone`, `instanceType`, `imageId`, `privateIp`, `accountId`,
///   `architecture`). Anything else: 404.
/// - Every request is logged ([`requests`](Self::requests)); dropping it stops the server.
#[derive(Debug)]
pub struct Imds {
    server: HttpServer,
    config: ImdsConfig,
    log: Arc<Mutex<Vec<String>>>,
}

impl Imds {
    /// A stub with the given identity and the other values from [`ImdsConfig::default`].
    pub fn start(instance_id: &str, region: &str, availability_zone: &str) -> Result<Imds> {
        Self::start_with(ImdsConfig {
            instance_id: instance_id.into(),
            region: region.into(),
            availability_zone: availability_zone.into(),
            ..ImdsConfig::default()
        })
    }

    /// A stub serving `config`.
    pub fn start_with(config: ImdsConfig) -> Result<Imds> {
        let tokens: Arc<Mutex<Vec<String>>> = Arc::default();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let handler = {
            let config = config.clone();
            let log = log.clone();
            Arc::new(move |req: &Request| {
                log.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(format!("{} {}", req.method, req.path()));
                answer(&config, &tokens, req)
            })
        };
        let server = HttpServer::start("imds", handler)?;
        Ok(Imds {
            server,
            config,
            log,
        })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash), the value for
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port())
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The values it serves.
    pub fn config(&self) -> &ImdsConfig {
        &self.config
    }

    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT=endpoint` and `AWS_EC2_METADATA_DISABLED=false`, for
    /// code that uses the AWS SDK's IMDS client. Apply after [`crate::Moto::env`], which
    /// disables IMDS.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT".into(), self.endpoint()),
            ("AWS_EC2_METADATA_DISABLED".into(), "false".into()),
        ]
    }

    /// `"METHOD /path"` of every request so far, in arrival order.
    pub fn requests(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn answer(config: &ImdsConfig, tokens: &Mutex<Vec<String>>, req: &Request) -> Response {
    let path = req.path();
    if path == "/latest/api/token" {
        if req.method != "PUT" {
            return Response::text(405, "");
        }
        let ttl = req
            .header("x-aws-ec2-metadata-token-ttl-seconds")
            .and_then(|v| v.trim().parse::<u32>().ok());
        let Some(ttl) = ttl.filter(|t| (1..=21600).contains(t)) else {
            return Response::text(400, "");
        };
        let Ok(token) = random_hex(24) else {
            return Response::text(500, "");
        };
        tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(token.clone());
        let mut resp = Response::text(200, token);
        resp.extra_headers.push((
            "X-Aws-Ec2-Metadata-Token-Ttl-Seconds".into(),
            ttl.to_string(),
        ));
        return resp;
    }
    if req.method != "GET" && req.method != "HEAD" {
        return Response::text(405, "");
    }
    let authorised = req.header("x-aws-ec2-metadata-token").is_some_and(|t| {
        tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|k| k == t)
    });
    if !authorised {
        return Response::text(401, "");
    }
    let role_prefix = "/latest/meta-data/iam/security-credentials/";
    let value = match path {
        "/latest/meta-data/instance-id" => config.instance_id.clone(),
        "/latest/meta-data/instance-type" => config.instance_type.clone(),
        "/latest/meta-data/ami-id" => config.image_id.clone(),
        "/latest/meta-data/local-ipv4" => config.private_ip.clone(),
        "/latest/meta-data/placement/region" => config.region.clone(),
        "/latest/meta-data/placement/availability-zone" => config.availability_zone.clone(),
        "/latest/dynamic/instance-identity/document" => {
            return Response::new(200, "application/json", identity_document(config));
        }
        p if p.starts_with(role_prefix) => match (&config.iam_role, &p[role_prefix.len()..]) {
            (Some(role), "") => role.clone(),
            (Some(role), asked) if asked == role => {
                return Response::new(200, "application/json", credentials(config));
            }
            _ => return Response::text(404, ""),
        },
        _ => return Response::text(404, ""),
    };
    Response::text(200, value)
}

/// JSON string literal for `s` (the values are ours, but escape anyway).
fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn identity_document(c: &ImdsConfig) -> String {
    format!(
        "{{\n  \"accountId\" : {},\n  \"architecture\" : \"x86_64\",\n  \"availabilityZone\" : {},\n  \"imageId\" : {},\n  \"instanceId\" : {},\n  \"instanceType\" : {},\n  \"privateIp\" : {},\n  \"region\" : {},\n  \"version\" : \"2017-09-30\"\n}}",
        json_str(&c.account_id),
        json_str(&c.availability_zone),
        json_str(&c.image_id),
        json_str(&c.instance_id),
        json_str(&c.instance_type),
        json_str(&c.private_ip),
        json_str(&c.region),
    )
}

fn credentials(c: &ImdsConfig) -> String {
    format!(
        "{{\n  \"Code\" : \"Success\",\n  \"LastUpdated\" : \"2024-01-01T00:00:00Z\",\n  \"Type\" : \"AWS-HMAC\",\n  \"AccessKeyId\" : {},\n  \"SecretAccessKey\" : {},\n  \"Token\" : \"test-session-token\",\n  \"Expiration\" : \"2099-01-01T00:00:00Z\"\n}}",
        json_str(&c.access_key_id),
        json_str(&c.secret_access_key),
    )
}

//! `[edge]`: CloudFront in front of the host's ingress, and what must live in us-east-1.
//!
//! Two halves:
//! - [`us_east_1`]: the ACM certificate for the names (DNS-validated in the zone; CloudFront
//!   takes certificates from us-east-1 only), one Route 53 health check per name (HTTPS
//!   through CloudFront, the configured path) and an alarm on each (health-check metrics exist
//!   only in us-east-1). In the main stack when it lives in us-east-1, else in the second stack
//!   [`template`] builds (`<name>-edge`), whose outputs `bosun up` passes on as parameters.
//! - [`distribution`]: the distribution (viewer HTTPS only, TLS 1.2+, no caching, every
//!   viewer header forwarded so the ingress routes by `Host`) and one alias A and AAAA record
//!   per name, in the main stack.
//!
//! The origin is the host's Elastic IP, by its EC2 public DNS name, over HTTP on port 80,
//! which the security group opens only to CloudFront's origin-facing managed prefix list (see
//! ARCHITECTURE.md for why not a VPC origin). CloudFront adds [`ORIGIN_HEADER`] with a secret
//! the ingress requires; the template names only the SSM parameter holding it (a CloudFormation
//! dynamic reference, resolved by CloudFormation when it applies the change), never the value.

use serde_json::json;

use super::cfn::{Expr, Parameter, Resource, Template};
use super::config::{EDGE_REGION, EdgeConfig, StackConfig};
use super::notify;
use super::resources::{
    Alarm, Certificate, Distribution, HealthCheck, RecordSet, WebAcl, name_tag,
};

/// The header CloudFront adds to every origin request, with the secret as its value.
pub const ORIGIN_HEADER: &str = "X-Origin-Verify";
/// The hosted zone of every CloudFront distribution's domain name (alias targets).
const CLOUDFRONT_ZONE: &str = "Z2FDTNDATAQYW2";
/// Managed cache policy `CachingDisabled`: an ingress in front of applications, not a CDN.
const CACHING_DISABLED: &str = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad";
/// Managed origin request policy `AllViewer`: every viewer header (Host included), cookie and
/// query string reaches the ingress.
const ALL_VIEWER: &str = "216adef6-5c7f-47e4-b989-5492eafa07d3";
/// Managed response headers policy `SecurityHeadersPolicy` (HSTS, nosniff, frame options...).
const SECURITY_HEADERS: &str = "67f7725c-6f97-4210-82d7-5512b31e9d03";

/// The main stack's parameters carrying the edge stack's outputs.
pub const CERTIFICATE_PARAMETER: &str = "EdgeCertificateArn";
/// Comma-separated health check ids, in `domain_names` order.
pub const HEALTH_CHECKS_PARAMETER: &str = "EdgeHealthCheckIds";
/// The web ACL's ARN, with `waf = true`.
pub const WEB_ACL_PARAMETER: &str = "EdgeWebAclArn";
/// The edge stack's outputs `bosun up` reads back.
pub const CERTIFICATE_OUTPUT: &str = "CertificateArn";
/// See [`HEALTH_CHECKS_PARAMETER`].
pub const HEALTH_CHECKS_OUTPUT: &str = "HealthCheckIds";
/// See [`WEB_ACL_PARAMETER`].
pub const WEB_ACL_OUTPUT: &str = "WebAclArn";

/// Where the main stack finds the certificate and the health checks.
#[derive(Debug, Clone)]
pub struct EdgeRefs {
    pub certificate_arn: Expr,
    pub health_check_ids: Vec<Expr>,
    /// With `waf = true`.
    pub web_acl_arn: Option<Expr>,
}

fn edge(c: &StackConfig) -> &EdgeConfig {
    c.edge
        .as_ref()
        .expect("edge functions are called only with [edge]")
}

/// The second stack, in us-east-1: its own alarm topic (and key), the certificate, the health
/// checks and their alarms.
pub fn template(c: &StackConfig) -> Template {
    let mut t = Template::new(format!(
        "bosun stack {}: what CloudFront and Route 53 health checks need in {EDGE_REGION}",
        c.name
    ));
    let key = notify::stack_key(&mut t, c, false);
    let topic = notify::alarm_topic(&mut t, c, key.as_ref());
    let refs = us_east_1(&mut t, c, &topic);
    t.output(
        CERTIFICATE_OUTPUT,
        "The certificate CloudFront serves",
        refs.certificate_arn,
    );
    t.output(
        HEALTH_CHECKS_OUTPUT,
        "The Route 53 health checks, in domain_names order",
        Expr::Join(",".into(), refs.health_check_ids),
    );
    if let Some(acl) = refs.web_acl_arn {
        t.output(WEB_ACL_OUTPUT, "The distribution's web ACL", acl);
    }
    t.output("AlarmTopicArn", "Health-check alarms notify this", topic);
    t
}

/// The main stack's view of a separate edge stack: two parameters `bosun up` fills from its
/// outputs.
pub fn parameters(t: &mut Template, c: &StackConfig) -> EdgeRefs {
    t.parameters.insert(
        CERTIFICATE_PARAMETER.into(),
        Parameter {
            kind: "String".into(),
            default: None,
            description: format!("ACM certificate in {EDGE_REGION} (the edge stack's output)"),
        },
    );
    t.parameters.insert(
        HEALTH_CHECKS_PARAMETER.into(),
        Parameter {
            kind: "CommaDelimitedList".into(),
            default: None,
            description: "Route 53 health check ids (the edge stack's output)".into(),
        },
    );
    let web_acl_arn = edge(c).waf.then(|| {
        t.parameters.insert(
            WEB_ACL_PARAMETER.into(),
            Parameter {
                kind: "String".into(),
                default: None,
                description: "The distribution's WAF web ACL (the edge stack's output)".into(),
            },
        );
        Expr::r#ref(WEB_ACL_PARAMETER)
    });
    EdgeRefs {
        web_acl_arn,
        certificate_arn: Expr::r#ref(CERTIFICATE_PARAMETER),
        health_check_ids: (0..edge(c).domain_names.len())
            .map(|i| Expr::Select(i as u32, Box::new(Expr::r#ref(HEALTH_CHECKS_PARAMETER))))
            .collect(),
    }
}

/// The certificate (unless `certificate_arn` names one), the health checks and their alarms,
/// notifying `topic`. Added to the stack that lives in us-east-1.
pub fn us_east_1(t: &mut Template, c: &StackConfig, topic: &Expr) -> EdgeRefs {
    let e = edge(c);
    let certificate_arn = match &e.certificate_arn {
        Some(arn) => Expr::str(arn),
        None => {
            t.add(
                "EdgeCertificate",
                Resource::new(Certificate {
                    domain_name: e.domain_names[0].clone(),
                    subject_alternative_names: e.domain_names[1..].to_vec(),
                    validation_method: "DNS".into(),
                    domain_validation_options: e
                        .domain_names
                        .iter()
                        .map(|n| json!({"DomainName": n, "HostedZoneId": e.hosted_zone_id}))
                        .collect(),
                }),
            );
            Expr::r#ref("EdgeCertificate")
        }
    };
    let mut health_check_ids = Vec::new();
    for (i, name) in e.domain_names.iter().enumerate() {
        let id = format!("HealthCheck{i}");
        t.add(
            &id,
            Resource::new(HealthCheck {
                health_check_config: json!({
                    "Type": "HTTPS",
                    "FullyQualifiedDomainName": name,
                    "Port": 443,
                    "ResourcePath": e.health_check_path,
                    "EnableSNI": true,
                    "RequestInterval": 30,
                    "FailureThreshold": 3,
                }),
                health_check_tags: name_tag(c, &format!("health-{name}")),
            }),
        );
        t.add(
            &format!("HealthCheckAlarm{i}"),
            Resource::new(Alarm {
                alarm_description: format!(
                    "{}: https://{name}{} fails Route 53's health checks",
                    c.name, e.health_check_path
                ),
                namespace: "AWS/Route53".into(),
                metric_name: "HealthCheckStatus".into(),
                dimensions: vec![json!({"Name": "HealthCheckId", "Value": Expr::r#ref(&id)})],
                statistic: "Minimum".into(),
                period: 60,
                evaluation_periods: 2,
                threshold: 1.0,
                comparison_operator: "LessThanThreshold".into(),
                // No data from a health check means it is not checking: that is an alarm too.
                treat_missing_data: "breaching".into(),
                alarm_actions: vec![topic.clone()],
                o_k_actions: vec![topic.clone()],
            }),
        );
        health_check_ids.push(Expr::r#ref(&id));
    }
    let web_acl_arn = e.waf.then(|| {
        web_acl(t, c);
        Expr::get_att("EdgeWebAcl", "Arn")
    });
    EdgeRefs {
        certificate_arn,
        health_check_ids,
        web_acl_arn,
    }
}

/// `waf = true`: a web ACL with AWS's managed common and known-bad-inputs rule groups.
fn web_acl(t: &mut Template, c: &StackConfig) {
    let visibility = |name: &str| json!({"SampledRequestsEnabled": true, "CloudWatchMetricsEnabled": true, "MetricName": name});
    let rules = [
        "AWSManagedRulesCommonRuleSet",
        "AWSManagedRulesKnownBadInputsRuleSet",
    ]
    .iter()
    .enumerate()
    .map(|(i, group)| {
        json!({
            "Name": group,
            "Priority": i,
            "OverrideAction": {"None": {}},
            "Statement": {"ManagedRuleGroupStatement": {"VendorName": "AWS", "Name": group}},
            "VisibilityConfig": visibility(group),
        })
    })
    .collect();
    t.add(
        "EdgeWebAcl",
        Resource::new(WebAcl {
            name: Expr::sub("${AWS::StackName}-edge"),
            scope: "CLOUDFRONT".into(),
            default_action: json!({"Allow": {}}),
            rules,
            visibility_config: visibility(&format!("{}-edge", c.name)),
            tags: name_tag(c, "edge"),
        }),
    );
}

/// The host's EC2 public DNS name for its Elastic IP `HostEip` (CloudFront needs a name, not
/// an address, for a custom origin): `ec2-1-2-3-4.compute-1.amazonaws.com` in us-east-1,
/// `ec2-1-2-3-4.<region>.compute.amazonaws.com` elsewhere.
fn origin_domain(c: &StackConfig) -> Expr {
    let suffix = if c.region == "us-east-1" {
        "compute-1.amazonaws.com".to_string()
    } else {
        format!("{}.compute.amazonaws.com", c.region)
    };
    Expr::SubWith(
        format!("ec2-${{Dashed}}.{suffix}"),
        vec![(
            "Dashed".into(),
            Expr::JoinList(
                "-".into(),
                Box::new(Expr::Split(".".into(), Box::new(Expr::r#ref("HostEip")))),
            ),
        )],
    )
}

/// The distribution and the alias records, in the main stack.
pub fn distribution(t: &mut Template, c: &StackConfig, refs: &EdgeRefs) {
    let e = edge(c);
    let mut config = json!({
        "Enabled": true,
        "Comment": format!("bosun {}: the host's ingress", c.name),
        "Aliases": e.domain_names,
        "HttpVersion": "http2and3",
        "IPV6Enabled": true,
        // North America and Europe only: the cheapest class, enough for a learner's users.
        "PriceClass": "PriceClass_100",
        "ViewerCertificate": {
            "AcmCertificateArn": refs.certificate_arn,
            "SslSupportMethod": "sni-only",
            "MinimumProtocolVersion": "TLSv1.2_2021",
        },
        "Origins": [{
            "Id": "host",
            "DomainName": origin_domain(c),
            "CustomOriginConfig": {
                "OriginProtocolPolicy": "http-only",
                "HTTPPort": 80,
                "HTTPSPort": 443,
                "OriginSSLProtocols": ["TLSv1.2"],
                "OriginReadTimeout": 60,
                "OriginKeepaliveTimeout": 5,
            },
            "OriginCustomHeaders": [{
                "HeaderName": ORIGIN_HEADER,
                "HeaderValue": format!("{{{{resolve:ssm:{}}}}}", c.origin_secret_parameter()),
            }],
        }],
        "DefaultCacheBehavior": {
            "TargetOriginId": "host",
            "ViewerProtocolPolicy": "redirect-to-https",
            "AllowedMethods": ["GET", "HEAD", "OPTIONS", "PUT", "PATCH", "POST", "DELETE"],
            "CachedMethods": ["GET", "HEAD"],
            "Compress": true,
            "CachePolicyId": CACHING_DISABLED,
            "OriginRequestPolicyId": ALL_VIEWER,
            "ResponseHeadersPolicyId": SECURITY_HEADERS,
        },
    });
    if let Some(acl) = &refs.web_acl_arn {
        config["WebACLId"] = serde_json::to_value(acl).expect("JSON");
    }
    if e.access_logging {
        config["Logging"] = json!({
            "Bucket": Expr::get_att("Bucket", "RegionalDomainName"),
            "Prefix": "cloudfront/",
            "IncludeCookies": false,
        });
    }
    t.add(
        "Distribution",
        Resource::new(Distribution {
            distribution_config: config,
            tags: name_tag(c, "edge"),
        }),
    );
    for (i, name) in e.domain_names.iter().enumerate() {
        for kind in ["A", "AAAA"] {
            t.add(
                &format!("Alias{i}{}", if kind == "A" { "A" } else { "Aaaa" }),
                Resource::new(RecordSet {
                    hosted_zone_id: e.hosted_zone_id.clone(),
                    name: name.clone(),
                    r#type: kind.into(),
                    t_t_l: None,
                    resource_records: vec![],
                    alias_target: Some(json!({
                        "DNSName": Expr::get_att("Distribution", "DomainName"),
                        "HostedZoneId": CLOUDFRONT_ZONE,
                        "EvaluateTargetHealth": false,
                    })),
                }),
            );
        }
    }
    t.output(
        "DistributionDomainName",
        "CloudFront's name for the distribution",
        Expr::get_att("Distribution", "DomainName"),
    );
    t.output(
        "PublicNames",
        "The names served through CloudFront",
        Expr::str(
            e.domain_names
                .iter()
                .map(|n| format!("https://{n}"))
                .collect::<Vec<_>>()
                .join(" "),
        ),
    );
}

//! The stack's template, built from a [`StackConfig`]: one function per group of resources,
//! each resource's properties a typed struct. Pure: no I/O, deterministic output.
//!
//! Two shapes: the *foundation* (network, bucket, log group) that must exist before the
//! artefacts can be uploaded, and the *full* stack (foundation plus IAM, instance, alarms,
//! dashboard, database, DNS). `bosun up` creates the foundation first when the stack does not
//! exist, uploads, then updates to the full template; see `crate::cloud` for why.

use serde::Serialize;
use serde_json::json;

use super::cfn::{Expr, Parameter, Policy, Properties, Resource, Template};
use super::config::StackConfig;
use super::userdata::{self, UserDataSpec};

/// The namespace of the agent's own metrics (memory, disk); the role may publish only there.
pub const METRICS_NAMESPACE: &str = "Bosun/Host";

/// Placeholders in the rendered user-data, replaced by stack values through `Fn::Join`.
const BUCKET_PLACEHOLDER: &str = "@@BOSUN_BUCKET@@";
const ARTIFACTS_PLACEHOLDER: &str = "@@BOSUN_ARTIFACTS_URL@@";

/// The digests the instance's first boot fetches and verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootDigests {
    pub bosund_sha256: String,
    pub playbooks_sha256: String,
}

/// The foundation: what must exist before `bosun up` can upload the artefacts.
pub fn foundation(config: &StackConfig) -> Template {
    let mut t = Template::new(format!(
        "bosun stack {} (foundation: network, bucket, logs)",
        config.name
    ));
    network(&mut t, config);
    storage(&mut t, config);
    t.output(
        "BucketName",
        "The stack's S3 bucket (artifacts/, backups/)",
        Expr::r#ref("Bucket"),
    );
    t
}

/// The whole stack, with the first boot pinned to `boot`.
pub fn full(config: &StackConfig, public_key: &str, boot: &BootDigests) -> Template {
    let mut t = foundation(config);
    t.description = format!(
        "bosun stack {}: a single k3s host managed by bosund",
        config.name
    );
    t.parameters.insert(
        "ImageId".into(),
        match &config.ami {
            Some(ami) => Parameter {
                kind: "AWS::EC2::Image::Id".into(),
                default: ami.clone(),
                description: "The host's AMI (pinned in stack.toml)".into(),
            },
            None => Parameter {
                kind: "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>".into(),
                default: config.os.ami_parameter().into(),
                description: "Public SSM parameter holding the latest AMI of the host's OS".into(),
            },
        },
    );
    if config.rds.is_some() {
        database(&mut t, config);
    }
    host_role(&mut t, config);
    host(&mut t, config, public_key, boot);
    alarms(&mut t, config);
    dashboard(&mut t);
    if config.dns.is_some() {
        dns(&mut t, config);
    }
    t
}

// --- Resource property types ------------------------------------------------------------------

/// A `Key`/`Value` tag.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    pub key: String,
    pub value: Expr,
}

fn name_tag(config: &StackConfig, what: &str) -> Vec<Tag> {
    vec![Tag {
        key: "Name".into(),
        value: Expr::str(format!("{}-{what}", config.name)),
    }]
}

macro_rules! properties {
    ($(#[$m:meta])* $name:ident = $ty:literal { $($(#[$fm:meta])* $field:ident : $fty:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Serialize)]
        #[serde(rename_all = "PascalCase")]
        pub struct $name { $($(#[$fm])* pub $field: $fty),* }
        impl Properties for $name { const TYPE: &'static str = $ty; }
    };
}

properties!(
    /// `AWS::EC2::VPC`.
    Vpc = "AWS::EC2::VPC" { cidr_block: String, enable_dns_support: bool, enable_dns_hostnames: bool, tags: Vec<Tag> }
);
properties!(
    /// `AWS::EC2::Subnet`.
    Subnet = "AWS::EC2::Subnet" { vpc_id: Expr, cidr_block: String, availability_zone: Expr, map_public_ip_on_launch: bool, tags: Vec<Tag> }
);
properties!(
    /// `AWS::EC2::InternetGateway`.
    InternetGateway = "AWS::EC2::InternetGateway" { tags: Vec<Tag> }
);
properties!(
    /// `AWS::EC2::VPCGatewayAttachment`.
    GatewayAttachment = "AWS::EC2::VPCGatewayAttachment" { vpc_id: Expr, internet_gateway_id: Expr }
);
properties!(
    /// `AWS::EC2::RouteTable`.
    RouteTable = "AWS::EC2::RouteTable" { vpc_id: Expr, tags: Vec<Tag> }
);
properties!(
    /// `AWS::EC2::Route`.
    Route = "AWS::EC2::Route" { route_table_id: Expr, destination_cidr_block: String, gateway_id: Expr }
);
properties!(
    /// `AWS::EC2::SubnetRouteTableAssociation`.
    RouteTableAssociation = "AWS::EC2::SubnetRouteTableAssociation" { subnet_id: Expr, route_table_id: Expr }
);
properties!(
    /// `AWS::EC2::SecurityGroup`.
    SecurityGroup = "AWS::EC2::SecurityGroup" { group_description: String, vpc_id: Expr, security_group_ingress: Vec<Ingress>, tags: Vec<Tag> }
);

/// One ingress rule of a security group.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ingress {
    pub description: String,
    pub ip_protocol: String,
    pub from_port: u16,
    pub to_port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_security_group_id: Option<Expr>,
}

properties!(
    /// `AWS::EC2::VPCEndpoint` (gateway).
    VpcEndpoint = "AWS::EC2::VPCEndpoint" { vpc_id: Expr, service_name: Expr, vpc_endpoint_type: String, route_table_ids: Vec<Expr> }
);
properties!(
    /// `AWS::S3::Bucket`.
    Bucket = "AWS::S3::Bucket" {
        bucket_encryption: serde_json::Value,
        versioning_configuration: serde_json::Value,
        public_access_block_configuration: serde_json::Value,
        ownership_controls: serde_json::Value,
        lifecycle_configuration: LifecycleConfiguration,
        tags: Vec<Tag>,
    }
);

/// A bucket's lifecycle rules.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LifecycleConfiguration {
    pub rules: Vec<serde_json::Value>,
}

properties!(
    /// `AWS::S3::BucketPolicy`.
    BucketPolicy = "AWS::S3::BucketPolicy" { bucket: Expr, policy_document: PolicyDocument }
);
properties!(
    /// `AWS::Logs::LogGroup`.
    LogGroup = "AWS::Logs::LogGroup" { log_group_name: String, retention_in_days: u32 }
);
properties!(
    /// `AWS::IAM::Role`.
    Role = "AWS::IAM::Role" { description: String, assume_role_policy_document: PolicyDocument, policies: Vec<InlinePolicy>, tags: Vec<Tag> }
);
properties!(
    /// `AWS::IAM::InstanceProfile`.
    InstanceProfile = "AWS::IAM::InstanceProfile" { roles: Vec<Expr> }
);

/// An IAM policy document.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PolicyDocument {
    pub version: &'static str,
    pub statement: Vec<Statement>,
}

impl PolicyDocument {
    fn new(statement: Vec<Statement>) -> PolicyDocument {
        PolicyDocument {
            version: "2012-10-17",
            statement,
        }
    }
}

/// One statement of a policy.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Statement {
    pub sid: String,
    pub effect: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<serde_json::Value>,
    pub action: Vec<&'static str>,
    /// Empty only in trust policies, which name no resource.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resource: Vec<Expr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<serde_json::Value>,
}

impl Statement {
    fn allow(sid: &str, action: &[&'static str], resource: Vec<Expr>) -> Statement {
        Statement {
            sid: sid.into(),
            effect: "Allow",
            principal: None,
            action: action.to_vec(),
            resource,
            condition: None,
        }
    }

    fn when(mut self, condition: serde_json::Value) -> Statement {
        self.condition = Some(condition);
        self
    }
}

/// A named inline policy of a role.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InlinePolicy {
    pub policy_name: String,
    pub policy_document: PolicyDocument,
}

properties!(
    /// `AWS::EC2::KeyPair`, imported from the operator's public key.
    KeyPair = "AWS::EC2::KeyPair" { key_name: Expr, public_key_material: String, tags: Vec<Tag> }
);
properties!(
    /// `AWS::EC2::LaunchTemplate`: what `AWS::EC2::Instance` cannot say itself (metadata
    /// options).
    LaunchTemplate = "AWS::EC2::LaunchTemplate" { launch_template_data: LaunchTemplateData }
);

/// The launch template's data.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LaunchTemplateData {
    pub metadata_options: serde_json::Value,
    pub block_device_mappings: Vec<serde_json::Value>,
    pub user_data: Expr,
}

properties!(
    /// `AWS::EC2::Instance`.
    Instance = "AWS::EC2::Instance" {
        launch_template: serde_json::Value,
        image_id: Expr,
        instance_type: String,
        key_name: Expr,
        subnet_id: Expr,
        security_group_ids: Vec<Expr>,
        iam_instance_profile: Expr,
        monitoring: bool,
        tags: Vec<Tag>,
    }
);
properties!(
    /// `AWS::CloudWatch::Alarm`.
    Alarm = "AWS::CloudWatch::Alarm" {
        alarm_description: String,
        namespace: String,
        metric_name: String,
        dimensions: Vec<serde_json::Value>,
        statistic: String,
        period: u32,
        evaluation_periods: u32,
        threshold: f64,
        comparison_operator: String,
        treat_missing_data: String,
        alarm_actions: Vec<Expr>,
    }
);
properties!(
    /// `AWS::CloudWatch::Dashboard`.
    Dashboard = "AWS::CloudWatch::Dashboard" { dashboard_name: Expr, dashboard_body: Expr }
);
properties!(
    /// `AWS::RDS::DBSubnetGroup`.
    DbSubnetGroup = "AWS::RDS::DBSubnetGroup" { d_b_subnet_group_description: String, subnet_ids: Vec<Expr> }
);
properties!(
    /// `AWS::RDS::DBInstance`.
    DbInstance = "AWS::RDS::DBInstance" {
        engine: String,
        d_b_instance_class: String,
        allocated_storage: String,
        storage_type: String,
        storage_encrypted: bool,
        backup_retention_period: u32,
        delete_automated_backups: bool,
        copy_tags_to_snapshot: bool,
        manage_master_user_password: bool,
        master_username: String,
        d_b_subnet_group_name: Expr,
        v_p_c_security_groups: Vec<Expr>,
        publicly_accessible: bool,
        multi_a_z: bool,
        auto_minor_version_upgrade: bool,
        tags: Vec<Tag>,
    }
);
properties!(
    /// `AWS::Route53::RecordSet`.
    RecordSet = "AWS::Route53::RecordSet" { hosted_zone_id: String, name: String, r#type: String, t_t_l: String, resource_records: Vec<Expr> }
);
properties!(
    /// `AWS::CertificateManager::Certificate`.
    Certificate = "AWS::CertificateManager::Certificate" { domain_name: String, validation_method: String, domain_validation_options: Vec<serde_json::Value> }
);

// --- Groups of resources ------------------------------------------------------------------------

fn arn(service: &str, resource: &str) -> Expr {
    Expr::sub(format!(
        "arn:${{AWS::Partition}}:{service}:${{AWS::Region}}:${{AWS::AccountId}}:{resource}"
    ))
}

fn subnet_cidr(config: &StackConfig, third_octet: u8) -> String {
    let mut octets = config.vpc_cidr.split('.');
    let a = octets.next().unwrap_or("10");
    let b = octets.next().unwrap_or("42");
    format!("{a}.{b}.{third_octet}.0/24")
}

fn network(t: &mut Template, c: &StackConfig) {
    t.add(
        "Vpc",
        Resource::new(Vpc {
            cidr_block: c.vpc_cidr.clone(),
            enable_dns_support: true,
            enable_dns_hostnames: true,
            tags: name_tag(c, "vpc"),
        }),
    );
    t.add(
        "PublicSubnet",
        Resource::new(Subnet {
            vpc_id: Expr::r#ref("Vpc"),
            cidr_block: subnet_cidr(c, 0),
            availability_zone: Expr::AvailabilityZone(0),
            map_public_ip_on_launch: true,
            tags: name_tag(c, "public"),
        }),
    );
    t.add(
        "InternetGateway",
        Resource::new(InternetGateway {
            tags: name_tag(c, "igw"),
        }),
    );
    t.add(
        "GatewayAttachment",
        Resource::new(GatewayAttachment {
            vpc_id: Expr::r#ref("Vpc"),
            internet_gateway_id: Expr::r#ref("InternetGateway"),
        }),
    );
    t.add(
        "PublicRouteTable",
        Resource::new(RouteTable {
            vpc_id: Expr::r#ref("Vpc"),
            tags: name_tag(c, "public"),
        }),
    );
    // The default route needs the gateway attached first; CloudFormation cannot infer that.
    t.add(
        "DefaultRoute",
        Resource::new(Route {
            route_table_id: Expr::r#ref("PublicRouteTable"),
            destination_cidr_block: "0.0.0.0/0".into(),
            gateway_id: Expr::r#ref("InternetGateway"),
        })
        .depends_on("GatewayAttachment"),
    );
    t.add(
        "PublicSubnetRoutes",
        Resource::new(RouteTableAssociation {
            subnet_id: Expr::r#ref("PublicSubnet"),
            route_table_id: Expr::r#ref("PublicRouteTable"),
        }),
    );
    // SSH only from the operator; 80/443 only when asked for. The Kubernetes API (6443) is
    // never opened: kubectl goes through an SSH tunnel.
    let mut ingress = vec![Ingress {
        description: "SSH from the operator".into(),
        ip_protocol: "tcp".into(),
        from_port: 22,
        to_port: 22,
        cidr_ip: Some(c.operator_cidr.clone()),
        source_security_group_id: None,
    }];
    if c.public_http {
        for (port, what) in [(80, "HTTP"), (443, "HTTPS")] {
            ingress.push(Ingress {
                description: format!("{what} to the cluster's ingress"),
                ip_protocol: "tcp".into(),
                from_port: port,
                to_port: port,
                cidr_ip: Some("0.0.0.0/0".into()),
                source_security_group_id: None,
            });
        }
    }
    t.add(
        "HostSecurityGroup",
        Resource::new(SecurityGroup {
            group_description: format!("bosun host {}", c.name),
            vpc_id: Expr::r#ref("Vpc"),
            security_group_ingress: ingress,
            tags: name_tag(c, "host"),
        }),
    );
    // S3 traffic from the subnet stays on AWS's network and carries aws:SourceVpce, which the
    // bucket policy uses to let the first boot fetch artefacts without credentials.
    t.add(
        "S3Endpoint",
        Resource::new(VpcEndpoint {
            vpc_id: Expr::r#ref("Vpc"),
            service_name: Expr::sub("com.amazonaws.${AWS::Region}.s3"),
            vpc_endpoint_type: "Gateway".into(),
            route_table_ids: vec![Expr::r#ref("PublicRouteTable")],
        }),
    );
}

fn storage(t: &mut Template, c: &StackConfig) {
    let b = &c.backups;
    t.add(
        "Bucket",
        Resource::new(Bucket {
            // SSE-S3, not SSE-KMS: the first boot reads artifacts/ anonymously through the VPC
            // endpoint, and an anonymous request cannot use a KMS key.
            bucket_encryption: json!({"ServerSideEncryptionConfiguration": [
                {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": true}
            ]}),
            versioning_configuration: json!({"Status": "Enabled"}),
            public_access_block_configuration: json!({
                "BlockPublicAcls": true, "BlockPublicPolicy": true,
                "IgnorePublicAcls": true, "RestrictPublicBuckets": true
            }),
            ownership_controls: json!({"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}),
            lifecycle_configuration: LifecycleConfiguration {
                rules: vec![
                    json!({
                        "Id": "backups-to-glacier-then-expire",
                        "Status": "Enabled",
                        "Prefix": "backups/",
                        "Transitions": [{"StorageClass": "GLACIER", "TransitionInDays": b.glacier_after_days}],
                        "ExpirationInDays": b.expire_after_days,
                        "NoncurrentVersionExpiration": {"NoncurrentDays": b.expire_after_days}
                    }),
                    json!({
                        "Id": "abort-incomplete-multipart-uploads",
                        "Status": "Enabled",
                        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}
                    }),
                ],
            },
            tags: name_tag(c, "data"),
        })
        .keep_on_delete(Policy::Retain),
    );
    let bucket_arn = Expr::get_att("Bucket", "Arn");
    let objects = |prefix: &str| Expr::sub(format!("${{Bucket.Arn}}/{prefix}"));
    t.add(
        "BucketPolicy",
        Resource::new(BucketPolicy {
            bucket: Expr::r#ref("Bucket"),
            policy_document: PolicyDocument::new(vec![
                // A Deny with a wildcard action narrows access: every request without TLS is
                // refused, whoever makes it.
                Statement {
                    sid: "DenyWithoutTls".into(),
                    effect: "Deny",
                    principal: Some(json!("*")),
                    action: vec!["s3:*"],
                    resource: vec![bucket_arn.clone(), objects("*")],
                    condition: Some(json!({"Bool": {"aws:SecureTransport": "false"}})),
                },
                Statement {
                    sid: "FirstBootReadsArtifactsThroughTheVpcEndpoint".into(),
                    effect: "Allow",
                    principal: Some(json!("*")),
                    action: vec!["s3:GetObject"],
                    resource: vec![objects("artifacts/*")],
                    condition: Some(
                        json!({"StringEquals": {"aws:SourceVpce": Expr::r#ref("S3Endpoint")}}),
                    ),
                },
            ]),
        }),
    );
    t.add(
        "LogGroup",
        Resource::new(LogGroup {
            log_group_name: log_group_name(c),
            retention_in_days: c.logs.retention_days,
        }),
        // Not retained: it has a fixed name, so a kept group would make the next `up` of the
        // same stack fail ("already exists"); its retention already bounds what it holds.
    );
}

/// The stack's log group name.
pub fn log_group_name(c: &StackConfig) -> String {
    format!("/bosun/{}", c.name)
}

fn host_role(t: &mut Template, c: &StackConfig) {
    let bucket = |suffix: &str| Expr::sub(format!("${{Bucket.Arn}}{suffix}"));
    let mut policies = vec![
        InlinePolicy {
            policy_name: "metrics".into(),
            policy_document: PolicyDocument::new(vec![
                // PutMetricData has no resource type: "*" is the only valid resource. The
                // namespace condition is what scopes it.
                Statement::allow(
                    "PutHostMetrics",
                    &["cloudwatch:PutMetricData"],
                    vec![Expr::str("*")],
                )
                .when(json!({"StringEquals": {"cloudwatch:namespace": METRICS_NAMESPACE}})),
            ]),
        },
        InlinePolicy {
            policy_name: "logs".into(),
            policy_document: PolicyDocument::new(vec![Statement::allow(
                "ShipLogsToTheStackLogGroup",
                &[
                    "logs:CreateLogStream",
                    "logs:PutLogEvents",
                    "logs:DescribeLogStreams",
                ],
                vec![Expr::get_att("LogGroup", "Arn")],
            )]),
        },
        InlinePolicy {
            policy_name: "bucket".into(),
            policy_document: PolicyDocument::new(vec![
                Statement::allow("ListOwnPrefixes", &["s3:ListBucket"], vec![bucket("")])
                    .when(json!({"StringLike": {"s3:prefix": ["artifacts/*", "backups/*"]}})),
                Statement::allow(
                    "ReadArtifactsAndBackups",
                    &["s3:GetObject"],
                    vec![bucket("/artifacts/*"), bucket("/backups/*")],
                ),
                Statement::allow(
                    "WriteAndPruneBackups",
                    &[
                        "s3:PutObject",
                        "s3:DeleteObject",
                        "s3:AbortMultipartUpload",
                        "s3:ListMultipartUploadParts",
                    ],
                    vec![bucket("/backups/*")],
                ),
            ]),
        },
        InlinePolicy {
            policy_name: "parameters".into(),
            policy_document: PolicyDocument::new(vec![Statement::allow(
                "ReadStackParameters",
                &[
                    "ssm:GetParameter",
                    "ssm:GetParameters",
                    "ssm:GetParametersByPath",
                ],
                vec![
                    arn("ssm", &format!("parameter/bosun/{}", c.name)),
                    arn("ssm", &format!("parameter/bosun/{}/*", c.name)),
                ],
            )]),
        },
    ];
    if c.rds.is_some() {
        let db = arn("rds", "db:${Database}");
        let snapshots = arn("rds", &format!("snapshot:{}-*", c.name));
        policies.push(InlinePolicy {
            policy_name: "database".into(),
            policy_document: PolicyDocument::new(vec![
                Statement::allow(
                    "SnapshotTheStackDatabase",
                    &["rds:CreateDBSnapshot", "rds:AddTagsToResource"],
                    vec![db.clone(), snapshots.clone()],
                ),
                Statement::allow(
                    "ListAndPruneItsSnapshots",
                    &[
                        "rds:DescribeDBInstances",
                        "rds:DescribeDBSnapshots",
                        "rds:DeleteDBSnapshot",
                    ],
                    vec![db, snapshots],
                ),
                Statement::allow(
                    "ReadTheMasterPassword",
                    &["secretsmanager:GetSecretValue"],
                    vec![Expr::get_att("Database", "MasterUserSecret.SecretArn")],
                ),
            ]),
        });
    }
    t.add(
        "HostRole",
        Resource::new(Role {
            description: format!("bosund on the {} host", c.name),
            assume_role_policy_document: PolicyDocument::new(vec![Statement {
                sid: "Ec2AssumesTheHostRole".into(),
                effect: "Allow",
                principal: Some(json!({"Service": "ec2.amazonaws.com"})),
                action: vec!["sts:AssumeRole"],
                resource: vec![],
                condition: None,
            }]),
            policies,
            tags: name_tag(c, "host"),
        }),
    );
    t.add(
        "HostInstanceProfile",
        Resource::new(InstanceProfile {
            roles: vec![Expr::r#ref("HostRole")],
        }),
    );
}

fn host(t: &mut Template, c: &StackConfig, public_key: &str, boot: &BootDigests) {
    t.add(
        "KeyPair",
        Resource::new(KeyPair {
            key_name: Expr::sub("${AWS::StackName}-operator"),
            public_key_material: public_key.to_string(),
            tags: name_tag(c, "operator"),
        }),
    );
    let log_group = log_group_name(c);
    let user_data = userdata::render(&UserDataSpec {
        stack: &c.name,
        region: &c.region,
        bucket: BUCKET_PLACEHOLDER,
        artifacts_url: ARTIFACTS_PLACEHOLDER,
        bosund_sha256: &boot.bosund_sha256,
        playbooks_sha256: &boot.playbooks_sha256,
        log_group: &log_group,
        metrics_namespace: METRICS_NAMESPACE,
        bootstrap_vars: &c.bootstrap_vars,
    });
    let artifacts_url = match &c.endpoints.artifacts {
        Some(base) => Expr::Join(
            String::new(),
            vec![
                Expr::str(format!("{}/", base.trim_end_matches('/'))),
                Expr::r#ref("Bucket"),
                Expr::str("/artifacts"),
            ],
        ),
        None => Expr::Join(
            String::new(),
            vec![
                Expr::str("https://"),
                Expr::get_att("Bucket", "RegionalDomainName"),
                Expr::str("/artifacts"),
            ],
        ),
    };
    let user_data = Expr::join_with_placeholders(
        &user_data,
        &[
            (BUCKET_PLACEHOLDER, Expr::r#ref("Bucket")),
            (ARTIFACTS_PLACEHOLDER, artifacts_url),
        ],
    );
    t.add(
        "HostLaunchTemplate",
        Resource::new(LaunchTemplate {
            launch_template_data: LaunchTemplateData {
                // IMDSv2 only: a token is required, and one hop so containers cannot reach it.
                metadata_options: json!({
                    "HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 1
                }),
                block_device_mappings: vec![json!({
                    // The root device of both Debian 12 and Amazon Linux 2023 AMIs.
                    "DeviceName": "/dev/xvda",
                    "Ebs": {"VolumeType": "gp3", "VolumeSize": c.root_volume_gb, "Encrypted": true, "DeleteOnTermination": true}
                })],
                user_data: Expr::Base64(Box::new(user_data)),
            },
        }),
    );
    // The first boot fetches artefacts through the endpoint the bucket policy names, so both
    // must exist before the instance starts.
    t.add(
        "Host",
        Resource::new(Instance {
            launch_template: json!({
                "LaunchTemplateId": Expr::r#ref("HostLaunchTemplate"),
                "Version": Expr::get_att("HostLaunchTemplate", "LatestVersionNumber"),
            }),
            image_id: Expr::r#ref("ImageId"),
            instance_type: c.instance_type.clone(),
            key_name: Expr::r#ref("KeyPair"),
            subnet_id: Expr::r#ref("PublicSubnet"),
            security_group_ids: vec![Expr::r#ref("HostSecurityGroup")],
            iam_instance_profile: Expr::r#ref("HostInstanceProfile"),
            monitoring: false,
            tags: name_tag(c, "host"),
        })
        .depends_on("BucketPolicy")
        .depends_on("PublicSubnetRoutes")
        .depends_on("S3Endpoint"),
    );
    t.output("InstanceId", "The host's instance id", Expr::r#ref("Host"));
    t.output(
        "PublicIp",
        "The host's public IPv4 address",
        Expr::get_att("Host", "PublicIp"),
    );
    t.output(
        "PublicDnsName",
        "The host's public DNS name",
        Expr::get_att("Host", "PublicDnsName"),
    );
    t.output(
        "SshCommand",
        "Log in to the host",
        Expr::sub(format!("ssh {}@${{Host.PublicDnsName}}", c.os.login_user())),
    );
    t.output(
        "LogGroup",
        "The host's CloudWatch log group",
        Expr::r#ref("LogGroup"),
    );
    // `bosun up` reads these back so a later `up` keeps the first boot the host was created
    // with (changing them would replace the instance).
    t.output(
        "BootBosundSha256",
        "SHA-256 of the bosund the host first booted with",
        Expr::str(&boot.bosund_sha256),
    );
    t.output(
        "BootPlaybooksSha256",
        "SHA-256 of the playbooks the host first booted with",
        Expr::str(&boot.playbooks_sha256),
    );
}

fn alarm(
    description: String,
    namespace: &str,
    metric: &str,
    dimensions: Vec<serde_json::Value>,
    threshold: f64,
    periods: u32,
    actions: Vec<Expr>,
) -> Resource {
    Resource::new(Alarm {
        alarm_description: description,
        namespace: namespace.into(),
        metric_name: metric.into(),
        dimensions,
        statistic: if metric == "StatusCheckFailed_System" {
            "Maximum"
        } else {
            "Average"
        }
        .into(),
        period: 300,
        evaluation_periods: periods,
        threshold,
        comparison_operator: if metric == "StatusCheckFailed_System" {
            "GreaterThanOrEqualToThreshold"
        } else {
            "GreaterThanThreshold"
        }
        .into(),
        treat_missing_data: if namespace == "AWS/EC2" {
            "missing"
        } else {
            "breaching"
        }
        .into(),
        alarm_actions: actions,
    })
}

fn alarms(t: &mut Template, c: &StackConfig) {
    let instance = json!({"Name": "InstanceId", "Value": Expr::r#ref("Host")});
    let a = &c.alarms;
    t.add(
        "CpuAlarm",
        alarm(
            format!("{}: CPU above {}% for 15 minutes", c.name, a.cpu_percent),
            "AWS/EC2",
            "CPUUtilization",
            vec![instance.clone()],
            a.cpu_percent.into(),
            3,
            vec![],
        ),
    );
    t.add(
        "SystemStatusAlarm",
        alarm(
            format!(
                "{}: system status check failed; EC2 recovers the instance",
                c.name
            ),
            "AWS/EC2",
            "StatusCheckFailed_System",
            vec![instance.clone()],
            1.0,
            2,
            vec![Expr::sub(
                "arn:${AWS::Partition}:automate:${AWS::Region}:ec2:recover",
            )],
        ),
    );
    t.add(
        "MemoryAlarm",
        alarm(
            format!(
                "{}: memory used above {}% (bosund metrics)",
                c.name, a.memory_percent
            ),
            METRICS_NAMESPACE,
            "mem_used_percent",
            vec![instance.clone()],
            a.memory_percent.into(),
            3,
            vec![],
        ),
    );
    t.add(
        "DiskAlarm",
        alarm(
            format!(
                "{}: root file system above {}% (bosund metrics)",
                c.name, a.disk_percent
            ),
            METRICS_NAMESPACE,
            "disk_used_percent",
            vec![instance, json!({"Name": "path", "Value": "/"})],
            a.disk_percent.into(),
            1,
            vec![],
        ),
    );
}

fn dashboard(t: &mut Template) {
    let metric = |title: &str, metrics: serde_json::Value| {
        json!({"type": "metric", "width": 12, "height": 6, "properties": {
            "title": title, "region": "${AWS::Region}", "stat": "Average", "period": 300,
            "metrics": metrics
        }})
    };
    let body = json!({"widgets": [
        metric("CPU %", json!([["AWS/EC2", "CPUUtilization", "InstanceId", "${Host}"]])),
        metric("Status checks", json!([["AWS/EC2", "StatusCheckFailed", "InstanceId", "${Host}"]])),
        metric("Memory used %", json!([[METRICS_NAMESPACE, "mem_used_percent", "InstanceId", "${Host}"]])),
        metric("Root disk used %", json!([[METRICS_NAMESPACE, "disk_used_percent", "InstanceId", "${Host}", "path", "/"]])),
    ]});
    t.add(
        "Dashboard",
        Resource::new(Dashboard {
            dashboard_name: Expr::sub("bosun-${AWS::StackName}"),
            dashboard_body: Expr::sub(body.to_string()),
        }),
    );
}

fn database(t: &mut Template, c: &StackConfig) {
    let rds = c.rds.as_ref().expect("database() only with [rds]");
    // RDS needs a subnet group in two zones; these subnets have no route to the internet.
    for (id, zone, octet) in [("DbSubnetA", 0, 10), ("DbSubnetB", 1, 11)] {
        t.add(
            id,
            Resource::new(Subnet {
                vpc_id: Expr::r#ref("Vpc"),
                cidr_block: subnet_cidr(c, octet),
                availability_zone: Expr::AvailabilityZone(zone),
                map_public_ip_on_launch: false,
                tags: name_tag(c, "db"),
            }),
        );
    }
    t.add(
        "DbSubnetGroup",
        Resource::new(DbSubnetGroup {
            d_b_subnet_group_description: format!("bosun {} database", c.name),
            subnet_ids: vec![Expr::r#ref("DbSubnetA"), Expr::r#ref("DbSubnetB")],
        }),
    );
    t.add(
        "DbSecurityGroup",
        Resource::new(SecurityGroup {
            group_description: format!("bosun {} database: MySQL from the host only", c.name),
            vpc_id: Expr::r#ref("Vpc"),
            security_group_ingress: vec![Ingress {
                description: "MySQL from the host".into(),
                ip_protocol: "tcp".into(),
                from_port: 3306,
                to_port: 3306,
                cidr_ip: None,
                source_security_group_id: Some(Expr::get_att("HostSecurityGroup", "GroupId")),
            }],
            tags: name_tag(c, "db"),
        }),
    );
    t.add(
        "Database",
        Resource::new(DbInstance {
            engine: "mysql".into(),
            d_b_instance_class: rds.instance_class.clone(),
            allocated_storage: rds.allocated_storage_gb.to_string(),
            storage_type: "gp3".into(),
            storage_encrypted: true,
            backup_retention_period: rds.backup_retention_days,
            delete_automated_backups: false,
            copy_tags_to_snapshot: true,
            manage_master_user_password: true,
            master_username: rds.master_username.clone(),
            d_b_subnet_group_name: Expr::r#ref("DbSubnetGroup"),
            v_p_c_security_groups: vec![Expr::get_att("DbSecurityGroup", "GroupId")],
            publicly_accessible: false,
            multi_a_z: false,
            auto_minor_version_upgrade: true,
            tags: name_tag(c, "db"),
        })
        .keep_on_delete(Policy::Snapshot),
    );
    t.output(
        "DatabaseEndpoint",
        "The database's host name",
        Expr::get_att("Database", "Endpoint.Address"),
    );
    t.output(
        "DatabaseSecretArn",
        "Secrets Manager secret holding the master password",
        Expr::get_att("Database", "MasterUserSecret.SecretArn"),
    );
}

fn dns(t: &mut Template, c: &StackConfig) {
    let d = c.dns.as_ref().expect("dns() only with [dns]");
    t.add(
        "HostRecord",
        Resource::new(RecordSet {
            hosted_zone_id: d.hosted_zone_id.clone(),
            name: d.record_name.clone(),
            r#type: "A".into(),
            t_t_l: "300".into(),
            resource_records: vec![Expr::get_att("Host", "PublicIp")],
        }),
    );
    t.output("HostName", "The host's DNS name", Expr::str(&d.record_name));
    if d.certificate {
        t.add(
            "Certificate",
            Resource::new(Certificate {
                domain_name: d.record_name.clone(),
                validation_method: "DNS".into(),
                domain_validation_options: vec![json!({
                    "DomainName": d.record_name, "HostedZoneId": d.hosted_zone_id
                })],
            }),
        );
        t.output(
            "CertificateArn",
            "The ACM certificate",
            Expr::r#ref("Certificate"),
        );
    }
}

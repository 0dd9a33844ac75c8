//! The stack's template, built from a [`StackConfig`]: one function per group of resources,
//! each resource's properties a typed struct. Pure: no I/O, deterministic output.
//!
//! Two shapes: the *foundation* (network, bucket, log group) that must exist before the
//! artefacts can be uploaded, and the *full* stack (foundation plus IAM, instance, alarms,
//! dashboard, database, DNS, the edge). `bosun up` creates the foundation first when the stack
//! does not exist, uploads, then updates to the full template; see `crate::cloud` for why.
//! With `[edge]` outside us-east-1 a second template ([`super::edge::template`]) holds what
//! must live there.

use serde_json::json;

use super::boot::{
    ARTIFACTS_PLACEHOLDER, BUCKET_PLACEHOLDER, BootDigests, BootRole, METRICS_NAMESPACE,
    log_group_name, render_user_data, user_data_expr,
};
use super::cfn::{Expr, Parameter, Policy, Resource, Template};
use super::config::StackConfig;
use super::edge::{self, EdgeRefs};
use super::nodes;
use super::notify;
use super::resources::*;

/// The foundation: what must exist before `bosun up` can upload the artefacts.
pub fn foundation(config: &StackConfig) -> Template {
    let mut t = Template::new(format!(
        "bosun stack {} (foundation: network, bucket, logs)",
        config.name
    ));
    network(&mut t, config);
    let key = notify::stack_key(&mut t, config, true);
    storage(&mut t, config, key.as_ref());
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
                default: Some(ami.clone()),
                description: "The host's AMI (pinned in stack.toml)".into(),
            },
            None => Parameter {
                kind: "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>".into(),
                default: Some(config.os.ami_parameter().into()),
                description: "Public SSM parameter holding the latest AMI of the host's OS".into(),
            },
        },
    );
    if config.rds.is_some() {
        database(&mut t, config);
    }
    host_role(&mut t, config);
    host(&mut t, config, public_key, boot);
    if let Some(n) = &config.nodes {
        nodes::agents(&mut t, config, n.get_ref(), boot);
    }
    let key = config.kms_key.then(|| Expr::get_att(notify::KEY, "Arn"));
    let topic = notify::alarm_topic(&mut t, config, key.as_ref());
    alarms(&mut t, config, &topic);
    let refs = config.edge.is_some().then(|| {
        let refs = if config.has_edge_stack() {
            edge::parameters(&mut t, config)
        } else {
            edge::us_east_1(&mut t, config, &topic)
        };
        edge::distribution(&mut t, config, &refs);
        refs
    });
    dashboard(&mut t, refs.as_ref());
    if config.dns.is_some() {
        dns(&mut t, config);
    }
    t
}

// --- Groups of resources ------------------------------------------------------------------------

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
        source_prefix_list_id: None,
    }];
    if let Some(edge) = &c.edge {
        // CloudFront only: its origin-facing addresses, as AWS keeps them in a managed prefix
        // list (the ingress also requires the secret header, see `super::edge`).
        ingress.push(Ingress {
            description: "HTTP from CloudFront to the cluster's ingress".into(),
            ip_protocol: "tcp".into(),
            from_port: 80,
            to_port: 80,
            cidr_ip: None,
            source_security_group_id: None,
            source_prefix_list_id: Some(edge.origin_prefix_list.clone()),
        });
    } else if c.public_http {
        for (port, what) in [(80, "HTTP"), (443, "HTTPS")] {
            ingress.push(Ingress {
                description: format!("{what} to the cluster's ingress"),
                ip_protocol: "tcp".into(),
                from_port: port,
                to_port: port,
                cidr_ip: Some("0.0.0.0/0".into()),
                source_security_group_id: None,
                source_prefix_list_id: None,
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

fn storage(t: &mut Template, c: &StackConfig, key: Option<&Expr>) {
    let b = &c.backups;
    if b.access_logging {
        access_log_bucket(t, c);
    }
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
            logging_configuration: b.access_logging.then(|| {
                json!({"DestinationBucketName": Expr::r#ref("AccessLogBucket"), "LogFilePrefix": "data/"})
            }),
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
            kms_key_id: key.cloned(),
        }),
        // Not retained: it has a fixed name, so a kept group would make the next `up` of the
        // same stack fail ("already exists"); its retention already bounds what it holds.
    );
}

/// `[backups] access_logging`: a bucket for the data bucket's server access logs, written by
/// the S3 logging service (bucket policy), expired after the log group's retention.
fn access_log_bucket(t: &mut Template, c: &StackConfig) {
    let mut bucket = Resource::new(Bucket {
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
            rules: vec![json!({
                "Id": "expire-access-logs",
                "Status": "Enabled",
                "ExpirationInDays": c.logs.retention_days,
                "NoncurrentVersionExpiration": {"NoncurrentDays": 1}
            })],
        },
        logging_configuration: None,
        tags: name_tag(c, "access-logs"),
    })
    .keep_on_delete(Policy::Retain);
    // A log bucket does not log its own access (that would log forever).
    bucket.metadata = Some(json!({"checkov": {"skip": [{
        "id": "CKV_AWS_18", "comment": "the access-log bucket itself; logging it would loop"
    }]}}));
    t.add("AccessLogBucket", bucket);
    t.add(
        "AccessLogBucketPolicy",
        Resource::new(BucketPolicy {
            bucket: Expr::r#ref("AccessLogBucket"),
            policy_document: PolicyDocument::new(vec![
                Statement {
                    sid: "DenyWithoutTls".into(),
                    effect: "Deny",
                    principal: Some(json!("*")),
                    action: vec!["s3:*"],
                    resource: vec![
                        Expr::get_att("AccessLogBucket", "Arn"),
                        Expr::sub("${AccessLogBucket.Arn}/*"),
                    ],
                    condition: Some(json!({"Bool": {"aws:SecureTransport": "false"}})),
                },
                Statement {
                    sid: "S3WritesAccessLogs".into(),
                    effect: "Allow",
                    principal: Some(json!({"Service": "logging.s3.amazonaws.com"})),
                    action: vec!["s3:PutObject"],
                    resource: vec![Expr::sub("${AccessLogBucket.Arn}/data/*")],
                    condition: Some(json!({"StringEquals": {"aws:SourceAccount": Expr::r#ref("AWS::AccountId")}})),
                },
            ]),
        }),
    );
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
            policy_document: PolicyDocument::new(vec![
                Statement::allow(
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
                ),
                // The first boot publishes the k3s join token for `[nodes]` agents; that one
                // parameter is the only one the host may write.
                Statement::allow(
                    "PublishTheK3sJoinToken",
                    &["ssm:PutParameter"],
                    vec![arn("ssm", &format!("parameter{}", c.k3s_token_parameter()))],
                ),
            ]),
        },
    ];
    if let Some(rds) = &c.rds {
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
                // IAM database authentication as the backup user, and as no one else.
                Statement::allow(
                    "ConnectAsTheBackupUser",
                    &["rds-db:connect"],
                    vec![arn(
                        "rds-db",
                        &format!("dbuser:${{Database.DbiResourceId}}/{}", rds.backup_user),
                    )],
                ),
            ]),
        });
    }
    let ecr = c.ecr_registries();
    if !ecr.is_empty() {
        // The kubelet's credential provider (playbooks/ecr-credential-provider.toml) pulls with
        // the instance role. GetAuthorizationToken has no resource type ("*" is the only valid
        // resource: the token is scoped by what the role may pull); the pull actions are limited
        // to the named registries' repositories.
        let repositories = ecr
            .iter()
            .map(|r| {
                Expr::sub(format!(
                    "arn:${{AWS::Partition}}:ecr:{}:{}:repository/*",
                    r.region, r.account
                ))
            })
            .collect();
        policies.push(InlinePolicy {
            policy_name: "images".into(),
            policy_document: PolicyDocument::new(vec![
                Statement::allow(
                    "GetEcrPullTokens",
                    &["ecr:GetAuthorizationToken"],
                    vec![Expr::str("*")],
                ),
                Statement::allow(
                    "PullFromTheNamedRegistries",
                    &[
                        "ecr:BatchGetImage",
                        "ecr:GetDownloadUrlForLayer",
                        "ecr:BatchCheckLayerAvailability",
                    ],
                    repositories,
                ),
            ]),
        });
    }
    t.add(
        "HostRole",
        Resource::new(Role {
            description: format!("bosund on the {} host", c.name),
            assume_role_policy_document: PolicyDocument::assumed_by(
                "Ec2AssumesTheHostRole",
                "ec2.amazonaws.com",
            ),
            policies,
            managed_policy_arns: vec![],
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
    let user_data = user_data_expr(
        c,
        &render_user_data(
            c,
            BootRole::Server,
            BUCKET_PLACEHOLDER,
            ARTIFACTS_PLACEHOLDER,
            boot,
        ),
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
                user_data,
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
            tags: instance_tags(c, "host", "server", "public"),
        })
        .depends_on("BucketPolicy")
        .depends_on("PublicSubnetRoutes")
        .depends_on("S3Endpoint"),
    );
    // The stable address: it survives stop/start (the instance's own public IP does not), and
    // every record and origin points at it, never at `Host.PublicIp`.
    t.add(
        "HostEip",
        Resource::new(Eip {
            domain: "vpc".into(),
            instance_id: Expr::r#ref("Host"),
            tags: name_tag(c, "host"),
        })
        .depends_on("GatewayAttachment"),
    );
    t.output("InstanceId", "The host's instance id", Expr::r#ref("Host"));
    t.output("PublicIp", "The host's Elastic IP", Expr::r#ref("HostEip"));
    t.output(
        "SshCommand",
        "Log in to the host",
        Expr::sub(format!("ssh {}@${{HostEip}}", c.os.login_user())),
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

// Each argument is one property of the alarm, named at the call site's line.
#[allow(clippy::too_many_arguments)]
fn alarm(
    description: String,
    namespace: &str,
    metric: &str,
    dimensions: Vec<serde_json::Value>,
    threshold: f64,
    periods: u32,
    actions: Vec<Expr>,
    topic: &Expr,
) -> Resource {
    let mut actions = actions;
    actions.push(topic.clone());
    Resource::new(Alarm {
        alarm_description: description,
        namespace: namespace.into(),
        metric_name: metric.into(),
        dimensions,
        statistic: if metric.starts_with("StatusCheckFailed") {
            "Maximum"
        } else {
            "Average"
        }
        .into(),
        period: 300,
        evaluation_periods: periods,
        threshold,
        comparison_operator: if metric.starts_with("StatusCheckFailed") {
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
        o_k_actions: vec![topic.clone()],
    })
}

fn alarms(t: &mut Template, c: &StackConfig, topic: &Expr) {
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
            topic,
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
            topic,
        ),
    );
    t.add(
        "InstanceStatusAlarm",
        alarm(
            format!(
                "{}: instance status check failed (the OS does not answer: reboot or look at the console log)",
                c.name
            ),
            "AWS/EC2",
            "StatusCheckFailed_Instance",
            vec![instance.clone()],
            1.0,
            3,
            vec![],
            topic,
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
            topic,
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
            vec![instance.clone(), json!({"Name": "path", "Value": "/"})],
            a.disk_percent.into(),
            1,
            vec![],
            topic,
        ),
    );
    // bosund's drift report: steps a scheduled check run (`check = true`) found would
    // change, summed over its playbooks (the per-playbook points carry `playbook`). No data
    // means no check is scheduled: not an alarm.
    t.add(
        "DriftAlarm",
        Resource::new(Alarm {
            alarm_description: format!(
                "{}: the host drifted from its playbooks (bosund's scheduled check runs; `bosun status` names the steps)",
                c.name
            ),
            namespace: METRICS_NAMESPACE.into(),
            metric_name: "DriftSteps".into(),
            dimensions: vec![instance],
            statistic: "Maximum".into(),
            period: 300,
            evaluation_periods: 1,
            threshold: 0.0,
            comparison_operator: "GreaterThanThreshold".into(),
            treat_missing_data: "notBreaching".into(),
            alarm_actions: vec![topic.clone()],
            o_k_actions: vec![topic.clone()],
        }),
    );
}

fn dashboard(t: &mut Template, edge: Option<&EdgeRefs>) {
    let metric = |title: &str, region: &str, stat: &str, metrics: serde_json::Value| {
        json!({"type": "metric", "width": 12, "height": 6, "properties": {
            "title": title, "region": region, "stat": stat, "period": 300,
            "metrics": metrics
        }})
    };
    let here = "${AWS::Region}";
    let mut widgets = vec![
        metric(
            "CPU %",
            here,
            "Average",
            json!([["AWS/EC2", "CPUUtilization", "InstanceId", "${Host}"]]),
        ),
        metric(
            "Status checks (system, instance)",
            here,
            "Maximum",
            json!([
                [
                    "AWS/EC2",
                    "StatusCheckFailed_System",
                    "InstanceId",
                    "${Host}"
                ],
                [
                    "AWS/EC2",
                    "StatusCheckFailed_Instance",
                    "InstanceId",
                    "${Host}"
                ]
            ]),
        ),
        metric(
            "Memory used %",
            here,
            "Average",
            json!([[
                METRICS_NAMESPACE,
                "mem_used_percent",
                "InstanceId",
                "${Host}"
            ]]),
        ),
        metric(
            "Root disk used %",
            here,
            "Average",
            json!([[
                METRICS_NAMESPACE,
                "disk_used_percent",
                "InstanceId",
                "${Host}",
                "path",
                "/"
            ]]),
        ),
    ];
    let mut vars = Vec::new();
    if let Some(refs) = edge {
        // Route 53 publishes health-check metrics in us-east-1 only.
        let checks: Vec<serde_json::Value> = (0..refs.health_check_ids.len())
            .map(|i| {
                json!([
                    "AWS/Route53",
                    "HealthCheckStatus",
                    "HealthCheckId",
                    format!("${{HealthCheck{i}Id}}")
                ])
            })
            .collect();
        widgets.push(metric(
            "Public names healthy (1) through CloudFront",
            "us-east-1",
            "Minimum",
            json!(checks),
        ));
        for (i, id) in refs.health_check_ids.iter().enumerate() {
            vars.push((format!("HealthCheck{i}Id"), id.clone()));
        }
    }
    let body = json!({ "widgets": widgets }).to_string();
    t.add(
        "Dashboard",
        Resource::new(Dashboard {
            dashboard_name: Expr::sub("bosun-${AWS::StackName}"),
            dashboard_body: if vars.is_empty() {
                Expr::sub(body)
            } else {
                Expr::SubWith(body, vars)
            },
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
                source_prefix_list_id: None,
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
            multi_a_z: rds.multi_az,
            auto_minor_version_upgrade: true,
            // Tokens from the host's role instead of a stored password (see HostRole's
            // `database` policy: rds-db:connect as the backup user only).
            enable_i_a_m_database_authentication: true,
            enable_cloudwatch_logs_exports: vec!["error".into(), "slowquery".into()],
            // Off: `bosun down` deletes the stack's database (after its final snapshot); a
            // protected instance would make every `down` fail half-way.
            deletion_protection: false,
            monitoring_interval: (rds.monitoring_interval > 0).then_some(rds.monitoring_interval),
            monitoring_role_arn: (rds.monitoring_interval > 0)
                .then(|| Expr::get_att("DbMonitoringRole", "Arn")),
            tags: name_tag(c, "db"),
        })
        .keep_on_delete(Policy::Snapshot),
    );
    if rds.monitoring_interval > 0 {
        t.add(
            "DbMonitoringRole",
            Resource::new(Role {
                description: format!("RDS enhanced monitoring of the {} database", c.name),
                assume_role_policy_document: PolicyDocument::assumed_by("RdsMonitoringAssumesTheRole", "monitoring.rds.amazonaws.com"),
                policies: vec![],
                managed_policy_arns: vec![Expr::sub(
                    "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole",
                )],
                tags: name_tag(c, "db-monitoring"),
            }),
        );
    }
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
            t_t_l: Some("300".into()),
            resource_records: vec![Expr::r#ref("HostEip")],
            alias_target: None,
        }),
    );
    t.output("HostName", "The host's DNS name", Expr::str(&d.record_name));
    if d.certificate {
        t.add(
            "Certificate",
            Resource::new(Certificate {
                domain_name: d.record_name.clone(),
                subject_alternative_names: vec![],
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

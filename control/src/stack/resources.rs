//! The resource property types of the stack's templates: one plain serde struct per
//! CloudFormation resource type, with CloudFormation's field names. Pure data.

use serde::Serialize;

use super::cfn::{Expr, Properties};
use super::config::{StackConfig, tags};

/// A `Key`/`Value` tag.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    pub key: String,
    pub value: Expr,
}

pub fn name_tag(config: &StackConfig, what: &str) -> Vec<Tag> {
    vec![Tag {
        key: "Name".into(),
        value: Expr::str(format!("{}-{what}", config.name)),
    }]
}

/// `arn:<partition>:<service>:<region>:<account>:<resource>` of the stack's own account and
/// region.
pub fn arn(service: &str, resource: &str) -> Expr {
    Expr::sub(format!(
        "arn:${{AWS::Partition}}:{service}:${{AWS::Region}}:${{AWS::AccountId}}:{resource}"
    ))
}

/// An instance's tags: its name, and what `--inventory aws:<stack>` reads (see
/// [`tags`]).
pub fn instance_tags(c: &StackConfig, what: &str, role: &str, address: &str) -> Vec<Tag> {
    let mut tags = name_tag(c, what);
    for (key, value) in [
        (tags::STACK, c.name.as_str()),
        (tags::ROLE, role),
        (tags::ADDRESS, address),
        (tags::LOGIN_USER, c.os.login_user()),
    ] {
        tags.push(Tag {
            key: key.into(),
            value: Expr::str(value),
        });
    }
    tags
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_prefix_list_id: Option<String>,
}

properties!(
    /// `AWS::EC2::SecurityGroupIngress`: one rule on its own, from another security group (two
    /// groups that name each other inline would depend on each other; a group cannot name
    /// itself inline).
    SecurityGroupIngress = "AWS::EC2::SecurityGroupIngress" {
        group_id: Expr,
        description: String,
        ip_protocol: String,
        from_port: u16,
        to_port: u16,
        source_security_group_id: Expr,
    }
);

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
        #[serde(skip_serializing_if = "Option::is_none")]
        logging_configuration: Option<serde_json::Value>,
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
    LogGroup = "AWS::Logs::LogGroup" {
        log_group_name: String,
        retention_in_days: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        kms_key_id: Option<Expr>,
    }
);
properties!(
    /// `AWS::IAM::Role`.
    Role = "AWS::IAM::Role" {
        description: String,
        assume_role_policy_document: PolicyDocument,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        policies: Vec<InlinePolicy>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        managed_policy_arns: Vec<Expr>,
        tags: Vec<Tag>,
    }
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
    pub fn new(statement: Vec<Statement>) -> PolicyDocument {
        PolicyDocument {
            version: "2012-10-17",
            statement,
        }
    }

    /// The trust policy that lets `service` (e.g. `ec2.amazonaws.com`) assume a role.
    pub fn assumed_by(sid: &str, service: &str) -> PolicyDocument {
        PolicyDocument::new(vec![Statement {
            sid: sid.into(),
            effect: "Allow",
            principal: Some(serde_json::json!({ "Service": service })),
            action: vec!["sts:AssumeRole"],
            resource: vec![],
            condition: None,
        }])
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
    pub fn allow(sid: &str, action: &[&'static str], resource: Vec<Expr>) -> Statement {
        Statement {
            sid: sid.into(),
            effect: "Allow",
            principal: None,
            action: action.to_vec(),
            resource,
            condition: None,
        }
    }

    pub fn when(mut self, condition: serde_json::Value) -> Statement {
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

/// The agents' launch template data: everything an Auto Scaling group's instance is made of.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeLaunchTemplateData {
    pub image_id: Expr,
    pub instance_type: String,
    pub key_name: Expr,
    pub iam_instance_profile: serde_json::Value,
    pub network_interfaces: Vec<serde_json::Value>,
    pub metadata_options: serde_json::Value,
    pub block_device_mappings: Vec<serde_json::Value>,
    pub user_data: Expr,
}

properties!(
    /// `AWS::EC2::LaunchTemplate` of the `[nodes]` group.
    NodeLaunchTemplate = "AWS::EC2::LaunchTemplate" { launch_template_data: NodeLaunchTemplateData }
);

properties!(
    /// `AWS::AutoScaling::AutoScalingGroup` (sizes are strings in CloudFormation's schema).
    AutoScalingGroup = "AWS::AutoScaling::AutoScalingGroup" {
        min_size: String,
        max_size: String,
        desired_capacity: String,
        launch_template: serde_json::Value,
        #[serde(rename = "VPCZoneIdentifier")]
        vpc_zone_identifier: Vec<Expr>,
        health_check_type: String,
        tags: Vec<GroupTag>,
    }
);

/// A tag of an Auto Scaling group, copied to its instances when `propagate_at_launch`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GroupTag {
    pub key: String,
    pub value: String,
    pub propagate_at_launch: bool,
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
        #[serde(skip_serializing_if = "Vec::is_empty")]
        o_k_actions: Vec<Expr>,
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
        enable_i_a_m_database_authentication: bool,
        enable_cloudwatch_logs_exports: Vec<String>,
        deletion_protection: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        monitoring_interval: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        monitoring_role_arn: Option<Expr>,
        tags: Vec<Tag>,
    }
);
properties!(
    /// `AWS::Route53::RecordSet`.
    RecordSet = "AWS::Route53::RecordSet" {
        hosted_zone_id: String,
        name: String,
        r#type: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        t_t_l: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        resource_records: Vec<Expr>,
        #[serde(skip_serializing_if = "Option::is_none")]
        alias_target: Option<serde_json::Value>,
    }
);
properties!(
    /// `AWS::CertificateManager::Certificate`.
    Certificate = "AWS::CertificateManager::Certificate" {
        domain_name: String,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        subject_alternative_names: Vec<String>,
        validation_method: String,
        domain_validation_options: Vec<serde_json::Value>,
    }
);

properties!(
    /// `AWS::EC2::EIP`: the host's stable address, associated with the instance.
    Eip = "AWS::EC2::EIP" { domain: String, instance_id: Expr, tags: Vec<Tag> }
);
properties!(
    /// `AWS::SNS::Topic`, with its e-mail subscriptions.
    Topic = "AWS::SNS::Topic" {
        topic_name: Expr,
        #[serde(skip_serializing_if = "Option::is_none")]
        kms_master_key_id: Option<Expr>,
        subscription: Vec<serde_json::Value>,
        tags: Vec<Tag>,
    }
);
properties!(
    /// `AWS::Route53::HealthCheck`.
    HealthCheck = "AWS::Route53::HealthCheck" {
        health_check_config: serde_json::Value,
        health_check_tags: Vec<Tag>,
    }
);
properties!(
    /// `AWS::CloudFront::Distribution`.
    Distribution = "AWS::CloudFront::Distribution" { distribution_config: serde_json::Value, tags: Vec<Tag> }
);
properties!(
    /// `AWS::KMS::Key`.
    KmsKey = "AWS::KMS::Key" {
        description: String,
        enable_key_rotation: bool,
        key_policy: PolicyDocument,
        tags: Vec<Tag>,
    }
);
properties!(
    /// `AWS::WAFv2::WebACL` (scope CLOUDFRONT: lives in us-east-1).
    WebAcl = "AWS::WAFv2::WebACL" {
        name: Expr,
        scope: String,
        default_action: serde_json::Value,
        rules: Vec<serde_json::Value>,
        visibility_config: serde_json::Value,
        tags: Vec<Tag>,
    }
);

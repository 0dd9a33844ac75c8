//! `[nodes]`: k3s agents in an Auto Scaling group beside the host (the k3s server).
//!
//! What the group is made of, and why:
//! - **Network**: the agents live in the stack's VPC and public subnet, in their own security
//!   group. k3s's inbound rules ("Inbound Rules for K3s Nodes", docs.k3s.io/installation/
//!   requirements) are opened between the two groups only, never from an address range:
//!   6443/tcp agents → server (supervisor and API), 8472/udp all nodes ↔ all nodes (flannel
//!   VXLAN), 10250/tcp all nodes ↔ all nodes (kubelet metrics and API). SSH reaches an agent
//!   from the host (the bastion hop of `--inventory aws:<stack>`) and, only with
//!   `public_address`, from `operator_cidr`. Nothing else: no etcd (one server), no NodePorts.
//!   Each rule is its own `AWS::EC2::SecurityGroupIngress`, since the groups name each other.
//! - **Identity**: the agents' role may `ssm:GetParameter` the join token parameter and nothing
//!   else: no bucket (the first boot fetches artefacts through the VPC endpoint, as the host's
//!   does), no other parameter, no log group or metrics (the first boot's agent.toml configures
//!   no telemetry, on the host or here). The token is a SecureString under the AWS-managed
//!   `alias/aws/ssm` key, whose key policy lets SSM decrypt for any principal of the account
//!   that may read the parameter: no `kms:Decrypt` grant is needed.
//! - **First boot**: the host's artefacts, bootstrap.toml only, with `k3s_role = "agent"`, the
//!   server's private address and the token parameter's name (see
//!   [`StackConfig::agent_boot_vars`]).
//! - **Size**: `count` is the group's desired capacity, `min`/`max` its bounds; nothing else in
//!   the template depends on them, so `bosun up` with a new count changes only the group.

use serde_json::json;

use super::boot::{
    ARTIFACTS_PLACEHOLDER, BUCKET_PLACEHOLDER, BootDigests, BootRole, SERVER_ADDRESS_PLACEHOLDER,
    render_user_data, user_data_expr,
};
use super::cfn::{Expr, Resource, Template};
use super::config::{NodesConfig, StackConfig, tags};
use super::resources::*;

/// The agents' security group, role, instance profile, launch template and group.
pub(super) fn agents(t: &mut Template, c: &StackConfig, n: &NodesConfig, boot: &BootDigests) {
    security_groups(t, c, n);
    role(t, c);
    let user_data = user_data_expr(
        c,
        &render_user_data(
            c,
            BootRole::Agent {
                server_address: SERVER_ADDRESS_PLACEHOLDER,
            },
            BUCKET_PLACEHOLDER,
            ARTIFACTS_PLACEHOLDER,
            boot,
        ),
    );
    t.add(
        "NodeLaunchTemplate",
        Resource::new(NodeLaunchTemplate {
            launch_template_data: NodeLaunchTemplateData {
                image_id: Expr::r#ref("ImageId"),
                instance_type: n.instance_type(&c.instance_type).to_string(),
                key_name: Expr::r#ref("KeyPair"),
                iam_instance_profile: json!({"Arn": Expr::get_att("NodeInstanceProfile", "Arn")}),
                network_interfaces: vec![json!({
                    "DeviceIndex": 0,
                    "AssociatePublicIpAddress": n.public_address,
                    "Groups": [Expr::get_att("NodeSecurityGroup", "GroupId")],
                    "DeleteOnTermination": true
                })],
                // As the host's: IMDSv2 only, one hop so containers cannot reach it.
                metadata_options: json!({
                    "HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 1
                }),
                block_device_mappings: vec![json!({
                    "DeviceName": "/dev/xvda",
                    "Ebs": {"VolumeType": "gp3", "VolumeSize": c.root_volume_gb, "Encrypted": true, "DeleteOnTermination": true}
                })],
                user_data,
            },
        }),
    );
    let address = if n.public_address {
        "public"
    } else {
        "private"
    };
    let group_tags = instance_tags(c, "agent", "agent", address)
        .into_iter()
        .map(|tag| GroupTag {
            key: tag.key,
            value: match tag.value {
                Expr::Str(s) => s,
                other => unreachable!("instance tags are literals: {other:?}"),
            },
            propagate_at_launch: true,
        })
        .collect();
    // Agents fetch the artefacts through the endpoint the bucket policy names, as the host does.
    t.add(
        "NodeGroup",
        Resource::new(AutoScalingGroup {
            min_size: n.min().to_string(),
            max_size: n.max().to_string(),
            desired_capacity: n.count().to_string(),
            launch_template: json!({
                "LaunchTemplateId": Expr::r#ref("NodeLaunchTemplate"),
                "Version": Expr::get_att("NodeLaunchTemplate", "LatestVersionNumber"),
            }),
            vpc_zone_identifier: vec![Expr::r#ref("PublicSubnet")],
            health_check_type: "EC2".into(),
            tags: group_tags,
        })
        .depends_on("BucketPolicy")
        .depends_on("PublicSubnetRoutes")
        .depends_on("S3Endpoint"),
    );
    t.output(
        "NodeGroupName",
        "The Auto Scaling group of k3s agents",
        Expr::r#ref("NodeGroup"),
    );
}

/// One k3s port between two groups.
struct Rule {
    id: &'static str,
    to: &'static str,
    from: &'static str,
    protocol: &'static str,
    port: u16,
    description: &'static str,
}

/// k3s's inbound rules between the server (`HostSecurityGroup`) and the agents
/// (`NodeSecurityGroup`), and SSH from the host to the agents.
const RULES: &[Rule] = &[
    Rule {
        id: "ServerApiFromNodes",
        to: "HostSecurityGroup",
        from: "NodeSecurityGroup",
        protocol: "tcp",
        port: 6443,
        description: "k3s supervisor and Kubernetes API from the agents",
    },
    Rule {
        id: "ServerVxlanFromNodes",
        to: "HostSecurityGroup",
        from: "NodeSecurityGroup",
        protocol: "udp",
        port: 8472,
        description: "flannel VXLAN from the agents",
    },
    Rule {
        id: "ServerKubeletFromNodes",
        to: "HostSecurityGroup",
        from: "NodeSecurityGroup",
        protocol: "tcp",
        port: 10250,
        description: "kubelet metrics and API from the agents",
    },
    Rule {
        id: "NodesVxlanFromServer",
        to: "NodeSecurityGroup",
        from: "HostSecurityGroup",
        protocol: "udp",
        port: 8472,
        description: "flannel VXLAN from the server",
    },
    Rule {
        id: "NodesKubeletFromServer",
        to: "NodeSecurityGroup",
        from: "HostSecurityGroup",
        protocol: "tcp",
        port: 10250,
        description: "kubelet metrics and API from the server",
    },
    Rule {
        id: "NodesVxlanFromNodes",
        to: "NodeSecurityGroup",
        from: "NodeSecurityGroup",
        protocol: "udp",
        port: 8472,
        description: "flannel VXLAN between agents",
    },
    Rule {
        id: "NodesKubeletFromNodes",
        to: "NodeSecurityGroup",
        from: "NodeSecurityGroup",
        protocol: "tcp",
        port: 10250,
        description: "kubelet metrics and API between agents",
    },
    Rule {
        id: "NodesSshFromServer",
        to: "NodeSecurityGroup",
        from: "HostSecurityGroup",
        protocol: "tcp",
        port: 22,
        description: "SSH from the server (the operator's jump host)",
    },
];

fn security_groups(t: &mut Template, c: &StackConfig, n: &NodesConfig) {
    let ingress = if n.public_address {
        vec![Ingress {
            description: "SSH from the operator".into(),
            ip_protocol: "tcp".into(),
            from_port: 22,
            to_port: 22,
            cidr_ip: Some(c.operator_cidr.clone()),
            source_security_group_id: None,
            source_prefix_list_id: None,
        }]
    } else {
        Vec::new()
    };
    t.add(
        "NodeSecurityGroup",
        Resource::new(SecurityGroup {
            group_description: format!("bosun {} k3s agents", c.name),
            vpc_id: Expr::r#ref("Vpc"),
            security_group_ingress: ingress,
            tags: name_tag(c, "agent")
                .into_iter()
                .chain([Tag {
                    key: tags::STACK.into(),
                    value: Expr::str(&c.name),
                }])
                .collect(),
        }),
    );
    for r in RULES {
        t.add(
            r.id,
            Resource::new(SecurityGroupIngress {
                group_id: Expr::get_att(r.to, "GroupId"),
                description: r.description.into(),
                ip_protocol: r.protocol.into(),
                from_port: r.port,
                to_port: r.port,
                source_security_group_id: Expr::get_att(r.from, "GroupId"),
            }),
        );
    }
}

fn role(t: &mut Template, c: &StackConfig) {
    t.add(
        "NodeRole",
        Resource::new(Role {
            description: format!("k3s agents of the {} stack", c.name),
            assume_role_policy_document: PolicyDocument::assumed_by(
                "Ec2AssumesTheNodeRole",
                "ec2.amazonaws.com",
            ),
            policies: vec![InlinePolicy {
                policy_name: "k3s-token".into(),
                policy_document: PolicyDocument::new(vec![Statement::allow(
                    "ReadTheK3sJoinToken",
                    &["ssm:GetParameter"],
                    vec![arn("ssm", &format!("parameter{}", c.k3s_token_parameter()))],
                )]),
            }],
            managed_policy_arns: vec![],
            tags: name_tag(c, "agent"),
        }),
    );
    t.add(
        "NodeInstanceProfile",
        Resource::new(InstanceProfile {
            roles: vec![Expr::r#ref("NodeRole")],
        }),
    );
}

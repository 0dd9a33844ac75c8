//! Who hears about alarms: the stack's SNS topic with `[alarms] email` subscribed, and the
//! optional customer-managed KMS key (`kms_key = true`) that encrypts it and the log group.
//!
//! One topic per region: a CloudWatch alarm can only notify a topic in its own region, and the
//! Route 53 health checks' metrics exist only in us-east-1. With the stack in us-east-1 that is
//! one topic for everything; elsewhere the edge stack has a second one with the same addresses.

use serde_json::json;

use super::cfn::{Expr, Resource, Template};
use super::config::StackConfig;
use super::resources::{KmsKey, PolicyDocument, Statement, Topic, name_tag};

/// The topic's logical id.
pub const TOPIC: &str = "AlarmTopic";
/// The KMS key's logical id (only with `kms_key = true`).
pub const KEY: &str = "StackKey";

/// Adds the KMS key when `kms_key` is on; `logs` says whether the key's policy must let
/// CloudWatch Logs use it (the main stack's log group).
pub fn stack_key(t: &mut Template, c: &StackConfig, logs: bool) -> Option<Expr> {
    if !c.kms_key {
        return None;
    }
    let mut statements = vec![
        Statement {
            sid: "TheAccountAdministersTheKey".into(),
            effect: "Allow",
            principal: Some(
                json!({"AWS": Expr::sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root")}),
            ),
            action: vec!["kms:*"],
            resource: vec![Expr::str("*")],
            condition: None,
        },
        // CloudWatch publishes alarm notifications into the encrypted topic.
        Statement {
            sid: "CloudWatchPublishesAlarms".into(),
            effect: "Allow",
            principal: Some(json!({"Service": "cloudwatch.amazonaws.com"})),
            action: vec!["kms:Decrypt", "kms:GenerateDataKey*"],
            resource: vec![Expr::str("*")],
            condition: None,
        },
    ];
    if logs {
        statements.push(Statement {
            sid: "CloudWatchLogsEncryptsTheLogGroup".into(),
            effect: "Allow",
            principal: Some(json!({"Service": Expr::sub("logs.${AWS::Region}.amazonaws.com")})),
            action: vec![
                "kms:Encrypt*",
                "kms:Decrypt*",
                "kms:ReEncrypt*",
                "kms:GenerateDataKey*",
                "kms:Describe*",
            ],
            resource: vec![Expr::str("*")],
            condition: Some(
                json!({"ArnLike": {"kms:EncryptionContext:aws:logs:arn": Expr::sub(
                    "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:*"
                )}}),
            ),
        });
    }
    t.add(
        KEY,
        Resource::new(KmsKey {
            description: format!("bosun {}: log group and alarm topic", c.name),
            enable_key_rotation: true,
            key_policy: PolicyDocument::new(statements),
            tags: name_tag(c, "key"),
        }),
    );
    Some(Expr::get_att(KEY, "Arn"))
}

/// Adds the alarm topic, encrypted with `key` when given; returns its `Ref` (the ARN).
pub fn alarm_topic(t: &mut Template, c: &StackConfig, key: Option<&Expr>) -> Expr {
    let subscription = c
        .alarms
        .email
        .iter()
        .map(|e| json!({"Protocol": "email", "Endpoint": e}))
        .collect();
    let topic = Resource::new(Topic {
        topic_name: Expr::sub("${AWS::StackName}-alarms"),
        kms_master_key_id: key.cloned(),
        subscription,
        tags: name_tag(c, "alarms"),
    });
    t.add(TOPIC, topic);
    Expr::r#ref(TOPIC)
}

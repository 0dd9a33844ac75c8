//! The CloudFormation template as typed Rust: a [`Template`] of [`Resource`]s whose properties
//! are plain serde structs (one per resource type, in [`super::template`]), and [`Expr`], the
//! intrinsic functions bosun uses. Serialises to the JSON CloudFormation reads; no I/O.
//!
//! Invariant: serialisation is deterministic (ordered maps, no timestamps), so the same config
//! and artefacts give byte-identical templates and CloudFormation sees "no changes".

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};
use serde_json::{Value, json};

/// A value in a template: a literal or an intrinsic function.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal string.
    Str(String),
    /// `{"Ref": name}`: a parameter's value, a resource's physical id, or a pseudo parameter.
    Ref(String),
    /// `{"Fn::GetAtt": [resource, attribute]}`.
    GetAtt(String, String),
    /// `{"Fn::Sub": text}`: `${Name}` and `${Res.Attr}` substituted.
    Sub(String),
    /// `{"Fn::Join": [separator, parts]}`.
    Join(String, Vec<Expr>),
    /// `{"Fn::Base64": value}`.
    Base64(Box<Expr>),
    /// `{"Fn::Select": [index, {"Fn::GetAZs": ""}]}`: the n-th availability zone of the region.
    AvailabilityZone(u32),
    /// `{"Fn::Sub": [text, {name: value, ...}]}`: `${name}` replaced by the given values.
    SubWith(String, Vec<(String, Expr)>),
    /// `{"Fn::Select": [index, list]}`.
    Select(u32, Box<Expr>),
    /// `{"Fn::Split": [separator, text]}`.
    Split(String, Box<Expr>),
    /// `{"Fn::Join": [separator, list]}` where the list is itself a function's result.
    JoinList(String, Box<Expr>),
}

impl Expr {
    /// A literal.
    pub fn str(s: impl Into<String>) -> Expr {
        Expr::Str(s.into())
    }

    /// `Ref` of a logical id or pseudo parameter.
    pub fn r#ref(name: &str) -> Expr {
        Expr::Ref(name.to_string())
    }

    /// `Fn::GetAtt`.
    pub fn get_att(resource: &str, attribute: &str) -> Expr {
        Expr::GetAtt(resource.to_string(), attribute.to_string())
    }

    /// `Fn::Sub`.
    pub fn sub(text: impl Into<String>) -> Expr {
        Expr::Sub(text.into())
    }

    /// Splits `text` at each placeholder in `values` (e.g. `@@BUCKET@@`) and joins the pieces
    /// with the placeholder's value: a large literal (user-data) with a few stack values in it,
    /// without `Fn::Sub`'s need to escape every `${` of the shell and YAML inside.
    pub fn join_with_placeholders(text: &str, values: &[(&str, Expr)]) -> Expr {
        let mut parts = vec![Expr::str(text)];
        for (placeholder, value) in values {
            let mut next = Vec::new();
            for part in parts {
                match part {
                    Expr::Str(s) => {
                        let mut first = true;
                        for piece in s.split(placeholder) {
                            if !first {
                                next.push(value.clone());
                            }
                            first = false;
                            if !piece.is_empty() {
                                next.push(Expr::str(piece));
                            }
                        }
                    }
                    other => next.push(other),
                }
            }
            parts = next;
        }
        Expr::Join(String::new(), parts)
    }

    fn to_json(&self) -> Value {
        match self {
            Expr::Str(s) => Value::String(s.clone()),
            Expr::Ref(n) => json!({ "Ref": n }),
            Expr::GetAtt(r, a) => json!({ "Fn::GetAtt": [r, a] }),
            Expr::Sub(t) => json!({ "Fn::Sub": t }),
            Expr::Join(sep, parts) => {
                let parts: Vec<Value> = parts.iter().map(Expr::to_json).collect();
                json!({ "Fn::Join": [sep, parts] })
            }
            Expr::Base64(v) => json!({ "Fn::Base64": v.to_json() }),
            Expr::AvailabilityZone(i) => json!({ "Fn::Select": [i, { "Fn::GetAZs": "" }] }),
            Expr::SubWith(t, vars) => {
                let vars: serde_json::Map<String, Value> =
                    vars.iter().map(|(k, v)| (k.clone(), v.to_json())).collect();
                json!({ "Fn::Sub": [t, vars] })
            }
            Expr::Select(i, list) => json!({ "Fn::Select": [i, list.to_json()] }),
            Expr::Split(sep, text) => json!({ "Fn::Split": [sep, text.to_json()] }),
            Expr::JoinList(sep, list) => json!({ "Fn::Join": [sep, list.to_json()] }),
        }
    }
}

impl From<&str> for Expr {
    fn from(s: &str) -> Expr {
        Expr::str(s)
    }
}

impl From<String> for Expr {
    fn from(s: String) -> Expr {
        Expr::Str(s)
    }
}

impl Serialize for Expr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

/// The properties of one resource type: a serde struct with CloudFormation's field names.
pub trait Properties: Serialize {
    /// The CloudFormation type, e.g. `AWS::EC2::VPC`.
    const TYPE: &'static str;
}

/// `Retain` or `Snapshot` (the default, `Delete`, is never written), for `DeletionPolicy` and `UpdateReplacePolicy`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub enum Policy {
    Retain,
    Snapshot,
}

/// One entry of `Resources`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Resource {
    #[serde(rename = "Type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<Policy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_replace_policy: Option<Policy>,
    /// Only for scanners' suppressions (`{"checkov": {"skip": [{id, comment}]}}`), each with
    /// its reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    pub properties: Value,
}

impl Resource {
    /// A resource from its typed properties.
    pub fn new<P: Properties>(properties: P) -> Resource {
        Resource {
            kind: P::TYPE,
            condition: None,
            depends_on: Vec::new(),
            deletion_policy: None,
            update_replace_policy: None,
            metadata: None,
            // Serialising plain structs of strings, numbers and Exprs cannot fail.
            properties: serde_json::to_value(properties).expect("properties serialise to JSON"),
        }
    }

    /// Sets `DeletionPolicy` and `UpdateReplacePolicy` to the same policy.
    pub fn keep_on_delete(mut self, policy: Policy) -> Resource {
        self.deletion_policy = Some(policy);
        self.update_replace_policy = Some(policy);
        self
    }

    /// Adds an explicit `DependsOn`.
    pub fn depends_on(mut self, logical_id: &str) -> Resource {
        self.depends_on.push(logical_id.to_string());
        self
    }
}

/// One entry of `Parameters`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Parameter {
    #[serde(rename = "Type")]
    pub kind: String,
    /// `None` for values `bosun up` always passes (the edge stack's outputs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    pub description: String,
}

/// One entry of `Outputs`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Output {
    pub description: String,
    pub value: Expr,
}

/// A whole template. Field order is CloudFormation's conventional order.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Template {
    #[serde(rename = "AWSTemplateFormatVersion")]
    pub format_version: &'static str,
    pub description: String,
    /// Where cfn-lint suppressions would go (`{"cfn-lint": {"config": {"ignore_checks":
    /// [...]}}}`), each with its reason in a comment where it is set. None is needed today:
    /// the generated templates lint clean, warnings included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, Parameter>,
    pub resources: BTreeMap<String, Resource>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, Output>,
}

impl Template {
    /// An empty template with a description.
    pub fn new(description: impl Into<String>) -> Template {
        Template {
            format_version: "2010-09-09",
            description: description.into(),
            metadata: None,
            parameters: BTreeMap::new(),
            resources: BTreeMap::new(),
            outputs: BTreeMap::new(),
        }
    }

    /// Adds a resource under `logical_id`.
    pub fn add(&mut self, logical_id: &str, resource: Resource) {
        self.resources.insert(logical_id.to_string(), resource);
    }

    /// Adds an output.
    pub fn output(&mut self, name: &str, description: &str, value: Expr) {
        self.outputs.insert(
            name.to_string(),
            Output {
                description: description.to_string(),
                value,
            },
        );
    }

    /// The template as pretty JSON (what `bosun template` prints and CloudFormation receives).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a template serialises to JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intrinsics_serialise_as_cloudformation_expects() {
        assert_eq!(
            serde_json::to_value(Expr::get_att("Bucket", "Arn")).unwrap(),
            json!({"Fn::GetAtt": ["Bucket", "Arn"]})
        );
        assert_eq!(
            serde_json::to_value(Expr::AvailabilityZone(1)).unwrap(),
            json!({"Fn::Select": [1, {"Fn::GetAZs": ""}]})
        );
        assert_eq!(
            serde_json::to_value(Expr::Base64(Box::new(Expr::sub("${AWS::Region}")))).unwrap(),
            json!({"Fn::Base64": {"Fn::Sub": "${AWS::Region}"}})
        );
    }

    #[test]
    fn placeholders_become_join_parts() {
        let e = Expr::join_with_placeholders("a@@B@@c@@B@@", &[("@@B@@", Expr::r#ref("Bucket"))]);
        assert_eq!(
            serde_json::to_value(e).unwrap(),
            json!({"Fn::Join": ["", ["a", {"Ref": "Bucket"}, "c", {"Ref": "Bucket"}]]})
        );
    }
}

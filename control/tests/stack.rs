//! `bosun template`, `user-data`, `plan`, `up` and `down`, through the real binary, against
//! real validators (cfn-lint, cloud-init) and a real moto server.
//!
//! moto applies CloudFormation shallowly: it ignores lifecycle rules, metadata options and
//! alarm actions, creates no `AWS::EC2::KeyPair`, `AWS::S3::BucketPolicy` or
//! `AWS::CloudWatch::Alarm`, lists every change as `Add`, and cannot delete route tables, VPC
//! endpoints or internet gateways when a stack is deleted. So those properties are asserted on
//! the generated template, and the `down` tests first remove, with the AWS API, the network
//! pieces moto's CloudFormation would leave behind (on AWS, CloudFormation deletes them).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bosun_harness::{Moto, checkov_program, venv_program};
use serde_json::Value;
use tempfile::TempDir;

const BOSUN: &str = env!("CARGO_BIN_EXE_bosun");
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnmhb2Bx2dM6Kp1pH2kzM2nXv3YZ0PLb5zmV8WFxyZ1 op@laptop";
const OPERATOR_CIDR: &str = "203.0.113.7/32";
const BOOTSTRAP: &str = r#"
name = "bootstrap"

[[step]]
name = "marker"
command = { run = "true" }
"#;

/// A directory with a stack.toml, a public key and a stand-in bosund (an ELF header and
/// bytes: it is uploaded and hashed, never run here).
struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new(extra: &str) -> Fixture {
        Fixture::in_region("us-east-1", extra)
    }

    fn in_region(region: &str, extra: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        // Its own playbooks, so these tests do not depend on the repository's bootstrap.
        let playbooks = dir.path().join("playbooks");
        std::fs::create_dir_all(playbooks.join("templates")).unwrap();
        std::fs::write(playbooks.join("bootstrap.toml"), BOOTSTRAP).unwrap();
        std::fs::write(playbooks.join("templates/motd.j2"), "{{ greeting }}\n").unwrap();
        std::fs::write(dir.path().join("key.pub"), format!("{KEY}\n")).unwrap();
        std::fs::write(dir.path().join("bosund"), b"\x7fELF bosund v1").unwrap();
        std::fs::write(
            dir.path().join("stack.toml"),
            format!(
                "name = \"prod-1\"\nregion = \"{region}\"\noperator_cidr = \"{OPERATOR_CIDR}\"\n\
                 ssh_public_key = \"key.pub\"\nplaybooks = \"{}\"\n{extra}",
                playbooks.display()
            ),
        )
        .unwrap();
        Fixture { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `bosun ARGS --config stack.toml --bosund bosund` (the last two where they apply).
    fn bosun(&self, args: &[&str], env: &[(String, String)]) -> Output {
        let mut cmd = Command::new(BOSUN);
        cmd.args(args).current_dir(self.dir.path());
        if args
            .iter()
            .any(|a| ["template", "user-data", "plan", "up"].contains(a))
        {
            cmd.arg("--bosund").arg(self.path("bosund"));
        }
        cmd.env_remove("AWS_ENDPOINT_URL");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run bosun")
    }

    fn bosun_ok(&self, args: &[&str], env: &[(String, String)]) -> String {
        let out = self.bosun(args, env);
        assert!(
            out.status.success(),
            "bosun {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn bosun_json(&self, args: &[&str], env: &[(String, String)]) -> Value {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        let text = self.bosun_ok(&all, env);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
    }

    fn template(&self) -> Value {
        let text = self.bosun_ok(&["template"], &[]);
        serde_json::from_str(&text).unwrap()
    }

    /// The us-east-1 stack's template (`bosun template --edge`).
    fn edge_template(&self) -> Value {
        let text = self.bosun_ok(&["template", "--edge"], &[]);
        serde_json::from_str(&text).unwrap()
    }
}

const MAXIMAL: &str = r#"
public_http = true
os = "al2023"
[rds]
[dns]
hosted_zone_id = "Z0123456789ABCDEFGHIJ"
record_name = "prod-1.example.com"
certificate = true
[nodes]
count = 2
max = 3
instance_type = "t3.small"
public_address = false
"#;

/// The k3s ports (docs.k3s.io, "Inbound Rules for K3s Nodes"): none may be opened to an
/// address range.
const K3S_PORTS: &[u16] = &[6443, 8472, 10250];

fn cfn_lint(file: &Path) -> Output {
    Command::new(venv_program("cfn-lint"))
        .arg("--")
        .arg(file)
        .output()
        .expect("run cfn-lint")
}

/// `[edge]` with two names, the operator's alarm addresses and `[dns]` beside it.
const EDGE: &str = r#"
[dns]
hosted_zone_id = "Z0123456789ABCDEFGHIJ"
record_name = "prod-1.example.com"
[edge]
domain_names = ["app.example.com", "jenkins.example.com"]
hosted_zone_id = "Z0123456789ABCDEFGHIJ"
origin_prefix_list = "pl-4fa04526"
health_check_path = "/healthz"
[alarms]
email = ["ops@example.com"]
"#;

/// Every trade-off of the README turned on.
const TRADE_OFFS_ON: &str = r#"
kms_key = true
[backups]
access_logging = true
"#;

/// `[rds]` with its trade-offs on.
const RDS_TRADE_OFFS_ON: &str = "[rds]\nmulti_az = true\nmonitoring_interval = 60\n";

/// The maximal config with `[edge]` outside us-east-1 (so two stacks), `[rds]` on.
fn edge_fixture(trade_offs: bool) -> Fixture {
    let mut extra = String::from("os = \"al2023\"\n");
    if trade_offs {
        extra.push_str(TRADE_OFFS_ON);
        extra.push_str("[nodes]\ncount = 2\npublic_address = false\n");
        extra.push_str(RDS_TRADE_OFFS_ON);
        extra.push_str(&EDGE.replace("[edge]\n", "[edge]\nwaf = true\naccess_logging = true\n"));
    } else {
        extra.push_str("[nodes]\ncount = 2\n");
        extra.push_str("[rds]\n");
        extra.push_str(EDGE);
    }
    Fixture::in_region("eu-west-1", &extra)
}

#[test]
fn templates_pass_cfn_lint_without_errors_or_warnings() {
    let mut files = Vec::new();
    for (label, extra, region) in [
        ("default", "", "us-east-1"),
        ("maximal", MAXIMAL, "us-east-1"),
        ("edge-in-us-east-1", &format!("[rds]\n{EDGE}"), "us-east-1"),
        ("edge", &format!("[rds]\n{EDGE}"), "eu-west-1"),
    ] {
        let f = Fixture::in_region(region, extra);
        let file = f.path("template.json");
        std::fs::write(&file, f.bosun_ok(&["template"], &[])).unwrap();
        files.push((label.to_string(), file, f));
    }
    let f = edge_fixture(true);
    for (label, args) in [
        ("edge, trade-offs on", &["template"][..]),
        ("edge stack, trade-offs on", &["template", "--edge"][..]),
    ] {
        let file = f.path(&format!("{}.json", files.len()));
        std::fs::write(&file, f.bosun_ok(args, &[])).unwrap();
        files.push((label.to_string(), file, Fixture::new("")));
    }
    let f = edge_fixture(false);
    let file = f.path("edge-stack.json");
    std::fs::write(&file, f.bosun_ok(&["template", "--edge"], &[])).unwrap();
    files.push(("edge stack".into(), file, f));
    // One cfn-lint run over every template (it starts slowly).
    let out = Command::new(venv_program("cfn-lint"))
        .arg("--")
        .args(files.iter().map(|(_, f, _)| f))
        .output()
        .expect("run cfn-lint");
    let labels: Vec<&str> = files.iter().map(|(l, _, _)| l.as_str()).collect();
    assert!(
        out.status.success(),
        "cfn-lint on the templates {labels:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The linter is really looking: a wrong property is an error.
    let f = Fixture::new("");
    let mut t = f.template();
    t["Resources"]["Vpc"]["Properties"]["CidrBlok"] = "10.0.0.0/16".into();
    let file = f.path("broken.json");
    std::fs::write(&file, t.to_string()).unwrap();
    assert!(
        !cfn_lint(&file).status.success(),
        "cfn-lint accepted a misspelt property"
    );
}

/// Every IAM policy document in a template, with where it is.
fn policy_documents(t: &Value) -> Vec<(String, Value)> {
    let mut docs = Vec::new();
    for (id, r) in t["Resources"].as_object().unwrap() {
        let p = &r["Properties"];
        match r["Type"].as_str().unwrap() {
            "AWS::IAM::Role" => {
                docs.push((format!("{id} trust"), p["AssumeRolePolicyDocument"].clone()));
                for pol in p["Policies"].as_array().unwrap() {
                    docs.push((
                        format!("{id}/{}", pol["PolicyName"].as_str().unwrap()),
                        pol["PolicyDocument"].clone(),
                    ));
                }
            }
            "AWS::S3::BucketPolicy" => docs.push((id.clone(), p["PolicyDocument"].clone())),
            _ => {}
        }
    }
    docs
}

fn strings(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Null => vec![],
        other => vec![other.clone()],
    }
}

#[test]
fn policies_have_no_wildcard_actions_and_scoped_resources() {
    let t = Fixture::new(MAXIMAL).template();
    let docs = policy_documents(&t);
    assert!(
        docs.len() >= 7,
        "expected the role's policies and the bucket policy: {docs:?}"
    );
    let mut star_resources = 0;
    for (where_, doc) in &docs {
        for s in doc["Statement"].as_array().unwrap() {
            let actions: Vec<String> = strings(&s["Action"])
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect();
            let allow = s["Effect"] == "Allow";
            assert!(
                !actions.is_empty(),
                "{where_}: statement without actions: {s}"
            );
            if allow {
                for a in &actions {
                    assert!(
                        !a.contains('*'),
                        "{where_}: wildcard action {a:?} in an Allow: {s}"
                    );
                }
            } else {
                // A Deny may be broad (s3:* without TLS) but must be conditional.
                assert!(
                    s["Condition"].is_object(),
                    "{where_}: unconditional Deny: {s}"
                );
            }
            assert!(
                s.get("NotAction").is_none() && s.get("NotResource").is_none(),
                "{s}"
            );
            for r in strings(&s["Resource"]) {
                if r == "*" {
                    star_resources += 1;
                    // The one documented exception: PutMetricData has no resource type.
                    assert_eq!(
                        actions,
                        ["cloudwatch:PutMetricData"],
                        "{where_}: Resource \"*\": {s}"
                    );
                    assert_eq!(
                        s["Condition"]["StringEquals"]["cloudwatch:namespace"], "Bosun/Host",
                        "{where_}: PutMetricData must be scoped to bosun's namespace"
                    );
                }
            }
            if allow && s["Principal"] == "*" {
                assert!(
                    s["Condition"]["StringEquals"]["aws:SourceVpce"].is_object(),
                    "{where_}: an anonymous Allow must be limited to the VPC endpoint: {s}"
                );
                assert_eq!(actions, ["s3:GetObject"], "{s}");
                assert_eq!(
                    strings(&s["Resource"])[0]["Fn::Sub"],
                    "${Bucket.Arn}/artifacts/*"
                );
            }
        }
    }
    assert_eq!(
        star_resources, 1,
        "exactly one Resource \"*\" (PutMetricData)"
    );
    // Each of the role's policies names only the stack's own resources.
    let resources_of = |policy: &str| -> Vec<Value> {
        let (_, doc) = docs
            .iter()
            .find(|(w, _)| w == &format!("HostRole/{policy}"))
            .unwrap();
        doc["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| strings(&s["Resource"]))
            .collect()
    };
    assert_eq!(
        resources_of("logs"),
        [serde_json::json!({"Fn::GetAtt": ["LogGroup", "Arn"]})]
    );
    for r in resources_of("bucket") {
        assert!(
            r["Fn::Sub"].as_str().unwrap().starts_with("${Bucket.Arn}"),
            "bucket: {r}"
        );
    }
    for r in resources_of("parameters") {
        assert!(
            r["Fn::Sub"]
                .as_str()
                .unwrap()
                .contains(":parameter/bosun/prod-1"),
            "ssm: {r}"
        );
    }
    for r in resources_of("database") {
        let text = r.to_string();
        assert!(
            text.contains(":db:${Database}")
                || text.contains(":snapshot:prod-1-*")
                || text.contains("MasterUserSecret")
                || text.contains(":dbuser:${Database.DbiResourceId}/bosun_backup"),
            "rds: {r}"
        );
    }
}

#[test]
fn template_holds_what_moto_ignores() {
    let f = Fixture::new(MAXIMAL);
    let t = f.template();
    let res = &t["Resources"];

    let bucket = &res["Bucket"];
    assert_eq!(bucket["DeletionPolicy"], "Retain");
    assert_eq!(bucket["UpdateReplacePolicy"], "Retain");
    let b = &bucket["Properties"];
    assert_eq!(b["VersioningConfiguration"]["Status"], "Enabled");
    assert_eq!(
        b["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
            ["SSEAlgorithm"],
        "AES256"
    );
    for k in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(b["PublicAccessBlockConfiguration"][k], true, "{k}");
    }
    let rules = b["LifecycleConfiguration"]["Rules"].as_array().unwrap();
    let backups = rules
        .iter()
        .find(|r| r["Prefix"] == "backups/")
        .expect("a backups/ rule");
    assert_eq!(backups["Transitions"][0]["StorageClass"], "GLACIER");
    assert_eq!(backups["Transitions"][0]["TransitionInDays"], 30);
    assert_eq!(backups["ExpirationInDays"], 365);
    assert!(
        rules
            .iter()
            .any(|r| r["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 7),
        "incomplete multipart uploads aborted after 7 days"
    );
    let tls = res["BucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Effect"] == "Deny")
        .expect("a TLS-only Deny");
    assert_eq!(tls["Condition"]["Bool"]["aws:SecureTransport"], "false");

    let lt = &res["HostLaunchTemplate"]["Properties"]["LaunchTemplateData"];
    assert_eq!(
        lt["MetadataOptions"]["HttpTokens"], "required",
        "IMDSv2 only"
    );
    let ebs = &lt["BlockDeviceMappings"][0]["Ebs"];
    assert_eq!(ebs["VolumeType"], "gp3");
    assert_eq!(ebs["Encrypted"], true);
    let host = &res["Host"]["Properties"];
    assert_eq!(host["InstanceType"], "t2.micro");
    assert_eq!(
        t["Parameters"]["ImageId"]["Type"],
        "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
    );
    assert!(
        t["Parameters"]["ImageId"]["Default"]
            .as_str()
            .unwrap()
            .contains("al2023")
    );
    assert_eq!(res["KeyPair"]["Properties"]["PublicKeyMaterial"], KEY);

    // Security group: SSH from the operator only, 80/443 when asked, never the k8s API.
    let ingress = res["HostSecurityGroup"]["Properties"]["SecurityGroupIngress"]
        .as_array()
        .unwrap();
    let ports: Vec<u64> = ingress
        .iter()
        .map(|i| i["FromPort"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, [22, 80, 443]);
    assert_eq!(ingress[0]["CidrIp"], OPERATOR_CIDR);
    let default = Fixture::new("").template();
    let ingress =
        default["Resources"]["HostSecurityGroup"]["Properties"]["SecurityGroupIngress"].clone();
    assert_eq!(
        ingress.as_array().unwrap().len(),
        1,
        "only SSH by default: {ingress}"
    );
    assert!(
        !default.to_string().contains("6443"),
        "the Kubernetes API is never opened without [nodes]"
    );
    // With [nodes], to the agents' security group only (the whole rule set is checked in
    // nodes_open_the_k3s_ports_between_the_groups_only).
    for (group, rule) in all_ingress(&t) {
        if rule["FromPort"] == 6443 {
            assert_eq!(
                (group.as_str(), &rule["SourceSecurityGroupId"]),
                (
                    "HostSecurityGroup",
                    &serde_json::json!({"Fn::GetAtt": ["NodeSecurityGroup", "GroupId"]})
                ),
                "{rule}"
            );
        }
    }
    assert_eq!(
        res["S3Endpoint"]["Properties"]["VpcEndpointType"],
        "Gateway"
    );

    assert_eq!(res["LogGroup"]["Properties"]["RetentionInDays"], 30);
    let recover = &res["SystemStatusAlarm"]["Properties"];
    assert_eq!(recover["MetricName"], "StatusCheckFailed_System");
    assert_eq!(
        recover["AlarmActions"][0]["Fn::Sub"],
        "arn:${AWS::Partition}:automate:${AWS::Region}:ec2:recover"
    );
    for (alarm, metric) in [
        ("MemoryAlarm", "mem_used_percent"),
        ("DiskAlarm", "disk_used_percent"),
        ("DriftAlarm", "DriftSteps"),
    ] {
        assert_eq!(res[alarm]["Properties"]["Namespace"], "Bosun/Host");
        assert_eq!(res[alarm]["Properties"]["MetricName"], metric);
    }
    let drift = &res["DriftAlarm"]["Properties"];
    assert_eq!(
        (
            drift["Threshold"].as_f64(),
            drift["TreatMissingData"].as_str()
        ),
        (Some(0.0), Some("notBreaching"))
    );
    assert_eq!(
        res["CpuAlarm"]["Properties"]["MetricName"],
        "CPUUtilization"
    );
    assert_eq!(res["Dashboard"]["Type"], "AWS::CloudWatch::Dashboard");

    let db = &res["Database"];
    assert_eq!(db["DeletionPolicy"], "Snapshot");
    let p = &db["Properties"];
    assert_eq!(p["Engine"], "mysql");
    assert_eq!(p["DBInstanceClass"], "db.t3.micro");
    assert_eq!(p["StorageEncrypted"], true);
    assert_eq!(p["ManageMasterUserPassword"], true);
    assert_eq!(p["PubliclyAccessible"], false);
    assert!(p["BackupRetentionPeriod"].as_u64().unwrap() >= 1);
    assert!(
        p.get("MasterUserPassword").is_none(),
        "no password in the template"
    );
    assert_eq!(res["Certificate"]["Properties"]["ValidationMethod"], "DNS");
    assert_eq!(res["HostRecord"]["Properties"]["Type"], "A");
    // The record is at the Elastic IP, never at the instance's transient address.
    assert_eq!(
        res["HostRecord"]["Properties"]["ResourceRecords"],
        serde_json::json!([{"Ref": "HostEip"}])
    );
    assert_eq!(
        res["HostEip"]["Properties"]["InstanceId"],
        serde_json::json!({"Ref": "Host"})
    );
    assert!(
        !t.to_string().contains("\"PublicIp\"]"),
        "nothing points at Host.PublicIp"
    );
    assert_eq!(p["EnableIAMDatabaseAuthentication"], true);
    for o in ["InstanceId", "PublicIp", "SshCommand", "BucketName"] {
        assert!(t["Outputs"][o].is_object(), "output {o}");
    }

    // The user-data: the bucket comes from the stack, the digests are pinned.
    let parts = res["HostLaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"]
        ["Fn::Join"][1]
        .clone();
    let text: String = parts
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    let digest = t["Outputs"]["BootBosundSha256"]["Value"].as_str().unwrap();
    assert_eq!(digest.len(), 64);
    assert!(
        text.contains(&format!("echo '{digest}  '")),
        "bosund digest checked"
    );
    assert!(text.contains("sha256sum -c"));
    // With [rds] the first boot creates the backup user; the database's host and secret ARN
    // come from the stack, the password itself from Secrets Manager at run time.
    assert!(text.contains("bosund apply /etc/bosun/playbooks/database.toml --vars-file"));
    for attr in ["Endpoint.Address", "MasterUserSecret.SecretArn"] {
        assert!(
            parts
                .as_array()
                .unwrap()
                .contains(&serde_json::json!({"Fn::GetAtt": ["Database", attr]})),
            "{attr} in the user-data"
        );
    }
    assert!(
        parts
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"Ref": "Bucket"}))
    );

    // Deterministic: the same inputs give the same bytes (so a re-run is "no changes").
    assert_eq!(
        f.bosun_ok(&["template"], &[]),
        f.bosun_ok(&["template"], &[])
    );
}

#[test]
fn user_data_passes_cloud_init_schema() {
    let f = Fixture::new("");
    let text = f.bosun_ok(&["user-data", "--bucket", "prod-1-bucket-abc"], &[]);
    assert!(
        text.len() < 16 * 1024,
        "EC2 user-data is limited to 16 KiB: {}",
        text.len()
    );
    assert!(text.contains("https://prod-1-bucket-abc.s3.us-east-1.amazonaws.com/artifacts"));
    let file = f.path("user-data.yaml");
    std::fs::write(&file, &text).unwrap();
    let out = Command::new("cloud-init")
        .args(["schema", "--config-file"])
        .arg(&file)
        .output()
        .expect("cloud-init is missing: run scripts/test (it installs Debian's cloud-init)");
    assert!(
        out.status.success(),
        "cloud-init schema rejected the user-data:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn agent_user_data_passes_cloud_init_schema_and_joins_the_server() {
    let f = Fixture::new("[nodes]\ncount = 1\n");
    let text = f.bosun_ok(
        &[
            "user-data",
            "--bucket",
            "prod-1-bucket-abc",
            "--agent-of",
            "10.42.0.10",
        ],
        &[],
    );
    let parsed: Value = serde_norway::from_str(&text).unwrap();
    let files = parsed["write_files"].as_array().unwrap();
    let vars = files
        .iter()
        .find(|f| f["path"] == "/etc/bosun/bootstrap-vars.toml")
        .unwrap_or_else(|| panic!("no vars file:\n{text}"));
    let vars: toml::Table = toml::from_str(vars["content"].as_str().unwrap()).unwrap();
    assert_eq!(vars["k3s_role"].as_str(), Some("agent"));
    assert_eq!(
        vars["k3s_server_url"].as_str(),
        Some("https://10.42.0.10:6443")
    );
    assert_eq!(
        vars["k3s_token_parameter"].as_str(),
        Some("/bosun/prod-1/k3s-token")
    );
    let script = files
        .iter()
        .find(|f| f["path"] == "/usr/local/lib/bosun/first-boot")
        .unwrap()["content"]
        .as_str()
        .unwrap();
    let applies: Vec<&str> = script
        .lines()
        .filter(|l| l.starts_with("bosund apply"))
        .collect();
    assert_eq!(
        applies,
        [
            "bosund apply /etc/bosun/playbooks/bootstrap.toml --vars-file /etc/bosun/bootstrap-vars.toml"
        ],
        "an agent runs bootstrap only"
    );
    let file = f.path("agent-user-data.yaml");
    std::fs::write(&file, &text).unwrap();
    let out = Command::new("cloud-init")
        .args(["schema", "--config-file"])
        .arg(&file)
        .output()
        .expect("cloud-init is missing: run scripts/test (it installs Debian's cloud-init)");
    assert!(
        out.status.success(),
        "cloud-init schema rejected the agent's user-data:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn invalid_config_is_rejected_with_every_problem() {
    let f = Fixture::new("instance_typ = \"t3.small\"\n");
    let out = f.bosun(&["template"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("instance_typ"), "{err}");

    let f = Fixture::new("[logs]\nretention_days = 31\n");
    std::fs::write(
        f.path("stack.toml"),
        std::fs::read_to_string(f.path("stack.toml"))
            .unwrap()
            .replace(OPERATOR_CIDR, "0.0.0.0/0"),
    )
    .unwrap();
    let out = f.bosun(&["template"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/0") && err.contains("31"), "{err}");

    // [nodes] problems name the file and the line. The fixture's stack.toml has 5 lines
    // before `extra`.
    let f = Fixture::new("[nodes]\ncount = 3\nmax = 2\n");
    let out = f.bosun(&["template"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "stack.toml:8: nodes.max = 2 is less than nodes.count = 3 (expected min <= count <= max)"
        ),
        "{err}"
    );
}

#[test]
fn an_invalid_bootstrap_playbook_is_not_shipped() {
    let f = Fixture::new("");
    std::fs::write(
        f.path("playbooks/bootstrap.toml"),
        "name = \"bootstrap\"\n[[step]]\nname = \"x\"\ncommand = { runn = \"true\" }\n",
    )
    .unwrap();
    let out = f.bosun(&["template"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bootstrap.toml") && err.contains("runn"),
        "{err}"
    );
}

/// Runs a Python snippet with boto3 (from the moto venv) against `moto`; returns its JSON.
fn boto3(moto: &Moto, script: &str) -> Value {
    let out = Command::new(venv_program("python"))
        .arg("-c")
        .arg(format!("import boto3, json, hashlib\n{script}"))
        .envs(moto.env())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "boto3 check failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "boto3 check printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Removes the stack's network pieces moto's CloudFormation cannot delete (VPC endpoint,
/// public route table), so its DeleteStack can delete the VPC, as AWS would.
fn remove_what_moto_cannot_delete(moto: &Moto) {
    boto3(
        moto,
        r#"
for region in ["us-east-1", "eu-west-1"]:
    ec2 = boto3.client("ec2", region_name=region)
    for v in ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": ["prod-1-vpc"]}])["Vpcs"]:
        f = [{"Name": "vpc-id", "Values": [v["VpcId"]]}]
        ec2.delete_vpc_endpoints(VpcEndpointIds=[e["VpcEndpointId"] for e in ec2.describe_vpc_endpoints(Filters=f)["VpcEndpoints"]])
        for rt in ec2.describe_route_tables(Filters=f)["RouteTables"]:
            if any(a.get("Main") for a in rt["Associations"]):
                continue
            for a in rt["Associations"]:
                ec2.disassociate_route_table(AssociationId=a["RouteTableAssociationId"])
            ec2.delete_route_table(RouteTableId=rt["RouteTableId"])
print("{}")
"#,
    );
}

fn moto_fixture() -> (Moto, Fixture, Vec<(String, String)>) {
    let moto = Moto::start().expect("start moto");
    // moto knows Amazon Linux's public AMI parameters, not Debian's.
    let f = Fixture::new("os = \"al2023\"\n");
    let env = moto.env();
    (moto, f, env)
}

#[test]
fn up_creates_the_stack_then_changes_nothing_and_down_keeps_the_bucket() {
    let (moto, f, env) = moto_fixture();

    let plan = f.bosun_json(&["plan"], &env);
    assert_eq!(plan["exists"], false);
    assert!(
        plan["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["logical_id"] == "Host"
                && c["resource_type"] == "AWS::EC2::Instance"
                && c["action"] == "Add"),
        "{plan}"
    );

    let up = f.bosun_json(&["up"], &env);
    assert_eq!(up["created"], true, "{up}");
    assert_eq!(up["status"], "UPDATE_COMPLETE", "{up}");
    assert!(
        up["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["status"] == "CREATE_COMPLETE"
                && e["resource_type"] == "AWS::CloudFormation::Stack"),
        "the foundation reached CREATE_COMPLETE: {up}"
    );
    let uploads = up["uploads"].as_array().unwrap();
    assert_eq!(uploads.len(), 2);
    assert!(uploads.iter().all(|u| u["uploaded"] == true), "{up}");
    let bosund_sha = uploads[0]["sha256"].as_str().unwrap().to_string();

    let found = boto3(
        &moto,
        r#"
cf = boto3.client("cloudformation")
res = {r.get("LogicalResourceId"): r.get("PhysicalResourceId")
       for r in cf.describe_stack_resources(StackName="prod-1")["StackResources"]}
s3 = boto3.client("s3")
keys = [o["Key"] for o in s3.list_objects_v2(Bucket=res["Bucket"]).get("Contents", [])]
digests = {k: hashlib.sha256(s3.get_object(Bucket=res["Bucket"], Key=k)["Body"].read()).hexdigest() for k in keys}
ec2 = boto3.client("ec2")
i = ec2.describe_instances(InstanceIds=[res["Host"]])["Reservations"][0]["Instances"][0]
print(json.dumps({"bucket": res["Bucket"], "digests": digests, "state": i["State"]["Name"],
    "subnet_ok": i["SubnetId"] == res["PublicSubnet"], "type": i["InstanceType"],
    "profile": i.get("IamInstanceProfile", {}).get("Arn", "")}))
"#,
    );
    let bucket = found["bucket"].as_str().unwrap().to_string();
    assert_eq!(found["state"], "running", "{found}");
    assert_eq!(found["subnet_ok"], true, "{found}");
    assert_eq!(found["type"], "t2.micro");
    assert!(
        found["profile"]
            .as_str()
            .unwrap()
            .contains("HostInstanceProfile"),
        "{found}"
    );
    // Content-addressed: every key ends with the SHA-256 of its bytes.
    let digests = found["digests"].as_object().unwrap();
    assert_eq!(digests.len(), 2, "{found}");
    for (key, digest) in digests {
        assert!(
            key.contains(digest.as_str().unwrap()),
            "{key} holds bytes with digest {digest}"
        );
    }
    assert!(digests.contains_key(&format!("artifacts/bosund/{bosund_sha}")));

    // Nothing changed: CloudFormation says so and nothing is uploaded or executed.
    let again = f.bosun_json(&["up"], &env);
    assert_eq!(again["no_changes"], true, "{again}");
    assert_eq!(again["created"], false);
    assert!(
        again["uploads"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["uploaded"] == false)
    );
    assert!(
        again["events"].as_array().unwrap().is_empty(),
        "nothing executed: {again}"
    );
    let human = f.bosun(&["up"], &env);
    assert!(human.status.success());
    assert!(String::from_utf8_lossy(&human.stderr).contains("stack prod-1: no changes"));

    // A new bosund is uploaded, but the host keeps the first boot it was created with.
    std::fs::write(f.path("bosund"), b"\x7fELF bosund v2").unwrap();
    let newer = f.bosun_json(&["up"], &env);
    assert_eq!(newer["no_changes"], true, "{newer}");
    assert_eq!(newer["uploads"][0]["uploaded"], true);
    assert_ne!(newer["uploads"][0]["sha256"], bosund_sha.as_str());
    let plan = f.bosun_json(&["plan"], &env);
    assert_eq!(plan["no_changes"], true, "{plan}");
    let refresh = f.bosun_json(&["plan", "--refresh-boot"], &env);
    assert_eq!(
        refresh["no_changes"], false,
        "a new first boot is a change: {refresh}"
    );

    remove_what_moto_cannot_delete(&moto);
    let down = f.bosun_json(&["down"], &env);
    assert_eq!(down["deleted"], true, "{down}");
    assert_eq!(down["bucket"], bucket.as_str());
    assert_eq!(down["bucket_deleted"], false);
    let after = boto3(
        &moto,
        r#"
s3 = boto3.client("s3")
stacks = [s["StackName"] for s in boto3.client("cloudformation").list_stacks()["StackSummaries"]
          if s["StackStatus"] != "DELETE_COMPLETE"]
print(json.dumps({"buckets": [b["Name"] for b in s3.list_buckets()["Buckets"]], "stacks": stacks}))
"#,
    );
    assert!(
        after["buckets"]
            .as_array()
            .unwrap()
            .contains(&bucket.as_str().into()),
        "{after}"
    );
    assert_eq!(after["stacks"], serde_json::json!([]), "{after}");
    let again = f.bosun_json(&["down"], &env);
    assert_eq!(
        again["deleted"], false,
        "a second down finds nothing: {again}"
    );
}

#[test]
fn down_with_delete_data_removes_the_bucket() {
    let (moto, f, env) = moto_fixture();
    let up = f.bosun_json(&["up"], &env);
    assert_eq!(up["status"], "UPDATE_COMPLETE", "{up}");
    remove_what_moto_cannot_delete(&moto);
    let down = f.bosun_json(&["down", "--delete-data"], &env);
    assert_eq!(down["bucket_deleted"], true, "{down}");
    let bucket = down["bucket"].as_str().unwrap().to_string();
    let after = boto3(
        &moto,
        r#"print(json.dumps([b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]]))"#,
    );
    assert!(
        !after.as_array().unwrap().contains(&bucket.as_str().into()),
        "{after}"
    );
}

/// `bosun hosts --inventory ARG --output json` (no connection), with an empty home (no
/// ~/.ssh/config); the records, or the failed output.
fn hosts(f: &Fixture, env: &[(String, String)], args: &[&str]) -> Result<Vec<Value>, String> {
    let mut env = env.to_vec();
    env.push(("HOME".into(), f.path("home").display().to_string()));
    std::fs::create_dir_all(f.path("home")).unwrap();
    let mut all = vec!["--output", "json", "hosts"];
    all.extend_from_slice(args);
    let out = f.bosun(&all, &env);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect())
}

/// `[nodes]` against moto: the group, its launch template and instances exist as the template
/// says; `--inventory aws:prod-1` lists the instances moto runs, in their groups, and plans
/// the agents' connections through the server; a new count changes only the group; `down`
/// removes the join token the host's first boot would have published.
///
/// moto creates the group's instances from the launch template's image and type but applies
/// neither its network interfaces nor its metadata options (asserted on the template in
/// `nodes_open_the_k3s_ports_between_the_groups_only`), and moto's CloudFormation replaces a
/// group on any update (AWS updates it in place); the change set is what says "modify".
#[test]
fn nodes_scale_alone_and_the_aws_inventory_lists_them() {
    let moto = Moto::start().expect("start moto");
    let env = moto.env();
    let f = Fixture::new("os = \"al2023\"\n[nodes]\ncount = 2\nmax = 4\npublic_address = false\n");
    let up = f.bosun_json(&["up"], &env);
    assert_eq!(up["status"], "UPDATE_COMPLETE", "{up}");
    let aws = |moto: &Moto| {
        boto3(
            moto,
            r#"
cf = boto3.client("cloudformation")
res = {r.get("LogicalResourceId"): r.get("PhysicalResourceId")
       for r in cf.describe_stack_resources(StackName="prod-1")["StackResources"]}
asg = boto3.client("autoscaling").describe_auto_scaling_groups(
    AutoScalingGroupNames=[res["NodeGroup"]])["AutoScalingGroups"][0]
ec2 = boto3.client("ec2")
lt = ec2.describe_launch_template_versions(LaunchTemplateId=res["NodeLaunchTemplate"])
lt = lt["LaunchTemplateVersions"][-1]["LaunchTemplateData"]
ids = [i["InstanceId"] for i in asg["Instances"]]
instances = {}
for r in ec2.describe_instances(InstanceIds=ids + [res["Host"]])["Reservations"]:
    for i in r["Instances"]:
        instances[i["InstanceId"]] = {"private": i.get("PrivateIpAddress"), "public": i.get("PublicIpAddress"),
            "type": i["InstanceType"], "tags": {t["Key"]: t["Value"] for t in i.get("Tags", [])}}
print(json.dumps({"host": res["Host"], "agents": ids, "instances": instances,
    "asg": {"min": asg["MinSize"], "max": asg["MaxSize"], "desired": asg["DesiredCapacity"],
            "lt": asg["LaunchTemplate"]["LaunchTemplateId"] == res["NodeLaunchTemplate"]},
    "lt_type": lt.get("InstanceType"), "lt_user_data": "UserData" in lt}))
"#,
        )
    };
    let found = aws(&moto);
    assert_eq!(
        found["asg"],
        serde_json::json!({"min": 2, "max": 4, "desired": 2, "lt": true}),
        "{found}"
    );
    assert_eq!(found["lt_type"], "t2.micro");
    assert_eq!(found["lt_user_data"], true);
    let agents: Vec<String> = found["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(agents.len(), 2, "{found}");
    let host = found["host"].as_str().unwrap();
    let inst = &found["instances"];
    for a in &agents {
        assert_eq!(inst[a]["tags"]["bosun:role"], "agent", "{found}");
        assert_eq!(inst[a]["tags"]["bosun:stack"], "prod-1", "{found}");
    }
    assert_eq!(inst[host]["tags"]["bosun:role"], "server", "{found}");

    // The inventory: the server by its public address, the agents by their private ones
    // through the server.
    let listed = hosts(&f, &env, &["--inventory", "aws:prod-1"]).unwrap();
    let server_public = inst[host]["public"].as_str().unwrap();
    let names: Vec<&str> = listed.iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 3, "{listed:?}");
    assert_eq!(names[0], host, "the server first: {listed:?}");
    assert_eq!(listed[0]["groups"], serde_json::json!(["server"]));
    assert_eq!(
        listed[0]["address"],
        format!("ec2-user@{server_public}:22").as_str()
    );
    assert_eq!(listed[0]["jumps"], serde_json::json!([]));
    for h in &listed[1..] {
        let id = h["name"].as_str().unwrap();
        assert!(agents.iter().any(|a| a == id), "{h}");
        assert_eq!(h["groups"], serde_json::json!(["agent"]));
        let private = inst[id]["private"].as_str().unwrap();
        assert_eq!(
            h["address"],
            format!("ec2-user@{private}:22").as_str(),
            "{h}"
        );
        assert_eq!(
            h["jumps"],
            serde_json::json!([format!("ec2-user@{server_public}:22")]),
            "{h}"
        );
        assert_eq!(h["vars"]["bosun_role"], "agent");
        assert_eq!(h["vars"]["ec2_instance_id"], id);
    }
    let limited = hosts(
        &f,
        &env,
        &["--inventory", "aws:us-east-1/prod-1", "--limit", "agent"],
    )
    .unwrap();
    assert_eq!(limited.len(), 2, "{limited:?}");

    // Clear errors: no such stack, no region, no credentials.
    let e = hosts(&f, &env, &["--inventory", "aws:prod-2"]).unwrap_err();
    assert!(
        e.contains("stack prod-2 does not exist in us-east-1"),
        "{e}"
    );
    let no_region: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| !k.contains("REGION"))
        .cloned()
        .collect();
    let e = hosts(&f, &no_region, &["--inventory", "aws:prod-1"]).unwrap_err();
    assert!(e.contains("no AWS region: set AWS_REGION"), "{e}");
    let no_keys: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| !k.starts_with("AWS_ACCESS") && !k.starts_with("AWS_SECRET"))
        .cloned()
        .collect();
    let e = hosts(&f, &no_keys, &["--inventory", "aws:prod-1"]).unwrap_err();
    assert!(
        e.contains("no AWS credentials") && e.contains("set AWS_PROFILE"),
        "{e}"
    );

    // A new count: the change set modifies the group and nothing else.
    std::fs::write(
        f.path("stack.toml"),
        std::fs::read_to_string(f.path("stack.toml"))
            .unwrap()
            .replace("count = 2", "count = 3"),
    )
    .unwrap();
    let plan = f.bosun_json(&["plan"], &env);
    assert_eq!(
        plan["changes"],
        serde_json::json!([{"action": "Modify", "logical_id": "NodeGroup",
            "resource_type": "AWS::AutoScaling::AutoScalingGroup", "replacement": plan["changes"][0]["replacement"]}]),
        "{plan}"
    );
    let up = f.bosun_json(&["up"], &env);
    assert_eq!(up["status"], "UPDATE_COMPLETE", "{up}");
    let found = aws(&moto);
    assert_eq!(found["asg"]["desired"], 3, "{found}");
    assert_eq!(found["instances"][host]["tags"]["bosun:role"], "server");
    let agents = hosts(&f, &env, &["--inventory", "aws:prod-1", "--limit", "agent"]).unwrap();
    assert_eq!(agents.len(), 3, "{agents:?}");

    // The host's first boot publishes the join token; `down` removes it with the stack.
    boto3(
        &moto,
        r#"
boto3.client("ssm").put_parameter(Name="/bosun/prod-1/k3s-token", Value="K10abc::server:def", Type="SecureString")
print("{}")
"#,
    );
    remove_what_moto_cannot_delete(&moto);
    let down = f.bosun_json(&["down"], &env);
    assert_eq!(down["deleted"], true, "{down}");
    assert_eq!(down["k3s_token_deleted"], true, "{down}");
    let left = boto3(
        &moto,
        r#"print(json.dumps([p["Name"] for p in boto3.client("ssm").describe_parameters()["Parameters"] if p["Name"].startswith("/bosun/")]))"#,
    );
    assert_eq!(left, serde_json::json!([]), "{left}");
}

#[test]
fn unreachable_endpoint_fails_with_what_failed() {
    let f = Fixture::new("os = \"al2023\"\n");
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = vec![
        ("AWS_ACCESS_KEY_ID".to_string(), "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), "test".to_string()),
        ("AWS_EC2_METADATA_DISABLED".to_string(), "true".to_string()),
        ("AWS_MAX_ATTEMPTS".to_string(), "1".to_string()),
    ];
    let out = f.bosun(
        &["up", "--endpoint-url", &format!("http://127.0.0.1:{port}")],
        &env,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("describing stack prod-1"), "{err}");
    assert!(
        err.contains("CloudFormation DescribeStacks failed: dispatch failure")
            && err.contains(&format!("(endpoint http://127.0.0.1:{port})")),
        "{err}"
    );
}

/// An endpoint that answers with something that is not an AWS error (a proxy's error page): one
/// line with the operation, the HTTP status, the endpoint and the request id; no SDK debug dump.
#[test]
fn an_answer_that_is_not_an_aws_error_is_one_readable_line() {
    use std::io::{Read, Write};
    let f = Fixture::new("os = \"al2023\"\n");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Answers every request on every connection alike, until the test ends.
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    let body = "<html><body>upstream broke</body></html>";
                    let reply = format!(
                        "HTTP/1.1 500 Internal Server Error\r\nx-amzn-RequestId: rid-500\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if conn.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let env = vec![
        ("AWS_ACCESS_KEY_ID".to_string(), "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), "test".to_string()),
        ("AWS_EC2_METADATA_DISABLED".to_string(), "true".to_string()),
        ("AWS_MAX_ATTEMPTS".to_string(), "1".to_string()),
    ];
    let out = f.bosun(
        &["up", "--endpoint-url", &format!("http://127.0.0.1:{port}")],
        &env,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("bosun: error:"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        line.ends_with(&format!(
            "CloudFormation DescribeStacks failed: HTTP 500 Internal Server Error from http://127.0.0.1:{port}, not an AWS error (request id rid-500)"
        )),
        "{err}"
    );
    assert!(
        !err.contains("ServiceError") && !err.contains("XmlDecodeError") && line.len() < 300,
        "{err}"
    );
    // The SDK's structures are for RUST_LOG=debug.
    let mut env = env;
    env.push(("RUST_LOG".to_string(), "bosun_aws=debug".to_string()));
    let out = f.bosun(
        &["up", "--endpoint-url", &format!("http://127.0.0.1:{port}")],
        &env,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("AWS SDK error") && err.contains("ServiceError"),
        "{err}"
    );
}

/// The trade-offs the README lists, as checkov's check ids: each fails on the maximal template
/// with its switch off, and none does with the switches on.
const TRADE_OFF_CHECKS: &[&str] = &[
    "CKV_AWS_18",  // S3 access logging: [backups] access_logging
    "CKV_AWS_158", // log group KMS key: kms_key
    "CKV_AWS_26",  // SNS topic encryption (needs a customer key for alarms): kms_key
    "CKV_AWS_157", // RDS Multi-AZ: [rds] multi_az
    "CKV_AWS_118", // RDS enhanced monitoring: [rds] monitoring_interval
    "CKV_AWS_68",  // WAF on CloudFront: [edge] waf
    "CKV_AWS_86",  // CloudFront access logs: [edge] access_logging
    "CKV_AWS_88",  // public addresses of the agents' launch template: [nodes] public_address
];

/// Runs checkov once over `files`; returns the failed checks' ids with their resources.
fn checkov_failures(files: &[PathBuf]) -> Vec<(String, String)> {
    let mut cmd = Command::new(checkov_program());
    cmd.args(["--framework", "cloudformation", "--quiet", "--compact"])
        .args(["--skip-download", "--output", "json"]);
    for f in files {
        cmd.arg("-f").arg(f);
    }
    let out = cmd.output().expect("run checkov");
    let text = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("checkov printed no JSON ({e}):\n{text}"));
    let reports = match report {
        Value::Array(a) => a,
        one => vec![one],
    };
    let mut failed = Vec::new();
    for r in &reports {
        assert!(
            r["summary"]["passed"].as_u64().unwrap() > 20,
            "checkov checked the templates: {}",
            r["summary"]
        );
        for c in r["results"]["failed_checks"].as_array().unwrap() {
            failed.push((
                c["check_id"].as_str().unwrap().to_string(),
                c["resource"].as_str().unwrap().to_string(),
            ));
        }
    }
    failed.sort();
    failed
}

#[test]
fn checkov_fails_only_the_listed_trade_offs_and_none_when_they_are_on() {
    let off = edge_fixture(false);
    let on = edge_fixture(true);
    let mut files = Vec::new();
    for (f, tag) in [(&off, "off"), (&on, "on")] {
        for (args, what) in [
            (&["template"][..], "main"),
            (&["template", "--edge"][..], "edge"),
        ] {
            let file = f.path(&format!("{what}-{tag}.json"));
            std::fs::write(&file, f.bosun_ok(args, &[])).unwrap();
            files.push(file);
        }
    }
    let failed_off = checkov_failures(&files[..2]);
    let ids: Vec<&str> = failed_off.iter().map(|(id, _)| id.as_str()).collect();
    for (id, resource) in &failed_off {
        assert!(
            TRADE_OFF_CHECKS.contains(&id.as_str()),
            "checkov failed {id} on {resource}, which is not a listed trade-off: {failed_off:?}"
        );
    }
    for id in TRADE_OFF_CHECKS {
        assert!(
            ids.contains(id),
            "{id} is listed as a trade-off but passes with its switch off: {failed_off:?}"
        );
    }
    let failed_on = checkov_failures(&files[2..]);
    assert_eq!(failed_on, [], "every trade-off turned on");
}

/// Every ingress rule of a template, inline or on its own, with the group it opens.
fn all_ingress(t: &Value) -> Vec<(String, Value)> {
    let mut rules = Vec::new();
    for (id, r) in t["Resources"].as_object().unwrap() {
        match r["Type"].as_str().unwrap() {
            "AWS::EC2::SecurityGroup" => {
                for rule in r["Properties"]["SecurityGroupIngress"].as_array().unwrap() {
                    rules.push((id.clone(), rule.clone()));
                }
            }
            "AWS::EC2::SecurityGroupIngress" => rules.push((
                r["Properties"]["GroupId"]["Fn::GetAtt"][0]
                    .as_str()
                    .unwrap()
                    .to_string(),
                r["Properties"].clone(),
            )),
            _ => {}
        }
    }
    rules
}

#[test]
fn nodes_open_the_k3s_ports_between_the_groups_only() {
    let t = Fixture::new(MAXIMAL).template();
    let res = &t["Resources"];
    let mut k3s = Vec::new();
    for (group, rule) in all_ingress(&t) {
        let from = rule["FromPort"].as_u64().unwrap() as u16;
        let to = rule["ToPort"].as_u64().unwrap() as u16;
        let proto = rule["IpProtocol"].as_str().unwrap();
        assert!(proto != "-1", "{group}: every protocol open: {rule}");
        let opens_k3s = K3S_PORTS.iter().any(|p| (from..=to).contains(p));
        if !opens_k3s && from != 22 {
            continue;
        }
        if opens_k3s {
            assert!(
                rule.get("CidrIp").is_none()
                    && rule.get("CidrIpv6").is_none()
                    && rule.get("SourcePrefixListId").is_none(),
                "{group}: a k3s port open to an address range: {rule}"
            );
        }
        if let Some(source) = rule["SourceSecurityGroupId"]["Fn::GetAtt"][0].as_str() {
            k3s.push(format!("{group} <- {source} {proto}/{from}"));
            assert_eq!(from, to, "{rule}");
        } else {
            // Only the operator's SSH to the host comes from an address.
            assert_eq!(
                (group.as_str(), from, rule["CidrIp"].as_str()),
                ("HostSecurityGroup", 22, Some(OPERATOR_CIDR)),
                "{rule}"
            );
        }
    }
    k3s.sort();
    assert_eq!(
        k3s,
        [
            "HostSecurityGroup <- NodeSecurityGroup tcp/10250",
            "HostSecurityGroup <- NodeSecurityGroup tcp/6443",
            "HostSecurityGroup <- NodeSecurityGroup udp/8472",
            "NodeSecurityGroup <- HostSecurityGroup tcp/10250",
            "NodeSecurityGroup <- HostSecurityGroup tcp/22",
            "NodeSecurityGroup <- HostSecurityGroup udp/8472",
            "NodeSecurityGroup <- NodeSecurityGroup tcp/10250",
            "NodeSecurityGroup <- NodeSecurityGroup udp/8472",
        ],
        "k3s's inbound rules, SSH through the server, and nothing else"
    );

    // The agents' role reads the token parameter and nothing else.
    let role = &res["NodeRole"]["Properties"];
    let policies = role["Policies"].as_array().unwrap();
    assert_eq!(policies.len(), 1, "{role}");
    assert!(role.get("ManagedPolicyArns").is_none(), "{role}");
    let statements = policies[0]["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap();
    assert_eq!(statements.len(), 1, "{role}");
    assert_eq!(statements[0]["Effect"], "Allow");
    assert_eq!(
        statements[0]["Action"],
        serde_json::json!(["ssm:GetParameter"])
    );
    assert_eq!(
        statements[0]["Resource"],
        serde_json::json!([{"Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/bosun/prod-1/k3s-token"}])
    );
    assert!(statements[0].get("Condition").is_none());
    // The host may put that one parameter, and no other.
    let host_docs = policy_documents(&t);
    let puts: Vec<&Value> = host_docs
        .iter()
        .flat_map(|(_, d)| d["Statement"].as_array().unwrap())
        .filter(|s| {
            strings(&s["Action"]).iter().any(|a| {
                a.as_str().unwrap().contains("Put") && a.as_str().unwrap().starts_with("ssm:")
            })
        })
        .collect();
    assert_eq!(puts.len(), 1, "{puts:?}");
    assert_eq!(puts[0]["Action"], serde_json::json!(["ssm:PutParameter"]));
    assert_eq!(puts[0]["Resource"], statements[0]["Resource"]);

    // The group, its launch template and the tags the inventory reads.
    let group = &res["NodeGroup"]["Properties"];
    assert_eq!(
        (
            &group["MinSize"],
            &group["DesiredCapacity"],
            &group["MaxSize"]
        ),
        (&"2".into(), &"2".into(), &"3".into())
    );
    assert_eq!(
        group["VPCZoneIdentifier"],
        serde_json::json!([{"Ref": "PublicSubnet"}])
    );
    let tags: Vec<(String, String, bool)> = group["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["Key"].as_str().unwrap().to_string(),
                t["Value"].as_str().unwrap().to_string(),
                t["PropagateAtLaunch"].as_bool().unwrap(),
            )
        })
        .collect();
    for want in [
        ("bosun:stack", "prod-1"),
        ("bosun:role", "agent"),
        ("bosun:address", "private"),
        ("bosun:login-user", "ec2-user"),
    ] {
        assert!(
            tags.contains(&(want.0.into(), want.1.into(), true)),
            "{want:?} in {tags:?}"
        );
    }
    let host_tags = res["Host"]["Properties"]["Tags"].to_string();
    assert!(
        host_tags.contains(r#"{"Key":"bosun:role","Value":"server"}"#)
            && host_tags.contains(r#"{"Key":"bosun:address","Value":"public"}"#),
        "{host_tags}"
    );
    let lt = &res["NodeLaunchTemplate"]["Properties"]["LaunchTemplateData"];
    assert_eq!(lt["InstanceType"], "t3.small");
    assert_eq!(lt["MetadataOptions"]["HttpTokens"], "required");
    assert_eq!(
        lt["NetworkInterfaces"][0]["AssociatePublicIpAddress"],
        false
    );
    assert_eq!(
        lt["NetworkInterfaces"][0]["Groups"],
        serde_json::json!([{"Fn::GetAtt": ["NodeSecurityGroup", "GroupId"]}])
    );
    assert_eq!(
        lt["IamInstanceProfile"]["Arn"],
        serde_json::json!({"Fn::GetAtt": ["NodeInstanceProfile", "Arn"]})
    );
    let parts = lt["UserData"]["Fn::Base64"]["Fn::Join"][1]
        .as_array()
        .unwrap();
    assert!(
        parts.contains(&serde_json::json!({"Fn::GetAtt": ["Host", "PrivateIp"]})),
        "the agents join the host at its private address: {parts:?}"
    );
    let text: String = parts.iter().filter_map(|p| p.as_str()).collect();
    assert!(text.contains("k3s_role = \"agent\""), "{text}");
    assert!(!text.contains("database.toml") && !text.contains("k3s-token\"\nk3s_token ="));
    // The host publishes the token from its first boot on, with or without [nodes].
    let plain = Fixture::new("").template();
    let host_ud =
        plain["Resources"]["HostLaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"]
            .to_string();
    assert!(
        host_ud.contains(r#"k3s_role = \"server\""#)
            && host_ud.contains(r#"k3s_token_parameter = \"/bosun/prod-1/k3s-token\""#),
        "{host_ud}"
    );
    assert!(plain["Resources"].get("NodeGroup").is_none());

    // public_address (the default): SSH from the operator's address too, and that only.
    let t = Fixture::new("[nodes]\ncount = 1\n").template();
    let inline = t["Resources"]["NodeSecurityGroup"]["Properties"]["SecurityGroupIngress"].clone();
    assert_eq!(
        inline,
        serde_json::json!([{"Description": "SSH from the operator", "IpProtocol": "tcp",
            "FromPort": 22, "ToPort": 22, "CidrIp": OPERATOR_CIDR}])
    );
    assert_eq!(
        t["Resources"]["NodeLaunchTemplate"]["Properties"]["LaunchTemplateData"]["NetworkInterfaces"]
            [0]["AssociatePublicIpAddress"],
        true
    );
}

/// Every security-group ingress rule of a template.
fn ingress_rules(t: &Value) -> Vec<Value> {
    t["Resources"]
        .as_object()
        .unwrap()
        .values()
        .filter(|r| r["Type"] == "AWS::EC2::SecurityGroup")
        .flat_map(|r| {
            r["Properties"]["SecurityGroupIngress"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn edge_templates_keep_the_origin_behind_cloudfront() {
    let f = edge_fixture(false);
    let t = f.template();
    let edge = f.edge_template();
    let res = &t["Resources"];

    // Nothing but SSH from the operator is open to an address range; HTTP only from
    // CloudFront's prefix list; nothing to the world, in either address family.
    for rule in ingress_rules(&t) {
        for key in ["CidrIp", "CidrIpv6"] {
            if let Some(cidr) = rule[key].as_str() {
                assert!(
                    cidr != "0.0.0.0/0" && cidr != "::/0",
                    "open to the world: {rule}"
                );
                assert_eq!(
                    rule["FromPort"], 22,
                    "only SSH from an address range: {rule}"
                );
                assert_eq!(cidr, OPERATOR_CIDR);
            }
        }
        if rule["FromPort"] == 80 {
            assert_eq!(rule["SourcePrefixListId"], "pl-4fa04526", "{rule}");
        }
        assert_ne!(
            rule["FromPort"], 443,
            "the origin takes HTTP from CloudFront only: {rule}"
        );
    }
    assert!(
        ingress_rules(&t)
            .iter()
            .any(|r| r["SourcePrefixListId"] == "pl-4fa04526"),
        "CloudFront reaches the ingress"
    );

    // Viewer HTTPS only, TLS 1.2 or newer, the certificate from the us-east-1 stack.
    let d = &res["Distribution"]["Properties"]["DistributionConfig"];
    assert_eq!(
        d["DefaultCacheBehavior"]["ViewerProtocolPolicy"],
        "redirect-to-https"
    );
    assert_eq!(
        d["ViewerCertificate"]["MinimumProtocolVersion"],
        "TLSv1.2_2021"
    );
    assert_eq!(d["ViewerCertificate"]["SslSupportMethod"], "sni-only");
    assert_eq!(
        d["ViewerCertificate"]["AcmCertificateArn"],
        serde_json::json!({"Ref": "EdgeCertificateArn"})
    );
    assert_eq!(
        d["Aliases"],
        serde_json::json!(["app.example.com", "jenkins.example.com"])
    );
    // The origin is the Elastic IP's name; the secret header only names the SSM parameter.
    let origin = &d["Origins"][0];
    assert!(
        origin["DomainName"].to_string().contains("HostEip"),
        "{origin}"
    );
    assert!(
        origin["DomainName"]
            .to_string()
            .contains("eu-west-1.compute.amazonaws.com")
    );
    assert_eq!(
        origin["OriginCustomHeaders"][0]["HeaderValue"],
        "{{resolve:ssm:/bosun/prod-1/edge/origin-secret}}"
    );

    // Every alias record, A and AAAA, targets the distribution.
    let mut aliases = Vec::new();
    for r in res.as_object().unwrap().values() {
        if r["Type"] == "AWS::Route53::RecordSet" && r["Properties"]["AliasTarget"].is_object() {
            let p = &r["Properties"];
            assert_eq!(
                p["AliasTarget"]["DNSName"],
                serde_json::json!({"Fn::GetAtt": ["Distribution", "DomainName"]})
            );
            assert_eq!(p["AliasTarget"]["HostedZoneId"], "Z2FDTNDATAQYW2");
            aliases.push(format!(
                "{} {}",
                p["Name"].as_str().unwrap(),
                p["Type"].as_str().unwrap()
            ));
        }
    }
    aliases.sort();
    assert_eq!(
        aliases,
        [
            "app.example.com A",
            "app.example.com AAAA",
            "jenkins.example.com A",
            "jenkins.example.com AAAA"
        ]
    );

    // The certificate, the health checks and their alarms live in the us-east-1 stack.
    assert!(
        !t.to_string()
            .contains("AWS::CertificateManager::Certificate")
            || res["Certificate"].is_null(),
        "no certificate for CloudFront in the main stack"
    );
    let e = &edge["Resources"];
    let cert = &e["EdgeCertificate"]["Properties"];
    assert_eq!(cert["DomainName"], "app.example.com");
    assert_eq!(
        cert["SubjectAlternativeNames"],
        serde_json::json!(["jenkins.example.com"])
    );
    assert_eq!(cert["ValidationMethod"], "DNS");
    for (i, name) in ["app.example.com", "jenkins.example.com"]
        .iter()
        .enumerate()
    {
        let hc = &e[format!("HealthCheck{i}")]["Properties"]["HealthCheckConfig"];
        assert_eq!(hc["Type"], "HTTPS");
        assert_eq!(hc["FullyQualifiedDomainName"], *name);
        assert_eq!(hc["ResourcePath"], "/healthz");
        let alarm = &e[format!("HealthCheckAlarm{i}")]["Properties"];
        assert_eq!(alarm["Namespace"], "AWS/Route53");
        assert_eq!(
            alarm["AlarmActions"],
            serde_json::json!([{"Ref": "AlarmTopic"}])
        );
    }
    for topic in [&e["AlarmTopic"], &res["AlarmTopic"]] {
        assert_eq!(
            topic["Properties"]["Subscription"],
            serde_json::json!([{"Protocol": "email", "Endpoint": "ops@example.com"}])
        );
    }
    // The host's status checks notify the topic; the dashboard shows the health checks.
    for alarm in ["SystemStatusAlarm", "InstanceStatusAlarm"] {
        let actions = res[alarm]["Properties"]["AlarmActions"].to_string();
        assert!(actions.contains("AlarmTopic"), "{alarm}: {actions}");
    }
    let dashboard = res["Dashboard"]["Properties"]["DashboardBody"].to_string();
    assert!(dashboard.contains("HealthCheckStatus") && dashboard.contains("us-east-1"));

    // Only the backup user may connect with an IAM token.
    let role = res["HostRole"]["Properties"]["Policies"].to_string();
    assert_eq!(role.matches("rds-db:connect").count(), 1, "{role}");
    assert!(role.contains("dbuser:${Database.DbiResourceId}/bosun_backup"));
    assert_eq!(
        res["Database"]["Properties"]["EnableIAMDatabaseAuthentication"],
        true
    );

    // In us-east-1 the same config is one stack.
    let one = Fixture::in_region("us-east-1", &format!("os = \"al2023\"\n[rds]\n{EDGE}"));
    let t1 = one.template();
    assert!(t1["Resources"]["EdgeCertificate"].is_object());
    assert_eq!(
        t1["Resources"]["Distribution"]["Properties"]["DistributionConfig"]["ViewerCertificate"]["AcmCertificateArn"],
        serde_json::json!({"Ref": "EdgeCertificate"})
    );
    assert!(t1["Parameters"]["EdgeCertificateArn"].is_null());
    let out = one.bosun(&["template", "--edge"], &[]);
    assert_eq!(out.status.code(), Some(2), "no second stack in us-east-1");
}

#[test]
fn edge_config_errors_are_all_reported() {
    let f = Fixture::in_region(
        "eu-west-1",
        "public_http = true\n[edge]\ndomain_names = [\"app.example.com\", \"*.example.com\", \"app.example.com\"]\n\
         hosted_zone_id = \"zone\"\norigin_prefix_list = \"sg-1\"\n\
         certificate_arn = \"arn:aws:acm:eu-west-1:1:certificate/x\"\nhealth_check_path = \"healthz\"\n",
    );
    let out = f.bosun(&["template"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "stack.toml",
        "\"*.example.com\"",
        "twice",
        "hosted_zone_id",
        "origin_prefix_list",
        "us-east-1",
        "health_check_path",
        "public_http",
    ] {
        assert!(err.contains(needle), "{needle} in:\n{err}");
    }
}

/// moto implements, of the edge: SSM parameters, Route 53 health checks and SNS topics (with
/// subscriptions) in CloudFormation, and the EIP. It does not implement
/// `AWS::CertificateManager::Certificate`, `AWS::CloudWatch::Alarm` or
/// `AWS::CloudFront::Distribution` in CloudFormation: the edge stack here names an existing
/// certificate, the alarms are asserted on the template (above), and the main stack's update,
/// which needs `Distribution.DomainName`, is refused by moto. What is asserted here: `plan`
/// shows both stacks, `up` creates the secret and the edge stack, a second `up` changes
/// neither, `down` removes both (and the secret) and keeps the bucket.
#[test]
fn edge_stack_is_applied_first_and_removed_by_down() {
    let moto = Moto::start().expect("start moto");
    let env = moto.env();
    let f = Fixture::in_region(
        "eu-west-1",
        &format!(
            "os = \"al2023\"\n{}",
            EDGE.replace(
                "[edge]\n",
                "[edge]\ncertificate_arn = \"arn:aws:acm:us-east-1:123456789012:certificate/0b9a\"\n"
            )
        ),
    );
    let plan = f.bosun_json(&["plan"], &env);
    assert_eq!(plan["edge"]["stack"], "prod-1-edge", "{plan}");
    assert_eq!(plan["edge"]["exists"], false);
    let edge_adds: Vec<&str> = plan["edge"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["logical_id"].as_str().unwrap())
        .collect();
    assert!(
        edge_adds.contains(&"HealthCheck1") && edge_adds.contains(&"AlarmTopic"),
        "{plan}"
    );
    assert!(
        !edge_adds.contains(&"EdgeCertificate"),
        "certificate_arn given: {plan}"
    );
    let main_adds = plan["changes"].to_string();
    assert!(
        main_adds.contains("Distribution") && main_adds.contains("HostEip"),
        "{plan}"
    );

    let up = f.bosun(&["--output", "json", "up"], &env);
    let stderr = String::from_utf8_lossy(&up.stderr).to_string();
    let stdout = String::from_utf8_lossy(&up.stdout).to_string();
    assert_eq!(
        up.status.code(),
        Some(2),
        "moto refuses the distribution:\n{stderr}"
    );
    assert!(stderr.contains("Distribution"), "{stderr}");
    let found = boto3(
        &moto,
        r#"
import os
ssm = boto3.client("ssm", region_name="eu-west-1")
secret = ssm.get_parameter(Name="/bosun/prod-1/edge/origin-secret")["Parameter"]["Value"]
cf = boto3.client("cloudformation", region_name="us-east-1")
s = cf.describe_stacks(StackName="prod-1-edge")["Stacks"][0]
r53 = boto3.client("route53")
checks = [c["HealthCheckConfig"] for c in r53.list_health_checks()["HealthChecks"]]
sns = boto3.client("sns", region_name="us-east-1")
subs = [x["Endpoint"] for x in sns.list_subscriptions()["Subscriptions"]]
print(json.dumps({"secret": secret, "status": s["StackStatus"], "outputs": s.get("Outputs", []),
    "checks": checks, "subs": subs}))
"#,
    );
    let secret = found["secret"].as_str().unwrap().to_string();
    assert_eq!(secret.len(), 64, "32 random bytes, hex");
    assert_eq!(found["status"], "CREATE_COMPLETE", "{found}");
    let names: Vec<&str> = found["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["FullyQualifiedDomainName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app.example.com", "jenkins.example.com"], "{found}");
    assert!(
        found["subs"].to_string().contains("ops@example.com"),
        "{found}"
    );
    // The secret is in no template, output or message.
    let templates = format!(
        "{}{}",
        f.bosun_ok(&["template"], &[]),
        f.bosun_ok(&["template", "--edge"], &[])
    );
    for (what, text) in [
        ("templates", &templates),
        ("stdout", &stdout),
        ("stderr", &stderr),
        ("edge outputs", &found["outputs"].to_string()),
    ] {
        assert!(
            !text.contains(&secret),
            "the origin secret is in the {what}"
        );
    }

    // A second `up`: the edge stack has no changes and the secret is kept.
    let again = f.bosun(&["up"], &env);
    let again_err = String::from_utf8_lossy(&again.stderr);
    assert!(
        again_err.contains("stack prod-1-edge: no changes"),
        "{again_err}"
    );
    assert!(
        !again_err.contains("created the origin secret"),
        "{again_err}"
    );
    let kept = boto3(
        &moto,
        r#"print(json.dumps(boto3.client("ssm", region_name="eu-west-1").get_parameter(Name="/bosun/prod-1/edge/origin-secret")["Parameter"]["Value"]))"#,
    );
    assert_eq!(kept, secret.as_str());

    // moto keeps the template of the change set it refused, and then cannot read the main
    // stack's resources any more: the main stack goes through moto's own DeleteStack (its
    // `down` is covered by the tests above), the edge stack and the secret through `down`.
    remove_what_moto_cannot_delete(&moto);
    boto3(
        &moto,
        r#"
cf = boto3.client("cloudformation", region_name="eu-west-1")
cf.delete_stack(StackName="prod-1")
print("{}")
"#,
    );
    let down = f.bosun_json(&["down"], &env);
    assert_eq!(down["deleted"], false, "{down}");
    assert_eq!(down["edge_deleted"], true, "{down}");
    assert_eq!(down["origin_secret_deleted"], true, "{down}");
    let after = boto3(
        &moto,
        r#"
stacks = []
for region in ["eu-west-1", "us-east-1"]:
    cf = boto3.client("cloudformation", region_name=region)
    stacks += [s["StackName"] for s in cf.list_stacks()["StackSummaries"] if s["StackStatus"] != "DELETE_COMPLETE"]
buckets = [b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]]
print(json.dumps({"stacks": stacks, "buckets": buckets}))
"#,
    );
    assert_eq!(after["stacks"], serde_json::json!([]), "{after}");
    assert_eq!(
        after["buckets"].as_array().unwrap().len(),
        1,
        "the bucket is kept: {after}"
    );
}

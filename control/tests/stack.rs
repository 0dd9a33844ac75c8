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

use bosun_harness::{Moto, venv_program};
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
                "name = \"prod-1\"\nregion = \"us-east-1\"\noperator_cidr = \"{OPERATOR_CIDR}\"\n\
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
}

const MAXIMAL: &str = r#"
public_http = true
os = "al2023"
[rds]
[dns]
hosted_zone_id = "Z0123456789ABCDEFGHIJ"
record_name = "prod-1.example.com"
certificate = true
"#;

fn cfn_lint(file: &Path) -> Output {
    Command::new(venv_program("cfn-lint"))
        .arg("--")
        .arg(file)
        .output()
        .expect("run cfn-lint")
}

#[test]
fn templates_pass_cfn_lint_without_errors_or_warnings() {
    for (label, extra) in [("default", ""), ("maximal", MAXIMAL)] {
        let f = Fixture::new(extra);
        let file = f.path("template.json");
        std::fs::write(&file, f.bosun_ok(&["template"], &[])).unwrap();
        let out = cfn_lint(&file);
        assert!(
            out.status.success(),
            "cfn-lint on the {label} template:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
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
                || text.contains("MasterUserSecret"),
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
        !t.to_string().contains("6443"),
        "the Kubernetes API is never opened"
    );
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
    ] {
        assert_eq!(res[alarm]["Properties"]["Namespace"], "Bosun/Host");
        assert_eq!(res[alarm]["Properties"]["MetricName"], metric);
    }
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
    for o in [
        "InstanceId",
        "PublicIp",
        "PublicDnsName",
        "SshCommand",
        "BucketName",
    ] {
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
ec2 = boto3.client("ec2")
vpc = ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": ["prod-1-vpc"]}])["Vpcs"][0]["VpcId"]
f = [{"Name": "vpc-id", "Values": [vpc]}]
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
}

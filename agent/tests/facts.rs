//! Facts: EC2 identity comes from IMDSv2 (token first, then the documents) when the metadata
//! service answers, and is absent when it does not. The metadata service is the harness's
//! IMDSv2 stub on loopback (`BOSUN_IMDS_ENDPOINT`), which refuses requests without a token.

use std::process::Command;

use bosun_harness::Imds;

fn facts_via_playbook(imds_endpoint: Option<&str>) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("facts.json");
    let book = dir.path().join("facts.toml");
    std::fs::write(
        &book,
        format!(
            "name = \"facts\"\n[[step]]\nname = \"dump facts\"\ncopy = {{ dest = \"{}\", content = \"{{{{ facts | tojson }}}}\" }}\n",
            out.display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bosund"));
    cmd.arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("apply")
        .arg(&book);
    cmd.env_remove("BOSUN_IMDS_ENDPOINT");
    if let Some(e) = imds_endpoint {
        cmd.env("BOSUN_IMDS_ENDPOINT", e);
    }
    let run = cmd.output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}

#[test]
fn ec2_facts_come_from_imdsv2() {
    let imds = Imds::start("i-0abc123def4567890", "eu-west-1", "eu-west-1b").unwrap();
    let facts = facts_via_playbook(Some(&imds.endpoint()));
    assert_eq!(facts["ec2"]["instance_id"], "i-0abc123def4567890");
    assert_eq!(facts["ec2"]["region"], "eu-west-1");
    assert_eq!(facts["ec2"]["availability_zone"], "eu-west-1b");
    // The token was fetched before any document was read.
    let requests = imds.requests();
    assert!(
        requests
            .first()
            .is_some_and(|r| r.contains("/latest/api/token")),
        "{requests:?}"
    );
}

#[test]
fn host_facts_are_there_and_ec2_is_absent_off_ec2() {
    // A closed port stands for "not on EC2": nothing answers.
    let port = bosun_harness::free_port().unwrap();
    let facts = facts_via_playbook(Some(&format!("http://127.0.0.1:{port}")));
    assert!(facts.get("ec2").is_none(), "{facts}");
    assert_eq!(facts["arch"], std::env::consts::ARCH);
    assert!(facts["cpu_count"].as_u64().unwrap() >= 1);
    assert!(facts["memory_mb"].as_u64().unwrap() > 64);
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap();
    let id = facts["os_id"].as_str().unwrap();
    assert!(
        os_release
            .lines()
            .any(|l| l.trim_matches('"') == format!("ID={id}") || l == format!("ID=\"{id}\"")),
        "{id}"
    );
}

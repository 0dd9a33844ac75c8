//! `auth = "iam"`: the RDS IAM token bosund signs (`backup::iam::auth_token`, the Rust SDK's
//! generator) is checked against botocore's presigner (boto3's `generate_db_auth_token`, from
//! the test venv) for the same credentials, region, endpoint, user and instant: same host and
//! port, 15-minute expiry, same credential scope, same signature. And the `secretsmanager:`
//! source the master password is read through (`mysql_user`), against moto.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use aws_config::{Region, SdkConfig};
use aws_sdk_rds::config::{Credentials, SharedCredentialsProvider};
use aws_smithy_async::time::{SharedTimeSource, StaticTimeSource};
use bosun_agent::backup::iam::{TOKEN_LIFETIME_SECS, auth_token};
use bosun_harness::{Moto, venv_program};
use common::{Run, Sandbox};

const HOST: &str = "prod-1.c9akciq32.eu-west-1.rds.amazonaws.com";
const PORT: u16 = 3306;
const USER: &str = "bosun_backup";
const REGION: &str = "eu-west-1";
const KEY_ID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
/// 2026-12-07T05:00:00Z.
const NOW: u64 = 1_796_619_600;

fn sdk(now: u64) -> SdkConfig {
    SdkConfig::builder()
        .region(Region::new(REGION))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            KEY_ID, SECRET, None, None, "test",
        )))
        .time_source(SharedTimeSource::new(StaticTimeSource::new(
            UNIX_EPOCH + Duration::from_secs(now),
        )))
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build()
}

/// `host:port/?query` → (host:port, query parameters).
fn split(token: &str) -> (String, BTreeMap<String, String>) {
    let (authority, query) = token.split_once("/?").expect("host:port/?query");
    let params = query
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    (authority.to_string(), params)
}

/// botocore's token for the same inputs, its clock set to `now`.
fn botocore_token(now: u64) -> String {
    let script = format!(
        r#"
import datetime, boto3, botocore.auth
botocore.auth.get_current_datetime = lambda: datetime.datetime.fromtimestamp({now}, datetime.timezone.utc).replace(tzinfo=None)
rds = boto3.client("rds", region_name="{REGION}", aws_access_key_id="{KEY_ID}", aws_secret_access_key="{SECRET}")
print(rds.generate_db_auth_token(DBHostname="{HOST}", Port={PORT}, DBUsername="{USER}", Region="{REGION}"), end="")
"#
    );
    let out = Command::new(venv_program("python"))
        .arg("-c")
        .arg(script)
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_token_matches_botocores_presigner() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ours = rt
        .block_on(auth_token(&sdk(NOW), HOST, PORT, USER))
        .unwrap();
    let ours = ours.expose().to_string();
    let theirs = botocore_token(NOW);

    let (authority, params) = split(&ours);
    let (their_authority, their_params) = split(&theirs);
    assert_eq!(
        authority,
        format!("{HOST}:{PORT}"),
        "no scheme, host and port: {ours}"
    );
    assert_eq!(authority, their_authority);
    assert_eq!(params["Action"], "connect");
    assert_eq!(params["DBUser"], USER);
    assert_eq!(params["X-Amz-Expires"], TOKEN_LIFETIME_SECS.to_string());
    assert_eq!(params["X-Amz-Expires"], "900");
    assert_eq!(params["X-Amz-Date"], "20261207T050000Z");
    assert_eq!(
        params["X-Amz-Credential"],
        format!("{KEY_ID}%2F20261207%2F{REGION}%2Frds-db%2Faws4_request")
    );
    assert_eq!(params, their_params, "ours: {ours}\nbotocore: {theirs}");

    // The signature depends on what is signed: another instant or user gives another one.
    let later = rt
        .block_on(auth_token(&sdk(NOW + 1), HOST, PORT, USER))
        .unwrap();
    assert_ne!(
        split(later.expose()).1["X-Amz-Signature"],
        params["X-Amz-Signature"]
    );
    // A secret prints as `<redacted>`.
    assert_eq!(format!("{later:?}"), "<redacted>");
}

#[test]
fn without_a_region_the_token_is_refused_with_what_to_set() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build();
    let err = rt
        .block_on(auth_token(&config, HOST, PORT, USER))
        .unwrap_err();
    assert!(format!("{err:#}").contains("region"), "{err:#}");
}

#[test]
fn a_secretsmanager_source_reads_the_secret_or_one_json_field() {
    let moto = Moto::start().expect("start moto");
    let out = Command::new(venv_program("python"))
        .arg("-c")
        .arg(
            "import boto3, json\nsm = boto3.client('secretsmanager')\n\
             sm.create_secret(Name='rds!db-1', SecretString=json.dumps({'username': 'bosun_admin', 'password': 'm4ster-pw'}))\n\
             sm.create_secret(Name='plain', SecretString='plain-value')",
        )
        .envs(moto.env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sb = Sandbox::new();
    let pb = sb.playbook(
        "name = \"sm\"\n[secrets]\nmaster = \"secretsmanager:rds!db-1#password\"\n\
         plain = \"secretsmanager:plain\"\n[[step]]\nname = \"w\"\n\
         copy = { dest = \"@ROOT@/out\", content = \"{{ master }} {{ plain }}\" }\n",
    );
    let run = |pb: &std::path::Path| {
        let mut cmd = sb.bosund();
        cmd.arg("apply").arg(pb).args(["--output", "json"]);
        cmd.envs(moto.env());
        Run::from_command(cmd, None)
    };
    let ok = run(&pb);
    assert_eq!(ok.code, 0, "{ok:#?}");
    assert_eq!(
        std::fs::read_to_string(sb.path("out")).unwrap(),
        "m4ster-pw plain-value"
    );
    assert!(
        !serde_json::to_string(&ok.events)
            .unwrap()
            .contains("m4ster-pw")
    );

    // A missing field is named, the secret's text is not.
    let bad = sb.playbook(
        "name = \"sm\"\n[secrets]\nmaster = \"secretsmanager:rds!db-1#passwd\"\n\
         [[step]]\nname = \"w\"\ncommand = { run = \"true\" }\n",
    );
    let failed = run(&bad);
    assert_eq!(failed.code, 1);
    let message = failed.reports()[0].message.clone().unwrap();
    assert!(
        message.contains("passwd") && message.contains("rds!db-1"),
        "{message}"
    );
    assert!(
        !message.contains("m4ster-pw") && !message.contains("bosun_admin"),
        "{message}"
    );
}

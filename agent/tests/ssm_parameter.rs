//! `ssm_parameter` against a real SSM API (moto): put from a file is idempotent (no write
//! when equal: the parameter's version does not move), another value needs `overwrite`, get
//! hands the value to later steps through `register` while no event, message or error ever
//! holds it, and bad arguments are refused before anything runs, with file and line.

mod common;

use bosun_harness::Moto;
use common::Sandbox;

const TOKEN: &str = "K10abc0123::server:s3cr3t-join-password";
const ROTATED: &str = "K10abc0123::server:rotated-password";

/// (value, type, version) of parameter `name` in moto.
fn parameter(moto: &Moto, name: &str) -> Option<(String, String, i64)> {
    let rt = common::runtime();
    let client = aws_sdk_ssm::Client::new(&common::moto_sdk_config(&rt, moto));
    let out = rt
        .block_on(
            client
                .get_parameter()
                .name(name)
                .with_decryption(true)
                .send(),
        )
        .ok()?;
    let p = out.parameter?;
    Some((
        p.value.unwrap_or_default(),
        p.r#type.map(|t| t.as_str().to_string()).unwrap_or_default(),
        p.version,
    ))
}

fn apply(sb: &Sandbox, moto: &Moto, text: &str) -> common::Run {
    let book = sb.playbook(text);
    let mut cmd = sb.bosund();
    cmd.arg("apply").arg(&book).args(["--output", "json"]);
    for (k, v) in moto.env() {
        cmd.env(k, v);
    }
    common::Run::from_command(cmd, None)
}

fn assert_no_secret(run: &common::Run) {
    let out = format!(
        "{}{}",
        serde_json::to_string(&run.events).unwrap(),
        run.stderr
    );
    for secret in [TOKEN, ROTATED, "s3cr3t-join-password", "rotated-password"] {
        assert!(!out.contains(secret), "a value is in the events: {out}");
    }
}

#[test]
fn put_is_idempotent_needs_overwrite_and_get_hands_the_value_on_masked() {
    let moto = Moto::start().expect("start moto");
    let sb = Sandbox::new();
    let token_file = sb.write("node-token", &format!("{TOKEN}\n"));
    let out_file = sb.path("seen");
    let publish = |overwrite: bool| {
        format!(
            r#"name = "publish"
[[step]]
name = "publish the token"
ssm_parameter = {{ name = "/bosun/t1/k3s-token", from_file = "{}", overwrite = {overwrite} }}
"#,
            token_file.display()
        )
    };

    // Created as a SecureString, the trailing newline dropped.
    let first = apply(&sb, &moto, &publish(false));
    first.assert_success();
    assert_eq!(first.summary().changed, 1, "{:?}", first.statuses());
    assert_eq!(
        parameter(&moto, "/bosun/t1/k3s-token"),
        Some((TOKEN.to_string(), "SecureString".to_string(), 1))
    );
    // Equal: ok, and nothing written (the version stays 1).
    let again = apply(&sb, &moto, &publish(false));
    again.assert_success();
    assert_eq!(again.summary().changed, 0, "{:?}", again.statuses());
    assert_eq!(parameter(&moto, "/bosun/t1/k3s-token").unwrap().2, 1);

    // Another value without `overwrite`: refused, nothing written, no value in the error.
    std::fs::write(&token_file, ROTATED).unwrap();
    let refused = apply(&sb, &moto, &publish(false));
    assert_eq!(refused.summary().failed, 1, "{:?}", refused.statuses());
    let msg = refused.step("publish the token").message.clone().unwrap();
    assert!(msg.contains("set `overwrite = true`"), "{msg}");
    assert_eq!(
        parameter(&moto, "/bosun/t1/k3s-token").unwrap(),
        (TOKEN.to_string(), "SecureString".to_string(), 1)
    );
    let updated = apply(&sb, &moto, &publish(true));
    assert_eq!(updated.summary().changed, 1, "{:?}", updated.statuses());
    assert_eq!(
        parameter(&moto, "/bosun/t1/k3s-token").unwrap(),
        (ROTATED.to_string(), "SecureString".to_string(), 2)
    );

    // get: the value reaches a later step through register, masked in every event.
    let read = apply(
        &sb,
        &moto,
        &format!(
            r#"name = "read"
[[step]]
name = "read the token"
ssm_parameter = {{ name = "/bosun/t1/k3s-token", state = "get" }}
register = "join"
[[step]]
name = "use it"
command = {{ argv = ["/bin/sh", "-c", "printf %s \"$T\" > {out}; echo \"token is $T\""], env = {{ T = "{{{{ join.value }}}}" }} }}
"#,
            out = out_file.display()
        ),
    );
    read.assert_success();
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), ROTATED);
    // The command's own echo of it is masked too.
    let stdout = read.step("use it").output.clone().unwrap().stdout;
    assert_eq!(stdout.trim(), "token is ********");
    // A missing parameter without `wait`: a clear error naming it.
    let missing = apply(
        &sb,
        &moto,
        "name = \"m\"\n[[step]]\nname = \"read\"\nssm_parameter = { name = \"/bosun/none/k3s-token\", state = \"get\" }\n",
    );
    assert_eq!(missing.summary().failed, 1);
    let msg = missing.step("read").message.clone().unwrap();
    assert!(
        msg.contains("SSM parameter /bosun/none/k3s-token does not exist"),
        "{msg}"
    );

    for run in [&first, &again, &refused, &updated, &read, &missing] {
        assert_no_secret(run);
    }

    // Bad arguments: refused at validation with file:line, before anything runs.
    let bad = sb.write(
        "bad.toml",
        "name = \"bad\"\n[[step]]\nname = \"x\"\nssm_parameter = { name = \"/bosun/t1/x\", state = \"get\", value = \"v\" }\n",
    );
    let out = sb
        .bosund()
        .arg("apply")
        .arg(&bad)
        .envs(moto.env())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml:4:"), "{stderr}");
    assert!(
        stderr.contains("`value` is for state \"put\", not \"get\""),
        "{stderr}"
    );
}

/// `wait`: an agent that boots before its server polls for the token until it exists. A get
/// started before the parameter exists (its `step_started` event read first) succeeds once
/// the parameter is put; one whose parameter never comes fails after `wait`, saying so.
#[test]
fn get_with_wait_polls_until_the_parameter_exists() {
    use std::io::{BufRead, BufReader};
    let moto = Moto::start().expect("start moto");
    let sb = Sandbox::new();
    let out_file = sb.path("seen");
    let book = sb.playbook(&format!(
        r#"name = "join"
[[step]]
name = "read the token"
ssm_parameter = {{ name = "/bosun/t2/k3s-token", state = "get", wait = "2m" }}
register = "join"
[[step]]
name = "use it"
command = {{ argv = ["/bin/sh", "-c", "printf %s \"$T\" > {out}"], env = {{ T = "{{{{ join.value }}}}" }} }}
"#,
        out = out_file.display()
    ));
    let mut cmd = sb.bosund();
    cmd.arg("apply").arg(&book).args(["--output", "json"]);
    for (k, v) in moto.env() {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The get has started (the parameter does not exist yet): now the server publishes it.
    for line in lines.by_ref() {
        if line.unwrap().contains("\"step_started\"") {
            break;
        }
    }
    assert!(parameter(&moto, "/bosun/t2/k3s-token").is_none());
    let publish = sb.write("publish.toml", &format!(
        "name = \"publish\"\n[[step]]\nname = \"p\"\nssm_parameter = {{ name = \"/bosun/t2/k3s-token\", value = \"{TOKEN}\" }}\n"
    ));
    let mut put = sb.bosund();
    put.arg("apply").arg(&publish);
    for (k, v) in moto.env() {
        put.env(k, v);
    }
    assert!(put.output().unwrap().status.success());
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(child.wait().unwrap().success(), "{rest:?}");
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), TOKEN);
    assert!(!rest.concat().contains(TOKEN), "the value is in an event");

    // Never published: fails after `wait`, naming the parameter and the wait.
    let never = apply(
        &sb,
        &moto,
        r#"name = "never"
[[step]]
name = "read"
ssm_parameter = { name = "/bosun/t2/nothing", state = "get", wait = "3s" }
"#,
    );
    assert_eq!(never.summary().failed, 1, "{:?}", never.statuses());
    let msg = never.step("read").message.clone().unwrap();
    assert!(
        msg.contains("/bosun/t2/nothing does not exist after waiting 3s"),
        "{msg}"
    );
}

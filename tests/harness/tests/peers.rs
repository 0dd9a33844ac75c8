//! Each peer starts, really answers, and is gone (port closed) after drop.

use std::process::Stdio;

use anyhow::{Context, Result, ensure};
use bosun_harness::{ArtifactServer, Imds, MariaDb, Moto, Sshd, http, port_is_open};

#[test]
fn moto_answers_s3_and_resets() -> Result<()> {
    let moto = Moto::start()?;
    let port = moto.port();
    assert_eq!(moto.endpoint(), format!("http://127.0.0.1:{port}"));
    let env = moto.env();
    for key in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_EC2_METADATA_DISABLED",
    ] {
        assert!(env.iter().any(|(k, _)| k == key), "env() lacks {key}");
    }

    // moto does not check signatures: a bare path-style PUT creates a bucket.
    let put = http::request(
        "PUT",
        &format!("{}/harness-bucket", moto.endpoint()),
        &[],
        &[],
    )?;
    ensure!(
        put.status == 200,
        "PUT bucket: {} {}",
        put.status,
        put.text()
    );
    let list = http::get(&format!("{}/", moto.endpoint()))?;
    ensure!(
        list.text().contains("<Name>harness-bucket</Name>"),
        "bucket not listed: {}",
        list.text()
    );

    moto.reset()?;
    let list = http::get(&format!("{}/", moto.endpoint()))?;
    ensure!(
        !list.text().contains("harness-bucket"),
        "reset kept the bucket"
    );

    drop(moto);
    assert!(
        !port_is_open(port),
        "moto port {port} still open after drop"
    );
    Ok(())
}

#[test]
fn moto_stop_and_restart_on_the_same_port() -> Result<()> {
    let mut moto = Moto::start()?;
    let port = moto.port();
    moto.stop();
    assert!(!port_is_open(port), "port still open while stopped");
    moto.restart()?;
    assert_eq!(moto.port(), port);
    assert_eq!(http::get(&format!("{}/", moto.endpoint()))?.status, 200);
    Ok(())
}

#[test]
fn moto_works_with_boto3_from_the_venv() -> Result<()> {
    // The SDK path: real SigV4-signed requests using only env() for configuration.
    let moto = Moto::start()?;
    let venv = std::env::var("BOSUN_TEST_VENV").unwrap_or_else(|_| {
        format!(
            "{}/.cache/bosun/venv",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let out = std::process::Command::new(format!("{venv}/bin/python"))
        .args([
            "-c",
            "import boto3; s=boto3.client('s3'); s.create_bucket(Bucket='bkt1'); \
             s.put_object(Bucket='bkt1', Key='k', Body=b'hello'); \
             print(s.get_object(Bucket='bkt1', Key='k')['Body'].read().decode())",
        ])
        .env_clear()
        .envs(moto.env())
        .output()
        .context("running the venv's python")?;
    ensure!(
        out.status.success(),
        "boto3 against moto failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        moto.log_tail()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");
    Ok(())
}

#[test]
fn sshd_runs_commands_and_checks_host_keys() -> Result<()> {
    let sshd = Sshd::start()?;
    let port = sshd.port();
    assert!(
        sshd.known_hosts_line()
            .starts_with(&format!("[127.0.0.1]:{port} ssh-ed25519 AAAA")),
        "{}",
        sshd.known_hosts_line()
    );
    assert!(sshd.known_hosts_line().ends_with(&sshd.host_key_pub()));
    assert!(sshd.client_key_path().is_file());

    let out = sshd.ssh_command().arg("echo hi").output()?;
    ensure!(
        out.status.success(),
        "ssh echo failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        sshd.log_tail()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");

    let out = sshd.ssh_command().arg("id -un").output()?;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), sshd.user());

    // A known_hosts entry with another key for the same [127.0.0.1]:port is refused.
    let other = tempfile::tempdir()?;
    let keyfile = other.path().join("other");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&keyfile)
        .stdin(Stdio::null())
        .status()?;
    ensure!(status.success(), "ssh-keygen failed");
    let other_pub = std::fs::read_to_string(keyfile.with_extension("pub"))?;
    let mut fields = other_pub.split_whitespace();
    let wrong_line = format!(
        "[127.0.0.1]:{port} {} {}\n",
        fields.next().unwrap_or_default(),
        fields.next().unwrap_or_default()
    );
    let wrong_kh = other.path().join("known_hosts");
    std::fs::write(&wrong_kh, wrong_line)?;
    let out = sshd
        .ssh_command_with_known_hosts(&wrong_kh)
        .args(["echo", "should-not-run"])
        .output()?;
    assert!(!out.status.success(), "ssh accepted a wrong host key");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("should-not-run"),
        "command ran despite the wrong host key"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Host key verification failed")
            || stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "unexpected ssh error: {stderr}"
    );

    // An empty known_hosts is refused too (StrictHostKeyChecking=yes, BatchMode).
    let empty_kh = other.path().join("empty");
    std::fs::write(&empty_kh, "")?;
    let out = sshd
        .ssh_command_with_known_hosts(&empty_kh)
        .arg("true")
        .output()?;
    assert!(!out.status.success(), "ssh accepted an unknown host key");

    let dir = sshd.dir().to_path_buf();
    drop(sshd);
    assert!(
        !port_is_open(port),
        "sshd port {port} still open after drop"
    );
    assert!(!dir.exists(), "sshd temp dir {} left behind", dir.display());
    Ok(())
}

#[test]
fn mariadb_stores_and_counts_rows() -> Result<()> {
    let db = MariaDb::start()?;
    let port = db.port();
    assert_eq!(db.user(), "root");
    assert!(!db.password().is_empty());

    db.exec(
        "CREATE DATABASE shop;
         CREATE TABLE shop.orders (id INT PRIMARY KEY, amount DECIMAL(10,2));
         USE shop;
         INSERT INTO orders SELECT seq, seq * 1.5 FROM seq_1_to_1000;",
    )?;
    assert_eq!(db.exec("SELECT COUNT(*) FROM shop.orders")?.trim(), "1000");

    // Errors carry the server's message.
    let err = db
        .exec("SELECT * FROM shop.missing")
        .expect_err("query on a missing table succeeded");
    assert!(format!("{err:#}").contains("doesn't exist"), "{err:#}");

    // Without the password, TCP login is refused.
    let out = db
        .client_command()
        .env_remove("MYSQL_PWD")
        .args(["--batch", "-e", "SELECT 1"])
        .stdin(Stdio::null())
        .output()?;
    assert!(!out.status.success(), "login without password succeeded");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Access denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The Unix socket is there, and it needs the password as well.
    assert!(db.socket_path().exists());

    drop(db);
    assert!(
        !port_is_open(port),
        "mariadb port {port} still open after drop"
    );
    Ok(())
}

#[test]
fn artifact_server_serves_files_and_logs_requests() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("k3s/v1.31.4+k3s1"))?;
    std::fs::write(
        dir.path().join("k3s/v1.31.4+k3s1/k3s"),
        b"#!/bin/sh\necho k3s\n",
    )?;
    let server = ArtifactServer::serve(dir.path())?;
    let port = server.port();

    let resp = http::get(&format!("{}/k3s/v1.31.4+k3s1/k3s", server.url()))?;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"#!/bin/sh\necho k3s\n");
    assert_eq!(resp.header("content-length"), Some("19"));

    // Percent-encoded '+' reaches the same file; HEAD gives the length without a body.
    let head = http::request(
        "HEAD",
        &format!("{}/k3s/v1.31.4%2Bk3s1/k3s", server.url()),
        &[],
        &[],
    )?;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("19"));
    assert!(head.body.is_empty());

    assert_eq!(http::get(&format!("{}/nope", server.url()))?.status, 404);
    assert_eq!(http::get(&format!("{}/k3s", server.url()))?.status, 404);
    assert_eq!(
        http::get(&format!("{}/../etc/passwd", server.url()))?.status,
        400
    );
    assert_eq!(
        http::request("POST", &format!("{}/k3s", server.url()), &[], b"x")?.status,
        405
    );

    // Files added after start are served.
    std::fs::write(dir.path().join("late.txt"), b"late")?;
    assert_eq!(
        http::get(&format!("{}/late.txt", server.url()))?.text(),
        "late"
    );

    assert_eq!(server.downloads("/k3s/v1.31.4+k3s1/k3s"), 1);
    assert_eq!(
        server.requests(),
        vec![
            "/k3s/v1.31.4+k3s1/k3s",
            "/k3s/v1.31.4+k3s1/k3s",
            "/nope",
            "/k3s",
            "/../etc/passwd",
            "/k3s",
            "/late.txt"
        ]
    );

    drop(server);
    assert!(
        !port_is_open(port),
        "artifact server port {port} still open after drop"
    );
    assert!(
        dir.path().join("late.txt").exists(),
        "served dir must be left alone"
    );
    Ok(())
}

#[test]
fn artifact_server_handles_keep_alive_and_large_files() -> Result<()> {
    use std::io::{BufRead, BufReader, Read, Write};
    let dir = tempfile::tempdir()?;
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("big.bin"), &big)?;
    let server = ArtifactServer::serve(dir.path())?;

    let got = http::get(&format!("{}/big.bin", server.url()))?;
    assert!(got.body == big, "large file corrupted");

    // Two requests on one connection.
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", server.port()))?;
    conn.write_all(b"HEAD /big.bin HTTP/1.1\r\nHost: x\r\n\r\nGET /missing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut reader = BufReader::new(conn);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let mut rest = String::new();
    reader.read_to_string(&mut rest)?;
    assert!(rest.contains("Content-Length: 3000000"), "{rest}");
    assert!(rest.contains("HTTP/1.1 404"), "{rest}");

    // Drop with an idle keep-alive connection open must not hang.
    let _idle = std::net::TcpStream::connect(("127.0.0.1", server.port()))?;
    drop(server);
    Ok(())
}

#[test]
fn imds_requires_a_token() -> Result<()> {
    let imds = Imds::start("i-0abc", "eu-west-1", "eu-west-1b")?;
    let port = imds.port();
    let base = imds.endpoint();

    // IMDSv1-style GET without a token: 401.
    assert_eq!(
        http::get(&format!("{base}/latest/meta-data/instance-id"))?.status,
        401
    );
    // Token PUT without the TTL header: 400.
    assert_eq!(
        http::request("PUT", &format!("{base}/latest/api/token"), &[], &[])?.status,
        400
    );

    let token = http::request(
        "PUT",
        &format!("{base}/latest/api/token"),
        &[("X-aws-ec2-metadata-token-ttl-seconds", "21600")],
        &[],
    )?;
    assert_eq!(token.status, 200);
    let token = token.text();
    assert!(!token.is_empty());
    let get = |path: &str, token: &str| {
        http::request(
            "GET",
            &format!("{base}{path}"),
            &[("X-aws-ec2-metadata-token", token)],
            &[],
        )
    };
    let id = get("/latest/meta-data/instance-id", &token)?;
    assert_eq!((id.status, id.text().as_str()), (200, "i-0abc"));
    assert_eq!(
        get("/latest/meta-data/placement/region", &token)?.text(),
        "eu-west-1"
    );
    assert_eq!(
        get("/latest/meta-data/placement/availability-zone", &token)?.text(),
        "eu-west-1b"
    );
    let doc = get("/latest/dynamic/instance-identity/document", &token)?.text();
    for needle in [
        "\"instanceId\" : \"i-0abc\"",
        "\"region\" : \"eu-west-1\"",
        "\"availabilityZone\" : \"eu-west-1b\"",
    ] {
        assert!(doc.contains(needle), "{needle} not in {doc}");
    }
    assert_eq!(
        get("/latest/meta-data/iam/security-credentials/", &token)?.text(),
        "bosun-host"
    );
    assert!(
        get(
            "/latest/meta-data/iam/security-credentials/bosun-host",
            &token
        )?
        .text()
        .contains("\"AccessKeyId\" : \"test\"")
    );
    assert_eq!(get("/latest/meta-data/instance-id", "wrong")?.status, 401);
    assert_eq!(get("/latest/meta-data/nope", &token)?.status, 404);
    assert!(
        imds.requests()
            .contains(&"PUT /latest/api/token".to_string())
    );

    drop(imds);
    assert!(
        !port_is_open(port),
        "imds port {port} still open after drop"
    );
    Ok(())
}

#[test]
fn peers_start_in_parallel_on_distinct_ports() -> Result<()> {
    let handles: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(|| -> Result<(u16, u16)> {
                let s = Sshd::start()?;
                let m = MariaDb::start()?;
                Ok((s.port(), m.port()))
            })
        })
        .collect();
    let mut ports = Vec::new();
    for h in handles {
        let (a, b) = h.join().map_err(|_| anyhow::anyhow!("thread panicked"))??;
        ports.extend([a, b]);
    }
    let mut unique = ports.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ports.len(), "ports reused: {ports:?}");
    Ok(())
}

//! `bosun backups list` and `bosun backups restore` over SSH, end to end: a real OpenSSH sshd
//! on loopback, MariaDB and moto from bosun-harness. The "host" is this machine: its bosund is
//! a wrapper that gives the workspace's bosund the credentials an instance role would (moto's
//! test keys), so S3 and the database are reached from the host side as in production.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use bosun_harness::{MariaDb, Moto};
use serde_json::Value;

mod common;

use common::{SshHost, bosund};

const BUCKET: &str = "backups";
const PREFIX: &str = "backups/mysql/shop/";

fn create_bucket(moto: &Moto) {
    use aws_sdk_s3::config::{Credentials, Region};
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version_latest()
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(moto.endpoint())
        .force_path_style(true)
        .http_client(bosun_aws::https_client())
        .build();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(
        aws_sdk_s3::Client::from_conf(conf)
            .create_bucket()
            .bucket(BUCKET)
            .send(),
    )
    .expect("creating the bucket in moto");
}

fn rows(db: &MariaDb, database: &str) -> String {
    db.exec(&format!(
        "SELECT (SELECT COUNT(*) FROM `{database}`.customers), (SELECT COUNT(*) FROM `{database}`.orders)"
    ))
    .unwrap()
    .trim()
    .to_string()
}

struct Fixture {
    ssh: SshHost,
    db: MariaDb,
    moto: Moto,
}

impl std::ops::Deref for Fixture {
    type Target = SshHost;
    fn deref(&self) -> &SshHost {
        &self.ssh
    }
}

impl Fixture {
    fn new() -> Fixture {
        let ssh = SshHost::start();
        ssh.trust_host();
        let db = MariaDb::start().expect("starting MariaDB");
        db.exec(
            "CREATE DATABASE shop; USE shop;
             CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(64));
             CREATE TABLE orders (id INT PRIMARY KEY, customer INT, cents BIGINT);
             INSERT INTO customers SELECT seq, CONCAT('c', seq) FROM seq_1_to_300;
             INSERT INTO orders SELECT seq, seq % 300 + 1, seq * 7 FROM seq_1_to_20000;",
        )
        .unwrap();
        let moto = Moto::start().expect("starting moto");
        create_bucket(&moto);
        let f = Fixture { ssh, db, moto };
        // The host's bosund: the real one with the credentials an instance role would give.
        let wrapper = f.w("bosund");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexport AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true\nexec {} \"$@\"\n",
                bosund().display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let pw = f.w("db-password");
        std::fs::write(&pw, f.db.password()).unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        f
    }

    /// A backup of `shop` made by `bosund apply` here; its key.
    fn backup(&self) -> String {
        let pb = self.w("backup.toml");
        std::fs::write(
            &pb,
            format!(
                "name = \"backup\"\n[[step]]\nname = \"dump\"\nmysql_backup = {{ host = \"127.0.0.1\", port = {}, user = \"root\", password = \"env:DB_PASSWORD\", databases = [\"shop\"], bucket = \"{BUCKET}\" }}\n",
                self.db.port()
            ),
        )
        .unwrap();
        let out = Command::new(bosund())
            .arg("--state-dir")
            .arg(self.w("state"))
            .arg("apply")
            .arg(&pb)
            .args(["--output", "json"])
            .envs(self.moto.env())
            .env("DB_PASSWORD", self.db.password())
            .env("BOSUN_IMDS_ENDPOINT", "http://127.0.0.1:1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find_map(|v| {
                v["output"]["stdout"]
                    .as_str()
                    .filter(|s| s.ends_with(".sql.zst"))
                    .map(str::to_string)
            })
            .unwrap_or_else(|| panic!("no key in the events: {text}"))
    }

    /// `bosun [--output json] backups SUB --host ... ARGS`.
    fn bosun(&self, json: bool, sub: &str, args: &[&str]) -> Output {
        let host = self.host();
        let key = self.sshd.client_key_path();
        let wrapper = self.w("bosund");
        let endpoint = self.moto.endpoint();
        let mut cmd = self.bosun_command();
        if json {
            cmd.args(["--output", "json"]);
        }
        cmd.args(["backups", sub, "--host", &host, "-i"])
            .arg(&key)
            .arg("--remote-bosund")
            .arg(&wrapper)
            .args(["--bucket", BUCKET, "--endpoint-url", &endpoint])
            .args(args)
            // Nothing of moto's reaches the host through bosun: it must use its own settings.
            .env_remove("AWS_ENDPOINT_URL");
        let out = cmd.output().expect("running bosun");
        eprintln!(
            "bosun backups {sub} {args:?} -> {}\n--- stdout\n{}--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let pw = self.db.password();
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains(&pw)
                && !String::from_utf8_lossy(&out.stderr).contains(&pw),
            "the password was printed"
        );
        out
    }

    fn restore(&self, json: bool, database: &str, key: &str, extra: &[&str]) -> Output {
        let port = self.db.port().to_string();
        let source = format!("file:{}", self.w("db-password").display());
        let mut args = vec![
            "--key",
            key,
            "--db-port",
            &port,
            "--db-user",
            "root",
            "--password-source",
            &source,
            "--database",
            database,
        ];
        args.extend_from_slice(extra);
        self.bosun(json, "restore", &args)
    }
}

#[test]
fn backups_are_listed_and_restored_on_the_host_over_ssh() {
    let f = Fixture::new();
    let key = f.backup();

    // list, JSON: the host's bosund saw the backup with its manifest.
    let out = f.bosun(true, "list", &["--prefix", PREFIX]);
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let listing = &v["hosts"][0]["listing"];
    assert_eq!(listing["backups"].as_array().unwrap().len(), 1, "{v}");
    let b = &listing["backups"][0];
    assert_eq!(b["key"], key.as_str());
    assert_eq!(b["database"], "shop");
    assert_eq!(b["rows"], 20_300);
    assert_eq!(b["verification"], "none");
    assert_eq!(b["sha256"].as_str().unwrap().len(), 64);

    // list, human: the agent's table under the host's name.
    let out = f.bosun(false, "list", &["--prefix", PREFIX]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&key), "{text}");
    assert!(text.contains("database"), "{text}");

    // restore into a new database on the host's server: every row.
    let out = f.restore(true, "shop_copy", &key, &[]);
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["restored"]["database"], "shop_copy", "{v}");
    assert_eq!(rows(&f.db, "shop_copy"), rows(&f.db, "shop"));
    assert_eq!(rows(&f.db, "shop_copy"), "300\t20000");

    // Again: the database exists now, refused without --force (exit 1), untouched.
    f.db.exec("DELETE FROM shop_copy.orders WHERE id > 10000")
        .unwrap();
    let out = f.restore(false, "shop_copy", &key, &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("refusing to overwrite it"), "{text}");
    assert_eq!(rows(&f.db, "shop_copy"), "300\t10000");

    // With --force, replaced.
    let out = f.restore(false, "shop_copy", &key, &["--force"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("into shop_copy"), "{text}");
    assert!(text.contains("replacing it"), "{text}");
    assert_eq!(rows(&f.db, "shop_copy"), "300\t20000");

    // A key that is not a backup: refused with bosund's message.
    let out = f.restore(true, "other", "backups/none.sql.zst", &[]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("has no readable manifest"),
        "{v}"
    );
}

#[test]
fn a_host_without_bosund_is_reported_unreachable() {
    let host = SshHost::start();
    host.trust_host();
    let missing = host.w("no/bosund");
    let out = host
        .bosun_command()
        .args(["--output", "json", "backups", "list", "--host"])
        .arg(host.host())
        .arg("-i")
        .arg(host.sshd.client_key_path())
        .arg("--remote-bosund")
        .arg(&missing)
        .args(["--bucket", BUCKET])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let err = v["hosts"][0]["error"].as_str().unwrap();
    assert!(err.contains("bosund is not installed at"), "{err}");
}

//! Backups end to end through the real `bosund`, against a real MariaDB and a real S3 API
//! (moto): dump → S3 → verify → restore, a dump killed midway, a timeout, a corrupted object,
//! pruning, and the password never showing anywhere bosund writes.

mod common;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;

use bosun_agent::backup::manifest::{Manifest, VerifyRecord};
use bosun_harness::{MariaDb, Moto};
use bosun_model::event::StepStatus;
use common::s3::S3;
use common::{Run, Sandbox};
use sha2::{Digest, Sha256};

const BUCKET: &str = "backups";
const PREFIX: &str = "backups/mysql/shop/";

impl S3 {
    fn json<T: serde::de::DeserializeOwned>(&self, key: &str) -> T {
        serde_json::from_slice(&self.get(key)).unwrap()
    }
}

/// MariaDB with database `shop`: 100,000 orders from the sequence engine, 500 customers, a
/// trigger and routines (so the dump's `--routines --triggers` have something to carry).
/// Made to trip a careless reader of the dump: notes holding `),(`, quotes, backslashes, a
/// newline and a whole `INSERT INTO` line; a procedure whose body line starts with
/// `INSERT INTO `audit` VALUES`, which is not data.
fn shop_db() -> MariaDb {
    let db = MariaDb::start().expect("starting MariaDB");
    db.exec(
        "CREATE DATABASE shop;
         USE shop;
         CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(64) NOT NULL, note TEXT);
         CREATE TABLE orders (id INT PRIMARY KEY, customer INT NOT NULL, item VARCHAR(32) NOT NULL,
                              cents BIGINT NOT NULL, blob_col VARBINARY(16));
         CREATE TABLE audit (n INT);
         INSERT INTO customers SELECT seq, CONCAT('customer ', seq),
           CASE seq % 7 WHEN 0 THEN NULL
                        WHEN 1 THEN CONCAT('x),(y', CHAR(10), 'INSERT INTO `audit` VALUES (9);')
                        ELSE 'it''s \\\\ \"quoted\"' END FROM seq_1_to_500;
         INSERT INTO orders SELECT seq, seq % 500 + 1, CONCAT('item-', seq % 97), seq * 37 % 100000, UNHEX(MD5(seq)) FROM seq_1_to_100000;
         CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW INSERT INTO audit VALUES (NEW.id);
         CREATE FUNCTION double_it(x INT) RETURNS INT DETERMINISTIC RETURN x * 2;
         CREATE PROCEDURE add_audit()\nINSERT INTO `audit` VALUES (1),(2);",
    )
    .expect("loading the shop database");
    db
}

/// Row count and checksum of each table of `shop`'s layout in database `name`, from the server.
fn table_facts(db: &MariaDb, name: &str) -> Vec<(String, String, String)> {
    ["audit", "customers", "orders"]
        .iter()
        .map(|t| {
            let count = db
                .exec(&format!("SELECT COUNT(*) FROM `{name}`.`{t}`"))
                .unwrap();
            let sum = db.exec(&format!("CHECKSUM TABLE `{name}`.`{t}`")).unwrap();
            let sum = sum.trim().split('\t').nth(1).unwrap().to_string();
            (t.to_string(), count.trim().to_string(), sum)
        })
        .collect()
}

fn bosund_env(sb: &Sandbox, moto: &Moto, db: &MariaDb, playbook: &Path, args: &[&str]) -> Run {
    let mut cmd = sb.bosund();
    cmd.arg("apply")
        .arg(playbook)
        .args(["--output", "json"])
        .args(args)
        .envs(moto.env())
        .env("DB_PASSWORD", db.password())
        .env("BOSUN_LOG", "info");
    Run::from_command(cmd, None)
}

/// A playbook backing up `shop` (with extra `mysql_backup` arguments) and maybe verifying it.
fn playbook(sb: &Sandbox, db: &MariaDb, extra: &str, verify: bool) -> std::path::PathBuf {
    let conn = format!(
        r#"host = "127.0.0.1", port = {}, user = "root", password = "env:DB_PASSWORD""#,
        db.port()
    );
    let mut text = format!(
        r#"name = "backup"
[[step]]
name = "dump"
mysql_backup = {{ {conn}, databases = ["shop"], bucket = "{BUCKET}"{extra} }}
"#
    );
    if verify {
        text.push_str(&format!(
            r#"
[[step]]
name = "verify"
backup_verify = {{ {conn}, bucket = "{BUCKET}", prefix = "{PREFIX}" }}
"#
        ));
    }
    sb.playbook(&text)
}

/// Everything bosund wrote: its events, stderr, and every file of its journal.
fn everything_written(sb: &Sandbox, runs: &[&Run]) -> Vec<u8> {
    let mut all = Vec::new();
    for run in runs {
        all.extend(serde_json::to_vec(&run.events).unwrap());
        all.extend(run.stderr.as_bytes());
    }
    for entry in walk(&sb.state_dir()) {
        all.extend(std::fs::read(entry).unwrap());
    }
    all
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn scratch_databases(db: &MariaDb) -> String {
    db.exec("SHOW DATABASES LIKE 'bosun_verify%'").unwrap()
}

fn dump_script(sb: &Sandbox, name: &str, body: &str) -> String {
    let path = sb.write(name, &format!("#!/bin/sh\n{body}\n"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

#[test]
fn round_trip_dump_upload_verify_restore_keeps_every_row_and_checksum() {
    let db = shop_db();
    let moto = Moto::start().unwrap();
    let s3 = S3::new(&moto, BUCKET);
    let sb = Sandbox::new();
    let pb = playbook(&sb, &db, "", true);

    let check = bosund_env(&sb, &moto, &db, &pb, &["--check"]);
    check.assert_success();
    assert_eq!(check.step("dump").status, StepStatus::Changed);
    let msg = check.step("dump").message.clone().unwrap();
    assert!(msg.contains("would dump shop from 127.0.0.1:"), "{msg}");
    assert!(s3.keys().is_empty(), "--check wrote to S3: {:?}", s3.keys());

    let run = bosund_env(&sb, &moto, &db, &pb, &[]);
    run.assert_success();
    assert_eq!(run.step("dump").status, StepStatus::Changed);
    assert_eq!(run.step("verify").status, StepStatus::Changed);

    let keys = s3.keys();
    let object = keys
        .iter()
        .find(|k| k.ends_with(".sql.zst"))
        .expect("a backup object")
        .clone();
    assert!(object.starts_with(PREFIX), "{object}");
    assert_eq!(
        run.step("dump").output.as_ref().unwrap().stdout,
        object,
        "register gets the key"
    );
    let mut expected_keys = vec![
        object.clone(),
        format!("{object}.manifest.json"),
        format!("{object}.verified.json"),
    ];
    expected_keys.sort();
    assert_eq!(keys, expected_keys);
    assert!(s3.open_uploads().is_empty());

    // The manifest describes the object and the source.
    let manifest: Manifest = s3.json(&format!("{object}.manifest.json"));
    let bytes = s3.get(&object);
    assert_eq!(manifest.size, bytes.len() as u64);
    assert_eq!(manifest.sha256, hex::encode(Sha256::digest(&bytes)));
    assert_eq!(manifest.database, "shop");
    assert!(
        manifest.server_version.contains("MariaDB"),
        "{}",
        manifest.server_version
    );
    assert!(!manifest.tool_version.is_empty());
    // Rows as the server counts them; a digest per table (32 hex digits) that the verify step
    // compared with the restored tables.
    let source = table_facts(&db, "shop");
    let in_manifest: Vec<(String, String)> = manifest
        .tables
        .iter()
        .map(|t| (t.name.clone(), t.rows.to_string()))
        .collect();
    let counted: Vec<(String, String)> = source
        .iter()
        .map(|(t, n, _)| (t.clone(), n.clone()))
        .collect();
    assert_eq!(in_manifest, counted, "the manifest's row counts");
    assert_eq!(manifest.format, 2);
    for t in &manifest.tables {
        let d = t.digest.as_deref().unwrap_or_default();
        assert!(
            d.len() == 32 && d.bytes().all(|b| b.is_ascii_hexdigit()),
            "{t:?}"
        );
    }
    assert_ne!(manifest.tables[1].digest, manifest.tables[2].digest);
    assert_eq!(source[2].1, "100000");

    let record: VerifyRecord = s3.json(&format!("{object}.verified.json"));
    assert!(record.ok, "{record:?}");
    assert_eq!(record.tables, 3);
    assert_eq!(record.sha256, manifest.sha256);
    assert_eq!(
        scratch_databases(&db),
        "",
        "the scratch database was left behind"
    );

    // Restore by hand, independently of bosun: same rows, same checksums, and the routine
    // and trigger came along.
    let sql = zstd::stream::decode_all(&bytes[..]).unwrap();
    assert_eq!(manifest.uncompressed_size, sql.len() as u64);
    db.exec("CREATE DATABASE restored").unwrap();
    let mut client = db.client_command();
    client
        .args(["--database=restored"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = client.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &sql));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    writer.join().unwrap().unwrap();
    assert!(child.wait().unwrap().success(), "restore failed: {err}");
    assert_eq!(table_facts(&db, "restored"), source);
    assert_eq!(
        db.exec("SELECT restored.double_it(21)").unwrap().trim(),
        "42"
    );
    let triggers = db
        .exec("SELECT trigger_name FROM information_schema.triggers WHERE trigger_schema = 'restored'")
        .unwrap();
    assert_eq!(triggers.trim(), "orders_audit");

    let written = everything_written(&sb, &[&check, &run]);
    assert!(
        !contains(&written, &db.password()),
        "the password was written somewhere"
    );
}

#[test]
fn a_dump_killed_midway_leaves_no_object_and_no_open_upload() {
    let db = shop_db();
    let moto = Moto::start().unwrap();
    let s3 = S3::new(&moto, BUCKET);
    let sb = Sandbox::new();
    // 20 MB of incompressible output (several 5 MiB parts, so parts were uploaded),
    // then the dump dies by SIGKILL.
    let dump = dump_script(
        &sb,
        "dump.sh",
        r#"case "$1" in --version) echo "fake-dump 1.0"; exit 0;; esac
head -c 20000000 /dev/urandom
kill -9 $$"#,
    );
    let pb = playbook(&sb, &db, &format!(r#", dump_command = ["{dump}"]"#), false);
    let run = bosund_env(&sb, &moto, &db, &pb, &[]);
    assert_eq!(run.step("dump").status, StepStatus::Failed);
    let msg = run.step("dump").message.clone().unwrap();
    assert!(msg.contains("exited with code -9"), "{msg}");
    assert!(msg.contains("nothing was stored"), "{msg}");
    assert_eq!(s3.keys(), Vec::<String>::new());
    assert_eq!(s3.open_uploads(), Vec::<String>::new());
}

#[test]
fn a_timed_out_dump_is_aborted_before_bosund_exits() {
    let db = shop_db();
    let moto = Moto::start().unwrap();
    let s3 = S3::new(&moto, BUCKET);
    let sb = Sandbox::new();
    let marker = sb.path("dump-started");
    // Output a part's worth, then hang: only the step's timeout ends it.
    let dump = dump_script(
        &sb,
        "dump.sh",
        &format!(
            r#"case "$1" in --version) echo "fake-dump 1.0"; exit 0;; esac
touch {}
head -c 10000000 /dev/urandom
exec sleep 600"#,
            marker.display()
        ),
    );
    let conn = format!(
        r#"host = "127.0.0.1", port = {}, user = "root", password = "env:DB_PASSWORD""#,
        db.port()
    );
    let pb = sb.playbook(&format!(
        r#"name = "backup"
[[step]]
name = "dump"
timeout = "4s"
mysql_backup = {{ {conn}, databases = ["shop"], bucket = "{BUCKET}", dump_command = ["{dump}"] }}
"#
    ));
    let run = bosund_env(&sb, &moto, &db, &pb, &[]);
    assert!(marker.exists(), "the dump never started");
    assert_eq!(run.step("dump").status, StepStatus::Failed);
    let msg = run.step("dump").message.clone().unwrap();
    assert!(msg.contains("timed out"), "{msg}");
    assert!(
        run.elapsed.as_secs() < 60,
        "bosund waited for the hung dump"
    );
    assert!(
        run.stderr.contains("aborted the unfinished upload"),
        "the cancellation guard did not run: {}",
        run.stderr
    );
    assert_eq!(s3.keys(), Vec::<String>::new());
    assert_eq!(
        s3.open_uploads(),
        Vec::<String>::new(),
        "the upload was left open; bosund said: {}",
        run.stderr
    );
}

#[test]
fn a_corrupted_object_fails_verify_with_the_sha256_mismatch() {
    let db = shop_db();
    let moto = Moto::start().unwrap();
    let s3 = S3::new(&moto, BUCKET);
    let sb = Sandbox::new();
    let pb = playbook(&sb, &db, "", false);
    bosund_env(&sb, &moto, &db, &pb, &[]).assert_success();
    let object = s3
        .keys()
        .into_iter()
        .find(|k| k.ends_with(".sql.zst"))
        .unwrap();
    let manifest: Manifest = s3.json(&format!("{object}.manifest.json"));
    let mut bytes = s3.get(&object);
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    let damaged = hex::encode(Sha256::digest(&bytes));
    s3.put(&object, bytes);
    let verify = verify_playbook(&sb, &db, &object);
    let run = bosund_env(&sb, &moto, &db, &verify, &[]);
    assert_eq!(run.step("verify").status, StepStatus::Failed);
    let msg = run.step("verify").message.clone().unwrap();
    let expected = format!(
        "sha256 mismatch: manifest says {}, object is {damaged}",
        manifest.sha256
    );
    assert!(msg.contains(&expected), "{msg}");
    let record: VerifyRecord = s3.json(&format!("{object}.verify-failed.json"));
    assert!(!record.ok);
    assert_eq!(record.problems[0], expected);
    assert!(!s3.keys().iter().any(|k| k.ends_with(".verified.json")));
    assert_eq!(
        scratch_databases(&db),
        "",
        "the scratch database was left behind"
    );
}

fn verify_playbook(sb: &Sandbox, db: &MariaDb, object: &str) -> std::path::PathBuf {
    let conn = format!(
        r#"host = "127.0.0.1", port = {}, user = "root", password = "env:DB_PASSWORD""#,
        db.port()
    );
    sb.write(
        "verify.toml",
        &format!(
            r#"name = "verify"
[[step]]
name = "verify"
backup_verify = {{ {conn}, bucket = "{BUCKET}", key = "{object}" }}
"#
        ),
    )
}

/// Verify compares what was restored with the manifest table by table: a digest that does not
/// match (the object itself intact) fails naming the table; a manifest of the first layout
/// (`CHECKSUM TABLE` values, no digests) is still verified, by the server's checksums.
#[test]
fn verify_names_the_table_whose_content_differs_and_reads_old_manifests() {
    let db = shop_db();
    let moto = Moto::start().unwrap();
    let s3 = S3::new(&moto, BUCKET);
    let sb = Sandbox::new();
    bosund_env(&sb, &moto, &db, &playbook(&sb, &db, "", false), &[]).assert_success();
    let object = s3
        .keys()
        .into_iter()
        .find(|k| k.ends_with(".sql.zst"))
        .unwrap();
    let manifest_key = format!("{object}.manifest.json");
    let original: serde_json::Value = s3.json(&manifest_key);
    let verify = verify_playbook(&sb, &db, &object);

    let mut tampered = original.clone();
    tampered["tables"][1]["digest"] = "0".repeat(32).into();
    s3.put(&manifest_key, serde_json::to_vec(&tampered).unwrap());
    let run = bosund_env(&sb, &moto, &db, &verify, &[]);
    assert_eq!(run.step("verify").status, StepStatus::Failed);
    let msg = run.step("verify").message.clone().unwrap();
    let real = original["tables"][1]["digest"].as_str().unwrap();
    assert!(
        msg.contains(&format!(
            "table customers: content digest {} in the manifest, {real} restored",
            "0".repeat(32)
        )),
        "{msg}"
    );
    assert!(!msg.contains("table orders"), "{msg}");
    assert_eq!(scratch_databases(&db), "");

    // The first layout: format 1, `checksum` from CHECKSUM TABLE on the source.
    let facts = table_facts(&db, "shop");
    let mut old = original.clone();
    old["format"] = 1.into();
    for (t, (name, _, sum)) in old["tables"].as_array_mut().unwrap().iter_mut().zip(&facts) {
        assert_eq!(t["name"], name.as_str());
        let t = t.as_object_mut().unwrap();
        t.remove("digest");
        t.insert("checksum".into(), sum.parse::<u64>().unwrap().into());
    }
    s3.put(&manifest_key, serde_json::to_vec(&old).unwrap());
    let run = bosund_env(&sb, &moto, &db, &verify, &[]);
    assert_eq!(
        run.step("verify").status,
        StepStatus::Changed,
        "{}",
        run.stderr
    );
    let record: VerifyRecord = s3.json(&format!("{object}.verified.json"));
    assert!(record.ok && record.tables == 3, "{record:?}");

    old["tables"][2]["checksum"] = 1.into();
    s3.put(&manifest_key, serde_json::to_vec(&old).unwrap());
    let run = bosund_env(&sb, &moto, &db, &verify, &[]);
    assert_eq!(run.step("verify").status, StepStatus::Failed);
    let msg = run.step("verify").message.clone().unwrap();
    assert!(
        msg.contains(&format!(
            "table orders: checksum 1 in the manifest, {} restored",
            facts[2].2
        )),
        "{msg}"
    );
}

#[test]
fn a_tool_that_prints_the_password_has_it_redacted_everywhere() {
    let db = shop_db();
    let moto = Moto::start().unwrap();
    let s3 = S3::new(&moto, BUCKET);
    let sb = Sandbox::new();
    let dump = dump_script(
        &sb,
        "dump.sh",
        r#"case "$1" in --version) echo "fake-dump 1.0"; exit 0;; esac
echo "access denied for password $MYSQL_PWD" >&2
exit 2"#,
    );
    let pb = playbook(&sb, &db, &format!(r#", dump_command = ["{dump}"]"#), false);
    let run = bosund_env(&sb, &moto, &db, &pb, &[]);
    assert_eq!(run.step("dump").status, StepStatus::Failed);
    let msg = run.step("dump").message.clone().unwrap();
    assert!(msg.contains("access denied for password ********"), "{msg}");
    let written = everything_written(&sb, &[&run]);
    assert!(
        !contains(&written, &db.password()),
        "the password was written somewhere"
    );
    assert!(s3.open_uploads().is_empty());
}

#[test]
fn prune_keeps_the_policy_set_and_the_newest_verified_then_changes_nothing() {
    let moto = Moto::start().unwrap();
    let s3 = S3::new(&moto, BUCKET);
    let sb = Sandbox::new();
    // Daily backups for 10 days (Jan 1..10, 03:00), an extra one on Jan 10; only Jan 2 verified;
    // an unrelated object without manifest.
    let mut all = Vec::new();
    for day in 1..=10 {
        all.push(format!("{PREFIX}shop-202601{day:02}T030000Z.sql.zst"));
    }
    all.push(format!("{PREFIX}shop-20260110T150000Z.sql.zst"));
    for k in &all {
        s3.put(k, b"x".to_vec());
        s3.put(&format!("{k}.manifest.json"), b"{}".to_vec());
    }
    let verified = format!("{PREFIX}shop-20260102T030000Z.sql.zst");
    s3.put(&format!("{verified}.verified.json"), b"{}".to_vec());
    s3.put(&format!("{PREFIX}notes.txt"), b"mine".to_vec());

    let pb = sb.playbook(&format!(
        r#"name = "prune"
[[step]]
name = "prune"
backup_prune = {{ bucket = "{BUCKET}", prefix = "{PREFIX}", keep_last = 2, daily = 3 }}
"#
    ));
    let apply = |args: &[&str]| {
        let mut cmd = sb.bosund();
        cmd.arg("apply")
            .arg(&pb)
            .args(["--output", "json"])
            .args(args)
            .envs(moto.env());
        Run::from_command(cmd, None)
    };
    let before = s3.keys();
    let check = apply(&["--check"]);
    check.assert_success();
    assert_eq!(check.step("prune").status, StepStatus::Changed);
    let msg = check.step("prune").message.clone().unwrap();
    assert!(msg.contains("would delete 6 of 11 backups"), "{msg}");
    assert!(msg.contains("shop-20260101T030000Z"), "{msg}");
    assert_eq!(s3.keys(), before, "--check deleted something");

    apply(&[]).assert_success();
    // keep_last 2: Jan 10 15:00 and 03:00; daily 3: Jan 10 (15:00), 9, 8; newest verified: Jan 2.
    let mut expected: Vec<String> = [
        "shop-20260110T150000Z",
        "shop-20260110T030000Z",
        "shop-20260109T030000Z",
        "shop-20260108T030000Z",
        "shop-20260102T030000Z",
    ]
    .iter()
    .flat_map(|k| {
        let k = format!("{PREFIX}{k}.sql.zst");
        [k.clone(), format!("{k}.manifest.json")]
    })
    .collect();
    expected.push(format!("{verified}.verified.json"));
    expected.push(format!("{PREFIX}notes.txt"));
    expected.sort();
    assert_eq!(s3.keys(), expected);

    let again = apply(&[]);
    again.assert_success();
    assert_eq!(again.step("prune").status, StepStatus::Ok);
    assert_eq!(s3.keys(), expected);
}

//! `bosund backups list` and `bosund backups restore` through the real binary, against a real
//! MariaDB and a real S3 API (moto): the listing shows what `mysql_backup` made, a restore
//! round-trips every row, an existing database is refused without `--force`, and a damaged
//! object is refused without leaving anything half-restored.

mod common;

use std::process::Output;

use bosun_agent::backup::manifest::Manifest;
use bosun_harness::{MariaDb, Moto};
use bosun_model::backup::report::{Listing, Restored, Verification};
use bosun_model::event::StepStatus;
use common::s3::S3;
use common::{Run, Sandbox};
use serde_json::Value;
use sha2::{Digest, Sha256};

const BUCKET: &str = "backups";
const PREFIX: &str = "backups/mysql/shop/";

/// MariaDB with `shop`: 100,000 orders, 500 customers, a trigger and a routine.
fn shop_db() -> MariaDb {
    let db = MariaDb::start().expect("starting MariaDB");
    db.exec(
        "CREATE DATABASE shop;
         USE shop;
         CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(64) NOT NULL);
         CREATE TABLE orders (id INT PRIMARY KEY, customer INT NOT NULL, cents BIGINT NOT NULL);
         CREATE TABLE audit (n INT);
         INSERT INTO customers SELECT seq, CONCAT('customer ', seq) FROM seq_1_to_500;
         INSERT INTO orders SELECT seq, seq % 500 + 1, seq * 37 % 100000 FROM seq_1_to_100000;
         CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW INSERT INTO audit VALUES (NEW.id);
         CREATE FUNCTION double_it(x INT) RETURNS INT DETERMINISTIC RETURN x * 2;",
    )
    .expect("loading the shop database");
    db
}

/// (table, rows, checksum) of `shop`'s tables in database `name`, from the server.
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

/// Scratch databases of `--force` rehearsals still on the server.
fn rehearsals(db: &MariaDb) -> String {
    db.exec("SHOW DATABASES LIKE 'bosun_restore%'").unwrap()
}

fn database_exists(db: &MariaDb, name: &str) -> bool {
    !db.exec(&format!("SHOW DATABASES LIKE '{name}'"))
        .unwrap()
        .trim()
        .is_empty()
}

struct Fixture {
    db: MariaDb,
    moto: Moto,
    s3: S3,
    sb: Sandbox,
}

impl Fixture {
    fn new() -> Fixture {
        let db = shop_db();
        let moto = Moto::start().unwrap();
        let s3 = S3::new(&moto, BUCKET);
        Fixture {
            db,
            moto,
            s3,
            sb: Sandbox::new(),
        }
    }

    /// `mysql_backup` of `shop` to `key` (a template), and `backup_verify` when asked, through
    /// `bosund apply`.
    fn run_backup(&self, key: &str, verify: bool) -> Run {
        let conn = format!(
            r#"host = "127.0.0.1", port = {}, user = "root", password = "env:DB_PASSWORD""#,
            self.db.port()
        );
        let mut text = format!(
            "name = \"backup\"\n[[step]]\nname = \"dump\"\nmysql_backup = {{ {conn}, databases = [\"shop\"], bucket = \"{BUCKET}\", key = \"{key}\" }}\n"
        );
        if verify {
            text.push_str(&format!(
                "[[step]]\nname = \"verify\"\nbackup_verify = {{ {conn}, bucket = \"{BUCKET}\", prefix = \"{PREFIX}\" }}\n"
            ));
        }
        let pb = self.sb.playbook(&text);
        let mut cmd = self.sb.bosund();
        cmd.arg("apply")
            .arg(&pb)
            .args(["--output", "json"])
            .envs(self.moto.env())
            .env("DB_PASSWORD", self.db.password());
        Run::from_command(cmd, None)
    }

    /// A successful [`Fixture::run_backup`] to `{PREFIX}{db}-{timestamp}{key_end}`; the key.
    /// Two backups may start in the same second, and a backup is never overwritten, so they
    /// take different `key_end`s.
    fn backup(&self, verify: bool, key_end: &str) -> String {
        let run = self.run_backup(&format!("{PREFIX}{{db}}-{{timestamp}}{key_end}"), verify);
        run.assert_success();
        run.step("dump").output.as_ref().unwrap().stdout.clone()
    }

    fn backups(&self, args: &[&str]) -> Output {
        let out = self
            .sb
            .bosund()
            .arg("backups")
            .args(args)
            .envs(self.moto.env())
            .env("DB_PASSWORD", self.db.password())
            .output()
            .expect("running bosund");
        eprintln!(
            "bosund backups {args:?} -> {}\n--- stdout\n{}--- stderr\n{}",
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

    fn restore(&self, key: &str, database: &str, extra: &[&str]) -> Output {
        let port = self.db.port().to_string();
        let mut args = vec![
            "restore",
            "--bucket",
            BUCKET,
            "--key",
            key,
            "--port",
            &port,
            "--user",
            "root",
            "--password-source",
            "env:DB_PASSWORD",
            "--database",
            database,
            "--output",
            "json",
        ];
        args.extend_from_slice(extra);
        self.backups(&args)
    }
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("bosund backups printed one JSON document")
}

fn error_of(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "expected a refusal (exit 1)");
    json(out)["error"]
        .as_str()
        .expect("an error message")
        .to_string()
}

#[test]
fn list_shows_the_backup_and_restore_round_trips_refusing_an_existing_database_without_force() {
    let f = Fixture::new();
    // Both may start in the same second: listed by time, then key (`.` before `_`).
    let verified = f.backup(true, ".sql.zst");
    let unverified = f.backup(false, "_2.sql.zst");
    assert_ne!(verified, unverified);
    f.s3.put(&format!("{PREFIX}notes.txt"), b"not a backup".to_vec());

    // list (JSON): both backups, oldest first, with what their manifests say.
    let out = f.backups(&[
        "list", "--bucket", BUCKET, "--prefix", PREFIX, "--output", "json",
    ]);
    assert!(out.status.success());
    let listing: Listing = serde_json::from_slice(&out.stdout).unwrap();
    let keys: Vec<&str> = listing.backups.iter().map(|b| b.key.as_str()).collect();
    assert_eq!(keys, [verified.as_str(), unverified.as_str()]);
    assert_eq!(listing.others, 1);
    let object = f.s3.get(&verified);
    let manifest: Manifest =
        serde_json::from_slice(&f.s3.get(&format!("{verified}.manifest.json"))).unwrap();
    let first = &listing.backups[0];
    assert_eq!(first.database, "shop");
    assert_eq!(first.size, object.len() as u64);
    assert_eq!(first.sha256, hex::encode(Sha256::digest(&object)));
    assert_eq!(first.sha256, manifest.sha256);
    assert_eq!(first.rows, 100_500);
    assert_eq!(first.verification, Verification::Verified);
    assert!(first.verified_at.is_some());
    assert_eq!(listing.backups[1].verification, Verification::None);

    // list (human): a line per backup.
    let out = f.backups(&["list", "--bucket", BUCKET, "--prefix", PREFIX]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text.lines().find(|l| l.ends_with(&verified)).expect(&text);
    assert!(line.contains(" shop "), "{line}");
    assert!(line.contains(&manifest.sha256[..16]), "{line}");
    assert!(line.contains(" yes "), "{line}");
    assert!(text.contains("1 other objects"), "{text}");

    // restore into a new database: every row and checksum, the trigger and routine too.
    let source = table_facts(&f.db, "shop");
    let out = f.restore(&verified, "shop_copy", &[]);
    assert!(out.status.success());
    let restored: Restored = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(restored.sha256, manifest.sha256);
    assert_eq!(restored.tables, manifest.tables);
    assert!(!restored.replaced);
    assert_eq!(table_facts(&f.db, "shop_copy"), source);
    assert_eq!(
        f.db.exec("SELECT shop_copy.double_it(21)").unwrap().trim(),
        "42"
    );

    // An existing, non-empty database is refused without --force and left as it was.
    f.db.exec("INSERT INTO shop_copy.customers VALUES (9999, 'added after restore')")
        .unwrap();
    let changed = table_facts(&f.db, "shop_copy");
    let err = error_of(&f.restore(&verified, "shop_copy", &[]));
    assert!(
        err.contains("database shop_copy on 127.0.0.1:")
            && err.contains("refusing to overwrite it")
            && err.contains("--force"),
        "{err}"
    );
    assert_eq!(table_facts(&f.db, "shop_copy"), changed);

    // With --force it is replaced by the backup's content; the rehearsal's scratch database
    // is gone afterwards.
    let out = f.restore(&verified, "shop_copy", &["--force"]);
    assert!(out.status.success());
    assert!(json(&out)["replaced"].as_bool().unwrap());
    assert_eq!(table_facts(&f.db, "shop_copy"), source);
    assert_eq!(rehearsals(&f.db), "");

    // An existing but empty database needs no --force.
    f.db.exec("CREATE DATABASE empty_one").unwrap();
    let out = f.restore(&unverified, "empty_one", &[]);
    assert!(out.status.success());
    assert_eq!(table_facts(&f.db, "empty_one"), source);
}

/// A backup never overwrites an object: a key that already exists fails the dump step, and the
/// object stays as it was.
#[test]
fn a_backup_never_overwrites_an_existing_object() {
    let f = Fixture::new();
    let key = format!("{PREFIX}fixed.sql.zst");
    f.s3.put(&key, b"an older backup".to_vec());
    let run = f.run_backup(&key, false);
    assert_eq!(run.code, 1);
    let msg = run.step("dump").message.clone().unwrap_or_default();
    assert!(
        msg.contains(&format!("s3://{BUCKET}/{key} already exists"))
            && msg.contains("never overwritten"),
        "{msg}"
    );
    assert_eq!(f.s3.get(&key), b"an older backup");
}

#[test]
fn a_damaged_object_is_refused_and_leaves_nothing_half_restored() {
    let f = Fixture::new();
    let key = f.backup(false, ".sql.zst");
    let manifest: Manifest =
        serde_json::from_slice(&f.s3.get(&format!("{key}.manifest.json"))).unwrap();
    let mut bytes = f.s3.get(&key);
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    let damaged = hex::encode(Sha256::digest(&bytes));
    f.s3.put(&key, bytes);

    // Into a new database: restored as it streamed, then found damaged and dropped.
    let err = error_of(&f.restore(&key, "fresh", &[]));
    assert!(
        err.contains(&format!(
            "sha256 mismatch: manifest says {}, object is {damaged}",
            manifest.sha256
        )),
        "{err}"
    );
    assert!(err.contains("database fresh was dropped"), "{err}");
    assert!(
        !database_exists(&f.db, "fresh"),
        "a half-restored database was left"
    );

    // Over an existing database with --force: refused before the old data is touched.
    let before = table_facts(&f.db, "shop");
    let err = error_of(&f.restore(&key, "shop", &["--force"]));
    assert!(err.contains("sha256 mismatch"), "{err}");
    assert!(err.contains("database shop was not touched"), "{err}");
    assert_eq!(table_facts(&f.db, "shop"), before);
    assert_eq!(rehearsals(&f.db), "");

    // An intact object whose SQL the server refuses half-way (its manifest matching it):
    // found in the rehearsal, so --force leaves the old database as it was.
    let good = f.backup(false, "_good.sql.zst");
    let mut sql = zstd::stream::decode_all(&f.s3.get(&good)[..]).unwrap();
    sql.extend_from_slice(b"\nINSERT INTO no_such_table VALUES (1);\n");
    let object = zstd::stream::encode_all(&sql[..], 3).unwrap();
    let mut m: Manifest =
        serde_json::from_slice(&f.s3.get(&format!("{good}.manifest.json"))).unwrap();
    (m.size, m.uncompressed_size) = (object.len() as u64, sql.len() as u64);
    m.sha256 = hex::encode(Sha256::digest(&object));
    f.s3.put(&good, object);
    f.s3.put(
        &format!("{good}.manifest.json"),
        serde_json::to_vec(&m).unwrap(),
    );
    let err = error_of(&f.restore(&good, "shop", &["--force"]));
    assert!(
        err.contains("failed in a rehearsal") && err.contains("no_such_table"),
        "{err}"
    );
    assert!(err.contains("database shop was not touched"), "{err}");
    assert_eq!(table_facts(&f.db, "shop"), before);
    assert_eq!(rehearsals(&f.db), "");

    // Bad input is said before anything is fetched, and creates nothing.
    let out = f.backups(&[
        "restore",
        "--bucket",
        BUCKET,
        "--key",
        &key,
        "--user",
        "root",
        "--password-source",
        "s3cret",
        "--database",
        "mysql",
        "--output",
        "json",
    ]);
    let err = error_of(&out);
    assert!(err.contains("--password-source must be"), "{err}");
    assert!(
        !err.contains("s3cret"),
        "the would-be password was echoed: {err}"
    );
    assert!(err.contains("mysql is a system schema"), "{err}");
    let missing = error_of(&f.restore("backups/mysql/shop/nope.sql.zst", "other", &[]));
    assert!(missing.contains("has no readable manifest"), "{missing}");
    assert!(!database_exists(&f.db, "other"));
}

/// Every file under `dir` (the journal and its WAL), as bytes.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

/// A backup whose SQL the server refuses in the middle of a customers row (its manifest
/// matching the object, so it gets as far as the client): verify and restore fail with a
/// message of a few KiB holding the client's `ERROR` line, and no row value appears in the
/// message, the events, bosund's stderr or any file of the journal. `register` still sees
/// the client's whole stderr, and `no_log` keeps it from `register` too.
#[test]
fn a_backup_the_server_refuses_fails_with_the_error_line_and_no_row_value() {
    let f = Fixture::new();
    let good = f.backup(false, ".sql.zst");
    let sql = String::from_utf8(zstd::stream::decode_all(&f.s3.get(&good)[..]).unwrap()).unwrap();
    let bad_sql = sql.replacen("'customer 250')", "'customer 250' garbage)", 1);
    assert_ne!(bad_sql, sql, "the dump has no row 250 to damage");
    let object = zstd::stream::encode_all(bad_sql.as_bytes(), 3).unwrap();
    let mut m: Manifest =
        serde_json::from_slice(&f.s3.get(&format!("{good}.manifest.json"))).unwrap();
    (m.size, m.uncompressed_size) = (object.len() as u64, bad_sql.len() as u64);
    m.sha256 = hex::encode(Sha256::digest(&object));
    f.s3.put(&good, object);
    f.s3.put(
        &format!("{good}.manifest.json"),
        serde_json::to_vec(&m).unwrap(),
    );
    // Row values of `customers` that sit right after the damage, where the server's
    // "near '...'" quotes from.
    let row_values = ["customer 25", "customer 26", "garbage"];
    let leaks = |what: &str, text: &str| {
        for v in row_values {
            assert!(
                !text.contains(v),
                "{what} holds the row value {v:?}: {text}"
            );
        }
    };

    let conn = format!(
        r#"host = "127.0.0.1", port = {}, user = "root", password = "env:DB_PASSWORD""#,
        f.db.port()
    );
    let verify = |extra: &str| {
        format!(
            "[[step]]\nname = \"verify\"\nbackup_verify = {{ {conn}, bucket = \"{BUCKET}\", key = \"{good}\" }}\n{extra}\n"
        )
    };
    let text = format!(
        "name = \"verify\"\n{}{}{}{}",
        verify("register = \"seen\"\nfailed_when = \"'ERROR 1064' not in result.stderr\""),
        verify("register = \"hidden\"\nno_log = true\nfailed_when = false")
            .replace("\"verify\"", "\"quiet\""),
        "[[step]]\nname = \"sizes\"\ncommand = { run = \"echo {{ seen.stderr | length }} {{ 'customer 251' in seen.stderr }} {{ hidden.stderr | length }}\" }\n",
        verify("").replace("\"verify\"", "\"strict\""),
    );
    let pb = f.sb.playbook(&text);
    let mut cmd = f.sb.bosund();
    cmd.arg("apply")
        .arg(&pb)
        .args(["--output", "json"])
        .envs(f.moto.env())
        .env("DB_PASSWORD", f.db.password());
    let run = Run::from_command(cmd, None);

    // failed_when judged the client's stderr: the expected failure was accepted.
    assert_eq!(
        run.step("verify").status,
        StepStatus::Ok,
        "{:#?}",
        run.step("verify")
    );
    let sizes = run
        .step("sizes")
        .output
        .as_ref()
        .unwrap()
        .stdout
        .trim()
        .to_string();
    let [len, has_row, hidden_len] = sizes.split(' ').collect::<Vec<_>>()[..] else {
        panic!("{sizes}");
    };
    assert_eq!(
        has_row, "true",
        "register did not get the whole stderr: {sizes}"
    );
    assert!(len.parse::<usize>().unwrap() > 0);
    assert_eq!(hidden_len, "0", "a no_log step's output reached register");
    assert_eq!(run.step("quiet").status, StepStatus::Ok);
    let strict = run.step("strict");
    assert_eq!(strict.status, StepStatus::Failed);
    let msg = strict.message.clone().unwrap();
    assert!(msg.len() <= 4096, "{} bytes: {msg}", msg.len());
    assert!(
        msg.contains("ERROR 1064 (42000) at line") && msg.contains("near '["),
        "{msg}"
    );
    leaks("the step's message", &msg);
    for e in &run.events {
        leaks("an event", &serde_json::to_string(e).unwrap());
    }
    leaks("bosund's stderr", &run.stderr);
    for (path, bytes) in files_under(&f.sb.state_dir()) {
        let text = String::from_utf8_lossy(&bytes);
        leaks(&path.display().to_string(), &text);
    }
    let record: serde_json::Value =
        serde_json::from_slice(&f.s3.get(&format!("{good}.verify-failed.json"))).unwrap();
    leaks("the verify record", &record.to_string());

    // `bosund backups restore` says the same, and drops what it half-restored.
    let err = error_of(&f.restore(&good, "fresh", &[]));
    assert!(err.len() <= 4096, "{} bytes: {err}", err.len());
    assert!(err.contains("ERROR 1064 (42000) at line"), "{err}");
    leaks("the restore error", &err);
    assert!(!database_exists(&f.db, "fresh"));
}

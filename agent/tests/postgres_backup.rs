//! `postgres_backup` and `backup_verify` (`engine = "postgres"`) end to end through the real
//! `bosund`, against a real PostgreSQL (Debian's packages, a throwaway cluster on a private
//! socket directory: `bosun_harness::Postgres`) and a real S3 API (moto): awkward data round
//! trip, a verify that notices a changed table, a dump killed midway.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use bosun_agent::backup::manifest::{Manifest, VerifyRecord};
use bosun_harness::{Moto, Postgres};
use bosun_model::event::StepStatus;
use common::s3::S3;
use common::{Run, Sandbox};

const BUCKET: &str = "backups";
const PREFIX: &str = "backups/pg/shop/";

/// Database `shop` with what trips a careless dump reader or restore: unicode (combining marks,
/// CJK, an emoji), text holding tabs, newlines, backslashes and a line `\.`, NULLs, bytea with
/// NUL and 0xff bytes, a 6 MB text value, a quoted table name holding ` (`, an empty table,
/// and a large object.
fn shop(pg: &Postgres) {
    pg.exec("postgres", "CREATE DATABASE shop").unwrap();
    pg.exec(
        "shop",
        r#"CREATE TABLE people (id int PRIMARY KEY, name text, note text);
INSERT INTO people VALUES
  (1, 'naïve café', E'tab\there\nnew line \\ backslash'),
  (2, '日本語のテキスト', E'a line\n\\.\nthat looks like the end of COPY'),
  (3, '🐘 elephant', NULL),
  (4, 'ｚｅｎｋａｋｕ', 'it''s "quoted"');
CREATE TABLE blobs (id int PRIMARY KEY, data bytea NOT NULL);
INSERT INTO blobs SELECT g, decode(md5(g::text) || '00ff00', 'hex') FROM generate_series(1, 2000) g;
INSERT INTO blobs VALUES (0, '\x00'::bytea), (-1, ''::bytea);
CREATE TABLE big (id int PRIMARY KEY, body text);
INSERT INTO big SELECT 1, string_agg(md5(g::text), ' ') FROM generate_series(1, 180000) g;
CREATE TABLE empty (id int);
CREATE TABLE "Odd (name)" ("Weird col" int);
INSERT INTO "Odd (name)" SELECT generate_series(1, 10);
SELECT lo_from_bytea(0, 'large object body');"#,
    )
    .expect("loading shop");
}

fn bosund(sb: &Sandbox, moto: &Moto, pg: &Postgres, playbook: &Path) -> Run {
    let mut cmd = sb.bosund();
    cmd.arg("apply")
        .arg(playbook)
        .args(["--output", "json"])
        .envs(moto.env())
        .env("PG_PASSWORD", pg.password())
        .env("BOSUN_LOG", "info");
    Run::from_command(cmd, None)
}

fn conn(pg: &Postgres) -> String {
    format!(
        r#"host = "{}", port = {}, user = "{}", password = "env:PG_PASSWORD""#,
        pg.socket_dir(),
        pg.port(),
        pg.user()
    )
}

fn backup_playbook(sb: &Sandbox, pg: &Postgres, extra: &str, verify: bool) -> std::path::PathBuf {
    let conn = conn(pg);
    let mut text = format!(
        r#"name = "backup"
[[step]]
name = "dump"
postgres_backup = {{ {conn}, databases = ["shop"], bucket = "{BUCKET}", key = "{PREFIX}{{timestamp}}.sql.zst"{extra} }}
"#
    );
    if verify {
        text.push_str(&verify_step(&conn, &format!(r#"prefix = "{PREFIX}""#)));
    }
    sb.playbook(&text)
}

fn verify_step(conn: &str, what: &str) -> String {
    format!(
        r#"
[[step]]
name = "verify"
backup_verify = {{ engine = "postgres", {conn}, bucket = "{BUCKET}", {what} }}
"#
    )
}

fn scratch_databases(pg: &Postgres) -> String {
    pg.exec(
        "postgres",
        "SELECT datname FROM pg_database WHERE datname LIKE 'bosun_verify%'",
    )
    .unwrap()
}

#[test]
fn awkward_data_round_trips_and_verify_notices_a_changed_table() {
    let pg = Postgres::start().expect("starting PostgreSQL");
    shop(&pg);
    let moto = Moto::start().unwrap();
    let s3 = S3::new(&moto, BUCKET);
    let sb = Sandbox::new();

    let run = bosund(&sb, &moto, &pg, &backup_playbook(&sb, &pg, "", true));
    assert_eq!(
        run.step("dump").status,
        StepStatus::Changed,
        "{:?}\n{}",
        run.step("dump").message,
        run.stderr
    );
    assert_eq!(
        run.step("verify").status,
        StepStatus::Changed,
        "{:?}\n{}",
        run.step("verify").message,
        pg.log_tail()
    );
    let key = s3
        .keys()
        .into_iter()
        .find(|k| k.ends_with(".sql.zst"))
        .expect("the backup object");
    let manifest: Manifest =
        serde_json::from_slice(&s3.get(&format!("{key}.manifest.json"))).unwrap();
    assert_eq!(manifest.engine.as_deref(), Some("postgres"));
    let rows: Vec<(&str, u64)> = manifest
        .tables
        .iter()
        .map(|t| (t.name.as_str(), t.rows))
        .collect();
    assert_eq!(
        rows,
        [
            ("public.\"Odd (name)\"", 10),
            ("public.big", 1),
            ("public.blobs", 2002),
            ("public.empty", 0),
            ("public.people", 4),
        ]
    );
    assert!(manifest.uncompressed_size > 6_000_000, "{manifest:?}");
    let record: VerifyRecord =
        serde_json::from_slice(&s3.get(&format!("{key}.verified.json"))).unwrap();
    assert!(record.ok && record.problems.is_empty(), "{record:?}");
    assert_eq!(scratch_databases(&pg).trim(), "", "scratch database left");
    assert!(
        !run.stderr.contains(&pg.password())
            && !serde_json::to_string(&run.events)
                .unwrap()
                .contains(&pg.password()),
        "the password was written"
    );

    // A manifest whose digest for `people` differs: verify fails naming that table only.
    let mut changed = manifest.clone();
    let people = changed
        .tables
        .iter_mut()
        .find(|t| t.name == "public.people")
        .unwrap();
    people.digest = Some("0".repeat(32));
    s3.put(
        &format!("{key}.manifest.json"),
        serde_json::to_vec(&changed).unwrap(),
    );
    let pb = sb.playbook(&format!(
        "name = \"verify\"\n{}",
        verify_step(&conn(&pg), &format!(r#"key = "{key}""#))
    ));
    let run = bosund(&sb, &moto, &pg, &pb);
    assert_eq!(run.step("verify").status, StepStatus::Failed);
    let msg = run.step("verify").message.clone().unwrap();
    assert!(
        msg.contains(
            "table public.people: content digest 00000000000000000000000000000000 in the manifest"
        ),
        "{msg}"
    );
    assert!(!msg.contains("public.big"), "{msg}");
    assert_eq!(scratch_databases(&pg).trim(), "", "scratch database left");
}

#[test]
fn a_dump_killed_midway_leaves_no_object_and_no_open_upload() {
    let pg = Postgres::start().expect("starting PostgreSQL");
    shop(&pg);
    let moto = Moto::start().unwrap();
    let s3 = S3::new(&moto, BUCKET);
    let sb = Sandbox::new();
    // The real pg_dump's first 2 MB (it stops inside the big table's COPY data), then 12 MB of
    // incompressible bytes (so parts were uploaded), then the dump dies by SIGKILL.
    let dump = sb.write(
        "dump.sh",
        r#"#!/bin/sh
case "$1" in --version) exec pg_dump --version;; esac
pg_dump "$@" | head -c 2000000
head -c 12000000 /dev/urandom
kill -9 $$
"#,
    );
    std::fs::set_permissions(&dump, std::fs::Permissions::from_mode(0o755)).unwrap();
    let extra = format!(r#", dump_command = ["{}"]"#, dump.display());
    let run = bosund(&sb, &moto, &pg, &backup_playbook(&sb, &pg, &extra, false));
    assert_eq!(run.step("dump").status, StepStatus::Failed);
    let msg = run.step("dump").message.clone().unwrap();
    assert!(msg.contains("nothing was stored"), "{msg}");
    assert!(msg.contains("exited with code -9"), "{msg}");
    assert_eq!(s3.keys(), Vec::<String>::new());
    assert_eq!(s3.open_uploads(), Vec::<String>::new());
}

/// The shipped playbooks/backup-platform.toml, with `kubectl` replaced by a stand-in that does
/// what `kubectl exec -i POD -- CMD` does for these steps (runs CMD where the database's socket
/// is: here, the test cluster's socket directory) and answers the Jenkins volume's host path.
#[test]
fn the_shipped_platform_backup_dumps_verifies_and_syncs_jenkins_home_without_its_workspace() {
    let pg = Postgres::start().expect("starting PostgreSQL");
    let password = "sonar-pw-\u{e9}-7f3a";
    pg.exec(
        "postgres",
        &format!("CREATE ROLE sonarqube LOGIN SUPERUSER PASSWORD '{password}'"),
    )
    .unwrap();
    pg.exec("postgres", "CREATE DATABASE sonarqube OWNER sonarqube")
        .unwrap();
    pg.exec(
        "sonarqube",
        "CREATE TABLE projects (kee text PRIMARY KEY, name text); \
         INSERT INTO projects VALUES ('web', 'Web — ünïcode'), ('api', 'API');",
    )
    .unwrap();
    let moto = Moto::start().unwrap();
    let s3 = S3::new(&moto, BUCKET);
    let sb = Sandbox::new();
    let secrets = sb.write("secrets/sonarqube-db", password);
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    let home = sb.write("jenkins/config.xml", "<hudson/>");
    sb.write("jenkins/jobs/web/config.xml", "<project/>");
    sb.write("jenkins/workspace/web/big.o", "build output");
    sb.write("jenkins/plugins/git.jpi", "plugin");
    let home = home.parent().unwrap().display().to_string();
    let kubectl = sb.write(
        "kubectl",
        r#"#!/bin/sh
for a; do
  shift
  case "$a" in
    --) export PGHOST="$FAKE_PGHOST"; exec "$@";;
    get) printf '%s' "$FAKE_JENKINS_HOME"; exit 0;;
  esac
done
exit 1
"#,
    );
    std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let playbook = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks/backup-platform.toml");
    let mut cmd = sb.bosund();
    cmd.arg("apply")
        .arg(&playbook)
        .args(["--output", "json"])
        .args(["--var", &format!("bucket={BUCKET}")])
        .args(["--var", &format!("kubectl={}", kubectl.display())])
        .args([
            "--var",
            &format!("secrets_dir={}", secrets.parent().unwrap().display()),
        ])
        .envs(moto.env())
        .env("FAKE_PGHOST", pg.socket_dir())
        .env("FAKE_JENKINS_HOME", &home);
    let run = Run::from_command(cmd, None);
    for step in [
        "dump sonarqube database",
        "verify sonarqube database by restoring",
        "sync jenkins home",
    ] {
        assert_eq!(
            run.step(step).status,
            StepStatus::Changed,
            "{step}: {:?}\n{}",
            run.step(step).message,
            run.stderr
        );
    }
    let keys = s3.keys();
    let dump = keys
        .iter()
        .find(|k| k.starts_with("backups/postgres/sonarqube/") && k.ends_with(".sql.zst"))
        .expect("the dump");
    assert!(keys.contains(&format!("{dump}.verified.json")), "{keys:?}");
    let jenkins: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with("files/jenkins-home/"))
        .collect();
    assert_eq!(
        jenkins,
        [
            "files/jenkins-home/config.xml",
            "files/jenkins-home/jobs/web/config.xml"
        ],
        "{keys:?}"
    );
    assert!(!run.stderr.contains(password));
    assert!(
        !serde_json::to_string(&run.events)
            .unwrap()
            .contains(password)
    );
}

#[test]
fn a_wrong_password_fails_with_the_servers_words_and_stores_nothing() {
    let pg = Postgres::start().expect("starting PostgreSQL");
    pg.exec("postgres", "CREATE DATABASE shop").unwrap();
    let moto = Moto::start().unwrap();
    let s3 = S3::new(&moto, BUCKET);
    let sb = Sandbox::new();
    let wrong = "not-the-password-5e1f";
    let mut cmd = sb.bosund();
    cmd.arg("apply")
        .arg(backup_playbook(&sb, &pg, "", false))
        .args(["--output", "json"])
        .envs(moto.env())
        .env("PG_PASSWORD", wrong);
    let run = Run::from_command(cmd, None);
    assert_eq!(run.step("dump").status, StepStatus::Failed);
    let msg = run.step("dump").message.clone().unwrap();
    assert!(
        msg.contains("password authentication failed for user \"bosun\""),
        "{msg}"
    );
    assert!(msg.contains("connecting to database shop"), "{msg}");
    assert!(!msg.contains(wrong) && !run.stderr.contains(wrong), "{msg}");
    assert_eq!(s3.keys(), Vec::<String>::new());
    assert_eq!(s3.open_uploads(), Vec::<String>::new());
}

//! `mysql_user` through `bosund apply` against a real MariaDB: create, second run `ok`, change
//! (grants, plugin), `--check` changes nothing, remove. MariaDB has no `AWSAuthenticationPlugin`
//! (RDS's), so the account here uses `unix_socket`, a plugin that, like the IAM one, needs no
//! password; the IAM statements are unit-tested in `agent/src/steps/mysql_user.rs`.

mod common;

use bosun_harness::MariaDb;
use common::{Run, Sandbox};

fn playbook(sb: &Sandbox, db: &MariaDb, extra: &str) -> std::path::PathBuf {
    sb.playbook(&format!(
        "name = \"users\"\n[[step]]\nname = \"backup user\"\n[step.mysql_user]\n\
         host = \"127.0.0.1\"\nport = {port}\nuser = \"root\"\npassword = \"env:DB_ROOT_PW\"\n\
         name = \"bosun_backup\"\nplugin = \"unix_socket\"\n{extra}\n",
        port = db.port()
    ))
}

fn apply(sb: &Sandbox, db: &MariaDb, pb: &std::path::Path, args: &[&str]) -> Run {
    let mut cmd = sb.bosund();
    cmd.arg("apply")
        .arg(pb)
        .args(["--output", "json"])
        .args(args)
        .env("DB_ROOT_PW", db.password());
    Run::from_command(cmd, None)
}

/// (plugin, grants) of bosun_backup@%, or None.
fn account(db: &MariaDb) -> Option<(String, Vec<String>)> {
    let plugin = db
        .exec("SELECT plugin FROM mysql.user WHERE User = 'bosun_backup' AND Host = '%'")
        .unwrap();
    if plugin.trim().is_empty() {
        return None;
    }
    let mut grants: Vec<String> = db
        .exec("SHOW GRANTS FOR 'bosun_backup'@'%'")
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    grants.sort();
    Some((plugin.trim().to_string(), grants))
}

#[test]
fn mysql_user_creates_changes_and_removes_an_account_and_a_second_run_is_ok() {
    let db = MariaDb::start().expect("starting MariaDB");
    let sb = Sandbox::new();

    let pb = playbook(&sb, &db, "grants = [\"SELECT, LOCK TABLES ON *.*\"]");
    let check = apply(&sb, &db, &pb, &["--check"]);
    assert_eq!(check.code, 0, "{check:#?}");
    assert_eq!(check.summary().changed, 1);
    assert_eq!(account(&db), None, "--check changed nothing");

    let first = apply(&sb, &db, &pb, &[]);
    assert_eq!((first.code, first.summary().changed), (0, 1), "{first:#?}");
    let (plugin, grants) = account(&db).expect("created");
    assert_eq!(plugin, "unix_socket");
    assert!(
        grants
            .iter()
            .any(|g| g.starts_with("GRANT SELECT, LOCK TABLES ON *.* TO `bosun_backup`@`%`")),
        "{grants:?}"
    );
    let events = serde_json::to_string(&first.events).unwrap();
    assert!(
        !events.contains(&db.password()),
        "the root password is never shown"
    );

    let second = apply(&sb, &db, &pb, &[]);
    assert_eq!(
        (second.code, second.summary().changed),
        (0, 0),
        "{second:#?}"
    );

    // Other grants: the old ones are revoked, the new ones granted; then ok again.
    let pb = playbook(&sb, &db, "grants = [\"SELECT, SHOW VIEW ON shop.*\"]");
    let changed = apply(&sb, &db, &pb, &[]);
    assert_eq!(
        (changed.code, changed.summary().changed),
        (0, 1),
        "{changed:#?}"
    );
    let (_, grants) = account(&db).unwrap();
    assert!(
        grants.iter().any(|g| g.starts_with("GRANT USAGE ON *.*")),
        "nothing left on *.*: {grants:?}"
    );
    assert!(
        grants
            .iter()
            .any(|g| g.starts_with("GRANT SELECT, SHOW VIEW ON `shop`.*")),
        "{grants:?}"
    );
    assert_eq!(apply(&sb, &db, &pb, &[]).summary().changed, 0);

    // Another plugin: the account is altered, not recreated.
    let pb_native = sb.playbook(&std::fs::read_to_string(&pb).unwrap().replace(
        "plugin = \"unix_socket\"",
        "plugin = \"mysql_native_password\"\nplugin_as = \"\"",
    ));
    let altered = apply(&sb, &db, &pb_native, &[]);
    assert_eq!(
        (altered.code, altered.summary().changed),
        (0, 1),
        "{altered:#?}"
    );
    assert_eq!(account(&db).unwrap().0, "mysql_native_password");
    assert_eq!(apply(&sb, &db, &pb_native, &[]).summary().changed, 0);

    // Absent: dropped; a second run finds nothing to do.
    let gone = playbook(&sb, &db, "state = \"absent\"");
    let dropped = apply(&sb, &db, &gone, &[]);
    assert_eq!(
        (dropped.code, dropped.summary().changed),
        (0, 1),
        "{dropped:#?}"
    );
    assert_eq!(account(&db), None);
    assert_eq!(apply(&sb, &db, &gone, &[]).summary().changed, 0);
}

#[test]
fn unsafe_names_fail_validation_before_anything_runs() {
    let db = MariaDb::start().expect("starting MariaDB");
    let sb = Sandbox::new();
    let pb = sb.playbook(
        "name = \"users\"\n[[step]]\nname = \"u\"\n[step.mysql_user]\nhost = \"127.0.0.1\"\n\
         user = \"root\"\npassword = \"env:DB_ROOT_PW\"\nname = \"x'; DROP USER root; --\"\n",
    );
    let (code, _, stderr) = sb.apply_human(&pb, &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("playbook.toml") && stderr.contains("`name`"),
        "{stderr}"
    );
    assert!(
        db.exec("SELECT COUNT(*) FROM mysql.user WHERE User = 'root'")
            .unwrap()
            .trim()
            != "0",
        "root untouched"
    );
}

//! `rds_snapshot`, `backup_prune` over RDS snapshots and `s3_sync`, through the real `bosund`
//! against a real AWS API emulator (moto): what lands in RDS and S3, second runs `ok`,
//! `--check` changing nothing, bad input refused with a clear message.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use aws_sdk_rds::types::Tag;
use aws_sdk_s3::primitives::ByteStream;
use bosun_harness::Moto;
use bosun_model::event::StepStatus;
use common::{Run, Sandbox};

const BUCKET: &str = "backups";

/// The test's own AWS clients on a runtime of their own.
struct Aws {
    rt: tokio::runtime::Runtime,
    config: aws_config::SdkConfig,
}

impl Aws {
    fn new(moto: &Moto) -> Aws {
        let rt = common::runtime();
        let config = common::moto_sdk_config(&rt, moto);
        Aws { rt, config }
    }

    fn rds(&self, region: &str) -> aws_sdk_rds::Client {
        aws_sdk_rds::Client::from_conf(
            aws_sdk_rds::config::Builder::from(&self.config)
                .region(aws_config::Region::new(region.to_string()))
                .build(),
        )
    }

    fn s3(&self) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&self.config)
                .force_path_style(true)
                .build(),
        )
    }

    fn create_instance(&self, id: &str) {
        self.rt
            .block_on(
                self.rds("us-east-1")
                    .create_db_instance()
                    .db_instance_identifier(id)
                    .engine("mysql")
                    .db_instance_class("db.t3.micro")
                    .allocated_storage(20)
                    .master_username("admin")
                    .master_user_password("not-a-real-secret")
                    .send(),
            )
            .expect("creating a DB instance in moto");
    }

    fn snapshot(&self, instance: &str, id: &str, tags: &[(&str, &str)]) {
        let tags: Vec<Tag> = tags
            .iter()
            .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
            .collect();
        self.rt
            .block_on(
                self.rds("us-east-1")
                    .create_db_snapshot()
                    .db_instance_identifier(instance)
                    .db_snapshot_identifier(id)
                    .set_tags(Some(tags))
                    .send(),
            )
            .expect("creating a snapshot in moto");
    }

    /// Snapshot id → (status, tags) of every manual snapshot in `region` (moto, like RDS,
    /// also keeps an automated one per instance).
    fn snapshots(&self, region: &str) -> BTreeMap<String, (String, BTreeMap<String, String>)> {
        let out = self
            .rt
            .block_on(
                self.rds(region)
                    .describe_db_snapshots()
                    .snapshot_type("manual")
                    .send(),
            )
            .unwrap();
        out.db_snapshots()
            .iter()
            .map(|s| {
                let tags = s
                    .tag_list()
                    .iter()
                    .map(|t| {
                        (
                            t.key().unwrap_or_default().to_string(),
                            t.value().unwrap_or_default().to_string(),
                        )
                    })
                    .collect();
                (
                    s.db_snapshot_identifier().unwrap().to_string(),
                    (s.status().unwrap_or_default().to_string(), tags),
                )
            })
            .collect()
    }

    fn create_bucket(&self) {
        self.rt
            .block_on(self.s3().create_bucket().bucket(BUCKET).send())
            .expect("creating the test bucket in moto");
    }

    /// Key → content of every object in the bucket.
    fn objects(&self) -> BTreeMap<String, Vec<u8>> {
        self.rt.block_on(async {
            let s3 = self.s3();
            let list = s3.list_objects_v2().bucket(BUCKET).send().await.unwrap();
            let mut out = BTreeMap::new();
            for o in list.contents() {
                let key = o.key().unwrap().to_string();
                let body = s3
                    .get_object()
                    .bucket(BUCKET)
                    .key(&key)
                    .send()
                    .await
                    .unwrap()
                    .body
                    .collect()
                    .await
                    .unwrap()
                    .into_bytes()
                    .to_vec();
                out.insert(key, body);
            }
            out
        })
    }

    fn storage_class(&self, key: &str) -> Option<String> {
        let head = self
            .rt
            .block_on(self.s3().head_object().bucket(BUCKET).key(key).send())
            .unwrap();
        head.storage_class().map(|c| c.as_str().to_string())
    }

    fn put(&self, key: &str, body: &[u8]) {
        self.rt
            .block_on(
                self.s3()
                    .put_object()
                    .bucket(BUCKET)
                    .key(key)
                    .body(ByteStream::from(body.to_vec()))
                    .send(),
            )
            .unwrap();
    }
}

/// `bosund apply` of `playbook` with moto's environment.
fn apply(sb: &Sandbox, moto: &Moto, playbook: &Path, args: &[&str]) -> Run {
    let mut cmd = sb.bosund();
    cmd.arg("apply")
        .arg(playbook)
        .args(["--output", "json"])
        .args(args)
        .envs(moto.env());
    Run::from_command(cmd, None)
}

fn message(run: &Run, step: &str) -> String {
    run.step(step).message.clone().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// rds_snapshot
// ---------------------------------------------------------------------------------------------

#[test]
fn rds_snapshot_is_created_tagged_and_available_then_ok_and_check_changes_nothing() {
    let moto = Moto::start().unwrap();
    let aws = Aws::new(&moto);
    aws.create_instance("platform");
    let sb = Sandbox::new();
    let pb = sb.playbook(
        r#"name = "snap"
[[step]]
name = "snapshot"
rds_snapshot = { db_instance = "platform", snapshot_id = "Bosun-{db}-{{ label }}", tags = { env = "test", owner = "sre" }, timeout = "2m" }

[vars]
label = "nightly"
"#,
    );

    let check = apply(&sb, &moto, &pb, &["--check"]);
    check.assert_success();
    assert_eq!(check.step("snapshot").status, StepStatus::Changed);
    let msg = message(&check, "snapshot");
    assert!(
        msg.contains("would snapshot platform as bosun-platform-nightly in us-east-1"),
        "{msg}"
    );
    assert!(
        aws.snapshots("us-east-1").is_empty(),
        "--check made a snapshot"
    );

    let first = apply(&sb, &moto, &pb, &[]);
    first.assert_success();
    assert_eq!(first.step("snapshot").status, StepStatus::Changed);
    let snaps = aws.snapshots("us-east-1");
    let (status, tags) = snaps
        .get("bosun-platform-nightly")
        .unwrap_or_else(|| panic!("no snapshot: {snaps:?}"));
    assert_eq!(status, "available");
    assert_eq!(tags.get("env").map(String::as_str), Some("test"));
    assert_eq!(tags.get("owner").map(String::as_str), Some("sre"));
    assert_eq!(tags.get("bosun:managed").map(String::as_str), Some("true"));

    let second = apply(&sb, &moto, &pb, &[]);
    second.assert_success();
    assert_eq!(second.step("snapshot").status, StepStatus::Ok);
    assert!(
        message(&second, "snapshot").contains("is available"),
        "{}",
        message(&second, "snapshot")
    );
    assert_eq!(aws.snapshots("us-east-1").len(), 1);
}

#[test]
fn rds_snapshot_copy_to_another_region_lands_there_tagged() {
    let moto = Moto::start().unwrap();
    let aws = Aws::new(&moto);
    aws.create_instance("platform");
    let sb = Sandbox::new();
    let pb = sb.playbook(
        r#"name = "snap"
[[step]]
name = "snapshot"
rds_snapshot = { db_instance = "platform", snapshot_id = "bosun-dr", tags = { env = "test" }, copy_to_region = "eu-west-1" }
register = "snap"

[[step]]
name = "arns"
command = { argv = ["echo", "{{ snap.stdout }}"] }
"#,
    );
    let check = apply(&sb, &moto, &pb, &["--check"]);
    check.assert_success();
    let msg = message(&check, "snapshot");
    assert!(msg.contains("would copy bosun-dr to eu-west-1"), "{msg}");
    assert!(aws.snapshots("eu-west-1").is_empty());

    let run = apply(&sb, &moto, &pb, &[]);
    run.assert_success();
    let copies = aws.snapshots("eu-west-1");
    let (status, tags) = copies
        .get("bosun-dr")
        .unwrap_or_else(|| panic!("no copy in eu-west-1: {copies:?}"));
    assert_eq!(status, "available");
    assert_eq!(tags.get("bosun:managed").map(String::as_str), Some("true"));
    assert!(aws.snapshots("us-east-1").contains_key("bosun-dr"));
    let out = run.step("arns").output.clone().unwrap().stdout;
    assert!(
        out.contains(":us-east-1:") && out.contains(":eu-west-1:"),
        "{out}"
    );

    let again = apply(&sb, &moto, &pb, &[]);
    again.assert_success();
    assert_eq!(again.step("snapshot").status, StepStatus::Ok);
    assert_eq!(aws.snapshots("eu-west-1").len(), 1);

    // The copies are pruned by a backup_prune in their region (as playbooks/backup-rds.toml
    // does); the source region is not touched by it.
    let pb = sb.playbook(
        r#"name = "snap2"
[[step]]
name = "snapshot"
rds_snapshot = { db_instance = "platform", snapshot_id = "bosun-dr-2", copy_to_region = "eu-west-1" }

[[step]]
name = "prune copies"
backup_prune = { db_instance = "platform", region = "eu-west-1", keep_last = 1 }
"#,
    );
    let run = apply(&sb, &moto, &pb, &[]);
    run.assert_success();
    let msg = message(&run, "prune copies");
    assert!(msg.contains("deleted 1 RDS snapshots: bosun-dr"), "{msg}");
    assert_eq!(
        aws.snapshots("eu-west-1").into_keys().collect::<Vec<_>>(),
        ["bosun-dr-2"]
    );
    assert_eq!(
        aws.snapshots("us-east-1").into_keys().collect::<Vec<_>>(),
        ["bosun-dr", "bosun-dr-2"]
    );
}

#[test]
fn a_bad_snapshot_id_is_refused_with_the_rds_rule_and_nothing_is_made() {
    let moto = Moto::start().unwrap();
    let aws = Aws::new(&moto);
    aws.create_instance("platform");
    let sb = Sandbox::new();

    // Literal: refused at validation (exit 2), with the line.
    let pb = sb.playbook(
        r#"name = "snap"
[[step]]
name = "snapshot"
rds_snapshot = { db_instance = "platform", snapshot_id = "nightly_1" }
"#,
    );
    let (code, out, err) = sb.apply_human(&pb, &[]);
    assert_eq!(code, 2, "{out}{err}");
    let text = format!("{out}{err}");
    assert!(text.contains("contains '_'"), "{text}");
    assert!(text.contains("starting with a letter"), "{text}");
    assert!(text.contains("playbook.toml:4"), "{text}");

    // From a variable: refused when rendered, before any AWS call that changes anything.
    let pb = sb.playbook(
        r#"name = "snap"
[[step]]
name = "snapshot"
rds_snapshot = { db_instance = "platform", snapshot_id = "{{ id }}" }

[vars]
id = "1-nightly"
"#,
    );
    let run = apply(&sb, &moto, &pb, &[]);
    assert_eq!(run.code, 1);
    assert_eq!(run.step("snapshot").status, StepStatus::Failed);
    let msg = message(&run, "snapshot");
    assert!(msg.contains("does not start with a letter"), "{msg}");
    assert!(aws.snapshots("us-east-1").is_empty());

    // An instance that does not exist: --check already says so.
    let pb = sb.playbook(
        r#"name = "snap"
[[step]]
name = "snapshot"
rds_snapshot = { db_instance = "platfrom", snapshot_id = "bosun-{db}" }
"#,
    );
    let run = apply(&sb, &moto, &pb, &["--check"]);
    assert_eq!(run.step("snapshot").status, StepStatus::Failed);
    let msg = message(&run, "snapshot");
    assert!(
        msg.contains("there is no RDS instance \"platfrom\" in us-east-1"),
        "{msg}"
    );
}

#[test]
fn a_snapshot_id_taken_by_another_instance_is_an_error_not_ok() {
    let moto = Moto::start().unwrap();
    let aws = Aws::new(&moto);
    aws.create_instance("platform");
    aws.create_instance("other");
    aws.snapshot("other", "bosun-x", &[]);
    let sb = Sandbox::new();
    let pb = sb.playbook(
        r#"name = "snap"
[[step]]
name = "snapshot"
rds_snapshot = { db_instance = "platform", snapshot_id = "bosun-x" }
"#,
    );
    let run = apply(&sb, &moto, &pb, &[]);
    assert_eq!(run.step("snapshot").status, StepStatus::Failed);
    let msg = message(&run, "snapshot");
    assert!(msg.contains("is of instance \"other\""), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// backup_prune over RDS snapshots
// ---------------------------------------------------------------------------------------------

#[test]
fn rds_prune_keeps_exactly_the_policy_set_and_never_touches_others() {
    let moto = Moto::start().unwrap();
    let aws = Aws::new(&moto);
    aws.create_instance("platform");
    aws.create_instance("other");
    // Five of bosun's, created oldest first (equal times break on the id, larger first, so
    // the order is the same either way); one made by hand; one of another instance.
    for i in 1..=5 {
        aws.snapshot(
            "platform",
            &format!("bosun-platform-{i}"),
            &[("bosun:managed", "true")],
        );
    }
    aws.snapshot("platform", "by-hand", &[("env", "prod")]);
    aws.snapshot("other", "bosun-other-1", &[("bosun:managed", "true")]);

    let sb = Sandbox::new();
    let pb = sb.playbook(
        r#"name = "prune"
[[step]]
name = "prune"
backup_prune = { db_instance = "platform", keep_last = "{{ keep }}" }

[vars]
keep = "2"
"#,
    );
    let before = aws.snapshots("us-east-1");
    let check = apply(&sb, &moto, &pb, &["--check"]);
    check.assert_success();
    assert_eq!(check.step("prune").status, StepStatus::Changed);
    let msg = message(&check, "prune");
    assert!(
        msg.contains("would delete 3 of 5 bosun snapshots of RDS instance platform"),
        "{msg}"
    );
    for i in 1..=3 {
        assert!(msg.contains(&format!("bosun-platform-{i}")), "{msg}");
    }
    assert_eq!(
        aws.snapshots("us-east-1"),
        before,
        "--check deleted something"
    );

    let run = apply(&sb, &moto, &pb, &[]);
    run.assert_success();
    let msg = message(&run, "prune");
    assert!(msg.starts_with("deleted 3 RDS snapshots: "), "{msg}");
    let left: Vec<String> = aws.snapshots("us-east-1").into_keys().collect();
    assert_eq!(
        left,
        [
            "bosun-other-1",
            "bosun-platform-4",
            "bosun-platform-5",
            "by-hand"
        ]
    );

    let again = apply(&sb, &moto, &pb, &[]);
    again.assert_success();
    assert_eq!(again.step("prune").status, StepStatus::Ok);
}

#[test]
fn prune_wants_either_a_bucket_or_an_instance() {
    let sb = Sandbox::new();
    let pb = sb.playbook(
        r#"name = "prune"
[[step]]
name = "prune"
backup_prune = { db_instance = "platform", bucket = "b", prefix = "p/", keep_last = 1 }
"#,
    );
    let (code, out, err) = sb.apply_human(&pb, &[]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("give either `bucket` and `prefix`"),
        "{out}{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// s3_sync
// ---------------------------------------------------------------------------------------------

/// Deterministic, poorly compressible bytes.
fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn sync_playbook(sb: &Sandbox, extra: &str) -> std::path::PathBuf {
    sb.playbook(&format!(
        r#"name = "sync"
[[step]]
name = "sync"
s3_sync = {{ src = "data", bucket = "{BUCKET}", prefix = "uploads"{extra} }}
register = "synced"
"#
    ))
}

#[test]
fn s3_sync_uploads_everything_then_is_ok_then_uploads_only_the_changed_file() {
    let moto = Moto::start().unwrap();
    let aws = Aws::new(&moto);
    aws.create_bucket();
    let sb = Sandbox::new();
    sb.write("data/a.txt", "alpha\n");
    sb.write("data/sub/deeper/b.txt", "bravo\n");
    // Above the 16 MiB multipart threshold: two parts.
    let big = noise((17 << 20) + 123, 7);
    std::fs::write(sb.path("data/models/big.bin"), &big)
        .or_else(|_| {
            std::fs::create_dir_all(sb.path("data/models"))?;
            std::fs::write(sb.path("data/models/big.bin"), &big)
        })
        .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", sb.path("data/link")).unwrap();
    let pb = sync_playbook(&sb, r#", storage_class = "STANDARD_IA""#);

    let check = apply(&sb, &moto, &pb, &["--check"]);
    check.assert_success();
    let msg = message(&check, "sync");
    assert!(
        msg.contains("upload 3 file(s) (17.0 MiB: 3 new, 0 changed)"),
        "{msg}"
    );
    assert!(msg.contains("+ models/big.bin"), "{msg}");
    assert!(msg.contains("link (symlink, not followed)"), "{msg}");
    assert!(aws.objects().is_empty(), "--check uploaded something");

    let first = apply(&sb, &moto, &pb, &[]);
    first.assert_success();
    assert_eq!(first.step("sync").status, StepStatus::Changed);
    let objects = aws.objects();
    let expected: BTreeMap<String, Vec<u8>> = [
        ("uploads/a.txt", b"alpha\n".to_vec()),
        ("uploads/models/big.bin", big.clone()),
        ("uploads/sub/deeper/b.txt", b"bravo\n".to_vec()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(
        objects.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    assert!(objects == expected, "object contents differ from the files");
    assert_eq!(
        aws.storage_class("uploads/a.txt").as_deref(),
        Some("STANDARD_IA")
    );
    assert_eq!(
        aws.storage_class("uploads/models/big.bin").as_deref(),
        Some("STANDARD_IA")
    );

    // The first run recorded each file's stamp and object ETag: nothing is read or hashed.
    let second = apply(&sb, &moto, &pb, &[]);
    second.assert_success();
    assert_eq!(second.step("sync").status, StepStatus::Ok);
    assert_eq!(second.summary().changed, 0, "second run changed");
    let msg = message(&second, "sync");
    assert!(
        msg.contains("(3 known unchanged by their stamp and ETag, 0 hashed and compared)"),
        "{msg}"
    );

    // Same size, other content, and the old mtime put back: the ctime still tells, then the
    // SHA-256 does.
    let mtime = std::fs::metadata(sb.path("data/a.txt"))
        .unwrap()
        .modified()
        .unwrap();
    sb.write("data/a.txt", "ALPHA\n");
    std::fs::File::options()
        .write(true)
        .open(sb.path("data/a.txt"))
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let third = apply(&sb, &moto, &pb, &[]);
    third.assert_success();
    let msg = message(&third, "sync");
    assert!(msg.contains("uploaded 1 file(s)"), "{msg}");
    assert!(msg.contains("~ a.txt"), "{msg}");
    let out = third.step("sync").output.clone().unwrap().stdout;
    assert_eq!(out, "+ uploads/a.txt");
    assert_eq!(aws.objects()["uploads/a.txt"], b"ALPHA\n");
    let msg = message(&apply(&sb, &moto, &pb, &[]), "sync");
    assert!(msg.contains("(3 known unchanged"), "{msg}");

    // An object rewritten by another tool (same size, no recorded SHA-256): its ETag changed,
    // so it is compared again and uploaded back.
    aws.put("uploads/sub/deeper/b.txt", b"BRAVO\n");
    let fifth = apply(&sb, &moto, &pb, &[]);
    let msg = message(&fifth, "sync");
    assert!(
        msg.contains("uploaded 1 file(s)") && msg.contains("~ sub/deeper/b.txt"),
        "{msg}"
    );
    assert_eq!(aws.objects()["uploads/sub/deeper/b.txt"], b"bravo\n");
}

#[test]
fn s3_sync_deletes_extra_objects_only_when_asked_and_only_under_its_filters() {
    let moto = Moto::start().unwrap();
    let aws = Aws::new(&moto);
    aws.create_bucket();
    let sb = Sandbox::new();
    sb.write("data/keep.txt", "keep\n");
    sb.write("data/scratch.tmp", "never uploaded\n");
    aws.put("uploads/gone.txt", b"old");
    aws.put("uploads/cache.tmp", b"excluded, so not ours to delete");
    aws.put("elsewhere/x.txt", b"outside the prefix");

    let keep = sync_playbook(&sb, r#", exclude = ["*.tmp"]"#);
    apply(&sb, &moto, &keep, &[]).assert_success();
    let keys: Vec<String> = aws.objects().into_keys().collect();
    assert_eq!(
        keys,
        [
            "elsewhere/x.txt",
            "uploads/cache.tmp",
            "uploads/gone.txt",
            "uploads/keep.txt"
        ]
    );
    let again = apply(&sb, &moto, &keep, &[]);
    assert_eq!(again.step("sync").status, StepStatus::Ok);

    let delete = sync_playbook(&sb, r#", exclude = ["*.tmp"], delete = "{{ prune }}""#);
    let delete_text = std::fs::read_to_string(&delete).unwrap() + "\n[vars]\nprune = \"true\"\n";
    std::fs::write(&delete, delete_text).unwrap();
    let check = apply(&sb, &moto, &delete, &["--check"]);
    let msg = message(&check, "sync");
    assert!(msg.contains("delete 1 object(s) (3 B)"), "{msg}");
    assert!(msg.contains("- uploads/gone.txt"), "{msg}");
    assert_eq!(aws.objects().len(), 4, "--check deleted something");

    let run = apply(&sb, &moto, &delete, &[]);
    run.assert_success();
    let msg = message(&run, "sync");
    assert!(
        msg.starts_with("deleted 1 object(s) (3 B) in s3://backups/uploads/: - uploads/gone.txt"),
        "{msg}"
    );
    let keys: Vec<String> = aws.objects().into_keys().collect();
    assert_eq!(
        keys,
        ["elsewhere/x.txt", "uploads/cache.tmp", "uploads/keep.txt"]
    );
    assert_eq!(
        run.step("sync").output.clone().unwrap().stdout,
        "- uploads/gone.txt"
    );
}

#[test]
fn s3_sync_refuses_an_unreadable_tree_before_uploading_anything() {
    use std::os::unix::ffi::OsStrExt;
    let moto = Moto::start().unwrap();
    let aws = Aws::new(&moto);
    aws.create_bucket();
    let sb = Sandbox::new();
    sb.write("data/fine.txt", "fine\n");
    // A name that cannot be an S3 key (not UTF-8); as root, permissions cannot make a file
    // unreadable, so this is the unreadable case every user can reproduce.
    let bad = sb
        .path("data")
        .join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt"));
    std::fs::write(&bad, "latin-1 name").unwrap();
    let pb = sync_playbook(&sb, "");
    let run = apply(&sb, &moto, &pb, &[]);
    assert_eq!(run.step("sync").status, StepStatus::Failed);
    let msg = message(&run, "sync");
    assert!(msg.contains("cannot read 1 path(s)"), "{msg}");
    assert!(msg.contains("not UTF-8"), "{msg}");
    assert!(msg.contains("exclude"), "{msg}");
    assert!(aws.objects().is_empty(), "something was uploaded");
}

#[test]
fn s3_sync_bad_arguments_are_refused_at_validation() {
    let sb = Sandbox::new();
    let pb = sb.playbook(&format!(
        r#"name = "sync"
[[step]]
name = "sync"
s3_sync = {{ src = "data", bucket = "{BUCKET}", storage_class = "COLD", concurrency = 99, include = ["a["] }}
"#
    ));
    let (code, out, err) = sb.apply_human(&pb, &[]);
    assert_eq!(code, 2, "{out}{err}");
    let text = format!("{out}{err}");
    assert!(
        text.contains("\"COLD\" is not an S3 storage class"),
        "{text}"
    );
    assert!(
        text.contains("`concurrency` must be 1 to 16, got 99"),
        "{text}"
    );
    assert!(text.contains("`include`: glob \"a[\""), "{text}");
}

// ---------------------------------------------------------------------------------------------
// The shipped playbooks
// ---------------------------------------------------------------------------------------------

fn shipped(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../playbooks")
        .join(name)
}

#[test]
fn shipped_backup_playbooks_validate() {
    let sb = Sandbox::new();
    let out = sb
        .bosund()
        .arg("check")
        .arg(shipped("backup-s3.toml"))
        .arg(shipped("backup-rds.toml"))
        .arg(shipped("backup-platform.toml"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("backup-s3.toml: ok"), "{text}");
    assert!(text.contains("backup-rds.toml: ok"), "{text}");
    assert!(text.contains("backup-platform.toml: ok"), "{text}");
}

#[test]
fn shipped_backup_s3_playbook_syncs_both_directories_then_is_ok() {
    let moto = Moto::start().unwrap();
    let aws = Aws::new(&moto);
    aws.create_bucket();
    let sb = Sandbox::new();
    sb.write("uploads/u1/avatar.png", "png bytes");
    sb.write("uploads/u1/draft.tmp", "not yet");
    sb.write("models/m1/weights.bin", "weights");
    sb.write("models/m2/weights.bin.part", "half a download");
    let root = sb.root().display().to_string();
    let vars = [
        "--var".to_string(),
        format!("bucket={BUCKET}"),
        "--var".to_string(),
        format!("uploads_dir={root}/uploads"),
        "--var".to_string(),
        format!("models_dir={root}/models"),
    ];
    let args: Vec<&str> = vars.iter().map(String::as_str).collect();
    let pb = shipped("backup-s3.toml");
    apply(&sb, &moto, &pb, &args).assert_success();
    let keys: Vec<String> = aws.objects().into_keys().collect();
    assert_eq!(
        keys,
        ["files/models/m1/weights.bin", "files/uploads/u1/avatar.png"]
    );
    assert_eq!(
        aws.storage_class("files/models/m1/weights.bin").as_deref(),
        Some("STANDARD_IA")
    );
    let again = apply(&sb, &moto, &pb, &args);
    again.assert_success();
    assert_eq!(again.summary().changed, 0, "{:?}", again.statuses());

    // Without a bucket: a clear error, nothing uploaded elsewhere.
    let run = apply(&sb, &moto, &pb, &args[2..]);
    assert_eq!(run.step("sync uploads").status, StepStatus::Failed);
    assert!(
        message(&run, "sync uploads").contains("`bucket` is empty"),
        "{}",
        message(&run, "sync uploads")
    );
}

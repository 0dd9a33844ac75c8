//! `get_url` and `unarchive` through `bosund apply`, against a real HTTP server on loopback
//! (the harness' `ArtifactServer`): verified downloads, no download when the file matches,
//! nothing left behind on a mismatch, headers sent and never shown; archives of every format
//! unpacked, compared and refused when they would escape their directory.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;

use bosun_harness::ArtifactServer;
use bosun_model::event::StepStatus;
use bosun_model::playbook::{Source, load};
use common::{Sandbox, converge, listing, mode, read};
use sha2::{Digest, Sha256};

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A served directory with `tool` (some bytes) and `SHA256SUMS` listing it.
fn site(sb: &Sandbox, tool: &[u8]) -> ArtifactServer {
    fs::create_dir_all(sb.path("site")).unwrap();
    fs::write(sb.path("site/tool"), tool).unwrap();
    fs::write(
        sb.path("site/SHA256SUMS"),
        format!("{}  other\n{}  tool\n", "0".repeat(64), sha256(tool)),
    )
    .unwrap();
    ArtifactServer::serve(&sb.path("site")).unwrap()
}

#[test]
fn get_url_downloads_once_verifies_and_converges() {
    let sb = Sandbox::new();
    let tool = b"#!/bin/sh\necho tool 1\n";
    let server = site(&sb, tool);
    fs::create_dir_all(sb.path("out")).unwrap();
    let url = server.url();
    let pb = sb.playbook(&format!(
        r#"name = "downloads"
[[step]]
name = "pinned"
get_url = {{ url = "{url}/tool", dest = "@ROOT@/out/pinned", checksum = "sha256:{d}", mode = "0755" }}
[[step]]
name = "listed"
get_url = {{ url = "{url}/tool", dest = "@ROOT@/out/listed", checksum = "sha256:{url}/SHA256SUMS" }}
[[step]]
name = "plain"
get_url = {{ url = "{url}/tool", dest = "@ROOT@/out/plain" }}
"#,
        d = sha256(tool)
    ));
    let (check, first, _second) = converge(&sb, &pb);
    assert_eq!(check.summary().changed, 3, "{:?}", check.statuses());
    assert_eq!(first.summary().changed, 3, "{:?}", first.statuses());
    // --check and the second run download nothing (the list is read, the tool is not).
    assert_eq!(server.downloads("/tool"), 3, "{:?}", server.requests());
    for name in ["pinned", "listed", "plain"] {
        assert_eq!(fs::read(sb.path(&format!("out/{name}"))).unwrap(), tool);
    }
    assert_eq!(mode(&sb.path("out/pinned")), 0o755);
    assert_eq!(mode(&sb.path("out/plain")), 0o644);
    assert_eq!(listing(&sb.path("out")), ["listed", "pinned", "plain"]);

    // A file that no longer matches its checksum is downloaded again, with a diff; one that
    // has no checksum is left alone.
    fs::write(sb.path("out/pinned"), "tampered\n").unwrap();
    fs::write(sb.path("out/plain"), "local\n").unwrap();
    let third = sb.apply(&pb, &[]);
    third.assert_success();
    assert_eq!(
        third.statuses(),
        [
            ("pinned".to_string(), StepStatus::Changed),
            ("listed".to_string(), StepStatus::Ok),
            ("plain".to_string(), StepStatus::Ok),
        ]
    );
    let diff = third.step("pinned").diff.clone().expect("a diff");
    assert!(
        diff.contains("-tampered") && diff.contains("+echo tool 1"),
        "{diff}"
    );
    assert_eq!(fs::read(sb.path("out/pinned")).unwrap(), tool);
    assert_eq!(read(&sb.path("out/plain")), "local\n");
}

#[test]
fn get_url_refuses_a_mismatch_and_leaves_dest_as_it_was() {
    let sb = Sandbox::new();
    let server = site(&sb, b"served bytes\n");
    fs::create_dir_all(sb.path("out")).unwrap();
    fs::write(sb.path("out/kept"), "old\n").unwrap();
    let url = server.url();
    let text = format!(
        r#"name = "mismatch"
[[step]]
name = "wrong digest"
get_url = {{ url = "{url}/tool", dest = "@ROOT@/out/kept", checksum = "sha256:{wrong}" }}
[[step]]
name = "new file, wrong digest"
get_url = {{ url = "{url}/tool", dest = "@ROOT@/out/new", checksum = "sha256:{wrong}" }}
[[step]]
name = "not there"
get_url = {{ url = "{url}/missing", dest = "@ROOT@/out/missing" }}
[[step]]
name = "not in the list"
get_url = {{ url = "{url}/SHA256SUMS", dest = "@ROOT@/out/sums", checksum = "sha256:{url}/SHA256SUMS" }}
"#,
        wrong = "a".repeat(64)
    );
    let pb = sb.playbook(&text);
    let run = sb.apply(&pb, &[]);
    assert_ne!(run.code, 0);
    let wrong = run.step("wrong digest");
    assert_eq!(wrong.status, StepStatus::Failed);
    let msg = wrong.message.clone().unwrap_or_default();
    assert!(msg.contains("checksum mismatch"), "{msg}");
    // The run stops at the first failure; run the others one by one.
    for (name, expect) in [
        ("new file, wrong digest", "checksum mismatch"),
        ("not there", "404"),
        ("not in the list", "has no sha256 for SHA256SUMS"),
    ] {
        let only = sb.playbook(&format!(
            "name = \"one\"\n{}",
            text.split("[[step]]")
                .find(|s| s.contains(&format!("name = \"{name}\"")))
                .map(|s| format!("[[step]]{s}"))
                .unwrap()
        ));
        let run = sb.apply(&only, &[]);
        let r = run.step(name);
        assert_eq!(r.status, StepStatus::Failed, "{run:#?}");
        let msg = r.message.clone().unwrap_or_default();
        assert!(msg.contains(expect), "{name}: {msg}");
    }
    assert_eq!(read(&sb.path("out/kept")), "old\n");
    // No temporary file left behind, nothing created.
    assert_eq!(listing(&sb.path("out")), ["kept"]);
}

#[test]
fn get_url_sends_headers_and_never_shows_them() {
    let sb = Sandbox::new();
    fs::create_dir_all(sb.path("site")).unwrap();
    fs::write(sb.path("site/private"), "for token holders\n").unwrap();
    let server =
        ArtifactServer::serve_requiring(&sb.path("site"), Some(("x-token", "s3cret-value")))
            .unwrap();
    fs::create_dir_all(sb.path("out")).unwrap();
    let url = server.url();
    let with = sb.playbook(&format!(
        r#"name = "headers"
[[step]]
name = "with the token"
get_url = {{ url = "{url}/private", dest = "@ROOT@/out/private", headers = {{ x-token = "s3cret-value" }}, timeout = "5s" }}
"#
    ));
    let run = sb.apply(&with, &[]);
    run.assert_success();
    assert_eq!(read(&sb.path("out/private")), "for token holders\n");
    let shown = format!("{:?}{}", run.events, run.stderr);
    assert!(!shown.contains("s3cret"), "{shown}");

    let without = sb.playbook(&format!(
        r#"name = "headers"
[[step]]
name = "without"
get_url = {{ url = "http://user:pw-in-url@127.0.0.1:{port}/private", dest = "@ROOT@/out/other" }}
"#,
        port = server.port()
    ));
    let run = sb.apply(&without, &[]);
    let r = run.step("without");
    assert_eq!(r.status, StepStatus::Failed);
    let msg = r.message.clone().unwrap_or_default();
    assert!(msg.contains("401"), "{msg}");
    let shown = format!("{:?}{}", run.events, run.stderr);
    assert!(!shown.contains("pw-in-url"), "{shown}");
    assert!(!sb.path("out/other").exists());
}

#[test]
fn get_url_force_downloads_again_and_reports_only_a_real_change() {
    let sb = Sandbox::new();
    let server = site(&sb, b"v1\n");
    fs::create_dir_all(sb.path("out")).unwrap();
    fs::write(sb.path("out/f"), "v1\n").unwrap();
    let url = server.url();
    let pb = sb.playbook(&format!(
        "name = \"force\"\n[[step]]\nname = \"f\"\nget_url = {{ url = \"{url}/tool\", dest = \"@ROOT@/out/f\", force = true }}\n"
    ));
    let run = sb.apply(&pb, &[]);
    run.assert_success();
    assert_eq!(run.summary().changed, 0);
    assert_eq!(server.downloads("/tool"), 1);
    fs::write(sb.path("site/tool"), "v2\n").unwrap();
    let run = sb.apply(&pb, &[]);
    assert_eq!(run.summary().changed, 1);
    assert_eq!(read(&sb.path("out/f")), "v2\n");
}

#[test]
fn bad_get_url_and_unarchive_arguments_are_refused_where_written() {
    for (args, message) in [
        (
            r#"get_url = { url = "ftp://h/x", dest = "/tmp/x" }"#,
            "not an http:// or https:// URL",
        ),
        (
            r#"get_url = { url = "https://h/x", dest = "/tmp/x", checksum = "md5:00" }"#,
            "algorithm `md5` is not supported",
        ),
        (
            r#"get_url = { url = "https://h/x", dest = "/tmp/x", checksum = "sha256:abc" }"#,
            "neither 64 hex digits",
        ),
        (
            r#"get_url = { url = "https://h/x", dest = "/tmp/", force = false }"#,
            "names a directory",
        ),
        (
            r#"get_url = { url = "https://h/x", dest = "/tmp/x", headers = { "a b" = "c" } }"#,
            "not a valid HTTP header name",
        ),
        (
            r#"unarchive = { src = "https://h/a.tar.gz", dest = "/opt/a" }"#,
            "needs `checksum`",
        ),
        (
            r#"unarchive = { src = "/srv/a.rar", dest = "/opt/a" }"#,
            "cannot tell the format",
        ),
        (
            r#"unarchive = { src = "/srv/a.zip", dest = "/opt/a", checksum = "sha256:00" }"#,
            "`checksum` is for a URL `src`",
        ),
    ] {
        let text = format!("name = \"x\"\n[[step]]\nname = \"a\"\n{args}\n");
        let found = match load(Source::new("t.toml", text.as_str()), &[]) {
            Ok(_) => panic!("{args} was accepted"),
            Err(d) => d.located(),
        };
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].line, 4, "{found:#?}");
        assert!(found[0].message.contains(message), "{args}: {found:#?}");
    }
}

/// The entries the archives of these tests hold: (path, mode, content); a content starting
/// with `->` is a symlink, a path ending in `/` a directory.
const TREE: &[(&str, u32, &str)] = &[
    ("app/", 0o755, ""),
    ("app/bin/", 0o750, ""),
    ("app/bin/run", 0o755, "#!/bin/sh\necho run\n"),
    ("app/README", 0o644, "read me\n"),
    ("app/current", 0o777, "->bin/run"),
    ("app/conf/app.toml", 0o600, "port = 8080\n"),
];

fn tar_bytes(tree: &[(&str, u32, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, m, content) in tree {
        let mut h = tar::Header::new_gnu();
        h.set_mode(*m);
        h.set_mtime(1_700_000_000);
        if let Some(target) = content.strip_prefix("->") {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, path, target).unwrap();
        } else if path.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            b.append_data(&mut h, path, &[][..]).unwrap();
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(content.len() as u64);
            b.append_data(&mut h, path, content.as_bytes()).unwrap();
        }
    }
    b.into_inner().unwrap()
}

fn zip_bytes(tree: &[(&str, u32, &str)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (path, m, content) in tree {
        let opts = zip::write::SimpleFileOptions::default().unix_permissions(*m);
        if let Some(target) = content.strip_prefix("->") {
            w.add_symlink(*path, target, opts).unwrap();
        } else if let Some(dir) = path.strip_suffix('/') {
            w.add_directory(dir, opts).unwrap();
        } else {
            w.start_file(*path, opts).unwrap();
            w.write_all(content.as_bytes()).unwrap();
        }
    }
    w.finish().unwrap().into_inner()
}

fn write_archives(sb: &Sandbox) {
    fs::create_dir_all(sb.path("files")).unwrap();
    let tar = tar_bytes(TREE);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    fs::write(sb.path("files/app.tar.gz"), gz.finish().unwrap()).unwrap();
    fs::write(
        sb.path("files/app.tar.zst"),
        zstd::encode_all(&tar[..], 3).unwrap(),
    )
    .unwrap();
    fs::write(sb.path("files/app.zip"), zip_bytes(TREE)).unwrap();
    fs::write(sb.path("files/app.bin"), &tar).unwrap();
}

fn assert_tree(dest: &Path) {
    for (path, m, content) in TREE {
        let at = dest.join(path.trim_end_matches('/'));
        let meta = fs::symlink_metadata(&at).unwrap_or_else(|e| panic!("{}: {e}", at.display()));
        if let Some(target) = content.strip_prefix("->") {
            assert_eq!(fs::read_link(&at).unwrap(), Path::new(target));
        } else {
            use std::os::unix::fs::MetadataExt;
            assert_eq!(meta.mode() & 0o7777, *m, "{}", at.display());
            if !path.ends_with('/') {
                assert_eq!(read(&at), *content);
            }
        }
    }
}

#[test]
fn unarchive_unpacks_every_format_and_converges() {
    let sb = Sandbox::new();
    write_archives(&sb);
    for d in ["gz", "zst", "zip", "tar", "url"] {
        fs::create_dir_all(sb.path(&format!("dest/{d}"))).unwrap();
    }
    let server = ArtifactServer::serve(&sb.path("files")).unwrap();
    let digest = sha256(&fs::read(sb.path("files/app.tar.zst")).unwrap());
    let url = server.url();
    let pb = sb.playbook(&format!(
        r#"name = "unarchive"
[[step]]
name = "gz"
unarchive = {{ src = "files/app.tar.gz", dest = "@ROOT@/dest/gz" }}
[[step]]
name = "zst"
unarchive = {{ src = "@ROOT@/files/app.tar.zst", dest = "@ROOT@/dest/zst" }}
[[step]]
name = "zip"
unarchive = {{ src = "files/app.zip", dest = "@ROOT@/dest/zip" }}
[[step]]
name = "tar by format"
unarchive = {{ src = "files/app.bin", format = "tar", dest = "@ROOT@/dest/tar", creates = "@ROOT@/dest/tar/app/README" }}
[[step]]
name = "url"
unarchive = {{ src = "{url}/app.tar.zst", checksum = "sha256:{digest}", dest = "@ROOT@/dest/url" }}
"#
    ));
    let (_check, first, _second) = converge(&sb, &pb);
    assert_eq!(first.summary().changed, 5, "{:?}", first.statuses());
    for d in ["gz", "zst", "zip", "tar", "url"] {
        assert_tree(&sb.path(&format!("dest/{d}")));
        assert_eq!(listing(&sb.path(&format!("dest/{d}"))), ["app"], "{d}");
    }
    // A changed file, a changed mode or a removed entry is put back; `creates` keeps its step ok;
    // a file the archive does not have is left alone.
    fs::write(sb.path("dest/gz/app/README"), "edited\n").unwrap();
    common::chmod(&sb.path("dest/zip/app/bin/run"), 0o700);
    fs::remove_file(sb.path("dest/zst/app/current")).unwrap();
    fs::write(sb.path("dest/tar/app/README"), "edited\n").unwrap();
    fs::write(sb.path("dest/url/app/extra"), "mine\n").unwrap();
    let run = sb.apply(&pb, &[]);
    run.assert_success();
    let changed: Vec<String> = run
        .statuses()
        .into_iter()
        .filter(|(_, s)| *s == StepStatus::Changed)
        .map(|(n, _)| n)
        .collect();
    assert_eq!(changed, ["gz", "zst", "zip"]);
    let msg = run.step("gz").message.clone().unwrap_or_default();
    assert!(msg.contains("app/README: content"), "{msg}");
    for d in ["gz", "zst", "zip"] {
        assert_tree(&sb.path(&format!("dest/{d}")));
    }
    assert_eq!(read(&sb.path("dest/tar/app/README")), "edited\n");
    assert_eq!(read(&sb.path("dest/url/app/extra")), "mine\n");
}

#[test]
fn unarchive_refuses_escaping_corrupt_and_mismatched_archives_and_changes_nothing() {
    let sb = Sandbox::new();
    fs::create_dir_all(sb.path("files")).unwrap();
    fs::create_dir_all(sb.path("dest")).unwrap();
    // Entries that leave dest, written as an attacker would (tar's builder refuses `..`).
    let mut evil = tar_bytes(&[("ok", 0o644, "fine\n"), ("xx/evil", 0o644, "x\n")]);
    let at = evil.windows(7).position(|w| w == b"xx/evil").unwrap();
    evil[at..at + 2].copy_from_slice(b"..");
    let start = at - at % 512; // the second header
    let cksum_at = start + 148;
    let mut header = [0u8; 512];
    header.copy_from_slice(&evil[start..start + 512]);
    header[148..156].fill(b' ');
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    evil[cksum_at..cksum_at + 8].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    fs::write(sb.path("files/evil.tar"), &evil).unwrap();
    fs::write(
        sb.path("files/link.tar"),
        tar_bytes(&[("etc", 0o777, "->/etc"), ("ok", 0o644, "fine\n")]),
    )
    .unwrap();
    let good = tar_bytes(TREE);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&good).unwrap();
    let gz = gz.finish().unwrap();
    fs::write(sb.path("files/cut.tar.gz"), &gz[..gz.len() / 2]).unwrap();
    fs::write(sb.path("files/app.tar.gz"), &gz).unwrap();
    let server = ArtifactServer::serve(&sb.path("files")).unwrap();
    let url = server.url();
    for (name, args, expect) in [
        (
            "dotdot",
            r#"src = "files/evil.tar""#.to_string(),
            "leads out of the destination",
        ),
        (
            "link out",
            r#"src = "files/link.tar""#.to_string(),
            "outside the destination",
        ),
        (
            "truncated",
            r#"src = "files/cut.tar.gz""#.to_string(),
            "cut.tar.gz",
        ),
        (
            "mismatch",
            format!(
                r#"src = "{url}/app.tar.gz", checksum = "sha256:{}""#,
                "b".repeat(64)
            ),
            "checksum mismatch",
        ),
    ] {
        let pb = sb.playbook(&format!(
            "name = \"bad\"\n[[step]]\nname = \"{name}\"\nunarchive = {{ {args}, dest = \"@ROOT@/dest\" }}\n"
        ));
        let run = sb.apply(&pb, &[]);
        let r = run.step(name);
        assert_eq!(r.status, StepStatus::Failed, "{run:#?}");
        let msg = r.message.clone().unwrap_or_default();
        assert!(msg.contains(expect), "{name}: {msg}");
        assert!(listing(&sb.path("dest")).is_empty(), "{name}");
    }
    // An existing symlink on the way is not followed.
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), sb.path("dest/app")).unwrap();
    let pb = sb.playbook(
        "name = \"through\"\n[[step]]\nname = \"through\"\nunarchive = { src = \"files/app.tar.gz\", dest = \"@ROOT@/dest\" }\n",
    );
    let run = sb.apply(&pb, &[]);
    let msg = run.step("through").message.clone().unwrap_or_default();
    assert!(msg.contains("is a symlink"), "{msg}");
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
}

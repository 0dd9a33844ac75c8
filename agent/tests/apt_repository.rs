//! `apt_repository` run by the real `bosund` inside a booted Debian box ([`HostBox`]) against a
//! real signed apt repository: a package built with `dpkg-deb`, its `Packages` and `Release`
//! index written here and the `Release` clear-signed by `gpg` into `InRelease` with a key made
//! for the test, served by the harness' loopback HTTP server (the box shares the host's network).
//! The real `apt-get update` in the box verifies the signature with the key file the step
//! wrote and `Signed-By:` names; a wrong key makes it fail, and the step puts the files back.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use bosun_harness::{ArtifactServer, HostBox};
use bosun_model::event::StepStatus;
use common::{BOSUND, Run};
use sha2::{Digest, Sha256};

const ENV: &[(&str, &str)] = &[("BOSUN_IMDS_ENDPOINT", "http://127.0.0.1:1")];

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().expect("running a tool");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh GnuPG home with one signing key; returns the armoured public key.
fn make_key(home: &Path, uid: &str) -> String {
    fs::create_dir_all(home).unwrap();
    common::chmod(home, 0o700);
    sh(Command::new("gpg").env("GNUPGHOME", home).args([
        "--batch",
        "--passphrase",
        "",
        "--quick-gen-key",
        uid,
        "ed25519",
        "sign",
        "never",
    ]));
    sh(Command::new("gpg")
        .env("GNUPGHOME", home)
        .args(["--armor", "--export", uid]))
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A repository at `root` (suite `stable`, component `main`) holding `bosun-hello 1.0`,
/// signed with the key in `gnupg`.
fn make_repo(root: &Path, gnupg: &Path, uid: &str, serial: u32) {
    let pkg = root.join("build/bosun-hello");
    fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
    fs::create_dir_all(pkg.join("usr/share/bosun-hello")).unwrap();
    fs::write(pkg.join("usr/share/bosun-hello/README"), "hello\n").unwrap();
    fs::write(
        pkg.join("DEBIAN/control"),
        "Package: bosun-hello\nVersion: 1.0\nArchitecture: all\nMaintainer: bosun tests <t@example.invalid>\nDescription: test package\n",
    )
    .unwrap();
    let pool = root.join("pool/main");
    fs::create_dir_all(&pool).unwrap();
    let deb = pool.join("bosun-hello_1.0_all.deb");
    sh(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&pkg)
        .arg(&deb));
    let deb_bytes = fs::read(&deb).unwrap();
    let packages = format!(
        "Package: bosun-hello\nVersion: 1.0\nArchitecture: all\nMaintainer: bosun tests <t@example.invalid>\nFilename: pool/main/bosun-hello_1.0_all.deb\nSize: {}\nSHA256: {}\nDescription: test package\n\n",
        deb_bytes.len(),
        sha256(&deb_bytes)
    );
    let dist = root.join("dists/stable");
    fs::create_dir_all(dist.join("main/binary-amd64")).unwrap();
    fs::create_dir_all(dist.join("main/binary-all")).unwrap();
    let mut sums = String::new();
    for arch in ["amd64", "all"] {
        let rel = format!("main/binary-{arch}/Packages");
        fs::write(dist.join(&rel), &packages).unwrap();
        sums.push_str(&format!(
            " {} {} {rel}\n",
            sha256(packages.as_bytes()),
            packages.len()
        ));
    }
    let release = format!(
        "Origin: bosun-test\nLabel: bosun-test\nSuite: stable\nCodename: stable\nVersion: {serial}\nDate: {}\nArchitectures: amd64 all\nComponents: main\nSHA256:\n{sums}",
        chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S UTC")
    );
    fs::write(dist.join("Release"), &release).unwrap();
    let _ = fs::remove_file(dist.join("InRelease"));
    sh(Command::new("gpg")
        .env("GNUPGHOME", gnupg)
        .args(["--batch", "--yes", "--local-user", uid, "--clearsign", "-o"])
        .arg(dist.join("InRelease"))
        .arg(dist.join("Release")));
}

fn apply(hb: &HostBox, name: &str, text: &str, args: &[&str]) -> Run {
    let path = format!("/root/{name}.toml");
    hb.write_file(&path, text.as_bytes(), 0o644).unwrap();
    let mut argv = vec!["bosund", "apply", path.as_str(), "--output", "json"];
    argv.extend_from_slice(args);
    Run::from_command(hb.command(&argv, ENV), None)
}

fn box_file(hb: &HostBox, path: &str) -> Option<String> {
    fs::read_to_string(hb.path(path)).ok()
}

#[test]
fn apt_repository_writes_a_signed_by_source_that_apt_accepts_and_puts_files_back_on_failure() {
    HostBox::available().expect("host box prerequisites");
    let work = tempfile::tempdir().unwrap();
    let good = make_key(
        &work.path().join("gnupg"),
        "bosun repo <repo@example.invalid>",
    );
    let other = make_key(
        &work.path().join("other"),
        "someone else <x@example.invalid>",
    );
    let repo = work.path().join("repo");
    make_repo(
        &repo,
        &work.path().join("gnupg"),
        "bosun repo <repo@example.invalid>",
        1,
    );
    fs::write(repo.join("key.asc"), &good).unwrap();
    let server = ArtifactServer::serve(&repo).unwrap();
    let url = server.url();

    let hb = HostBox::boot().expect("booting a host box");
    hb.copy_in(Path::new(BOSUND), "/usr/local/bin/bosund")
        .unwrap();
    let playbook = |key: &str| {
        format!(
            "name = \"repo\"\n[[step]]\nname = \"repo\"\napt_repository = {{ name = \"bosun-test\", uris = [\"{url}\"], suites = [\"stable\"], components = [\"main\"], key = '''{key}''' }}\n"
        )
    };
    let sources = "/etc/apt/sources.list.d/bosun-test.sources";
    let key_file = "/etc/apt/keyrings/bosun-test.asc";

    let check = apply(&hb, "repo", &playbook(&good), &["--check"]);
    assert_eq!(check.step("repo").status, StepStatus::Changed, "{check:#?}");
    let diff = check.step("repo").diff.clone().unwrap_or_default();
    assert!(
        diff.contains("+Signed-By: /etc/apt/keyrings/bosun-test.asc"),
        "{diff}"
    );
    assert!(box_file(&hb, sources).is_none() && box_file(&hb, key_file).is_none());

    let first = apply(&hb, "repo", &playbook(&good), &[]);
    assert_eq!(first.step("repo").status, StepStatus::Changed, "{first:#?}");
    assert_eq!(
        box_file(&hb, sources).unwrap(),
        format!(
            "Types: deb\nURIs: {url}\nSuites: stable\nComponents: main\nSigned-By: {key_file}\n"
        )
    );
    assert_eq!(
        box_file(&hb, key_file).unwrap(),
        good.trim().to_string() + "\n"
    );
    // apt read the repository through the written key: the package is a candidate.
    let policy = hb.sh("apt-cache policy bosun-hello").unwrap();
    assert!(policy.contains("Candidate: 1.0"), "{policy}");
    assert!(policy.contains(&url), "{policy}");

    let second = apply(&hb, "repo", &playbook(&good), &[]);
    assert_eq!(second.step("repo").status, StepStatus::Ok, "{second:#?}");

    // A key that did not sign the repository: apt-get update fails, the old files come back.
    // The repository is signed anew first: apt does not verify an InRelease again that is
    // byte for byte the one it has.
    make_repo(
        &repo,
        &work.path().join("gnupg"),
        "bosun repo <repo@example.invalid>",
        2,
    );
    let wrong = apply(&hb, "repo", &playbook(&other), &[]);
    let r = wrong.step("repo");
    assert_eq!(r.status, StepStatus::Failed, "{wrong:#?}");
    let msg = r.message.clone().unwrap_or_default();
    assert!(
        msg.contains("put back") && msg.contains("apt-get update"),
        "{msg}"
    );
    assert_eq!(
        box_file(&hb, key_file).unwrap(),
        good.trim().to_string() + "\n"
    );

    // The key from a URL with its checksum, under another name; then both removed.
    let by_url = format!(
        "name = \"repo2\"\n[[step]]\nname = \"repo2\"\napt_repository = {{ name = \"bosun-test2\", uris = [\"{url}\"], suites = [\"stable\"], components = [\"main\"], key_url = \"{url}/key.asc\", key_checksum = \"sha256:{}\" }}\n",
        sha256(good.as_bytes())
    );
    let run = apply(&hb, "repo2", &by_url, &[]);
    assert_eq!(run.step("repo2").status, StepStatus::Changed, "{run:#?}");
    assert_eq!(
        box_file(&hb, "/etc/apt/keyrings/bosun-test2.asc").unwrap(),
        good
    );
    let again = apply(&hb, "repo2", &by_url, &[]);
    assert_eq!(again.step("repo2").status, StepStatus::Ok, "{again:#?}");
    assert_eq!(server.downloads("/key.asc"), 1);

    let absent = "name = \"gone\"\n[[step]]\nname = \"a\"\napt_repository = { name = \"bosun-test\", state = \"absent\" }\n[[step]]\nname = \"b\"\napt_repository = { name = \"bosun-test2\", state = \"absent\" }\n";
    let run = apply(&hb, "gone", absent, &[]);
    assert_eq!(run.summary().changed, 2, "{run:#?}");
    assert!(box_file(&hb, sources).is_none() && box_file(&hb, key_file).is_none());
    let run = apply(&hb, "gone", absent, &[]);
    assert_eq!(run.summary().changed, 0, "{run:#?}");
}

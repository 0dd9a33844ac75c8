//! The HTTP API of a real `bosund run`: runs over the Unix socket end to end, validation,
//! the queue, cancellation, the TLS listener's tokens, and the committed OpenAPI document.

mod daemon_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bosun_model::event::{RunEvent, StepStatus};
use daemon_support::{Agent, call_over, is_dead, sleeper, wait_pid};
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn committed_openapi_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = bosun_agent::api::openapi_json();
    if committed != generated {
        if std::env::var_os("BOSUN_BLESS").is_some() {
            std::fs::write(&path, generated).unwrap();
            return;
        }
        panic!(
            "agent/openapi.json is stale: regenerate it with\n  BOSUN_BLESS=1 cargo test -p bosun-agent --test api committed_openapi_is_current"
        );
    }
    let doc: serde_json::Value = serde_json::from_str(&generated).unwrap();
    for path in [
        "/v1/runs",
        "/v1/runs/{id}",
        "/v1/runs/{id}/events",
        "/v1/runs/{id}/cancel",
        "/v1/health",
        "/metrics",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is not documented");
    }
}

#[tokio::test]
async fn a_run_over_the_socket_end_to_end() {
    let agent = Agent::start("", "");
    // Root only: the socket 0600 in a 0700 directory.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&agent.socket), 0o600);
    assert_eq!(mode(agent.socket.parent().unwrap()), 0o700);

    let target = agent.dir.path().join("hello.txt");
    let playbook = format!(
        "name = \"hello\"\n[vars]\ngreeting = \"hi\"\n[[step]]\nname = \"write\"\ncopy = {{ dest = \"{}\", content = \"{{{{ greeting }}}} {{{{ who }}}}\\n\" }}\n",
        target.display()
    );
    std::fs::write(agent.playbooks.join("hello.toml"), &playbook).unwrap();
    let (status, body) = agent
        .call(
            Method::POST,
            "/v1/runs",
            Some(json!({ "playbook": "hello", "vars": { "who": "bosun" } })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().unwrap().to_string();

    let events = agent.follow(&id).await;
    assert!(
        matches!(&events[0], RunEvent::RunStarted { run_id, playbook, .. } if *run_id == id && playbook == "hello"),
        "{events:?}"
    );
    let finished: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::StepFinished(r) => Some((r.name.as_str(), r.status)),
            _ => None,
        })
        .collect();
    assert_eq!(finished, vec![("write", StepStatus::Changed)], "{events:?}");
    assert!(
        matches!(events.last(), Some(RunEvent::Summary(s)) if s.changed == 1 && s.failed == 0),
        "{events:?}"
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "hi bosun\n");

    let (status, run) = agent
        .call(Method::GET, &format!("/v1/runs/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(run["status"], "ok", "{run}");
    assert_eq!(run["summary"]["changed"], 1, "{run}");
    let (_, list) = agent.call(Method::GET, "/v1/runs", None).await;
    assert_eq!(list["runs"][0]["id"], id.as_str(), "{list}");

    // Following a finished run replays it; Last-Event-ID resumes after that event.
    assert_eq!(agent.follow(&id).await, events);
    let mut resumed = agent.events(&id, Some(1)).await;
    let mut rest = Vec::new();
    while let Some(e) = resumed.next().await {
        rest.push(e);
    }
    assert_eq!(rest, events[2..], "resumed after event 1");

    let (_, health) = agent.call(Method::GET, "/v1/health", None).await;
    assert_eq!(
        (health["status"].as_str(), health["queued"].as_u64()),
        (Some("ok"), Some(0)),
        "{health}"
    );
    let (status, metrics) = agent
        .call_text(Method::GET, "/metrics", Bytes::new(), "text/plain")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics.contains("bosun_runs_total{outcome=\"ok\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("bosun_run_queue_depth 0\n"), "{metrics}");
    assert!(metrics.contains("bosun_build_info{version="), "{metrics}");
    let (_, doc) = agent.call(Method::GET, "/v1/openapi.json", None).await;
    assert_eq!(
        doc,
        serde_json::from_str::<serde_json::Value>(&bosun_agent::api::openapi_json()).unwrap()
    );
    let (status, _) = agent.call(Method::GET, "/v1/nothing", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A bundle as `bosun run` makes it: `bosun-bundle.json` naming the playbook, then the files.
fn bundle_of(playbook: &str, files: &[(&str, &str)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let manifest = json!({ "playbook": playbook }).to_string();
    let mut entries = vec![("bosun-bundle.json", manifest.as_str())];
    entries.extend_from_slice(files);
    for (path, text) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o600);
        h.set_cksum();
        tar.append_data(&mut h, path, text.as_bytes()).unwrap();
    }
    tar.into_inner().unwrap()
}

/// `--via api` of a playbook with includes and a template: the bundle is stored by its digest
/// (`PUT`, verified: a body with another digest stores nothing), `GET` says it is held, a run
/// names it and runs from a private directory that is gone when the run has ended; an unknown
/// bundle is 404, an include that leaves the bundle is refused with its location.
#[tokio::test]
async fn a_bundle_is_stored_by_digest_and_runs_from_a_private_directory() {
    let agent = Agent::start("", "");
    let out = agent.dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let site = r#"name = "site"
[[step]]
name = "base"
include = { playbook = "../roles/base.toml", vars = { greeting = "hi" } }
"#;
    let base = r#"name = "base"
[[step]]
name = "users"
template = { src = "templates/user.j2", dest = "{{ out }}/{{ item }}.txt" }
loop = ["ann", "bob"]
"#;
    let bytes = bundle_of(
        "site/site.toml",
        &[
            ("site/site.toml", site),
            ("roles/base.toml", base),
            ("roles/templates/user.j2", "{{ greeting }} {{ item }}\n"),
        ],
    );
    let digest = hex::encode(Sha256::digest(&bytes));
    let path = format!("/v1/bundles/{digest}");
    let cache = agent.state.join("bundles/cache");

    let (status, body) = agent.call(Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = agent
        .call(
            Method::POST,
            "/v1/runs",
            Some(json!({ "bundle": digest, "vars": { "out": out } })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not held yet: {body}");
    assert!(body["help"].as_str().unwrap().contains("PUT"), "{body}");

    // Another body under this name: refused, nothing stored.
    let (status, text) = agent
        .call_text(
            Method::PUT,
            &path,
            Bytes::from(bundle_of("x.toml", &[("x.toml", "name = \"x\"\n")])),
            "application/octet-stream",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("nothing was stored"), "{text}");
    assert!(!cache.exists() || std::fs::read_dir(&cache).unwrap().count() == 0);
    let (status, text) = agent
        .call_text(
            Method::PUT,
            "/v1/bundles/xyz",
            Bytes::new(),
            "application/octet-stream",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    // Bytes under their own digest that are no bundle: refused when sent, not at a run.
    let junk = b"not a tar stream".repeat(64);
    let (status, text) = agent
        .call_text(
            Method::PUT,
            &format!("/v1/bundles/{}", hex::encode(Sha256::digest(&junk))),
            Bytes::from(junk),
            "application/octet-stream",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("cannot be used"), "{text}");
    assert!(!cache.exists() || std::fs::read_dir(&cache).unwrap().count() == 0);

    let (status, text) = agent
        .call_text(
            Method::PUT,
            &path,
            Bytes::from(bytes.clone()),
            "application/octet-stream",
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    // Digests are hex: either case names the same bundle.
    let upper = format!("/v1/bundles/{}", digest.to_ascii_uppercase());
    let (status, body) = agent.call(Method::GET, &upper, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["bytes"], bytes.len(), "{body}");

    let (status, body) = agent
        .call(
            Method::POST,
            "/v1/runs",
            Some(json!({ "bundle": digest, "vars": { "out": out } })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let events = agent.follow(body["id"].as_str().unwrap()).await;
    let finished: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::StepFinished(r) => Some((r.name.as_str(), r.status)),
            _ => None,
        })
        .collect();
    assert_eq!(
        finished,
        [
            ("users [ann]", StepStatus::Changed),
            ("users [bob]", StepStatus::Changed)
        ],
        "{events:?}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("bob.txt")).unwrap(),
        "hi bob\n"
    );
    // Only the cache is left: the run's private directory went with it.
    let left: Vec<String> = std::fs::read_dir(agent.state.join("bundles"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["cache"]);

    // An include that leaves the bundle is refused at its line, nothing runs.
    let escape = bundle_of(
        "pb.toml",
        &[(
            "pb.toml",
            "name = \"e\"\n[[step]]\nname = \"out\"\ninclude = { playbook = \"../../../../etc/x.toml\" }\n",
        )],
    );
    let d = hex::encode(Sha256::digest(&escape));
    let (status, _) = agent
        .call_text(
            Method::PUT,
            &format!("/v1/bundles/{d}"),
            Bytes::from(escape),
            "application/octet-stream",
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = agent
        .call(Method::POST, "/v1/runs", Some(json!({ "bundle": d })))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["diagnostics"][0]["line"], 4, "{body}");
    assert_eq!(body["diagnostics"][0]["file"], "pb.toml", "{body}");
    let (status, body) = agent
        .call(
            Method::POST,
            "/v1/runs",
            Some(json!({ "bundle": d, "playbook_toml": "name = \"x\"" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn bad_submissions_are_refused_with_reasons() {
    let agent = Agent::start("", "");
    let (status, body) = agent
        .call(Method::POST, "/v1/runs", Some(json!({ "playbook_toml": "name = \"x\"\n[[step]]\nname = \"s\"\ncommand = { run = 1 }\n" })))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let d = &body["diagnostics"][0];
    assert_eq!(
        (d["file"].as_str(), d["line"].as_u64(), d["column"].as_u64()),
        (Some("<request>"), Some(4), Some(19)),
        "{body}"
    );
    // A template that is not in the playbooks directory is refused before anything runs.
    let (status, body) = agent
        .call(Method::POST, "/v1/runs", Some(json!({ "playbook_toml": "name = \"x\"\n[[step]]\nname = \"s\"\ntemplate = { src = \"templates/nope.j2\", dest = \"/tmp/x\" }\n" })))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let d = &body["diagnostics"][0];
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(4), Some(20)),
        "{body}"
    );
    assert!(
        d["message"]
            .as_str()
            .unwrap()
            .starts_with("`template` src `templates/nope.j2` does not exist"),
        "{body}"
    );
    assert!(
        d["help"]
            .as_str()
            .unwrap()
            .contains("the agent's playbooks_dir"),
        "{body}"
    );

    let (status, body) = agent
        .call(
            Method::POST,
            "/v1/runs",
            Some(json!({ "playbook": "../agent" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = agent
        .call(
            Method::POST,
            "/v1/runs",
            Some(json!({ "playbook": "missing" })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = agent
        .call(
            Method::POST,
            "/v1/runs",
            Some(json!({ "playbook": "a", "playbook_toml": "" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = agent
        .call(
            Method::POST,
            "/v1/runs",
            Some(json!({ "playbook": "a", "sudo": true })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // A body past 1 MiB is refused once the limit is reached (the rest is not read).
    let raw = tokio::net::UnixStream::connect(&agent.socket)
        .await
        .unwrap();
    let (mut raw, mut writer) = raw.into_split();
    tokio::spawn(async move {
        let body = format!("{{\"playbook_toml\": \"{}\"}}", "#".repeat(2 << 20));
        let head = format!(
            "POST /v1/runs HTTP/1.1\r\nhost: bosund\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        // bosund stops reading at the limit: the rest may fail to send.
        let _ = writer.write_all(head.as_bytes()).await;
        let _ = writer.write_all(body.as_bytes()).await;
    });
    let mut head = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(20), raw.read(&mut head))
        .await
        .expect("an answer before the body")
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    // Nothing ran.
    let (_, list) = agent.call(Method::GET, "/v1/runs", None).await;
    assert_eq!(list["runs"], json!([]), "{list}");
}

#[tokio::test]
async fn runs_queue_past_the_limit_get_429_and_cancel_kills_the_step() {
    let agent = Agent::start("queue_limit = 1", "");
    let pidfile = agent.dir.path().join("sleep.pid");
    let first = agent.submit(&sleeper(&pidfile)).await;
    let pid = wait_pid(&pidfile);
    agent.wait_status(&first, &["running"]).await;

    let second = agent.submit("name = \"second\"\n").await;
    let (status, body) = agent
        .call(
            Method::POST,
            "/v1/runs",
            Some(json!({ "playbook_toml": "name = \"third\"\n" })),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let (_, second_run) = agent
        .call(Method::GET, &format!("/v1/runs/{second}"), None)
        .await;
    assert_eq!(second_run["status"], "queued", "{second_run}");
    let (_, health) = agent.call(Method::GET, "/v1/health", None).await;
    assert_eq!(
        (health["running"].as_str(), health["queued"].as_u64()),
        (Some(first.as_str()), Some(1)),
        "{health}"
    );

    // Cancel the queued run: it never starts.
    let (status, body) = agent
        .call(Method::POST, &format!("/v1/runs/{second}/cancel"), None)
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::ACCEPTED, Some("cancelled")),
        "{body}"
    );

    // Follow the running run live: what has happened so far arrives before it ends.
    let mut live = agent.events(&first, None).await;
    assert!(matches!(
        live.next().await,
        Some(RunEvent::RunStarted { .. })
    ));
    assert!(
        matches!(live.next().await, Some(RunEvent::StepStarted { name, .. }) if name == "sleep")
    );

    // Cancel the running one: the sleep is killed and the run ends at once, not in 30 s.
    let started = Instant::now();
    let (status, body) = agent
        .call(Method::POST, &format!("/v1/runs/{first}/cancel"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let run = agent.wait_status(&first, &["cancelled"]).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "cancel took {:?}",
        started.elapsed()
    );
    assert_eq!(run["summary"]["failed"], 1, "{run}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !is_dead(pid) {
        assert!(
            Instant::now() < deadline,
            "the step's process {pid} survived the cancel"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The live stream goes on with the run's end and stops after the summary.
    let mut events = Vec::new();
    while let Some(e) = live.next().await {
        events.push(e);
    }
    let last_step = events.iter().rev().find_map(|e| match e {
        RunEvent::StepFinished(r) => Some(r.clone()),
        _ => None,
    });
    let last_step = last_step.expect("a step_finished event");
    assert_eq!(
        (last_step.name.as_str(), last_step.status),
        ("sleep", StepStatus::Failed),
        "{events:?}"
    );
    assert!(
        last_step.message.unwrap_or_default().contains("cancelled"),
        "{events:?}"
    );
    assert!(
        matches!(events.last(), Some(RunEvent::Summary(s)) if s.failed == 1),
        "{events:?}"
    );
    let (status, _) = agent
        .call(Method::POST, &format!("/v1/runs/{first}/cancel"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, metrics) = agent
        .call_text(Method::GET, "/metrics", Bytes::new(), "text/plain")
        .await;
    assert!(
        metrics.contains("bosun_runs_total{outcome=\"cancelled\"} 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bosun_runs_rejected_total 1\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_tcp_listener_wants_tls_and_a_token() {
    let token = "s3cret-token-for-the-test";
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let port = bosun_harness::free_port().unwrap();
    let tail = format!(
        "[api.tcp]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntokens = [\"{hash}\"]\n",
        cert_path.display(),
        key_path.display()
    );
    let agent = Agent::start("", &tail);

    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let client = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let call = async |token: Option<&str>| {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connecting over TCP");
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.expect("TLS handshake");
        call_over(tls, Method::GET, "/v1/health", None, token).await
    };
    let (status, body) = call(None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = call(Some("not-the-token-xyz")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = call(Some(token)).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok")),
        "{body}"
    );

    // Plain HTTP on the TLS port gets no answer.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let plain = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::spawn(async move {
            let (sender, conn) = hyper::client::conn::http1::handshake::<
                _,
                http_body_util::Full<Bytes>,
            >(hyper_util::rt::TokioIo::new(tcp))
            .await?;
            tokio::spawn(conn);
            let mut sender = sender;
            sender
                .send_request(
                    hyper::Request::builder()
                        .uri("/v1/health")
                        .header("host", "x")
                        .body(http_body_util::Full::new(Bytes::new()))
                        .unwrap(),
                )
                .await
                .map(|r| r.status())
        }),
    )
    .await
    .expect("bosund closes a plain-text connection on its TLS port")
    .unwrap();
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");

    // The token is never logged, not even a wrong one.
    let log = agent.log_text();
    assert!(
        log.contains("refused an unauthenticated API request"),
        "{log}"
    );
    assert!(
        !log.contains(token) && !log.contains("not-the-token-xyz"),
        "{log}"
    );
}

/// A scoped token (`[[api.tcp.scoped_token]]`), as Jenkins would hold it: it runs the shipped
/// helm-release playbook through the API (helm = the fake-helm stand-in), and gets 403 for
/// another playbook, a variable outside its scope, a playbook's text, a cancel, and a playbook
/// whose shell line a value could reach. Hostile values in allowed variables arrive at helm as
/// plain arguments: nothing runs them (no marker file) and nothing renders them.
#[tokio::test]
async fn a_scoped_token_runs_only_its_playbook_and_its_values_stay_data() {
    let scoped = "jenkins-scoped-token-0123456789";
    let full = "full-access-token-9876543210";
    let hash = |t: &str| hex::encode(Sha256::digest(t.as_bytes()));
    let port = bosun_harness::free_port().unwrap();
    let tail = format!(
        "[api.tcp]\nlisten = \"127.0.0.1:{port}\"\ntokens = [\"{}\"]\n\n[[api.tcp.scoped_token]]\nsha256 = \"{}\"\nplaybooks = [\"helm-release\", \"hook\"]\nvars = [\"name\", \"version\", \"namespace\"]\n",
        hash(full),
        hash(scoped)
    );
    let work = tempfile::tempdir().unwrap();
    let helm_state = work.path().join("helm-state");
    let kubeconfig = work.path().join("kubeconfig.yaml");
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\n").unwrap();
    let marker = work.path().join("MARKER");
    let agent = Agent::start_with_env(
        "",
        &tail,
        &[("FAKE_HELM_STATE", helm_state.to_str().unwrap())],
    );

    // The shipped playbooks; helm-release's helm and kubeconfig defaults point at the stand-in.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks");
    let shipped = std::fs::read_to_string(repo.join("helm-release.toml")).unwrap();
    let fake = bosun_fixtures::bin("fake-helm");
    let release = shipped
        .replace("helm = \"helm\"", &format!("helm = \"{}\"", fake.display()))
        .replace(
            "kubeconfig = \"/etc/rancher/k3s/k3s.yaml\"",
            &format!("kubeconfig = \"{}\"", kubeconfig.display()),
        );
    assert_eq!(release.matches(&*fake.display().to_string()).count(), 1);
    assert!(release.contains(&*kubeconfig.display().to_string()));
    std::fs::write(agent.playbooks.join("helm-release.toml"), release).unwrap();
    std::fs::copy(
        repo.join("backup-rds.toml"),
        agent.playbooks.join("backup-rds.toml"),
    )
    .unwrap();
    std::fs::write(
        agent.playbooks.join("hook.toml"),
        "name = \"hook\"\n[vars]\nname = \"web\"\n[[step]]\nname = \"announce\"\ncommand = { argv = [\"/bin/echo\", \"{{ name }}\"] }\n[[step]]\nname = \"notify\"\ncommand = { run = \"echo deployed {{ name }}\" }\n",
    )
    .unwrap();

    let call = async |method: Method, path: &str, body: Option<serde_json::Value>, token: &str| {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connecting over TCP");
        call_over(tcp, method, path, body, Some(token)).await
    };
    let submit =
        async |body: serde_json::Value| call(Method::POST, "/v1/runs", Some(body), scoped).await;

    // In scope: the release is installed.
    let (status, body) =
        submit(json!({"playbook": "helm-release", "vars": {"name": "web", "version": "18.2.4"}}))
            .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let (status, run) = call(Method::GET, &format!("/v1/runs/{id}"), None, scoped).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a scoped token reads its runs: {run}"
    );
    let run = agent.wait_status(&id, &["ok", "failed"]).await;
    assert_eq!(run["status"], "ok", "{run}\n{}", agent.log_text());

    // Out of scope: 403, nothing runs.
    for (body, want) in [
        (json!({"playbook": "backup-rds"}), "`backup-rds` is outside"),
        (
            json!({"playbook": "helm-release", "vars": {"name": "web", "helm": "/bin/sh"}}),
            "`helm` is outside",
        ),
        (
            json!({"playbook": "helm-release", "vars": {"kubeconfig": "/root/x"}}),
            "`kubeconfig` is outside",
        ),
        (
            json!({"playbook_toml": "name = \"x\"\n[[step]]\nname = \"a\"\ncommand = { run = \"true\" }\n"}),
            "playbook_toml",
        ),
        (
            json!({"playbook": "hook", "vars": {"name": format!("web; touch {}", marker.display())}}),
            "step `notify`: its shell line",
        ),
    ] {
        let (status, answer) = submit(body.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body} -> {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(want),
            "{body} -> {answer}"
        );
        assert!(
            !answer.to_string().contains("/bin/sh") && !answer.to_string().contains("touch"),
            "values are not echoed: {answer}"
        );
    }
    let (status, answer) = call(Method::POST, &format!("/v1/runs/{id}/cancel"), None, scoped).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    // A bundle is a playbook of the caller's: never in a scoped token's scope.
    let digest = "ab".repeat(32);
    let (status, answer) = submit(json!({"bundle": digest})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("bundle"),
        "{answer}"
    );
    for method in [Method::GET, Method::PUT] {
        let (status, answer) = call(
            method.clone(),
            &format!("/v1/bundles/{digest}"),
            None,
            scoped,
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} -> {answer}");
    }

    // Hostile values in allowed variables. Shell text is data: helm_release refuses it as a
    // release name, so neither a shell nor helm ever sees it.
    let m = marker.display();
    let hostile_name = format!("web; touch {m}; $(touch {m}) `touch {m}`");
    let (status, body) =
        submit(json!({"playbook": "helm-release", "vars": {"name": hostile_name}})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let run = agent.wait_status(&id, &["ok", "failed"]).await;
    assert_eq!(run["status"], "failed", "{run}");
    let failed: Vec<String> = agent
        .follow(&id)
        .await
        .into_iter()
        .filter_map(|e| match e {
            RunEvent::StepFinished(r) if r.status == StepStatus::Failed => r.message,
            _ => None,
        })
        .collect();
    assert!(
        failed
            .iter()
            .any(|msg| msg.contains("is not a release name")),
        "{failed:?}"
    );
    // Template text is data: it reaches helm as written, unrendered.
    let (status, body) = submit(json!({"playbook": "helm-release", "vars": {"name": "{{ facts }}", "version": "{% if true %}9{% endif %}"}})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    agent.wait_status(&id, &["ok", "failed"]).await;
    let calls = std::fs::read_to_string(helm_state.join("calls.jsonl")).unwrap();
    let args: Vec<Vec<String>> = calls
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        args.iter().any(|a| a[0] == "upgrade"
            && a[1] == "{{ facts }}"
            && a.contains(&"{% if true %}9{% endif %}".to_string())),
        "helm did not get the values verbatim: {calls}"
    );
    assert!(!calls.contains("touch"), "{calls}");
    assert!(!marker.exists(), "a value ran as shell text");

    // The full token may do what the scoped one may not (cancel of a finished run: 409).
    let (status, answer) = call(Method::POST, &format!("/v1/runs/{id}/cancel"), None, full).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(!marker.exists());
    // What the refusal prevents: the same hostile value through the full token (which may
    // run anything) reaches hook.toml's shell line and runs.
    let (status, body) = call(
        Method::POST,
        "/v1/runs",
        Some(json!({"playbook": "hook", "vars": {"name": format!("web; touch {m}")}})),
        full,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    agent
        .wait_status(body["id"].as_str().unwrap(), &["ok", "failed"])
        .await;
    assert!(
        marker.exists(),
        "the hook's shell line is a real injection path"
    );
    let log = agent.log_text();
    assert!(log.contains("refused a scoped token's run"), "{log}");
    assert!(!log.contains(scoped) && !log.contains(full), "{log}");
}

/// schemathesis (PyPI, in the venv `scripts/test` prepares) against the OpenAPI document a
/// live agent serves: every operation, generated valid and invalid requests; no 5xx and every
/// response as documented. Over a loopback TCP listener (plain HTTP is allowed on loopback;
/// a token is always required), with the token.
#[test]
fn schemathesis_finds_no_server_errors_and_no_schema_violations() {
    let venv = std::env::var_os("BOSUN_TEST_VENV")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::home_dir().map(|h| h.join(".cache/bosun/venv")))
        .expect("a HOME or BOSUN_TEST_VENV");
    let schemathesis = venv.join("bin/schemathesis");
    assert!(
        schemathesis.is_file(),
        "{} is missing: run scripts/test, which installs schemathesis into the venv",
        schemathesis.display()
    );
    let token = "schemathesis-token-0123456789";
    let port = bosun_harness::free_port().unwrap();
    let tail = format!(
        "[api.tcp]\nlisten = \"127.0.0.1:{port}\"\ntokens = [\"{}\"]\n",
        hex::encode(Sha256::digest(token.as_bytes()))
    );
    let agent = Agent::start("", &tail);
    let junit = agent.dir.path().join("schemathesis.xml");
    let out = std::process::Command::new(&schemathesis)
        .arg("run")
        .arg(format!("http://127.0.0.1:{port}/v1/openapi.json"))
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance",
            "--header",
            &format!("Authorization: Bearer {token}"),
            "--max-examples",
            "40",
            "--seed",
            "1",
            "--request-timeout",
            "20",
            "--no-color",
            "--report",
            "junit",
            "--report-junit-path",
        ])
        .arg(&junit)
        // No telemetry, no hypothesis database in the user's home.
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .env("HOME", agent.dir.path())
        .current_dir(agent.dir.path())
        .output()
        .expect("running schemathesis");
    let text = format!(
        "{}\n{}\nbosund log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        agent.log_text()
    );
    assert!(out.status.success(), "schemathesis failed:\n{text}");
    // It did test the API: every operation is a test case of its report, none failed.
    let report = std::fs::read_to_string(&junit).expect("schemathesis' JUnit report");
    for op in [
        "POST /v1/runs",
        "GET /v1/runs",
        "GET /v1/runs/{id}",
        "GET /v1/runs/{id}/events",
        "POST /v1/runs/{id}/cancel",
        "GET /v1/bundles/{sha256}",
        "PUT /v1/bundles/{sha256}",
        "GET /v1/health",
        "GET /metrics",
    ] {
        assert!(
            report.contains(&format!("testcase name=\"{op}\"")),
            "{op} not tested:\n{report}\n{text}"
        );
    }
    assert!(!report.contains("<failure"), "{report}");
}

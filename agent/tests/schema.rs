//! The committed JSON Schema (`playbooks/schema.json`) matches the playbook types.

use std::path::Path;

#[test]
fn committed_schema_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks/schema.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = bosun_model::playbook::json_schema();
    if committed != generated {
        if std::env::var_os("BOSUN_BLESS").is_some() {
            std::fs::write(&path, generated).unwrap();
            return;
        }
        panic!(
            "playbooks/schema.json is stale: regenerate it with\n  cargo run -p bosun-agent --bin bosund -- schema > playbooks/schema.json\n(or run this test with BOSUN_BLESS=1)"
        );
    }
}

#[test]
fn schema_knows_every_action_and_requires_exactly_one() {
    let schema: serde_json::Value =
        serde_json::from_str(&bosun_model::playbook::json_schema()).unwrap();
    let step = &schema["$defs"]["StepSchema"];
    for key in bosun_model::steps::ACTION_KEYS {
        assert!(
            step["properties"].get(*key).is_some(),
            "no {key} in {step:#}"
        );
    }
    // One action, or a `block`, or an `include`.
    assert_eq!(
        step["oneOf"].as_array().map(Vec::len),
        Some(bosun_model::steps::ACTION_KEYS.len() + 2)
    );
    for key in [
        "block", "rescue", "always", "include", "loop", "tags", "until",
    ] {
        assert!(
            step["properties"].get(key).is_some(),
            "no {key} in {step:#}"
        );
    }
    assert_eq!(step["additionalProperties"], false, "{step:#}");
}

/// Validates TOML playbooks against the committed schema with Python's `jsonschema` (from the
/// test venv: a real, independent validator, as editors use). Returns (file, error) pairs.
fn schema_errors(files: &[std::path::PathBuf]) -> Vec<(String, String)> {
    const SCRIPT: &str = r#"
import json, sys, tomllib, jsonschema
schema = json.load(open(sys.argv[1]))
validator = jsonschema.Draft202012Validator(schema)
for path in sys.argv[2:]:
    with open(path, "rb") as f:
        doc = tomllib.load(f)
    for err in validator.iter_errors(doc):
        print(json.dumps([path, "/".join(map(str, err.absolute_path)) + ": " + err.message]))
"#;
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks/schema.json");
    let out = std::process::Command::new(bosun_harness::venv_program("python"))
        .arg("-c")
        .arg(SCRIPT)
        .arg(&schema)
        .args(files)
        .output()
        .expect("running the venv's python");
    assert!(
        out.status.success(),
        "validator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn shipped_playbooks_satisfy_the_schema_that_editors_use() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks");
    let mut files: Vec<_> = [dir.clone(), dir.join("platform")]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 15, "{files:?}");
    let errors = schema_errors(&files);
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn schema_accepts_whole_value_templates_for_tables_but_not_other_strings() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, daemon: &str| {
        let p = dir.path().join(name);
        std::fs::write(
            &p,
            format!(
                "name = \"t\"\n[secrets]\ntoken = \"env:TOKEN\"\n[[step]]\nname = \"docker\"\ndocker_install = {{ daemon = {daemon} }}\n"
            ),
        )
        .unwrap();
        p
    };
    let good = write("good.toml", "\"{{ docker_daemon }}\"");
    let table = write("table.toml", "{ log-driver = \"json-file\" }");
    let bad = write("bad.toml", "\"json-file\"");
    let errors = schema_errors(&[good, table, bad.clone()]);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].0, bad.display().to_string());
    // jsonschema reports it where the optional action's alternatives begin.
    assert!(
        errors[0].1.starts_with("step/0/docker_install") && errors[0].1.contains("'json-file'"),
        "{errors:#?}"
    );
}

/// The language keys (blocks, includes, loops, tags, until, step vars) are what the schema
/// describes: a playbook using all of them passes; a step with `rescue` but no `block` (no
/// action either) does not.
#[test]
fn schema_describes_blocks_includes_and_loops() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        r#"name = "t"
[[step]]
name = "grp"
tags = ["web"]
vars = { a = 1 }
environment = { X = "1" }
check_mode = false
[[step.block]]
name = "each"
command = { run = "true" }
loop = "{{ items }}"
until = "result.rc == 0"
retries = 2
[[step.rescue]]
name = "inc"
include = { playbook = "common/base.toml", vars = { who = "ann" } }
[[step.always]]
name = "x"
file = { path = "/tmp/x", state = "directory" }
loop = ["a", 1]
"#,
    )
    .unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"t\"\n[[step]]\nname = \"r\"\n[[step.rescue]]\nname = \"x\"\ncommand = { run = \"true\" }\n",
    )
    .unwrap();
    let errors = schema_errors(&[good, bad.clone()]);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].0, bad.display().to_string());
}

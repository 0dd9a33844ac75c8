//! The committed JSON Schema (`playbooks/schema.json`) matches the playbook types.

use std::path::Path;

#[test]
fn committed_schema_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks/schema.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = bosun_agent::playbook::json_schema();
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
        serde_json::from_str(&bosun_agent::playbook::json_schema()).unwrap();
    let step = &schema["$defs"]["StepSchema"];
    for key in bosun_agent::steps::ACTION_KEYS {
        assert!(
            step["properties"].get(*key).is_some(),
            "no {key} in {step:#}"
        );
    }
    assert_eq!(
        step["oneOf"].as_array().map(Vec::len),
        Some(bosun_agent::steps::ACTION_KEYS.len())
    );
    assert_eq!(step["additionalProperties"], false, "{step:#}");
}

//! What `bosun-model` and `bosun-control` link, from `cargo tree -e normal` (the crates built
//! into them, not their tests or build scripts).
//!
//! The model is the part of bosun that reads playbooks and describes runs; it must build
//! without an async runtime, an AWS SDK or SQLite (the fuzz target and `bosun` build it).
//! `bosun` is the operator's CLI: it needs SSH, CloudFormation, S3, SSM and EC2 (`--inventory
//! aws:<stack>`), never the agent's runtime (its SQLite journal, its HTTP server, CloudWatch,
//! RDS, zstd, systemd notify).

use std::process::Command;

/// Crates `package` may not link, each with the reason shown when it does.
const RULES: &[(&str, &[(&str, &str)])] = &[
    (
        "bosun-model",
        &[
            ("tokio", "the model does no I/O and has no runtime"),
            ("aws-", "the model talks to no AWS service"),
            ("rusqlite", "the journal is the agent's"),
            ("reqwest", "the model does no I/O"),
            ("nix", "the model touches no OS"),
            ("bosun-agent", "the model is below the agent"),
        ],
    ),
    (
        "bosun-control",
        &[
            (
                "bosun-agent",
                "control depends on the model, not on the agent",
            ),
            ("rusqlite", "the journal is the agent's"),
            ("axum", "the agent's API server"),
            ("sd-notify", "the agent's systemd notifications"),
            ("aws-sdk-cloudwatch", "the agent's metrics"),
            ("aws-sdk-cloudwatchlogs", "the agent's log shipping"),
            ("aws-sdk-rds", "the agent's RDS snapshots"),
            ("zstd", "the agent's backups"),
        ],
    ),
];

/// The names of the crates `package` links (normal edges only, every target), deduplicated.
fn linked(package: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree", "--locked", "-e", "normal", "--prefix", "none", "--format", "{p}", "-p",
            package,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The rules broken by a package linking `names`.
fn broken(package: &str, names: &[String]) -> Vec<String> {
    let rules = RULES
        .iter()
        .find(|(p, _)| *p == package)
        .map(|(_, r)| *r)
        .unwrap_or_default();
    let mut found = Vec::new();
    for name in names {
        for (forbidden, why) in rules {
            let hit = if forbidden.ends_with('-') {
                name.starts_with(forbidden)
            } else {
                name == forbidden || name.starts_with(&format!("{forbidden}-"))
            };
            if hit && name != package {
                found.push(format!("{package} links {name}: {why}"));
            }
        }
    }
    found
}

#[test]
fn the_model_and_the_control_cli_link_none_of_the_agents_runtime() {
    let mut problems = Vec::new();
    for (package, _) in RULES {
        let names = linked(package);
        assert!(
            names.iter().any(|n| n == package),
            "cargo tree -p {package} did not list the package itself: {names:?}"
        );
        problems.extend(broken(package, &names));
    }
    assert!(
        problems.is_empty(),
        "{} forbidden dependencies (see `cargo tree -e normal -i <crate> -p <package>`):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn a_forbidden_crate_is_caught_by_name_and_prefix() {
    let names: Vec<String> = ["anyhow", "aws-config", "tokio", "tokio-util", "zstd-sys"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let model = broken("bosun-model", &names);
    assert_eq!(model.len(), 3, "{model:?}");
    assert!(model.iter().any(|p| p.contains("aws-config")));
    assert!(model.iter().any(|p| p.contains("links tokio-util")));
    let control = broken("bosun-control", &names);
    assert_eq!(
        control,
        vec!["bosun-control links zstd-sys: the agent's backups"]
    );
}

//! RDS manual snapshot identifiers: RDS's naming rules, which `rds_snapshot`'s `snapshot_id`
//! must satisfy. Creating, listing and waiting for snapshots is the agent's.

/// Why `id` is not a valid DB snapshot identifier, if it is not. RDS's rules: 1 to 255
/// letters, digits and hyphens; a letter first; no hyphen last and no two hyphens in a row.
pub fn snapshot_id_problem(id: &str) -> Option<String> {
    let rule = "1 to 255 letters, digits or hyphens, starting with a letter, not ending with a hyphen, without two hyphens in a row";
    let why = if id.is_empty() {
        "is empty"
    } else if id.len() > 255 {
        "is longer than 255 characters"
    } else if !id.starts_with(|c: char| c.is_ascii_alphabetic()) {
        "does not start with a letter"
    } else if let Some(c) = id.chars().find(|c| !c.is_ascii_alphanumeric() && *c != '-') {
        return Some(format!(
            "snapshot id {id:?} contains {c:?}: an RDS snapshot id is {rule}"
        ));
    } else if id.ends_with('-') {
        "ends with a hyphen"
    } else if id.contains("--") {
        "contains two hyphens in a row"
    } else {
        return None;
    };
    Some(format!(
        "snapshot id {id:?} {why}: an RDS snapshot id is {rule}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_ids_follow_rds_rules() {
        assert_eq!(snapshot_id_problem("bosun-platform-20261128"), None);
        assert_eq!(snapshot_id_problem("a"), None);
        for (bad, why) in [
            ("", "is empty"),
            ("1abc", "does not start with a letter"),
            ("abc-", "ends with a hyphen"),
            ("a--b", "two hyphens in a row"),
            ("a_b", "contains '_'"),
            ("a.b", "contains '.'"),
        ] {
            let p = snapshot_id_problem(bad).unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(p.contains(why), "{bad:?}: {p}");
            assert!(p.contains("starting with a letter"), "{p}");
        }
        assert!(
            snapshot_id_problem(&"a".repeat(256))
                .unwrap()
                .contains("longer than 255")
        );
    }
}

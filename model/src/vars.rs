//! Variables from outside a playbook: `--var k=v` and `--vars-file FILE`.

use std::path::Path;

use anyhow::{Context, bail};
use serde_json::{Map, Value};

/// Parses `--var` arguments (`name=value`): `true` and `false` become booleans, everything
/// else is kept as a string.
pub fn parse_var_args(args: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut vars = Map::new();
    for arg in args {
        let Some((name, value)) = arg.split_once('=') else {
            bail!("--var {arg:?}: expected name=value");
        };
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || name.starts_with(|c: char| c.is_ascii_digit())
        {
            bail!(
                "--var {arg:?}: {name:?} is not a usable variable name (letters, digits, underscores)"
            );
        }
        // `--var debug=false` must be false in `when`; every other value stays a string (a
        // version such as `1.30` must not become a number).
        let value = match value {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            other => Value::String(other.to_string()),
        };
        vars.insert(name.to_string(), value);
    }
    Ok(vars)
}

/// Reads the text of a `--vars-file` named `name`: a TOML table, or a JSON object when `name`
/// ends in `.json`. The caller reads the file.
pub fn parse_vars_file(name: &Path, text: &str) -> anyhow::Result<Map<String, Value>> {
    let path = name;
    let value: Value = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?
    } else {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        serde_json::to_value(table)?
    };
    match value {
        Value::Object(map) => Ok(map),
        _ => bail!("{}: expected a table of name = value", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn var_args_split_on_the_first_equals() {
        let v = parse_var_args(&["a=b=c".into(), "x_1=".into()]).unwrap();
        assert_eq!(v["a"], "b=c");
        assert_eq!(v["x_1"], "");
        let v = parse_var_args(&["on=true".into(), "off=false".into(), "v=1.30".into()]).unwrap();
        assert_eq!(
            (v["on"].clone(), v["off"].clone(), v["v"].clone()),
            (true.into(), false.into(), "1.30".into())
        );
        assert!(parse_var_args(&["novalue".into()]).is_err());
        assert!(parse_var_args(&["1x=2".into()]).is_err());
        assert!(parse_var_args(&["a-b=2".into()]).is_err());
    }
}

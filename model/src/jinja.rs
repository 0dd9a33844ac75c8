//! Jinja templates and expressions (minijinja), as playbooks use them.
//!
//! One [`Jinja`] is built per run. Undefined variables are errors (strict mode), so a typo
//! fails the step instead of writing an empty string into a config file. Trailing newlines are
//! kept, because config files end with one.

use std::collections::HashSet;

use minijinja::value::ValueKind;
use minijinja::{Environment, UndefinedBehavior, Value};

/// The template environment of a run.
pub struct Jinja {
    env: Environment<'static>,
}

impl Default for Jinja {
    fn default() -> Self {
        Self::new()
    }
}

/// True when `s` contains Jinja markup and needs rendering; plain strings skip the engine.
pub fn is_templated(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// The expression of a string that is exactly one `{{ ... }}` and nothing else.
fn single_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    (!inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%"))
        .then_some(inner.trim())
}

impl Jinja {
    /// A strict environment that keeps trailing newlines.
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        // Config files (YAML, TOML, INI, sysctl) spell booleans in lower case; Jinja's Python
        // heritage would write `True`. Everything else is formatted as usual (no escaping:
        // these are config files, not HTML).
        env.set_formatter(|out, state, value| {
            if value.kind() == ValueKind::Bool {
                out.write_str(if value.is_true() { "true" } else { "false" })?;
                Ok(())
            } else {
                minijinja::escape_formatter(out, state, value)
            }
        });
        Self { env }
    }

    /// Renders one template string against `ctx`.
    pub fn render_str(&self, template: &str, ctx: &Value) -> Result<String, minijinja::Error> {
        if !is_templated(template) {
            return Ok(template.to_string());
        }
        self.env.render_str(template, ctx)
    }

    /// Renders a whole template file; errors name `name` and the line.
    pub fn render_named(
        &self,
        name: &str,
        text: &str,
        ctx: &Value,
    ) -> Result<String, minijinja::Error> {
        self.env.render_named_str(name, text, ctx)
    }

    /// Renders every string inside a JSON value (objects and arrays recursively); other values
    /// are kept as they are.
    pub fn render_value(
        &self,
        value: serde_json::Value,
        ctx: &Value,
    ) -> Result<serde_json::Value, minijinja::Error> {
        Ok(match value {
            serde_json::Value::String(s) => match single_expression(&s) {
                // `daemon = "{{ docker_daemon }}"`: a table or list variable passed whole keeps
                // its shape, as in Ansible; a scalar is rendered as text like any template.
                Some(expr) => {
                    let mut v = self.env.compile_expression(expr)?.eval(ctx)?;
                    // A slice, `range(n)` or a filter's lazy result (`select`, `map`) is a list
                    // to the writer, as in Ansible.
                    if v.kind() == ValueKind::Iterable {
                        v = Value::from(v.try_iter()?.collect::<Vec<_>>());
                    }
                    match v.kind() {
                        ValueKind::Map | ValueKind::Seq => {
                            serde_json::to_value(&v).map_err(|e| {
                                minijinja::Error::new(
                                    minijinja::ErrorKind::BadSerialization,
                                    e.to_string(),
                                )
                            })?
                        }
                        _ => serde_json::Value::String(self.render_str(&s, ctx)?),
                    }
                }
                None => serde_json::Value::String(self.render_str(&s, ctx)?),
            },
            serde_json::Value::Array(items) => serde_json::Value::Array(
                items
                    .into_iter()
                    .map(|v| self.render_value(v, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            serde_json::Value::Object(map) => serde_json::Value::Object(
                map.into_iter()
                    .map(|(k, v)| Ok((k, self.render_value(v, ctx)?)))
                    .collect::<Result<_, minijinja::Error>>()?,
            ),
            other => other,
        })
    }

    /// Evaluates a condition such as `when = "facts.arch == 'x86_64'"` to its truthiness.
    pub fn eval_bool(&self, expr: &str, ctx: &Value) -> Result<bool, minijinja::Error> {
        let compiled = self.env.compile_expression(expr)?;
        Ok(compiled.eval(ctx)?.is_true())
    }

    /// Top-level variables a template string reads without defining them itself.
    pub fn template_variables(&self, template: &str) -> Result<HashSet<String>, minijinja::Error> {
        if !is_templated(template) {
            return Ok(HashSet::new());
        }
        Ok(self
            .env
            .template_from_str(template)?
            .undeclared_variables(false))
    }

    /// Top-level variables an expression reads.
    pub fn expression_variables(&self, expr: &str) -> Result<HashSet<String>, minijinja::Error> {
        Ok(self
            .env
            .compile_expression(expr)?
            .undeclared_variables(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_keeps_newline_and_is_strict() {
        let j = Jinja::new();
        let ctx = Value::from_serialize(serde_json::json!({"greeting": "hello"}));
        assert_eq!(j.render_str("{{ greeting }}\n", &ctx).unwrap(), "hello\n");
        let err = j.render_str("{{ nope }}", &ctx).unwrap_err();
        assert_eq!(err.kind(), minijinja::ErrorKind::UndefinedError);
    }

    #[test]
    fn finds_undeclared_variables_but_not_loop_variables() {
        let j = Jinja::new();
        let vars = j
            .template_variables("{% for x in items %}{{ x }}{{ prefix }}{% endfor %}")
            .unwrap();
        assert_eq!(
            vars,
            HashSet::from(["items".to_string(), "prefix".to_string()])
        );
        let vars = j
            .expression_variables("facts.arch == 'x86_64' and enabled")
            .unwrap();
        assert_eq!(
            vars,
            HashSet::from(["facts".to_string(), "enabled".to_string()])
        );
    }

    #[test]
    fn a_whole_table_or_list_variable_keeps_its_shape() {
        let j = Jinja::new();
        let ctx = Value::from_serialize(serde_json::json!({"t": {"a": 1}, "l": [1, 2], "n": 5}));
        let v = serde_json::json!({"x": "{{ t }}", "y": "{{- l -}}", "z": "{{ n }}", "w": "{{ t }} and {{ n }}"});
        let out = j.render_value(v, &ctx).unwrap();
        assert_eq!(out["x"], serde_json::json!({"a": 1}));
        assert_eq!(out["y"], serde_json::json!([1, 2]));
        assert_eq!(out["z"], "5");
        assert!(out["w"].as_str().unwrap().ends_with(" and 5"));
        // Expressions whose value is a lazy sequence are lists too.
        let v = serde_json::json!({"s": "{{ l[1:] }}", "r": "{{ range(2) }}", "m": "{{ l | map('string') }}"});
        let out = j.render_value(v, &ctx).unwrap();
        assert_eq!(out["s"], serde_json::json!([2]));
        assert_eq!(out["r"], serde_json::json!([0, 1]));
        assert_eq!(out["m"], serde_json::json!(["1", "2"]));
    }

    #[test]
    fn booleans_render_in_lower_case() {
        let j = Jinja::new();
        let ctx = Value::from_serialize(serde_json::json!({"on": true, "n": 1}));
        assert_eq!(
            j.render_str("{{ on }} {{ not on }} {{ n }}", &ctx).unwrap(),
            "true false 1"
        );
    }

    #[test]
    fn eval_bool_uses_truthiness() {
        let j = Jinja::new();
        let ctx = Value::from_serialize(serde_json::json!({"n": 0, "s": "x"}));
        assert!(!j.eval_bool("n", &ctx).unwrap());
        assert!(j.eval_bool("s == 'x'", &ctx).unwrap());
    }
}

//! The configuration reference, generated from the schema: the key tables of `docs/configuration.md` and
//! the list of keys `config/example.toml` must mention; and the "K2I keys" table, generated from the K2I
//! declarations in [`super::compat`]. Tests compare them with the checked-in files.

use serde_json::Value;

use super::check::{DURATION_SUFFIXES, SchemaDoc};

/// One documented key.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyDoc {
    /// The table the key lives in (`kafka.format`).
    pub table: String,
    /// The key (`type`).
    pub key: String,
    /// What values look like.
    pub expected: String,
    /// The default, rendered as TOML, or `None` for required or optional-without-default keys.
    pub default: Option<String>,
    /// Whether the key must be given.
    pub required: bool,
    /// The doc comment.
    pub description: String,
}

/// Every key of the schema, tables in document order.
pub fn keys() -> Vec<KeyDoc> {
    let schema = SchemaDoc::for_config();
    let mut out = Vec::new();
    walk(&schema, schema.root(), "", &mut out);
    out
}

fn walk(schema: &SchemaDoc, node: &Value, table: &str, out: &mut Vec<KeyDoc>) {
    let Some(props) = schema.properties(node) else { return };
    let resolved = schema.resolve(node);
    let required: Vec<&str> =
        resolved.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    let mut nested = Vec::new();
    for (key, child) in props {
        let path = if table.is_empty() { key.clone() } else { format!("{table}.{key}") };
        if schema.properties(child).is_some() {
            nested.push((path, child));
            continue;
        }
        let mut expected = schema.describe(child);
        if schema.is_duration(child) {
            let forms: Vec<String> = DURATION_SUFFIXES.iter().map(|(s, _)| format!("`{key}{s}`")).collect();
            expected = format!("{expected} (or {} as integers)", forms.join(" / "));
        }
        out.push(KeyDoc {
            table: table.to_owned(),
            key: key.clone(),
            expected,
            default: child.get("default").filter(|d| !d.is_null()).map(render_toml),
            required: required.contains(&key.as_str()),
            description: description(schema, child),
        });
    }
    for (path, child) in nested {
        walk(schema, child, &path, out);
    }
}

fn description(schema: &SchemaDoc, node: &Value) -> String {
    let text = node
        .get("description")
        .or_else(|| schema.resolve(node).get("description"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn render_toml(value: &Value) -> String {
    match value {
        Value::Object(map) if map.is_empty() => "{}".to_owned(),
        Value::Array(items) if items.is_empty() => "[]".to_owned(),
        other => {
            let table: Result<toml::Table, _> = toml::from_str(&format!("v = {other}"));
            table.ok().and_then(|t| t.get("v").map(ToString::to_string)).unwrap_or_else(|| other.to_string())
        }
    }
}

/// The Markdown key reference: one table per configuration table.
pub fn markdown() -> String {
    let keys = keys();
    let schema = SchemaDoc::for_config();
    let mut out = String::new();
    let mut current: Option<String> = None;
    for key in &keys {
        if current.as_deref() != Some(key.table.as_str()) {
            current = Some(key.table.clone());
            let intro = table_description(&schema, &key.table);
            out.push_str(&format!("\n### `[{}]`\n\n", key.table));
            if !intro.is_empty() {
                out.push_str(&format!("{intro}\n\n"));
            }
            out.push_str("| key | value | default | description |\n|---|---|---|---|\n");
        }
        let default = match (&key.default, key.required) {
            (_, true) => "**required**".to_owned(),
            (Some(d), false) => format!("`{}`", d.replace('|', "\\|")),
            (None, false) => "—".to_owned(),
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            key.key,
            key.expected.replace('|', "\\|"),
            default,
            key.description.replace('|', "\\|")
        ));
    }
    out
}

fn table_description(schema: &SchemaDoc, table: &str) -> String {
    let mut node = schema.root();
    for part in table.split('.') {
        match schema.properties(node).and_then(|p| p.get(part)) {
            Some(child) => node = child,
            None => return String::new(),
        }
    }
    description(schema, node)
}

/// The Markdown "K2I keys" table: every key of K2I's configuration reference, the k2i key it is, and what
/// k2i does with it.
pub fn k2i_markdown() -> String {
    let mut out = String::from("| K2I key | k2i key | status |\n|---|---|---|\n");
    for key in super::compat::K2I_KEYS {
        let target = key.target();
        let target = if target == "—" { target } else { format!("`{target}`") };
        out.push_str(&format!("| `{}` | {} | {} |\n", key.path, target, key.status().replace('|', "\\|")));
    }
    out
}

//! Environment overrides: `K2I_<SECTION>__<KEY>=value` sets `section.key`, for every key of the schema.
//!
//! The rule is general, not a table of variable names: strip `K2I_`, split the rest on `__`, lowercase each
//! part, and walk the schema. Only variables containing `__` are considered, so `K2I_LOG` or `K2I_FAULT`
//! never collide with it. The value is typed by the key's schema: integers and booleans are parsed, arrays
//! are comma-separated (or a TOML array such as `["a", "b"]`), tables (e.g. `kafka.properties`) take a
//! TOML inline table that is merged into the file's (`{ "sasl.password" = "…" }`), and durations accept
//! the `_seconds` / `_ms` forms as in the file. An unknown key is an error naming the variable.

use serde_json::{Map, Value};

use super::Env;
use super::check::{DURATION_SUFFIXES, SchemaDoc, found, join, suggest};
use super::error::{ConfigError, ConfigErrorKind};

/// The prefix of override variables.
pub const PREFIX: &str = "K2I_";

/// Applies every override in `env` to `doc`, in variable-name order.
pub(crate) fn apply(doc: &mut Value, schema: &SchemaDoc, env: &Env, errors: &mut Vec<ConfigError>) {
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(PREFIX) else { continue };
        if !rest.contains("__") {
            continue;
        }
        let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if let Err(mut error) = apply_one(doc, schema, &parts, raw) {
            error.env_var = Some(var.clone());
            errors.push(error);
        }
    }
}

fn apply_one(doc: &mut Value, schema: &SchemaDoc, parts: &[String], raw: &str) -> Result<(), ConfigError> {
    let mut node_schema = schema.root();
    let mut node = doc;
    let mut path = String::new();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let Some(props) = schema.properties(node_schema) else {
            return Err(ConfigError::rule(
                &path,
                format!("is a table of free-form keys: set it as a whole, e.g. {PREFIX}…='{{ \"key\" = \"value\" }}'"),
            ));
        };
        let child_path = join(&path, part);
        let child_schema = match props.get(part.as_str()) {
            Some(s) => s,
            None if last => match duration_form(schema, props, part) {
                // `_seconds` / `_ms` forms are rewritten by the structural check, like in the file.
                Some((base, unit_name)) => {
                    let n = raw.trim().parse::<i64>().map_err(|_| {
                        ConfigError::invalid(
                            &child_path,
                            format!("an integer of {unit_name}"),
                            found(&Value::String(raw.into())),
                        )
                    })?;
                    remove_duration_forms(node, base);
                    set(node, part, Value::from(n));
                    return Ok(());
                }
                None => return Err(unknown(&child_path, part, schema, props)),
            },
            None => return Err(unknown(&child_path, part, schema, props)),
        };
        if last {
            let value = typed_value(schema, child_schema, raw, &child_path)?;
            if schema.is_duration(child_schema) {
                remove_duration_forms(node, part);
            }
            match (node_get(node, part), value) {
                (Some(Value::Object(existing)), Value::Object(overrides)) => existing.extend(overrides),
                (_, value) => set(node, part, value),
            }
            return Ok(());
        }
        if !node.get(part.as_str()).is_some_and(Value::is_object) {
            set(node, part, Value::Object(Map::new()));
        }
        node = node.get_mut(part.as_str()).expect("just inserted");
        node_schema = child_schema;
        path = child_path;
    }
    Ok(())
}

fn unknown(path: &str, part: &str, schema: &SchemaDoc, props: &Map<String, Value>) -> ConfigError {
    let mut candidates: Vec<String> = props.keys().cloned().collect();
    for (name, s) in props {
        if schema.is_duration(s) {
            candidates.extend(DURATION_SUFFIXES.iter().map(|(suffix, _)| format!("{name}{suffix}")));
        }
    }
    ConfigError::new(path, ConfigErrorKind::UnknownKey { suggestion: suggest(part, candidates) })
}

/// If `key` is `<duration key>_seconds` or `_ms`, the duration key and the unit's name.
fn duration_form<'k>(schema: &SchemaDoc, props: &Map<String, Value>, key: &'k str) -> Option<(&'k str, &'static str)> {
    DURATION_SUFFIXES.iter().find_map(|(suffix, unit)| {
        let base = key.strip_suffix(suffix)?;
        let is_duration = props.get(base).is_some_and(|s| schema.is_duration(s));
        is_duration.then_some((base, if *unit == "s" { "seconds" } else { "milliseconds" }))
    })
}

/// An override replaces the duration whichever form the file wrote it in.
fn remove_duration_forms(node: &mut Value, base: &str) {
    if let Value::Object(map) = node {
        map.remove(base);
        for (suffix, _) in DURATION_SUFFIXES {
            map.remove(&format!("{base}{suffix}"));
        }
    }
}

fn node_get<'a>(node: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    node.as_object_mut()?.get_mut(key)
}

fn set(node: &mut Value, key: &str, value: Value) {
    if !node.is_object() {
        *node = Value::Object(Map::new());
    }
    if let Value::Object(map) = node {
        map.insert(key.to_owned(), value);
    }
}

/// Parses a variable's text as the type the schema asks for. Whatever cannot be parsed is passed on as a
/// string, so the structural check reports it with the usual "expected …, found …" message.
fn typed_value(schema: &SchemaDoc, target: &Value, raw: &str, path: &str) -> Result<Value, ConfigError> {
    let resolved = schema.resolve(target);
    let text = raw.trim();
    if schema.properties(target).is_some() || schema.map_values(target).is_some() {
        return parse_toml(text).filter(Value::is_object).ok_or_else(|| {
            ConfigError::invalid(
                path,
                "a TOML inline table such as { key = \"value\" }",
                found(&Value::String(raw.into())),
            )
        });
    }
    let kind = resolved.get("type").and_then(Value::as_str);
    Ok(match kind {
        Some("integer") => text.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::String(raw.into())),
        Some("boolean") => match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Value::Bool(true),
            "false" | "0" | "no" => Value::Bool(false),
            _ => Value::String(raw.into()),
        },
        Some("array") if text.starts_with('[') => parse_toml(text).unwrap_or_else(|| Value::String(raw.into())),
        Some("array") => {
            let item_is_int = resolved.pointer("/items/type").and_then(Value::as_str) == Some("integer");
            Value::Array(
                text.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| match s.parse::<i64>() {
                        Ok(n) if item_is_int => Value::from(n),
                        _ => Value::String(s.to_owned()),
                    })
                    .collect(),
            )
        }
        _ => Value::String(raw.to_owned()),
    })
}

fn parse_toml(text: &str) -> Option<Value> {
    let table: toml::Table = toml::from_str(&format!("v = {text}")).ok()?;
    serde_json::to_value(table.get("v")?).ok()
}

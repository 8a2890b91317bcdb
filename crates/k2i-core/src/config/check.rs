//! The structural check: walks a configuration document against the JSON schema derived from
//! [`super::model`] and reports every unknown key, missing key, wrong type and out-of-range value at once,
//! each with its key path. Invalid entries are removed from the document so the rest can still be
//! deserialized and checked by the semantic rules in [`super::validate`].
//!
//! It also rewrites the K2I duration forms: `name_seconds = N` and `name_ms = N` become `name = "Ns"` /
//! `name = "Nms"` for every key `name` whose type is a duration.

use serde_json::{Map, Value};

use super::error::{ConfigError, ConfigErrorKind};
use super::types::{FORMAT_COLUMN_TYPE, FORMAT_DURATION, FORMAT_PARTITION, SECRET_MARK, check_format};

/// Suffixes of the integer forms of a duration key, and the unit each stands for.
pub(crate) const DURATION_SUFFIXES: [(&str, &str); 2] = [("_seconds", "s"), ("_ms", "ms")];

/// The JSON schema of [`super::Config`], with `$ref` resolution.
pub(crate) struct SchemaDoc {
    root: Value,
}

impl SchemaDoc {
    pub(crate) fn for_config() -> Self {
        Self { root: schemars::schema_for!(super::Config).to_value() }
    }

    pub(crate) fn root(&self) -> &Value {
        &self.root
    }

    /// Follows `$ref`s and unwraps `Option` (`anyOf [X, null]`), keeping the node's own annotations out.
    pub(crate) fn resolve<'a>(&'a self, mut schema: &'a Value) -> &'a Value {
        loop {
            if let Some(target) = schema.get("$ref").and_then(Value::as_str) {
                let name = target.rsplit('/').next().unwrap_or_default();
                match self.root.get("$defs").and_then(|d| d.get(name)) {
                    Some(def) => schema = def,
                    None => return schema,
                }
                continue;
            }
            if schema.get(SECRET_MARK).is_none()
                && let Some(branches) = schema.get("anyOf").and_then(Value::as_array)
            {
                let non_null: Vec<&Value> =
                    branches.iter().filter(|b| b.get("type").and_then(Value::as_str) != Some("null")).collect();
                if non_null.len() == 1 && branches.len() == 2 {
                    schema = non_null[0];
                    continue;
                }
            }
            return schema;
        }
    }

    /// The named properties of an object schema.
    pub(crate) fn properties<'a>(&'a self, schema: &'a Value) -> Option<&'a Map<String, Value>> {
        self.resolve(schema).get("properties").and_then(Value::as_object)
    }

    /// The schema of a map's values (`additionalProperties` given as a schema).
    pub(crate) fn map_values<'a>(&'a self, schema: &'a Value) -> Option<&'a Value> {
        self.resolve(schema).get("additionalProperties").filter(|v| v.is_object())
    }

    pub(crate) fn is_duration(&self, schema: &Value) -> bool {
        self.resolve(schema).get("format").and_then(Value::as_str) == Some(FORMAT_DURATION)
    }

    /// The allowed values of an enum schema (`enum` or `oneOf` of `const`s).
    pub(crate) fn enum_values<'a>(&'a self, schema: &'a Value) -> Option<Vec<&'a str>> {
        let schema = self.resolve(schema);
        if let Some(values) = schema.get("enum").and_then(Value::as_array) {
            return Some(values.iter().filter_map(Value::as_str).collect());
        }
        let branches = schema.get("oneOf").and_then(Value::as_array)?;
        branches.iter().map(|b| b.get("const").and_then(Value::as_str)).collect()
    }

    /// The schema's JSON types, `null` left out.
    fn types<'a>(&'a self, schema: &'a Value) -> Vec<&'a str> {
        match self.resolve(schema).get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).filter(|t| *t != "null").collect(),
            _ => Vec::new(),
        }
    }

    /// What a value of this schema looks like, for error messages and the reference docs.
    pub(crate) fn describe(&self, schema: &Value) -> String {
        let resolved = self.resolve(schema);
        if resolved.get(SECRET_MARK).is_some() {
            return "a string, { env = \"VAR\" } or { file = \"path\" }".to_owned();
        }
        if let Some(values) = self.enum_values(schema) {
            let list: Vec<String> = values.iter().map(|v| format!("\"{v}\"")).collect();
            return format!("one of {}", list.join(", "));
        }
        match resolved.get("format").and_then(Value::as_str) {
            Some(FORMAT_DURATION) => return "a duration such as \"30s\" or \"5m\"".to_owned(),
            Some(FORMAT_PARTITION) => return "a partition transform such as \"day(ts)\"".to_owned(),
            Some(FORMAT_COLUMN_TYPE) => return "an Iceberg type such as \"long\" or \"list<string>\"".to_owned(),
            Some("ip" | "ipv4" | "ipv6") => return "an IP address".to_owned(),
            _ => {}
        }
        match self.types(schema).as_slice() {
            ["string"] => "a string".to_owned(),
            ["boolean"] => "a boolean".to_owned(),
            ["integer"] => {
                let min = resolved.get("minimum").and_then(Value::as_i64);
                let max = resolved.get("maximum").and_then(Value::as_i64);
                match (min, max) {
                    (Some(lo), Some(hi)) => format!("an integer from {lo} to {hi}"),
                    (Some(1), None) => "a positive integer".to_owned(),
                    (Some(0), None) => "a non-negative integer".to_owned(),
                    (Some(lo), None) => format!("an integer ≥ {lo}"),
                    _ => "an integer".to_owned(),
                }
            }
            ["array"] => match resolved.get("items") {
                Some(items) => format!("an array of {}", plural(&self.describe(items))),
                None => "an array".to_owned(),
            },
            ["object"] => "a table".to_owned(),
            _ => "a value".to_owned(),
        }
    }

    /// Checks `value` against `schema`; returns false (after recording errors) when it must be dropped.
    pub(crate) fn check(&self, value: &mut Value, schema: &Value, path: &str, errors: &mut Vec<ConfigError>) -> bool {
        let resolved = self.resolve(schema);
        if resolved.get(SECRET_MARK).is_some() {
            return self.check_secret(value, schema, path, errors);
        }
        if let Some(props) = resolved.get("properties").and_then(Value::as_object) {
            let Value::Object(map) = value else {
                errors.push(ConfigError::invalid(path, "a table", found(value)));
                return false;
            };
            self.rewrite_durations(map, props, path, errors);
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let child_path = join(path, &key);
                let keep = match props.get(&key) {
                    Some(child) => map.get_mut(&key).is_some_and(|v| self.check(v, child, &child_path, errors)),
                    None => {
                        errors.push(ConfigError::new(
                            &child_path,
                            ConfigErrorKind::UnknownKey { suggestion: suggest(&key, self.known_keys(props)) },
                        ));
                        false
                    }
                };
                if !keep {
                    map.remove(&key);
                }
            }
            let required = resolved.get("required").and_then(Value::as_array).into_iter().flatten();
            for key in required.filter_map(Value::as_str) {
                if !map.contains_key(key) && !errors.iter().any(|e| e.path == join(path, key)) {
                    let expected = props.get(key).map(|s| self.describe(s)).unwrap_or_else(|| "a value".to_owned());
                    errors.push(ConfigError::new(join(path, key), ConfigErrorKind::Missing { expected }));
                }
            }
            return true;
        }
        if let Some(value_schema) = self.map_values(schema) {
            let Value::Object(map) = value else {
                errors.push(ConfigError::invalid(path, "a table", found(value)));
                return false;
            };
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let keep = map.get_mut(&key).is_some_and(|v| self.check(v, value_schema, &join(path, &key), errors));
                if !keep {
                    map.remove(&key);
                }
            }
            return true;
        }
        if let Some(values) = self.enum_values(schema) {
            // Serde aliases are not in the schema: a known alias of one of the values is that value.
            if let Some(canonical) = value
                .as_str()
                .filter(|v| !values.contains(v))
                .and_then(|v| ENUM_ALIASES.iter().find(|(alias, to)| *alias == v && values.contains(to)))
                .map(|(_, to)| *to)
            {
                *value = Value::String(canonical.to_owned());
            }
            let ok = value.as_str().is_some_and(|v| values.contains(&v));
            if !ok {
                let mut expected = self.describe(schema);
                if let Some(s) = value.as_str().and_then(|v| suggest(v, values.iter().copied())) {
                    expected = format!("{expected} (did you mean \"{s}\"?)");
                }
                errors.push(ConfigError::invalid(path, expected, found(value)));
            }
            return ok;
        }
        let ok = match (self.types(schema).as_slice(), &mut *value) {
            (["string"], Value::String(s)) => match resolved.get("format").and_then(Value::as_str) {
                Some(format) => match check_format(format, s) {
                    Ok(()) => true,
                    Err(reason) => {
                        errors.push(ConfigError::rule(path, reason));
                        return false;
                    }
                },
                None => true,
            },
            (["boolean"], Value::Bool(_)) => true,
            (["integer"], Value::Number(n)) => match n.as_i64() {
                Some(i) => {
                    let min = resolved.get("minimum").and_then(Value::as_i64);
                    let max = resolved.get("maximum").and_then(Value::as_i64);
                    min.is_none_or(|lo| i >= lo) && max.is_none_or(|hi| i <= hi)
                }
                None => false,
            },
            (["array"], Value::Array(items)) => {
                let item_schema = resolved.get("items").cloned().unwrap_or(Value::Bool(true));
                let mut all = true;
                for (i, item) in items.iter_mut().enumerate() {
                    all &= self.check(item, &item_schema, &format!("{path}[{i}]"), errors);
                }
                // An array with a bad item is reported item by item and dropped as a whole.
                return all;
            }
            _ => false,
        };
        if !ok {
            errors.push(ConfigError::invalid(path, self.describe(schema), found(value)));
        }
        ok
    }

    fn check_secret(&self, value: &Value, schema: &Value, path: &str, errors: &mut Vec<ConfigError>) -> bool {
        let ok = is_secret(value);
        if !ok {
            errors.push(ConfigError::invalid(path, self.describe(schema), found(value)));
        }
        ok
    }

    /// Every key a user may write at this level: the properties and the integer forms of durations.
    fn known_keys<'a>(&'a self, props: &'a Map<String, Value>) -> impl Iterator<Item = String> + 'a {
        props.iter().flat_map(move |(name, schema)| {
            let mut keys = vec![name.clone()];
            if self.is_duration(schema) {
                keys.extend(DURATION_SUFFIXES.iter().map(|(suffix, _)| format!("{name}{suffix}")));
            }
            keys
        })
    }

    fn rewrite_durations(
        &self,
        map: &mut Map<String, Value>,
        props: &Map<String, Value>,
        path: &str,
        errors: &mut Vec<ConfigError>,
    ) {
        for (name, schema) in props {
            if !self.is_duration(schema) {
                continue;
            }
            // The key the duration was first written with, to name it in a conflict.
            let mut written = map.contains_key(name).then(|| name.clone());
            for (suffix, unit) in DURATION_SUFFIXES {
                let alt = format!("{name}{suffix}");
                let Some(raw) = map.remove(&alt) else { continue };
                let alt_path = join(path, &alt);
                let Some(n) = raw.as_i64().filter(|n| *n >= 0) else {
                    let what = if unit == "s" { "seconds" } else { "milliseconds" };
                    errors.push(ConfigError::invalid(
                        &alt_path,
                        format!("a non-negative integer of {what}"),
                        found(&raw),
                    ));
                    continue;
                };
                if let Some(first) = &written {
                    errors.push(ConfigError::rule(
                        &alt_path,
                        format!("conflicts with `{}`; give the duration once", join(path, first)),
                    ));
                    continue;
                }
                map.insert(name.clone(), Value::String(format!("{n}{unit}")));
                written = Some(alt);
            }
        }
    }
}

fn plural(description: &str) -> String {
    if let Some((head, example)) = description.split_once(" such as ") {
        return format!("{} such as {example}", plural(head));
    }
    match description {
        "a string" => "strings".to_owned(),
        "an integer" => "integers".to_owned(),
        other => other.strip_prefix("a ").or_else(|| other.strip_prefix("an ")).unwrap_or(other).to_owned() + "s",
    }
}

/// Joins a key to a path, quoting keys that are not bare TOML keys.
pub(crate) fn join(path: &str, key: &str) -> String {
    let bare = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare { key.to_owned() } else { format!("{key:?}") };
    if path.is_empty() { key } else { format!("{path}.{key}") }
}

/// Describes a found value: its type and, for scalars, the value.
pub(crate) fn found(value: &Value) -> String {
    match value {
        Value::Null => "nothing".to_owned(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) if n.is_f64() => format!("float {n}"),
        Value::Number(n) => format!("integer {n}"),
        Value::String(s) if s.chars().count() > 60 => format!("string {:?}…", s.chars().take(60).collect::<String>()),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(map) if map.keys().any(|k| k.contains("toml_private_datetime")) => "a datetime".to_owned(),
        Value::Object(_) => "a table".to_owned(),
    }
}

/// The candidate closest to `key`, if it is close enough to be what the user meant.
pub(crate) fn suggest<S: AsRef<str>>(key: &str, candidates: impl IntoIterator<Item = S>) -> Option<String> {
    let lower = key.to_ascii_lowercase().replace('-', "_");
    candidates
        .into_iter()
        .map(|c| {
            let c = c.as_ref().to_owned();
            (strsim::damerau_levenshtein(&lower, &c.to_ascii_lowercase().replace('-', "_")), c)
        })
        .filter(|(distance, c)| *distance <= (c.chars().count() / 4).max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// Whether a value has the shape of a secret: a plain string (or a boolean or integer, written as text), or
/// exactly one of `{ env = "VAR" }` / `{ file = "path" }` with a non-empty name.
pub(crate) fn is_secret(value: &Value) -> bool {
    match value {
        Value::String(_) | Value::Bool(_) => true,
        Value::Number(n) => n.is_i64(),
        Value::Object(map) => {
            map.len() == 1
                && ["env", "file"].iter().any(|k| map.get(*k).and_then(Value::as_str).is_some_and(|s| !s.is_empty()))
        }
        _ => false,
    }
}

/// Other spellings of enum values that serde accepts (`#[serde(alias)]`): (alias, value).
const ENUM_ALIASES: [(&str, &str); 2] = [("json-schema", "json_schema"), ("skip", "skip-message")];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_find_near_misses_only() {
        let keys = ["flush_interval", "flush_interval_seconds", "flush_batch_size", "max_size_mb"];
        assert_eq!(suggest("flush_intervall_seconds", keys).as_deref(), Some("flush_interval_seconds"));
        assert_eq!(suggest("max-size-mb", keys).as_deref(), Some("max_size_mb"));
        assert_eq!(suggest("colour", keys), None);
    }

    #[test]
    fn paths_quote_dotted_keys() {
        assert_eq!(join("kafka.properties", "sasl.password"), "kafka.properties.\"sasl.password\"");
        assert_eq!(join("", "kafka"), "kafka");
    }
}

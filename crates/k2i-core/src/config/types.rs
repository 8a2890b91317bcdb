//! Value types of the configuration that are more than a primitive: humane durations, secrets and
//! partition transforms. Each declares its JSON schema by hand so the structural check in
//! [`super::check`] can describe and verify it (`format` names the parser used by [`check_format`]).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

/// Schema `format` of a [`HumanDuration`].
pub(crate) const FORMAT_DURATION: &str = "duration";
/// Schema `format` of a [`PartitionField`].
pub(crate) const FORMAT_PARTITION: &str = "partition-transform";
/// Schema `format` of a [`ColumnType`].
pub(crate) const FORMAT_COLUMN_TYPE: &str = "iceberg-type";
/// Schema extension marking a [`Secret`].
pub(crate) const SECRET_MARK: &str = "x-k2i-secret";

/// Checks a string against the parser named by a schema `format`; `Err` explains what is wrong.
pub(crate) fn check_format(format: &str, value: &str) -> Result<(), String> {
    match format {
        FORMAT_DURATION => HumanDuration::from_str(value).map(drop),
        FORMAT_PARTITION => PartitionField::from_str(value).map(drop),
        FORMAT_COLUMN_TYPE => ColumnType::from_str(value).map(drop),
        "ip" | "ipv4" | "ipv6" => {
            value.parse::<std::net::IpAddr>().map(drop).map_err(|_| format!("`{value}` is not an IP address"))
        }
        _ => Ok(()),
    }
}

/// A duration written the humane way (`"30s"`, `"5m"`, `"1h 30m"`, `"250ms"`).
///
/// Every duration key `name` may also be written `name_seconds = <integer>` or `name_ms = <integer>`, the
/// form K2I configurations use; [`super::check`] rewrites those before deserialization.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(Duration);

impl HumanDuration {
    /// A duration of whole seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// A duration of milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }

    /// The standard-library duration.
    pub const fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s.trim())
            .map(Self)
            .map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. \"30s\", \"5m\" or \"250ms\""))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "format": FORMAT_DURATION })
    }
}

/// Where a secret's value comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Written in the configuration file itself.
    Inline,
    /// Read from this environment variable when the configuration is loaded.
    Env(String),
    /// Read from this file when the configuration is loaded (trailing newline removed).
    File(String),
}

/// A value that must not be shown: a password, a token, a credential.
///
/// Written as a plain string, `{ env = "VAR" }` or `{ file = "path" }`. `Debug` never shows the value and
/// serialization (as in `k2i validate --print`) shows the source instead of the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    source: SecretSource,
    value: Option<String>,
}

impl Secret {
    /// An inline secret.
    pub fn inline(value: impl Into<String>) -> Self {
        Self { source: SecretSource::Inline, value: Some(value.into()) }
    }

    /// Where the value comes from.
    pub fn source(&self) -> &SecretSource {
        &self.source
    }

    /// The value. Secrets read from the environment or a file are resolved by [`super::load`]; a secret that
    /// was not (a `Config` built some other way) is an error naming where its value should come from, never
    /// a panic or an empty string.
    pub fn expose(&self) -> crate::Result<&str> {
        self.value.as_deref().ok_or_else(|| {
            let from = match &self.source {
                SecretSource::Inline => "the configuration".to_owned(),
                SecretSource::Env(var) => format!("environment variable {var}"),
                SecretSource::File(path) => format!("file {path}"),
            };
            crate::Error::new(crate::ErrorKind::Config, "a secret was not resolved when the configuration was loaded")
                .with("from", from)
        })
    }

    /// The value, if it has been read.
    pub(crate) fn value_if_resolved(&self) -> Option<&str> {
        self.value.as_deref()
    }

    /// Reads an `env` or `file` secret; `Err` says what is missing.
    pub(crate) fn resolve(&mut self, env: &super::Env) -> Result<(), String> {
        let value = match &self.source {
            SecretSource::Inline => return Ok(()),
            SecretSource::Env(var) => {
                env.get(var).cloned().ok_or_else(|| format!("environment variable `{var}` is not set"))?
            }
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
                .map_err(|e| format!("cannot read secret file `{path}`: {e}"))?,
        };
        self.value = Some(value);
        Ok(())
    }

    /// Serializes with the value shown, for map entries whose key is not sensitive (e.g.
    /// `security.protocol`). Secrets from `env` and `file` still show only their source.
    fn serialize_revealing<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match (&self.source, &self.value) {
            (SecretSource::Inline, Some(v)) => serializer.serialize_str(v),
            _ => self.serialize(serializer),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            SecretSource::Inline => f.write_str("Secret(<redacted>)"),
            SecretSource::Env(var) => write!(f, "Secret(env {var}: <redacted>)"),
            SecretSource::File(path) => write!(f, "Secret(file {path}: <redacted>)"),
        }
    }
}

/// The text shown instead of an inline secret.
pub const REDACTED: &str = "<redacted>";

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.source {
            SecretSource::Inline => serializer.serialize_str(REDACTED),
            SecretSource::Env(var) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("env", var)?;
                map.end()
            }
            SecretSource::File(path) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("file", path)?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Int(i64),
            Bool(bool),
            Env { env: String },
            File { file: String },
        }
        Ok(match Repr::deserialize(deserializer)? {
            Repr::Text(s) => Secret::inline(s),
            Repr::Int(i) => Secret::inline(i.to_string()),
            Repr::Bool(b) => Secret::inline(b.to_string()),
            Repr::Env { env } => Secret { source: SecretSource::Env(env), value: None },
            Repr::File { file } => Secret { source: SecretSource::File(file), value: None },
        })
    }
}

impl JsonSchema for Secret {
    fn schema_name() -> Cow<'static, str> {
        "Secret".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            SECRET_MARK: true,
            "anyOf": [
                { "type": ["string", "integer", "boolean"] },
                { "type": "object", "properties": { "env": { "type": "string" } }, "required": ["env"],
                  "additionalProperties": false },
                { "type": "object", "properties": { "file": { "type": "string" } }, "required": ["file"],
                  "additionalProperties": false }
            ]
        })
    }
}

/// Whether a map key (a librdkafka property, a FileIO property, an HTTP header) names a sensitive value.
pub fn is_sensitive_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "credential",
        "jaas",
        "authorization",
        "key-id",
        "access-key",
        "account-key",
        "api-key",
        "apikey",
    ]
    .iter()
    .any(|word| key.contains(word))
        || key.ends_with(".key")
}

/// Serializes a map of settings showing plain values, except sensitive keys and secrets from env or file.
pub(crate) fn serialize_settings<S: Serializer>(
    map: &std::collections::BTreeMap<String, Secret>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    struct Entry<'a>(&'a str, &'a Secret);
    impl Serialize for Entry<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            if is_sensitive_key(self.0) { self.1.serialize(serializer) } else { self.1.serialize_revealing(serializer) }
        }
    }
    let mut out = serializer.serialize_map(Some(map.len()))?;
    for (key, value) in map {
        out.serialize_entry(key, &Entry(key, value))?;
    }
    out.end()
}

/// An Iceberg partition transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// The source value itself.
    Identity,
    /// Years since 1970 of a date or timestamp.
    Year,
    /// Months since 1970.
    Month,
    /// Days since 1970.
    Day,
    /// Hours since 1970.
    Hour,
    /// A 32-bit Murmur3 hash modulo N.
    Bucket(u32),
    /// The value truncated to width W.
    Truncate(u32),
}

/// One partition field: a transform of a source column, written `day(ts)` or `bucket(16, user_id)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionField {
    /// The transform.
    pub transform: Transform,
    /// The source column; dots separate nested fields.
    pub column: String,
}

impl fmt::Display for PartitionField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.transform {
            Transform::Identity => write!(f, "identity({})", self.column),
            Transform::Year => write!(f, "year({})", self.column),
            Transform::Month => write!(f, "month({})", self.column),
            Transform::Day => write!(f, "day({})", self.column),
            Transform::Hour => write!(f, "hour({})", self.column),
            Transform::Bucket(n) => write!(f, "bucket({n}, {})", self.column),
            Transform::Truncate(w) => write!(f, "truncate({w}, {})", self.column),
        }
    }
}

impl FromStr for PartitionField {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const HINT: &str =
            "write identity(col), year(col), month(col), day(col), hour(col), bucket(N, col) or truncate(W, col)";
        let bad = || format!("`{s}` is not a partition transform; {HINT}");
        let text = s.trim();
        let (name, rest) = text.split_once('(').ok_or_else(bad)?;
        let args = rest.strip_suffix(')').ok_or_else(bad)?;
        let args: Vec<&str> = args.split(',').map(str::trim).collect();
        let column = |arg: &str| -> Result<String, String> {
            let valid = !arg.is_empty()
                && arg.split('.').all(|part| !part.is_empty() && part.chars().all(|c| c.is_alphanumeric() || c == '_'));
            if valid { Ok(arg.to_owned()) } else { Err(format!("`{arg}` is not a column name in `{s}`")) }
        };
        let width = |arg: &str| -> Result<u32, String> {
            match arg.parse::<u32>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("`{arg}` in `{s}` must be a positive integer")),
            }
        };
        let (transform, col) = match (name.trim().to_ascii_lowercase().as_str(), args.as_slice()) {
            ("identity", [c]) => (Transform::Identity, c),
            ("year" | "years", [c]) => (Transform::Year, c),
            ("month" | "months", [c]) => (Transform::Month, c),
            ("day" | "days", [c]) => (Transform::Day, c),
            ("hour" | "hours", [c]) => (Transform::Hour, c),
            ("bucket", [n, c]) => (Transform::Bucket(width(n)?), c),
            ("truncate", [w, c]) => (Transform::Truncate(width(w)?), c),
            _ => return Err(bad()),
        };
        Ok(Self { transform, column: column(col)? })
    }
}

impl Serialize for PartitionField {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PartitionField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(de::Error::custom)
    }
}

impl JsonSchema for PartitionField {
    fn schema_name() -> Cow<'static, str> {
        "PartitionField".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "format": FORMAT_PARTITION })
    }
}

/// An Iceberg column type written as text (`long`, `list<string>`, `struct<lat: double, lon: double>`).
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnType {
    text: String,
    parsed: iceberg::spec::Type,
}

impl ColumnType {
    /// The Iceberg type; nested field ids are 0 until the table assigns them.
    pub fn iceberg_type(&self) -> &iceberg::spec::Type {
        &self.parsed
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for ColumnType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parser = TypeParser { text: s, pos: 0 };
        let parsed = parser.parse_type().and_then(|t| {
            parser.skip_ws();
            if parser.pos == s.len() { Ok(t) } else { Err(format!("unexpected `{}`", &s[parser.pos..])) }
        });
        parsed.map(|parsed| Self { text: s.trim().to_owned(), parsed }).map_err(|reason| {
            format!(
                "`{s}` is not an Iceberg type ({reason}); write e.g. \"long\", \"timestamptz\", \"decimal(10, 2)\", \
                 \"list<string>\", \"map<string, long>\" or \"struct<lat: double, lon: double>\""
            )
        })
    }
}

struct TypeParser<'a> {
    text: &'a str,
    pos: usize,
}

impl TypeParser<'_> {
    fn skip_ws(&mut self) {
        while self.text[self.pos..].starts_with(char::is_whitespace) {
            self.pos += self.text[self.pos..].chars().next().map_or(1, char::len_utf8);
        }
    }

    fn word(&mut self) -> Result<&str, String> {
        self.skip_ws();
        let rest = &self.text[self.pos..];
        let len = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
        if len == 0 {
            return Err(if rest.is_empty() { "unexpected end".to_owned() } else { format!("unexpected `{rest}`") });
        }
        self.pos += len;
        Ok(&rest[..len])
    }

    fn expect(&mut self, token: char) -> Result<(), String> {
        self.skip_ws();
        if self.text[self.pos..].starts_with(token) {
            self.pos += token.len_utf8();
            Ok(())
        } else {
            Err(format!("expected `{token}`"))
        }
    }

    fn peek(&mut self, token: char) -> bool {
        self.skip_ws();
        self.text[self.pos..].starts_with(token)
    }

    fn number(&mut self) -> Result<u32, String> {
        let word = self.word()?;
        word.parse().map_err(|_| format!("`{word}` is not a number"))
    }

    fn parse_type(&mut self) -> Result<iceberg::spec::Type, String> {
        use iceberg::spec::{ListType, MapType, NestedField, PrimitiveType, StructType, Type};
        let name = self.word()?.to_ascii_lowercase();
        let primitive = |p| Ok(Type::Primitive(p));
        match name.as_str() {
            "boolean" | "bool" => primitive(PrimitiveType::Boolean),
            "int" | "integer" => primitive(PrimitiveType::Int),
            "long" | "bigint" => primitive(PrimitiveType::Long),
            "float" => primitive(PrimitiveType::Float),
            "double" => primitive(PrimitiveType::Double),
            "string" => primitive(PrimitiveType::String),
            "binary" => primitive(PrimitiveType::Binary),
            "date" => primitive(PrimitiveType::Date),
            "timestamp" => primitive(PrimitiveType::Timestamp),
            "timestamptz" => primitive(PrimitiveType::Timestamptz),
            "decimal" => {
                self.expect('(')?;
                let precision = self.number()?;
                self.expect(',')?;
                let scale = self.number()?;
                self.expect(')')?;
                if precision == 0 || precision > 38 || scale > precision {
                    return Err(format!(
                        "decimal({precision}, {scale}) needs 1 ≤ precision ≤ 38 and scale ≤ precision"
                    ));
                }
                primitive(PrimitiveType::Decimal { precision, scale })
            }
            "list" => {
                self.expect('<')?;
                let element = self.parse_type()?;
                self.expect('>')?;
                Ok(Type::List(ListType::new(NestedField::list_element(0, element, false).into())))
            }
            "map" => {
                self.expect('<')?;
                let key = self.parse_type()?;
                if key != Type::Primitive(PrimitiveType::String) {
                    return Err("map keys must be string (JSON object keys)".to_owned());
                }
                self.expect(',')?;
                let value = self.parse_type()?;
                self.expect('>')?;
                Ok(Type::Map(MapType::new(
                    NestedField::map_key_element(0, key).into(),
                    NestedField::map_value_element(0, value, false).into(),
                )))
            }
            "struct" => {
                self.expect('<')?;
                let mut fields = Vec::new();
                loop {
                    let field = self.word()?.to_owned();
                    self.expect(':')?;
                    let field_type = self.parse_type()?;
                    if fields.iter().any(|f: &iceberg::spec::NestedFieldRef| f.name == field) {
                        return Err(format!("field `{field}` appears twice"));
                    }
                    fields.push(NestedField::optional(0, field, field_type).into());
                    if !self.peek(',') {
                        break;
                    }
                    self.expect(',')?;
                }
                self.expect('>')?;
                Ok(Type::Struct(StructType::new(fields)))
            }
            other => Err(format!("unknown type `{other}`")),
        }
    }
}

impl Serialize for ColumnType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for ColumnType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(de::Error::custom)
    }
}

impl JsonSchema for ColumnType {
    fn schema_name() -> Cow<'static, str> {
        "ColumnType".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "format": FORMAT_COLUMN_TYPE })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Env;
    use super::*;

    #[test]
    fn durations_parse_humane_strings() {
        assert_eq!("30s".parse::<HumanDuration>().unwrap(), HumanDuration::from_secs(30));
        assert_eq!("5m".parse::<HumanDuration>().unwrap(), HumanDuration::from_secs(300));
        assert_eq!("250ms".parse::<HumanDuration>().unwrap(), HumanDuration::from_millis(250));
        assert_eq!("1h 30m".parse::<HumanDuration>().unwrap(), HumanDuration::from_secs(5400));
        let err = "thirty".parse::<HumanDuration>().unwrap_err();
        assert!(err.starts_with("`thirty` is not a duration"), "{err}");
        assert_eq!(HumanDuration::from_secs(90).to_string(), "1m 30s");
    }

    #[test]
    fn partition_transforms_parse_and_print() {
        for text in ["identity(region)", "day(ts)", "bucket(16, user_id)", "truncate(4, payload.code)", "hour(ts)"] {
            let field: PartitionField = text.parse().unwrap();
            assert_eq!(field.to_string(), text);
        }
        assert_eq!("days(ts)".parse::<PartitionField>().unwrap().transform, Transform::Day);
        assert!("bucket(0, id)".parse::<PartitionField>().unwrap_err().contains("must be a positive integer"));
        assert!("bucket(id)".parse::<PartitionField>().unwrap_err().contains("is not a partition transform"));
        assert!("day(a b)".parse::<PartitionField>().unwrap_err().contains("is not a column name"));
        assert!("ts".parse::<PartitionField>().is_err());
    }

    #[test]
    fn column_types_parse_nested_iceberg_types() {
        use iceberg::spec::{PrimitiveType, Type};
        assert_eq!(*"long".parse::<ColumnType>().unwrap().iceberg_type(), Type::Primitive(PrimitiveType::Long));
        assert_eq!(
            *"decimal(10, 2)".parse::<ColumnType>().unwrap().iceberg_type(),
            Type::Primitive(PrimitiveType::Decimal { precision: 10, scale: 2 })
        );
        let nested = "struct<lat: double, tags: list<string>, attrs: map<string, long>>".parse::<ColumnType>().unwrap();
        let Type::Struct(fields) = nested.iceberg_type() else { panic!("a struct") };
        assert_eq!(fields.fields().len(), 3);
        assert!(matches!(*fields.field_by_name("tags").unwrap().field_type, Type::List(_)));
        let err = "list<strng>".parse::<ColumnType>().unwrap_err();
        assert!(err.starts_with("`list<strng>` is not an Iceberg type (unknown type `strng`)"), "{err}");
        assert!("map<long, string>".parse::<ColumnType>().unwrap_err().contains("map keys must be string"));
        assert!("struct<a: long, a: int>".parse::<ColumnType>().unwrap_err().contains("field `a` appears twice"));
        assert!("long extra".parse::<ColumnType>().unwrap_err().contains("unexpected `extra`"));
        assert!("decimal(40, 2)".parse::<ColumnType>().unwrap_err().contains("1 ≤ precision ≤ 38"));
    }

    #[test]
    fn secrets_never_show_their_value() {
        let secret = Secret::inline("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"<redacted>\"");
        assert_eq!(secret.expose().unwrap(), "hunter2");
    }

    #[test]
    fn secrets_resolve_from_env_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        let mut from_file: Secret =
            serde_json::from_str(&format!("{{\"file\":{:?}}}", path.display().to_string())).unwrap();
        from_file.resolve(&Env::new()).unwrap();
        assert_eq!(from_file.expose().unwrap(), "s3cret");
        assert!(format!("{from_file:?}").contains("<redacted>"));

        let mut missing: Secret = serde_json::from_str(r#"{"env":"K2I_TEST_SURELY_UNSET_VARIABLE"}"#).unwrap();
        assert_eq!(
            missing.resolve(&Env::new()).unwrap_err(),
            "environment variable `K2I_TEST_SURELY_UNSET_VARIABLE` is not set"
        );
        let env = Env::from([("K2I_TEST_SURELY_UNSET_VARIABLE".to_owned(), "from-env".to_owned())]);
        missing.resolve(&env).unwrap();
        assert_eq!(missing.expose().unwrap(), "from-env");
        assert_eq!(serde_json::to_string(&missing).unwrap(), r#"{"env":"K2I_TEST_SURELY_UNSET_VARIABLE"}"#);
    }

    #[test]
    fn sensitive_keys_are_recognised() {
        for key in [
            "sasl.password",
            "ssl.key.password",
            "sasl.jaas.config",
            "s3.secret-access-key",
            "Authorization",
            "ssl.key",
            "adls.account-key",
        ] {
            assert!(is_sensitive_key(key), "{key}");
        }
        for key in ["security.protocol", "sasl.mechanism", "s3.region", "fetch.min.bytes"] {
            assert!(!is_sensitive_key(key), "{key}");
        }
    }
}

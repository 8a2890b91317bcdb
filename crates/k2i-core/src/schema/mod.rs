//! Table schemas: the Kafka metadata columns every k2i table has, the payload columns of each format, and
//! for JSON the inference of Iceberg types from records and the additive evolution of the table schema.
//!
//! The table's Iceberg schema is the authority: records are checked against it ([`check_object`]), new
//! fields become optional columns ([`Addition`]) when evolution is on, and anything that does not fit is a
//! [`Conflict`] that the error policy routes.

use iceberg::spec::{ListType, MapType, NestedField, NestedFieldRef, PrimitiveType, Schema, StructType, Type};
use serde_json::Value;

use crate::config::{Config, FormatType};

pub mod evolve;
mod stream;
use crate::error::{Error, ErrorKind, Result};
pub use stream::{Problem, check_json, check_json_declared};

/// Metadata column: the source topic.
pub const COL_TOPIC: &str = "_kafka_topic";
/// Metadata column: the source partition.
pub const COL_PARTITION: &str = "_kafka_partition";
/// Metadata column: the record's offset in its partition.
pub const COL_OFFSET: &str = "_kafka_offset";
/// Metadata column: the record's Kafka timestamp (create or log-append time), UTC.
pub const COL_TIMESTAMP: &str = "_kafka_timestamp";
/// Metadata column: the record key, as bytes.
pub const COL_KEY: &str = "_kafka_key";
/// Metadata column (with `kafka.include_headers`): the record headers, name → bytes.
pub const COL_HEADERS: &str = "_kafka_headers";
/// The payload column of the `raw` format.
pub const COL_VALUE: &str = "value";

/// The metadata columns, in table order (`_kafka_headers` only with `kafka.include_headers`).
pub const METADATA_COLUMNS: [&str; 6] = [COL_TOPIC, COL_PARTITION, COL_OFFSET, COL_TIMESTAMP, COL_KEY, COL_HEADERS];

/// The type of the headers column: `map<string, binary>`.
pub fn headers_type() -> Type {
    Type::Map(MapType::new(
        NestedField::map_key_element(0, Type::Primitive(PrimitiveType::String)).into(),
        NestedField::map_value_element(0, Type::Primitive(PrimitiveType::Binary), false).into(),
    ))
}

/// The optional columns the configuration asks for beyond the required metadata columns, in table order.
pub fn configured_columns(config: &Config) -> Result<Vec<(String, Type)>> {
    let mut columns = vec![
        (COL_TIMESTAMP.to_owned(), Type::Primitive(PrimitiveType::Timestamptz)),
        (COL_KEY.to_owned(), Type::Primitive(PrimitiveType::Binary)),
    ];
    if config.kafka.include_headers {
        columns.push((COL_HEADERS.to_owned(), headers_type()));
    }
    match config.kafka.format.kind {
        FormatType::Raw => columns.push((COL_VALUE.to_owned(), Type::Primitive(PrimitiveType::Binary))),
        FormatType::Json => {
            columns
                .extend(config.kafka.format.columns.iter().map(|(name, t)| (name.clone(), t.iceberg_type().clone())));
        }
        // The payload columns come from the registry's schema (see `initial_schema_with`).
        FormatType::Protobuf | FormatType::Avro | FormatType::JsonSchema => {}
    }
    Ok(columns)
}

/// The schema k2i creates a table with before it has seen a record.
pub fn initial_schema(config: &Config) -> Result<Schema> {
    let mut fields: Vec<NestedFieldRef> = vec![
        NestedField::required(1, COL_TOPIC, Type::Primitive(PrimitiveType::String)).into(),
        NestedField::required(2, COL_PARTITION, Type::Primitive(PrimitiveType::Int)).into(),
        NestedField::required(3, COL_OFFSET, Type::Primitive(PrimitiveType::Long)).into(),
    ];
    let mut next_id = 3;
    for (name, field_type) in configured_columns(config)? {
        next_id += 1;
        let id = next_id;
        let field_type = assign_ids(&field_type, &mut next_id);
        fields.push(NestedField::optional(id, name, field_type).into());
    }
    Schema::builder()
        .with_fields(fields)
        .build()
        .map_err(|e| Error::new(ErrorKind::Internal, "cannot build the initial schema").source(e))
}

/// The schema k2i creates a table with when a registry schema gives the payload columns: the metadata
/// columns, then `payload`'s fields (all optional), with fresh ids.
pub fn initial_schema_with(config: &Config, payload: &StructType) -> Result<Schema> {
    let base = initial_schema(config)?;
    let mut next_id = base.highest_field_id();
    let mut fields: Vec<NestedFieldRef> = base.as_struct().fields().to_vec();
    for field in payload.fields() {
        next_id += 1;
        let id = next_id;
        let field_type = assign_ids(&field.field_type, &mut next_id);
        fields.push(NestedField::optional(id, field.name.clone(), field_type).into());
    }
    Schema::builder()
        .with_fields(fields)
        .build()
        .map_err(|e| Error::new(ErrorKind::Internal, "cannot build the initial schema").source(e))
}

/// Gives nested fields fresh ids after `next_id` (types parsed from text carry id 0).
fn assign_ids(field_type: &Type, next_id: &mut i32) -> Type {
    fn field(f: &NestedFieldRef, next_id: &mut i32) -> NestedFieldRef {
        *next_id += 1;
        let id = *next_id;
        let inner = assign_ids(&f.field_type, next_id);
        let mut copy = NestedField::new(id, f.name.clone(), inner, f.required);
        copy.doc = f.doc.clone();
        copy.into()
    }
    match field_type {
        Type::Primitive(_) => field_type.clone(),
        Type::Struct(s) => Type::Struct(StructType::new(s.fields().iter().map(|f| field(f, next_id)).collect())),
        Type::List(l) => Type::List(ListType::new(field(&l.element_field, next_id))),
        Type::Map(m) => {
            let key = field(&m.key_field, next_id);
            Type::Map(MapType::new(key, field(&m.value_field, next_id)))
        }
    }
}

/// Whether two types are the same, ignoring field ids.
pub fn same_type(a: &Type, b: &Type) -> bool {
    let same_field =
        |x: &NestedFieldRef, y: &NestedFieldRef| x.name == y.name && same_type(&x.field_type, &y.field_type);
    match (a, b) {
        (Type::Primitive(x), Type::Primitive(y)) => x == y,
        (Type::Struct(x), Type::Struct(y)) => {
            x.fields().len() == y.fields().len() && x.fields().iter().zip(y.fields()).all(|(f, g)| same_field(f, g))
        }
        (Type::List(x), Type::List(y)) => same_type(&x.element_field.field_type, &y.element_field.field_type),
        (Type::Map(x), Type::Map(y)) => {
            same_type(&x.key_field.field_type, &y.key_field.field_type)
                && same_type(&x.value_field.field_type, &y.value_field.field_type)
        }
        _ => false,
    }
}

/// Compares an existing table with the configuration: configured columns it lacks are returned as additions;
/// a column with another type is an error naming both.
pub fn reconcile(schema: &Schema, config: &Config) -> Result<Vec<Addition>> {
    let mut additions = Vec::new();
    for (name, wanted) in configured_columns(config)? {
        match schema.field_by_name(&name) {
            Some(field) if same_type(&field.field_type, &wanted) => {}
            Some(field) => {
                return Err(Error::new(ErrorKind::Config, "the table has a configured column with another type")
                    .with("column", &name)
                    .with("table_type", &field.field_type)
                    .with("configured_type", &wanted));
            }
            None => additions.push(Addition { parent: None, name, field_type: wanted }),
        }
    }
    Ok(additions)
}

/// Checks that a table has the required metadata columns with the types k2i writes.
pub fn check_metadata_columns(schema: &Schema) -> Result<()> {
    let expected =
        [(COL_TOPIC, PrimitiveType::String), (COL_PARTITION, PrimitiveType::Int), (COL_OFFSET, PrimitiveType::Long)];
    for (name, ty) in expected {
        match schema.field_by_name(name) {
            Some(field) if *field.field_type == Type::Primitive(ty.clone()) => {}
            Some(field) => {
                return Err(Error::new(ErrorKind::Config, "the table has a metadata column of the wrong type")
                    .with("column", name)
                    .with("expected", &ty)
                    .with("found", &field.field_type));
            }
            None => {
                return Err(Error::new(ErrorKind::Config, "the table lacks a k2i metadata column").with("column", name));
            }
        }
    }
    Ok(())
}

/// A column to add to the table: `parent` is the Iceberg name of the enclosing struct or list (`None` at the
/// top level).
#[derive(Debug, Clone, PartialEq)]
pub struct Addition {
    /// The enclosing field's full name, if nested.
    pub parent: Option<String>,
    /// The new field's name.
    pub name: String,
    /// Its type; every field added by k2i is optional.
    pub field_type: Type,
}

impl Addition {
    /// The full dotted name of the new column.
    pub fn full_name(&self) -> String {
        match &self.parent {
            Some(parent) => format!("{parent}.{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// Why a record does not fit the table schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The dotted path of the offending field.
    pub path: String,
    /// What the schema wants.
    pub expected: String,
    /// What the record holds.
    pub found: String,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "field `{}` expected {}, found {}", self.path, self.expected, self.found)
    }
}

/// Checks a JSON object against the table schema's struct. New fields with an inferable type are appended to
/// `additions` (nothing is changed); the first value that cannot be stored is returned as a conflict.
pub fn check_object(
    object: &serde_json::Map<String, Value>,
    schema: &StructType,
    parent: Option<&str>,
    additions: &mut Vec<Addition>,
) -> Result<(), Conflict> {
    for (name, value) in object {
        let path = match parent {
            Some(p) => format!("{p}.{name}"),
            None => name.clone(),
        };
        match schema.field_by_name(name) {
            Some(field) => check_value(value, field, &path, additions)?,
            None => check_new_field(name, value, parent, additions)?,
        }
    }
    for field in schema.fields().iter().filter(|f| f.required) {
        if object.get(&field.name).is_none_or(Value::is_null) && !(parent.is_none() && is_metadata(&field.name)) {
            let path = match parent {
                Some(p) => format!("{p}.{}", field.name),
                None => field.name.clone(),
            };
            return Err(Conflict {
                path,
                expected: format!("a {} (required)", field.field_type),
                found: "nothing".to_owned(),
            });
        }
    }
    Ok(())
}

/// A field the table does not have: a dotted or reserved name is a conflict; an inferable value is an
/// addition; a null or empty value adds nothing yet.
pub(crate) fn check_new_field(
    name: &str,
    value: &Value,
    parent: Option<&str>,
    additions: &mut Vec<Addition>,
) -> Result<(), Conflict> {
    let path = match parent {
        Some(p) => format!("{p}.{name}"),
        None => name.to_owned(),
    };
    if name.contains('.') || name.is_empty() {
        // Iceberg names nested fields with dots, so such a column name would be ambiguous.
        return Err(Conflict {
            path,
            expected: "field names without `.` (nested fields are written as objects)".to_owned(),
            found: format!("the field name {name:?}"),
        });
    }
    if parent.is_none() && METADATA_COLUMNS.contains(&name) {
        return Err(Conflict {
            path,
            expected: "no field with a k2i metadata column's name".to_owned(),
            found: "such a field".to_owned(),
        });
    }
    if let Some(field_type) = infer(value, &path)? {
        additions.push(Addition { parent: parent.map(str::to_owned), name: name.to_owned(), field_type });
    }
    Ok(())
}

fn is_metadata(name: &str) -> bool {
    METADATA_COLUMNS.contains(&name)
}

pub(crate) fn check_value(
    value: &Value,
    field: &NestedField,
    path: &str,
    additions: &mut Vec<Addition>,
) -> Result<(), Conflict> {
    if value.is_null() {
        return if field.required {
            Err(Conflict {
                path: path.to_owned(),
                expected: format!("a {} (required)", field.field_type),
                found: "null".to_owned(),
            })
        } else {
            Ok(())
        };
    }
    let conflict =
        || Conflict { path: path.to_owned(), expected: describe_type(&field.field_type), found: describe_value(value) };
    match (field.field_type.as_ref(), value) {
        (Type::Primitive(p), _) => {
            if fits_primitive(p, value) {
                Ok(())
            } else {
                Err(conflict())
            }
        }
        (Type::Struct(s), Value::Object(object)) => check_object(object, s, Some(path), additions),
        (Type::List(list), Value::Array(items)) => {
            let element = &list.element_field;
            for item in items {
                match (element.field_type.as_ref(), item) {
                    // Fields of structs inside a list are added to the list's element struct.
                    (Type::Struct(s), Value::Object(object)) => check_object(object, s, Some(path), additions)?,
                    _ => check_value(item, element, &format!("{path}.element"), additions)?,
                }
            }
            Ok(())
        }
        (Type::Map(map), Value::Object(object)) => {
            if *map.key_field.field_type != Type::Primitive(PrimitiveType::String) {
                return Err(conflict());
            }
            let mut inside = Vec::new();
            for item in object.values() {
                check_value(item, &map.value_field, &format!("{path}.value"), &mut inside)?;
            }
            // Columns cannot be added inside map values; their data would be dropped silently.
            match inside.first() {
                Some(addition) => Err(Conflict {
                    path: addition.full_name(),
                    expected: "only the fields the map's value type declares".to_owned(),
                    found: format!("a new field `{}`", addition.name),
                }),
                None => Ok(()),
            }
        }
        _ => Err(conflict()),
    }
}

fn fits_primitive(p: &PrimitiveType, value: &Value) -> bool {
    match (p, value) {
        (PrimitiveType::Boolean, Value::Bool(_)) => true,
        (PrimitiveType::Int, Value::Number(n)) => n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
        (PrimitiveType::Long, Value::Number(n)) => n.as_i64().is_some(),
        (PrimitiveType::Float | PrimitiveType::Double, Value::Number(_)) => true,
        (PrimitiveType::String, Value::String(_)) => true,
        // Decimals take JSON numbers and numeric strings ("12.50"), as long as they fit the precision.
        (PrimitiveType::Decimal { precision, scale }, Value::Number(_) | Value::String(_)) => {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let (Ok(p), Ok(s)) = (u8::try_from(*precision), i8::try_from(*scale)) else { return false };
            // arrow truncates digits beyond the scale silently; a value that would lose digits does not fit.
            let fraction = text.split_once('.').map_or("", |(_, f)| f.split(['e', 'E']).next().unwrap_or(""));
            let lossless = fraction.len() <= *scale as usize || fraction[*scale as usize..].bytes().all(|b| b == b'0');
            lossless && arrow_cast::parse::parse_decimal::<arrow_array::types::Decimal128Type>(&text, p, s).is_ok()
        }
        (PrimitiveType::Timestamptz | PrimitiveType::Timestamp, Value::String(s)) => {
            arrow_cast::parse::string_to_datetime(&chrono_utc(), s).is_ok()
        }
        (PrimitiveType::Date, Value::String(s)) => {
            <arrow_array::types::Date32Type as arrow_cast::parse::Parser>::parse(s).is_some()
        }
        _ => false,
    }
}

/// Infers the Iceberg type of a value never seen before; `None` when nothing can be inferred yet (null, an
/// empty array or object), so the field is added once a value shows its type.
pub fn infer(value: &Value, path: &str) -> Result<Option<Type>, Conflict> {
    Ok(match value {
        Value::Null => None,
        Value::Bool(_) => Some(Type::Primitive(PrimitiveType::Boolean)),
        Value::Number(n) if n.is_i64() => Some(Type::Primitive(PrimitiveType::Long)),
        Value::Number(_) => Some(Type::Primitive(PrimitiveType::Double)),
        Value::String(_) => Some(Type::Primitive(PrimitiveType::String)),
        Value::Object(object) => {
            let mut fields: Vec<NestedFieldRef> = Vec::new();
            for (name, child) in object {
                if let Some(t) = infer(child, &format!("{path}.{name}"))? {
                    fields.push(NestedField::optional(0, name, t).into());
                }
            }
            (!fields.is_empty()).then(|| Type::Struct(StructType::new(fields)))
        }
        Value::Array(items) => {
            let mut element: Option<Type> = None;
            for item in items {
                let Some(t) = infer(item, &format!("{path}.element"))? else { continue };
                element = Some(match element {
                    None => t,
                    Some(prev) => merge(prev, t).ok_or_else(|| Conflict {
                        path: path.to_owned(),
                        expected: "array elements of one type".to_owned(),
                        found: "mixed types".to_owned(),
                    })?,
                });
            }
            element.map(|t| Type::List(ListType::new(NestedField::list_element(0, t, false).into())))
        }
    })
}

/// The common type of two inferred types (long and double → double; structs → the union of their fields).
fn merge(a: Type, b: Type) -> Option<Type> {
    use PrimitiveType::{Double, Long};
    match (a, b) {
        (a, b) if a == b => Some(a),
        (Type::Primitive(Long), Type::Primitive(Double)) | (Type::Primitive(Double), Type::Primitive(Long)) => {
            Some(Type::Primitive(Double))
        }
        (Type::Struct(x), Type::Struct(y)) => {
            let mut fields: Vec<NestedFieldRef> = x.fields().to_vec();
            for f in y.fields() {
                match fields.iter().position(|g| g.name == f.name) {
                    Some(i) => {
                        let merged = merge((*fields[i].field_type).clone(), (*f.field_type).clone())?;
                        fields[i] = NestedField::optional(0, &f.name, merged).into();
                    }
                    None => fields.push(f.clone()),
                }
            }
            Some(Type::Struct(StructType::new(fields)))
        }
        (Type::List(x), Type::List(y)) => {
            let merged = merge((*x.element_field.field_type).clone(), (*y.element_field.field_type).clone())?;
            Some(Type::List(ListType::new(NestedField::list_element(0, merged, false).into())))
        }
        _ => None,
    }
}

/// Merges additions found in one batch of records: the same new field seen twice is added once, with the
/// merged type; a conflict between two new values is reported.
pub fn merge_additions(additions: Vec<Addition>) -> Result<Vec<Addition>, Conflict> {
    let mut out: Vec<Addition> = Vec::new();
    for addition in additions {
        match out.iter_mut().find(|a| a.parent == addition.parent && a.name == addition.name) {
            Some(existing) => {
                existing.field_type =
                    merge(existing.field_type.clone(), addition.field_type.clone()).ok_or_else(|| Conflict {
                        path: addition.full_name(),
                        expected: describe_type(&existing.field_type),
                        found: describe_type(&addition.field_type),
                    })?;
            }
            None => out.push(addition),
        }
    }
    Ok(out)
}

fn chrono_utc() -> arrow_array::timezone::Tz {
    "+00:00".parse().expect("UTC is a valid timezone")
}

pub(crate) fn describe_type(t: &Type) -> String {
    match t {
        Type::Primitive(p) => format!("a {p}"),
        Type::Struct(_) => "an object".to_owned(),
        Type::List(_) => "an array".to_owned(),
        Type::Map(_) => "an object (map)".to_owned(),
    }
}

pub(crate) fn describe_value(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) if s.len() > 40 => format!("string {:?}…", s.chars().take(40).collect::<String>()),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn table(fields: Vec<NestedFieldRef>) -> StructType {
        StructType::new(fields)
    }

    fn check(schema: &StructType, value: Value) -> Result<Vec<Addition>, Conflict> {
        let mut additions = Vec::new();
        check_object(value.as_object().unwrap(), schema, None, &mut additions)?;
        merge_additions(additions)
    }

    #[test]
    fn new_fields_are_inferred_as_optional_columns() {
        let schema = table(vec![NestedField::optional(1, "id", Type::Primitive(PrimitiveType::Long)).into()]);
        let adds = check(
            &schema,
            json!({"id": 1, "name": "a", "score": 1.5, "ok": true, "at": "2024-01-01T00:00:00Z", "tags": ["x"], "geo": {"lat": 1.0, "lon": 2}, "gone": null, "empty": []}),
        )
        .unwrap();
        let names: Vec<String> = adds.iter().map(Addition::full_name).collect();
        assert_eq!(names, ["name", "score", "ok", "at", "tags", "geo"]);
        assert_eq!(adds[3].field_type, Type::Primitive(PrimitiveType::String), "RFC 3339 strings stay strings");
        let Type::Struct(geo) = &adds[5].field_type else { panic!("geo is a struct") };
        assert_eq!(*geo.field_by_name("lon").unwrap().field_type, Type::Primitive(PrimitiveType::Long));
    }

    #[test]
    fn nested_new_fields_name_their_parent() {
        let geo = StructType::new(vec![NestedField::optional(3, "lat", Type::Primitive(PrimitiveType::Double)).into()]);
        let schema = table(vec![NestedField::optional(2, "geo", Type::Struct(geo)).into()]);
        let adds = check(&schema, json!({"geo": {"lat": 1, "alt": 30}})).unwrap();
        assert_eq!(
            adds,
            [Addition {
                parent: Some("geo".into()),
                name: "alt".into(),
                field_type: Type::Primitive(PrimitiveType::Long)
            }]
        );
    }

    #[test]
    fn conflicts_name_the_field() {
        let schema = table(vec![
            NestedField::optional(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
            NestedField::required(2, "must", Type::Primitive(PrimitiveType::String)).into(),
        ]);
        let conflict = check(&schema, json!({"id": "seven", "must": "x"})).unwrap_err();
        assert_eq!(conflict.to_string(), "field `id` expected a long, found string \"seven\"");
        let conflict = check(&schema, json!({"id": 1.5, "must": "x"})).unwrap_err();
        assert_eq!(conflict.to_string(), "field `id` expected a long, found number 1.5");
        let conflict = check(&schema, json!({"id": 1})).unwrap_err();
        assert_eq!(conflict.to_string(), "field `must` expected a string (required), found nothing");
        let conflict = check(&schema, json!({"must": "x", "_kafka_offset": 3})).unwrap_err();
        assert_eq!(conflict.path, "_kafka_offset");
        let conflict = check(&schema, json!({"must": "x", "user.id": 1})).unwrap_err();
        assert_eq!(conflict.path, "user.id");
        let conflict = check(&schema, json!({"must": "x", "mixed": [1, "a"]})).unwrap_err();
        assert_eq!(conflict.to_string(), "field `mixed` expected array elements of one type, found mixed types");
    }

    #[test]
    fn integers_fit_double_columns_and_types_merge_within_a_batch() {
        let schema = table(vec![NestedField::optional(1, "x", Type::Primitive(PrimitiveType::Double)).into()]);
        assert!(check(&schema, json!({"x": 3})).unwrap().is_empty());
        let mut additions = Vec::new();
        check_object(json!({"y": 1}).as_object().unwrap(), &schema, None, &mut additions).unwrap();
        check_object(json!({"y": 2.5}).as_object().unwrap(), &schema, None, &mut additions).unwrap();
        let merged = merge_additions(additions).unwrap();
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].field_type, Type::Primitive(PrimitiveType::Double));
        let mut additions = Vec::new();
        check_object(json!({"z": 1}).as_object().unwrap(), &schema, None, &mut additions).unwrap();
        check_object(json!({"z": "a"}).as_object().unwrap(), &schema, None, &mut additions).unwrap();
        assert_eq!(merge_additions(additions).unwrap_err().path, "z");
    }

    #[test]
    fn decimals_take_numbers_and_numeric_strings_that_fit() {
        let decimal = Type::Primitive(PrimitiveType::Decimal { precision: 5, scale: 2 });
        let schema = table(vec![NestedField::optional(1, "amount", decimal).into()]);
        assert!(check(&schema, json!({"amount": 12.5})).is_ok());
        assert!(check(&schema, json!({"amount": "123.45"})).is_ok());
        assert_eq!(check(&schema, json!({"amount": "1234.5"})).unwrap_err().path, "amount", "too many digits");
        assert_eq!(check(&schema, json!({"amount": "ten"})).unwrap_err().path, "amount");
        assert_eq!(check(&schema, json!({"amount": "19.999"})).unwrap_err().path, "amount", "would lose a digit");
        assert!(check(&schema, json!({"amount": "19.990"})).is_ok(), "trailing zeros lose nothing");
    }

    /// The streaming check and the Value-based check agree on every document.
    #[test]
    fn streaming_check_matches_the_value_check() {
        let geo =
            StructType::new(vec![NestedField::optional(10, "lat", Type::Primitive(PrimitiveType::Double)).into()]);
        let item =
            StructType::new(vec![NestedField::optional(12, "sku", Type::Primitive(PrimitiveType::String)).into()]);
        let schema = table(vec![
            NestedField::optional(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
            NestedField::optional(2, "n", Type::Primitive(PrimitiveType::Int)).into(),
            NestedField::optional(3, "ok", Type::Primitive(PrimitiveType::Boolean)).into(),
            NestedField::optional(4, "x", Type::Primitive(PrimitiveType::Double)).into(),
            NestedField::optional(5, "s", Type::Primitive(PrimitiveType::String)).into(),
            NestedField::optional(6, "geo", Type::Struct(geo)).into(),
            NestedField::optional(
                7,
                "tags",
                Type::List(ListType::new(
                    NestedField::list_element(11, Type::Primitive(PrimitiveType::String), false).into(),
                )),
            )
            .into(),
            NestedField::optional(
                8,
                "items",
                Type::List(ListType::new(NestedField::list_element(13, Type::Struct(item), false).into())),
            )
            .into(),
            NestedField::optional(9, "at", Type::Primitive(PrimitiveType::Timestamptz)).into(),
            NestedField::required(14, "must", Type::Primitive(PrimitiveType::String)).into(),
        ]);
        let docs = [
            r#"{"must":"m","id":1,"n":2,"ok":true,"x":1,"s":"a","geo":{"lat":1.5},"tags":["a"],"items":[{"sku":"k"}],"at":"2024-01-01T00:00:00Z"}"#,
            r#"{"must":"m","id":"seven"}"#,
            r#"{"must":"m","id":1.5}"#,
            r#"{"must":"m","n":4294967296}"#,
            r#"{"must":"m","x":"no"}"#,
            r#"{"must":"m","s":5}"#,
            r#"{"must":"m","geo":{"lat":"north"}}"#,
            r#"{"must":"m","geo":{"lat":1,"alt":30}}"#,
            r#"{"must":"m","geo":[1]}"#,
            r#"{"must":"m","tags":[1]}"#,
            r#"{"must":"m","tags":"a"}"#,
            r#"{"must":"m","items":[{"sku":"k","qty":2}]}"#,
            r#"{"must":"m","items":[3]}"#,
            r#"{"must":"m","at":"yesterday"}"#,
            r#"{"must":"m","new":{"a":1,"b":[1,2.5]},"empty":[],"nothing":null}"#,
            r#"{"must":"m","user.id":1}"#,
            r#"{"must":"m","_kafka_offset":1}"#,
            r#"{"id":1}"#,
            r#"{"must":null}"#,
            r#"{"must":"m","ok":null,"id":null,"geo":null}"#,
            r#"{"must":"m","mixed":[1,"a"]}"#,
            r#"{"must":"m","n":-3,"id":18446744073709551615}"#,
        ];
        for doc in docs {
            let value: Value = serde_json::from_str(doc).unwrap();
            let mut expected_additions = Vec::new();
            let expected = check_object(value.as_object().unwrap(), &schema, None, &mut expected_additions);
            let mut additions = Vec::new();
            let streamed = check_json(doc.as_bytes(), &schema, &mut additions);
            match (expected, streamed) {
                (Ok(()), Ok(())) => assert_eq!(additions, expected_additions, "{doc}"),
                (Err(c), Err(Problem::Conflict(s))) => assert_eq!(s, c, "{doc}"),
                (e, s) => panic!("{doc}: value check {e:?}, streaming check {s:?}"),
            }
        }
        assert!(matches!(check_json(b"[1]", &schema, &mut Vec::new()), Err(Problem::NotObject("an array"))));
        assert!(matches!(check_json(b"{\"must\": ", &schema, &mut Vec::new()), Err(Problem::NotJson(_))));
        assert!(matches!(check_json(br#"{"must":"m"} x"#, &schema, &mut Vec::new()), Err(Problem::NotJson(_))));
    }

    #[test]
    fn declared_checks_skip_undeclared_keys_but_still_demand_valid_json_in_them() {
        let schema = table(vec![
            NestedField::optional(1, "n", Type::Primitive(PrimitiveType::Long)).into(),
            NestedField::optional(
                2,
                "inner",
                Type::Struct(StructType::new(vec![
                    NestedField::optional(3, "a", Type::Primitive(PrimitiveType::String)).into(),
                ])),
            )
            .into(),
        ]);
        let ok = br#"{"n":1,"free":{"x":[1,"y",{"z":null}]},"inner":{"a":"s","other":2}}"#;
        assert_eq!(check_json_declared(ok, &schema), Ok(()));
        assert!(matches!(check_json_declared(br#"{"n":"x"}"#, &schema), Err(Problem::Conflict(_))));
        // What arrow-json would refuse after the check: a lone surrogate, raw invalid UTF-8.
        assert!(matches!(check_json_declared(br#"{"n":1,"free":"\ud800"}"#, &schema), Err(Problem::NotJson(_))));
        assert!(matches!(check_json_declared(b"{\"n\":1,\"free\":\"\xff\"}", &schema), Err(Problem::NotJson(_))));
    }

    #[test]
    fn timestamps_in_existing_columns_must_parse() {
        let schema = table(vec![NestedField::optional(1, "at", Type::Primitive(PrimitiveType::Timestamptz)).into()]);
        assert!(check(&schema, json!({"at": "2024-05-01T10:00:00Z"})).is_ok());
        assert_eq!(check(&schema, json!({"at": "yesterday"})).unwrap_err().path, "at");
    }
}

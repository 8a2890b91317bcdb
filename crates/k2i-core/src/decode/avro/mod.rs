//! Confluent-framed Avro: a registry schema (with its references) parsed into k2i's own schema model, the
//! Iceberg type of a writer schema, and the binary decoder ([`wire`]) that writes records straight into
//! Arrow columns.
//!
//! The schema JSON is parsed here rather than through a general Avro library: decoding needs exactly the
//! encoding of every type (a `uuid` or `duration` on `fixed` keeps its size and name, which a model that
//! turns logical types into their own kinds can lose), named types resolved across references, and field
//! aliases and defaults for reader-side resolution.
//!
//! # Type mapping
//! Every payload column is optional in Iceberg. `null` fields carry no column; `boolean`, `int`, `long`,
//! `float`, `double`, `string` map to themselves, `bytes` → binary, `record` → struct, `array` → list, `map` →
//! map (string keys), `enum` → string (the symbol), `fixed(n)` → fixed(n); a union of `null` and one type (either
//! order) → that type; any other union → a struct with one optional member per non-null branch, named by its
//! type (`long`, `string`, `array`, …, a named type by its simple name); logical types: `decimal` (bytes or
//! fixed) → decimal(P, S), `uuid` → string, `date` → date, `time-millis` / `time-micros` → time,
//! `timestamp-*` → timestamptz (µs), `local-timestamp-*` → timestamp (µs), `duration` → fixed(12). A record
//! type inside itself is expanded once: the nested occurrence is a JSON text column. See
//! docs/formats/avro.md.

pub mod wire;

use std::collections::HashMap;
use std::sync::Arc;

use iceberg::spec::{ListType, MapType, NestedField, NestedFieldRef, PrimitiveType, StructType, Type};
use serde_json::{Map, Value};

use super::registry::ResolvedSchema;
use crate::error::{Error, ErrorKind, Result};

/// A registry schema parsed: its root type and every named type it (or a reference) defines.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The registry's id of the schema.
    pub id: u32,
    /// The schema's type.
    pub root: Node,
    /// The record types, by index.
    pub(crate) arena: Arc<Arena>,
}

/// The record types of a schema (records refer to each other by index, so recursion is allowed).
#[derive(Debug, Default)]
pub struct Arena {
    pub(crate) records: Vec<Record>,
}

/// A record type.
#[derive(Debug, Clone)]
pub struct Record {
    /// Full name.
    pub name: String,
    /// Fields in declaration (= encoding) order.
    pub fields: Vec<Field>,
}

/// A record field.
#[derive(Debug, Clone)]
pub struct Field {
    /// Its name.
    pub name: String,
    /// Other names a reader accepts for it.
    pub aliases: Vec<String>,
    /// Its default (a reader uses it for a field the writer lacks).
    pub default: Option<Value>,
    /// Its type.
    pub node: Node,
}

/// Time units of timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Milliseconds.
    Millis,
    /// Microseconds.
    Micros,
    /// Nanoseconds (stored floored to µs).
    Nanos,
}

/// An Avro type, resolved (named types by value, records by index).
#[derive(Debug, Clone)]
pub enum Node {
    /// `null`.
    Null,
    /// `boolean`.
    Bool,
    /// `int`.
    Int,
    /// `long`.
    Long,
    /// `float`.
    Float,
    /// `double`.
    Double,
    /// `bytes`.
    Bytes,
    /// `string`.
    Str,
    /// A record, by index in the arena.
    Record(usize),
    /// An enum: full name and symbols.
    Enum(Arc<EnumType>),
    /// An array of items.
    Array(Box<Node>),
    /// A map from strings to values.
    Map(Box<Node>),
    /// A union of branches.
    Union(Arc<[Node]>),
    /// A fixed-size byte string: full name and size.
    Fixed(Arc<str>, usize),
    /// `decimal` on `bytes` (`fixed` = None) or on `fixed(n)`.
    Decimal {
        /// Precision.
        precision: u8,
        /// Scale.
        scale: i8,
        /// The fixed size, if on fixed.
        fixed: Option<usize>,
        /// The fixed type's full name, if on fixed.
        name: Option<Arc<str>>,
    },
    /// `uuid` on `string` or on `fixed(16)` (its full name).
    Uuid(Option<Arc<str>>),
    /// `date` (int days).
    Date,
    /// `time-millis` (int).
    TimeMillis,
    /// `time-micros` (long).
    TimeMicros,
    /// `timestamp-*` (UTC) or `local-timestamp-*` (no zone).
    Timestamp {
        /// The unit of the long.
        unit: Unit,
        /// Whether it is a local timestamp.
        local: bool,
    },
    /// `duration` on `fixed(12)` (its full name).
    Duration(Arc<str>),
}

/// An enum type.
#[derive(Debug)]
pub struct EnumType {
    /// Full name.
    pub name: String,
    /// Symbols by index.
    pub symbols: Vec<Box<str>>,
}

impl Node {
    /// The name of the type in a union-member column and in messages: a named type's simple name, a logical
    /// type's name (`timestamp_millis`), else the Avro type name.
    pub fn type_name(&self, arena: &Arena) -> String {
        let simple = |full: &str| full.rsplit('.').next().unwrap_or(full).to_owned();
        match self {
            Self::Null => "null".into(),
            Self::Bool => "boolean".into(),
            Self::Int => "int".into(),
            Self::Long => "long".into(),
            Self::Float => "float".into(),
            Self::Double => "double".into(),
            Self::Bytes => "bytes".into(),
            Self::Str => "string".into(),
            Self::Record(i) => simple(&arena.records[*i].name),
            Self::Enum(e) => simple(&e.name),
            Self::Array(_) => "array".into(),
            Self::Map(_) => "map".into(),
            Self::Union(_) => "union".into(),
            Self::Fixed(name, _) | Self::Duration(name) => simple(name),
            Self::Decimal { name: Some(name), .. } | Self::Uuid(Some(name)) => simple(name),
            Self::Decimal { name: None, .. } => "decimal".into(),
            Self::Uuid(None) => "uuid".into(),
            Self::Date => "date".into(),
            Self::TimeMillis => "time_millis".into(),
            Self::TimeMicros => "time_micros".into(),
            Self::Timestamp { unit, local } => format!(
                "{}timestamp_{}",
                if *local { "local_" } else { "" },
                match unit {
                    Unit::Millis => "millis",
                    Unit::Micros => "micros",
                    Unit::Nanos => "nanos",
                }
            ),
        }
    }

    /// A named type's full name (for member names that clash by simple name).
    fn full_name(&self, arena: &Arena) -> Option<String> {
        match self {
            Self::Record(i) => Some(arena.records[*i].name.clone()),
            Self::Enum(e) => Some(e.name.clone()),
            Self::Fixed(name, _) | Self::Duration(name) => Some(name.to_string()),
            Self::Decimal { name: Some(name), .. } | Self::Uuid(Some(name)) => Some(name.to_string()),
            _ => None,
        }
    }
}

/// The branches of a union that carry a value, with the index of its `null` branch.
pub(crate) fn split_union(branches: &[Node]) -> (Option<usize>, Vec<(usize, &Node)>) {
    let null = branches.iter().position(|b| matches!(b, Node::Null));
    let values = branches.iter().enumerate().filter(|(_, b)| !matches!(b, Node::Null)).collect();
    (null, values)
}

/// The column names of a union's non-null members, in branch order: the type name, or a named type's full
/// name (dots as `_`) when two members share a simple name.
pub(crate) fn member_names(values: &[(usize, &Node)], arena: &Arena) -> Vec<String> {
    let simple: Vec<String> = values.iter().map(|(_, n)| n.type_name(arena)).collect();
    simple
        .iter()
        .zip(values)
        .map(|(name, (_, node))| {
            if simple.iter().filter(|n| *n == name).count() > 1
                && let Some(full) = node.full_name(arena)
            {
                full.replace('.', "_")
            } else {
                name.clone()
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------------------

/// The largest `fixed` size k2i stores (a null row of a fixed column takes its size too).
const MAX_FIXED: usize = 1 << 20;

/// The most columns (at any depth) a schema may expand to, and the deepest nesting: a schema of a few KiB that
/// uses one record twice in each of 40 nested records expands to 2^40 columns, and a chain of thousands of
/// records would nest as deep; both are refused when the schema is compiled.
const MAX_COLUMNS: usize = 10_000;
const MAX_NESTING: usize = 64;

struct Parser {
    arena: Arena,
    names: HashMap<String, Node>,
}

type Parsed<T> = std::result::Result<T, String>;

const PRIMITIVES: [&str; 8] = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"];

fn full_name(name: &str, namespace: &str) -> String {
    if name.contains('.') || namespace.is_empty() { name.to_owned() } else { format!("{namespace}.{name}") }
}

impl Parser {
    fn parse(&mut self, schema: &Value, namespace: &str) -> Parsed<Node> {
        match schema {
            Value::String(name) => self.named(name, namespace),
            Value::Array(branches) => {
                let nodes = branches.iter().map(|b| self.parse(b, namespace)).collect::<Parsed<Vec<_>>>()?;
                if nodes.iter().any(|n| matches!(n, Node::Union(_))) {
                    return Err("a union directly inside a union".into());
                }
                Ok(Node::Union(nodes.into()))
            }
            Value::Object(object) => self.object(object, namespace),
            other => Err(format!("{other} is not a schema")),
        }
    }

    fn named(&self, name: &str, namespace: &str) -> Parsed<Node> {
        Ok(match name {
            "null" => Node::Null,
            "boolean" => Node::Bool,
            "int" => Node::Int,
            "long" => Node::Long,
            "float" => Node::Float,
            "double" => Node::Double,
            "bytes" => Node::Bytes,
            "string" => Node::Str,
            _ => {
                let full = full_name(name, namespace);
                match self.names.get(&full).or_else(|| self.names.get(name)) {
                    Some(node) => node.clone(),
                    None => return Err(format!("unknown type `{name}`")),
                }
            }
        })
    }

    /// A named type's full name and the namespace its own definitions inherit.
    fn define(object: &Map<String, Value>, namespace: &str) -> Parsed<(String, String)> {
        let name = object.get("name").and_then(Value::as_str).ok_or("a named type lacks its name")?;
        let full = match object.get("namespace").and_then(Value::as_str) {
            _ if name.contains('.') => name.to_owned(),
            Some(ns) => full_name(name, ns),
            None => full_name(name, namespace),
        };
        let inner = full.rsplit_once('.').map(|(ns, _)| ns.to_owned()).unwrap_or_default();
        Ok((full, inner))
    }

    fn register(&mut self, full: &str, node: Node) -> Parsed<()> {
        if self.names.insert(full.to_owned(), node).is_some() {
            return Err(format!("the type `{full}` is defined twice"));
        }
        Ok(())
    }

    fn object(&mut self, object: &Map<String, Value>, namespace: &str) -> Parsed<Node> {
        let logical = object.get("logicalType").and_then(Value::as_str);
        let Some(kind) = object.get("type") else { return Err("an object schema lacks `type`".into()) };
        let Value::String(kind) = kind else {
            // {"type": {...}} or {"type": [...]}: the nested schema (logical types apply to primitives only).
            return self.parse(kind, namespace);
        };
        match kind.as_str() {
            "record" | "error" => {
                let (full, inner) = Self::define(object, namespace)?;
                let index = self.arena.records.len();
                self.arena.records.push(Record { name: full.clone(), fields: Vec::new() });
                self.register(&full, Node::Record(index))?;
                let fields = object
                    .get("fields")
                    .and_then(Value::as_array)
                    .ok_or_else(|| format!("record {full} lacks `fields`"))?;
                let mut parsed = Vec::with_capacity(fields.len());
                for field in fields {
                    let field = field.as_object().ok_or_else(|| format!("a field of {full} is not an object"))?;
                    let name = field
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| format!("a field of {full} lacks its name"))?;
                    let schema = field.get("type").ok_or_else(|| format!("field {full}.{name} lacks `type`"))?;
                    let node = self.parse(schema, &inner).map_err(|e| format!("field {full}.{name}: {e}"))?;
                    let aliases = field
                        .get("aliases")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                        .unwrap_or_default();
                    parsed.push(Field { name: name.to_owned(), aliases, default: field.get("default").cloned(), node });
                }
                self.arena.records[index].fields = parsed;
                Ok(Node::Record(index))
            }
            "enum" => {
                let (full, _) = Self::define(object, namespace)?;
                let symbols = object
                    .get("symbols")
                    .and_then(Value::as_array)
                    .ok_or_else(|| format!("enum {full} lacks `symbols`"))?
                    .iter()
                    .map(|s| {
                        s.as_str().map(Into::into).ok_or_else(|| format!("a symbol of enum {full} is not a string"))
                    })
                    .collect::<Parsed<Vec<Box<str>>>>()?;
                let node = Node::Enum(Arc::new(EnumType { name: full.clone(), symbols }));
                self.register(&full, node.clone())?;
                Ok(node)
            }
            "array" => {
                let items = object.get("items").ok_or("an array lacks `items`")?;
                Ok(Node::Array(Box::new(self.parse(items, namespace)?)))
            }
            "map" => {
                let values = object.get("values").ok_or("a map lacks `values`")?;
                Ok(Node::Map(Box::new(self.parse(values, namespace)?)))
            }
            "fixed" => {
                let (full, _) = Self::define(object, namespace)?;
                let size = object
                    .get("size")
                    .and_then(Value::as_u64)
                    .and_then(|s| usize::try_from(s).ok())
                    .ok_or_else(|| format!("fixed {full} lacks a valid `size`"))?;
                if size > MAX_FIXED {
                    return Err(format!("fixed {full} has {size} bytes, more than the {MAX_FIXED} k2i stores"));
                }
                let name: Arc<str> = full.as_str().into();
                let node = match logical {
                    Some("decimal") => decimal(object, Some(size)).map(|(precision, scale)| Node::Decimal {
                        precision,
                        scale,
                        fixed: Some(size),
                        name: Some(name.clone()),
                    }),
                    Some("uuid") if size == 16 => Some(Node::Uuid(Some(name.clone()))),
                    Some("duration") if size == 12 => Some(Node::Duration(name.clone())),
                    _ => None,
                }
                .unwrap_or(Node::Fixed(name, size));
                self.register(&full, node.clone())?;
                Ok(node)
            }
            primitive if PRIMITIVES.contains(&primitive) => {
                let base = self.named(primitive, namespace)?;
                Ok(match (logical, &base) {
                    (Some("decimal"), Node::Bytes) => match decimal(object, None) {
                        Some((precision, scale)) => Node::Decimal { precision, scale, fixed: None, name: None },
                        None => base,
                    },
                    (Some("uuid"), Node::Str) => Node::Uuid(None),
                    (Some("date"), Node::Int) => Node::Date,
                    (Some("time-millis"), Node::Int) => Node::TimeMillis,
                    (Some("time-micros"), Node::Long) => Node::TimeMicros,
                    (Some(t), Node::Long) if timestamp(t).is_some() => {
                        let (unit, local) = timestamp(t).expect("checked");
                        Node::Timestamp { unit, local }
                    }
                    // Unknown or misplaced logical types read as their underlying type (Avro's rule).
                    _ => base,
                })
            }
            other => self.named(other, namespace),
        }
    }
}

fn timestamp(logical: &str) -> Option<(Unit, bool)> {
    Some(match logical {
        "timestamp-millis" => (Unit::Millis, false),
        "timestamp-micros" => (Unit::Micros, false),
        "timestamp-nanos" => (Unit::Nanos, false),
        "local-timestamp-millis" => (Unit::Millis, true),
        "local-timestamp-micros" => (Unit::Micros, true),
        "local-timestamp-nanos" => (Unit::Nanos, true),
        _ => return None,
    })
}

/// A decimal's (precision, scale) if valid and storable (precision 1..=38, 0 ≤ scale ≤ precision, and on
/// fixed(n) a precision n bytes can hold); otherwise the type reads as its underlying bytes.
fn decimal(object: &Map<String, Value>, fixed: Option<usize>) -> Option<(u8, i8)> {
    let precision = object.get("precision")?.as_u64()?;
    let scale = object.get("scale").map_or(Some(0), Value::as_u64)?;
    if precision == 0 || precision > 38 || scale > precision {
        return None;
    }
    if let Some(size) = fixed {
        if size == 0 {
            return None;
        }
        // The largest precision n bytes hold: floor(log10(2^(8n - 1) - 1)).
        let max = if size >= 16 { 38 } else { ((8 * size as u32 - 1) as f64 * 2f64.log10()).floor() as u64 };
        if precision > max {
            return None;
        }
    }
    Some((precision as u8, scale as i8))
}

/// Parses a registry schema and its references (each reference's named types are visible to the schemas
/// that reference it; the registry gives them in any order, so they are parsed until all resolve).
pub fn compile(schema: &ResolvedSchema) -> Result<Compiled> {
    let invalid = |message: String| {
        Error::new(ErrorKind::InvalidRecord, format!("the registry's Avro schema does not parse: {message}"))
            .with("schema_id", schema.id)
    };
    let json = |name: &str, text: &str| -> Result<Value> {
        serde_json::from_str(text).map_err(|e| invalid(format!("{name} is not JSON: {e}")))
    };
    let mut parser = Parser { arena: Arena::default(), names: HashMap::new() };
    let mut pending: Vec<(String, Value)> =
        schema.references.iter().map(|r| Ok((r.name.clone(), json(&r.name, &r.schema)?))).collect::<Result<_>>()?;
    while !pending.is_empty() {
        let before = pending.len();
        let mut last = String::new();
        pending.retain(|(name, value)| {
            // A failed attempt may have defined some names: parse again into a scratch copy first.
            let mut attempt =
                Parser { arena: Arena { records: parser.arena.records.clone() }, names: parser.names.clone() };
            match attempt.parse(value, "") {
                Ok(_) => {
                    parser = attempt;
                    false
                }
                Err(e) => {
                    last = format!("reference {name}: {e}");
                    true
                }
            }
        });
        if pending.len() == before {
            return Err(invalid(last));
        }
    }
    let root = parser.parse(&json("the schema", &schema.schema)?, "").map_err(invalid)?;
    let mut columns = 0;
    expansion(&root, &parser.arena, &mut Vec::new(), &mut columns).map_err(invalid)?;
    Ok(Compiled { id: schema.id, root, arena: Arc::new(parser.arena) })
}

/// Walks the types as [`iceberg_type`] expands them, refusing more than [`MAX_COLUMNS`] columns or
/// [`MAX_NESTING`] levels.
fn expansion(node: &Node, arena: &Arena, path: &mut Vec<usize>, columns: &mut usize) -> Parsed<()> {
    *columns += 1;
    if *columns > MAX_COLUMNS {
        return Err(format!("the schema expands to more than {MAX_COLUMNS} columns"));
    }
    if path.len() > MAX_NESTING {
        return Err(format!("records nest deeper than {MAX_NESTING} levels"));
    }
    match node {
        Node::Record(i) if !path.contains(i) => {
            path.push(*i);
            for field in &arena.records[*i].fields {
                expansion(&field.node, arena, path, columns)?;
            }
            path.pop();
        }
        Node::Array(inner) | Node::Map(inner) => {
            path.push(usize::MAX);
            expansion(inner, arena, path, columns)?;
            path.pop();
        }
        Node::Union(branches) => {
            for branch in branches.iter() {
                expansion(branch, arena, path, columns)?;
            }
        }
        _ => {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Iceberg types
// ---------------------------------------------------------------------------------------------------------

/// The name of the single column of a schema whose root is not a record.
pub const VALUE_COLUMN: &str = "value";

impl Compiled {
    /// The record the root is (a union of `null` and one record counts), if it is one.
    pub fn root_record(&self) -> Option<usize> {
        match &self.root {
            Node::Record(i) => Some(*i),
            Node::Union(branches) => match split_union(branches) {
                (_, values) if values.len() == 1 => match values[0].1 {
                    Node::Record(i) => Some(*i),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        }
    }

    /// The root record's full name, or the root type's name.
    pub fn name(&self) -> String {
        match self.root_record() {
            Some(i) => self.arena.records[i].name.clone(),
            None => self.root.type_name(&self.arena),
        }
    }

    /// The Iceberg struct of the schema: the root record's fields, or one `value` column. Field ids are 0
    /// (the table assigns them).
    pub fn record_type(&self) -> StructType {
        let mut path = Vec::new();
        match self.root_record() {
            Some(i) => struct_of(&self.arena, i, &mut path),
            None => StructType::new(
                iceberg_type(&self.root, &self.arena, &mut path)
                    .map(|t| NestedField::optional(0, VALUE_COLUMN, t).into())
                    .into_iter()
                    .collect(),
            ),
        }
    }
}

fn struct_of(arena: &Arena, index: usize, path: &mut Vec<usize>) -> StructType {
    path.push(index);
    let fields: Vec<NestedFieldRef> = arena.records[index]
        .fields
        .iter()
        .filter_map(|f| iceberg_type(&f.node, arena, path).map(|t| NestedField::optional(0, &f.name, t).into()))
        .collect();
    path.pop();
    StructType::new(fields)
}

/// The Iceberg type of an Avro type; `None` for a type that carries no value (`null`, a union of nulls).
pub(crate) fn iceberg_type(node: &Node, arena: &Arena, path: &mut Vec<usize>) -> Option<Type> {
    let p = |t| Some(Type::Primitive(t));
    match node {
        Node::Null => None,
        Node::Bool => p(PrimitiveType::Boolean),
        Node::Int => p(PrimitiveType::Int),
        Node::Long => p(PrimitiveType::Long),
        Node::Float => p(PrimitiveType::Float),
        Node::Double => p(PrimitiveType::Double),
        Node::Bytes => p(PrimitiveType::Binary),
        Node::Str | Node::Enum(_) | Node::Uuid(_) => p(PrimitiveType::String),
        // A fixed(0) carries no value.
        Node::Fixed(_, 0) => None,
        Node::Fixed(_, size) => p(PrimitiveType::Fixed(*size as u64)),
        Node::Duration(_) => p(PrimitiveType::Fixed(12)),
        Node::Decimal { precision, scale, .. } => {
            p(PrimitiveType::Decimal { precision: u32::from(*precision), scale: *scale as u32 })
        }
        Node::Date => p(PrimitiveType::Date),
        Node::TimeMillis | Node::TimeMicros => p(PrimitiveType::Time),
        Node::Timestamp { local: false, .. } => p(PrimitiveType::Timestamptz),
        Node::Timestamp { local: true, .. } => p(PrimitiveType::Timestamp),
        Node::Record(i) if path.contains(i) => p(PrimitiveType::String),
        // A record without a column (no fields, or only nulls) carries no value: Iceberg has no empty struct.
        Node::Record(i) => Some(struct_of(arena, *i, path)).filter(|s| !s.fields().is_empty()).map(Type::Struct),
        Node::Array(items) => {
            let element = iceberg_type(items, arena, path)?;
            Some(Type::List(ListType::new(NestedField::list_element(0, element, false).into())))
        }
        Node::Map(values) => {
            let value = iceberg_type(values, arena, path)?;
            Some(Type::Map(MapType::new(
                NestedField::map_key_element(0, Type::Primitive(PrimitiveType::String)).into(),
                NestedField::map_value_element(0, value, false).into(),
            )))
        }
        Node::Union(branches) => {
            let (_, values) = split_union(branches);
            match values.len() {
                0 => None,
                1 => iceberg_type(values[0].1, arena, path),
                _ => {
                    let names = member_names(&values, arena);
                    let members: Vec<NestedFieldRef> = values
                        .iter()
                        .zip(names)
                        .filter_map(|((_, node), name)| {
                            iceberg_type(node, arena, path).map(|t| NestedField::optional(0, name, t).into())
                        })
                        .collect();
                    Some(Type::Struct(StructType::new(members)))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;

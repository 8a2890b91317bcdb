//! Confluent-framed Protobuf: a registry schema compiled into descriptors, the message a record's index
//! array selects, the Iceberg type of a message, and the wire decoder ([`wire`]) that writes records
//! straight into Arrow columns.
//!
//! # Type mapping
//! Every payload column is optional in Iceberg, whatever the `.proto` says, so a field a later schema removes
//! keeps its column and reads null, and proto2 `required` costs nothing. See docs/formats/protobuf.md for the
//! table; in short: `int32`/`sint32`/`sfixed32` → int, `int64`/`sint64`/`sfixed64` → long, `uint32`/`fixed32`
//! → long, `uint64`/`fixed64` → decimal(20, 0) (exact), `float`, `double`, `bool`, `string`, `bytes` →
//! binary, enums → their name as string (or their number as int with `enums = "number"`; an unknown number
//! is kept as its decimal text), messages → struct, `repeated` → list, `map<K, V>` → map, a oneof → its
//! members as columns plus `<oneof>_case` (the set member's name), `Timestamp` → timestamptz (µs),
//! `Duration` → long (µs), wrappers → nullable primitives, `Struct` / `Value` / `ListValue` / `Any` /
//! `FieldMask` / `Empty` → JSON text. A message type that contains itself is expanded once: the nested
//! occurrence is a JSON text column.

pub mod wire;

use std::collections::HashMap;

use iceberg::spec::{ListType, MapType, NestedField, NestedFieldRef, PrimitiveType, StructType, Type};
use prost_reflect::{Cardinality, DescriptorPool, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

use super::registry::ResolvedSchema;
use crate::config::{EnumMode, ProtobufOptions};
use crate::error::{Error, ErrorKind, Result};

/// A registry schema compiled: its file and every file it imports.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The registry's id of the schema.
    pub id: u32,
    /// The schema's own file.
    pub file: FileDescriptor,
}

/// The name the schema's own file gets when it is compiled from source (its references keep the import
/// paths they are registered under).
const ROOT: &str = "k2i-registry-schema.proto";

/// One registered file: `.proto` source (what Confluent's registry returns) or a base64-encoded
/// `FileDescriptorProto` (what some registries keep when a serializer registers the descriptor form).
fn parse_file(name: &str, text: &str) -> std::result::Result<File, String> {
    use base64::Engine as _;
    use prost::Message as _;
    let trimmed = text.trim();
    let looks_base64 =
        !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    if looks_base64
        && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(trimmed)
        && let Ok(mut proto) = prost_types::FileDescriptorProto::decode(bytes.as_slice())
    {
        proto.name = Some(name.to_owned());
        return Ok(File::from_file_descriptor_proto(proto));
    }
    File::from_source(name, text).map_err(|e| e.to_string())
}

/// Compiles a registry schema and its references (well-known types are built in: Confluent's serializer
/// does not register them).
pub fn compile(schema: &ResolvedSchema) -> Result<Compiled> {
    struct Sources(HashMap<String, String>);
    impl FileResolver for Sources {
        fn open_file(&self, name: &str) -> std::result::Result<File, protox::Error> {
            match self.0.get(name) {
                Some(text) => parse_file(name, text).map_err(protox::Error::new),
                None => Err(protox::Error::file_not_found(name)),
            }
        }
    }
    let invalid = |message: String| {
        Error::new(ErrorKind::InvalidRecord, format!("the registry's Protobuf schema does not compile: {message}"))
            .with("schema_id", schema.id)
    };
    let mut sources: HashMap<String, String> =
        schema.references.iter().map(|r| (r.name.clone(), r.schema.clone())).collect();
    sources.insert(ROOT.to_owned(), schema.schema.clone());
    let mut resolver = ChainFileResolver::new();
    resolver.add(Sources(sources));
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true).include_source_info(false);
    compiler.open_file(ROOT).map_err(|e| invalid(e.to_string()))?;
    let pool: DescriptorPool = compiler.descriptor_pool();
    let file = pool.get_file_by_name(ROOT).ok_or_else(|| {
        Error::new(ErrorKind::Internal, "the compiled schema lacks its own file").with("schema_id", schema.id)
    })?;
    Ok(Compiled { id: schema.id, file })
}

impl Compiled {
    /// The message a record's index array selects: `[i]` is the file's i-th message, `[i, j]` the j-th
    /// message nested in it, and so on (nested types count in declaration order, map entries included, as
    /// Confluent's serializers count them). An empty array means `[0]`.
    pub fn select(&self, indexes: impl Iterator<Item = usize>) -> std::result::Result<MessageDescriptor, String> {
        let mut current: Option<MessageDescriptor> = None;
        let mut path = Vec::new();
        for index in indexes {
            path.push(index);
            let next = match &current {
                None => self.file.messages().nth(index),
                Some(parent) => parent.child_messages().nth(index),
            };
            current = Some(
                next.ok_or_else(|| format!("the message index {path:?} is out of range for schema id {}", self.id))?,
            );
        }
        match current {
            Some(message) => Ok(message),
            None => self.file.messages().next().ok_or_else(|| format!("schema id {} defines no message", self.id)),
        }
    }

    /// A message of the schema by its fully qualified name (`message_name` for table creation).
    pub fn message(&self, name: &str) -> Option<MessageDescriptor> {
        self.file.parent_pool().get_message_by_name(name.trim_start_matches('.'))
    }

    /// The first message of the schema's file.
    pub fn first(&self) -> Option<MessageDescriptor> {
        self.file.messages().next()
    }
}

/// How a well-known message type maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WellKnown {
    /// `google.protobuf.Timestamp` → timestamptz.
    Timestamp,
    /// `google.protobuf.Duration` → long µs.
    Duration,
    /// `google.protobuf.*Value` wrappers → the wrapped primitive (field 1).
    Wrapper,
    /// `Struct`, `Value`, `ListValue`, `Any`, `FieldMask`, `Empty` → JSON text.
    Json,
}

pub(crate) fn well_known(message: &MessageDescriptor) -> Option<WellKnown> {
    Some(match message.full_name() {
        "google.protobuf.Timestamp" => WellKnown::Timestamp,
        "google.protobuf.Duration" => WellKnown::Duration,
        "google.protobuf.DoubleValue"
        | "google.protobuf.FloatValue"
        | "google.protobuf.Int64Value"
        | "google.protobuf.UInt64Value"
        | "google.protobuf.Int32Value"
        | "google.protobuf.UInt32Value"
        | "google.protobuf.BoolValue"
        | "google.protobuf.StringValue"
        | "google.protobuf.BytesValue" => WellKnown::Wrapper,
        "google.protobuf.Struct"
        | "google.protobuf.Value"
        | "google.protobuf.ListValue"
        | "google.protobuf.Any"
        | "google.protobuf.FieldMask"
        | "google.protobuf.Empty" => WellKnown::Json,
        _ => return None,
    })
}

/// The column name of a oneof's case column.
pub fn case_column(oneof: &str) -> String {
    format!("{oneof}_case")
}

/// The Iceberg struct of a message: its fields in declaration order, then one `<oneof>_case` column per
/// oneof (with `oneof_case`; skipped if a field already has that name). Field ids are 0 (the table assigns
/// them).
pub fn message_type(message: &MessageDescriptor, options: &ProtobufOptions) -> StructType {
    let mut path = vec![message.full_name().to_owned()];
    struct_of(message, options, &mut path)
}

fn struct_of(message: &MessageDescriptor, options: &ProtobufOptions, path: &mut Vec<String>) -> StructType {
    let mut fields: Vec<NestedFieldRef> =
        message.fields().map(|f| NestedField::optional(0, f.name(), field_type(&f, options, path)).into()).collect();
    if options.oneof_case {
        for oneof in message.oneofs().filter(|o| !o.is_synthetic()) {
            let name = case_column(oneof.name());
            if !fields.iter().any(|f| f.name == name) {
                fields.push(NestedField::optional(0, name, Type::Primitive(PrimitiveType::String)).into());
            }
        }
    }
    StructType::new(fields)
}

fn field_type(field: &FieldDescriptor, options: &ProtobufOptions, path: &mut Vec<String>) -> Type {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else { unreachable!("a map field's kind is its entry message") };
        let key = entry.map_entry_key_field();
        let value = entry.map_entry_value_field();
        return Type::Map(MapType::new(
            NestedField::map_key_element(0, single_type(&key, options, path)).into(),
            NestedField::map_value_element(0, single_type(&value, options, path), false).into(),
        ));
    }
    let single = single_type(field, options, path);
    if field.cardinality() == Cardinality::Repeated {
        Type::List(ListType::new(NestedField::list_element(0, single, false).into()))
    } else {
        single
    }
}

/// The type of one value of a field (an element, for a repeated one).
fn single_type(field: &FieldDescriptor, options: &ProtobufOptions, path: &mut Vec<String>) -> Type {
    let p = |t| Type::Primitive(t);
    match field.kind() {
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => p(PrimitiveType::Int),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint32 | Kind::Fixed32 => p(PrimitiveType::Long),
        Kind::Uint64 | Kind::Fixed64 => p(PrimitiveType::Decimal { precision: 20, scale: 0 }),
        Kind::Float => p(PrimitiveType::Float),
        Kind::Double => p(PrimitiveType::Double),
        Kind::Bool => p(PrimitiveType::Boolean),
        Kind::String => p(PrimitiveType::String),
        Kind::Bytes => p(PrimitiveType::Binary),
        Kind::Enum(_) => match options.enums {
            EnumMode::Name => p(PrimitiveType::String),
            EnumMode::Number => p(PrimitiveType::Int),
        },
        Kind::Message(message) => match well_known(&message) {
            Some(WellKnown::Timestamp) => p(PrimitiveType::Timestamptz),
            Some(WellKnown::Duration) => p(PrimitiveType::Long),
            Some(WellKnown::Wrapper) => match message.get_field(1) {
                Some(inner) => single_type(&inner, options, path),
                None => p(PrimitiveType::String),
            },
            Some(WellKnown::Json) => p(PrimitiveType::String),
            None if path.iter().any(|seen| seen == message.full_name()) => p(PrimitiveType::String),
            None => {
                path.push(message.full_name().to_owned());
                let nested = struct_of(&message, options, path);
                path.pop();
                Type::Struct(nested)
            }
        },
    }
}

#[cfg(test)]
mod tests;

//! Protobuf shapes for the throughput benchmark: a 10-field event (mixed scalars, a timestamp, one nested
//! message) and a ~100-column nested bid request (an ad-tech shape). The schema is registered in the Schema
//! Registry under `<topic>-value`; records are encoded from deterministic values with prost-reflect and
//! framed the way Confluent's serializer frames them (magic 0, schema id, message index `[0]`).

use anyhow::{Context, Result};
use prost::Message as _;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value};

/// The 10-field event.
pub const EVENT: &str = r#"syntax = "proto3";
package bench;
import "google/protobuf/timestamp.proto";
message Event {
  message Device { string os = 1; int32 version = 2; }
  int64 id = 1;
  string user = 2;
  double amount = 3;
  bool ok = 4;
  google.protobuf.Timestamp ts = 5;
  string country = 6;
  int32 quantity = 7;
  Device device = 8;
  float score = 9;
  string note = 10;
}
"#;

/// A bid request with 100 leaf columns: 10 top-level scalars and six nested messages of 15 scalars each
/// (`imp` repeated twice per record).
pub fn bid_request() -> String {
    let kinds = ["string", "int32", "int64", "double", "bool"];
    let nested = ["Imp", "Site", "App", "Device", "User", "Geo"];
    let mut out = String::from("syntax = \"proto3\";\npackage bench;\nmessage BidRequest {\n");
    for (i, name) in nested.iter().enumerate() {
        out.push_str(&format!("  message {name} {{\n"));
        for f in 1..=15 {
            out.push_str(&format!("    {} {}_f{f} = {f};\n", kinds[(f + i) % kinds.len()], name.to_lowercase()));
        }
        out.push_str("  }\n");
    }
    for f in 1..=10 {
        out.push_str(&format!("  {} top_f{f} = {f};\n", kinds[f % kinds.len()]));
    }
    for (i, name) in nested.iter().enumerate() {
        let label = if *name == "Imp" { "repeated " } else { "" };
        out.push_str(&format!("  {label}{name} {} = {};\n", name.to_lowercase(), 11 + i));
    }
    out.push_str("}\n");
    out
}

/// The message descriptor of `schema`'s first message (compiled like k2i compiles a registry schema).
pub fn descriptor(schema: &str) -> Result<MessageDescriptor> {
    let resolved = k2i_core::decode::registry::ResolvedSchema {
        id: 0,
        schema_type: k2i_core::decode::registry::SchemaType::Protobuf,
        schema: schema.to_owned(),
        references: Vec::new(),
    };
    let compiled = k2i_core::decode::protobuf::compile(&resolved).map_err(|e| anyhow::anyhow!("{e}"))?;
    compiled.first().context("the schema defines no message")
}

/// Record `i` of `message`, framed.
pub fn record(message: &MessageDescriptor, schema_id: u32, i: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.push(0);
    fill(message, i, 0).encode(&mut out).expect("a Vec grows");
    out
}

fn fill(message: &MessageDescriptor, i: usize, depth: usize) -> DynamicMessage {
    let mut m = DynamicMessage::new(message.clone());
    if message.full_name() == "google.protobuf.Timestamp" {
        m.set_field_by_number(1, Value::I64(1_764_000_000 + i as i64));
        m.set_field_by_number(2, Value::I32(((i % 1000) * 1_000_000) as i32));
        return m;
    }
    for field in message.fields() {
        let value = if field.is_list() {
            Value::List((0..2).map(|k| single(&field, i + k, depth)).collect())
        } else {
            single(&field, i, depth)
        };
        m.set_field(&field, value);
    }
    m
}

fn single(field: &FieldDescriptor, i: usize, depth: usize) -> Value {
    let n = field.number() as usize;
    match field.kind() {
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(((i * 7 + n) % 100_000) as i32),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64((i * 31 + n) as i64),
        Kind::Uint32 | Kind::Fixed32 => Value::U32((i % 65_536) as u32),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(i as u64),
        Kind::Float => Value::F32((i % 1000) as f32 / 7.0),
        Kind::Double => Value::F64((i % 100_000) as f64 / 3.0),
        Kind::Bool => Value::Bool((i + n).is_multiple_of(2)),
        Kind::String => {
            let words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"];
            Value::String(format!("{}-{}-{}", field.name(), words[(i + n) % words.len()], i % 10_000))
        }
        Kind::Bytes => Value::Bytes(vec![(i % 256) as u8; 8].into()),
        Kind::Enum(e) => Value::EnumNumber(e.values().nth(i % e.values().len()).map_or(0, |v| v.number())),
        Kind::Message(m) => Value::Message(fill(&m, i, depth + 1)),
    }
}

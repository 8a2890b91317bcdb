//! Unit tests of the Protobuf wire decoder: a `.proto` compiled like a registry schema, its table built the
//! way k2i creates one (`message_type` → `initial_schema_with` → Arrow), payloads encoded with prost-reflect
//! (or by hand where the encoder would not produce them) and decoded into columns.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal128Type, Float32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Fields, Schema as ArrowSchema, SchemaRef, TimeUnit};
use prost::Message as _;
use prost_reflect::{DynamicMessage, MapKey, MessageDescriptor, Value};

use super::wire::{MessagePlan, Rows, WireError};
use super::{Compiled, compile, message_type};
use crate::config::{EnumMode, ProtobufOptions};
use crate::decode::registry::{ResolvedSchema, SchemaType};
use crate::decode::testing::Rng;
use crate::schema::METADATA_COLUMNS;

// ---------------------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------------------

fn compile_text(text: &str) -> Compiled {
    compile(&ResolvedSchema { id: 1, schema_type: SchemaType::Protobuf, schema: text.to_owned(), references: vec![] })
        .unwrap_or_else(|e| panic!("{e}"))
}

fn config() -> crate::config::Config {
    let text = "[kafka]\nbootstrap_servers = [\"k:1\"]\ntopic = \"t\"\nconsumer_group = \"g\"\n\
                [kafka.format]\ntype = \"protobuf\"\n[kafka.format.registry]\nurl = \"http://r\"\n\
                [iceberg]\ntable_name = \"t\"\n";
    crate::config::from_toml(text, std::path::Path::new("t.toml"), &Default::default()).unwrap()
}

/// The payload columns k2i creates a table with for `message`: Arrow fields, metadata columns left out.
fn payload_fields(message: &MessageDescriptor, options: &ProtobufOptions) -> Fields {
    let payload = message_type(message, options);
    let schema = crate::schema::initial_schema_with(&config(), &payload).unwrap();
    let arrow = iceberg::arrow::schema_to_arrow_schema(&schema).unwrap();
    arrow.fields().iter().filter(|f| !METADATA_COLUMNS.contains(&f.name().as_str())).cloned().collect()
}

/// One table: the message its plan reads, the payload schema, and the rows decoded so far.
struct Table {
    message: MessageDescriptor,
    schema: SchemaRef,
    plan: MessagePlan,
    rows: Rows,
}

impl Table {
    fn new(compiled: &Compiled, name: &str) -> Self {
        Self::with(compiled, name, &ProtobufOptions::default())
    }

    fn with(compiled: &Compiled, name: &str, options: &ProtobufOptions) -> Self {
        let message = compiled.message(name).unwrap_or_else(|| panic!("no message {name}"));
        Self::reading(&message, &message, options)
    }

    /// A table made for `table_message` whose plan reads records of `writer` (another version of it).
    fn reading(writer: &MessageDescriptor, table_message: &MessageDescriptor, options: &ProtobufOptions) -> Self {
        let fields = payload_fields(table_message, options);
        let plan = MessagePlan::build(writer, &fields, options).unwrap_or_else(|e| panic!("{e}"));
        let rows = Rows::new(&fields).unwrap();
        Self { message: writer.clone(), schema: Arc::new(ArrowSchema::new(fields)), plan, rows }
    }

    fn append(&mut self, payload: &[u8]) -> Result<(), WireError> {
        self.rows.append_with(|columns, row| self.plan.decode(payload, columns, row, 0))
    }

    fn push(&mut self, message: &DynamicMessage) {
        self.append(&message.encode_to_vec()).unwrap_or_else(|e| panic!("{e}"));
    }

    fn message(&self, fields: &[(&str, Value)]) -> DynamicMessage {
        build(&self.message, fields)
    }

    fn json(&self, json: serde_json::Value) -> DynamicMessage {
        DynamicMessage::deserialize(self.message.clone(), json).unwrap()
    }

    fn finish(&mut self) -> RecordBatch {
        let arrays = self.rows.finish().unwrap();
        RecordBatch::try_new(self.schema.clone(), arrays).unwrap()
    }

    fn column_names(&self) -> Vec<&str> {
        self.schema.fields().iter().map(|f| f.name().as_str()).collect()
    }

    fn data_type(&self, name: &str) -> &DataType {
        self.schema.field_with_name(name).unwrap().data_type()
    }
}

/// A message of `desc` with `fields` set (every name must exist).
fn build(desc: &MessageDescriptor, fields: &[(&str, Value)]) -> DynamicMessage {
    let mut message = DynamicMessage::new(desc.clone());
    for (name, value) in fields {
        assert!(desc.get_field_by_name(name).is_some(), "{} has no field {name}", desc.full_name());
        message.set_field_by_name(name, value.clone());
    }
    message
}

fn sub(message: &MessageDescriptor, field: &str) -> MessageDescriptor {
    match message.get_field_by_name(field).unwrap().kind() {
        prost_reflect::Kind::Message(m) => m,
        other => panic!("{field} is a {other:?}"),
    }
}

fn col<'a>(batch: &'a RecordBatch, name: &str) -> &'a ArrayRef {
    batch.column_by_name(name).unwrap_or_else(|| panic!("no column {name}"))
}

fn child(array: &ArrayRef, name: &str) -> ArrayRef {
    array.as_struct().column_by_name(name).unwrap_or_else(|| panic!("no struct field {name}")).clone()
}

fn ints(array: &dyn Array) -> Vec<Option<i32>> {
    array.as_primitive::<Int32Type>().iter().collect()
}

fn longs(array: &dyn Array) -> Vec<Option<i64>> {
    array.as_primitive::<Int64Type>().iter().collect()
}

fn decimals(array: &dyn Array) -> Vec<Option<i128>> {
    array.as_primitive::<Decimal128Type>().iter().collect()
}

fn floats(array: &dyn Array) -> Vec<Option<f32>> {
    array.as_primitive::<Float32Type>().iter().collect()
}

fn doubles(array: &dyn Array) -> Vec<Option<f64>> {
    array.as_primitive::<Float64Type>().iter().collect()
}

fn bools(array: &dyn Array) -> Vec<Option<bool>> {
    array.as_boolean().iter().collect()
}

fn strings(array: &dyn Array) -> Vec<Option<String>> {
    match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().iter().map(|s| s.map(str::to_owned)).collect(),
        DataType::LargeUtf8 => array.as_string::<i64>().iter().map(|s| s.map(str::to_owned)).collect(),
        other => panic!("not a string column: {other}"),
    }
}

fn binaries(array: &dyn Array) -> Vec<Option<Vec<u8>>> {
    match array.data_type() {
        DataType::Binary => array.as_binary::<i32>().iter().map(|b| b.map(<[u8]>::to_vec)).collect(),
        DataType::LargeBinary => array.as_binary::<i64>().iter().map(|b| b.map(<[u8]>::to_vec)).collect(),
        other => panic!("not a binary column: {other}"),
    }
}

fn json_texts(array: &dyn Array) -> Vec<Option<serde_json::Value>> {
    strings(array).into_iter().map(|s| s.map(|s| serde_json::from_str(&s).unwrap())).collect()
}

fn nulls(array: &dyn Array) -> Vec<bool> {
    (0..array.len()).map(|i| array.is_null(i)).collect()
}

/// A list column's rows, each element read by `f`.
fn lists<T>(array: &ArrayRef, f: impl Fn(&dyn Array) -> Vec<T>) -> Vec<Option<Vec<T>>> {
    array.as_list::<i32>().iter().map(|row| row.map(|values| f(values.as_ref()))).collect()
}

/// A map column's rows as (key, value) pairs sorted by key, values read by `f`.
fn maps<T: Clone>(array: &ArrayRef, f: impl Fn(&dyn Array) -> Vec<T>) -> Vec<Option<Vec<(String, T)>>> {
    let map = array.as_map();
    (0..map.len())
        .map(|i| {
            if map.is_null(i) {
                return None;
            }
            let entries = map.value(i);
            let keys = strings(entries.column(0).as_ref());
            let values = f(entries.column(1).as_ref());
            let mut pairs: Vec<(String, T)> = keys.into_iter().map(Option::unwrap).zip(values).collect();
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            Some(pairs)
        })
        .collect()
}

fn put_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_tag(number: u32, wire_type: u8, out: &mut Vec<u8>) {
    put_varint((u64::from(number) << 3) | u64::from(wire_type), out);
}

fn put_len(number: u32, body: &[u8], out: &mut Vec<u8>) {
    put_tag(number, 2, out);
    put_varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

// ---------------------------------------------------------------------------------------------------------
// Scalars and presence
// ---------------------------------------------------------------------------------------------------------

const SCALARS: &str = r#"
syntax = "proto3";
package t;
message Inner { int32 a = 1; string b = 2; }
message Scalars {
  int32 i32 = 1;
  int64 i64 = 2;
  uint32 u32 = 3;
  uint64 u64 = 4;
  sint32 s32 = 5;
  sint64 s64 = 6;
  fixed32 f32 = 7;
  fixed64 f64 = 8;
  sfixed32 sf32 = 9;
  sfixed64 sf64 = 10;
  float fl = 11;
  double db = 12;
  bool b = 13;
  string s = 14;
  bytes by = 15;
  optional int32 opt = 16;
  Inner inner = 17;
}
"#;

#[test]
fn every_scalar_kind_maps_to_its_column_type() {
    let compiled = compile_text(SCALARS);
    let table = Table::new(&compiled, "t.Scalars");
    let decimal = DataType::Decimal128(20, 0);
    let expected: [(&str, DataType); 17] = [
        ("i32", DataType::Int32),
        ("i64", DataType::Int64),
        ("u32", DataType::Int64),
        ("u64", decimal.clone()),
        ("s32", DataType::Int32),
        ("s64", DataType::Int64),
        ("f32", DataType::Int64),
        ("f64", decimal),
        ("sf32", DataType::Int32),
        ("sf64", DataType::Int64),
        ("fl", DataType::Float32),
        ("db", DataType::Float64),
        ("b", DataType::Boolean),
        ("s", DataType::Utf8),
        ("by", DataType::LargeBinary),
        ("opt", DataType::Int32),
        ("inner", table.data_type("inner").clone()),
    ];
    assert_eq!(table.column_names(), expected.iter().map(|(n, _)| *n).collect::<Vec<_>>());
    for (name, data_type) in &expected {
        assert_eq!(table.data_type(name), data_type, "{name}");
    }
    assert!(matches!(table.data_type("inner"), DataType::Struct(f) if f.len() == 2));
}

#[test]
fn every_scalar_kind_decodes_exactly() {
    let compiled = compile_text(SCALARS);
    let mut table = Table::new(&compiled, "t.Scalars");
    let extremes = table.message(&[
        ("i32", Value::I32(-5)),
        ("i64", Value::I64(-9_000_000_000)),
        ("u32", Value::U32(u32::MAX)),
        ("u64", Value::U64(u64::MAX)),
        ("s32", Value::I32(-7)),
        ("s64", Value::I64(i64::MIN)),
        ("f32", Value::U32(u32::MAX)),
        ("f64", Value::U64(u64::MAX)),
        ("sf32", Value::I32(-123)),
        ("sf64", Value::I64(-1_234_567_890_123)),
        ("fl", Value::F32(1.5)),
        ("db", Value::F64(-2.25)),
        ("b", Value::Bool(true)),
        ("s", Value::String("héllo".into())),
        ("by", Value::Bytes(vec![0, 255, 1].into())),
    ]);
    let others = table.message(&[
        ("i32", Value::I32(i32::MIN)),
        ("i64", Value::I64(i64::MAX)),
        ("u32", Value::U32(1)),
        ("u64", Value::U64(1 << 63)),
        ("s32", Value::I32(i32::MIN)),
        ("s64", Value::I64(-1)),
        ("f32", Value::U32(7)),
        ("f64", Value::U64(42)),
        ("sf32", Value::I32(i32::MAX)),
        ("sf64", Value::I64(i64::MIN)),
        ("fl", Value::F32(-0.25)),
        ("db", Value::F64(1e300)),
        ("b", Value::Bool(false)),
        ("s", Value::String("x".into())),
        ("by", Value::Bytes(vec![7].into())),
    ]);
    table.push(&extremes);
    table.push(&others);
    let batch = table.finish();
    assert_eq!(batch.num_rows(), 2);
    assert_eq!(ints(col(&batch, "i32")), [Some(-5), Some(i32::MIN)]);
    assert_eq!(longs(col(&batch, "i64")), [Some(-9_000_000_000), Some(i64::MAX)]);
    assert_eq!(longs(col(&batch, "u32")), [Some(4_294_967_295), Some(1)]);
    assert_eq!(decimals(col(&batch, "u64")), [Some(18_446_744_073_709_551_615), Some(9_223_372_036_854_775_808)]);
    assert_eq!(col(&batch, "u64").as_primitive::<Decimal128Type>().value_as_string(0), "18446744073709551615");
    assert_eq!(ints(col(&batch, "s32")), [Some(-7), Some(i32::MIN)]);
    assert_eq!(longs(col(&batch, "s64")), [Some(i64::MIN), Some(-1)]);
    assert_eq!(longs(col(&batch, "f32")), [Some(4_294_967_295), Some(7)]);
    assert_eq!(decimals(col(&batch, "f64")), [Some(18_446_744_073_709_551_615), Some(42)]);
    assert_eq!(ints(col(&batch, "sf32")), [Some(-123), Some(i32::MAX)]);
    assert_eq!(longs(col(&batch, "sf64")), [Some(-1_234_567_890_123), Some(i64::MIN)]);
    assert_eq!(floats(col(&batch, "fl")), [Some(1.5), Some(-0.25)]);
    assert_eq!(doubles(col(&batch, "db")), [Some(-2.25), Some(1e300)]);
    assert_eq!(bools(col(&batch, "b")), [Some(true), Some(false)]);
    assert_eq!(strings(col(&batch, "s")), [Some("héllo".to_owned()), Some("x".to_owned())]);
    assert_eq!(binaries(col(&batch, "by")), [Some(vec![0, 255, 1]), Some(vec![7])]);
}

#[test]
fn proto3_fields_without_presence_read_their_default_and_with_presence_read_null() {
    let compiled = compile_text(SCALARS);
    let mut table = Table::new(&compiled, "t.Scalars");
    let inner = sub(&table.message, "inner");
    table.push(&table.message(&[]));
    // Set explicitly to their defaults: `opt` and `inner` have presence, so they are on the wire.
    table.push(&table.message(&[("opt", Value::I32(0)), ("inner", Value::Message(build(&inner, &[])))]));
    let batch = table.finish();
    assert_eq!(batch.num_rows(), 2);
    assert_eq!(ints(col(&batch, "i32")), [Some(0), Some(0)]);
    assert_eq!(longs(col(&batch, "i64")), [Some(0), Some(0)]);
    assert_eq!(decimals(col(&batch, "u64")), [Some(0), Some(0)]);
    assert_eq!(ints(col(&batch, "s32")), [Some(0), Some(0)]);
    assert_eq!(decimals(col(&batch, "f64")), [Some(0), Some(0)]);
    assert_eq!(floats(col(&batch, "fl")), [Some(0.0), Some(0.0)]);
    assert_eq!(doubles(col(&batch, "db")), [Some(0.0), Some(0.0)]);
    assert_eq!(bools(col(&batch, "b")), [Some(false), Some(false)]);
    assert_eq!(strings(col(&batch, "s")), [Some(String::new()), Some(String::new())]);
    assert_eq!(binaries(col(&batch, "by")), [Some(vec![]), Some(vec![])]);
    assert_eq!(ints(col(&batch, "opt")), [None, Some(0)]);
    let inner = col(&batch, "inner");
    assert_eq!(nulls(inner.as_ref()), [true, false]);
    assert_eq!(ints(child(inner, "a").as_ref())[1], Some(0));
    assert_eq!(strings(child(inner, "b").as_ref())[1], Some(String::new()));
}

#[test]
fn proto2_optional_fields_read_their_declared_default_or_null() {
    let compiled = compile_text(
        r#"
        syntax = "proto2";
        package p2;
        enum Color { RED = 1; GREEN = 2; BLUE = 3; }
        message Legacy {
          optional int32 seven = 1 [default = 7];
          optional int32 plain = 2;
          optional string name = 3 [default = "anon"];
          optional Color color = 4 [default = BLUE];
          optional Color no_default_color = 5;
          required int64 id = 6;
          optional bool flag = 7 [default = true];
          optional double ratio = 8 [default = 0.5];
          optional uint64 big = 9 [default = 18446744073709551615];
        }
        "#,
    );
    let mut table = Table::new(&compiled, "p2.Legacy");
    table.push(&table.message(&[]));
    table.push(&table.message(&[
        ("seven", Value::I32(0)),
        ("plain", Value::I32(3)),
        ("name", Value::String(String::new())),
        ("color", Value::EnumNumber(1)),
        ("no_default_color", Value::EnumNumber(2)),
        ("id", Value::I64(11)),
        ("flag", Value::Bool(false)),
        ("ratio", Value::F64(0.0)),
        ("big", Value::U64(0)),
    ]));
    let batch = table.finish();
    assert_eq!(ints(col(&batch, "seven")), [Some(7), Some(0)]);
    assert_eq!(ints(col(&batch, "plain")), [None, Some(3)]);
    assert_eq!(strings(col(&batch, "name")), [Some("anon".to_owned()), Some(String::new())]);
    assert_eq!(strings(col(&batch, "color")), [Some("BLUE".to_owned()), Some("RED".to_owned())]);
    assert_eq!(strings(col(&batch, "no_default_color")), [None, Some("GREEN".to_owned())]);
    assert_eq!(longs(col(&batch, "id")), [None, Some(11)]);
    assert_eq!(bools(col(&batch, "flag")), [Some(true), Some(false)]);
    assert_eq!(doubles(col(&batch, "ratio")), [Some(0.5), Some(0.0)]);
    assert_eq!(decimals(col(&batch, "big")), [Some(18_446_744_073_709_551_615), Some(0)]);
}

#[test]
fn a_singular_scalar_that_occurs_twice_keeps_the_last_value() {
    let compiled = compile_text(SCALARS);
    let mut table = Table::new(&compiled, "t.Scalars");
    let first = table.message(&[
        ("i32", Value::I32(1)),
        ("s", Value::String("first".into())),
        ("u64", Value::U64(5)),
        ("opt", Value::I32(9)),
    ]);
    let second =
        table.message(&[("i32", Value::I32(2)), ("s", Value::String("second".into())), ("u64", Value::U64(6))]);
    let mut payload = first.encode_to_vec();
    payload.extend(second.encode_to_vec());
    table.append(&payload).unwrap();
    let batch = table.finish();
    assert_eq!(batch.num_rows(), 1);
    assert_eq!(ints(col(&batch, "i32")), [Some(2)]);
    assert_eq!(strings(col(&batch, "s")), [Some("second".to_owned())]);
    assert_eq!(decimals(col(&batch, "u64")), [Some(6)]);
    // Only in the first half: kept.
    assert_eq!(ints(col(&batch, "opt")), [Some(9)]);
}

#[test]
fn a_singular_message_that_occurs_twice_is_a_record_error() {
    let compiled = compile_text(SCALARS);
    let mut table = Table::new(&compiled, "t.Scalars");
    let inner = sub(&table.message, "inner");
    let one = table.message(&[("inner", Value::Message(build(&inner, &[("a", Value::I32(1))])))]);
    let mut payload = one.encode_to_vec();
    payload.extend(one.encode_to_vec());
    assert_eq!(
        table.append(&payload),
        Err(WireError("field `inner` of t.Scalars: a singular message occurs twice (merging is not supported)".into()))
    );
    assert_eq!(table.rows.len(), 0);
}

// ---------------------------------------------------------------------------------------------------------
// Enums
// ---------------------------------------------------------------------------------------------------------

const ENUMS: &str = r#"
syntax = "proto3";
package e;
enum Status { STATUS_UNKNOWN = 0; ACTIVE = 1; RETIRED = 2; }
message Thing {
  Status status = 1;
  repeated Status history = 2;
  optional Status maybe = 3;
  map<string, Status> by_name = 4;
}
"#;

#[test]
fn enums_by_name_keep_unknown_numbers_as_text() {
    let compiled = compile_text(ENUMS);
    let mut table = Table::new(&compiled, "e.Thing");
    assert_eq!(table.data_type("status"), &DataType::Utf8);
    let by_name = |pairs: &[(&str, i32)]| {
        Value::Map(pairs.iter().map(|(k, v)| (MapKey::String((*k).to_owned()), Value::EnumNumber(*v))).collect())
    };
    table.push(&table.message(&[
        ("status", Value::EnumNumber(1)),
        ("history", Value::List(vec![Value::EnumNumber(2), Value::EnumNumber(42), Value::EnumNumber(0)])),
        ("maybe", Value::EnumNumber(0)),
        ("by_name", by_name(&[("a", 1), ("z", 7)])),
    ]));
    table.push(&table.message(&[("status", Value::EnumNumber(42))]));
    table.push(&table.message(&[("status", Value::EnumNumber(-3))]));
    table.push(&table.message(&[]));
    let batch = table.finish();
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(strings(col(&batch, "status")), [s("ACTIVE"), s("42"), s("-3"), s("STATUS_UNKNOWN")]);
    assert_eq!(
        lists(col(&batch, "history"), strings),
        [Some(vec![s("RETIRED"), s("42"), s("STATUS_UNKNOWN")]), Some(vec![]), Some(vec![]), Some(vec![])]
    );
    assert_eq!(strings(col(&batch, "maybe")), [s("STATUS_UNKNOWN"), None, None, None]);
    assert_eq!(
        maps(col(&batch, "by_name"), strings),
        [Some(vec![("a".to_owned(), s("ACTIVE")), ("z".to_owned(), s("7"))]), Some(vec![]), Some(vec![]), Some(vec![])]
    );
}

#[test]
fn enums_by_number_are_int_columns() {
    let compiled = compile_text(ENUMS);
    let options = ProtobufOptions { enums: EnumMode::Number, ..ProtobufOptions::default() };
    let mut table = Table::with(&compiled, "e.Thing", &options);
    assert_eq!(table.data_type("status"), &DataType::Int32);
    assert_eq!(table.data_type("maybe"), &DataType::Int32);
    table.push(&table.message(&[
        ("status", Value::EnumNumber(1)),
        ("history", Value::List(vec![Value::EnumNumber(2), Value::EnumNumber(42)])),
    ]));
    table.push(&table.message(&[("status", Value::EnumNumber(42)), ("maybe", Value::EnumNumber(2))]));
    table.push(&table.message(&[]));
    let batch = table.finish();
    assert_eq!(ints(col(&batch, "status")), [Some(1), Some(42), Some(0)]);
    assert_eq!(ints(col(&batch, "maybe")), [None, Some(2), None]);
    assert_eq!(lists(col(&batch, "history"), ints), [Some(vec![Some(2), Some(42)]), Some(vec![]), Some(vec![])]);
}

// ---------------------------------------------------------------------------------------------------------
// Nested messages, repeated fields, maps
// ---------------------------------------------------------------------------------------------------------

const SHAPES: &str = r#"
syntax = "proto3";
package n;
message Point { int32 x = 1; int32 y = 2; }
message Shape {
  Point origin = 1;
  repeated int32 ids = 2;
  repeated Point points = 3;
  map<string, int64> counts = 4;
  map<string, Point> named = 5;
  repeated string tags = 6;
  repeated int32 loose = 7 [packed = false];
}
"#;

fn point(shape: &MessageDescriptor, x: i32, y: i32) -> Value {
    let point = sub(shape, "origin");
    let mut fields = Vec::new();
    if x != 0 {
        fields.push(("x", Value::I32(x)));
    }
    if y != 0 {
        fields.push(("y", Value::I32(y)));
    }
    Value::Message(build(&point, &fields))
}

/// A Shape with every field set.
fn full_shape(table: &Table) -> DynamicMessage {
    let shape = &table.message;
    table.message(&[
        ("origin", point(shape, 1, -2)),
        ("ids", Value::List(vec![Value::I32(1), Value::I32(-1), Value::I32(300)])),
        ("points", Value::List(vec![point(shape, 1, 2), point(shape, 0, 0), point(shape, 3, 0)])),
        (
            "counts",
            Value::Map(
                [("a", 1), ("b", -2)].into_iter().map(|(k, v)| (MapKey::String(k.into()), Value::I64(v))).collect(),
            ),
        ),
        ("named", Value::Map([(MapKey::String("p".into()), point(shape, 5, 0))].into_iter().collect())),
        ("tags", Value::List(vec![Value::String("t1".into()), Value::String(String::new())])),
        ("loose", Value::List(vec![Value::I32(8), Value::I32(9)])),
    ])
}

fn xy(array: &dyn Array) -> Vec<(Option<i32>, Option<i32>)> {
    let s = array.as_struct();
    let x = ints(s.column_by_name("x").unwrap().as_ref());
    let y = ints(s.column_by_name("y").unwrap().as_ref());
    x.into_iter().zip(y).collect()
}

/// Checks row `row` of `batch` holds [`full_shape`].
fn assert_full_shape(batch: &RecordBatch, row: usize) {
    let one = batch.slice(row, 1);
    let origin = col(&one, "origin");
    assert_eq!(nulls(origin.as_ref()), [false]);
    assert_eq!(xy(origin.as_ref()), [(Some(1), Some(-2))]);
    assert_eq!(lists(col(&one, "ids"), ints), [Some(vec![Some(1), Some(-1), Some(300)])]);
    assert_eq!(
        lists(col(&one, "points"), xy),
        [Some(vec![(Some(1), Some(2)), (Some(0), Some(0)), (Some(3), Some(0))])]
    );
    assert_eq!(maps(col(&one, "counts"), longs), [Some(vec![("a".to_owned(), Some(1)), ("b".to_owned(), Some(-2))])]);
    assert_eq!(maps(col(&one, "named"), xy), [Some(vec![("p".to_owned(), (Some(5), Some(0)))])]);
    assert_eq!(lists(col(&one, "tags"), strings), [Some(vec![Some("t1".to_owned()), Some(String::new())])]);
    assert_eq!(lists(col(&one, "loose"), ints), [Some(vec![Some(8), Some(9)])]);
}

#[test]
fn nested_messages_lists_and_maps_decode() {
    let compiled = compile_text(SHAPES);
    let mut table = Table::new(&compiled, "n.Shape");
    assert!(matches!(table.data_type("origin"), DataType::Struct(f) if f.len() == 2));
    assert!(matches!(table.data_type("ids"), DataType::List(e) if e.data_type() == &DataType::Int32));
    assert!(matches!(table.data_type("points"), DataType::List(e) if matches!(e.data_type(), DataType::Struct(_))));
    assert!(matches!(table.data_type("counts"), DataType::Map(..)));
    table.push(&full_shape(&table));
    table.push(&table.message(&[]));
    let batch = table.finish();
    assert_eq!(batch.num_rows(), 2);
    assert_full_shape(&batch, 0);
    // An absent message is a null struct; absent repeated fields and maps are empty, not null.
    assert_eq!(nulls(col(&batch, "origin").as_ref()), [false, true]);
    assert_eq!(lists(col(&batch, "ids"), ints)[1], Some(vec![]));
    assert_eq!(lists(col(&batch, "points"), xy)[1], Some(vec![]));
    assert_eq!(maps(col(&batch, "counts"), longs)[1], Some(vec![]));
    assert_eq!(maps(col(&batch, "named"), xy)[1], Some(vec![]));
    assert_eq!(lists(col(&batch, "tags"), strings)[1], Some(vec![]));
}

#[test]
fn repeated_scalars_decode_the_same_packed_and_unpacked() {
    let compiled = compile_text(SHAPES);
    let mut table = Table::new(&compiled, "n.Shape");
    let values = [1i32, -1, 300, 0, i32::MAX];
    let packed =
        table.message(&[("ids", Value::List(values.iter().map(|v| Value::I32(*v)).collect()))]).encode_to_vec();
    assert_eq!(packed[0], (2 << 3) | 2, "prost-reflect packs proto3 repeated scalars");
    let mut unpacked = Vec::new();
    for v in values {
        put_tag(2, 0, &mut unpacked);
        put_varint(i64::from(v) as u64, &mut unpacked);
    }
    // Both forms in one record: the values are concatenated.
    let mut mixed = packed.clone();
    put_tag(2, 0, &mut mixed);
    put_varint(77, &mut mixed);
    // `loose` is declared unpacked; both forms are accepted for it too.
    let loose_unpacked = [7 << 3, 4, 7 << 3, 5];
    let mut loose_packed = Vec::new();
    put_len(7, &[4, 5], &mut loose_packed);

    for payload in [&packed[..], &unpacked, &mixed, &loose_unpacked, &loose_packed] {
        table.append(payload).unwrap();
    }
    let batch = table.finish();
    let expected: Vec<Option<i32>> = values.iter().map(|v| Some(*v)).collect();
    let mut with_77 = expected.clone();
    with_77.push(Some(77));
    assert_eq!(
        lists(col(&batch, "ids"), ints),
        [Some(expected.clone()), Some(expected), Some(with_77), Some(vec![]), Some(vec![])]
    );
    assert_eq!(
        lists(col(&batch, "loose"), ints),
        [Some(vec![]), Some(vec![]), Some(vec![]), Some(vec![Some(4), Some(5)]), Some(vec![Some(4), Some(5)])]
    );
}

#[test]
fn map_entries_missing_their_key_or_value_read_the_defaults() {
    let compiled = compile_text(SHAPES);
    let mut table = Table::new(&compiled, "n.Shape");
    let mut payload = Vec::new();
    // counts: {"k": <no value>}, {<no key>: 5}
    put_len(4, &[0x0a, 1, b'k'], &mut payload);
    put_len(4, &[0x10, 5], &mut payload);
    // named: {"q": <no value>}
    put_len(5, &[0x0a, 1, b'q'], &mut payload);
    // counts: the key twice in one entry: the last one wins.
    put_len(4, &[0x0a, 1, b'x', 0x0a, 1, b'y', 0x10, 3], &mut payload);
    table.append(&payload).unwrap();
    let batch = table.finish();
    assert_eq!(
        maps(col(&batch, "counts"), longs),
        [Some(vec![(String::new(), Some(5)), ("k".to_owned(), Some(0)), ("y".to_owned(), Some(3))])]
    );
    let named = col(&batch, "named").as_map().value(0);
    assert_eq!(strings(named.column(0).as_ref()), [Some("q".to_owned())]);
    assert_eq!(nulls(named.column(1).as_ref()), [true]);
}

// ---------------------------------------------------------------------------------------------------------
// Oneofs
// ---------------------------------------------------------------------------------------------------------

const ONEOFS: &str = r#"
syntax = "proto3";
package o;
message Inner { int32 a = 1; }
message Choice {
  string id = 1;
  oneof kind {
    string text = 2;
    int64 number = 3;
    Inner inner = 4;
  }
  optional int32 opt = 5;
}
"#;

#[test]
fn oneof_members_are_columns_and_the_case_column_names_the_member_set() {
    let compiled = compile_text(ONEOFS);
    let mut table = Table::new(&compiled, "o.Choice");
    // `opt`'s synthetic oneof gets no case column.
    assert_eq!(table.column_names(), ["id", "text", "number", "inner", "opt", "kind_case"]);
    assert_eq!(table.data_type("kind_case"), &DataType::Utf8);
    let inner = sub(&table.message, "inner");
    table.push(&table.message(&[("id", Value::String("a".into())), ("text", Value::String("hi".into()))]));
    // A member set to its default is still set.
    table.push(&table.message(&[("number", Value::I64(0))]));
    table.push(&table.message(&[("inner", Value::Message(build(&inner, &[("a", Value::I32(4))])))]));
    table.push(&table.message(&[("id", Value::String("none".into())), ("opt", Value::I32(1))]));
    let batch = table.finish();
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(strings(col(&batch, "id")), [s("a"), s(""), s(""), s("none")]);
    assert_eq!(strings(col(&batch, "text")), [s("hi"), None, None, None]);
    assert_eq!(longs(col(&batch, "number")), [None, Some(0), None, None]);
    assert_eq!(nulls(col(&batch, "inner").as_ref()), [true, true, false, true]);
    assert_eq!(ints(child(col(&batch, "inner"), "a").as_ref())[2], Some(4));
    assert_eq!(ints(col(&batch, "opt")), [None, None, None, Some(1)]);
    assert_eq!(strings(col(&batch, "kind_case")), [s("text"), s("number"), s("inner"), None]);
}

#[test]
fn oneof_case_columns_can_be_turned_off() {
    let compiled = compile_text(ONEOFS);
    let options = ProtobufOptions { oneof_case: false, ..ProtobufOptions::default() };
    let mut table = Table::with(&compiled, "o.Choice", &options);
    assert_eq!(table.column_names(), ["id", "text", "number", "inner", "opt"]);
    table.push(&table.message(&[("number", Value::I64(8))]));
    // Without the case column, the last member on the wire is still the only one set.
    let mut payload = table.message(&[("number", Value::I64(9))]).encode_to_vec();
    payload.extend(table.message(&[("text", Value::String("t".into()))]).encode_to_vec());
    table.append(&payload).unwrap();
    let batch = table.finish();
    assert_eq!(longs(col(&batch, "number")), [Some(8), None]);
    assert_eq!(strings(col(&batch, "text")), [None, Some("t".to_owned())]);
}

#[test]
fn the_last_oneof_member_on_the_wire_is_the_one_set() {
    let compiled = compile_text(ONEOFS);
    let mut table = Table::new(&compiled, "o.Choice");
    let inner = sub(&table.message, "inner");
    let mut payload = table.message(&[("text", Value::String("hi".into()))]).encode_to_vec();
    payload.extend(table.message(&[("number", Value::I64(3))]).encode_to_vec());
    table.append(&payload).unwrap();
    let mut payload = table.message(&[("inner", Value::Message(build(&inner, &[])))]).encode_to_vec();
    payload.extend(table.message(&[("text", Value::String("last".into()))]).encode_to_vec());
    table.append(&payload).unwrap();
    let batch = table.finish();
    assert_eq!(strings(col(&batch, "kind_case")), [Some("number".to_owned()), Some("text".to_owned())]);
    assert_eq!(longs(col(&batch, "number")), [Some(3), None]);
    assert_eq!(strings(col(&batch, "text")), [None, Some("last".to_owned())]);
    assert_eq!(nulls(col(&batch, "inner").as_ref()), [true, true]);
}

#[test]
fn a_field_named_like_a_case_column_keeps_its_own_values() {
    let compiled = compile_text(
        r#"
        syntax = "proto3";
        package o;
        message Clash {
          oneof kind { string a = 1; int32 b = 2; }
          int32 kind_case = 3;
        }
        "#,
    );
    let mut table = Table::new(&compiled, "o.Clash");
    assert_eq!(table.column_names(), ["a", "b", "kind_case"]);
    table.push(&table.message(&[("a", Value::String("x".into())), ("kind_case", Value::I32(5))]));
    table.push(&table.message(&[("b", Value::I32(2))]));
    let batch = table.finish();
    assert_eq!(strings(col(&batch, "a")), [Some("x".to_owned()), None]);
    assert_eq!(ints(col(&batch, "b")), [None, Some(2)]);
    assert_eq!(ints(col(&batch, "kind_case")), [Some(5), Some(0)]);
}

// ---------------------------------------------------------------------------------------------------------
// Well-known types
// ---------------------------------------------------------------------------------------------------------

const WELL_KNOWN: &str = r#"
syntax = "proto3";
package w;
import "google/protobuf/any.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";
message Inner { int32 a = 1; string b = 2; google.protobuf.Timestamp at = 3; }
message Event {
  google.protobuf.Timestamp at = 1;
  google.protobuf.Duration took = 2;
  google.protobuf.Int32Value count = 3;
  google.protobuf.StringValue label = 4;
  google.protobuf.Struct attrs = 5;
  google.protobuf.Any extra = 6;
  repeated google.protobuf.Timestamp times = 7;
  google.protobuf.UInt64Value big = 8;
  google.protobuf.Value val = 9;
}
"#;

#[test]
fn well_known_types_map_to_their_columns() {
    let compiled = compile_text(WELL_KNOWN);
    let table = Table::new(&compiled, "w.Event");
    assert!(matches!(table.data_type("at"), DataType::Timestamp(TimeUnit::Microsecond, Some(_))));
    assert_eq!(table.data_type("took"), &DataType::Int64);
    assert_eq!(table.data_type("count"), &DataType::Int32);
    assert_eq!(table.data_type("label"), &DataType::Utf8);
    assert_eq!(table.data_type("attrs"), &DataType::Utf8);
    assert_eq!(table.data_type("extra"), &DataType::Utf8);
    assert_eq!(table.data_type("big"), &DataType::Decimal128(20, 0));
    assert_eq!(table.data_type("val"), &DataType::Utf8);
}

#[test]
fn timestamps_durations_and_wrappers_decode() {
    let compiled = compile_text(WELL_KNOWN);
    let mut table = Table::new(&compiled, "w.Event");
    let timestamp = sub(&table.message, "at");
    let duration = sub(&table.message, "took");
    let at = |seconds: i64, nanos: i32| {
        Value::Message(build(&timestamp, &[("seconds", Value::I64(seconds)), ("nanos", Value::I32(nanos))]))
    };
    let took = |seconds: i64, nanos: i32| {
        Value::Message(build(&duration, &[("seconds", Value::I64(seconds)), ("nanos", Value::I32(nanos))]))
    };
    let (count_type, label_type, big_type) =
        (sub(&table.message, "count"), sub(&table.message, "label"), sub(&table.message, "big"));
    let count = |v: i32| Value::Message(build(&count_type, &[("value", Value::I32(v))]));
    let label = |v: &str| Value::Message(build(&label_type, &[("value", Value::String(v.into()))]));
    let big = |v: u64| Value::Message(build(&big_type, &[("value", Value::U64(v))]));
    table.push(&table.message(&[
        ("at", at(1_700_000_000, 123_456_789)),
        ("took", took(90, 500_000)),
        ("count", count(5)),
        ("label", label("x")),
        ("times", Value::List(vec![at(1, 0), at(0, 1_000)])),
        ("big", big(u64::MAX)),
    ]));
    table.push(&table.message(&[]));
    // Present wrappers holding their default (an empty wrapper message on the wire) are not null.
    table.push(&table.message(&[
        ("at", at(-1, 999_999_999)),
        ("took", took(-1, -500_000_000)),
        ("count", count(0)),
        ("label", label("")),
        ("big", big(0)),
    ]));
    let batch = table.finish();
    let at_col = col(&batch, "at").as_primitive::<TimestampMicrosecondType>();
    assert_eq!(at_col.iter().collect::<Vec<_>>(), [Some(1_700_000_000_123_456), None, Some(-1)]);
    assert_eq!(at_col.timezone(), Some("+00:00"));
    assert_eq!(longs(col(&batch, "took")), [Some(90_000_500), None, Some(-1_500_000)]);
    assert_eq!(ints(col(&batch, "count")), [Some(5), None, Some(0)]);
    assert_eq!(strings(col(&batch, "label")), [Some("x".to_owned()), None, Some(String::new())]);
    assert_eq!(decimals(col(&batch, "big")), [Some(18_446_744_073_709_551_615), None, Some(0)]);
    let times = lists(col(&batch, "times"), |a| a.as_primitive::<TimestampMicrosecondType>().iter().collect());
    assert_eq!(times, [Some(vec![Some(1_000_000), Some(1)]), Some(vec![]), Some(vec![])]);
}

#[test]
fn struct_value_and_any_are_json_text() {
    let compiled = compile_text(WELL_KNOWN);
    let mut table = Table::new(&compiled, "w.Event");
    let attrs = serde_json::json!({ "a": 1, "b": [true, null, "s"], "c": { "d": "e" } });
    table.push(&table.json(serde_json::json!({
        "attrs": attrs,
        "extra": { "@type": "type.googleapis.com/w.Inner", "a": 7, "b": "q", "at": "2023-11-14T22:13:20Z" },
        "val": [1.5, "x"],
    })));
    // An Any whose type the schema does not define keeps its type URL and its bytes.
    let any = sub(&table.message, "extra");
    let unknown = build(
        &any,
        &[
            ("type_url", Value::String("type.googleapis.com/nope.Missing".into())),
            ("value", Value::Bytes(vec![1, 2, 3].into())),
        ],
    );
    table.push(&table.message(&[("extra", Value::Message(unknown))]));
    table.push(&table.message(&[]));
    let batch = table.finish();
    assert_eq!(
        json_texts(col(&batch, "attrs").as_ref()),
        [Some(serde_json::json!({ "a": 1.0, "b": [true, null, "s"], "c": { "d": "e" } })), None, None]
    );
    assert_eq!(
        json_texts(col(&batch, "extra").as_ref()),
        [
            Some(serde_json::json!({
                "@type": "type.googleapis.com/w.Inner", "a": 7, "b": "q", "at": "2023-11-14T22:13:20Z"
            })),
            Some(serde_json::json!({ "@type": "type.googleapis.com/nope.Missing", "value": "AQID" })),
            None
        ]
    );
    assert_eq!(json_texts(col(&batch, "val").as_ref()), [Some(serde_json::json!([1.5, "x"])), None, None]);
}

// ---------------------------------------------------------------------------------------------------------
// Recursion
// ---------------------------------------------------------------------------------------------------------

const RECURSIVE: &str = r#"
syntax = "proto3";
package r;
message Node { string name = 1; Node child = 2; }
message Tree { Node root = 1; repeated Node forest = 2; }
"#;

/// `a` → `b` → `c`.
fn three_levels(node: &MessageDescriptor) -> DynamicMessage {
    let c = build(node, &[("name", Value::String("c".into()))]);
    let b = build(node, &[("name", Value::String("b".into())), ("child", Value::Message(c))]);
    build(node, &[("name", Value::String("a".into())), ("child", Value::Message(b))])
}

#[test]
fn a_recursive_message_is_expanded_once_and_its_nested_occurrence_is_json() {
    let compiled = compile_text(RECURSIVE);
    let node = compiled.message("r.Node").unwrap();

    // As the record's own message: the message is the one expansion, `child` (a Node again) is JSON.
    let mut nodes = Table::new(&compiled, "r.Node");
    assert_eq!(nodes.column_names(), ["name", "child"]);
    assert_eq!(nodes.data_type("child"), &DataType::Utf8);
    nodes.push(&three_levels(&node));
    nodes.push(&build(&node, &[("name", Value::String("leaf".into()))]));
    let batch = nodes.finish();
    assert_eq!(strings(col(&batch, "name")), [Some("a".to_owned()), Some("leaf".to_owned())]);
    assert_eq!(
        json_texts(col(&batch, "child").as_ref()),
        [Some(serde_json::json!({ "name": "b", "child": { "name": "c" } })), None]
    );

    // Inside another message: a `root` struct whose own `child` is JSON.
    let mut trees = Table::new(&compiled, "r.Tree");
    let DataType::Struct(root) = trees.data_type("root") else { panic!("root is not a struct") };
    assert_eq!(
        root.iter().map(|f| (f.name().as_str(), f.data_type())).collect::<Vec<_>>(),
        [("name", &DataType::Utf8), ("child", &DataType::Utf8)]
    );
    let tree = trees.message(&[
        ("root", Value::Message(three_levels(&node))),
        ("forest", Value::List(vec![Value::Message(three_levels(&node)), Value::Message(build(&node, &[]))])),
    ]);
    trees.push(&tree);
    let batch = trees.finish();
    let root = col(&batch, "root");
    assert_eq!(strings(child(root, "name").as_ref()), [Some("a".to_owned())]);
    assert_eq!(
        json_texts(child(root, "child").as_ref()),
        [Some(serde_json::json!({ "name": "b", "child": { "name": "c" } }))]
    );
    let forest = lists(col(&batch, "forest"), |a| {
        let s = a.as_struct();
        strings(s.column_by_name("name").unwrap().as_ref())
            .into_iter()
            .zip(json_texts(s.column_by_name("child").unwrap().as_ref()))
            .collect()
    });
    assert_eq!(
        forest,
        [Some(vec![
            (Some("a".to_owned()), Some(serde_json::json!({ "name": "b", "child": { "name": "c" } }))),
            (Some(String::new()), None),
        ])]
    );
}

// ---------------------------------------------------------------------------------------------------------
// Unknown fields and bad payloads
// ---------------------------------------------------------------------------------------------------------

#[test]
fn fields_the_table_does_not_know_are_skipped() {
    let old = compile_text("syntax = \"proto3\";\npackage u;\nmessage M { int32 a = 1; string c = 3; }\n");
    let new = compile_text(
        r#"
        syntax = "proto3";
        package u;
        message Inner { int32 q = 1; }
        message M {
          int32 a = 1;
          fixed64 x = 2;
          string c = 3;
          fixed32 y = 4;
          Inner z = 5;
          repeated int64 w = 6;
          int32 big = 1000;
          double d = 536870911;
        }
        "#,
    );
    let old_message = old.message("u.M").unwrap();
    let new_message = new.message("u.M").unwrap();
    let mut table = Table::reading(&old_message, &old_message, &ProtobufOptions::default());
    let inner = sub(&new_message, "z");
    let mut payload = build(
        &new_message,
        &[
            ("a", Value::I32(-4)),
            ("x", Value::U64(u64::MAX)),
            ("c", Value::String("kept".into())),
            ("y", Value::U32(9)),
            ("z", Value::Message(build(&inner, &[("q", Value::I32(1))]))),
            ("w", Value::List(vec![Value::I64(1), Value::I64(2)])),
            ("big", Value::I32(12)),
            ("d", Value::F64(0.5)),
        ],
    )
    .encode_to_vec();
    // A group (wire types 3 and 4), nested, as proto2 writers may send.
    put_tag(9, 3, &mut payload);
    put_tag(1, 0, &mut payload);
    put_varint(5, &mut payload);
    put_tag(2, 3, &mut payload);
    put_tag(2, 4, &mut payload);
    put_tag(9, 4, &mut payload);
    table.append(&payload).unwrap();
    let batch = table.finish();
    assert_eq!(ints(col(&batch, "a")), [Some(-4)]);
    assert_eq!(strings(col(&batch, "c")), [Some("kept".to_owned())]);

    for (bad, why) in [
        (vec![(9 << 3) | 3, 0x08, 1, (8 << 3) | 4], "a group ends with the wrong number"),
        (vec![(9 << 3) | 3, 0x08, 1], "the payload ends inside a group"),
        (vec![(9 << 3) | 6, 0], "field 9 has the invalid wire type 6"),
        (vec![(9 << 3) | 4], "field 9 has the invalid wire type 4"),
        (vec![0x00, 1], "a field has number 0"),
    ] {
        assert_eq!(table.append(&bad), Err(WireError(why.into())), "{bad:?}");
    }
}

/// Good, bad, good: the bad record changes no column.
fn assert_bad_record_changes_nothing(bad: &[u8], why: &str) {
    let compiled = compile_text(SHAPES);
    let mut table = Table::new(&compiled, "n.Shape");
    let good = full_shape(&table).encode_to_vec();
    table.append(&good).unwrap();
    assert_eq!(table.append(bad), Err(WireError(why.into())));
    assert_eq!(table.rows.len(), 1);
    table.append(&good).unwrap();
    let batch = table.finish();
    assert_eq!(batch.num_rows(), 2);
    assert_full_shape(&batch, 0);
    assert_full_shape(&batch, 1);
}

#[test]
fn a_truncated_payload_is_an_error_that_changes_no_column() {
    let compiled = compile_text(SHAPES);
    let table = Table::new(&compiled, "n.Shape");
    let mut payload = full_shape(&table).encode_to_vec();
    // Cut inside a second `points` element appended at the end: the first fields were already written.
    let mut extra = Vec::new();
    put_len(3, &[0x08, 0x05, 0x10, 0x06], &mut extra);
    payload.extend_from_slice(&extra[..extra.len() - 1]);
    assert_bad_record_changes_nothing(
        &payload,
        "field `points` of n.Shape: a length-delimited field runs past the end of the payload",
    );
    // Cut inside a nested message's varint: the length is right, the body is not.
    let mut payload = full_shape(&table).encode_to_vec();
    put_len(3, &[0x08, 0x85], &mut payload);
    assert_bad_record_changes_nothing(&payload, "field `x` of n.Point: the payload ends inside a varint");
    // Cut anywhere: an error, or (at a field boundary) a shorter but valid record.
    let whole = full_shape(&table).encode_to_vec();
    let mut table = Table::new(&compiled, "n.Shape");
    let mut ok = 0;
    for cut in 0..whole.len() {
        if table.append(&whole[..cut]).is_ok() {
            ok += 1;
        }
    }
    assert_eq!(table.rows.len(), ok);
    assert_eq!(table.finish().num_rows(), ok);
}

#[test]
fn a_wrong_wire_type_is_an_error_that_changes_no_column() {
    let compiled = compile_text(SHAPES);
    let table = Table::new(&compiled, "n.Shape");
    // `tags` (strings) as a varint, after every other field was written.
    let mut payload = full_shape(&table).encode_to_vec();
    payload.extend_from_slice(&[(6 << 3), 1]);
    assert_bad_record_changes_nothing(&payload, "field `tags` of n.Shape: has wire type 0, the schema says 2");
    // `origin` (a message) as a fixed32.
    let mut payload = full_shape(&table).encode_to_vec();
    payload.extend_from_slice(&[(1 << 3) | 5, 0, 0, 0, 0]);
    assert_bad_record_changes_nothing(&payload, "field `origin` of n.Shape: has wire type 5, the schema says 2");
    // `ids` elements as fixed64.
    let mut payload = full_shape(&table).encode_to_vec();
    payload.extend_from_slice(&[(2 << 3) | 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_bad_record_changes_nothing(&payload, "field `ids` of n.Shape: has wire type 1, the schema says 0");
    // Inside a map entry's value message.
    let mut payload = full_shape(&table).encode_to_vec();
    put_len(5, &[0x0a, 1, b'z', 0x12, 2, (1 << 3) | 2, 0], &mut payload);
    assert_bad_record_changes_nothing(&payload, "field `x` of n.Point: has wire type 2, the schema says 0");
    // Invalid UTF-8 in a string.
    let mut payload = full_shape(&table).encode_to_vec();
    put_len(6, &[0xff, 0xfe], &mut payload);
    assert_bad_record_changes_nothing(&payload, "field `tags` of n.Shape: a string field holds invalid UTF-8");
}

// ---------------------------------------------------------------------------------------------------------
// Message selection
// ---------------------------------------------------------------------------------------------------------

#[test]
fn message_indexes_select_nested_messages() {
    let compiled = compile_text(
        r#"
        syntax = "proto3";
        package s;
        message A { message A1 { int32 x = 1; } }
        message B { message B1 { string y = 1; } message B2 { } }
        message C { map<string, int32> m = 1; message C1 { bool z = 1; } }
        "#,
    );
    let name = |indexes: &[usize]| compiled.select(indexes.iter().copied()).map(|m| m.full_name().to_owned());
    assert_eq!(compiled.select([1, 0].into_iter()).unwrap().full_name(), "s.B.B1");
    assert_eq!(name(&[]).unwrap(), "s.A");
    assert_eq!(name(&[0]).unwrap(), "s.A");
    assert_eq!(name(&[0, 0]).unwrap(), "s.A.A1");
    assert_eq!(name(&[1]).unwrap(), "s.B");
    assert_eq!(name(&[1, 1]).unwrap(), "s.B.B2");
    // Map entries count as nested messages, in declaration order.
    assert_eq!(name(&[2, 0]).unwrap(), "s.C.MEntry");
    assert_eq!(name(&[2, 1]).unwrap(), "s.C.C1");
    assert_eq!(name(&[3]), Err("the message index [3] is out of range for schema id 1".to_owned()));
    assert_eq!(name(&[1, 2]), Err("the message index [1, 2] is out of range for schema id 1".to_owned()));
    assert_eq!(name(&[0, 0, 0]), Err("the message index [0, 0, 0] is out of range for schema id 1".to_owned()));
    assert_eq!(compiled.first().unwrap().full_name(), "s.A");
    assert_eq!(compiled.message(".s.B.B1").unwrap().full_name(), "s.B.B1");
    assert!(compiled.message("s.Nope").is_none());

    let empty = compile_text("syntax = \"proto3\";\npackage s;\n");
    assert_eq!(
        empty.select(std::iter::empty()).map(|m| m.full_name().to_owned()),
        Err("schema id 1 defines no message".to_owned())
    );
}

// ---------------------------------------------------------------------------------------------------------
// Fuzz
// ---------------------------------------------------------------------------------------------------------

const RICH: &str = r#"
syntax = "proto3";
package f;
import "google/protobuf/any.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";
enum Kind { KIND_NONE = 0; SMALL = 1; LARGE = 2; }
message Point { sint32 x = 1; double y = 2; google.protobuf.Timestamp at = 3; }
message Node { string name = 1; Node child = 2; repeated Node kids = 3; }
message Rich {
  int32 i32 = 1;
  int64 i64 = 2;
  uint32 u32 = 3;
  uint64 u64 = 4;
  sint64 s64 = 5;
  fixed32 f32 = 6;
  fixed64 f64 = 7;
  sfixed32 sf32 = 8;
  sfixed64 sf64 = 9;
  float fl = 10;
  double db = 11;
  bool b = 12;
  string s = 13;
  bytes by = 14;
  optional int32 opt = 15;
  Kind kind = 16;
  repeated Kind kinds = 17;
  Point origin = 18;
  repeated Point points = 19;
  repeated int32 ids = 20;
  repeated string tags = 21;
  map<string, int64> counts = 22;
  map<int32, Point> by_id = 23;
  oneof choice { string text = 24; Point spot = 25; uint64 n = 26; }
  google.protobuf.Timestamp at = 27;
  google.protobuf.Duration took = 28;
  google.protobuf.Int32Value count = 29;
  google.protobuf.StringValue label = 30;
  google.protobuf.Struct attrs = 31;
  google.protobuf.Any extra = 32;
  Node tree = 33;
  repeated google.protobuf.Timestamp times = 34;
  map<string, google.protobuf.Value> values = 35;
}
"#;

fn rich_samples(table: &Table) -> Vec<Vec<u8>> {
    let full = serde_json::json!({
        "i32": -5, "i64": "-9000000000", "u32": 4294967295u64, "u64": "18446744073709551615", "s64": "-3",
        "f32": 7, "f64": "8", "sf32": -9, "sf64": "-10", "fl": 1.5, "db": -2.25, "b": true, "s": "héllo",
        "by": "AAEC", "opt": 0, "kind": "LARGE", "kinds": ["SMALL", "KIND_NONE"],
        "origin": { "x": -1, "y": 0.5, "at": "2023-11-14T22:13:20.123456789Z" },
        "points": [{ "x": 1 }, {}, { "y": 3.0 }],
        "ids": [1, -1, 300], "tags": ["a", ""], "counts": { "k": "1", "j": "-2" },
        "by_id": { "7": { "x": 7 }, "-1": {} },
        "spot": { "x": 3 },
        "at": "1970-01-01T00:00:01Z", "took": "-1.5s", "count": 0, "label": "l",
        "attrs": { "a": [1, { "b": null }], "c": "d" },
        "extra": { "@type": "type.googleapis.com/f.Point", "x": 2, "at": "2000-01-01T00:00:00Z" },
        "tree": { "name": "a", "child": { "name": "b", "kids": [{ "name": "c" }] }, "kids": [{ "name": "d" }] },
        "times": ["2001-01-01T00:00:00Z"],
        "values": { "v": { "x": [true, 1] }, "w": null },
    });
    let small = serde_json::json!({ "text": "t", "kinds": ["LARGE"], "tags": ["z"] });
    let number = serde_json::json!({ "n": "5", "tree": { "name": "x" } });
    [full, small, number, serde_json::json!({})].into_iter().map(|j| table.json(j).encode_to_vec()).collect()
}

fn mutate(rng: &mut Rng, samples: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = samples[rng.below(samples.len())].clone();
    match rng.below(6) {
        0 => {
            let len = rng.below(64);
            return (0..len).map(|_| rng.byte()).collect();
        }
        1 => {
            for _ in 0..1 + rng.below(4) {
                if !bytes.is_empty() {
                    let i = rng.below(bytes.len());
                    bytes[i] ^= 1 << rng.below(8);
                }
            }
        }
        2 => bytes.truncate(rng.below(bytes.len() + 1)),
        3 => {
            let at = rng.below(bytes.len() + 1);
            let inserted: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.byte()).collect();
            bytes.splice(at..at, inserted);
        }
        4 => {
            if !bytes.is_empty() {
                let i = rng.below(bytes.len());
                bytes[i] = rng.byte();
            }
        }
        _ => {
            // Splice the head of one sample onto the tail of another.
            let other = &samples[rng.below(samples.len())];
            let (a, b) = (rng.below(bytes.len() + 1), rng.below(other.len() + 1));
            bytes.truncate(a);
            bytes.extend_from_slice(&other[b..]);
        }
    }
    bytes
}

#[test]
fn random_and_mutated_payloads_never_panic_and_never_corrupt_the_columns() {
    let compiled = compile_text(RICH);
    let mut table = Table::new(&compiled, "f.Rich");
    let samples = rich_samples(&table);
    // What the first sample decodes to on its own.
    let mut reference = Table::new(&compiled, "f.Rich");
    reference.append(&samples[0]).unwrap();
    let reference = reference.finish();
    assert_eq!(reference.num_rows(), 1);

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut ok, mut failed, mut pending) = (0usize, 0usize, 0usize);
    for _ in 0..20_000 {
        let payload = mutate(&mut rng, &samples);
        match table.append(&payload) {
            Ok(()) => {
                ok += 1;
                pending += 1;
            }
            Err(WireError(_)) => {
                failed += 1;
                assert_eq!(table.rows.len(), pending);
                // The columns are still consistent: a good record after the bad one decodes exactly.
                table.append(&samples[0]).unwrap();
                let batch = table.finish();
                assert_eq!(batch.num_rows(), pending + 1);
                assert_eq!(batch.slice(pending, 1), reference);
                pending = 0;
            }
        }
    }
    assert_eq!(table.finish().num_rows(), pending);
    assert_eq!(ok + failed, 20_000);
    assert!(ok > 1_000 && failed > 1_000, "ok {ok}, failed {failed}");
}

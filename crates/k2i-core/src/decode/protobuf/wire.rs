//! Protobuf wire format straight into Arrow columns.
//!
//! A [`MessagePlan`] is built once per (writer schema, message, table schema): for every field number of
//! the writer's message, the table column it lands in and how its wire value is read; for every column of
//! the table's struct, what a record that lacks it gets (null, the proto3 default, an empty list). The hot
//! loop reads tags and values from the borrowed record bytes and appends to growable column buffers
//! ([`Col`]); nothing is allocated per record except the JSON text of `Struct`/`Any`-like fields and of
//! recursive messages. A record that fails half-way is rolled back: every column is cut back to the row
//! count it had before the record.
//!
//! Presence: a field with presence (proto2 `optional`, proto3 `optional`, a oneof member, a message) reads
//! null when the record lacks it, or its declared `[default = …]` in proto2; a proto3 field without
//! presence reads its default (0, "", false, the enum's first value). Repeated fields and maps read an
//! empty list / map. A singular scalar that occurs twice keeps the last value (protobuf's rule); a singular
//! message that occurs twice (protobuf would merge the two) is a record error.

use std::sync::Arc;

use arrow_schema::{DataType, Fields, TimeUnit};
use prost_reflect::{Cardinality, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value};

use super::{WellKnown, case_column, well_known};
use crate::config::{EnumMode, ProtobufOptions};
use crate::decode::columns::{Col, Scalar, err};
pub use crate::decode::columns::{Rows, WireError};

// ---------------------------------------------------------------------------------------------------------
// Plans
// ---------------------------------------------------------------------------------------------------------

/// How one field's wire values are read.
#[derive(Debug, Clone)]
enum Read {
    /// Varint as a signed 32-bit value (`int32`, and `bool`/enum numbers).
    Int32,
    Int64,
    Uint32,
    Uint64,
    Sint32,
    Sint64,
    Bool,
    Fixed32,
    Fixed64,
    Sfixed32,
    Sfixed64,
    Float,
    Double,
    /// `string` (UTF-8 checked by the column) or `bytes`.
    Len,
    /// An enum stored by name: names by number (numbers without a name are kept as text).
    EnumName(Arc<EnumNames>),
    /// An enum stored by number.
    EnumNumber,
    /// A nested message into a struct column.
    Message(Arc<MessagePlan>),
    /// A map entry.
    Entry(Arc<EntryPlan>),
    /// `google.protobuf.Timestamp` → µs.
    Timestamp,
    /// `google.protobuf.Duration` → µs.
    Duration,
    /// A wrapper: its field 1, read as given; an absent value is the wrapped type's default.
    Wrapper(Box<Read>, Default),
    /// A message stored as its JSON text.
    Json(MessageDescriptor),
}

impl Read {
    /// The wire type a singular value has.
    fn wire_type(&self) -> u8 {
        match self {
            Self::Int32
            | Self::Int64
            | Self::Uint32
            | Self::Uint64
            | Self::Sint32
            | Self::Sint64
            | Self::Bool
            | Self::EnumName(_)
            | Self::EnumNumber => WT_VARINT,
            Self::Fixed32 | Self::Sfixed32 | Self::Float => WT_FIXED32,
            Self::Fixed64 | Self::Sfixed64 | Self::Double => WT_FIXED64,
            _ => WT_LEN,
        }
    }

    /// Whether repeated values may come packed.
    fn packable(&self) -> bool {
        self.wire_type() != WT_LEN
    }
}

/// Enum names by number.
#[derive(Debug)]
struct EnumNames {
    dense: Vec<Option<Box<str>>>,
    sparse: Vec<(i32, Box<str>)>,
}

impl EnumNames {
    fn name(&self, number: i32) -> Option<&str> {
        if let Ok(i) = usize::try_from(number)
            && let Some(slot) = self.dense.get(i)
        {
            return slot.as_deref();
        }
        self.sparse.iter().find(|(n, _)| *n == number).map(|(_, s)| &**s)
    }
}

/// What a column gets when the record lacks its field.
#[derive(Debug, Clone)]
enum Default {
    Null,
    Value(Owned),
    /// A list or map the writer knows: an empty one.
    Empty,
}

#[derive(Debug, Clone)]
enum Owned {
    Bool(bool),
    I64(i64),
    U64(u64),
    F32(f32),
    F64(f64),
    Bytes(Box<[u8]>),
}

impl Owned {
    fn scalar(&self) -> Scalar<'_> {
        match self {
            Self::Bool(b) => Scalar::Bool(*b),
            Self::I64(i) => Scalar::I64(*i),
            Self::U64(u) => Scalar::U64(*u),
            Self::F32(f) => Scalar::F32(*f),
            Self::F64(f) => Scalar::F64(*f),
            Self::Bytes(b) => Scalar::Bytes(b),
        }
    }
}

#[derive(Debug)]
struct Slot {
    /// The column in the message's struct.
    column: usize,
    read: Read,
    repeated: bool,
    /// The oneof case column and this member's name.
    case: Option<(usize, Box<str>)>,
    /// The columns of the other members of this field's oneof: setting this member clears them.
    others: Box<[usize]>,
    name: Box<str>,
}

/// How one message type is read into one struct's columns.
#[derive(Debug)]
pub struct MessagePlan {
    name: String,
    /// Slot index + 1 by field number, for small numbers.
    dense: Vec<u16>,
    /// (number, slot index) for the rest, sorted.
    sparse: Vec<(u32, u16)>,
    slots: Vec<Slot>,
    /// Per column of the struct.
    defaults: Vec<Default>,
}

/// A map entry: key into the keys column, value into the values column.
#[derive(Debug)]
struct EntryPlan {
    key: Read,
    key_default: Owned,
    value: Read,
    value_default: Default,
}

/// Why a plan cannot be built against the table's columns (the schema must evolve first, or cannot).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

const DENSE_LIMIT: u32 = 256;

impl MessagePlan {
    /// A plan reading `message` into columns of `fields` (a table struct's Arrow fields, in order).
    pub fn build(message: &MessageDescriptor, fields: &Fields, options: &ProtobufOptions) -> Result<Self, PlanError> {
        let mut path = vec![message.full_name().to_owned()];
        Self::build_in(message, fields, options, &mut path)
    }

    fn build_in(
        message: &MessageDescriptor,
        fields: &Fields,
        options: &ProtobufOptions,
        path: &mut Vec<String>,
    ) -> Result<Self, PlanError> {
        let position = |name: &str| fields.iter().position(|f| f.name() == name);
        let mut slots = Vec::new();
        let mut defaults = vec![Default::Null; fields.len()];
        for field in message.fields() {
            let Some(column) = position(field.name()) else {
                return Err(PlanError(format!("the table has no column `{}`", qualified(message, &field))));
            };
            let data_type = fields[column].data_type();
            let (read, repeated, default) = if field.is_map() {
                let DataType::Map(entry, _) = data_type else { return Err(mismatch(message, &field, data_type)) };
                let DataType::Struct(kv) = entry.data_type() else { return Err(mismatch(message, &field, data_type)) };
                let Kind::Message(entry_message) = field.kind() else { unreachable!("map fields are messages") };
                let key_field = entry_message.map_entry_key_field();
                let value_field = entry_message.map_entry_value_field();
                let key = single(&key_field, kv[0].data_type(), options, path)
                    .ok_or_else(|| mismatch(message, &key_field, kv[0].data_type()))?;
                let value = single(&value_field, kv[1].data_type(), options, path)
                    .ok_or_else(|| mismatch(message, &value_field, kv[1].data_type()))?;
                let key_default = match default_of(&key_field, &key, options) {
                    Default::Value(v) => v,
                    _ => Owned::Bytes(Box::default()),
                };
                let value_default = match &value {
                    Read::Message(_) | Read::Json(_) | Read::Timestamp | Read::Duration | Read::Wrapper(..) => {
                        Default::Null
                    }
                    _ => default_of(&value_field, &value, options),
                };
                (Read::Entry(Arc::new(EntryPlan { key, key_default, value, value_default })), true, Default::Empty)
            } else if field.cardinality() == Cardinality::Repeated {
                let DataType::List(element) = data_type else { return Err(mismatch(message, &field, data_type)) };
                let read = single(&field, element.data_type(), options, path)
                    .ok_or_else(|| mismatch(message, &field, element.data_type()))?;
                (read, true, Default::Empty)
            } else {
                let read =
                    single(&field, data_type, options, path).ok_or_else(|| mismatch(message, &field, data_type))?;
                let default = default_of(&field, &read, options);
                (read, false, default)
            };
            defaults[column] = default;
            let case = match field.containing_oneof() {
                // A field with the case column's name keeps its column (`message_type` adds none then).
                Some(oneof) if options.oneof_case && !oneof.is_synthetic() => {
                    let name = case_column(oneof.name());
                    match message.get_field_by_name(&name) {
                        Some(_) => None,
                        None => position(&name).map(|c| (c, field.name().into())),
                    }
                }
                _ => None,
            };
            let others = match field.containing_oneof() {
                Some(oneof) => {
                    oneof.fields().filter(|f| f.number() != field.number()).filter_map(|f| position(f.name())).collect()
                }
                None => Box::default(),
            };
            slots.push((field.number(), Slot { column, read, repeated, case, others, name: field.name().into() }));
        }
        slots.sort_by_key(|(n, _)| *n);
        let mut dense = Vec::new();
        let mut sparse = Vec::new();
        for (i, (number, _)) in slots.iter().enumerate() {
            let index =
                u16::try_from(i).map_err(|_| PlanError(format!("{} has too many fields", message.full_name())))?;
            if *number < DENSE_LIMIT {
                let n = *number as usize;
                if dense.len() <= n {
                    dense.resize(n + 1, 0);
                }
                dense[n] = index + 1;
            } else {
                sparse.push((*number, index));
            }
        }
        Ok(Self {
            name: message.full_name().to_owned(),
            dense,
            sparse,
            slots: slots.into_iter().map(|(_, s)| s).collect(),
            defaults,
        })
    }

    fn slot(&self, number: u32) -> Option<&Slot> {
        let index = if number < DENSE_LIMIT {
            match self.dense.get(number as usize) {
                Some(&i) if i > 0 => i - 1,
                _ => return None,
            }
        } else {
            let i = self.sparse.binary_search_by_key(&number, |(n, _)| *n).ok()?;
            self.sparse[i].1
        };
        self.slots.get(index as usize)
    }

    /// Decodes one message into `columns` (the struct's children, each with `row` rows before the call):
    /// afterwards each has `row + 1` rows (lists and maps closed). On error the caller cuts back.
    pub(crate) fn decode(&self, bytes: &[u8], columns: &mut [Col], row: usize, depth: u32) -> Result<(), WireError> {
        if depth > MAX_DEPTH {
            return err(format!("messages nest deeper than {MAX_DEPTH} levels"));
        }
        let mut pos = 0;
        while pos < bytes.len() {
            let tag = varint(bytes, &mut pos)?;
            let number = u32::try_from(tag >> 3).map_err(|_| WireError("a field number is out of range".into()))?;
            let wire_type = (tag & 7) as u8;
            if number == 0 {
                return err("a field has number 0");
            }
            let Some(slot) = self.slot(number) else {
                skip(bytes, &mut pos, wire_type, number, 0)?;
                continue;
            };
            let column = &mut columns[slot.column];
            if slot.repeated {
                read_repeated(slot, wire_type, bytes, &mut pos, column, depth).map_err(|e| self.context(slot, e))?;
            } else {
                read_singular(slot, wire_type, bytes, &mut pos, column, row, depth)
                    .map_err(|e| self.context(slot, e))?;
                // Only the last member of a oneof on the wire is set.
                for other in &slot.others {
                    columns[*other].truncate(row);
                }
                if let Some((case, member)) = &slot.case {
                    let case = &mut columns[*case];
                    case.truncate(row);
                    case.push(Scalar::Bytes(member.as_bytes()))?;
                }
            }
        }
        for (column, default) in columns.iter_mut().zip(&self.defaults) {
            match default {
                Default::Empty => column.close(),
                _ if column.len() > row => {}
                Default::Null => column.push_null(),
                Default::Value(v) => column.push(v.scalar())?,
            }
        }
        Ok(())
    }

    fn context(&self, slot: &Slot, e: WireError) -> WireError {
        if e.0.starts_with("field `") {
            e
        } else {
            WireError(format!("field `{}` of {}: {}", slot.name, self.name, e.0))
        }
    }
}

/// Nested messages deeper than this are a record error (a self-recursive type is stored as JSON one level
/// down, so only hand-crafted bytes get here).
const MAX_DEPTH: u32 = 100;

fn qualified(message: &MessageDescriptor, field: &FieldDescriptor) -> String {
    format!("{}.{}", message.full_name(), field.name())
}

fn mismatch(message: &MessageDescriptor, field: &FieldDescriptor, data_type: &DataType) -> PlanError {
    PlanError(format!(
        "field {} ({:?}) does not fit the table's column type {data_type}",
        qualified(message, field),
        field.kind()
    ))
}

/// How one value of `field` is read into a column of `data_type`, if they fit.
fn single(
    field: &FieldDescriptor,
    data_type: &DataType,
    options: &ProtobufOptions,
    path: &mut Vec<String>,
) -> Option<Read> {
    use DataType as D;
    let read = match (field.kind(), data_type) {
        (Kind::Int32, D::Int32 | D::Int64) => Read::Int32,
        (Kind::Sint32, D::Int32 | D::Int64) => Read::Sint32,
        (Kind::Sfixed32, D::Int32 | D::Int64) => Read::Sfixed32,
        (Kind::Int64, D::Int64) => Read::Int64,
        (Kind::Sint64, D::Int64) => Read::Sint64,
        (Kind::Sfixed64, D::Int64) => Read::Sfixed64,
        (Kind::Uint32, D::Int64) => Read::Uint32,
        (Kind::Fixed32, D::Int64) => Read::Fixed32,
        (Kind::Uint64, D::Decimal128(p, 0)) if *p >= 20 => Read::Uint64,
        (Kind::Fixed64, D::Decimal128(p, 0)) if *p >= 20 => Read::Fixed64,
        (Kind::Float, D::Float32 | D::Float64) => Read::Float,
        (Kind::Double, D::Float64) => Read::Double,
        (Kind::Bool, D::Boolean) => Read::Bool,
        (Kind::String, D::Utf8 | D::LargeUtf8) => Read::Len,
        (Kind::Bytes, D::Binary | D::LargeBinary) => Read::Len,
        (Kind::Enum(e), D::Utf8 | D::LargeUtf8) if options.enums == EnumMode::Name => {
            let mut dense: Vec<Option<Box<str>>> = Vec::new();
            let mut sparse = Vec::new();
            for value in e.values() {
                match usize::try_from(value.number()) {
                    Ok(n) if n < 1024 => {
                        if dense.len() <= n {
                            dense.resize(n + 1, None);
                        }
                        dense[n].get_or_insert_with(|| value.name().into());
                    }
                    _ => sparse.push((value.number(), value.name().into())),
                }
            }
            Read::EnumName(Arc::new(EnumNames { dense, sparse }))
        }
        (Kind::Enum(_), D::Int32 | D::Int64) if options.enums == EnumMode::Number => Read::EnumNumber,
        (Kind::Message(message), data_type) => match (well_known(&message), data_type) {
            (Some(WellKnown::Timestamp), D::Timestamp(TimeUnit::Microsecond, _)) => Read::Timestamp,
            (Some(WellKnown::Duration), D::Int64) => Read::Duration,
            (Some(WellKnown::Wrapper), _) => {
                let inner = message.get_field(1)?;
                let read = single(&inner, data_type, options, path)?;
                let default = default_of(&inner, &read, options);
                Read::Wrapper(Box::new(read), default)
            }
            (Some(WellKnown::Json), D::Utf8 | D::LargeUtf8) => Read::Json(message),
            (None, D::Utf8 | D::LargeUtf8) if path.iter().any(|p| p == message.full_name()) => Read::Json(message),
            (None, D::Struct(fields)) => {
                path.push(message.full_name().to_owned());
                let plan = MessagePlan::build_in(&message, fields, options, path);
                path.pop();
                Read::Message(Arc::new(plan.ok()?))
            }
            _ => return None,
        },
        _ => return None,
    };
    Some(read)
}

/// What a column gets when a singular field is absent.
fn default_of(field: &FieldDescriptor, read: &Read, options: &ProtobufOptions) -> Default {
    let explicit = field.field_descriptor_proto().default_value.is_some();
    if field.supports_presence() && !explicit {
        return Default::Null;
    }
    if matches!(read, Read::Message(_) | Read::Json(_) | Read::Timestamp | Read::Duration | Read::Wrapper(..)) {
        return Default::Null;
    }
    let owned = match field.default_value() {
        Value::Bool(b) => Owned::Bool(b),
        Value::I32(i) => Owned::I64(i64::from(i)),
        Value::I64(i) => Owned::I64(i),
        Value::U32(u) => Owned::I64(i64::from(u)),
        Value::U64(u) => Owned::U64(u),
        Value::F32(f) => Owned::F32(f),
        Value::F64(f) => Owned::F64(f),
        Value::String(s) => Owned::Bytes(s.into_bytes().into()),
        Value::Bytes(b) => Owned::Bytes(b.to_vec().into()),
        Value::EnumNumber(n) => match (read, options.enums) {
            (Read::EnumName(names), _) => match names.name(n) {
                Some(name) => Owned::Bytes(name.as_bytes().into()),
                None => Owned::Bytes(n.to_string().into_bytes().into()),
            },
            _ => Owned::I64(i64::from(n)),
        },
        _ => return Default::Null,
    };
    Default::Value(owned)
}

// ---------------------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------------------

const WT_VARINT: u8 = 0;
const WT_FIXED64: u8 = 1;
const WT_LEN: u8 = 2;
const WT_START_GROUP: u8 = 3;
const WT_END_GROUP: u8 = 4;
const WT_FIXED32: u8 = 5;

fn read_singular(
    slot: &Slot,
    wire_type: u8,
    bytes: &[u8],
    pos: &mut usize,
    column: &mut Col,
    row: usize,
    depth: u32,
) -> Result<(), WireError> {
    match &slot.read {
        Read::Message(plan) => {
            check_wire(wire_type, WT_LEN)?;
            let body = len_delimited(bytes, pos)?;
            if column.len() > row {
                return err("a singular message occurs twice (merging is not supported)");
            }
            let Col::Struct { children, valid, .. } = column else { return err("internal: not a struct column") };
            plan.decode(body, children, row, depth + 1)?;
            valid.push(true);
            Ok(())
        }
        read => {
            // Last one wins for a repeated occurrence of a singular scalar.
            if column.len() > row {
                column.truncate(row);
            }
            read_value(read, wire_type, bytes, pos, column)
        }
    }
}

fn read_repeated(
    slot: &Slot,
    wire_type: u8,
    bytes: &[u8],
    pos: &mut usize,
    column: &mut Col,
    depth: u32,
) -> Result<(), WireError> {
    let child: &mut Col = match column {
        Col::List { child, .. } => child,
        Col::Map { keys, values, .. } => {
            let Read::Entry(entry) = &slot.read else { return err("internal: a map without an entry plan") };
            check_wire(wire_type, WT_LEN)?;
            let body = len_delimited(bytes, pos)?;
            return read_entry(entry, body, keys, values, depth);
        }
        _ => return err("internal: not a list column"),
    };
    if wire_type == WT_LEN && slot.read.packable() {
        let body = len_delimited(bytes, pos)?;
        let mut inner = 0;
        let wt = slot.read.wire_type();
        while inner < body.len() {
            read_value(&slot.read, wt, body, &mut inner, child)?;
        }
        return Ok(());
    }
    match &slot.read {
        Read::Message(plan) => {
            check_wire(wire_type, WT_LEN)?;
            let body = len_delimited(bytes, pos)?;
            let Col::Struct { children, valid, .. } = child else { return err("internal: not a struct element") };
            let row = valid.len();
            plan.decode(body, children, row, depth + 1)?;
            valid.push(true);
            Ok(())
        }
        read => read_value(read, wire_type, bytes, pos, child),
    }
}

fn read_entry(entry: &EntryPlan, body: &[u8], keys: &mut Col, values: &mut Col, depth: u32) -> Result<(), WireError> {
    let at = keys.len();
    let mut pos = 0;
    while pos < body.len() {
        let tag = varint(body, &mut pos)?;
        let wire_type = (tag & 7) as u8;
        match tag >> 3 {
            1 => {
                keys.truncate(at);
                read_value(&entry.key, wire_type, body, &mut pos, keys)?;
            }
            2 => match &entry.value {
                Read::Message(plan) => {
                    check_wire(wire_type, WT_LEN)?;
                    let inner = len_delimited(body, &mut pos)?;
                    values.truncate(at);
                    let Col::Struct { children, valid, .. } = values else { return err("internal: not a struct") };
                    plan.decode(inner, children, at, depth + 1)?;
                    valid.push(true);
                }
                read => {
                    values.truncate(at);
                    read_value(read, wire_type, body, &mut pos, values)?;
                }
            },
            number => skip(body, &mut pos, wire_type, number as u32, 0)?,
        }
    }
    if keys.len() == at {
        keys.push(entry.key_default.scalar())?;
    }
    if values.len() == at {
        match &entry.value_default {
            Default::Value(v) => values.push(v.scalar())?,
            _ => values.push_null(),
        }
    }
    Ok(())
}

/// Reads one non-message value of `read` into `column`.
fn read_value(read: &Read, wire_type: u8, bytes: &[u8], pos: &mut usize, column: &mut Col) -> Result<(), WireError> {
    check_wire(wire_type, read.wire_type())?;
    let value = match read {
        Read::Int32 => Scalar::I64(i64::from(varint(bytes, pos)? as i32)),
        Read::Int64 => Scalar::I64(varint(bytes, pos)? as i64),
        Read::Uint32 => Scalar::I64(i64::from(varint(bytes, pos)? as u32)),
        Read::Uint64 => Scalar::U64(varint(bytes, pos)?),
        Read::Sint32 => {
            let raw = varint(bytes, pos)? as u32;
            Scalar::I64(i64::from(((raw >> 1) as i32) ^ -((raw & 1) as i32)))
        }
        Read::Sint64 => {
            let raw = varint(bytes, pos)?;
            Scalar::I64(((raw >> 1) as i64) ^ -((raw & 1) as i64))
        }
        Read::Bool => Scalar::Bool(varint(bytes, pos)? != 0),
        Read::Fixed32 => Scalar::I64(i64::from(u32::from_le_bytes(fixed(bytes, pos)?))),
        Read::Sfixed32 => Scalar::I64(i64::from(i32::from_le_bytes(fixed(bytes, pos)?))),
        Read::Fixed64 => Scalar::U64(u64::from_le_bytes(fixed(bytes, pos)?)),
        Read::Sfixed64 => Scalar::I64(i64::from_le_bytes(fixed(bytes, pos)?)),
        Read::Float => Scalar::F32(f32::from_le_bytes(fixed(bytes, pos)?)),
        Read::Double => Scalar::F64(f64::from_le_bytes(fixed(bytes, pos)?)),
        Read::Len => Scalar::Bytes(len_delimited(bytes, pos)?),
        Read::EnumNumber => Scalar::I64(i64::from(varint(bytes, pos)? as i32)),
        Read::EnumName(names) => {
            let number = varint(bytes, pos)? as i32;
            match names.name(number) {
                Some(name) => Scalar::Bytes(name.as_bytes()),
                None => {
                    // An unknown number (a newer writer's value) is kept, as its decimal text.
                    let text = number.to_string();
                    return column.push(Scalar::Bytes(text.as_bytes()));
                }
            }
        }
        Read::Timestamp | Read::Duration => {
            let body = len_delimited(bytes, pos)?;
            let (seconds, nanos) = seconds_nanos(body)?;
            let micros = seconds
                .checked_mul(1_000_000)
                .and_then(|s| s.checked_add(i64::from(nanos) / 1000))
                .ok_or_else(|| WireError("a timestamp or duration is out of range".into()))?;
            Scalar::I64(micros)
        }
        Read::Wrapper(inner, default) => {
            let body = len_delimited(bytes, pos)?;
            let at = column.len();
            let mut inner_pos = 0;
            while inner_pos < body.len() {
                let tag = varint(body, &mut inner_pos)?;
                let wt = (tag & 7) as u8;
                if tag >> 3 == 1 {
                    column.truncate(at);
                    read_value(inner, wt, body, &mut inner_pos, column)?;
                } else {
                    skip(body, &mut inner_pos, wt, (tag >> 3) as u32, 0)?;
                }
            }
            if column.len() == at {
                match default {
                    Default::Value(v) => column.push(v.scalar())?,
                    _ => column.push_null(),
                }
            }
            return Ok(());
        }
        Read::Json(message) => {
            let body = len_delimited(bytes, pos)?;
            let text = to_json(message, body)?;
            return column.push(Scalar::Bytes(text.as_bytes()));
        }
        Read::Message(_) | Read::Entry(_) => return err("internal: a message read as a value"),
    };
    column.push(value)
}

/// A message as protobuf's JSON mapping (field names as in the `.proto`); an `Any` whose type is not in
/// the schema keeps its type URL and its bytes in base64.
fn to_json(message: &MessageDescriptor, body: &[u8]) -> Result<String, WireError> {
    let decoded = DynamicMessage::decode(message.clone(), body)
        .map_err(|e| WireError(format!("cannot decode a {} value: {e}", message.full_name())))?;
    let options = prost_reflect::SerializeOptions::new().use_proto_field_name(true);
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::new(&mut out);
    match decoded.serialize_with_options(&mut serializer, &options) {
        Ok(()) => Ok(String::from_utf8(out).unwrap_or_default()),
        Err(_) if message.full_name() == "google.protobuf.Any" => {
            let type_url =
                decoded.get_field_by_number(1).and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
            let value = decoded.get_field_by_number(2).and_then(|v| v.as_bytes().cloned()).unwrap_or_default();
            Ok(serde_json::json!({ "@type": type_url, "value": base64(&value) }).to_string())
        }
        Err(e) => Err(WireError(format!("cannot write a {} value as JSON: {e}", message.full_name()))),
    }
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn seconds_nanos(body: &[u8]) -> Result<(i64, i32), WireError> {
    let (mut seconds, mut nanos) = (0i64, 0i32);
    let mut pos = 0;
    while pos < body.len() {
        let tag = varint(body, &mut pos)?;
        let wt = (tag & 7) as u8;
        match (tag >> 3, wt) {
            (1, WT_VARINT) => seconds = varint(body, &mut pos)? as i64,
            (2, WT_VARINT) => nanos = varint(body, &mut pos)? as i32,
            (number, wt) => skip(body, &mut pos, wt, number as u32, 0)?,
        }
    }
    Ok((seconds, nanos))
}

fn check_wire(found: u8, expected: u8) -> Result<(), WireError> {
    if found == expected { Ok(()) } else { err(format!("has wire type {found}, the schema says {expected}")) }
}

/// A base-128 varint.
#[inline]
fn varint(bytes: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    let mut value: u64 = 0;
    for shift in 0..10 {
        let Some(&byte) = bytes.get(*pos) else { return err("the payload ends inside a varint") };
        *pos += 1;
        value |= u64::from(byte & 0x7f) << (7 * shift);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    err("a varint is longer than 10 bytes")
}

#[inline]
fn fixed<const N: usize>(bytes: &[u8], pos: &mut usize) -> Result<[u8; N], WireError> {
    let end = pos
        .checked_add(N)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| WireError("the payload ends inside a fixed-width value".into()))?;
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[*pos..end]);
    *pos = end;
    Ok(out)
}

#[inline]
fn len_delimited<'a>(bytes: &'a [u8], pos: &mut usize) -> Result<&'a [u8], WireError> {
    let len = varint(bytes, pos)?;
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| pos.checked_add(l))
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| WireError("a length-delimited field runs past the end of the payload".into()))?;
    let body = &bytes[*pos..end];
    *pos = end;
    Ok(body)
}

/// Skips an unknown field (forward compatibility: a newer writer's fields are ignored).
fn skip(bytes: &[u8], pos: &mut usize, wire_type: u8, number: u32, depth: u32) -> Result<(), WireError> {
    match wire_type {
        WT_VARINT => varint(bytes, pos).map(drop),
        WT_FIXED64 => fixed::<8>(bytes, pos).map(drop),
        WT_FIXED32 => fixed::<4>(bytes, pos).map(drop),
        WT_LEN => len_delimited(bytes, pos).map(drop),
        WT_START_GROUP => {
            if depth > MAX_DEPTH {
                return err("groups nest too deep");
            }
            loop {
                if *pos >= bytes.len() {
                    return err("the payload ends inside a group");
                }
                let tag = varint(bytes, pos)?;
                let wt = (tag & 7) as u8;
                if wt == WT_END_GROUP {
                    return if (tag >> 3) as u32 == number {
                        Ok(())
                    } else {
                        err("a group ends with the wrong number")
                    };
                }
                skip(bytes, pos, wt, (tag >> 3) as u32, depth + 1)?;
            }
        }
        other => err(format!("field {number} has the invalid wire type {other}")),
    }
}

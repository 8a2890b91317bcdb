//! Avro binary encoding straight into Arrow columns.
//!
//! A [`RecordPlan`] is built once per (writer schema, reader schema, table schema): for every field of the
//! writer's record, in encoding order, the table column it lands in and how its value is read (or how it is
//! skipped); for every column the writer lacks, what it reads (null, or — when an operator's retry set a
//! reader schema — the reader field's default, Avro's rule). Reader fields match writer fields by name or by
//! the reader field's aliases. The hot loop reads zig-zag varints, lengths and IEEE floats from the borrowed
//! record bytes; every length is checked against the bytes left before anything is copied, array and map
//! blocks are bounded, and nesting is limited, so a corrupt or hostile record is a record error, never a
//! panic or an allocation the record's size does not justify. A record that fails half-way is rolled back
//! by [`crate::decode::columns::Rows`].

use std::sync::Arc;

use arrow_schema::{DataType, Fields, TimeUnit};
use serde_json::Value;

use super::{Arena, Compiled, Node, Record, Unit, VALUE_COLUMN, member_names, split_union};
use crate::decode::columns::{Col, Scalar, WireError, err};

/// Why a plan cannot be built against the table's columns (the schema must evolve first, or cannot).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

/// Nesting deeper than this (records, arrays, maps, unions) is a record error.
const MAX_DEPTH: u32 = 100;

/// Items of zero encoded size (`null`, an empty record) one record may hold, in all its arrays together: a
/// block count of 2^60 such items costs no bytes, so it is bounded by this instead of by the record's length.
const MAX_EMPTY_ITEMS: u64 = 1 << 20;

thread_local! {
    /// The empty items of the record being decoded on this thread (reset per record).
    static EMPTY_ITEMS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How one value is read into a column.
#[derive(Debug)]
enum Read {
    /// Nothing on the wire; the column gets null.
    Null,
    Bool,
    /// `int` (into an int or long column).
    Int,
    Long,
    /// `float` (into a float or double column).
    Float,
    Double,
    /// `string` (UTF-8 checked by the column) or `bytes`.
    Len,
    Enum(Arc<[Box<str>]>),
    Fixed(usize),
    /// A decimal on bytes (`None`) or fixed(n); the column's precision bounds the value.
    Decimal(Option<usize>, u8),
    /// A uuid on fixed(16), written as its 36-character text.
    UuidFixed,
    /// An `int` of days, or of milliseconds of the day (×1000).
    Date,
    TimeMillis,
    /// A long scaled to microseconds: ×`mul` then ÷`div` (floored).
    Scaled {
        mul: i64,
        div: i64,
    },
    Record(Arc<RecordPlan>),
    Array(Box<Read>, bool),
    Map(Box<Read>),
    /// A union of null and one type: the null branch's index (if any), the value branch's index and read.
    Optional(Option<u64>, u64, Box<Read>),
    /// Any other union into a struct: what each branch does.
    Members(Box<[Branch]>, Arc<Arena>),
    /// A value stored as JSON text (a record inside itself).
    Json(Node, Arc<Arena>),
}

/// What one branch of a union read into a struct does.
#[derive(Debug)]
enum Branch {
    /// The null branch: the struct is null.
    Null,
    /// Into the member column.
    Member(usize, Read),
    /// A value without a column: read past, the struct's members null.
    Skip(Node),
}

/// What one writer field does.
#[derive(Debug)]
enum Step {
    /// Read into a column.
    Read(usize, Read),
    /// Read past.
    Skip(Node),
}

/// A constant a column gets when the writer lacks its field.
#[derive(Debug, Clone)]
enum Default {
    Null,
    Bool(bool),
    I64(i64),
    F64(f64),
    F32(f32),
    Text(Box<str>),
}

/// How one writer record type is read into one struct's columns.
#[derive(Debug)]
pub struct RecordPlan {
    name: String,
    steps: Vec<(Box<str>, Step)>,
    /// Columns no writer field fills, with what they get.
    missing: Vec<(usize, Default)>,
    arena: Arc<Arena>,
}

/// The plan of a whole record value (the schema's root).
#[derive(Debug)]
pub struct RootPlan {
    root: Root,
}

#[derive(Debug)]
enum Root {
    /// A record: its fields are the columns.
    Record(RecordPlan),
    /// A union of null and a record: the null branch's index, the record's.
    Nullable(Option<u64>, u64, RecordPlan),
    /// Any other type: the `value` column (and the columns no writer fills).
    Value(usize, Read, Vec<(usize, Default)>),
}

impl RootPlan {
    /// A plan reading records of `writer` — resolved against `reader` when an operator's retry set one — into
    /// columns of `fields` (the table's payload fields, in order).
    pub fn build(writer: &Compiled, reader: Option<&Compiled>, fields: &Fields) -> Result<Self, PlanError> {
        let reader = reader.unwrap_or(writer);
        let pair = |w: usize| {
            let r = reader.root_record();
            (w, r.map(|r| (&reader.arena, r)))
        };
        let root = match (&writer.root, writer.root_record()) {
            (Node::Record(_), Some(w)) => {
                let (w, r) = pair(w);
                Root::Record(RecordPlan::build(&writer.arena, w, r, fields, &mut Vec::new())?)
            }
            (Node::Union(branches), Some(w)) => {
                let (null, values) = split_union(branches);
                let (w, r) = pair(w);
                Root::Nullable(
                    null.map(|i| i as u64),
                    values[0].0 as u64,
                    RecordPlan::build(&writer.arena, w, r, fields, &mut Vec::new())?,
                )
            }
            (node, _) => {
                let column = fields.iter().position(|f| f.name() == VALUE_COLUMN).ok_or_else(|| {
                    PlanError(format!(
                        "the table has no column `{VALUE_COLUMN}` for the schema's {}",
                        node.type_name(&writer.arena)
                    ))
                })?;
                let read = single_with(node, fields[column].data_type(), &writer.arena, None, &mut Vec::new())
                    .ok_or_else(|| {
                        PlanError(format!(
                            "the schema's {} does not fit the column `{VALUE_COLUMN}`",
                            node.type_name(&writer.arena)
                        ))
                    })?;
                let missing = (0..fields.len()).filter(|c| *c != column).map(|c| (c, Default::Null)).collect();
                Root::Value(column, read, missing)
            }
        };
        Ok(Self { root })
    }

    /// Decodes one record value into `columns` (each with `row` rows before the call, `row + 1` after).
    pub(crate) fn decode(&self, bytes: &[u8], columns: &mut [Col], _row: usize) -> Result<(), WireError> {
        EMPTY_ITEMS.with(|n| n.set(0));
        let mut pos = 0;
        match &self.root {
            Root::Record(plan) => plan.decode(bytes, &mut pos, columns, 0)?,
            Root::Nullable(null, value, plan) => {
                let branch = index(bytes, &mut pos)?;
                if Some(branch) == *null {
                    return err("the record is null (the null branch of the schema's union)");
                }
                if branch != *value {
                    return err(format!("union branch {branch} is out of range"));
                }
                plan.decode(bytes, &mut pos, columns, 0)?
            }
            Root::Value(column, read, missing) => {
                read_value(read, bytes, &mut pos, &mut columns[*column], 0)?;
                for (c, default) in missing {
                    push_default(&mut columns[*c], default)?;
                }
            }
        }
        if pos != bytes.len() {
            return err(format!("{} bytes follow the record", bytes.len() - pos));
        }
        Ok(())
    }
}

impl RecordPlan {
    fn build(
        arena: &Arc<Arena>,
        writer: usize,
        reader: Option<(&Arc<Arena>, usize)>,
        fields: &Fields,
        path: &mut Vec<usize>,
    ) -> Result<Self, PlanError> {
        let record: &Record = &arena.records[writer];
        let reader_record = reader.map(|(a, r)| (a, &a.records[r]));
        path.push(writer);
        let mut steps = Vec::with_capacity(record.fields.len());
        let mut filled = vec![false; fields.len()];
        for field in &record.fields {
            // The reader's field of this writer field: by name, else by one of the reader field's aliases.
            let reader_field = reader_record.and_then(|(a, r)| {
                r.fields
                    .iter()
                    .find(|f| f.name == field.name)
                    .or_else(|| r.fields.iter().find(|f| f.aliases.contains(&field.name)))
                    .map(|f| (a, f))
            });
            let column_name = reader_field.map_or(field.name.as_str(), |(_, f)| f.name.as_str());
            // A column another writer field already fills (a reader alias naming a field the writer also has
            // under its own name) is not filled twice.
            let position = fields.iter().position(|f| f.name() == column_name).filter(|c| !filled[*c]);
            let step = match position {
                // A field the reader does not know (or that maps to no column, like a null) is read past.
                None => {
                    let already = fields.iter().any(|f| f.name() == column_name);
                    if !already
                        && super::iceberg_type(&field.node, arena, &mut path.clone()).is_some()
                        && reader_field.is_some()
                    {
                        path.pop();
                        return Err(PlanError(format!("the table has no column `{}.{column_name}`", record.name)));
                    }
                    Step::Skip(field.node.clone())
                }
                Some(column) => {
                    filled[column] = true;
                    let nested_reader = reader_field.map(|(a, f)| (a, &f.node));
                    let read = single_with(&field.node, fields[column].data_type(), arena, nested_reader, path)
                        .ok_or_else(|| {
                            PlanError(format!(
                                "field {}.{} ({}) does not fit the table's column type {}",
                                record.name,
                                field.name,
                                field.node.type_name(arena),
                                fields[column].data_type()
                            ))
                        });
                    match read {
                        Ok(read) => Step::Read(column, read),
                        Err(e) => {
                            path.pop();
                            return Err(e);
                        }
                    }
                }
            };
            steps.push((field.name.as_str().into(), step));
        }
        path.pop();
        let missing = filled
            .iter()
            .enumerate()
            .filter(|(_, f)| !**f)
            .map(|(column, _)| {
                // Avro's rule: a reader field the writer lacks reads its default (only with a reader schema set;
                // the writer's own fields are all on the wire).
                let default = reader_record
                    .and_then(|(_, r)| r.fields.iter().find(|f| f.name == *fields[column].name()))
                    .and_then(|f| f.default.as_ref())
                    .map_or(Default::Null, |d| default_of(d, fields[column].data_type()));
                (column, default)
            })
            .collect();
        Ok(Self { name: record.name.clone(), steps, missing, arena: arena.clone() })
    }

    fn decode(&self, bytes: &[u8], pos: &mut usize, columns: &mut [Col], depth: u32) -> Result<(), WireError> {
        if depth > MAX_DEPTH {
            return err(format!("values nest deeper than {MAX_DEPTH} levels"));
        }
        for (name, step) in &self.steps {
            let result = match step {
                Step::Read(column, read) => read_value(read, bytes, pos, &mut columns[*column], depth),
                Step::Skip(node) => skip(node, &self.arena, bytes, pos, depth),
            };
            if let Err(e) = result {
                return Err(if e.0.starts_with("field `") {
                    e
                } else {
                    WireError(format!("field `{name}` of {}: {}", self.name, e.0))
                });
            }
        }
        for (column, default) in &self.missing {
            push_default(&mut columns[*column], default)?;
        }
        Ok(())
    }
}

fn default_of(value: &Value, data_type: &DataType) -> Default {
    use DataType as D;
    match (value, data_type) {
        (Value::Bool(b), D::Boolean) => Default::Bool(*b),
        (Value::Number(n), D::Int64) => n.as_i64().map_or(Default::Null, Default::I64),
        (Value::Number(n), D::Int32) => {
            n.as_i64().filter(|v| i32::try_from(*v).is_ok()).map_or(Default::Null, Default::I64)
        }
        (Value::Number(n), D::Float64) => n.as_f64().map_or(Default::Null, Default::F64),
        (Value::Number(n), D::Float32) => n.as_f64().map_or(Default::Null, |f| Default::F32(f as f32)),
        (Value::String(s), D::Utf8 | D::LargeUtf8) => Default::Text(s.as_str().into()),
        _ => Default::Null,
    }
}

fn push_default(column: &mut Col, default: &Default) -> Result<(), WireError> {
    match default {
        Default::Null => {
            column.push_null();
            Ok(())
        }
        Default::Bool(b) => column.push(Scalar::Bool(*b)),
        Default::I64(i) => column.push(Scalar::I64(*i)),
        Default::F64(f) => column.push(Scalar::F64(*f)),
        Default::F32(f) => column.push(Scalar::F32(*f)),
        Default::Text(s) => column.push(Scalar::Bytes(s.as_bytes())),
    }
}

/// The reader's type of a value, with the arena its records live in.
type ReaderNode<'a> = Option<(&'a Arc<Arena>, &'a Node)>;

/// The record a reader type is (a union of null and a record counts).
fn reader_record<'a>(reader: ReaderNode<'a>) -> Option<(&'a Arc<Arena>, usize)> {
    let (arena, node) = reader?;
    match node {
        Node::Record(i) => Some((arena, *i)),
        Node::Union(b) => split_union(b).1.iter().find_map(|(_, n)| match n {
            Node::Record(i) => Some((arena, *i)),
            _ => None,
        }),
        _ => None,
    }
}

/// The reader's element (`array`) or value (`map`) type, also through a union of null and it.
fn reader_inner(reader: ReaderNode<'_>, array: bool) -> ReaderNode<'_> {
    let (arena, node) = reader?;
    let node = match node {
        Node::Union(b) => {
            split_union(b).1.into_iter().map(|(_, n)| n).find(|n| matches!(n, Node::Array(_) | Node::Map(_)))?
        }
        other => other,
    };
    match (node, array) {
        (Node::Array(items), true) => Some((arena, items)),
        (Node::Map(values), false) => Some((arena, values)),
        _ => None,
    }
}

/// How one value of `node` is read into a column of `data_type`, if they fit (`reader`: the reader schema's
/// type of the value, when an operator's retry set one: its records' aliases and defaults apply).
fn single_with(
    node: &Node,
    data_type: &DataType,
    arena: &Arc<Arena>,
    reader: ReaderNode<'_>,
    path: &mut Vec<usize>,
) -> Option<Read> {
    use DataType as D;
    Some(match (node, data_type) {
        (Node::Null, _) => Read::Null,
        (Node::Bool, D::Boolean) => Read::Bool,
        (Node::Int, D::Int32 | D::Int64) => Read::Int,
        (Node::Long, D::Int64) => Read::Long,
        (Node::Float, D::Float32 | D::Float64) => Read::Float,
        (Node::Double, D::Float64) => Read::Double,
        (Node::Str, D::Utf8 | D::LargeUtf8) | (Node::Bytes, D::Binary | D::LargeBinary) => Read::Len,
        (Node::Uuid(None), D::Utf8 | D::LargeUtf8) => Read::Len,
        (Node::Uuid(Some(_)), D::Utf8 | D::LargeUtf8) => Read::UuidFixed,
        (Node::Enum(e), D::Utf8 | D::LargeUtf8) => Read::Enum(e.symbols.clone().into()),
        (Node::Fixed(_, n), D::FixedSizeBinary(w)) if *n as i32 == *w => Read::Fixed(*n),
        (Node::Duration(_), D::FixedSizeBinary(12)) => Read::Fixed(12),
        (Node::Decimal { precision, scale, fixed, .. }, D::Decimal128(p, s)) if *s == *scale && *p >= *precision => {
            Read::Decimal(*fixed, *p)
        }
        (Node::Date, D::Date32) => Read::Date,
        (Node::TimeMillis, D::Time64(TimeUnit::Microsecond)) => Read::TimeMillis,
        (Node::TimeMicros, D::Time64(TimeUnit::Microsecond)) => Read::Scaled { mul: 1, div: 1 },
        (Node::Timestamp { unit, local }, D::Timestamp(TimeUnit::Microsecond, tz)) if *local == tz.is_none() => {
            match unit {
                Unit::Millis => Read::Scaled { mul: 1000, div: 1 },
                Unit::Micros => Read::Scaled { mul: 1, div: 1 },
                Unit::Nanos => Read::Scaled { mul: 1, div: 1000 },
            }
        }
        (Node::Record(i), D::Utf8 | D::LargeUtf8) if path.contains(i) => Read::Json(node.clone(), arena.clone()),
        (Node::Record(i), D::Struct(fields)) if !path.contains(i) => {
            Read::Record(Arc::new(RecordPlan::build(arena, *i, reader_record(reader), fields, path).ok()?))
        }
        (Node::Array(items), D::List(field)) => {
            let read = single_with(items, field.data_type(), arena, reader_inner(reader, true), path)?;
            Read::Array(Box::new(read), zero_size(items, arena))
        }
        (Node::Map(values), D::Map(field, _)) => {
            let D::Struct(kv) = field.data_type() else { return None };
            if !matches!(kv.first()?.data_type(), D::Utf8 | D::LargeUtf8) {
                return None;
            }
            let read = single_with(values, kv.get(1)?.data_type(), arena, reader_inner(reader, false), path)?;
            Read::Map(Box::new(read))
        }
        (Node::Union(branches), data_type) => {
            let (null, values) = split_union(branches);
            match values.len() {
                0 => Read::Null,
                1 => {
                    let read = single_with(values[0].1, data_type, arena, reader, path)?;
                    Read::Optional(null.map(|i| i as u64), values[0].0 as u64, Box::new(read))
                }
                _ => {
                    let D::Struct(members) = data_type else { return None };
                    let names = member_names(&values, arena);
                    let mut by_branch: Vec<Branch> = (0..branches.len()).map(|_| Branch::Null).collect();
                    for ((branch, node), name) in values.iter().zip(names) {
                        by_branch[*branch] = match members.iter().position(|m| *m.name() == name) {
                            Some(column) => Branch::Member(
                                column,
                                single_with(node, members[column].data_type(), arena, None, path)?,
                            ),
                            // A member that carries no value (an array of nulls) has no column.
                            None if super::iceberg_type(node, arena, &mut path.clone()).is_none() => {
                                Branch::Skip((*node).clone())
                            }
                            None => return None,
                        };
                    }
                    Read::Members(by_branch.into(), arena.clone())
                }
            }
        }
        _ => return None,
    })
}

/// Whether a value of `node` may take no bytes at all (so a count of them is not bounded by bytes left).
fn zero_size(node: &Node, arena: &Arena) -> bool {
    fn walk(node: &Node, arena: &Arena, depth: u32) -> bool {
        match node {
            Node::Null => true,
            Node::Fixed(_, n) => *n == 0,
            // A record inside itself: an empty record can only hold itself through an array (not empty).
            Node::Record(i) => depth < 16 && arena.records[*i].fields.iter().all(|f| walk(&f.node, arena, depth + 1)),
            _ => false,
        }
    }
    walk(node, arena, 0)
}

// ---------------------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------------------

fn read_value(read: &Read, b: &[u8], pos: &mut usize, column: &mut Col, depth: u32) -> Result<(), WireError> {
    match read {
        Read::Null => {
            column.push_null();
            Ok(())
        }
        Read::Bool => match take(b, pos, 1)?[0] {
            0 => column.push(Scalar::Bool(false)),
            1 => column.push(Scalar::Bool(true)),
            other => err(format!("a boolean is {other}, not 0 or 1")),
        },
        Read::Int => column.push(Scalar::I64(i64::from(int(b, pos)?))),
        Read::Long => column.push(Scalar::I64(long(b, pos)?)),
        Read::Float => column.push(Scalar::F32(f32::from_le_bytes(take(b, pos, 4)?.try_into().expect("4 bytes")))),
        Read::Double => column.push(Scalar::F64(f64::from_le_bytes(take(b, pos, 8)?.try_into().expect("8 bytes")))),
        Read::Len => {
            let bytes = len_prefixed(b, pos)?;
            column.push(Scalar::Bytes(bytes))
        }
        Read::Enum(symbols) => {
            let i = int(b, pos)?;
            let symbol = usize::try_from(i)
                .ok()
                .and_then(|i| symbols.get(i))
                .ok_or_else(|| WireError(format!("enum index {i} is out of range ({} symbols)", symbols.len())))?;
            column.push(Scalar::Bytes(symbol.as_bytes()))
        }
        Read::Fixed(n) => column.push(Scalar::Bytes(take(b, pos, *n)?)),
        Read::Decimal(fixed, precision) => {
            let bytes = match fixed {
                Some(n) => take(b, pos, *n)?,
                None => len_prefixed(b, pos)?,
            };
            column.push(Scalar::I128(decimal(bytes, *precision)?))
        }
        Read::UuidFixed => {
            let bytes = take(b, pos, 16)?;
            let text = uuid::Uuid::from_slice(bytes).expect("16 bytes").hyphenated().to_string();
            column.push(Scalar::Bytes(text.as_bytes()))
        }
        Read::Date => column.push(Scalar::I64(i64::from(int(b, pos)?))),
        Read::TimeMillis => column.push(Scalar::I64(i64::from(int(b, pos)?) * 1000)),
        Read::Scaled { mul, div } => {
            let v = long(b, pos)?;
            let us = v
                .checked_mul(*mul)
                .ok_or_else(|| WireError(format!("the timestamp {v} is out of range in microseconds")))?
                .div_euclid(*div);
            column.push(Scalar::I64(us))
        }
        Read::Record(plan) => {
            let Col::Struct { children, valid, .. } = column else {
                return err("internal: a record into a non-struct");
            };
            plan.decode(b, pos, children, depth + 1)?;
            valid.push(true);
            Ok(())
        }
        Read::Array(item, empty) => {
            let Col::List { child, .. } = column else { return err("internal: an array into a non-list") };
            blocks(b, pos, *empty, depth, |b, pos| read_value(item, b, pos, child, depth + 1))?;
            column.close();
            Ok(())
        }
        Read::Map(value) => {
            let Col::Map { keys, values, .. } = column else { return err("internal: a map into a non-map") };
            blocks(b, pos, false, depth, |b, pos| {
                keys.push(Scalar::Bytes(len_prefixed(b, pos)?))?;
                read_value(value, b, pos, values, depth + 1)
            })?;
            column.close();
            Ok(())
        }
        Read::Optional(null, value, read) => {
            let branch = index(b, pos)?;
            if Some(branch) == *null {
                column.push_null();
                Ok(())
            } else if branch == *value {
                read_value(read, b, pos, column, depth + 1)
            } else {
                err(format!("union branch {branch} is out of range"))
            }
        }
        Read::Members(branches, arena) => {
            let branch = index(b, pos)?;
            let Some(chosen) = usize::try_from(branch).ok().and_then(|i| branches.get(i)) else {
                return err(format!("union branch {branch} is out of range ({} branches)", branches.len()));
            };
            let Col::Struct { children, valid, .. } = column else { return err("internal: a union into a non-struct") };
            match chosen {
                Branch::Null => {
                    for child in children.iter_mut() {
                        child.push_null();
                    }
                    valid.push(false);
                }
                Branch::Skip(node) => {
                    skip(node, arena, b, pos, depth + 1)?;
                    for child in children.iter_mut() {
                        child.push_null();
                    }
                    valid.push(true);
                }
                Branch::Member(member, read) => {
                    read_value(read, b, pos, &mut children[*member], depth + 1)?;
                    for (i, child) in children.iter_mut().enumerate() {
                        if i != *member {
                            child.push_null();
                        }
                    }
                    valid.push(true);
                }
            }
            Ok(())
        }
        Read::Json(node, arena) => {
            let mut text = String::new();
            to_json(node, arena, b, pos, &mut text, depth + 1)?;
            column.push(Scalar::Bytes(text.as_bytes()))
        }
    }
}

/// Reads array or map blocks, calling `item` per item. A negative count is followed by the block's byte
/// size (which is not needed to read the items).
fn blocks(
    b: &[u8],
    pos: &mut usize,
    zero_size: bool,
    depth: u32,
    mut item: impl FnMut(&[u8], &mut usize) -> Result<(), WireError>,
) -> Result<(), WireError> {
    if depth > MAX_DEPTH {
        return err(format!("values nest deeper than {MAX_DEPTH} levels"));
    }
    loop {
        let count = long(b, pos)?;
        if count == 0 {
            return Ok(());
        }
        if count < 0 {
            let size = long(b, pos)?;
            if size < 0 {
                return err(format!("a block's byte size is negative ({size})"));
            }
        }
        let count = count.unsigned_abs();
        // Each item takes a byte at least unless it can be empty; then the count is bounded on its own.
        if zero_size {
            let total = EMPTY_ITEMS.with(|n| {
                let total = n.get().saturating_add(count);
                n.set(total);
                total
            });
            if total > MAX_EMPTY_ITEMS {
                return err(format!("more than {MAX_EMPTY_ITEMS} empty items in one record"));
            }
        } else if count > (b.len() - *pos) as u64 {
            return err(format!("a block of {count} items is longer than the {} bytes left", b.len() - *pos));
        }
        for _ in 0..count {
            item(b, pos)?;
        }
    }
}

fn skip(node: &Node, arena: &Arena, b: &[u8], pos: &mut usize, depth: u32) -> Result<(), WireError> {
    if depth > MAX_DEPTH {
        return err(format!("values nest deeper than {MAX_DEPTH} levels"));
    }
    match node {
        Node::Null => {}
        Node::Bool => {
            take(b, pos, 1)?;
        }
        Node::Int | Node::Date | Node::TimeMillis | Node::Enum(_) => {
            int(b, pos)?;
        }
        Node::Long | Node::TimeMicros | Node::Timestamp { .. } => {
            long(b, pos)?;
        }
        Node::Float => {
            take(b, pos, 4)?;
        }
        Node::Double => {
            take(b, pos, 8)?;
        }
        Node::Bytes | Node::Str | Node::Uuid(None) | Node::Decimal { fixed: None, .. } => {
            len_prefixed(b, pos)?;
        }
        Node::Fixed(_, n) | Node::Decimal { fixed: Some(n), .. } => {
            take(b, pos, *n)?;
        }
        Node::Uuid(Some(_)) => {
            take(b, pos, 16)?;
        }
        Node::Duration(_) => {
            take(b, pos, 12)?;
        }
        Node::Record(i) => {
            for field in &arena.records[*i].fields {
                skip(&field.node, arena, b, pos, depth + 1)?;
            }
        }
        Node::Array(items) => {
            blocks(b, pos, zero_size(items, arena), depth, |b, pos| skip(items, arena, b, pos, depth + 1))?;
        }
        Node::Map(values) => {
            blocks(b, pos, false, depth, |b, pos| {
                len_prefixed(b, pos)?;
                skip(values, arena, b, pos, depth + 1)
            })?;
        }
        Node::Union(branches) => {
            let node = chosen(branches, b, pos)?;
            skip(node, arena, b, pos, depth + 1)?;
        }
    }
    Ok(())
}

/// A value as JSON text (Avro's JSON encoding, except that unions are written as their value and bytes as
/// base64).
fn to_json(
    node: &Node,
    arena: &Arena,
    b: &[u8],
    pos: &mut usize,
    out: &mut String,
    depth: u32,
) -> Result<(), WireError> {
    use std::fmt::Write as _;
    if depth > MAX_DEPTH {
        return err(format!("values nest deeper than {MAX_DEPTH} levels"));
    }
    let string = |out: &mut String, s: &str| out.push_str(&Value::String(s.to_owned()).to_string());
    match node {
        Node::Null => out.push_str("null"),
        Node::Bool => out.push_str(if take(b, pos, 1)?[0] != 0 { "true" } else { "false" }),
        Node::Int | Node::Date | Node::TimeMillis => write!(out, "{}", int(b, pos)?).expect("a String"),
        Node::Long | Node::TimeMicros | Node::Timestamp { .. } => write!(out, "{}", long(b, pos)?).expect("a String"),
        Node::Float => {
            let f = f32::from_le_bytes(take(b, pos, 4)?.try_into().expect("4 bytes"));
            out.push_str(&serde_json::Number::from_f64(f64::from(f)).map_or("null".into(), |n| n.to_string()))
        }
        Node::Double => {
            let f = f64::from_le_bytes(take(b, pos, 8)?.try_into().expect("8 bytes"));
            out.push_str(&serde_json::Number::from_f64(f).map_or("null".into(), |n| n.to_string()))
        }
        Node::Str | Node::Uuid(None) => {
            let bytes = len_prefixed(b, pos)?;
            string(out, std::str::from_utf8(bytes).map_err(|_| WireError("a string holds invalid UTF-8".into()))?)
        }
        Node::Bytes | Node::Decimal { fixed: None, .. } => {
            string(out, &base64(len_prefixed(b, pos)?));
        }
        Node::Fixed(_, n) | Node::Decimal { fixed: Some(n), .. } => string(out, &base64(take(b, pos, *n)?)),
        Node::Duration(_) => string(out, &base64(take(b, pos, 12)?)),
        Node::Uuid(Some(_)) => {
            string(out, &uuid::Uuid::from_slice(take(b, pos, 16)?).expect("16 bytes").hyphenated().to_string())
        }
        Node::Enum(e) => {
            let i = int(b, pos)?;
            let symbol = usize::try_from(i)
                .ok()
                .and_then(|i| e.symbols.get(i))
                .ok_or_else(|| WireError(format!("enum index {i} is out of range ({} symbols)", e.symbols.len())))?;
            string(out, symbol)
        }
        Node::Record(i) => {
            out.push('{');
            for (n, field) in arena.records[*i].fields.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                string(out, &field.name);
                out.push(':');
                to_json(&field.node, arena, b, pos, out, depth + 1)?;
            }
            out.push('}');
        }
        Node::Array(items) => {
            out.push('[');
            let mut first = true;
            blocks(b, pos, zero_size(items, arena), depth, |b, pos| {
                if !std::mem::take(&mut first) {
                    out.push(',');
                }
                to_json(items, arena, b, pos, out, depth + 1)
            })?;
            out.push(']');
        }
        Node::Map(values) => {
            out.push('{');
            let mut first = true;
            blocks(b, pos, false, depth, |b, pos| {
                if !std::mem::take(&mut first) {
                    out.push(',');
                }
                let key = len_prefixed(b, pos)?;
                string(out, std::str::from_utf8(key).map_err(|_| WireError("a map key holds invalid UTF-8".into()))?);
                out.push(':');
                to_json(values, arena, b, pos, out, depth + 1)
            })?;
            out.push('}');
        }
        Node::Union(branches) => {
            let node = chosen(branches, b, pos)?;
            to_json(node, arena, b, pos, out, depth + 1)?;
        }
    }
    Ok(())
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

// ---------------------------------------------------------------------------------------------------------
// Primitives
// ---------------------------------------------------------------------------------------------------------

/// A zig-zag varint long (at most 10 bytes).
#[inline]
fn long(b: &[u8], pos: &mut usize) -> Result<i64, WireError> {
    let mut value: u64 = 0;
    let mut shift = 0;
    loop {
        let Some(&byte) = b.get(*pos) else { return err("the record ends inside a number") };
        *pos += 1;
        if shift == 63 && byte > 1 {
            return err("a number is longer than 64 bits");
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
        }
        shift += 7;
    }
}

/// A zig-zag varint int.
#[inline]
fn int(b: &[u8], pos: &mut usize) -> Result<i32, WireError> {
    let v = long(b, pos)?;
    i32::try_from(v).map_err(|_| WireError(format!("the int {v} is out of range")))
}

/// The branch of `branches` a union value selects (its index read from the bytes).
#[inline]
fn chosen<'a>(branches: &'a [Node], b: &[u8], pos: &mut usize) -> Result<&'a Node, WireError> {
    let branch = index(b, pos)?;
    usize::try_from(branch)
        .ok()
        .and_then(|i| branches.get(i))
        .ok_or_else(|| WireError(format!("union branch {branch} is out of range")))
}

/// A union's branch index.
#[inline]
fn index(b: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    let i = long(b, pos)?;
    u64::try_from(i).map_err(|_| WireError(format!("union branch {i} is out of range")))
}

#[inline]
fn take<'a>(b: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], WireError> {
    let end = pos.checked_add(n).filter(|end| *end <= b.len()).ok_or_else(|| {
        WireError(format!("the record ends inside a value ({n} bytes wanted, {} left)", b.len() - *pos))
    })?;
    let bytes = &b[*pos..end];
    *pos = end;
    Ok(bytes)
}

/// A long length, then that many bytes.
#[inline]
fn len_prefixed<'a>(b: &'a [u8], pos: &mut usize) -> Result<&'a [u8], WireError> {
    let n = long(b, pos)?;
    let n = usize::try_from(n).map_err(|_| WireError(format!("a length is negative ({n})")))?;
    take(b, pos, n)
}

/// A big-endian two's-complement decimal's unscaled value, checked against `precision` digits.
fn decimal(bytes: &[u8], precision: u8) -> Result<i128, WireError> {
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let (extra, value) = bytes.split_at(bytes.len().saturating_sub(16));
    let sign = if negative { 0xff } else { 0 };
    if extra.iter().any(|b| *b != sign) || (!extra.is_empty() && (value[0] & 0x80 != 0) != negative) {
        return err(format!("a decimal of {} bytes is out of range", bytes.len()));
    }
    let mut buf = [sign; 16];
    buf[16 - value.len()..].copy_from_slice(value);
    let v = i128::from_be_bytes(buf);
    if v.unsigned_abs() >= 10u128.pow(u32::from(precision)) {
        return err(format!("the decimal's unscaled value {v} has more than {precision} digits"));
    }
    Ok(v)
}

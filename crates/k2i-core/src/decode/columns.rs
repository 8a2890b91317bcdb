//! Growable Arrow columns the registry formats' decoders write records into ([`Rows`]): one `Vec` or bitmap
//! per column, appended to from borrowed record bytes, cut back when a record fails half-way, and turned
//! into Arrow arrays of exactly the table's types when a chunk is sealed.

use std::sync::Arc;

use arrow_array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, FixedSizeBinaryArray, Float32Array, Float64Array,
    GenericBinaryArray, GenericStringArray, Int32Array, Int64Array, ListArray, MapArray, StructArray,
    Time64MicrosecondArray, TimestampMicrosecondArray,
};
use arrow_buffer::{BooleanBufferBuilder, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, FieldRef, Fields, TimeUnit};

/// Why a record's payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(pub String);

pub(crate) fn err<T>(message: impl Into<String>) -> Result<T, WireError> {
    Err(WireError(message.into()))
}

// ---------------------------------------------------------------------------------------------------------
// Columns
// ---------------------------------------------------------------------------------------------------------

/// A growable column of one Arrow type.
#[derive(Debug)]
pub(crate) enum Col {
    /// `boolean`.
    Bool(Bits, Bits),
    /// `int`.
    I32(Vec<i32>, Bits),
    /// `date` (days since 1970-01-01).
    Date(Vec<i32>, Bits),
    /// `long`, `timestamp` / `timestamptz` in µs, or `time` in µs (the data type says which).
    I64(Vec<i64>, Bits, DataType),
    /// `float`.
    F32(Vec<f32>, Bits),
    /// `double`.
    F64(Vec<f64>, Bits),
    /// `decimal(P, S)`.
    Dec(Vec<i128>, Bits, u8, i8),
    /// `fixed(n)` (and `uuid`): `width` bytes per row.
    Fixed { width: usize, data: Vec<u8>, valid: Bits },
    /// `string` / `binary`: offsets, bytes, validity, whether UTF-8, whether 64-bit offsets.
    Bytes { offsets: Vec<i64>, data: Vec<u8>, valid: Bits, utf8: bool, large: bool },
    /// `struct`.
    Struct { fields: Fields, children: Vec<Col>, valid: Bits },
    /// `list`.
    List { field: FieldRef, offsets: Vec<i32>, child: Box<Col>, valid: Bits },
    /// `map`.
    Map { field: FieldRef, offsets: Vec<i32>, keys: Box<Col>, values: Box<Col>, valid: Bits, ordered: bool },
}

/// A growable bitmap (validity, or boolean values), bit-packed like Arrow's.
#[derive(Debug)]
pub(crate) struct Bits(BooleanBufferBuilder);

impl std::default::Default for Bits {
    fn default() -> Self {
        Self(BooleanBufferBuilder::new(0))
    }
}

impl Bits {
    #[inline]
    pub(crate) fn push(&mut self, v: bool) {
        self.0.append(v);
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn truncate(&mut self, len: usize) {
        if len < self.0.len() {
            self.0.truncate(len);
        }
    }

    /// The bits as a validity buffer; `None` when every row is valid. Empty again afterwards.
    fn finish(&mut self) -> Option<NullBuffer> {
        let capacity = self.0.len();
        let bits = std::mem::replace(&mut self.0, BooleanBufferBuilder::new(capacity)).finish();
        let nulls = NullBuffer::new(bits);
        (nulls.null_count() > 0).then_some(nulls)
    }

    /// The bits as boolean values. Empty again afterwards.
    fn values(&mut self) -> arrow_buffer::BooleanBuffer {
        let capacity = self.0.len();
        std::mem::replace(&mut self.0, BooleanBufferBuilder::new(capacity)).finish()
    }
}

/// A column type the decoders do not write.
#[derive(Debug)]
pub struct Unsupported(pub DataType);

impl Col {
    /// An empty column of `data_type`.
    pub fn new(data_type: &DataType) -> Result<Self, Unsupported> {
        Ok(match data_type {
            DataType::Boolean => Self::Bool(Bits::default(), Bits::default()),
            DataType::Int32 => Self::I32(Vec::new(), Bits::default()),
            DataType::Date32 => Self::Date(Vec::new(), Bits::default()),
            DataType::FixedSizeBinary(width) => Self::Fixed {
                width: usize::try_from(*width).map_err(|_| Unsupported(data_type.clone()))?,
                data: Vec::new(),
                valid: Bits::default(),
            },
            DataType::Int64
            | DataType::Timestamp(TimeUnit::Microsecond, _)
            | DataType::Time64(TimeUnit::Microsecond) => Self::I64(Vec::new(), Bits::default(), data_type.clone()),
            DataType::Float32 => Self::F32(Vec::new(), Bits::default()),
            DataType::Float64 => Self::F64(Vec::new(), Bits::default()),
            DataType::Decimal128(p, s) => Self::Dec(Vec::new(), Bits::default(), *p, *s),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary | DataType::LargeBinary => Self::Bytes {
                offsets: vec![0],
                data: Vec::new(),
                valid: Bits::default(),
                utf8: matches!(data_type, DataType::Utf8 | DataType::LargeUtf8),
                large: matches!(data_type, DataType::LargeUtf8 | DataType::LargeBinary),
            },
            DataType::Struct(fields) => Self::Struct {
                fields: fields.clone(),
                children: fields.iter().map(|f| Col::new(f.data_type())).collect::<Result<_, _>>()?,
                valid: Bits::default(),
            },
            DataType::List(field) => Self::List {
                field: field.clone(),
                offsets: vec![0],
                child: Box::new(Col::new(field.data_type())?),
                valid: Bits::default(),
            },
            DataType::Map(field, ordered) => {
                let DataType::Struct(kv) = field.data_type() else { return Err(Unsupported(data_type.clone())) };
                if kv.len() != 2 {
                    return Err(Unsupported(data_type.clone()));
                }
                Self::Map {
                    field: field.clone(),
                    offsets: vec![0],
                    keys: Box::new(Col::new(kv[0].data_type())?),
                    values: Box::new(Col::new(kv[1].data_type())?),
                    valid: Bits::default(),
                    ordered: *ordered,
                }
            }
            other => return Err(Unsupported(other.clone())),
        })
    }

    fn valid(&self) -> &Bits {
        match self {
            Self::Bool(_, v)
            | Self::I32(_, v)
            | Self::Date(_, v)
            | Self::I64(_, v, _)
            | Self::Fixed { valid: v, .. }
            | Self::F32(_, v)
            | Self::F64(_, v)
            | Self::Dec(_, v, ..)
            | Self::Bytes { valid: v, .. }
            | Self::Struct { valid: v, .. }
            | Self::List { valid: v, .. }
            | Self::Map { valid: v, .. } => v,
        }
    }

    /// Rows (or elements) in the column.
    pub fn len(&self) -> usize {
        self.valid().len()
    }

    /// Appends a null.
    pub fn push_null(&mut self) {
        match self {
            Self::Bool(x, v) => (x.push(false), v.push(false)).1,
            Self::I32(x, v) | Self::Date(x, v) => (x.push(0), v.push(false)).1,
            Self::I64(x, v, _) => (x.push(0), v.push(false)).1,
            Self::Fixed { width, data, valid } => {
                data.resize(data.len() + *width, 0);
                valid.push(false);
            }
            Self::F32(x, v) => (x.push(0.0), v.push(false)).1,
            Self::F64(x, v) => (x.push(0.0), v.push(false)).1,
            Self::Dec(x, v, ..) => (x.push(0), v.push(false)).1,
            Self::Bytes { offsets, data, valid, .. } => {
                offsets.push(data.len() as i64);
                valid.push(false);
            }
            Self::Struct { children, valid, .. } => {
                for child in children {
                    child.push_null();
                }
                valid.push(false);
            }
            Self::List { offsets, child, valid, .. } => {
                offsets.push(child.len() as i32);
                valid.push(false);
            }
            Self::Map { offsets, keys, valid, .. } => {
                offsets.push(keys.len() as i32);
                valid.push(false);
            }
        }
    }

    /// Cuts the column back to `len` rows (a failed record, or a scalar about to be overwritten). A list or
    /// map also drops the elements of a row still open (appended, not yet closed).
    pub fn truncate(&mut self, len: usize) {
        match self {
            Self::Bool(x, v) => (x.truncate(len), v.truncate(len)).1,
            Self::I32(x, v) | Self::Date(x, v) => (x.truncate(len), v.truncate(len)).1,
            Self::I64(x, v, _) => (x.truncate(len), v.truncate(len)).1,
            Self::Fixed { width, data, valid } => {
                let len = len.min(valid.len());
                data.truncate(len * *width);
                valid.truncate(len);
            }
            Self::F32(x, v) => (x.truncate(len), v.truncate(len)).1,
            Self::F64(x, v) => (x.truncate(len), v.truncate(len)).1,
            Self::Dec(x, v, ..) => (x.truncate(len), v.truncate(len)).1,
            Self::Bytes { offsets, data, valid, .. } => {
                let len = len.min(valid.len());
                offsets.truncate(len + 1);
                data.truncate(offsets[len] as usize);
                valid.truncate(len);
            }
            Self::Struct { children, valid, .. } => {
                for child in children {
                    child.truncate(len);
                }
                valid.truncate(len);
            }
            Self::List { offsets, child, valid, .. } => {
                let len = len.min(valid.len());
                offsets.truncate(len + 1);
                child.truncate(offsets[len] as usize);
                valid.truncate(len);
            }
            Self::Map { offsets, keys, values, valid, .. } => {
                let len = len.min(valid.len());
                offsets.truncate(len + 1);
                keys.truncate(offsets[len] as usize);
                values.truncate(offsets[len] as usize);
                valid.truncate(len);
            }
        }
    }

    /// Closes a list or map row: its elements are those appended since the previous row.
    pub(crate) fn close(&mut self) {
        match self {
            Self::List { offsets, child, valid, .. } => {
                offsets.push(child.len() as i32);
                valid.push(true);
            }
            Self::Map { offsets, keys, valid, .. } => {
                offsets.push(keys.len() as i32);
                valid.push(true);
            }
            _ => {}
        }
    }

    /// Appends one scalar, converted to the column's type (plans only pair compatible kinds).
    pub(crate) fn push(&mut self, value: Scalar<'_>) -> Result<(), WireError> {
        match (self, value) {
            (Self::Bool(x, v), Scalar::Bool(b)) => (x.push(b), v.push(true)).1,
            (Self::I32(x, v) | Self::Date(x, v), Scalar::I64(i)) => (x.push(i as i32), v.push(true)).1,
            (Self::I64(x, v, _), Scalar::I64(i)) => (x.push(i), v.push(true)).1,
            (Self::I64(x, v, _), Scalar::U64(u)) => (x.push(u as i64), v.push(true)).1,
            (Self::Dec(x, v, ..), Scalar::U64(u)) => (x.push(i128::from(u)), v.push(true)).1,
            (Self::Dec(x, v, ..), Scalar::I64(i)) => (x.push(i128::from(i)), v.push(true)).1,
            (Self::Dec(x, v, ..), Scalar::I128(i)) => (x.push(i), v.push(true)).1,
            (Self::Fixed { width, data, valid }, Scalar::Bytes(b)) => {
                if b.len() != *width {
                    return err(format!("a fixed({width}) value has {} bytes", b.len()));
                }
                data.extend_from_slice(b);
                valid.push(true);
            }
            (Self::F32(x, v), Scalar::F32(f)) => (x.push(f), v.push(true)).1,
            (Self::F64(x, v), Scalar::F32(f)) => (x.push(f64::from(f)), v.push(true)).1,
            (Self::F64(x, v), Scalar::F64(f)) => (x.push(f), v.push(true)).1,
            (Self::Bytes { offsets, data, valid, utf8, .. }, Scalar::Bytes(b)) => {
                if *utf8 && std::str::from_utf8(b).is_err() {
                    return err("a string field holds invalid UTF-8");
                }
                data.extend_from_slice(b);
                offsets.push(data.len() as i64);
                valid.push(true);
            }
            (col, value) => return err(format!("internal: cannot store {value:?} in {}", col.kind())),
        }
        Ok(())
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Bool(..) => "boolean",
            Self::I32(..) => "int",
            Self::Date(..) => "date",
            Self::I64(..) => "long",
            Self::Fixed { .. } => "fixed",
            Self::F32(..) => "float",
            Self::F64(..) => "double",
            Self::Dec(..) => "decimal",
            Self::Bytes { .. } => "string/binary",
            Self::Struct { .. } => "struct",
            Self::List { .. } => "list",
            Self::Map { .. } => "map",
        }
    }

    /// Everything appended so far as an Arrow array; the column starts empty again.
    pub fn finish(&mut self) -> Result<ArrayRef, arrow_schema::ArrowError> {
        fn nulls(valid: &mut Bits) -> Option<NullBuffer> {
            valid.finish()
        }
        // The next chunk gets the capacity this one needed: no regrowth, and no slack kept in the arrays.
        fn take<T>(values: &mut Vec<T>) -> Vec<T> {
            let capacity = values.len();
            std::mem::replace(values, Vec::with_capacity(capacity))
        }
        Ok(match self {
            Self::Bool(x, v) => Arc::new(BooleanArray::new(x.values(), nulls(v))) as ArrayRef,
            Self::I32(x, v) => Arc::new(Int32Array::new(ScalarBuffer::from(take(x)), nulls(v))),
            Self::I64(x, v, DataType::Timestamp(_, tz)) => Arc::new(
                TimestampMicrosecondArray::new(ScalarBuffer::from(take(x)), nulls(v)).with_timezone_opt(tz.clone()),
            ),
            Self::I64(x, v, DataType::Time64(_)) => {
                Arc::new(Time64MicrosecondArray::new(ScalarBuffer::from(take(x)), nulls(v)))
            }
            Self::I64(x, v, _) => Arc::new(Int64Array::new(ScalarBuffer::from(take(x)), nulls(v))),
            Self::Date(x, v) => Arc::new(Date32Array::new(ScalarBuffer::from(take(x)), nulls(v))),
            Self::Fixed { width, data, valid } => {
                let width = *width as i32;
                Arc::new(FixedSizeBinaryArray::try_new(width, Buffer::from_vec(take(data)), nulls(valid))?)
            }
            Self::F32(x, v) => Arc::new(Float32Array::new(ScalarBuffer::from(take(x)), nulls(v))),
            Self::F64(x, v) => Arc::new(Float64Array::new(ScalarBuffer::from(take(x)), nulls(v))),
            Self::Dec(x, v, p, s) => {
                Arc::new(Decimal128Array::new(ScalarBuffer::from(take(x)), nulls(v)).with_precision_and_scale(*p, *s)?)
            }
            Self::Bytes { offsets, data, valid, utf8, large } => {
                let offsets64 = std::mem::replace(offsets, vec![0]);
                let data = Buffer::from_vec(take(data));
                let nulls = nulls(valid);
                match (*utf8, *large) {
                    (true, false) => Arc::new(GenericStringArray::<i32>::try_new(narrow(offsets64)?, data, nulls)?),
                    (true, true) => {
                        Arc::new(GenericStringArray::<i64>::try_new(OffsetBuffer::new(offsets64.into()), data, nulls)?)
                    }
                    (false, false) => Arc::new(GenericBinaryArray::<i32>::try_new(narrow(offsets64)?, data, nulls)?),
                    (false, true) => {
                        Arc::new(GenericBinaryArray::<i64>::try_new(OffsetBuffer::new(offsets64.into()), data, nulls)?)
                    }
                }
            }
            Self::Struct { fields, children, valid } => {
                let arrays = children.iter_mut().map(Col::finish).collect::<Result<Vec<_>, _>>()?;
                let nulls = nulls(valid);
                Arc::new(StructArray::try_new(fields.clone(), arrays, nulls)?)
            }
            Self::List { field, offsets, child, valid } => {
                let offsets = OffsetBuffer::new(std::mem::replace(offsets, vec![0]).into());
                let values = child.finish()?;
                Arc::new(ListArray::try_new(field.clone(), offsets, values, nulls(valid))?)
            }
            Self::Map { field, offsets, keys, values, valid, ordered } => {
                let DataType::Struct(kv) = field.data_type() else { unreachable!("checked in Col::new") };
                let entries = StructArray::try_new(kv.clone(), vec![keys.finish()?, values.finish()?], None)?;
                let offsets = OffsetBuffer::new(std::mem::replace(offsets, vec![0]).into());
                Arc::new(MapArray::try_new(field.clone(), offsets, entries, nulls(valid), *ordered)?)
            }
        })
    }
}

fn narrow(offsets: Vec<i64>) -> Result<OffsetBuffer<i32>, arrow_schema::ArrowError> {
    let narrowed = offsets
        .into_iter()
        .map(i32::try_from)
        .collect::<Result<Vec<i32>, _>>()
        .map_err(|_| arrow_schema::ArrowError::InvalidArgumentError("a string column exceeds 2 GiB".into()))?;
    Ok(OffsetBuffer::new(narrowed.into()))
}

/// One decoded wire value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scalar<'a> {
    Bool(bool),
    I64(i64),
    U64(u64),
    I128(i128),
    F32(f32),
    F64(f64),
    Bytes(&'a [u8]),
}

// ---------------------------------------------------------------------------------------------------------
// Record decoding
// ---------------------------------------------------------------------------------------------------------

/// The payload columns of a table, a record at a time.
#[derive(Debug)]
pub struct Rows {
    columns: Vec<Col>,
    rows: usize,
}

impl Rows {
    /// Empty columns for the payload `fields`.
    pub fn new(fields: &Fields) -> Result<Self, Unsupported> {
        Ok(Self { columns: fields.iter().map(|f| Col::new(f.data_type())).collect::<Result<_, _>>()?, rows: 0 })
    }

    /// Decodes one record as a new row with `decode(columns, row)` (each column has `row` rows before the
    /// call and must have `row + 1` after it); on error no column changes.
    #[inline]
    pub(crate) fn append_with(
        &mut self,
        decode: impl FnOnce(&mut [Col], usize) -> Result<(), WireError>,
    ) -> Result<(), WireError> {
        let row = self.rows;
        match decode(&mut self.columns, row) {
            Ok(()) => {
                self.rows += 1;
                Ok(())
            }
            Err(e) => {
                for column in &mut self.columns {
                    column.truncate(row);
                }
                Err(e)
            }
        }
    }

    /// Appends a row of nulls (used by nothing but tests today).
    pub fn append_null(&mut self) {
        for column in &mut self.columns {
            column.push_null();
        }
        self.rows += 1;
    }

    /// Rows appended since the last [`Rows::finish`].
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no row was appended.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The columns as Arrow arrays; empty again afterwards.
    pub fn finish(&mut self) -> Result<Vec<ArrayRef>, arrow_schema::ArrowError> {
        self.rows = 0;
        self.columns.iter_mut().map(Col::finish).collect()
    }
}

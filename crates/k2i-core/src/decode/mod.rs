//! Payload decoding: record value bytes → Arrow columns of the table's payload fields.
//!
//! A [`Decoder`] is built for one table schema. `raw` keeps the value bytes in a binary column; `json`
//! checks each record against the schema while parsing it ([`crate::schema::check_json`]) and then feeds the original bytes
//! to arrow-json's tape decoder, so a record is parsed for the check and decoded straight into Arrow without
//! an intermediate conversion. Records that need new columns are reported as [`Outcome::NeedsColumns`]
//! and not consumed: the caller evolves the table and retries them with a decoder for the new schema.

pub mod framing;
pub mod protobuf;
pub mod registry;

use std::sync::Arc;

use arrow_array::builder::LargeBinaryBuilder;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Schema as ArrowSchema, SchemaRef};
use iceberg::spec::{Schema, StructType};

use crate::config::{FormatType, ProtobufOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::schema::evolve::Change;
use crate::schema::{self, Addition, Conflict, METADATA_COLUMNS, Problem};

/// A table's payload format, with what decoding it needs beyond the table schema.
#[derive(Debug, Clone)]
pub enum Format {
    /// Value bytes into the `value` column.
    Raw,
    /// JSON objects.
    Json,
    /// Confluent-framed Protobuf; the compiled schemas are shared by the table's decoders.
    Protobuf(Arc<ProtobufContext>),
}

impl Format {
    /// The format of `kind`; a registry format gets an empty schema set.
    pub fn new(kind: FormatType, protobuf: &ProtobufOptions) -> Result<Self> {
        match kind {
            FormatType::Raw => Ok(Self::Raw),
            FormatType::Json => Ok(Self::Json),
            FormatType::Protobuf => Ok(Self::Protobuf(Arc::new(ProtobufContext {
                schemas: protobuf::Schemas::default(),
                options: protobuf.clone(),
            }))),
            other => Err(Error::new(ErrorKind::Config, "this payload format is not built yet")
                .with("format", format!("{other:?}"))),
        }
    }
}

/// What the Protobuf decoders of one table share.
#[derive(Debug)]
pub struct ProtobufContext {
    /// Compiled registry schemas by id.
    pub schemas: protobuf::Schemas,
    /// Column mapping options.
    pub options: ProtobufOptions,
}

/// What happened to one record.
#[derive(Debug)]
pub enum Outcome {
    /// Appended.
    Appended,
    /// Not appended: the record needs these new columns first.
    NeedsColumns(Vec<Addition>),
    /// Not appended: the record's schema id is not compiled yet (fetch it from the registry first).
    NeedsSchema(u32),
    /// Not appended: the record's writer schema asks for a compatible table change first.
    NeedsChange {
        /// The writer schema.
        schema_id: u32,
        /// The additions and promotions.
        change: Change,
    },
    /// Not appended: the record's writer schema cannot be applied to the table; `on_breaking_change`
    /// decides.
    Breaking {
        /// The writer schema.
        schema_id: u32,
        /// Why.
        reason: String,
        /// The record's message type (fully qualified).
        message: String,
    },
    /// Not appended: the record cannot be stored; the error policy decides. `kind` labels the metric.
    Invalid {
        /// `tombstone`, `not_json`, `not_object`, `schema_conflict` or `evolution_off`.
        kind: &'static str,
        /// What is wrong, for the error or log line.
        reason: String,
    },
}

/// Decodes payloads of one format for one table schema.
pub enum Decoder {
    /// Value bytes into the `value` column.
    Raw {
        /// The payload column.
        values: LargeBinaryBuilder,
    },
    /// JSON objects into the payload columns.
    Json(JsonDecoder),
    /// Confluent-framed Protobuf into the payload columns.
    Protobuf(ProtobufDecoder),
}

/// The JSON decoder.
pub struct JsonDecoder {
    payload: StructType,
    inner: arrow_json::reader::Decoder,
    evolve: bool,
}

impl Decoder {
    /// A decoder for `format` writing the payload fields of `table_schema`.
    pub fn new(
        format: &Format,
        table_schema: &Schema,
        payload_arrow: SchemaRef,
        evolve: bool,
        chunk_rows: usize,
    ) -> Result<Self> {
        match format {
            Format::Raw => Ok(Self::Raw { values: LargeBinaryBuilder::new() }),
            Format::Protobuf(cx) => {
                Ok(Self::Protobuf(ProtobufDecoder::new(cx.clone(), table_schema, &payload_arrow, evolve)?))
            }
            Format::Json => {
                let fields = table_schema
                    .as_struct()
                    .fields()
                    .iter()
                    .filter(|f| !METADATA_COLUMNS.contains(&f.name.as_str()))
                    .cloned()
                    .collect();
                let inner = arrow_json::ReaderBuilder::new(payload_arrow)
                    .with_batch_size(chunk_rows)
                    .with_strict_mode(false)
                    .build_decoder()
                    .map_err(|e| Error::new(ErrorKind::Internal, "cannot build the JSON decoder").source(e))?;
                Ok(Self::Json(JsonDecoder { payload: StructType::new(fields), inner, evolve }))
            }
        }
    }

    /// Decodes one record value (`None` for a tombstone).
    pub fn append(&mut self, value: Option<&[u8]>) -> Result<Outcome> {
        match self {
            Self::Raw { values } => {
                values.append_option(value);
                Ok(Outcome::Appended)
            }
            Self::Json(json) => json.append(value),
            Self::Protobuf(decoder) => Ok(decoder.append(value)),
        }
    }

    /// The payload columns of everything appended since the last call, in payload-field order.
    pub fn finish(&mut self, payload_arrow: &ArrowSchema) -> Result<Vec<ArrayRef>> {
        match self {
            Self::Raw { values } => Ok(vec![Arc::new(values.finish()) as ArrayRef]),
            Self::Protobuf(decoder) => decoder
                .rows
                .finish()
                .map_err(|e| Error::new(ErrorKind::Internal, "cannot build the Protobuf columns").source(e)),
            Self::Json(json) => {
                let batch = json
                    .inner
                    .flush()
                    .map_err(|e| Error::new(ErrorKind::Internal, "cannot convert decoded JSON to Arrow").source(e))?;
                match batch {
                    Some(batch) => Ok(batch.columns().to_vec()),
                    None => Ok(RecordBatch::new_empty(Arc::new(payload_arrow.clone())).columns().to_vec()),
                }
            }
        }
    }
}

impl JsonDecoder {
    fn append(&mut self, value: Option<&[u8]>) -> Result<Outcome> {
        let Some(bytes) = value else {
            return Ok(invalid("tombstone", "the value is null (a tombstone), not a JSON object".to_owned()));
        };
        let mut additions = Vec::new();
        match schema::check_json(bytes, &self.payload, &mut additions) {
            Ok(()) => {}
            Err(Problem::NotJson(e)) => return Ok(invalid("not_json", format!("the value is not JSON: {e}"))),
            Err(Problem::NotObject(kind)) => {
                return Ok(invalid("not_object", format!("the value is JSON but not an object (found {kind})")));
            }
            Err(Problem::Conflict(conflict)) => return Ok(invalid("schema_conflict", conflict_message(&conflict))),
        }
        if !additions.is_empty() {
            if !self.evolve {
                let names: Vec<String> = additions.iter().map(Addition::full_name).collect();
                return Ok(invalid(
                    "evolution_off",
                    format!(
                        "the record has fields the table lacks ({}) and schema_evolution.mode = \"none\"",
                        names.join(", ")
                    ),
                ));
            }
            return match schema::merge_additions(additions) {
                Ok(additions) => Ok(Outcome::NeedsColumns(additions)),
                Err(conflict) => Ok(invalid("schema_conflict", conflict_message(&conflict))),
            };
        }
        let consumed = self
            .inner
            .decode(bytes)
            .map_err(|e| Error::new(ErrorKind::Internal, "the JSON decoder rejected a checked record").source(e))?;
        if consumed != bytes.len() || self.inner.has_partial_record() {
            return Err(Error::new(ErrorKind::Internal, "the JSON decoder did not take the whole record")
                .with("consumed", consumed)
                .with("length", bytes.len()));
        }
        Ok(Outcome::Appended)
    }
}

fn invalid(kind: &'static str, reason: String) -> Outcome {
    Outcome::Invalid { kind, reason }
}

fn conflict_message(conflict: &Conflict) -> String {
    format!("the value does not fit the table schema: {conflict}")
}

/// The Protobuf decoder of one table schema: a plan per (schema id, message) the table fits.
pub struct ProtobufDecoder {
    cx: Arc<ProtobufContext>,
    payload: StructType,
    fields: arrow_schema::Fields,
    evolve: bool,
    rows: protobuf::wire::Rows,
    /// (schema id, encoded message indexes) → what records of it get; few entries, scanned linearly.
    plans: Vec<(u32, Box<[u8]>, Plan)>,
    last: usize,
}

enum Plan {
    Ready(protobuf::wire::MessagePlan),
    Change(Change),
    Breaking { reason: String, message: String },
    Invalid(String),
}

impl ProtobufDecoder {
    fn new(cx: Arc<ProtobufContext>, table_schema: &Schema, payload_arrow: &ArrowSchema, evolve: bool) -> Result<Self> {
        let payload = StructType::new(
            table_schema
                .as_struct()
                .fields()
                .iter()
                .filter(|f| !METADATA_COLUMNS.contains(&f.name.as_str()))
                .cloned()
                .collect(),
        );
        let fields = payload_arrow.fields().clone();
        let rows = protobuf::wire::Rows::new(&fields).map_err(|e| {
            Error::new(ErrorKind::Config, "the table has a column type the Protobuf decoder cannot write")
                .with("type", &e.0)
        })?;
        Ok(Self { cx, payload, fields, evolve, rows, plans: Vec::new(), last: 0 })
    }

    fn append(&mut self, value: Option<&[u8]>) -> Outcome {
        let Some(bytes) = value else {
            return invalid("tombstone", "the value is null (a tombstone), not a Protobuf message".to_owned());
        };
        let frame = match framing::split_protobuf(bytes) {
            Ok(frame) => frame,
            Err(e) => return invalid("bad_frame", e.to_string()),
        };
        let key = frame.indexes.encoded();
        let found = match self.plans.get(self.last) {
            Some((id, k, _)) if *id == frame.schema_id && same_bytes(k, key) => Some(self.last),
            _ => self.plans.iter().position(|(id, k, _)| *id == frame.schema_id && same_bytes(k, key)),
        };
        let index = match found {
            Some(i) => i,
            None => {
                let plan = match self.cx.schemas.get(frame.schema_id) {
                    None => return Outcome::NeedsSchema(frame.schema_id),
                    Some(Err(reason)) => Plan::Invalid(reason),
                    Some(Ok(compiled)) => self.plan(&compiled, frame.indexes),
                };
                self.plans.push((frame.schema_id, key.into(), plan));
                self.plans.len() - 1
            }
        };
        self.last = index;
        match &self.plans[index].2 {
            Plan::Ready(plan) => match self.rows.append(plan, frame.payload) {
                Ok(()) => Outcome::Appended,
                Err(e) => invalid("protobuf_decode", format!("schema id {}: {e}", frame.schema_id)),
            },
            Plan::Change(change) => Outcome::NeedsChange { schema_id: frame.schema_id, change: change.clone() },
            Plan::Breaking { reason, message } => {
                Outcome::Breaking { schema_id: frame.schema_id, reason: reason.clone(), message: message.clone() }
            }
            Plan::Invalid(reason) => invalid("undecodable_schema", reason.clone()),
        }
    }

    fn plan(&self, compiled: &protobuf::Compiled, indexes: framing::MessageIndexes<'_>) -> Plan {
        let mut message = match compiled.select(indexes.iter()) {
            Ok(message) => message,
            Err(reason) => return Plan::Invalid(reason),
        };
        // An operator's retry may have pointed this id at the subject's latest schema.
        if let Some(reader) = self.cx.schemas.reader(compiled.id)
            && let Some(m) = reader.message(message.full_name())
        {
            message = m;
        }
        let name = message.full_name().to_owned();
        let breaking = |reason: String| Plan::Breaking { reason, message: name.clone() };
        let wanted = protobuf::message_type(&message, &self.cx.options);
        let change = schema::evolve::diff(&self.payload, &wanted);
        if !change.breaking.is_empty() {
            return breaking(format!("message {name}: {}", change.breaking.join("; ")));
        }
        if !change.is_empty() {
            if !self.evolve {
                return breaking(format!(
                    "message {name} needs a table change ({}) and schema_evolution.mode = \"none\"",
                    change.describe()
                ));
            }
            return Plan::Change(change);
        }
        match protobuf::wire::MessagePlan::build(&message, &self.fields, &self.cx.options) {
            Ok(plan) => Plan::Ready(plan),
            Err(e) => breaking(format!("message {name}: {e}")),
        }
    }

    /// Forgets every plan (an operator's retry: check each schema against the table again).
    pub fn forget_plans(&mut self) {
        self.plans.clear();
        self.last = 0;
    }
}

/// Equality of two short byte strings (message-index arrays are a few bytes, usually none) without a call
/// into `memcmp` per record.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

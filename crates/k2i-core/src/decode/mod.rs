//! Payload decoding: record value bytes → Arrow columns of the table's payload fields.
//!
//! A [`Decoder`] is built for one table schema. `raw` keeps the value bytes in a binary column; the registry
//! formats (Protobuf, Avro, JSON Schema) go through [`RegistryDecoder`]; `json` checks each record against
//! the schema while parsing it ([`crate::schema::check_json`]) and then feeds the original bytes to
//! arrow-json's tape decoder, so a record is parsed for the check and decoded straight into Arrow without an
//! intermediate conversion. Records that need new columns are reported as [`Outcome::NeedsColumns`]
//! and not consumed: the caller evolves the table and retries them with a decoder for the new schema.

pub mod avro;
pub mod columns;
pub mod framing;
pub mod json_schema;
pub mod protobuf;
pub mod registered;
pub mod registry;
#[cfg(test)]
mod testing;

pub use registered::{Compiled, RegistryContext, RegistryDecoder, RegistryKind, Schemas, compile};

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
    /// A registry format (Confluent-framed Protobuf, Avro, JSON Schema); the compiled schemas are shared by
    /// the table's decoders.
    Registry(Arc<RegistryContext>),
}

impl Format {
    /// The format of `kind`; a registry format gets an empty schema set.
    pub fn new(kind: FormatType, protobuf: &ProtobufOptions) -> Result<Self> {
        match kind {
            FormatType::Raw => Ok(Self::Raw),
            FormatType::Json => Ok(Self::Json),
            other => match RegistryKind::of(other) {
                Some(kind) => Ok(Self::Registry(Arc::new(RegistryContext {
                    kind,
                    schemas: Schemas::default(),
                    protobuf: protobuf.clone(),
                }))),
                None => Err(Error::new(ErrorKind::Config, "this payload format is not built yet")
                    .with("format", format!("{other:?}"))),
            },
        }
    }
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
        /// The writer's type name, for record-name subjects: the Protobuf message or the Avro record (fully
        /// qualified), the JSON Schema's `title` (empty without one).
        message: String,
    },
    /// Not appended: the record cannot be stored; the error policy decides. `kind` labels the metric.
    Invalid {
        /// `tombstone`, `not_json`, `not_object`, `schema_conflict`, `evolution_off`; for the registry formats
        /// also `bad_frame`, `undecodable_schema`, `protobuf_decode`, `avro_decode`.
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
    /// A registry format into the payload columns.
    Registry(RegistryDecoder),
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
            Format::Registry(cx) => {
                Ok(Self::Registry(RegistryDecoder::new(cx.clone(), table_schema, &payload_arrow, evolve, chunk_rows)?))
            }
            Format::Json => {
                let fields = table_schema
                    .as_struct()
                    .fields()
                    .iter()
                    .filter(|f| !METADATA_COLUMNS.contains(&f.name.as_str()))
                    .cloned()
                    .collect();
                let inner = json_decoder(payload_arrow, chunk_rows)?;
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
            Self::Registry(decoder) => decoder.append(value),
        }
    }

    /// The payload columns of everything appended since the last call, in payload-field order.
    pub fn finish(&mut self, payload_arrow: &ArrowSchema) -> Result<Vec<ArrayRef>> {
        match self {
            Self::Raw { values } => Ok(vec![Arc::new(values.finish()) as ArrayRef]),
            Self::Registry(decoder) => decoder.finish(payload_arrow),
            Self::Json(json) => json_finish(&mut json.inner, payload_arrow),
        }
    }
}

impl JsonDecoder {
    fn append(&mut self, value: Option<&[u8]>) -> Result<Outcome> {
        let Some(bytes) = value else {
            return Ok(invalid("tombstone", "the value is null (a tombstone), not a JSON object".to_owned()));
        };
        let mut additions = Vec::new();
        if let Err(problem) = schema::check_json(bytes, &self.payload, &mut additions) {
            return Ok(conflict_outcome(problem));
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
        json_append(&mut self.inner, bytes)?;
        Ok(Outcome::Appended)
    }
}

/// arrow-json's decoder for the payload columns (keys the columns lack are ignored).
fn json_decoder(payload_arrow: SchemaRef, chunk_rows: usize) -> Result<arrow_json::reader::Decoder> {
    arrow_json::ReaderBuilder::new(payload_arrow)
        .with_batch_size(chunk_rows)
        .with_strict_mode(false)
        .build_decoder()
        .map_err(|e| Error::new(ErrorKind::Internal, "cannot build the JSON decoder").source(e))
}

/// Decodes one checked JSON record.
fn json_append(inner: &mut arrow_json::reader::Decoder, bytes: &[u8]) -> Result<()> {
    let consumed = inner
        .decode(bytes)
        .map_err(|e| Error::new(ErrorKind::Internal, "the JSON decoder rejected a checked record").source(e))?;
    if consumed != bytes.len() || inner.has_partial_record() {
        return Err(Error::new(ErrorKind::Internal, "the JSON decoder did not take the whole record")
            .with("consumed", consumed)
            .with("length", bytes.len()));
    }
    Ok(())
}

/// The JSON records decoded since the last call, as the payload columns.
fn json_finish(inner: &mut arrow_json::reader::Decoder, payload_arrow: &ArrowSchema) -> Result<Vec<ArrayRef>> {
    let batch =
        inner.flush().map_err(|e| Error::new(ErrorKind::Internal, "cannot convert decoded JSON to Arrow").source(e))?;
    match batch {
        Some(batch) => Ok(batch.columns().to_vec()),
        None => Ok(RecordBatch::new_empty(Arc::new(payload_arrow.clone())).columns().to_vec()),
    }
}

pub(crate) fn conflict_outcome(problem: Problem) -> Outcome {
    match problem {
        Problem::NotJson(e) => invalid("not_json", format!("the value is not JSON: {e}")),
        Problem::NotObject(kind) => {
            invalid("not_object", format!("the value is JSON but not an object (found {kind})"))
        }
        Problem::Conflict(conflict) => invalid("schema_conflict", conflict_message(&conflict)),
    }
}

fn invalid(kind: &'static str, reason: String) -> Outcome {
    Outcome::Invalid { kind, reason }
}

fn conflict_message(conflict: &Conflict) -> String {
    format!("the value does not fit the table schema: {conflict}")
}

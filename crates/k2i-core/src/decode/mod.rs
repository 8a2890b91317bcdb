//! Payload decoding: record value bytes → Arrow columns of the table's payload fields.
//!
//! A [`Decoder`] is built for one table schema. `raw` keeps the value bytes in a binary column; `json`
//! checks each record against the schema while parsing it ([`crate::schema::check_json`]) and then feeds the original bytes
//! to arrow-json's tape decoder, so a record is parsed for the check and decoded straight into Arrow without
//! an intermediate conversion. Records that need new columns are reported as [`Outcome::NeedsColumns`]
//! and not consumed: the caller evolves the table and retries them with a decoder for the new schema.

pub mod framing;
pub mod registry;

use std::sync::Arc;

use arrow_array::builder::LargeBinaryBuilder;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Schema as ArrowSchema, SchemaRef};
use iceberg::spec::{Schema, StructType};

use crate::config::FormatType;
use crate::error::{Error, ErrorKind, Result};
use crate::schema::{self, Addition, Conflict, METADATA_COLUMNS, Problem};

/// What happened to one record.
#[derive(Debug)]
pub enum Outcome {
    /// Appended.
    Appended,
    /// Not appended: the record needs these new columns first.
    NeedsColumns(Vec<Addition>),
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
        format: FormatType,
        table_schema: &Schema,
        payload_arrow: SchemaRef,
        evolve: bool,
        chunk_rows: usize,
    ) -> Result<Self> {
        match format {
            FormatType::Raw => Ok(Self::Raw { values: LargeBinaryBuilder::new() }),
            FormatType::Json => {
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
            other => Err(Error::new(ErrorKind::Config, "this payload format is not built yet")
                .with("format", format!("{other:?}"))),
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
        }
    }

    /// The payload columns of everything appended since the last call, in payload-field order.
    pub fn finish(&mut self, payload_arrow: &ArrowSchema) -> Result<Vec<ArrayRef>> {
        match self {
            Self::Raw { values } => Ok(vec![Arc::new(values.finish()) as ArrayRef]),
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

//! The registry formats' decoder, one for Protobuf, Avro and JSON Schema: Confluent framing (magic byte 0,
//! the 4-byte schema id, for Protobuf the message indexes), the compiled writer schemas by id, and per
//! (schema id, message) a plan the table's schema decides — ready, a compatible change first, breaking, or
//! undecodable. The verdict comes from one evolution engine ([`crate::schema::evolve::diff`]) for all three
//! formats: a writer schema is mapped to an Iceberg struct and compared with the table's, so the same
//! change gets the same answer (and the same message) whatever the format.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow_array::ArrayRef;
use arrow_schema::Schema as ArrowSchema;
use iceberg::spec::{Schema, StructType};

use super::columns::Rows;
use super::registry::{ResolvedSchema, SchemaType};
use super::{Outcome, avro, framing, invalid, json_schema, protobuf};
use crate::config::{FormatType, ProtobufOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::schema::evolve::Change;
use crate::schema::{self, METADATA_COLUMNS};

/// Which registry format a table reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryKind {
    /// Confluent-framed Protobuf.
    Protobuf,
    /// Confluent-framed Avro.
    Avro,
    /// Confluent-framed JSON Schema.
    JsonSchema,
}

impl RegistryKind {
    /// The registry format of a configured payload format, if it is one.
    pub fn of(format: FormatType) -> Option<Self> {
        match format {
            FormatType::Protobuf => Some(Self::Protobuf),
            FormatType::Avro => Some(Self::Avro),
            FormatType::JsonSchema => Some(Self::JsonSchema),
            _ => None,
        }
    }

    /// The registry's name for schemas of this format.
    pub fn schema_type(self) -> SchemaType {
        match self {
            Self::Protobuf => SchemaType::Protobuf,
            Self::Avro => SchemaType::Avro,
            Self::JsonSchema => SchemaType::Json,
        }
    }

    /// The format's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Protobuf => "Protobuf",
            Self::Avro => "Avro",
            Self::JsonSchema => "JSON Schema",
        }
    }
}

/// What the decoders of one table share.
#[derive(Debug)]
pub struct RegistryContext {
    /// The format.
    pub kind: RegistryKind,
    /// Compiled registry schemas by id.
    pub schemas: Schemas,
    /// Protobuf's column mapping options.
    pub protobuf: ProtobufOptions,
}

/// A registry schema compiled for decoding.
#[derive(Debug)]
pub enum Compiled {
    /// A `.proto` file with its imports.
    Protobuf(protobuf::Compiled),
    /// An Avro schema with the named types of its references.
    Avro(avro::Compiled),
    /// A JSON Schema with its references.
    JsonSchema(json_schema::Compiled),
}

/// Compiles a registry schema of format `kind`. A schema of another type, or one that does not compile, is
/// an [`ErrorKind::InvalidRecord`] error: its records go to the error policy.
pub fn compile(kind: RegistryKind, schema: &ResolvedSchema) -> Result<Compiled> {
    if schema.schema_type != kind.schema_type() {
        return Err(Error::new(
            ErrorKind::InvalidRecord,
            format!(
                "schema id {} is a {:?} schema in the registry; the table reads {}",
                schema.id,
                schema.schema_type,
                kind.name()
            ),
        )
        .with("schema_id", schema.id));
    }
    match kind {
        RegistryKind::Protobuf => protobuf::compile(schema).map(Compiled::Protobuf),
        RegistryKind::Avro => avro::compile(schema).map(Compiled::Avro),
        RegistryKind::JsonSchema => json_schema::compile(schema).map(Compiled::JsonSchema),
    }
}

impl Compiled {
    /// The registry's id of the schema.
    pub fn id(&self) -> u32 {
        match self {
            Self::Protobuf(c) => c.id,
            Self::Avro(c) => c.id,
            Self::JsonSchema(c) => c.id,
        }
    }

    /// Logs, once per compiled schema, the JSON Schema properties that are not stored.
    pub fn warn_unstored(&self) {
        if let Self::JsonSchema(json) = self
            && !json.dropped.is_empty()
        {
            tracing::warn!(
                schema_id = json.id,
                properties = %json.dropped.join(", "),
                "these JSON Schema properties have no single column type and are not stored"
            );
        }
    }

    /// The payload struct a new table gets from this schema, with the name of the type it comes from:
    /// `message_name`'s message (Protobuf) or the schema's first one.
    pub fn root(&self, message_name: Option<&str>, cx: &RegistryContext) -> Result<(String, StructType)> {
        match self {
            Self::Protobuf(compiled) => {
                let message = match message_name {
                    Some(name) => compiled.message(name).ok_or_else(|| {
                        Error::new(ErrorKind::Config, "the subject's latest schema has no such message")
                            .with("key", "kafka.format.message_name")
                            .with("message", name)
                    })?,
                    None => compiled.first().ok_or_else(|| {
                        Error::new(ErrorKind::Config, "the subject's latest schema defines no message")
                    })?,
                };
                Ok((message.full_name().to_owned(), protobuf::message_type(&message, &cx.protobuf)))
            }
            Self::Avro(compiled) => {
                let name = compiled.name();
                if let Some(wanted) = message_name
                    && wanted != name
                {
                    return Err(Error::new(ErrorKind::Config, "the subject's latest schema is another record")
                        .with("key", "kafka.format.message_name")
                        .with("message", wanted)
                        .with("record", name));
                }
                Ok((name, compiled.record_type()))
            }
            // The schema is the record type: `message_name` only names the subject.
            Self::JsonSchema(compiled) => Ok((compiled.title.clone(), compiled.root.clone())),
        }
    }
}

/// Compiled schemas by id, shared by a table's decoders (a schema change builds a new decoder, the schemas
/// stay). Filled by the table's commit actor, read by the polling thread when a decoder meets an id it has
/// no plan for (not per record).
#[derive(Debug, Default)]
pub struct Schemas {
    inner: Mutex<Known>,
}

#[derive(Debug, Default)]
struct Known {
    by_id: HashMap<u32, std::result::Result<Arc<Compiled>, String>>,
    /// Reader schemas for writer ids an operator's retry pointed at the subject's latest version.
    readers: HashMap<u32, Arc<Compiled>>,
}

impl Schemas {
    /// A schema by id: compiled, invalid (why), or not known yet (`None`).
    pub fn get(&self, id: u32) -> Option<std::result::Result<Arc<Compiled>, String>> {
        self.lock().by_id.get(&id).cloned()
    }

    /// Adds a compiled schema.
    pub fn insert(&self, compiled: Arc<Compiled>) {
        self.lock().by_id.insert(compiled.id(), Ok(compiled));
    }

    /// Marks an id whose records cannot be decoded (the registry does not know it, it does not compile).
    pub fn reject(&self, id: u32, reason: String) {
        self.lock().by_id.insert(id, Err(reason));
    }

    /// Reads records of writer schema `id` with `reader` from now on.
    pub fn set_reader(&self, id: u32, reader: Arc<Compiled>) {
        self.lock().readers.insert(id, reader);
    }

    /// The reader schema for writer `id`, if an operator set one.
    pub fn reader(&self, id: u32) -> Option<Arc<Compiled>> {
        self.lock().readers.get(&id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The registry decoder of one table schema: a plan per (schema id, message) the table fits.
pub struct RegistryDecoder {
    cx: Arc<RegistryContext>,
    payload: StructType,
    fields: arrow_schema::Fields,
    evolve: bool,
    rows: Rows,
    /// JSON Schema tables decode with arrow-json.
    json: Option<arrow_json::reader::Decoder>,
    /// (schema id, encoded message indexes) → what records of it get; few entries, scanned linearly.
    plans: Vec<(u32, Box<[u8]>, Plan)>,
    last: usize,
}

enum Plan {
    Ready(Ready),
    Change(Change),
    Breaking { reason: String, message: String },
    Invalid(String),
}

/// How records of one writer schema are decoded into the table's columns.
enum Ready {
    Protobuf(protobuf::wire::MessagePlan),
    Avro(avro::wire::RootPlan),
    /// JSON text, checked against the table's columns and decoded by arrow-json.
    JsonSchema,
}

impl RegistryDecoder {
    pub(super) fn new(
        cx: Arc<RegistryContext>,
        table_schema: &Schema,
        payload_arrow: &ArrowSchema,
        evolve: bool,
        chunk_rows: usize,
    ) -> Result<Self> {
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
        let rows = Rows::new(&fields).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("the table has a column type the {} decoder cannot write", cx.kind.name()),
            )
            .with("type", &e.0)
        })?;
        let json = match cx.kind {
            RegistryKind::JsonSchema => {
                Some(super::json_decoder(Arc::new(ArrowSchema::new(fields.clone())), chunk_rows)?)
            }
            _ => None,
        };
        Ok(Self { cx, payload, fields, evolve, rows, json, plans: Vec::new(), last: 0 })
    }

    /// The payload columns of everything appended since the last call.
    pub(super) fn finish(&mut self, payload_arrow: &ArrowSchema) -> Result<Vec<ArrayRef>> {
        match self.json.as_mut() {
            Some(json) => super::json_finish(json, payload_arrow),
            None => self
                .rows
                .finish()
                .map_err(|e| Error::new(ErrorKind::Internal, "cannot build the decoded columns").source(e)),
        }
    }

    pub(super) fn append(&mut self, value: Option<&[u8]>) -> Result<Outcome> {
        let kind = self.cx.kind;
        let Some(bytes) = value else {
            return Ok(invalid("tombstone", format!("the value is null (a tombstone), not a {} record", kind.name())));
        };
        let (schema_id, indexes, body) = match kind {
            RegistryKind::Protobuf => match framing::split_protobuf(bytes) {
                Ok(frame) => (frame.schema_id, Some(frame.indexes), frame.payload),
                Err(e) => return Ok(invalid("bad_frame", e.to_string())),
            },
            RegistryKind::Avro | RegistryKind::JsonSchema => match framing::split(bytes) {
                Ok(frame) => (frame.schema_id, None, frame.body),
                Err(e) => return Ok(invalid("bad_frame", e.to_string())),
            },
        };
        let key = indexes.as_ref().map_or(&[][..], |i| i.encoded());
        let found = match self.plans.get(self.last) {
            Some((id, k, _)) if *id == schema_id && same_bytes(k, key) => Some(self.last),
            _ => self.plans.iter().position(|(id, k, _)| *id == schema_id && same_bytes(k, key)),
        };
        let index = match found {
            Some(i) => i,
            None => {
                let plan = match self.cx.schemas.get(schema_id) {
                    None => return Ok(Outcome::NeedsSchema(schema_id)),
                    Some(Err(reason)) => Plan::Invalid(reason),
                    Some(Ok(compiled)) => self.plan(&compiled, indexes),
                };
                self.plans.push((schema_id, key.into(), plan));
                self.plans.len() - 1
            }
        };
        self.last = index;
        Ok(match &self.plans[index].2 {
            Plan::Ready(Ready::Protobuf(plan)) => {
                match self.rows.append_with(|columns, row| plan.decode(body, columns, row, 0)) {
                    Ok(()) => Outcome::Appended,
                    Err(e) => invalid("protobuf_decode", format!("schema id {schema_id}: {e}")),
                }
            }
            Plan::Ready(Ready::Avro(plan)) => {
                match self.rows.append_with(|columns, row| plan.decode(body, columns, row)) {
                    Ok(()) => Outcome::Appended,
                    Err(e) => invalid("avro_decode", format!("schema id {schema_id}: {e}")),
                }
            }
            Plan::Ready(Ready::JsonSchema) => {
                if let Err(problem) = schema::check_json_declared(body, &self.payload) {
                    return Ok(super::conflict_outcome(problem));
                }
                let Some(json) = self.json.as_mut() else { unreachable!("built for JSON Schema tables") };
                // A checked record arrow-json refuses leaves its decoder mid-record: the table fails rather
                // than go on with it.
                return super::json_append(json, body)
                    .map(|()| Outcome::Appended)
                    .map_err(|e| e.with("schema_id", schema_id));
            }
            Plan::Change(change) => Outcome::NeedsChange { schema_id, change: change.clone() },
            Plan::Breaking { reason, message } => {
                Outcome::Breaking { schema_id, reason: reason.clone(), message: message.clone() }
            }
            Plan::Invalid(reason) => invalid("undecodable_schema", reason.clone()),
        })
    }

    /// The plan for records of `compiled` (and, for Protobuf, the message `indexes` select).
    fn plan(&self, compiled: &Compiled, indexes: Option<framing::MessageIndexes<'_>>) -> Plan {
        // An operator's retry may have pointed this id at the subject's latest schema.
        let reader = self.cx.schemas.reader(compiled.id());
        let target = match compiled {
            Compiled::Protobuf(writer) => {
                let mut message = match writer.select(indexes.iter().flat_map(|i| i.iter())) {
                    Ok(message) => message,
                    Err(reason) => return Plan::Invalid(reason),
                };
                if let Some(Compiled::Protobuf(reader)) = reader.as_deref()
                    && let Some(m) = reader.message(message.full_name())
                {
                    message = m;
                }
                let name = message.full_name().to_owned();
                let wanted = protobuf::message_type(&message, &self.cx.protobuf);
                Target { kind: "message", name, wanted, build: Build::Protobuf(message) }
            }
            Compiled::Avro(writer) => {
                let reader = match reader.as_deref() {
                    Some(Compiled::Avro(reader)) => Some(reader.clone()),
                    _ => None,
                };
                let wanted = reader.as_ref().unwrap_or(writer).record_type();
                Target { kind: "record", name: writer.name(), wanted, build: Build::Avro(writer.clone(), reader) }
            }
            Compiled::JsonSchema(writer) => {
                // JSON text is self-describing: a reader schema only changes what the table is asked for.
                let shape = match reader.as_deref() {
                    Some(Compiled::JsonSchema(reader)) => reader,
                    _ => writer,
                };
                Target {
                    kind: "schema",
                    name: writer.title.clone(),
                    wanted: shape.root.clone(),
                    build: Build::JsonSchema,
                }
            }
        };
        let Target { kind, name, wanted, build } = target;
        let breaking = |reason: String| Plan::Breaking { reason, message: name.clone() };
        // A JSON Schema without a `title` has no name: say which id it is.
        let name = if name.is_empty() { format!("id {}", compiled.id()) } else { name.clone() };
        let change = schema::evolve::diff(&self.payload, &wanted);
        if !change.breaking.is_empty() {
            return breaking(format!("{kind} {name}: {}", change.breaking.join("; ")));
        }
        if !change.is_empty() {
            if !self.evolve {
                return breaking(format!(
                    "{kind} {name} needs a table change ({}) and schema_evolution.mode = \"none\"",
                    change.describe()
                ));
            }
            return Plan::Change(change);
        }
        let ready = match build {
            Build::Protobuf(message) => protobuf::wire::MessagePlan::build(&message, &self.fields, &self.cx.protobuf)
                .map(Ready::Protobuf)
                .map_err(|e| e.0),
            Build::Avro(writer, reader) => {
                avro::wire::RootPlan::build(&writer, reader.as_ref(), &self.fields).map(Ready::Avro).map_err(|e| e.0)
            }
            Build::JsonSchema => Ok(Ready::JsonSchema),
        };
        match ready {
            Ok(ready) => Plan::Ready(ready),
            Err(e) => breaking(format!("{kind} {name}: {e}")),
        }
    }

    /// Forgets every plan (an operator's retry: check each schema against the table again).
    pub fn forget_plans(&mut self) {
        self.plans.clear();
        self.last = 0;
    }
}

/// What a writer schema asks of the table, and what builds its plan once the table fits.
struct Target {
    /// `message` (Protobuf), `record` (Avro), `schema` (JSON Schema), for messages.
    kind: &'static str,
    name: String,
    wanted: StructType,
    build: Build,
}

enum Build {
    Protobuf(prost_reflect::MessageDescriptor),
    /// The writer and, after an operator's retry, the reader.
    Avro(avro::Compiled, Option<avro::Compiled>),
    JsonSchema,
}

/// Equality of two short byte strings (message-index arrays are a few bytes, usually none) without a call
/// into `memcmp` per record.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

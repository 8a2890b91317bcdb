//! Messages: the JSON payloads of every kind, and [`Request`] / [`Response`] to turn them into frames and back.
//!
//! Field names and order are the wire format (`docs/rpc.md`): serde writes fields in declaration order,
//! omits absent optional fields and ignores unknown ones, so a newer peer may add fields without a version
//! bump. A JSON payload must be one object; serde's struct-as-array form is refused.

use std::fmt;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::frame::{Frame, FrameError, Kind};

/// The `code` of an Error frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The frame does not start with `K2IR` (connection closed).
    BadMagic,
    /// A version this server does not speak (connection closed).
    UnsupportedVersion,
    /// A codec not allowed for this kind (connection closed).
    UnsupportedCodec,
    /// A kind this version does not define (connection closed).
    UnknownKind,
    /// Length above `max_frame_bytes` (connection closed).
    FrameTooLarge,
    /// A frame not complete within `rpc.read_timeout` (connection closed).
    Timeout,
    /// The payload is not the message's JSON.
    InvalidRequest,
    /// No such table in this process.
    UnknownTable,
    /// No such scan (ended, expired).
    UnknownScan,
    /// `rpc.max_concurrent_scans` scans are open.
    TooManyScans,
    /// `max_lsn` / `since_lsn` outside what this process can cut exactly.
    LsnNotServed,
    /// The table is not ready (starting, recovering, failed).
    Unavailable,
    /// A bug or an I/O failure on the server.
    Internal,
}

impl ErrorCode {
    /// The code as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadMagic => "bad_magic",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::UnsupportedCodec => "unsupported_codec",
            ErrorCode::UnknownKind => "unknown_kind",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::Timeout => "timeout",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::UnknownTable => "unknown_table",
            ErrorCode::UnknownScan => "unknown_scan",
            ErrorCode::TooManyScans => "too_many_scans",
            ErrorCode::LsnNotServed => "lsn_not_served",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// Whether the server closes the connection after sending this code (the framing is lost).
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            ErrorCode::BadMagic
                | ErrorCode::UnsupportedVersion
                | ErrorCode::UnsupportedCodec
                | ErrorCode::UnknownKind
                | ErrorCode::FrameTooLarge
                | ErrorCode::Timeout
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a frame is not the message it claims to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The payload is not the kind's JSON object.
    #[error("parse the {kind} payload: {reason}")]
    Invalid {
        /// The frame's kind.
        kind: Kind,
        /// What the JSON parser found.
        reason: String,
    },
    /// A response kind where a request was expected (a server received it).
    #[error("expected a request, got a {0} frame")]
    NotRequest(Kind),
    /// A request kind where a response was expected (a client received it).
    #[error("expected a response, got a {0} frame")]
    NotResponse(Kind),
}

impl MessageError {
    /// The code a server answers with; the connection stays open, since the framing is intact.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::InvalidRequest
    }
}

/// TableSchema: the current Iceberg schema of one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchemaRequest {
    /// The table as `namespace.name`.
    pub table: String,
}

/// ScanBegin: cut the table's read-state at one LSN and send it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanBegin {
    /// The table as `namespace.name`.
    pub table: String,
    /// Cut at this LSN instead of the newest (refused with `lsn_not_served` if it cannot be cut exactly).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub max_lsn: Option<u64>,
    /// Only rows with an LSN above this one (an incremental read after an earlier scan's `lsn`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub since_lsn: Option<u64>,
    /// Only these columns in the hot rows, in this order; all when absent.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub columns: Option<Vec<String>>,
    /// Only the rows this filter keeps.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub filter: Option<Filter>,
}

/// A row filter on the Kafka metadata columns; [`crate::client::filter_batch`] applies it to Arrow rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// Only rows of these partitions.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub partitions: Option<Vec<PartitionRef>>,
    /// Only rows at or after these offsets of their partition; partitions not listed are not restricted.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub offsets_from: Option<Vec<OffsetFrom>>,
}

/// One Kafka partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PartitionRef {
    /// The Kafka topic.
    pub topic: String,
    /// The partition number within the topic.
    pub partition: i32,
}

/// The first offset a filter keeps in one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetFrom {
    /// The Kafka topic.
    pub topic: String,
    /// The partition number within the topic.
    pub partition: i32,
    /// Rows with a `_kafka_offset` below this one are dropped.
    pub offset: i64,
}

/// ScanEnd: close a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanEnd {
    /// The scan's id from its ReadState.
    pub scan_id: u64,
}

/// HealthReply: the server is up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReply {
    /// `ready`, or why the process is not ready (its `/readyz` reason).
    pub status: String,
    /// The k2i release of the server.
    pub version: String,
    /// The protocol version the server speaks.
    pub protocol: u16,
    /// The largest payload the server accepts, and the size it cuts HotData frames at.
    pub max_frame_bytes: u32,
    /// How many tables the process serves.
    pub tables: u32,
}

/// Tables: the tables this process serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tables {
    /// One entry per table.
    pub tables: Vec<TableInfo>,
}

/// One served table and how far it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableInfo {
    /// The table as `namespace.name`.
    pub name: String,
    /// The highest LSN of the table's rows, hot ones included.
    pub lsn: u64,
    /// The `k2i.lsn` of the current snapshot.
    pub committed_lsn: u64,
    /// The current snapshot; absent for a table without one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub snapshot_id: Option<i64>,
    /// Rows buffered and not committed yet.
    pub hot_rows: u64,
}

/// Schema: the current Iceberg schema of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaReply {
    /// The table as `namespace.name`.
    pub table: String,
    /// The Iceberg schema id.
    pub schema_id: i32,
    /// The schema in Iceberg's JSON form.
    pub schema: serde_json::Value,
}

/// ReadState: the first frame of a scan, the committed half of the read-state and what hot rows follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadState {
    /// The id to end the scan with.
    pub scan_id: u64,
    /// The table as `namespace.name`.
    pub table: String,
    /// The cut: every row up to this LSN is in `files` or in the hot streams, exactly once.
    pub lsn: u64,
    /// The `k2i.lsn` of the snapshot whose files are listed.
    pub committed_lsn: u64,
    /// That snapshot; absent for a table without one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub snapshot_id: Option<i64>,
    /// The Iceberg schema id of the snapshot.
    pub schema_id: i32,
    /// The next offset of each partition once every row up to `lsn` is read.
    pub watermarks: Vec<Watermark>,
    /// The committed data files to read.
    pub files: Vec<DataFileRef>,
    /// The row filter a reader applies to the files' rows (the hot rows have it applied already): the
    /// request's, with `since_lsn` turned into per-partition offsets.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub filter: Option<Filter>,
    /// Delete files (another engine's merge-on-read deletes) in the snapshot, not listed: a reader of the raw
    /// files would see deleted rows; read such a table through an Iceberg reader. Absent when 0.
    #[serde(skip_serializing_if = "is_zero", default)]
    pub delete_files: u64,
    /// The hot rows the HotStreams carry, all streams together.
    pub hot_rows: u64,
    /// How many HotStreams follow.
    pub hot_streams: u32,
    /// How long the scan stays open without a ScanEnd (the server's `rpc.scan_ttl_seconds`).
    pub expires_in_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The next offset of one partition at a cut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// The Kafka topic.
    pub topic: String,
    /// The partition number within the topic.
    pub partition: i32,
    /// The first offset not covered by the cut.
    pub next_offset: i64,
}

/// One committed data file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFileRef {
    /// The file's full location (`file://`, `s3://`, …).
    pub path: String,
    /// The file format, `parquet`.
    pub format: String,
    /// The file size in bytes.
    pub size: u64,
    /// The row count.
    pub rows: u64,
    /// The file's Iceberg partition values as a JSON object; absent for an unpartitioned table.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub partition: Option<serde_json::Value>,
    /// The snapshot that added the file.
    pub snapshot_id: i64,
    /// The `k2i.lsn` of that snapshot; absent for a file k2i did not write.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lsn: Option<u64>,
    /// The Kafka offsets the file holds.
    pub offset_ranges: Vec<OffsetRangeRef>,
}

/// Offsets `start..end` of one partition (`end` excluded: the next offset after the range).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRangeRef {
    /// The Kafka topic.
    pub topic: String,
    /// The partition number within the topic.
    pub partition: i32,
    /// The first offset.
    pub start: i64,
    /// One past the last offset.
    pub end: i64,
}

/// HotStream: one Arrow IPC stream of hot rows follows in HotData frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotStream {
    /// The Iceberg schema id the stream's rows were buffered under.
    pub schema_id: i32,
    /// The stream's row count.
    pub rows: u64,
}

/// ScanComplete: the last frame of a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanComplete {
    /// The scan's id.
    pub scan_id: u64,
    /// The hot rows sent, all streams together.
    pub rows: u64,
    /// The HotData payload bytes sent, all streams together.
    pub bytes: u64,
}

/// ScanEnded: the scan is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanEnded {
    /// The scan's id.
    pub scan_id: u64,
}

/// Error: a request failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// One of the [`ErrorCode`]s (a newer server may send others).
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
}

impl ErrorReply {
    /// An error with one of this version's codes.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorReply {
        ErrorReply { code: code.as_str().to_owned(), message: message.into() }
    }
}

/// The payload of Health and ListTables: an object, with any fields ignored.
#[derive(Serialize, Deserialize)]
struct Empty {}

/// A message a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Health, `{}`.
    Health,
    /// ListTables, `{}`.
    ListTables,
    /// TableSchema.
    TableSchema(TableSchemaRequest),
    /// ScanBegin.
    ScanBegin(ScanBegin),
    /// ScanEnd.
    ScanEnd(ScanEnd),
}

impl Request {
    /// The frame kind.
    pub fn kind(&self) -> Kind {
        match self {
            Request::Health => Kind::Health,
            Request::ListTables => Kind::ListTables,
            Request::TableSchema(_) => Kind::TableSchema,
            Request::ScanBegin(_) => Kind::ScanBegin,
            Request::ScanEnd(_) => Kind::ScanEnd,
        }
    }

    /// The request as a frame.
    pub fn to_frame(&self) -> Result<Frame, FrameError> {
        let kind = self.kind();
        match self {
            Request::Health | Request::ListTables => json_frame(kind, &Empty {}),
            Request::TableSchema(m) => json_frame(kind, m),
            Request::ScanBegin(m) => json_frame(kind, m),
            Request::ScanEnd(m) => json_frame(kind, m),
        }
    }

    /// The request a frame holds.
    pub fn from_frame(frame: &Frame) -> Result<Request, MessageError> {
        let kind = frame.kind();
        let payload = frame.payload();
        Ok(match kind {
            Kind::Health => parse::<Empty>(kind, payload).map(|_| Request::Health)?,
            Kind::ListTables => parse::<Empty>(kind, payload).map(|_| Request::ListTables)?,
            Kind::TableSchema => Request::TableSchema(parse(kind, payload)?),
            Kind::ScanBegin => Request::ScanBegin(parse(kind, payload)?),
            Kind::ScanEnd => Request::ScanEnd(parse(kind, payload)?),
            _ => return Err(MessageError::NotRequest(kind)),
        })
    }
}

/// A message a server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// HealthReply.
    HealthReply(HealthReply),
    /// Tables.
    Tables(Tables),
    /// Schema.
    Schema(SchemaReply),
    /// ReadState.
    ReadState(ReadState),
    /// HotStream.
    HotStream(HotStream),
    /// HotData: the next bytes of the current Arrow IPC stream.
    HotData(Bytes),
    /// ScanComplete.
    ScanComplete(ScanComplete),
    /// ScanEnded.
    ScanEnded(ScanEnded),
    /// Error.
    Error(ErrorReply),
}

impl Response {
    /// The frame kind.
    pub fn kind(&self) -> Kind {
        match self {
            Response::HealthReply(_) => Kind::HealthReply,
            Response::Tables(_) => Kind::Tables,
            Response::Schema(_) => Kind::Schema,
            Response::ReadState(_) => Kind::ReadState,
            Response::HotStream(_) => Kind::HotStream,
            Response::HotData(_) => Kind::HotData,
            Response::ScanComplete(_) => Kind::ScanComplete,
            Response::ScanEnded(_) => Kind::ScanEnded,
            Response::Error(_) => Kind::Error,
        }
    }

    /// The response as a frame.
    pub fn to_frame(&self) -> Result<Frame, FrameError> {
        let kind = self.kind();
        match self {
            Response::HealthReply(m) => json_frame(kind, m),
            Response::Tables(m) => json_frame(kind, m),
            Response::Schema(m) => json_frame(kind, m),
            Response::ReadState(m) => json_frame(kind, m),
            Response::HotStream(m) => json_frame(kind, m),
            Response::HotData(bytes) => Frame::new(kind, bytes.clone()),
            Response::ScanComplete(m) => json_frame(kind, m),
            Response::ScanEnded(m) => json_frame(kind, m),
            Response::Error(m) => json_frame(kind, m),
        }
    }

    /// The response a frame holds.
    pub fn from_frame(frame: &Frame) -> Result<Response, MessageError> {
        let kind = frame.kind();
        let payload = frame.payload();
        Ok(match kind {
            Kind::HealthReply => Response::HealthReply(parse(kind, payload)?),
            Kind::Tables => Response::Tables(parse(kind, payload)?),
            Kind::Schema => Response::Schema(parse(kind, payload)?),
            Kind::ReadState => Response::ReadState(parse(kind, payload)?),
            Kind::HotStream => Response::HotStream(parse(kind, payload)?),
            Kind::HotData => Response::HotData(payload.clone()),
            Kind::ScanComplete => Response::ScanComplete(parse(kind, payload)?),
            Kind::ScanEnded => Response::ScanEnded(parse(kind, payload)?),
            Kind::Error => Response::Error(parse(kind, payload)?),
            _ => return Err(MessageError::NotResponse(kind)),
        })
    }
}

fn json_frame<T: Serialize>(kind: Kind, message: &T) -> Result<Frame, FrameError> {
    // Deliberate: these types are plain structs of strings, numbers, options, vectors and JSON values, whose
    // serialization into a Vec has no failing case (no non-string map keys, no custom Serialize).
    let payload = serde_json::to_vec(message).expect("serializing a message to JSON cannot fail");
    Frame::new(kind, payload)
}

fn parse<T: DeserializeOwned>(kind: Kind, payload: &[u8]) -> Result<T, MessageError> {
    let invalid = |reason: String| MessageError::Invalid { kind, reason };
    if payload.trim_ascii_start().first() != Some(&b'{') {
        return Err(invalid("the payload is not a JSON object".to_owned()));
    }
    serde_json::from_slice(payload).map_err(|e| invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: Kind, json: &str) -> Frame {
        Frame::new(kind, json.as_bytes().to_vec()).expect("a small payload")
    }

    #[test]
    fn optional_fields_are_omitted_and_unknown_fields_ignored() {
        let scan = Request::ScanBegin(ScanBegin { table: "ns.t".into(), ..ScanBegin::default() });
        assert_eq!(scan.to_frame().ok().map(|f| f.payload().clone()), Some(Bytes::from(r#"{"table":"ns.t"}"#)));
        let newer = frame(Kind::ScanBegin, r#"{"table":"ns.t","priority":"high","since_lsn":3}"#);
        let expected = ScanBegin { table: "ns.t".into(), since_lsn: Some(3), ..ScanBegin::default() };
        assert_eq!(Request::from_frame(&newer), Ok(Request::ScanBegin(expected)));
        assert_eq!(Request::from_frame(&frame(Kind::Health, r#"{"client":"x"}"#)), Ok(Request::Health));
    }

    #[test]
    fn payloads_that_are_not_the_kinds_object_are_invalid() {
        for (kind, json) in [
            (Kind::Health, ""),
            (Kind::Health, "[]"),
            (Kind::ScanEnd, r#"[7]"#),
            (Kind::ScanEnd, r#"{"scan_id":-1}"#),
            (Kind::TableSchema, r#"{}"#),
            (Kind::ScanBegin, r#"{"table":"t"} x"#),
        ] {
            let err = Request::from_frame(&frame(kind, json)).expect_err(json);
            assert!(matches!(err, MessageError::Invalid { kind: k, .. } if k == kind), "{json}: {err}");
            assert_eq!(err.code(), ErrorCode::InvalidRequest);
        }
        let err = Response::from_frame(&frame(Kind::HotStream, r#"{"schema_id":0}"#)).expect_err("no rows");
        assert!(err.to_string().contains("missing field `rows`"), "{err}");
    }

    #[test]
    fn a_kind_travelling_the_wrong_way_is_refused() {
        let health = frame(Kind::Health, "{}");
        assert_eq!(Response::from_frame(&health), Err(MessageError::NotResponse(Kind::Health)));
        let ended = frame(Kind::ScanEnded, r#"{"scan_id":1}"#);
        assert_eq!(Request::from_frame(&ended), Err(MessageError::NotRequest(Kind::ScanEnded)));
    }

    #[test]
    fn error_codes_match_the_spec() {
        assert_eq!(ErrorReply::new(ErrorCode::LsnNotServed, "x").code, "lsn_not_served");
        assert!(ErrorCode::Timeout.closes_connection());
        assert!(!ErrorCode::UnknownScan.closes_connection());
    }
}

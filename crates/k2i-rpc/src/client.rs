//! An async client for the read-state socket, and [`filter_batch`] for the rows of committed files.
//!
//! One request at a time per connection: every call writes its request and reads the whole answer. After
//! any error other than [`ClientError::Server`] the connection's framing is unknown; connect again.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{Array, BooleanArray, RecordBatch};
use arrow_schema::{ArrowError, SchemaRef};
use arrow_select::filter::filter_record_batch;
use tokio::net::UnixStream;

use crate::frame::{FrameError, read_frame, write_frame};
use crate::hot::HotDecoder;
use crate::message::{
    Filter, HealthReply, MessageError, ReadState, Request, Response, ScanBegin, ScanEnd, SchemaReply, TableInfo,
    TableSchemaRequest,
};

/// The largest payload a client accepts unless told otherwise; at least the server's `max_frame_bytes`.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 64 * 1024 * 1024;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A received frame is malformed or the stream ended inside one.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The server answered with an Error frame.
    #[error("server refused the request with {code}: {message}")]
    Server {
        /// The error code (see [`crate::message::ErrorCode`]).
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// The server closed the connection before it answered (it restarted, or the connection was idle longer
    /// than its `rpc.scan_ttl_seconds`); connect again.
    #[error("the server closed the connection")]
    Closed,
    /// The server sent a frame out of order, or counts that do not add up.
    #[error("server broke the protocol: {0}")]
    Protocol(String),
    /// A received payload is not its message.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// A hot stream is not valid Arrow IPC.
    #[error("decode hot rows: {0}")]
    Arrow(#[from] ArrowError),
    /// Connecting or writing failed.
    #[error("talk to the server: {0}")]
    Io(#[from] std::io::Error),
}

/// A connection to a k2i read-state socket.
pub struct Client {
    stream: UnixStream,
    max_frame_bytes: u32,
}

/// A whole scan: the read-state and its hot rows. End it with [`Client::end_scan`] once its files are read.
#[derive(Debug, Clone)]
pub struct Scan {
    /// The committed files, the cut and the scan id.
    pub state: ReadState,
    /// The hot rows, one part per Arrow stream, in the order sent.
    pub hot: Vec<HotPart>,
}

/// The rows of one hot stream.
#[derive(Debug, Clone)]
pub struct HotPart {
    /// The Iceberg schema id the rows were buffered under.
    pub schema_id: i32,
    /// The row count, checked against the batches.
    pub rows: u64,
    /// The stream's Arrow schema (known even when it has no rows).
    pub schema: SchemaRef,
    /// The rows.
    pub batches: Vec<RecordBatch>,
}

impl Client {
    /// Connects to the socket at `path`.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).await?;
        Ok(Client { stream, max_frame_bytes: DEFAULT_MAX_FRAME_BYTES })
    }

    /// Accepts payloads of up to `max` bytes instead of [`DEFAULT_MAX_FRAME_BYTES`].
    pub fn with_max_frame_bytes(mut self, max: u32) -> Client {
        self.max_frame_bytes = max;
        self
    }

    /// Health: the server's status, versions and limits.
    pub async fn health(&mut self) -> Result<HealthReply, ClientError> {
        match self.call(&Request::Health).await? {
            Response::HealthReply(reply) => Ok(reply),
            other => Err(unexpected("HealthReply", &other)),
        }
    }

    /// ListTables: the tables the process serves.
    pub async fn tables(&mut self) -> Result<Vec<TableInfo>, ClientError> {
        match self.call(&Request::ListTables).await? {
            Response::Tables(reply) => Ok(reply.tables),
            other => Err(unexpected("Tables", &other)),
        }
    }

    /// TableSchema: the current Iceberg schema of `table` (`namespace.name`).
    pub async fn schema(&mut self, table: &str) -> Result<SchemaReply, ClientError> {
        match self.call(&Request::TableSchema(TableSchemaRequest { table: table.to_owned() })).await? {
            Response::Schema(reply) => Ok(reply),
            other => Err(unexpected("Schema", &other)),
        }
    }

    /// ScanBegin: the read-state and all its hot rows, with every announced count checked.
    pub async fn scan(&mut self, begin: ScanBegin) -> Result<Scan, ClientError> {
        let state = match self.call(&Request::ScanBegin(begin)).await? {
            Response::ReadState(state) => state,
            other => return Err(unexpected("ReadState", &other)),
        };
        let mut hot = Vec::new();
        let mut next = self.receive().await?;
        let complete = loop {
            let announced = match next {
                Response::HotStream(announced) => announced,
                Response::ScanComplete(complete) => break complete,
                other => return Err(unexpected("HotStream or ScanComplete", &other)),
            };
            let mut decoder = HotDecoder::new();
            next = loop {
                match self.receive().await? {
                    Response::HotData(payload) => decoder.push(payload)?,
                    other => break other,
                }
            };
            let (schema, batches) = decoder.finish()?;
            let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
            if rows != announced.rows {
                return Err(ClientError::Protocol(format!(
                    "hot stream {} announced {} rows and carried {rows}",
                    hot.len(),
                    announced.rows
                )));
            }
            hot.push(HotPart { schema_id: announced.schema_id, rows, schema, batches });
        };
        let rows: u64 = hot.iter().map(|p| p.rows).sum();
        let counts = [
            ("hot streams", u64::from(state.hot_streams), hot.len() as u64),
            ("hot rows (ReadState)", state.hot_rows, rows),
            ("hot rows (ScanComplete)", complete.rows, rows),
            ("scan id", state.scan_id, complete.scan_id),
        ];
        if let Some((what, announced, got)) = counts.into_iter().find(|(_, a, g)| a != g) {
            return Err(ClientError::Protocol(format!("scan announced {what} {announced} and sent {got}")));
        }
        Ok(Scan { state, hot })
    }

    /// ScanEnd: closes the scan (it no longer counts against the server's `rpc.max_concurrent_scans`).
    pub async fn end_scan(&mut self, scan_id: u64) -> Result<(), ClientError> {
        match self.call(&Request::ScanEnd(ScanEnd { scan_id })).await? {
            Response::ScanEnded(ended) if ended.scan_id == scan_id => Ok(()),
            Response::ScanEnded(ended) => {
                Err(ClientError::Protocol(format!("asked to end scan {scan_id}, scan {} ended", ended.scan_id)))
            }
            other => Err(unexpected("ScanEnded", &other)),
        }
    }

    async fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
        write_frame(&mut self.stream, &request.to_frame()?).await?;
        self.receive().await
    }

    /// The next response; an Error frame becomes [`ClientError::Server`].
    async fn receive(&mut self) -> Result<Response, ClientError> {
        let frame = read_frame(&mut self.stream, self.max_frame_bytes).await?.ok_or(ClientError::Closed)?;
        match Response::from_frame(&frame)? {
            Response::Error(e) => Err(ClientError::Server { code: e.code, message: e.message }),
            response => Ok(response),
        }
    }
}

fn unexpected(expected: &str, got: &Response) -> ClientError {
    ClientError::Protocol(format!("expected {expected}, got {}", got.kind()))
}

/// The rows of `batch` that `filter` keeps, judged by the metadata columns `_kafka_topic` (Utf8),
/// `_kafka_partition` (Int32) and `_kafka_offset` (Int64). A row with a null topic or partition is dropped, and
/// so is a null offset in a partition `offsets_from` bounds. Fails if a column the filter needs is missing or
/// of another type.
pub fn filter_batch(batch: &RecordBatch, filter: &Filter) -> Result<RecordBatch, ArrowError> {
    if filter.partitions.is_none() && filter.offsets_from.is_none() {
        return Ok(batch.clone());
    }
    filter_record_batch(batch, &filter_mask(batch, filter)?)
}

/// Which rows of `batch` `filter` keeps (see [`filter_batch`]).
pub fn filter_mask(batch: &RecordBatch, filter: &Filter) -> Result<BooleanArray, ArrowError> {
    let column = |name: &str| batch.column_by_name(name).ok_or_else(|| missing(name));
    let topics = column("_kafka_topic")?.as_string_opt::<i32>().ok_or_else(|| wrong_type("_kafka_topic", "Utf8"))?;
    let partitions = column("_kafka_partition")?
        .as_primitive_opt::<Int32Type>()
        .ok_or_else(|| wrong_type("_kafka_partition", "Int32"))?;
    let keep: Option<HashSet<(&str, i32)>> =
        filter.partitions.as_ref().map(|ps| ps.iter().map(|p| (p.topic.as_str(), p.partition)).collect());
    let from: HashMap<(&str, i32), i64> =
        filter.offsets_from.iter().flatten().map(|o| ((o.topic.as_str(), o.partition), o.offset)).collect();
    let offsets = if from.is_empty() {
        None
    } else {
        let offsets = column("_kafka_offset")?.as_primitive_opt::<Int64Type>();
        Some(offsets.ok_or_else(|| wrong_type("_kafka_offset", "Int64"))?)
    };
    Ok((topics.iter().zip(partitions.iter()).enumerate())
        .map(|(row, key)| {
            let (Some(topic), Some(partition)) = key else { return Some(false) };
            let listed = keep.as_ref().is_none_or(|k| k.contains(&(topic, partition)));
            let after = match (from.get(&(topic, partition)), offsets) {
                (Some(first), Some(offsets)) => offsets.is_valid(row) && offsets.value(row) >= *first,
                _ => true,
            };
            Some(listed && after)
        })
        .collect())
}

fn missing(name: &str) -> ArrowError {
    ArrowError::SchemaError(format!("filter a batch without the metadata column {name}"))
}

fn wrong_type(name: &str, expected: &str) -> ArrowError {
    ArrowError::SchemaError(format!("filter a batch whose {name} is not {expected}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Int32Array, Int64Array, StringArray};
    use bytes::Bytes;
    use tokio::net::UnixListener;

    use super::*;
    use crate::frame::Frame;
    use crate::hot::HotEncoder;
    use crate::hot::tests::batch;
    use crate::message::{
        DataFileRef, ErrorCode, ErrorReply, HotStream, OffsetFrom, OffsetRangeRef, PartitionRef, ScanComplete,
        ScanEnded, Watermark,
    };

    /// A fake server on a fresh socket: answers each request it reads with the next script entry (a
    /// request kind it expects and the frames to send), then closes.
    async fn serve(script: Vec<(crate::frame::Kind, Vec<Frame>)>) -> (Client, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("rpc.sock");
        let listener = UnixListener::bind(&path).expect("bind the socket");
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("a client connects");
            for (kind, frames) in script {
                let request = read_frame(&mut stream, 1 << 20).await.expect("a frame").expect("a request");
                assert_eq!(request.kind(), kind);
                for frame in frames {
                    write_frame(&mut stream, &frame).await.expect("the client reads");
                }
            }
        });
        (Client::connect(&path).await.expect("connect"), dir)
    }

    fn frame(response: Response) -> Frame {
        response.to_frame().expect("a small response")
    }

    fn read_state(hot_rows: u64, hot_streams: u32) -> ReadState {
        ReadState {
            scan_id: 7,
            table: "ns.events".into(),
            lsn: 1000 + hot_rows,
            committed_lsn: 1000,
            snapshot_id: Some(42),
            schema_id: 1,
            watermarks: vec![Watermark { topic: "events".into(), partition: 0, next_offset: 1000 + hot_rows as i64 }],
            files: vec![DataFileRef {
                path: "file:///w/ns/events/data/x.parquet".into(),
                format: "parquet".into(),
                size: 1024,
                rows: 1000,
                partition: None,
                snapshot_id: 42,
                lsn: Some(1000),
                offset_ranges: vec![OffsetRangeRef { topic: "events".into(), partition: 0, start: 0, end: 1000 }],
            }],
            filter: None,
            delete_files: 0,
            hot_rows,
            hot_streams,
            expires_in_ms: 300_000,
        }
    }

    /// HotStream then its HotData frames, cut at 64 bytes.
    fn hot_stream(schema_id: i32, announced_rows: u64, batches: &[RecordBatch]) -> Vec<Frame> {
        let mut encoder = HotEncoder::new(&batches[0].schema(), 64).expect("a valid limit");
        let mut frames = vec![frame(Response::HotStream(HotStream { schema_id, rows: announced_rows }))];
        for b in batches {
            frames.extend(encoder.push(b).expect("the batch matches the schema"));
        }
        frames.extend(encoder.finish().expect("an open stream finishes"));
        frames
    }

    fn complete(rows: u64) -> Frame {
        frame(Response::ScanComplete(ScanComplete { scan_id: 7, rows, bytes: 0 }))
    }

    #[tokio::test]
    async fn a_scan_with_two_hot_streams_arrives_whole() {
        use crate::frame::Kind;
        let old = [batch(0, 3), batch(3, 4)];
        let evolved = {
            let b = batch(7, 2);
            let extra: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None]));
            let mut fields = b.schema().fields().to_vec();
            fields.push(Arc::new(arrow_schema::Field::new("added", arrow_schema::DataType::Int64, true)));
            let mut columns = b.columns().to_vec();
            columns.push(extra);
            RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), columns).expect("a valid batch")
        };
        let mut scan_frames = vec![frame(Response::ReadState(read_state(9, 2)))];
        scan_frames.extend(hot_stream(0, 7, &old));
        scan_frames.extend(hot_stream(1, 2, std::slice::from_ref(&evolved)));
        scan_frames.push(complete(9));
        let ended = frame(Response::ScanEnded(ScanEnded { scan_id: 7 }));
        let (mut client, _dir) = serve(vec![(Kind::ScanBegin, scan_frames), (Kind::ScanEnd, vec![ended])]).await;

        let scan = client.scan(ScanBegin { table: "ns.events".into(), ..ScanBegin::default() }).await.expect("a scan");
        assert_eq!(scan.state, read_state(9, 2));
        let parts: Vec<_> = scan.hot.iter().map(|p| (p.schema_id, p.rows, p.batches.clone())).collect();
        assert_eq!(parts, vec![(0, 7, old.to_vec()), (1, 2, vec![evolved.clone()])]);
        assert_eq!(scan.hot[1].schema, evolved.schema());
        client.end_scan(7).await.expect("the scan ends");
    }

    #[tokio::test]
    async fn an_error_frame_is_a_server_error() {
        use crate::frame::Kind;
        let refusal = frame(Response::Error(ErrorReply::new(ErrorCode::UnknownTable, "no table ns.nope")));
        let health = frame(Response::HealthReply(HealthReply {
            status: "ok".into(),
            version: "0.1.0".into(),
            protocol: 1,
            max_frame_bytes: 1 << 20,
            tables: 1,
        }));
        let (mut client, _dir) = serve(vec![(Kind::ScanBegin, vec![refusal]), (Kind::Health, vec![health])]).await;
        let err =
            client.scan(ScanBegin { table: "ns.nope".into(), ..ScanBegin::default() }).await.expect_err("refused");
        assert!(matches!(&err, ClientError::Server { code, .. } if code == "unknown_table"), "{err}");
        // The connection stays usable after a server error.
        assert_eq!(client.health().await.expect("health").tables, 1);
    }

    #[tokio::test]
    async fn counts_that_do_not_add_up_are_protocol_errors() {
        use crate::frame::Kind;
        let rows = [batch(0, 2)];
        let mut stream_lies = vec![frame(Response::ReadState(read_state(3, 1)))];
        stream_lies.extend(hot_stream(0, 3, &rows));
        stream_lies.push(complete(3));
        let mut complete_lies = vec![frame(Response::ReadState(read_state(2, 1)))];
        complete_lies.extend(hot_stream(0, 2, &rows));
        complete_lies.push(complete(5));
        let mut missing_stream = vec![frame(Response::ReadState(read_state(2, 2)))];
        missing_stream.extend(hot_stream(0, 2, &rows));
        missing_stream.push(complete(2));
        for frames in [stream_lies, complete_lies, missing_stream] {
            let (mut client, _dir) = serve(vec![(Kind::ScanBegin, frames)]).await;
            let err = client.scan(ScanBegin::default()).await.expect_err("counts differ");
            assert!(matches!(&err, ClientError::Protocol(m) if m.contains("announced")), "{err}");
        }
        let (mut client, _dir) = serve(vec![(Kind::Health, vec![complete(0)])]).await;
        assert!(matches!(client.health().await, Err(ClientError::Protocol(_))));
        let (mut client, _dir) = serve(vec![(Kind::ListTables, vec![])]).await;
        assert!(matches!(client.tables().await, Err(ClientError::Closed)), "a closed connection");
        let torn = Frame::new(Kind::HotStream, Bytes::from_static(b"{\"schema_id\":0}")).expect("small");
        let (mut client, _dir) =
            serve(vec![(Kind::ScanBegin, vec![frame(Response::ReadState(read_state(1, 1))), torn])]).await;
        assert!(matches!(client.scan(ScanBegin::default()).await, Err(ClientError::Message(_))));
    }

    fn metadata_batch() -> RecordBatch {
        let topics = ["a", "a", "a", "b", "b"].map(Some).to_vec();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(topics.into_iter().chain([None]).collect::<Vec<_>>())),
            Arc::new(Int32Array::from(vec![0, 0, 1, 0, 0, 0])),
            Arc::new(Int64Array::from(vec![Some(5), Some(6), Some(1), Some(9), None, Some(3)])),
        ];
        let names = ["_kafka_topic", "_kafka_partition", "_kafka_offset"];
        RecordBatch::try_from_iter(names.into_iter().zip(columns)).expect("a valid batch")
    }

    fn offsets(batch: &RecordBatch) -> Vec<Option<i64>> {
        batch.column(2).as_primitive::<Int64Type>().iter().collect()
    }

    #[test]
    fn filter_batch_keeps_listed_partitions_from_their_offsets() {
        let b = metadata_batch();
        assert_eq!(filter_batch(&b, &Filter::default()).expect("no filter"), b);
        let only_a0 =
            Filter { partitions: Some(vec![PartitionRef { topic: "a".into(), partition: 0 }]), offsets_from: None };
        assert_eq!(offsets(&filter_batch(&b, &only_a0).expect("a filter")), vec![Some(5), Some(6)]);
        let from = |topic: &str, offset| OffsetFrom { topic: topic.into(), partition: 0, offset };
        let from_a6_b9 = Filter { partitions: None, offsets_from: Some(vec![from("a", 6), from("b", 9)]) };
        // a/1 is not restricted; b/0 with a null offset and the row with a null topic are dropped.
        assert_eq!(offsets(&filter_batch(&b, &from_a6_b9).expect("a filter")), vec![Some(6), Some(1), Some(9)]);
        let none = Filter { partitions: Some(vec![]), offsets_from: None };
        assert_eq!(filter_batch(&b, &none).expect("a filter").num_rows(), 0);
        let hot = batch(0, 2);
        assert!(filter_batch(&hot, &only_a0).is_err(), "no metadata columns");
    }
}

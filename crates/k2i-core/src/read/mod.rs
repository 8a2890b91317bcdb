//! The read-state server: each table's committed files and hot rows at one LSN, over a Unix socket
//! (`rpc.socket_path`, mode 0600). The protocol is `k2i-rpc`'s (docs/rpc.md).
//!
//! The server never holds up ingestion: a scan takes the table's hot view under its lock only long enough
//! to clone the chunks' `Arc`s, then works on its copy; every connection writes at its reader's pace
//! (backpressure is the socket's), bounded by the scan's TTL, after which the connection is closed and what
//! it pinned is freed. Scans open at once are capped by `rpc.max_concurrent_scans`.

pub mod reader;
pub mod scan;

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k2i_rpc::frame::{FrameError, HEADER_LEN, Header, write_frame};
use k2i_rpc::hot::HotEncoder;
use k2i_rpc::message::{
    ErrorCode, ErrorReply, HealthReply, HotStream, ReadState, Request, Response, ScanBegin, ScanComplete, ScanEnded,
    SchemaReply, TableInfo, Tables,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, BufReader, BufWriter};
use tokio::net::{UnixListener, UnixStream};

use crate::buffer::hot::{Availability, HotTable};
use crate::config::RpcConfig;
use crate::error::{Error, ErrorKind, Result};

use crate::ops::Ops;

/// The running server; dropping it stops accepting and removes the socket file (if it is still the one it
/// created).
pub struct ReadServer {
    path: PathBuf,
    /// The socket file's (device, inode).
    identity: (u64, u64),
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ReadServer {
    fn drop(&mut self) {
        self.task.abort();
        if identity(&self.path).is_some_and(|id| id == self.identity) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

struct Shared {
    tables: Vec<(Arc<HotTable>, scan::TableCache)>,
    config: RpcConfig,
    ops: Arc<Ops>,
    /// Open scans: id → when it expires.
    scans: Mutex<HashMap<u64, Instant>>,
    next_scan: AtomicU64,
}

/// Listens on `config.socket_path` for readers of `tables`.
pub async fn start(config: &RpcConfig, tables: Vec<Arc<HotTable>>, ops: Arc<Ops>) -> Result<ReadServer> {
    let path = config.socket_path.clone();
    let listener = bind(&path)?;
    let identity = identity(&path).unwrap_or_default();
    let shared = Arc::new(Shared {
        tables: tables.into_iter().map(|t| (t, scan::TableCache::default())).collect(),
        config: config.clone(),
        ops,
        scans: Mutex::new(HashMap::new()),
        next_scan: AtomicU64::new(1),
    });
    tracing::info!(socket = %path.display(), "serving the read-state RPC");
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve(shared.clone(), stream));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a read-state connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(ReadServer { path, identity, task })
}

/// Binds the socket owner-only, replacing a stale socket file (one nobody listens on) but nothing else.
fn bind(path: &Path) -> Result<UnixListener> {
    let io = |what: &str, e: std::io::Error| {
        Error::new(ErrorKind::Io, what.to_owned()).with("key", "rpc.socket_path").with("path", path.display()).source(e)
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(Error::new(ErrorKind::Config, "another process serves the read-state RPC on this socket")
                    .with("key", "rpc.socket_path")
                    .with("path", path.display()));
            }
            std::fs::remove_file(path).map_err(|e| io("cannot remove the stale socket file", e))?;
            tracing::info!(socket = %path.display(), "replaced a stale socket file");
        }
        Ok(_) => {
            return Err(Error::new(ErrorKind::Config, "the path exists and is not a socket; k2i does not replace it")
                .with("key", "rpc.socket_path")
                .with("path", path.display()));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("cannot inspect the socket path", e)),
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| io("cannot create the socket's directory", e))?;
    // Bound inside a directory only the owner can enter, made owner-only there, then moved into place: nobody
    // else can connect at any moment, whatever the umask.
    let private = tempfile::Builder::new()
        .prefix(".k2i-socket-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(parent)
        .map_err(|e| io("cannot create a private directory next to the socket", e))?;
    let staged = private.path().join("k2i.sock");
    let listener = UnixListener::bind(&staged).map_err(|e| io("cannot listen on the socket", e))?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io("cannot make the socket owner-only", e))?;
    std::fs::rename(&staged, path).map_err(|e| io("cannot move the socket into place", e))?;
    Ok(listener)
}

/// Why a connection ends.
enum End {
    /// The client closed it (or it broke).
    Closed,
    /// The framing is lost or a frame was too slow (an Error frame was sent), or a scan outlived its TTL.
    Fatal,
}

/// Serves one connection until it closes; its scans end with it.
async fn serve(shared: Arc<Shared>, stream: UnixStream) {
    let (read, write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut writer = BufWriter::new(write);
    let mut mine: Vec<u64> = Vec::new();
    loop {
        let frame = match next_frame(&mut reader, &shared.config).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err((code, message)) => {
                let _ = reply_error(&shared, &mut writer, Refusal(code, message)).await;
                break;
            }
        };
        let outcome = match Request::from_frame(&frame) {
            Ok(request) => handle(&shared, request, &mut writer, &mut mine).await,
            Err(e) => reply_error(&shared, &mut writer, Refusal(e.code(), e.to_string())).await,
        };
        if outcome.is_err() {
            break;
        }
    }
    let mut scans = lock(&shared.scans);
    for id in mine {
        scans.remove(&id);
    }
    shared.ops.metrics.rpc_scans_open.set(scans.len() as i64);
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The next request frame: idle connections wait up to the scan TTL; once a frame began it must be complete
/// within `read_timeout_ms`.
async fn next_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    config: &RpcConfig,
) -> std::result::Result<Option<k2i_rpc::frame::Frame>, (ErrorCode, String)> {
    let idle = Duration::from_secs(config.scan_ttl_seconds.get().into());
    let mut head = [0u8; HEADER_LEN];
    match tokio::time::timeout(idle, reader.read(&mut head[..1])).await {
        Err(_) | Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
        Ok(Ok(_)) => {}
    }
    let rest = async {
        reader.read_exact(&mut head[1..]).await.map_err(FrameError::Io)?;
        let header = Header::parse(&head, config.max_frame_bytes.get())?;
        // The buffer grows as bytes arrive: a header announcing a large frame costs nothing by itself.
        let mut payload = Vec::with_capacity((header.length as usize).min(64 * 1024));
        reader.take(header.length.into()).read_to_end(&mut payload).await.map_err(FrameError::Io)?;
        if payload.len() < header.length as usize {
            return Err(FrameError::Truncated { expected: header.length as usize, got: payload.len() });
        }
        k2i_rpc::frame::Frame::new(header.kind, payload)
    };
    let frame = match config.read_timeout_ms {
        0 => rest.await,
        ms => match tokio::time::timeout(Duration::from_millis(ms), rest).await {
            Ok(frame) => frame,
            Err(_) => return Err((ErrorCode::Timeout, format!("a frame was not complete within {ms} ms"))),
        },
    };
    match frame {
        Ok(frame) => Ok(Some(frame)),
        // The client went away inside a frame: nobody to answer.
        Err(FrameError::Io(_) | FrameError::Truncated { .. }) => Ok(None),
        Err(e) => Err((frame_code(&e), e.to_string())),
    }
}

fn frame_code(e: &FrameError) -> ErrorCode {
    match e {
        FrameError::BadMagic(_) => ErrorCode::BadMagic,
        FrameError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
        FrameError::UnsupportedCodec { .. } => ErrorCode::UnsupportedCodec,
        FrameError::UnknownKind(_) => ErrorCode::UnknownKind,
        FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
        FrameError::Truncated { .. } | FrameError::Io(_) => ErrorCode::Internal,
    }
}

type Writer = BufWriter<tokio::net::unix::OwnedWriteHalf>;

async fn send<W: AsyncWrite + Unpin>(
    shared: &Shared,
    writer: &mut W,
    response: &Response,
) -> std::result::Result<(), End> {
    let frame = response.to_frame().map_err(|_| End::Fatal)?;
    shared.ops.metrics.rpc_bytes_served.inc_by((HEADER_LEN + frame.payload().len()) as u64);
    write_frame(writer, &frame).await.map_err(|_| End::Closed)
}

/// Answers with an Error frame; ends the connection when the code says the framing is lost.
async fn reply_error(shared: &Shared, writer: &mut Writer, reply: Refusal) -> std::result::Result<(), End> {
    let Refusal(code, message) = reply;
    shared.ops.metrics.rpc_errors.with_label_values(&[code.as_str()]).inc();
    send(shared, writer, &Response::Error(ErrorReply::new(code, message))).await?;
    if code.closes_connection() { Err(End::Fatal) } else { Ok(()) }
}

/// An Error frame to send: its code and message.
pub struct Refusal(pub ErrorCode, pub String);

async fn handle(
    shared: &Shared,
    request: Request,
    writer: &mut Writer,
    mine: &mut Vec<u64>,
) -> std::result::Result<(), End> {
    let response = match request {
        Request::Health => Response::HealthReply(HealthReply {
            status: match shared.ops.readiness() {
                Ok(()) => "ready".to_owned(),
                Err(reason) => reason,
            },
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: k2i_rpc::PROTOCOL_VERSION,
            max_frame_bytes: shared.config.max_frame_bytes.get(),
            tables: shared.tables.len() as u32,
        }),
        Request::ListTables => Response::Tables(Tables {
            tables: shared
                .tables
                .iter()
                .map(|(hot, _)| {
                    let (lsn, committed_lsn, table, hot_rows) = hot.summary();
                    TableInfo {
                        name: hot.name().to_owned(),
                        lsn,
                        committed_lsn,
                        snapshot_id: table.and_then(|t| t.metadata().current_snapshot_id()),
                        hot_rows,
                    }
                })
                .collect(),
        }),
        Request::TableSchema(request) => match table(shared, &request.table).and_then(|(hot, _)| {
            hot.summary().2.ok_or_else(|| Refusal(ErrorCode::Unavailable, "the table is not open yet".to_owned()))
        }) {
            Ok(table) => {
                let schema = table.metadata().current_schema();
                Response::Schema(SchemaReply {
                    table: request.table,
                    schema_id: schema.schema_id(),
                    schema: serde_json::to_value(schema.as_ref()).unwrap_or_default(),
                })
            }
            Err(refusal) => return reply_error(shared, writer, refusal).await,
        },
        Request::ScanBegin(request) => return scan(shared, request, writer, mine).await,
        Request::ScanEnd(end) => {
            let known = {
                let mut scans = lock(&shared.scans);
                let known = scans.remove(&end.scan_id).is_some();
                shared.ops.metrics.rpc_scans_open.set(scans.len() as i64);
                known
            };
            mine.retain(|id| *id != end.scan_id);
            if !known {
                let reply = Refusal(ErrorCode::UnknownScan, format!("scan {} is not open", end.scan_id));
                return reply_error(shared, writer, reply).await;
            }
            Response::ScanEnded(ScanEnded { scan_id: end.scan_id })
        }
    };
    send(shared, writer, &response).await
}

fn table<'a>(shared: &'a Shared, name: &str) -> std::result::Result<&'a (Arc<HotTable>, scan::TableCache), Refusal> {
    shared.tables.iter().find(|(hot, _)| hot.name() == name).ok_or_else(|| {
        let names: Vec<&str> = shared.tables.iter().map(|(hot, _)| hot.name()).collect();
        Refusal(ErrorCode::UnknownTable, format!("no table `{name}` in this process (it serves: {})", names.join(", ")))
    })
}

/// The table's cut at `max_lsn`: a bound below its committed part is `lsn_not_served`, a table not open yet
/// `unavailable`.
fn view(hot: &HotTable, max_lsn: Option<u64>) -> std::result::Result<crate::buffer::hot::View, Refusal> {
    hot.view(max_lsn).map_err(|e| match e.kind() {
        ErrorKind::Transient => Refusal(ErrorCode::Unavailable, e.to_string()),
        _ => Refusal(ErrorCode::LsnNotServed, e.to_string()),
    })
}

async fn scan(
    shared: &Shared,
    request: ScanBegin,
    writer: &mut Writer,
    mine: &mut Vec<u64>,
) -> std::result::Result<(), End> {
    let ttl = Duration::from_secs(shared.config.scan_ttl_seconds.get().into());
    let opened = {
        let mut scans = lock(&shared.scans);
        let now = Instant::now();
        scans.retain(|_, expires| *expires > now);
        let room = scans.len() < shared.config.max_concurrent_scans.get() as usize;
        let id = room.then(|| {
            let id = shared.next_scan.fetch_add(1, Ordering::Relaxed);
            scans.insert(id, now + ttl);
            id
        });
        shared.ops.metrics.rpc_scans_open.set(scans.len() as i64);
        id
    };
    let Some(id) = opened else {
        let reply = Refusal(
            ErrorCode::TooManyScans,
            format!("{} scans are open (rpc.max_concurrent_scans)", shared.config.max_concurrent_scans),
        );
        return reply_error(shared, writer, reply).await;
    };
    mine.push(id);
    let built = async {
        let (hot, cache) = table(shared, &request.table)?;
        let view = view(hot, request.max_lsn)?;
        if let Availability::Failed(reason) = &view.availability {
            tracing::debug!(table = %hot.name(), reason, "serving the committed part of a stopped table");
        }
        scan::read_state(view, &request, cache).await
    }
    .await;
    let state = match built {
        Ok(state) => state,
        Err(refusal) => {
            lock(&shared.scans).remove(&id);
            mine.retain(|m| *m != id);
            return reply_error(shared, writer, refusal).await;
        }
    };
    let metrics = &shared.ops.metrics;
    let hot_rows = scan::rows(&state.streams);
    metrics.rpc_scans.inc();
    metrics.rpc_hot_rows.set(hot_rows as i64);
    metrics.rpc_lsn_lag.set(state.view.lsn.saturating_sub(state.view.committed_lsn) as i64);
    let files_listed = state.files.len();
    let header = ReadState {
        scan_id: id,
        table: request.table.clone(),
        lsn: state.view.lsn,
        committed_lsn: state.view.committed_lsn,
        snapshot_id: state.view.table.metadata().current_snapshot_id(),
        schema_id: state.view.table.metadata().current_schema_id(),
        watermarks: scan::watermark_list(&state.watermarks),
        files: state.files,
        filter: state.filter,
        delete_files: state.delete_files,
        hot_rows,
        hot_streams: state.streams.len() as u32,
        expires_in_ms: ttl.as_millis() as u64,
    };
    let max_frame = shared.config.max_frame_bytes.get();
    let first = Response::ReadState(header).to_frame().map_err(|_| End::Fatal)?;
    if first.payload().len() > max_frame as usize {
        lock(&shared.scans).remove(&id);
        mine.retain(|m| *m != id);
        let message = format!(
            "the read-state lists {} files, {} bytes, more than rpc.max_frame_bytes ({max_frame}); compact the table \
             or raise rpc.max_frame_bytes",
            files_listed,
            first.payload().len()
        );
        return reply_error(shared, writer, Refusal(ErrorCode::Internal, message)).await;
    }
    // The whole answer within the TTL: a reader too slow for that loses the connection, not k2i its memory.
    let streamed = tokio::time::timeout(ttl, async {
        shared.ops.metrics.rpc_bytes_served.inc_by((HEADER_LEN + first.payload().len()) as u64);
        write_frame(writer, &first).await.map_err(|_| End::Closed)?;
        let mut bytes = 0u64;
        for (schema_id, schema, batches) in &state.streams {
            let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
            send(shared, writer, &Response::HotStream(HotStream { schema_id: *schema_id, rows })).await?;
            let mut encoder = HotEncoder::new(schema, max_frame).map_err(|_| End::Fatal)?;
            for batch in batches {
                for frame in encoder.push(batch).map_err(|_| End::Fatal)? {
                    bytes += frame.payload().len() as u64;
                    metrics.rpc_bytes_served.inc_by((HEADER_LEN + frame.payload().len()) as u64);
                    write_frame(writer, &frame).await.map_err(|_| End::Closed)?;
                }
            }
            for frame in encoder.finish().map_err(|_| End::Fatal)? {
                bytes += frame.payload().len() as u64;
                metrics.rpc_bytes_served.inc_by((HEADER_LEN + frame.payload().len()) as u64);
                write_frame(writer, &frame).await.map_err(|_| End::Closed)?;
            }
        }
        metrics.rpc_hot_rows_served.inc_by(hot_rows);
        send(shared, writer, &Response::ScanComplete(ScanComplete { scan_id: id, rows: hot_rows, bytes })).await
    })
    .await;
    match streamed {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(scan_id = id, "a reader did not take its scan within rpc.scan_ttl_seconds; closed it");
            Err(End::Fatal)
        }
    }
}

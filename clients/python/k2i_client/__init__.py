"""A small reference client for k2i's read-state RPC (``docs/rpc.md``, protocol version 1).

A running ``k2i ingest`` serves each table's read-state on a Unix socket: the committed data files of the
table's current snapshot plus the rows buffered but not committed yet ("hot rows"), cut at one LSN. This
module speaks the wire protocol (frames, messages, typed errors) with the standard library and reads the
data with pyarrow, its only dependency::

    from k2i_client import Client, read_all

    with Client("/run/k2i/rpc.sock") as client:
        with client.scan("ns.events") as scan:
            table = read_all(scan)   # committed files + hot rows: every row exactly once

The frame layer (:func:`encode_frame`, :func:`decode_frame`, :func:`read_frame`) works without pyarrow;
pyarrow is imported when hot rows or files are read.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import urllib.parse
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa
    import pyarrow.fs

__all__ = [
    "MAGIC",
    "PROTOCOL_VERSION",
    "HEADER_SIZE",
    "DEFAULT_MAX_FRAME_BYTES",
    "Codec",
    "Kind",
    "Frame",
    "K2iError",
    "FrameError",
    "ServerError",
    "ProtocolError",
    "ConnectionClosed",
    "json_bytes",
    "encode_frame",
    "encode_json",
    "decode_header",
    "decode_frame",
    "read_frame",
    "Client",
    "Scan",
    "apply_filter",
    "read_committed",
    "read_all",
    "unify_tables",
]

MAGIC = b"K2IR"
PROTOCOL_VERSION = 1
HEADER_SIZE = 12
DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024
_HEADER = struct.Struct(">4sHBBI")  # magic, version u16, codec u8, kind u8, length u32 (big-endian)
_U32_MAX = 0xFFFFFFFF

KAFKA_TOPIC = "_kafka_topic"
KAFKA_PARTITION = "_kafka_partition"
KAFKA_OFFSET = "_kafka_offset"


class Codec(IntEnum):
    """How a frame's payload is encoded."""

    JSON = 0
    ARROW = 1


class Kind(IntEnum):
    """The message kinds of protocol version 1."""

    HEALTH = 0x01
    LIST_TABLES = 0x02
    TABLE_SCHEMA = 0x03
    SCAN_BEGIN = 0x04
    SCAN_END = 0x05
    HEALTH_REPLY = 0x81
    TABLES = 0x82
    SCHEMA = 0x83
    READ_STATE = 0x84
    HOT_STREAM = 0x85
    HOT_DATA = 0x86
    SCAN_COMPLETE = 0x87
    SCAN_ENDED = 0x88
    ERROR = 0xFF


#: The only codec each kind allows (HotData is Arrow IPC bytes, everything else one JSON object).
KIND_CODEC: dict[int, int] = {k: (Codec.ARROW if k == Kind.HOT_DATA else Codec.JSON) for k in Kind}
REQUEST_KINDS = frozenset(k for k in Kind if k < 0x80)
RESPONSE_KINDS = frozenset(k for k in Kind if k >= 0x80)


# ----------------------------------------------------------------------------------------------- errors


class K2iError(Exception):
    """Base class of every error this client raises about the protocol."""


class FrameError(K2iError):
    """A frame that cannot be parsed; ``code`` is the spec's code (``bad_magic``, ``unsupported_version``,
    ``unsupported_codec``, ``unknown_kind``, ``frame_too_large`` or ``truncated``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ServerError(K2iError):
    """An Error frame from the server: its ``code`` and ``message``."""

    #: The codes after which the server closes the connection.
    CLOSING_CODES = frozenset(
        {"bad_magic", "unsupported_version", "unsupported_codec", "unknown_kind", "frame_too_large", "timeout"}
    )

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def closes_connection(self) -> bool:
        """Whether the server closes the connection after this error (per the spec's table)."""
        return self.code in self.CLOSING_CODES


class ProtocolError(K2iError):
    """A well-formed frame that is not what the protocol allows here (wrong kind, bad JSON, a missing field,
    a row count that does not match, a scan without its ScanComplete, ...)."""


class ConnectionClosed(ProtocolError):
    """The server closed the connection between two frames while a reply was expected."""


# ----------------------------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class Frame:
    """One frame: its kind, codec and raw payload (``version`` is always 1 once decoded)."""

    kind: int
    codec: int
    payload: bytes
    version: int = PROTOCOL_VERSION

    def encode(self) -> bytes:
        """The frame's bytes (header + payload)."""
        return encode_frame(self.kind, self.payload, self.codec, version=self.version)

    def json(self) -> dict[str, Any]:
        """The payload as a JSON object; :class:`ProtocolError` if it is not one."""
        if self.codec != Codec.JSON:
            raise ProtocolError(f"kind 0x{self.kind:02x} carries codec {self.codec}, not JSON")
        try:
            value = json.loads(self.payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise ProtocolError(f"kind 0x{self.kind:02x}: payload is not UTF-8 JSON: {e}") from None
        if not isinstance(value, dict):
            raise ProtocolError(f"kind 0x{self.kind:02x}: payload is not a JSON object")
        return value


def json_bytes(obj: Mapping[str, Any]) -> bytes:
    """The compact JSON encoding the protocol uses: no spaces, keys in insertion order, UTF-8 (not
    ``\\u`` escapes for non-ASCII, like serde_json)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encode_frame(kind: int, payload: bytes, codec: Optional[int] = None, *, version: int = PROTOCOL_VERSION) -> bytes:
    """A frame's bytes. ``codec`` defaults to the one ``kind`` allows; a payload above ``u32`` is
    ``frame_too_large``. No other check: tests may build malformed frames on purpose."""
    if codec is None:
        codec = KIND_CODEC.get(kind, Codec.JSON)
    if len(payload) > _U32_MAX:
        raise FrameError("frame_too_large", f"payload of {len(payload)} bytes does not fit a u32 length")
    return _HEADER.pack(MAGIC, version, codec, kind, len(payload)) + bytes(payload)


def encode_json(kind: int, obj: Mapping[str, Any]) -> bytes:
    """A JSON frame's bytes (codec 0)."""
    return encode_frame(kind, json_bytes(obj), Codec.JSON)


def decode_header(header: bytes, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> tuple[int, int, int]:
    """Check a 12-byte header and return ``(codec, kind, length)``.

    The whole header is checked in this order (the Rust implementation's): magic, version, kind (defined by
    version 1), codec (the one the kind allows), then the length against ``max_frame_bytes``."""
    if len(header) < HEADER_SIZE:
        raise FrameError("truncated", f"the stream ended after {len(header)} of {HEADER_SIZE} header bytes")
    magic, version, codec, kind, length = _HEADER.unpack_from(header)
    if magic != MAGIC:
        raise FrameError("bad_magic", f"frame starts with {magic!r}, not {MAGIC!r}")
    if version != PROTOCOL_VERSION:
        raise FrameError("unsupported_version", f"version {version}, this client speaks {PROTOCOL_VERSION}")
    if kind not in KIND_CODEC:
        raise FrameError("unknown_kind", f"kind 0x{kind:02x} is not defined by version {PROTOCOL_VERSION}")
    if codec != KIND_CODEC[kind]:
        raise FrameError("unsupported_codec", f"codec {codec} is not allowed for kind 0x{kind:02x}")
    if length > max_frame_bytes:
        raise FrameError("frame_too_large", f"payload of {length} bytes is above max_frame_bytes {max_frame_bytes}")
    return codec, kind, length


def decode_frame(data: bytes, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> tuple[Frame, int]:
    """Decode the frame at the start of ``data``: ``(frame, bytes consumed)``. Bytes after the frame are
    left alone (the caller decides whether they are an error)."""
    codec, kind, length = decode_header(bytes(data[:HEADER_SIZE]), max_frame_bytes)
    end = HEADER_SIZE + length
    if len(data) < end:
        raise FrameError("truncated", f"the stream ended after {len(data) - HEADER_SIZE} of {length} payload bytes")
    return Frame(kind, codec, bytes(data[HEADER_SIZE:end])), end


def read_frame(read: Callable[[int], bytes], max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Optional[Frame]:
    """Read one frame through ``read(n)`` (returns at most ``n`` bytes, ``b""`` at end of stream).

    Returns ``None`` if the stream ends cleanly before the frame's first byte; a stream that ends inside a
    frame is ``truncated``. An oversize length is refused before its payload is read."""
    header = _read_exact(read, HEADER_SIZE)
    if not header:
        return None
    codec, kind, length = decode_header(header, max_frame_bytes)
    payload = _read_exact(read, length)
    if len(payload) < length:
        raise FrameError("truncated", f"the stream ended after {len(payload)} of {length} payload bytes")
    return Frame(kind, codec, payload)


def _read_exact(read: Callable[[int], bytes], n: int) -> bytes:
    """Up to ``n`` bytes: fewer only at end of stream."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        chunk = read(min(n - got, 1 << 20))
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


# ----------------------------------------------------------------------------------------------- client


def _field(obj: Mapping[str, Any], name: str, kind: str) -> Any:
    """A required field of a reply; :class:`ProtocolError` if it is missing."""
    if name not in obj:
        raise ProtocolError(f"{kind} has no {name!r}")
    return obj[name]


def _filter_json(filter: Optional[Mapping[str, Any]]) -> Optional[dict[str, Any]]:
    """A ScanBegin ``Filter`` in the spec's field order. Entries are dicts or tuples:
    ``partitions`` items ``(topic, partition)``, ``offsets_from`` items ``(topic, partition, offset)``."""
    if filter is None:
        return None
    unknown = set(filter) - {"partitions", "offsets_from"}
    if unknown:
        raise ValueError(f"unknown filter fields: {sorted(unknown)}")
    out: dict[str, Any] = {}
    if filter.get("partitions") is not None:
        out["partitions"] = []
        for p in filter["partitions"]:
            topic, partition = (p["topic"], p["partition"]) if isinstance(p, Mapping) else p
            out["partitions"].append({"topic": str(topic), "partition": int(partition)})
    if filter.get("offsets_from") is not None:
        out["offsets_from"] = []
        for o in filter["offsets_from"]:
            topic, partition, offset = (o["topic"], o["partition"], o["offset"]) if isinstance(o, Mapping) else o
            out["offsets_from"].append({"topic": str(topic), "partition": int(partition), "offset": int(offset)})
    return out


class Client:
    """A connection to one k2i process's read-state socket.

    Requests run one at a time (a lock serialises threads). The connection opens on the first request and
    is closed after any frame or protocol error (the byte stream can no longer be trusted) and after the
    Error codes the spec marks "closed"; the next request reconnects. Socket timeouts raise
    :class:`TimeoutError` and close the connection too."""

    def __init__(
        self, socket_path: str, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, timeout: Optional[float] = 30.0
    ) -> None:
        self.socket_path = socket_path
        self.max_frame_bytes = max_frame_bytes
        self.timeout = timeout
        self._sock: Optional[socket.socket] = None
        self._lock = threading.RLock()

    # connection ------------------------------------------------------------------------------------------

    def connect(self) -> None:
        """Open the connection (requests do it on demand)."""
        with self._lock:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                try:
                    sock.connect(self.socket_path)
                except BaseException:
                    sock.close()
                    raise
                self._sock = sock

    def close(self) -> None:
        """Close the connection (open scans stay open on the server until their ``rpc.scan_ttl``)."""
        with self._lock:
            if self._sock is not None:
                try:
                    self._sock.close()
                finally:
                    self._sock = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, kind: Kind, obj: Mapping[str, Any]) -> None:
        self.connect()
        assert self._sock is not None
        try:
            self._sock.sendall(encode_json(kind, obj))
        except BaseException:
            self.close()
            raise

    def _recv(self) -> Frame:
        """The next response frame; an Error frame raises :class:`ServerError`."""
        assert self._sock is not None
        try:
            frame = read_frame(self._sock.recv, self.max_frame_bytes)
            if frame is None:
                raise ConnectionClosed("the server closed the connection while a reply was expected")
            if frame.kind not in RESPONSE_KINDS:
                raise ProtocolError(f"the server sent request kind 0x{frame.kind:02x}")
            if frame.kind == Kind.ERROR:
                body = frame.json()
                error = ServerError(str(body.get("code", "")), str(body.get("message", "")))
            else:
                return frame
        except BaseException:
            self.close()
            raise
        if error.closes_connection:
            self.close()
        raise error

    def _expect(self, frame: Frame, kind: Kind) -> dict[str, Any]:
        if frame.kind != kind:
            self.close()
            raise ProtocolError(f"expected {kind.name} (0x{kind:02x}), got kind 0x{frame.kind:02x}")
        try:
            return frame.json()
        except ProtocolError:
            self.close()
            raise

    def _call(self, kind: Kind, obj: Mapping[str, Any], reply: Kind) -> dict[str, Any]:
        with self._lock:
            self._send(kind, obj)
            return self._expect(self._recv(), reply)

    # requests --------------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """HealthReply: ``status``, ``version``, ``protocol``, ``max_frame_bytes``, ``tables``."""
        return self._call(Kind.HEALTH, {}, Kind.HEALTH_REPLY)

    def tables(self) -> list[dict[str, Any]]:
        """The tables of this process: ``name``, ``lsn``, ``committed_lsn``, ``snapshot_id``?, ``hot_rows``."""
        reply = self._call(Kind.LIST_TABLES, {}, Kind.TABLES)
        tables = _field(reply, "tables", "Tables")
        if not isinstance(tables, list):
            raise ProtocolError("Tables.tables is not a list")
        return tables

    def schema(self, table: str) -> dict[str, Any]:
        """The table's current schema: ``table``, ``schema_id``, ``schema`` (Iceberg schema JSON)."""
        return self._call(Kind.TABLE_SCHEMA, {"table": table}, Kind.SCHEMA)

    def scan(
        self,
        table: str,
        max_lsn: Optional[int] = None,
        since_lsn: Optional[int] = None,
        columns: Optional[Sequence[str]] = None,
        filter: Optional[Mapping[str, Any]] = None,
    ) -> "Scan":
        """Begin a scan and read its whole answer (ReadState, every HotStream, ScanComplete).

        The scan stays open on the server (its files protected) until :meth:`end_scan` / :meth:`Scan.end`
        or ``rpc.scan_ttl``; use the returned :class:`Scan` as a context manager to end it."""
        request: dict[str, Any] = {"table": table}
        if max_lsn is not None:
            request["max_lsn"] = int(max_lsn)
        if since_lsn is not None:
            request["since_lsn"] = int(since_lsn)
        if columns is not None:
            request["columns"] = [str(c) for c in columns]
        filter_json = _filter_json(filter)
        if filter_json is not None:
            request["filter"] = filter_json
        with self._lock:
            self._send(Kind.SCAN_BEGIN, request)
            state = self._expect(self._recv(), Kind.READ_STATE)
            try:
                scan = self._read_scan(state)
            except ProtocolError:
                self.close()
                raise
        scan.client = self
        scan.columns = list(columns) if columns is not None else None
        # The ReadState's filter is the one to apply to the files: the request's, with `since_lsn` turned into
        # per-partition offsets by the server.
        scan.filter = state.get("filter", filter_json)
        return scan

    def _read_scan(self, state: dict[str, Any]) -> "Scan":
        scan_id = _field(state, "scan_id", "ReadState")
        streams = _field(state, "hot_streams", "ReadState")
        hot_rows = _field(state, "hot_rows", "ReadState")
        if not isinstance(_field(state, "files", "ReadState"), list):
            raise ProtocolError("ReadState.files is not a list")
        hot: list[tuple[int, "pa.Table"]] = []
        frame = self._recv()
        for index in range(int(streams)):
            if frame.kind != Kind.HOT_STREAM:
                raise ProtocolError(
                    f"expected HotStream {index + 1} of {streams}, got kind 0x{frame.kind:02x}"
                )
            head = frame.json()
            schema_id, rows = _field(head, "schema_id", "HotStream"), _field(head, "rows", "HotStream")
            chunks: list[bytes] = []
            frame = self._recv()
            while frame.kind == Kind.HOT_DATA:
                chunks.append(frame.payload)
                frame = self._recv()
            table = _read_ipc_stream(b"".join(chunks), index)
            if table.num_rows != rows:
                raise ProtocolError(f"HotStream {index + 1} announced {rows} rows, its Arrow stream has {table.num_rows}")
            hot.append((int(schema_id), table))
        if frame.kind != Kind.SCAN_COMPLETE:
            raise ProtocolError(f"expected ScanComplete after {streams} hot streams, got kind 0x{frame.kind:02x}")
        complete = frame.json()
        if _field(complete, "scan_id", "ScanComplete") != scan_id:
            raise ProtocolError(f"ScanComplete is for scan {complete['scan_id']}, the ReadState for {scan_id}")
        total = sum(t.num_rows for _, t in hot)
        if total != hot_rows:
            raise ProtocolError(f"ReadState announced {hot_rows} hot rows, its hot streams have {total}")
        if complete.get("rows", total) != total:  # ScanComplete.rows: the hot rows sent, all streams together
            raise ProtocolError(f"ScanComplete counts {complete['rows']} hot rows, the hot streams have {total}")
        return Scan(state=state, hot=hot, complete=complete)

    def end_scan(self, scan_id: int) -> None:
        """End a scan: the server releases it (and its files) now instead of at ``rpc.scan_ttl``."""
        reply = self._call(Kind.SCAN_END, {"scan_id": int(scan_id)}, Kind.SCAN_ENDED)
        if _field(reply, "scan_id", "ScanEnded") != scan_id:
            raise ProtocolError(f"ScanEnded is for scan {reply['scan_id']}, not {scan_id}")


def _read_ipc_stream(data: bytes, index: int) -> "pa.Table":
    import pyarrow as pa
    import pyarrow.ipc

    try:
        with pyarrow.ipc.open_stream(pa.py_buffer(data)) as reader:
            return reader.read_all()
    except (pa.ArrowException, OSError, ValueError) as e:
        raise ProtocolError(f"hot stream {index + 1} is not a complete Arrow IPC stream: {e}") from None


@dataclass
class Scan:
    """A scan's answer: the ReadState (``state``), the hot rows (``hot``: one ``(schema_id, table)`` per
    HotStream) and the ScanComplete payload (``complete``). ``columns`` is the request's and ``filter`` the
    ReadState's (the request's, with ``since_lsn`` resolved), which :func:`read_committed` applies to the
    committed files."""

    state: dict[str, Any]
    hot: list[tuple[int, "pa.Table"]]
    complete: dict[str, Any] = field(default_factory=dict)
    columns: Optional[list[str]] = None
    filter: Optional[dict[str, Any]] = None
    client: Optional[Client] = field(default=None, repr=False, compare=False)
    ended: bool = False

    @property
    def scan_id(self) -> int:
        return int(self.state["scan_id"])

    @property
    def lsn(self) -> int:
        return int(self.state["lsn"])

    @property
    def files(self) -> list[dict[str, Any]]:
        return list(self.state.get("files", []))

    def hot_table(self) -> "pa.Table":
        """All hot rows as one table (columns unified by name; an empty table without columns if none)."""
        import pyarrow as pa

        return unify_tables([t for _, t in self.hot]) if self.hot else pa.table({})

    def end(self) -> None:
        """Send ScanEnd once (no-op if already ended or the scan has no client)."""
        if not self.ended and self.client is not None:
            self.client.end_scan(self.scan_id)
            self.ended = True

    def __enter__(self) -> "Scan":
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.end()
        else:  # do not hide the original error behind a failing ScanEnd
            try:
                self.end()
            except Exception:
                pass


# ----------------------------------------------------------------------------------------------- data


_UTC_NAMES = frozenset({"UTC", "utc", "Z", "+00:00", "+0000", "Etc/UTC"})


def unify_tables(tables: Sequence["pa.Table"]) -> "pa.Table":
    """Concatenate tables, columns unified by name (missing ones null). If the types differ (an Iceberg
    type promotion such as int → long, or ``UTC`` vs ``+00:00`` timestamps), promote permissively."""
    import pyarrow as pa

    tables = [t for t in tables if t.num_columns or t.num_rows]
    if not tables:
        return pa.table({})
    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables, promote_options="default")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.concat_tables([_utc_timestamps(t) for t in tables], promote_options="permissive")


def _utc_timestamps(table: "pa.Table") -> "pa.Table":
    """The table with every top-level UTC timestamp column spelled ``tz="UTC"``."""
    import pyarrow as pa

    for i, f in enumerate(table.schema):
        if pa.types.is_timestamp(f.type) and f.type.tz in _UTC_NAMES and f.type.tz != "UTC":
            target = pa.timestamp(f.type.unit, tz="UTC")
            table = table.set_column(i, f.with_type(target), table.column(i).cast(target))
    return table


def apply_filter(table: "pa.Table", filter: Optional[Mapping[str, Any]]) -> "pa.Table":
    """The rows of ``table`` a ScanBegin ``filter`` selects, by ``_kafka_topic``/``_kafka_partition``/
    ``_kafka_offset``: only the listed ``partitions``; in the partitions of ``offsets_from``, only offsets
    at least the given one (others unrestricted)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    f = _filter_json(filter)
    if not f or table.num_rows == 0:
        return table
    missing = {KAFKA_TOPIC, KAFKA_PARTITION, KAFKA_OFFSET} - set(table.column_names)
    if missing:
        raise ValueError(f"cannot apply the filter without the columns {sorted(missing)}")
    topic, partition, offset = table[KAFKA_TOPIC], table[KAFKA_PARTITION], table[KAFKA_OFFSET]

    def match(t: str, p: int) -> Any:
        return pc.fill_null(pc.and_(pc.equal(topic, t), pc.equal(partition, p)), False)

    mask: Any = pc.and_(pc.is_valid(topic), pc.is_valid(partition))  # as the Rust filter_batch: no null keys
    if "partitions" in f:
        listed: Any = pa.repeat(False, table.num_rows)
        for p in f["partitions"]:
            listed = pc.or_(listed, match(p["topic"], p["partition"]))
        mask = pc.and_(mask, listed)
    for o in f.get("offsets_from", []):
        keep = pc.or_(pc.invert(match(o["topic"], o["partition"])), pc.fill_null(pc.greater_equal(offset, o["offset"]), False))
        mask = pc.and_(mask, keep)
    return table.filter(mask)


def _resolve(uri: str, filesystem: Optional["pyarrow.fs.FileSystem"]) -> tuple[Optional["pyarrow.fs.FileSystem"], str]:
    """``(filesystem, path)`` for a data file URI: ``file://`` (and plain paths) are local; other schemes
    go to ``filesystem`` with the scheme stripped, or to ``pyarrow.fs.FileSystem.from_uri``."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("", "file"):
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"{uri}: a file URI on host {parsed.netloc!r} is not local")
        return None, urllib.parse.unquote(parsed.path) if parsed.scheme else uri
    if filesystem is not None:
        return filesystem, uri.split("://", 1)[1] if "://" in uri else parsed.path
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)


def read_committed(scan: Scan, filesystem: Optional["pyarrow.fs.FileSystem"] = None) -> "pa.Table":
    """The committed rows of a scan: its ReadState's Parquet files, read with ``pyarrow.parquet``, projected
    to the scan's ``columns`` and restricted by its ``filter``. Each file's row count is checked against the
    ReadState (:class:`ProtocolError` otherwise). A snapshot with delete files (another engine's merge-on-read
    deletes, which the ReadState counts in ``delete_files`` but does not list) is refused with ``ValueError``:
    its raw data files would show deleted rows; read such a table with an Iceberg reader (pyiceberg)."""
    import pyarrow.parquet as pq

    if scan.state.get("delete_files"):
        raise ValueError(
            f"the snapshot has {scan.state['delete_files']} delete files (merge-on-read deletes); "
            "read the committed part with an Iceberg reader"
        )

    need: Optional[list[str]] = None
    if scan.columns is not None:
        need = list(scan.columns)
        if scan.filter:
            need += [c for c in (KAFKA_TOPIC, KAFKA_PARTITION, KAFKA_OFFSET) if c not in need]
    parts = []
    for entry in scan.files:
        path = _field(entry, "path", "ReadState file")
        if str(entry.get("format", "parquet")).lower() != "parquet":
            raise ProtocolError(f"{path}: format {entry.get('format')!r} is not supported (only parquet)")
        fs, local = _resolve(path, filesystem)
        pf = pq.ParquetFile(local, filesystem=fs)
        if "rows" in entry and pf.metadata.num_rows != entry["rows"]:
            raise ProtocolError(f"{path}: ReadState says {entry['rows']} rows, the file has {pf.metadata.num_rows}")
        names = pf.schema_arrow.names
        table = pf.read(columns=[c for c in need if c in names] if need is not None else None)
        parts.append(apply_filter(table, scan.filter))
    result = unify_tables(parts)
    if scan.columns is not None and scan.filter:
        result = result.select([c for c in scan.columns if c in result.column_names])
    return result


def read_all(scan: Scan, filesystem: Optional["pyarrow.fs.FileSystem"] = None) -> "pa.Table":
    """Committed ∪ hot rows of one read-state as one table (columns unified by name, missing ones null).

    The scan's ``filter`` is applied to the hot rows too when they carry the Kafka columns (the server
    already filters them, so this only guards against a server that does not)."""
    hot = scan.hot_table()
    if scan.filter and {KAFKA_TOPIC, KAFKA_PARTITION, KAFKA_OFFSET} <= set(hot.column_names):
        hot = apply_filter(hot, scan.filter)
    return unify_tables([read_committed(scan, filesystem), hot])


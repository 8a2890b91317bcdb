"""Unit tests of the Python read-state client (standard library ``unittest``, no pytest).

    cd clients/python && python -m unittest discover -s tests -v

The socket tests run a fake server on a temporary Unix socket: they test the client's side of the protocol
only. ``GoldenFrames`` checks the Rust-produced frames in ``testdata/rpc/golden/`` and fails when they are
missing.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import socket
import sys
import tempfile
import threading
import unittest
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import k2i_client as k  # noqa: E402
from k2i_client import Codec, Frame, FrameError, Kind, ProtocolError, ServerError  # noqa: E402

GOLDEN = HERE.parent.parent.parent / "testdata" / "rpc" / "golden"


def ipc_stream(table: pa.Table, chunk_rows: int = 2) -> bytes:
    """``table`` as one Arrow IPC stream (schema, batches of ``chunk_rows``, end-of-stream)."""
    sink = pa.BufferOutputStream()
    with pyarrow.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=chunk_rows):
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def hot_frames(schema_id: int, table: pa.Table, rows: Optional[int] = None, slice_bytes: int = 100) -> list[bytes]:
    """A HotStream frame and the stream of ``table`` sliced into HotData frames of ``slice_bytes``."""
    data = ipc_stream(table)
    head = k.encode_json(Kind.HOT_STREAM, {"schema_id": schema_id, "rows": table.num_rows if rows is None else rows})
    return [head] + [k.encode_frame(Kind.HOT_DATA, data[i : i + slice_bytes]) for i in range(0, len(data), slice_bytes)]


def read_state(scan_id: int = 7, hot_rows: int = 0, hot_streams: int = 0, files: Optional[list] = None, **extra: Any) -> bytes:
    state = {
        "scan_id": scan_id, "table": "ns.events", "lsn": 1200, "committed_lsn": 1000, "snapshot_id": 42,
        "schema_id": 0, "watermarks": [{"topic": "events", "partition": 0, "next_offset": 1201}],
        "files": files or [], "hot_rows": hot_rows, "hot_streams": hot_streams, "expires_in_ms": 300000,
    }
    state.update(extra)
    return k.encode_json(Kind.READ_STATE, state)


def events(offsets: list[int], partition: int = 0, extra: Optional[dict] = None) -> pa.Table:
    cols: dict[str, Any] = {
        "_kafka_topic": pa.array(["events"] * len(offsets), pa.string()),
        "_kafka_partition": pa.array([partition] * len(offsets), pa.int32()),
        "_kafka_offset": pa.array(offsets, pa.int64()),
        "v": pa.array([f"r{o}" for o in offsets], pa.string()),
    }
    cols.update(extra or {})
    return pa.table(cols)


Responder = Callable[[Frame], Optional[list[Optional[bytes]]]]


class FakeServer:
    """A one-thread server on a temporary Unix socket: each request frame goes to ``respond``, whose frames
    are sent back (``None`` instead of a list closes the connection at once, a trailing ``None`` in the list
    closes it after sending). ``requests`` records the raw request bytes."""

    def __init__(self, respond: Responder) -> None:
        self.respond = respond
        self.requests: list[bytes] = []
        self._dir = tempfile.TemporaryDirectory()
        self.path = os.path.join(self._dir.name, "rpc.sock")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(4)
        self._listener.settimeout(0.05)
        self._stop = threading.Event()
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(5)
                try:
                    while True:
                        frame = k.read_frame(conn.recv)
                        if frame is None:
                            break
                        self.requests.append(frame.encode())
                        out = self.respond(frame)
                        if out is None:
                            break
                        conn.sendall(b"".join(f for f in out if f is not None))
                        if out and out[-1] is None:  # a trailing None: close after sending
                            break
                except (OSError, FrameError):
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()
        self._dir.cleanup()


@contextlib.contextmanager
def serving(respond: Responder) -> Iterator[FakeServer]:
    server = FakeServer(respond)
    try:
        yield server
    finally:
        server.close()


# --------------------------------------------------------------------------------------------------- frames


class Frames(unittest.TestCase):
    def test_header_layout(self) -> None:
        self.assertEqual(k.encode_json(Kind.HEALTH, {}), b"K2IR\x00\x01\x00\x01\x00\x00\x00\x02{}")
        data = k.encode_frame(Kind.HOT_DATA, b"\x00\xffab")
        self.assertEqual(data, b"K2IR\x00\x01\x01\x86\x00\x00\x00\x04\x00\xffab")

    def test_round_trip_every_kind(self) -> None:
        for kind in Kind:
            payload = b"\x01\x02\x03" * 50 if kind == Kind.HOT_DATA else k.json_bytes({"scan_id": 7, "x": [1, "é"]})
            data = k.encode_frame(kind, payload)
            frame, used = k.decode_frame(data + b"trailing")
            self.assertEqual(used, len(data))
            self.assertEqual((frame.kind, frame.codec, frame.payload), (kind, k.KIND_CODEC[kind], payload))
            self.assertEqual(frame.encode(), data)
            self.assertEqual(k.read_frame(io.BytesIO(data).read), frame)

    def test_empty_payload(self) -> None:
        frame, used = k.decode_frame(k.encode_frame(Kind.HOT_DATA, b""))
        self.assertEqual((frame.payload, used), (b"", 12))

    def test_json_is_compact_ordered_utf8(self) -> None:
        self.assertEqual(k.json_bytes({"table": "ns.é", "max_lsn": 5, "columns": ["a"]}),
                         '{"table":"ns.é","max_lsn":5,"columns":["a"]}'.encode())
        self.assertEqual(Frame(Kind.TABLES, 0, b'{"tables":[]}').json(), {"tables": []})
        for bad in (b"[1]", b"{", b"\xff"):
            with self.assertRaises(ProtocolError):
                Frame(Kind.TABLES, 0, bad).json()

    def assertCode(self, code: str, data: bytes, max_frame_bytes: int = k.DEFAULT_MAX_FRAME_BYTES) -> None:
        with self.assertRaises(FrameError) as ctx:
            k.decode_frame(data, max_frame_bytes)
        self.assertEqual(ctx.exception.code, code, ctx.exception)
        with self.assertRaises(FrameError) as ctx:
            k.read_frame(io.BytesIO(data).read, max_frame_bytes)
        self.assertEqual(ctx.exception.code, code, ctx.exception)

    def test_bad_magic(self) -> None:
        good = k.encode_json(Kind.HEALTH, {})
        for magic in (b"K2IX", b"k2ir", b"\x00\x00\x00\x00", b"HTTP"):
            self.assertCode("bad_magic", magic + good[4:])

    def test_unsupported_version(self) -> None:
        for version in (0, 2, 0x0100, 0xFFFF):
            self.assertCode("unsupported_version", k.encode_frame(Kind.HEALTH, b"{}", version=version))

    def test_unsupported_codec(self) -> None:
        self.assertCode("unsupported_codec", k.encode_frame(Kind.HEALTH, b"{}", codec=2))
        self.assertCode("unknown_kind", k.encode_frame(0x06, b"{}", codec=2))  # kind is checked before codec
        self.assertCode("unsupported_version", k.encode_frame(0x06, b"{}", codec=2, version=2))
        self.assertCode("unsupported_codec", k.encode_frame(Kind.HEALTH, b"{}", codec=Codec.ARROW))
        self.assertCode("unsupported_codec", k.encode_frame(Kind.ERROR, b"{}", codec=Codec.ARROW))
        self.assertCode("unsupported_codec", k.encode_frame(Kind.HOT_DATA, b"{}", codec=Codec.JSON))

    def test_unknown_kind(self) -> None:
        for kind in (0x00, 0x06, 0x7F, 0x80, 0x89, 0xFE):
            self.assertCode("unknown_kind", k.encode_frame(kind, b"{}", codec=0))

    def test_frame_too_large(self) -> None:
        self.assertCode("frame_too_large", k.encode_frame(Kind.HOT_DATA, b"x" * 101), max_frame_bytes=100)
        k.decode_frame(k.encode_frame(Kind.HOT_DATA, b"x" * 100), max_frame_bytes=100)  # at the limit: fine
        # A huge length is refused from the header alone, before any payload is read.
        header = b"K2IR\x00\x01\x01\x86\xff\xff\xff\xff"
        self.assertCode("frame_too_large", header)
        with self.assertRaises(FrameError) as ctx:
            k.decode_header(header)
        self.assertEqual(ctx.exception.code, "frame_too_large")

    def test_truncated_at_every_length(self) -> None:
        for data in (k.encode_json(Kind.READ_STATE, {"scan_id": 1, "files": []}), k.encode_frame(Kind.HOT_DATA, b"ab")):
            for n in range(len(data)):
                with self.subTest(n=n):
                    with self.assertRaises(FrameError) as ctx:
                        k.decode_frame(data[:n])
                    self.assertEqual(ctx.exception.code, "truncated")
                    if n == 0:  # a stream that ends between frames is a clean end, not a truncation
                        self.assertIsNone(k.read_frame(io.BytesIO(b"").read))
                    else:
                        with self.assertRaises(FrameError) as ctx:
                            k.read_frame(io.BytesIO(data[:n]).read)
                        self.assertEqual(ctx.exception.code, "truncated")

    def test_read_frame_in_small_reads(self) -> None:
        data = k.encode_json(Kind.SCAN_COMPLETE, {"scan_id": 1, "rows": 2, "bytes": 3})
        stream = io.BytesIO(data * 2)
        one_byte = lambda n: stream.read(1)  # noqa: E731
        self.assertEqual(k.read_frame(one_byte).encode(), data)
        self.assertEqual(k.read_frame(one_byte).encode(), data)
        self.assertIsNone(k.read_frame(one_byte))

    def test_filter_json_order(self) -> None:
        f = k._filter_json({"offsets_from": [("events", 0, 5)], "partitions": [{"partition": 1, "topic": "events"}]})
        self.assertEqual(k.json_bytes(f), b'{"partitions":[{"topic":"events","partition":1}],'
                                          b'"offsets_from":[{"topic":"events","partition":0,"offset":5}]}')
        with self.assertRaises(ValueError):
            k._filter_json({"partition": []})


# --------------------------------------------------------------------------------------------------- client


def scripted(replies: dict[int, list[bytes]]) -> Responder:
    """A responder answering each request kind with fixed frames."""
    return lambda frame: replies.get(frame.kind)


class ClientOverSocket(unittest.TestCase):
    def test_health_tables_schema(self) -> None:
        health = {"status": "ok", "version": "0.9.0", "protocol": 1, "max_frame_bytes": 1 << 20, "tables": 1}
        tables = {"tables": [{"name": "ns.events", "lsn": 12, "committed_lsn": 10, "hot_rows": 2}]}
        schema = {"table": "ns.events", "schema_id": 0, "schema": {"type": "struct", "fields": []}, "new": 1}
        with serving(scripted({
            Kind.HEALTH: [k.encode_json(Kind.HEALTH_REPLY, health)],
            Kind.LIST_TABLES: [k.encode_json(Kind.TABLES, tables)],
            Kind.TABLE_SCHEMA: [k.encode_json(Kind.SCHEMA, schema)],
        })) as server, k.Client(server.path) as client:
            self.assertEqual(client.health(), health)
            self.assertEqual(client.tables(), tables["tables"])
            self.assertEqual(client.schema("ns.events"), schema)
            self.assertEqual(server.requests, [
                b"K2IR\x00\x01\x00\x01\x00\x00\x00\x02{}",
                b"K2IR\x00\x01\x00\x02\x00\x00\x00\x02{}",
                k.encode_frame(Kind.TABLE_SCHEMA, b'{"table":"ns.events"}'),
            ])
            self.assertEqual(server.connections, 1)

    def test_scan_two_hot_streams(self) -> None:
        first = events([1001, 1002, 1003])
        second = events([1004, 1005], extra={"added": pa.array([1.5, None], pa.float64())})
        frames = [read_state(hot_rows=5, hot_streams=2)] + hot_frames(0, first) + hot_frames(1, second)
        frames.append(k.encode_json(Kind.SCAN_COMPLETE, {"scan_id": 7, "rows": 5, "bytes": 1234}))
        self.assertGreater(len(frames), 6)  # the streams really are sliced into several HotData frames
        with serving(scripted({Kind.SCAN_BEGIN: frames, Kind.SCAN_END: [k.encode_json(Kind.SCAN_ENDED, {"scan_id": 7})]})) as server:
            with k.Client(server.path) as client:
                with client.scan("ns.events", max_lsn=1200, columns=["v", "added"],
                                 filter={"offsets_from": [("events", 0, 1001)]}) as scan:
                    self.assertEqual((scan.scan_id, scan.lsn, scan.state["committed_lsn"]), (7, 1200, 1000))
                    self.assertEqual([sid for sid, _ in scan.hot], [0, 1])
                    self.assertTrue(scan.hot[0][1].equals(first))
                    self.assertTrue(scan.hot[1][1].equals(second))
                    hot = scan.hot_table()
                    self.assertEqual(hot.num_rows, 5)
                    self.assertEqual(hot.column_names, ["_kafka_topic", "_kafka_partition", "_kafka_offset", "v", "added"])
                    self.assertEqual(hot["added"].to_pylist(), [None, None, None, 1.5, None])
                    self.assertEqual(scan.complete["rows"], 5)
                    self.assertEqual(k.read_all(scan).num_rows, 5)
                self.assertTrue(scan.ended)
            self.assertEqual(server.requests[0], k.encode_frame(
                Kind.SCAN_BEGIN,
                b'{"table":"ns.events","max_lsn":1200,"columns":["v","added"],'
                b'"filter":{"offsets_from":[{"topic":"events","partition":0,"offset":1001}]}}'))
            self.assertEqual(server.requests[1], k.encode_frame(Kind.SCAN_END, b'{"scan_id":7}'))

    def test_scan_without_hot_rows(self) -> None:
        frames = [read_state(), k.encode_json(Kind.SCAN_COMPLETE, {"scan_id": 7, "rows": 0, "bytes": 0})]
        with serving(scripted({Kind.SCAN_BEGIN: frames})) as server, k.Client(server.path) as client:
            scan = client.scan("ns.events")
            self.assertEqual((scan.hot, scan.hot_table().num_rows, k.read_all(scan).num_rows), ([], 0, 0))

    def test_error_frame_raises_server_error_and_keeps_the_connection(self) -> None:
        error = k.encode_json(Kind.ERROR, {"code": "unknown_table", "message": "no table ns.nope"})
        with serving(scripted({
            Kind.TABLE_SCHEMA: [error], Kind.SCAN_BEGIN: [error],
            Kind.HEALTH: [k.encode_json(Kind.HEALTH_REPLY, {"status": "ok"})],
        })) as server, k.Client(server.path) as client:
            for call in (lambda: client.schema("ns.nope"), lambda: client.scan("ns.nope")):
                with self.assertRaises(ServerError) as ctx:
                    call()
                self.assertEqual((ctx.exception.code, ctx.exception.message), ("unknown_table", "no table ns.nope"))
                self.assertFalse(ctx.exception.closes_connection)
            self.assertEqual(client.health()["status"], "ok")
            self.assertEqual(server.connections, 1)

    def test_error_mid_scan(self) -> None:
        frames = [read_state(hot_rows=3, hot_streams=1)] + hot_frames(0, events([1, 2, 3]))[:2]
        frames.append(k.encode_json(Kind.ERROR, {"code": "internal", "message": "disk on fire"}))
        with serving(scripted({Kind.SCAN_BEGIN: frames})) as server, k.Client(server.path) as client:
            with self.assertRaises(ServerError) as ctx:
                client.scan("ns.events")
            self.assertEqual(ctx.exception.code, "internal")

    def test_row_count_mismatch(self) -> None:
        frames = [read_state(hot_rows=4, hot_streams=1)] + hot_frames(0, events([1, 2, 3]), rows=4)
        frames.append(k.encode_json(Kind.SCAN_COMPLETE, {"scan_id": 7, "rows": 4, "bytes": 1}))
        with serving(scripted({Kind.SCAN_BEGIN: frames})) as server, k.Client(server.path) as client:
            with self.assertRaisesRegex(ProtocolError, "announced 4 rows"):
                client.scan("ns.events")

    def test_read_state_hot_rows_mismatch(self) -> None:
        frames = [read_state(hot_rows=9, hot_streams=1)] + hot_frames(0, events([1, 2, 3]))
        frames.append(k.encode_json(Kind.SCAN_COMPLETE, {"scan_id": 7, "rows": 9, "bytes": 1}))
        with serving(scripted({Kind.SCAN_BEGIN: frames})) as server, k.Client(server.path) as client:
            with self.assertRaisesRegex(ProtocolError, "9 hot rows"):
                client.scan("ns.events")

    def test_missing_scan_complete(self) -> None:
        stream = hot_frames(0, events([1, 2]))
        complete = k.encode_json(Kind.SCAN_COMPLETE, {"scan_id": 7, "rows": 2, "bytes": 1})
        cases: dict[str, tuple[type, list]] = {
            "server closes": (k.ConnectionClosed, [read_state(hot_rows=2, hot_streams=1)] + stream + [None]),
            "ends inside a frame": (FrameError, [read_state(hot_rows=2, hot_streams=1)] + stream + [b"K2IR", None]),
            "too few streams": (ProtocolError, [read_state(hot_rows=2, hot_streams=2)] + stream + [complete]),
            "wrong kind": (ProtocolError, [read_state(hot_rows=2, hot_streams=1)] + stream
                           + [k.encode_json(Kind.SCAN_ENDED, {"scan_id": 7})]),
            "other scan": (ProtocolError, [read_state(hot_rows=2, hot_streams=1)] + stream
                           + [k.encode_json(Kind.SCAN_COMPLETE, {"scan_id": 8, "rows": 2, "bytes": 1})]),
            "ScanComplete miscounts": (ProtocolError, [read_state(hot_rows=2, hot_streams=1)] + stream
                                       + [k.encode_json(Kind.SCAN_COMPLETE, {"scan_id": 7, "rows": 3, "bytes": 1})]),
            "broken stream": (ProtocolError, [read_state(hot_rows=2, hot_streams=1)] + stream[:-1] + [complete]),
            "no stream bytes": (ProtocolError, [read_state(hot_rows=2, hot_streams=1)] + stream[:1] + [complete]),
        }
        for name, (error, frames) in cases.items():
            with self.subTest(name), serving(scripted({Kind.SCAN_BEGIN: frames})) as server:
                client = k.Client(server.path, timeout=5)
                with self.assertRaises(error):
                    client.scan("ns.events")
                self.assertIsNone(client._sock)  # a broken exchange closes the connection
                client.close()

    def test_bad_frame_from_server_is_frame_error(self) -> None:
        with serving(lambda f: [b"HTTP/1.1 400 Bad Request\r\n\r\n"]) as server, k.Client(server.path) as client:
            with self.assertRaises(FrameError) as ctx:
                client.health()
            self.assertEqual(ctx.exception.code, "bad_magic")
        with serving(lambda f: [k.encode_frame(Kind.HOT_DATA, b"x" * 200)]) as server:
            with k.Client(server.path, max_frame_bytes=100) as client, self.assertRaises(FrameError) as ctx:
                client.health()
            self.assertEqual(ctx.exception.code, "frame_too_large")

    def test_closing_error_reconnects(self) -> None:
        calls = []

        def respond(frame: Frame) -> list[bytes]:
            calls.append(frame.kind)
            if len(calls) == 1:
                return [k.encode_json(Kind.ERROR, {"code": "timeout", "message": "slow"})]
            return [k.encode_json(Kind.HEALTH_REPLY, {"status": "ok"})]

        with serving(respond) as server, k.Client(server.path) as client:
            with self.assertRaises(ServerError) as ctx:
                client.health()
            self.assertTrue(ctx.exception.closes_connection)
            self.assertEqual(client.health(), {"status": "ok"})
            self.assertEqual(server.connections, 2)

    def test_wrong_reply_kind(self) -> None:
        with serving(scripted({Kind.HEALTH: [k.encode_json(Kind.TABLES, {"tables": []})]})) as server:
            with k.Client(server.path) as client, self.assertRaisesRegex(ProtocolError, "HEALTH_REPLY"):
                client.health()
        with serving(scripted({Kind.HEALTH: [k.encode_json(Kind.HEALTH, {})]})) as server:
            with k.Client(server.path) as client, self.assertRaisesRegex(ProtocolError, "request kind"):
                client.health()


# --------------------------------------------------------------------------------------------------- data


class CommittedFiles(unittest.TestCase):
    def setUp(self) -> None:
        self._dir = tempfile.TemporaryDirectory()
        self.dir = Path(self._dir.name)

    def tearDown(self) -> None:
        self._dir.cleanup()

    def file(self, name: str, table: pa.Table, rows: Optional[int] = None) -> dict[str, Any]:
        path = self.dir / name
        pq.write_table(table, path)
        return {"path": path.as_uri(), "format": "parquet", "size": path.stat().st_size,
                "rows": table.num_rows if rows is None else rows, "snapshot_id": 42,
                "offset_ranges": [{"topic": "events", "partition": 0, "start": 0, "end": 1}]}

    def scan(self, files: list, hot: list, **kw: Any) -> k.Scan:
        return k.Scan(state={"scan_id": 1, "lsn": 10, "files": files, "hot_rows": 0, "hot_streams": len(hot)},
                      hot=hot, **kw)

    def test_read_all_unifies_committed_and_hot(self) -> None:
        old = events([0, 1, 2]).set_column(2, "_kafka_offset", pa.array([0, 1, 2], pa.int64()))
        # int → long promotion and a column added later; a file name that needs percent-encoding
        old = old.append_column("n", pa.array([1, 2, 3], pa.int32()))
        new = events([3, 4], partition=1).append_column("n", pa.array([4, 5], pa.int64()))
        files = [self.file("a b.parquet", old), self.file("b.parquet", new)]
        hot = events([5, 6], extra={"added": pa.array(["x", "y"])})
        scan = self.scan(files, [(0, hot)])
        committed = k.read_committed(scan)
        self.assertEqual(committed.num_rows, 5)
        everything = k.read_all(scan)
        self.assertEqual(everything.num_rows, 7)
        self.assertEqual(everything["_kafka_offset"].to_pylist(), [0, 1, 2, 3, 4, 5, 6])
        self.assertEqual(everything["n"].to_pylist(), [1, 2, 3, 4, 5, None, None])
        self.assertEqual(everything["added"].to_pylist(), [None] * 5 + ["x", "y"])

    def test_filter_and_columns(self) -> None:
        files = [self.file("p0.parquet", events([0, 1, 2, 3])), self.file("p1.parquet", events([0, 1], partition=1))]
        flt = {"partitions": [("events", 0), ("events", 1)], "offsets_from": [("events", 0, 2)]}
        scan = self.scan(files, [], columns=["v"], filter=k._filter_json(flt))
        got = k.read_committed(scan)
        self.assertEqual(got.column_names, ["v"])
        self.assertEqual(got["v"].to_pylist(), ["r2", "r3", "r0", "r1"])
        only_p1 = self.scan(files, [], filter=k._filter_json({"partitions": [("events", 1)]}))
        self.assertEqual(k.read_committed(only_p1)["_kafka_partition"].to_pylist(), [1, 1])
        none = self.scan(files, [], filter=k._filter_json({"partitions": []}))
        self.assertEqual(k.read_committed(none).num_rows, 0)
        nulls = pa.table({"_kafka_topic": ["events", None, "events"], "_kafka_partition": pa.array([0, 0, None], pa.int32()),
                          "_kafka_offset": pa.array([5, 6, None], pa.int64())})
        self.assertEqual(k.apply_filter(nulls, {"offsets_from": [("events", 1, 0)]}).num_rows, 1)
        self.assertEqual(k.apply_filter(nulls, None).num_rows, 3)

    def test_hot_rows_are_filtered_too(self) -> None:
        scan = self.scan([], [(0, events([5, 6, 7]))], filter=k._filter_json({"offsets_from": [("events", 0, 7)]}))
        self.assertEqual(k.read_all(scan)["_kafka_offset"].to_pylist(), [7])

    def test_file_row_count_mismatch(self) -> None:
        scan = self.scan([self.file("x.parquet", events([0, 1]), rows=3)], [])
        with self.assertRaisesRegex(ProtocolError, "3 rows"):
            k.read_committed(scan)

    def test_utc_spellings_unify(self) -> None:
        a = pa.table({"t": pa.array([1], pa.timestamp("us", tz="UTC"))})
        b = pa.table({"t": pa.array([2], pa.timestamp("us", tz="+00:00"))})
        self.assertEqual(k.unify_tables([a, b])["t"].type, pa.timestamp("us", tz="UTC"))

    def test_resolve(self) -> None:
        self.assertEqual(k._resolve("file:///w/a%20b.parquet", None), (None, "/w/a b.parquet"))
        self.assertEqual(k._resolve("/w/x.parquet", None), (None, "/w/x.parquet"))
        fs = pyarrow.fs.LocalFileSystem()
        self.assertEqual(k._resolve("s3://bucket/key.parquet", fs), (fs, "bucket/key.parquet"))
        with self.assertRaises(ValueError):
            k._resolve("file://otherhost/x", None)


class LiveCheckAgainstFake(unittest.TestCase):
    """``live_check.py`` (meant for a real server) run against the fake one, to test the script itself."""

    def run_check(self, committed: pa.Table, hot: pa.Table, *args: str) -> tuple[int, dict]:
        import live_check

        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "f.parquet"
            pq.write_table(committed, path)
            files = [{"path": path.as_uri(), "format": "parquet", "size": 1, "rows": committed.num_rows,
                      "snapshot_id": 1, "offset_ranges": []}]
            frames = [read_state(hot_rows=hot.num_rows, hot_streams=1, files=files)] + hot_frames(0, hot)
            frames.append(k.encode_json(Kind.SCAN_COMPLETE, {"scan_id": 7, "rows": hot.num_rows, "bytes": 1}))
            replies = scripted({
                Kind.HEALTH: [k.encode_json(Kind.HEALTH_REPLY, {"status": "ok", "version": "x", "protocol": 1,
                                                                 "max_frame_bytes": 1 << 20, "tables": 1})],
                Kind.LIST_TABLES: [k.encode_json(Kind.TABLES, {"tables": [{"name": "ns.events", "lsn": 1200,
                                                                           "committed_lsn": 1000, "hot_rows": 1}]})],
                Kind.TABLE_SCHEMA: [k.encode_json(Kind.SCHEMA, {"table": "ns.events", "schema_id": 0, "schema": {}})],
                Kind.SCAN_BEGIN: frames,
                Kind.SCAN_END: [k.encode_json(Kind.SCAN_ENDED, {"scan_id": 7})],
            })
            out = io.StringIO()
            with serving(replies) as server, contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
                code = live_check.main(["--socket", server.path, "--table", "ns.events", *args])
        lines = out.getvalue().splitlines()
        self.assertEqual(len(lines), 1, lines)
        return code, json.loads(lines[0])

    def test_ok(self) -> None:
        code, summary = self.run_check(events([0, 1, 2]), events([3, 4]), "--expect-rows", "5")
        self.assertEqual((code, summary), (0, {"rows": 5, "hot_rows": 2, "files": 1, "lsn": 1200, "duplicates": 0}))

    def test_expect_rows_mismatch(self) -> None:
        code, summary = self.run_check(events([0, 1, 2]), events([3, 4]), "--expect-rows", "6")
        self.assertEqual(code, 1)
        self.assertIn("expected 6", summary["error"])

    def test_duplicates(self) -> None:
        code, summary = self.run_check(events([0, 1, 2]), events([2, 3]))
        self.assertEqual((code, summary["duplicates"]), (1, 1))

    def test_above_watermark(self) -> None:
        code, summary = self.run_check(events([0, 1]), events([1201]))
        self.assertEqual(code, 1)
        self.assertIn("watermark", summary["error"])


# --------------------------------------------------------------------------------------------------- golden

MESSAGE_KINDS = {
    "Health": Kind.HEALTH, "ListTables": Kind.LIST_TABLES, "TableSchema": Kind.TABLE_SCHEMA,
    "ScanBegin": Kind.SCAN_BEGIN, "ScanEnd": Kind.SCAN_END, "HealthReply": Kind.HEALTH_REPLY,
    "Tables": Kind.TABLES, "Schema": Kind.SCHEMA, "ReadState": Kind.READ_STATE, "HotStream": Kind.HOT_STREAM,
    "HotData": Kind.HOT_DATA, "ScanComplete": Kind.SCAN_COMPLETE, "ScanEnded": Kind.SCAN_ENDED, "Error": Kind.ERROR,
}


class GoldenFrames(unittest.TestCase):
    """The frames the Rust implementation wrote to ``testdata/rpc/golden/*.bin`` (one frame a file). Never
    skipped: a missing directory is a failure."""

    def files(self) -> list[Path]:
        self.assertTrue(GOLDEN.is_dir(), f"{GOLDEN} is missing: the Rust golden frames have not been generated")
        files = sorted(GOLDEN.glob("*.bin"))
        self.assertTrue(files, f"{GOLDEN} holds no *.bin frames")
        return files

    def test_each_file_is_one_frame_that_re_encodes_identically(self) -> None:
        for path in self.files():
            with self.subTest(path.name):
                data = path.read_bytes()
                frame, used = k.decode_frame(data)
                self.assertEqual(used, len(data), "bytes after the frame")
                self.assertEqual(frame.encode(), data)
                self.assertEqual(k.encode_frame(frame.kind, frame.payload), data)  # the kind's own codec
                if frame.codec == Codec.JSON:  # our JSON encoder writes the same bytes as the Rust one
                    self.assertEqual(k.encode_json(frame.kind, frame.json()), data)

    def test_kinds_match_the_readme(self) -> None:
        files = self.files()
        readme = GOLDEN / "README.md"
        self.assertTrue(readme.is_file(), f"{readme} is missing")
        lines = readme.read_text(encoding="utf-8").splitlines()
        checked = 0
        for path in files:
            with self.subTest(path.name):
                named = re.compile(rf"(?<![\w.-]){re.escape(path.name)}(?![\w.-])")  # not inside list-tables.bin
                mentions = [line for line in lines if named.search(line)]
                self.assertTrue(mentions, f"{readme.name} does not mention {path.name}")
                names = {m for line in mentions for m in re.findall(r"\b[A-Z][A-Za-z]+\b", line) if m in MESSAGE_KINDS}
                if len(names) == 1:  # a line naming exactly one message: the file must hold it
                    frame, _ = k.decode_frame(path.read_bytes())
                    self.assertEqual(frame.kind, MESSAGE_KINDS[names.pop()])
                    checked += 1
        self.assertGreater(checked, 0, "the README names no file's message")

    def test_replay_as_a_server(self) -> None:
        """The golden frames are one scan: the client's requests must be the request files byte for byte, and
        it must accept the response files as a server's answers."""
        self.files()
        g = {path.stem: path.read_bytes() for path in GOLDEN.glob("*.bin")}
        replies = scripted({
            Kind.HEALTH: [g["health-reply"]], Kind.LIST_TABLES: [g["tables"]], Kind.TABLE_SCHEMA: [g["schema"]],
            Kind.SCAN_BEGIN: [g["read-state"], g["hot-stream"], g["hot-data"], g["scan-complete"]],
            Kind.SCAN_END: [g["scan-ended"]],
        })
        with serving(replies) as server, k.Client(server.path) as client:
            self.assertEqual(client.health()["max_frame_bytes"], 64 << 20)
            self.assertEqual([t["name"] for t in client.tables()], ["ns.events", "ns.fresh"])
            self.assertEqual(client.schema("ns.events")["schema_id"], 0)
            scan = client.scan("ns.events", max_lsn=1002, since_lsn=1000, columns=["id", "name"],
                               filter={"partitions": [("events", 0)], "offsets_from": [("events", 0, 1000)]})
            self.assertEqual((scan.scan_id, scan.lsn, len(scan.files), [sid for sid, _ in scan.hot]), (7, 1002, 1, [0]))
            self.assertEqual(scan.hot_table().to_pylist(), [{"id": 1000, "name": "a"}, {"id": 1001, "name": None}])
            self.assertEqual(scan.complete, {"scan_id": 7, "rows": 2, "bytes": 712})
            client.scan("ns.events").end()
            self.assertEqual(server.requests, [g["health"], g["list-tables"], g["table-schema"], g["scan-begin"],
                                               g["scan-begin-minimal"], g["scan-end"]])
        error = scripted({Kind.TABLE_SCHEMA: [g["error"]]})
        with serving(error) as server, k.Client(server.path) as client, self.assertRaises(ServerError) as ctx:
            client.schema("ns.nope")
        self.assertEqual((ctx.exception.code, ctx.exception.message), ("unknown_table", "no table ns.nope"))


if __name__ == "__main__":
    unittest.main()

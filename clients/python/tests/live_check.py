#!/usr/bin/env python3
"""Check a REAL running k2i server's read-state end to end (not part of unittest discovery).

    python tests/live_check.py --socket /run/k2i/rpc.sock --table ns.events [--expect-rows N]

Runs Health, ListTables, TableSchema and a full scan, reads committed ∪ hot rows, and checks that every
(``_kafka_topic``, ``_kafka_partition``, ``_kafka_offset``) appears exactly once, that the row counts match
the ReadState, and that every row's offset is below its partition's watermark. Prints one JSON line
``{"rows":…,"hot_rows":…,"files":…,"lsn":…,"duplicates":0}`` and exits 0; on any failure it prints the
same line with an ``"error"`` field (and the error on stderr) and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from k2i_client import KAFKA_OFFSET, KAFKA_PARTITION, KAFKA_TOPIC, Client, read_committed, unify_tables  # noqa: E402


class CheckFailed(Exception):
    """A check that did not hold."""


def check(socket_path: str, table: str, expect_rows: Optional[int] = None, timeout: float = 30.0) -> dict[str, Any]:
    """Run every check; returns the summary, raises on the first failure (``summary`` filled so far is
    attached as ``.summary``)."""
    summary: dict[str, Any] = {}
    try:
        with Client(socket_path, timeout=timeout) as client:
            health = client.health()
            if health.get("protocol") != 1:
                raise CheckFailed(f"HealthReply.protocol is {health.get('protocol')!r}, expected 1")
            names = [t.get("name") for t in client.tables()]
            if table not in names:
                raise CheckFailed(f"table {table!r} is not served (tables: {names})")
            schema = client.schema(table)
            if schema.get("table") != table or not isinstance(schema.get("schema"), dict):
                raise CheckFailed(f"Schema reply is not for {table!r}: {schema}")
            with client.scan(table) as scan:
                state = scan.state
                summary.update(lsn=state["lsn"], files=len(scan.files))
                committed = read_committed(scan)
                hot = scan.hot_table()
                rows = unify_tables([committed, hot])
                summary.update(rows=rows.num_rows, hot_rows=hot.num_rows)
                file_rows = sum(int(f.get("rows", 0)) for f in scan.files)
                if committed.num_rows != file_rows:
                    raise CheckFailed(f"committed files have {committed.num_rows} rows, the ReadState says {file_rows}")
                if hot.num_rows != state["hot_rows"]:
                    raise CheckFailed(f"{hot.num_rows} hot rows, the ReadState says {state['hot_rows']}")
                summary["duplicates"] = _duplicates(rows)
                _check_watermarks(rows, state.get("watermarks", []))
        if summary["duplicates"]:
            raise CheckFailed(f"{summary['duplicates']} rows appear more than once")
        if expect_rows is not None and summary["rows"] != expect_rows:
            raise CheckFailed(f"{summary['rows']} rows, expected {expect_rows}")
    except Exception as e:
        e.summary = summary  # type: ignore[attr-defined]
        raise
    return {k: summary[k] for k in ("rows", "hot_rows", "files", "lsn", "duplicates")}


def _duplicates(rows: Any) -> int:
    """Rows minus distinct (topic, partition, offset) keys."""
    keys = [KAFKA_TOPIC, KAFKA_PARTITION, KAFKA_OFFSET]
    if rows.num_rows == 0:
        return 0
    if not set(keys) <= set(rows.column_names):
        raise CheckFailed(f"the rows lack the Kafka columns {keys}: {rows.column_names}")
    return rows.num_rows - rows.select(keys).group_by(keys).aggregate([]).num_rows


def _check_watermarks(rows: Any, watermarks: Sequence[dict[str, Any]]) -> None:
    """Every row's offset is below the next offset its partition's watermark gives for the read-state LSN."""
    if rows.num_rows == 0:
        return
    limit = {(w["topic"], int(w["partition"])): int(w["next_offset"]) for w in watermarks}
    high = rows.group_by([KAFKA_TOPIC, KAFKA_PARTITION]).aggregate([(KAFKA_OFFSET, "max")])
    for t, p, o in zip(*(high[c].to_pylist() for c in (KAFKA_TOPIC, KAFKA_PARTITION, f"{KAFKA_OFFSET}_max"))):
        if (t, p) not in limit:
            raise CheckFailed(f"rows of {t}/{p} but the ReadState has no watermark for it")
        if o >= limit[(t, p)]:
            raise CheckFailed(f"{t}/{p} has offset {o}, at or above its watermark next_offset {limit[(t, p)]}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", required=True, help="the k2i rpc.socket_path")
    parser.add_argument("--table", required=True, help="the table, ns.name")
    parser.add_argument("--expect-rows", type=int, default=None, help="fail unless exactly this many rows")
    parser.add_argument("--timeout", type=float, default=30.0, help="socket timeout in seconds")
    args = parser.parse_args(argv)
    try:
        summary = check(args.socket, args.table, args.expect_rows, args.timeout)
    except Exception as e:  # every failure is one JSON line and exit 1
        partial = dict(getattr(e, "summary", {}))
        partial["error"] = f"{type(e).__name__}: {e}"
        print(json.dumps(partial, separators=(",", ":")), flush=True)
        print(f"live_check: {partial['error']}", file=sys.stderr)
        return 1
    print(json.dumps(summary, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

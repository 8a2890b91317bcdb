#!/usr/bin/env python3
"""Run SQL in DuckDB with the Iceberg extension, fully offline, and print the result as JSON.

An independent reader for k2i's tests: whatever k2i commits to Iceberg must read back through
DuckDB's own Iceberg implementation, not only through the Rust code that wrote it.

DuckDB normally downloads extensions on first use. The local stack must work without that (CI
and developer machines reach only package registries), so the extensions come from pinned PyPI
wheels (duckdb-extension-{avro,httpfs,iceberg}) and are LOADed from their files in site-packages
with autoinstall/autoload switched off: if a file is missing this fails loudly instead of
silently trying the network.

Usage:
  duck.py [--rest URL] [--warehouse NAME] [SQL]     (SQL from stdin when not given)

  --rest URL   ATTACH the Iceberg REST catalog at URL (e.g. "$K2I_TEST_REST") as the DuckDB
               catalog `rest`, so tables read as rest.<namespace>.<table>.
Examples:
  duck.py "select * from iceberg_scan('file:///.../metadata/00001-....metadata.json')"
  duck.py --rest "$K2I_TEST_REST" "select count(*) as n from rest.smoke.events"

Output: a JSON array with one object per row of the last statement's result, keyed by column
name. Values JSON cannot represent are written as strings: timestamps/dates/times in ISO 8601,
decimals and UUIDs via str(), bytes as lowercase hex. Exit status 1 with the DuckDB error on stderr
when the SQL fails.
"""

import argparse
import datetime
import decimal
import importlib
import json
import sys
import uuid
from pathlib import Path

import duckdb

# Order matters: iceberg needs avro (manifests) when it loads, and httpfs for the REST client;
# with autoloading off they must already be loaded.
EXTENSIONS = ("avro", "httpfs", "iceberg")


def extension_path(name: str) -> Path:
    """Locate <name>.duckdb_extension inside the duckdb-extension-<name> wheel."""
    module = importlib.import_module(f"duckdb_extension_{name}")
    root = Path(module.__file__).parent
    exact = root / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if exact.is_file():
        return exact
    found = sorted(root.rglob(f"{name}.duckdb_extension"))
    if not found:
        raise SystemExit(f"duck.py: no {name}.duckdb_extension under {root}")
    if len(found) > 1:
        raise SystemExit(f"duck.py: several {name}.duckdb_extension under {root}: {found}")
    return found[0]


def connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(
        ":memory:",
        config={
            "autoinstall_known_extensions": "false",
            "autoload_known_extensions": "false",
        },
    )
    for name in EXTENSIONS:
        con.execute(f"LOAD '{extension_path(name)}'")
    return con


def attach_rest(con: duckdb.DuckDBPyConnection, url: str, warehouse: str) -> None:
    # The REST fixture has no authentication; AUTHORIZATION_TYPE 'none' stops DuckDB from asking
    # for an OAuth2 secret.
    url = url.replace("'", "''")
    warehouse = warehouse.replace("'", "''")
    con.execute(
        f"ATTACH '{warehouse}' AS rest "
        f"(TYPE iceberg, ENDPOINT '{url}', AUTHORIZATION_TYPE 'none')"
    )


def _json_default(value):
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return str(value)
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return str(value)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rest", metavar="URL", help="ATTACH this Iceberg REST catalog as `rest`")
    parser.add_argument(
        "--warehouse",
        default="",
        help="warehouse name sent to the REST catalog on ATTACH (default: empty, which the "
        "local fixture accepts)",
    )
    parser.add_argument("sql", nargs="?", help="SQL to run; read from stdin when omitted")
    args = parser.parse_args(argv)

    sql = args.sql if args.sql is not None else sys.stdin.read()
    if not sql.strip():
        parser.error("no SQL given")

    con = connect()
    try:
        if args.rest:
            attach_rest(con, args.rest, args.warehouse)
        cursor = con.execute(sql)
        columns = [d[0] for d in cursor.description] if cursor.description else []
        rows = cursor.fetchall() if columns else []
    except duckdb.Error as err:
        print(f"duck.py: {err}", file=sys.stderr)
        return 1
    json.dump([dict(zip(columns, row)) for row in rows], sys.stdout, default=_json_default)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

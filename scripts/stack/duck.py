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

S3: when K2I_TEST_S3_ENDPOINT is set (it is after `eval "$(scripts/stack.sh env)"`), s3:// URLs go
to that endpoint (the stack's moto server) through an S3 secret made from K2I_TEST_S3_ENDPOINT,
K2I_TEST_S3_REGION, K2I_TEST_S3_ACCESS_KEY and K2I_TEST_S3_SECRET_KEY: path-style URLs, TLS only
for an https:// endpoint. K2I_DUCK_S3=0 turns that off. It only affects s3:// reads, and the
secret's key never reaches the output.
Azure: when the SQL names an az:// (or azure://) URL, the azure extension is loaded too (from its wheel,
like the others) and an azure secret is made from K2I_TEST_AZURE_ENDPOINT (the Blob endpoint, Azurite's
path-style http://127.0.0.1:PORT/<account>), K2I_TEST_AZURE_ACCOUNT and K2I_TEST_AZURE_KEY, as a connection
string. DuckDB reads az://<container>/<path> only: its iceberg_scan cannot follow the wasbs:// paths
Iceberg metadata holds, so Azure tests read data files by their az:// names.
Examples:
  duck.py "select * from iceberg_scan('file:///.../metadata/00001-....metadata.json')"
  duck.py --rest "$K2I_TEST_REST" "select count(*) as n from rest.smoke.events"
  duck.py "select * from iceberg_scan('s3://k2i-test/wh/ns/t/metadata/00001-....metadata.json')"
  duck.py "select count(*) as n from 's3://k2i-test/some/file.parquet'"

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
import os
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


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def configure_s3(con: duckdb.DuckDBPyConnection, env=os.environ) -> bool:
    """Point s3:// at K2I_TEST_S3_ENDPOINT (see the module doc); False when not configured."""
    endpoint = env.get("K2I_TEST_S3_ENDPOINT", "")
    if not endpoint or env.get("K2I_DUCK_S3", "1") == "0":
        return False
    # DuckDB wants host:port in ENDPOINT and the scheme as USE_SSL.
    scheme, sep, host = endpoint.rstrip("/").partition("://")
    if not sep:
        scheme, host = "http", endpoint.rstrip("/")
    options = {
        "KEY_ID": env.get("K2I_TEST_S3_ACCESS_KEY", ""),
        "SECRET": env.get("K2I_TEST_S3_SECRET_KEY", ""),
        "REGION": env.get("K2I_TEST_S3_REGION", "us-east-1"),
        "ENDPOINT": host,
        "URL_STYLE": "path",
    }
    body = ", ".join(f"{k} {_sql_str(v)}" for k, v in options.items())
    use_ssl = "true" if scheme == "https" else "false"
    con.execute(f"CREATE SECRET k2i_test_s3 (TYPE s3, {body}, USE_SSL {use_ssl})")
    return True


def configure_azure(con: duckdb.DuckDBPyConnection, sql: str, env=os.environ) -> bool:
    """Load the azure extension and point it at K2I_TEST_AZURE_* when `sql` reads az:// (see the module doc)."""
    if "az://" not in sql and "azure://" not in sql:
        return False
    con.execute(f"LOAD '{extension_path('azure')}'")
    endpoint = env["K2I_TEST_AZURE_ENDPOINT"].rstrip("/")
    protocol = "https" if endpoint.startswith("https://") else "http"
    connection = (
        f"DefaultEndpointsProtocol={protocol};AccountName={env['K2I_TEST_AZURE_ACCOUNT']};"
        f"AccountKey={env['K2I_TEST_AZURE_KEY']};BlobEndpoint={endpoint};"
    )
    con.execute(f"CREATE SECRET k2i_test_azure (TYPE azure, CONNECTION_STRING {_sql_str(connection)})")
    return True


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
        configure_s3(con)
        configure_azure(con, sql)
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

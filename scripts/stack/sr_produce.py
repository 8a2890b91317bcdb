#!/usr/bin/env python3
"""Produce Avro or JSON Schema records to Kafka with Confluent's own serializers, through the stack's registry.

An independent writer for k2i's tests: records framed by confluent-kafka's AvroSerializer (fastavro
underneath) or JSONSerializer (magic byte 0, 4-byte big-endian schema id, then the Avro binary or the
JSON text) and registered the way Confluent clients register them, references included, so k2i's
decoders are tested against what real producers send rather than against framing k2i's own tests
built by hand.

Usage:
  sr_produce.py --bootstrap B --registry URL --topic T --format avro|json --schema FILE
                [--reference NAME=SUBJECT=FILE ...] [--strategy topic|record|topic_record] [--no-register]

  --format F         avro (an .avsc schema) or json (a JSON Schema document)
  --schema FILE      the writer schema
  --reference R      NAME=SUBJECT=FILE: a schema the root one uses, registered (or, with --no-register,
                     looked up) under SUBJECT before anything else and referred to as NAME. For Avro,
                     NAME is conventionally the full name of the type FILE defines (com.example.Address)
                     and the root uses the type by that name; for JSON Schema, NAME is what the root's
                     "$ref" says (address.json, or address.json#/definitions/x). The root lists every
                     reference given; a reference may itself use types (Avro) or "$ref"s (JSON) of the
                     references listed before it, and is registered with those as its own references.
  --strategy S       subject name strategy for the root schema: topic (<topic>-value, the default),
                     record (the Avro record's full name, or the JSON schema's "title") or topic_record
                     (<topic>-<that name>)
  --no-register      look the schemas up instead of registering them (auto.register.schemas=false)

Input: JSON lines on stdin, one record each:
  {"value": ...}                   the value (for JSON Schema as is, validated against the schema by
                                   the serializer; for Avro in the conventions below)
  {"value": null}                  a tombstone (no value, so no schema id)
  optional "key": "text"           the key, as UTF-8 bytes
  optional "partition": 0          an explicit partition (else the default partitioner)
  optional "headers": {"h": "v"}   headers, values as UTF-8 bytes

Avro values, directed by the writer schema:
  null/boolean/string      JSON null, true/false, a string
  int, long                a JSON integer (range-checked)
  float, double            a JSON number, or "NaN", "Infinity", "-Infinity"
  bytes, fixed             a base64 string (fixed: of exactly its size)
  enum                     the symbol
  record                   an object of its fields; a field left out takes its default (or null
                           when its type is a union with null); unknown fields are an error
  array, map               a JSON array, an object
  union                    [null, T] or [T, null]: null or T's value bare; any other union: null, or
                           {"<branch>": value} with the branch named by its type ("long", "string",
                           "array", "map", ...) or, for a record/enum/fixed, its full name (the short
                           name also works when no other branch shares it); a logical type's branch
                           is named by its underlying type ("long" for timestamp-millis)
  decimal (bytes, fixed)   a string "12.34" (or a JSON integer)
  timestamp-millis/-micros/-nanos        a JSON integer in the type's unit since the epoch, or an
                                         RFC 3339 string with an offset (2024-05-01T12:00:00.123456Z)
  local-timestamp-millis/-micros/-nanos  the same, the string without an offset (2024-05-01T12:00:00)
  date                     a JSON integer of days since the epoch, or "YYYY-MM-DD"
  time-millis, time-micros a JSON integer in the type's unit since midnight, or "HH:MM:SS[.ffffff]"
  uuid (string, fixed 16)  the UUID as a string (on fixed(16): written as its 16 bytes)
  duration (fixed 12)      [months, days, milliseconds]
A string time's fraction may have up to 9 digits; digits finer than the type's unit are dropped
(toward the past). Timestamps, dates and times become datetime objects for fastavro to convert,
except the -nanos ones, which fastavro does not know and are computed here exactly.

Output: one JSON object on stdout once every record is acknowledged:
  {"offsets": [[partition, offset], ...], "schema_ids": [id or null, ...]}   (both in input order)
Any failure (schema, JSON, conversion, registry, delivery) goes to stderr with exit status 1.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import decimal
import json
import re
import struct
import sys
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.schema_registry import (
    Schema,
    SchemaReference,
    SchemaRegistryClient,
)
from confluent_kafka.schema_registry.avro import AvroSerializer, _resolve_named_schema
from confluent_kafka.schema_registry.common.avro import _schema_loads, parse_schema_with_repo
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext, SerializationError
from produce_common import STRATEGIES, Failure, produce

SCHEMA_TYPES = {"avro": "AVRO", "json": "JSON"}

PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
NAMED = {"record", "error", "enum", "fixed"}

INT_RANGE = (-(2**31), 2**31 - 1)
LONG_RANGE = (-(2**63), 2**63 - 1)
U32_MAX = 2**32 - 1

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)

# RFC 3339 date-time (a space or "t" allowed for the "T", as the RFC's note permits); the offset is optional
# here so local timestamps can share it, and checked per type.
DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:\d{2})?"
)
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
TIME = re.compile(r"(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?")

# The unit of each timestamp logical type, in nanoseconds.
TIMESTAMPS = {
    "timestamp-millis": 10**6,
    "timestamp-micros": 10**3,
    "timestamp-nanos": 1,
    "local-timestamp-millis": 10**6,
    "local-timestamp-micros": 10**3,
    "local-timestamp-nanos": 1,
}


# ---- references ---------------------------------------------------------------------------------------


def full_name(name: str, namespace: str | None) -> str:
    """An Avro name made full: a dotted name is already, a bare one joins the enclosing namespace."""
    return name if "." in name or not namespace else f"{namespace}.{name}"


def avro_names(node: Any, namespace: str | None, defined: set[str], used: set[str]) -> None:
    """Collects the full names an Avro schema (as parsed JSON) defines and the named types it refers to."""
    if isinstance(node, str):
        if node not in PRIMITIVES:
            used.add(full_name(node, namespace))
            used.add(node)  # an unqualified name that Avro may also look up in the null namespace
    elif isinstance(node, list):
        for branch in node:
            avro_names(branch, namespace, defined, used)
    elif isinstance(node, dict):
        kind = node.get("type")
        if kind in NAMED and isinstance(node.get("name"), str):
            name = full_name(node["name"], node.get("namespace", namespace))
            defined.add(name)
            inner = name.rpartition(".")[0] or None
            for field in node.get("fields") or []:  # records' only; enums and fixed have none
                avro_names(field.get("type"), inner, defined, used)
        elif kind == "array":
            avro_names(node.get("items"), namespace, defined, used)
        elif kind == "map":
            avro_names(node.get("values"), namespace, defined, used)
        else:  # {"type": "long", ...}, {"type": "Name"} or {"type": {...}}
            avro_names(kind, namespace, defined, used)


def json_refs(node: Any, found: set[str]) -> None:
    """Collects the documents (the part before any "#") a JSON Schema's "$ref"s point to."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.add(value.split("#", 1)[0])
            else:
                json_refs(value, found)
    elif isinstance(node, list):
        for item in node:
            json_refs(item, found)


def load_json(path: Path, what: str) -> tuple[str, Any]:
    """A schema file's text and its parsed JSON."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise Failure(f"cannot read {what} {path}: {e}") from None
    try:
        return text, json.loads(text)
    except ValueError as e:
        raise Failure(f"{what} {path} is not JSON: {e}") from None


def register_references(
    client: SchemaRegistryClient, fmt: str, specs: list[str], register: bool
) -> list[SchemaReference]:
    """Registers (or looks up) each --reference in order; returns them as references at their versions."""
    schema_type = SCHEMA_TYPES[fmt]
    done: list[tuple[SchemaReference, set[str]]] = []  # each reference with the names it provides
    for spec in specs:
        parts = spec.split("=", 2)
        if len(parts) != 3 or not all(parts):
            raise Failure(f"--reference {spec!r}: expected NAME=SUBJECT=FILE")
        name, subject, file = parts
        text, parsed = load_json(Path(file), "reference")
        if fmt == "avro":
            defined: set[str] = set()
            used: set[str] = set()
            avro_names(parsed, None, defined, used)
            needs = used - defined
            provides = defined | {name}
        else:
            needs = set()
            json_refs(parsed, needs)
            provides = {name}
        # Its own references: those listed before it whose names it uses.
        own = [ref for ref, names in done if names & needs]
        schema = Schema(text, schema_type, references=own)
        if register:
            registered = client.register_schema_full_response(subject, schema)
            version = registered.version
            if version is None:  # Confluent's POST /subjects/S/versions answers with the id only
                version = client.lookup_schema(subject, schema).version
        else:
            version = client.lookup_schema(subject, schema).version
        if version is None:
            raise Failure(f"the registry gave no version for reference {name} under {subject}")
        done.append((SchemaReference(name, subject, version), provides))
    return [ref for ref, _ in done]


# ---- Avro values from JSON ----------------------------------------------------------------------------


class Bad(Exception):
    """A value that does not fit its schema; carries the JSON path."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")


def collect_named(node: Any, named: dict[str, dict]) -> None:
    """Every named type of a parsed (fastavro) schema, by full name: each is defined inline once."""
    if isinstance(node, list):
        for branch in node:
            collect_named(branch, named)
    elif isinstance(node, dict):
        kind = node.get("type")
        if kind in NAMED and isinstance(node.get("name"), str):
            named.setdefault(node["name"], node)
        for field in node.get("fields") or []:
            collect_named(field.get("type"), named)
        for key in ("items", "values"):
            if key in node:
                collect_named(node[key], named)
        if isinstance(kind, (dict, list)):
            collect_named(kind, named)


def describe(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def branch_name(branch: Any) -> str:
    """What fastavro's tuple notation calls a union branch: a named type's full name, else its type."""
    if isinstance(branch, str):
        return branch
    if isinstance(branch, dict):
        kind = branch.get("type")
        if kind in NAMED:
            return branch["name"]
        if isinstance(kind, str):
            return kind
        return branch_name(kind)
    raise ValueError(f"unexpected union branch {branch!r}")


class AvroConverter:
    """Turns JSON values into what fastavro writes for a parsed schema (names resolved through `named`)."""

    def __init__(self, named: dict[str, dict]):
        self.named = named

    def resolve(self, schema: Any) -> Any:
        # A reference by name, possibly wrapped ({"type": "com.x.Name"}); fastavro's parsed names are full.
        while True:
            if isinstance(schema, str) and schema in self.named:
                schema = self.named[schema]
            elif isinstance(schema, dict) and isinstance(schema.get("type"), (dict, list)):
                schema = schema["type"]
            elif isinstance(schema, dict) and isinstance(schema.get("type"), str) and schema["type"] in self.named:
                schema = self.named[schema["type"]]
            else:
                return schema

    def convert(self, schema: Any, value: Any, path: str) -> Any:
        schema = self.resolve(schema)
        if isinstance(schema, list):
            return self.union(schema, value, path)
        if isinstance(schema, str):
            return self.primitive(schema, value, path)
        kind = schema.get("type")
        logical = schema.get("logicalType")
        if kind in ("record", "error"):
            return self.record(schema, value, path)
        if kind == "enum":
            if value not in schema.get("symbols", []):
                raise Bad(path, f"{describe(value)} is not a symbol of enum {schema['name']} {schema.get('symbols')}")
            return value
        if kind == "array":
            if not isinstance(value, list):
                raise Bad(path, f"an array wants a JSON array, got {describe(value)}")
            return [self.convert(schema["items"], item, f"{path}[{i}]") for i, item in enumerate(value)]
        if kind == "map":
            if not isinstance(value, dict):
                raise Bad(path, f"a map wants a JSON object, got {describe(value)}")
            return {k: self.convert(schema["values"], v, f"{path}.{k}") for k, v in value.items()}
        if kind == "fixed":
            return self.fixed(schema, logical, value, path)
        if kind in PRIMITIVES:
            return self.logical(kind, logical, schema, value, path)
        raise Bad(path, f"unknown type {describe(kind)}")

    def union(self, branches: list, value: Any, path: str) -> Any:
        names = [branch_name(b) for b in branches]
        if value is None:
            if "null" not in names:
                raise Bad(path, f"null is not a branch of the union {names}")
            return None
        others = [i for i, n in enumerate(names) if n != "null"]
        if len(branches) == 2 and len(others) == 1:  # [null, T] or [T, null]: T's value bare
            i = others[0]
            return (names[i], self.convert(branches[i], value, path))
        if not isinstance(value, dict) or len(value) != 1:
            raise Bad(path, f'the union {names} wants {{"<branch>": value}} or null, got {describe(value)}')
        (key, inner), = value.items()
        matches = [i for i, n in enumerate(names) if n == key]
        if not matches:  # a named type by its short name, when no other branch shares it
            matches = [i for i, n in enumerate(names) if "." in n and n.rpartition(".")[2] == key]
        if len(matches) != 1:
            raise Bad(path, f"{key!r} names no single branch of the union {names}")
        i = matches[0]
        if names[i] == "null":
            if inner is not None:
                raise Bad(path, f'the null branch wants null, got {describe(inner)}')
            return None
        return (names[i], self.convert(branches[i], inner, f"{path}.{key}"))

    def record(self, schema: dict, value: Any, path: str) -> dict:
        if not isinstance(value, dict):
            raise Bad(path, f"record {schema['name']} wants a JSON object, got {describe(value)}")
        fields = {f["name"]: f for f in schema["fields"]}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise Bad(path, f"record {schema['name']} has no field(s) {', '.join(unknown)}")
        out = {}
        for name, field in fields.items():
            where = f"{path}.{name}"
            kind = self.resolve(field["type"])
            if name in value:
                out[name] = self.convert(field["type"], value[name], where)
            elif "default" in field:
                out[name] = self.default(field["type"], field["default"], where)
            elif isinstance(kind, list) and "null" in map(branch_name, kind):
                out[name] = None
            else:
                raise Bad(where, f"missing, and field {name} of {schema['name']} has no default")
        return out

    def default(self, schema: Any, value: Any, path: str) -> Any:
        """A field default (Avro's JSON encoding: bytes as ISO-8859-1 strings, unions by their first branch)."""
        schema = self.resolve(schema)
        if isinstance(schema, list):
            first = schema[0]
            return None if branch_name(first) == "null" else (branch_name(first), self.default(first, value, path))
        kind = schema if isinstance(schema, str) else schema.get("type")
        if kind in ("bytes", "fixed"):
            return value.encode("latin-1")
        if kind in ("record", "error"):
            fields = schema["fields"]
            return {f["name"]: self.default(f["type"], value.get(f["name"], f.get("default")), path) for f in fields}
        if kind == "array":
            return [self.default(schema["items"], v, path) for v in value]
        if kind == "map":
            return {k: self.default(schema["values"], v, path) for k, v in value.items()}
        if kind in ("float", "double"):
            return float(value)
        return value

    def primitive(self, kind: str, value: Any, path: str) -> Any:
        if kind == "null":
            if value is not None:
                raise Bad(path, f"null wants null, got {describe(value)}")
            return None
        if kind == "boolean":
            if not isinstance(value, bool):
                raise Bad(path, f"boolean wants true or false, got {describe(value)}")
            return value
        if kind in ("int", "long"):
            low, high = INT_RANGE if kind == "int" else LONG_RANGE
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise Bad(path, f"{kind} wants an integer in [{low}, {high}], got {describe(value)}")
            return value
        if kind in ("float", "double"):
            if isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity"):
                return float(value.replace("Infinity", "inf"))
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise Bad(path, f'{kind} wants a number or "NaN"/"Infinity"/"-Infinity", got {describe(value)}')
            return float(value)
        if kind == "string":
            if not isinstance(value, str):
                raise Bad(path, f"string wants a string, got {describe(value)}")
            return value
        if kind == "bytes":
            return self.base64(value, path)
        raise Bad(path, f"unknown type {kind}")

    def base64(self, value: Any, path: str) -> bytes:
        if not isinstance(value, str):
            raise Bad(path, f"bytes want a base64 string, got {describe(value)}")
        try:
            return base64.b64decode(value, validate=True)
        except ValueError as e:
            raise Bad(path, f"not base64 ({e}): {describe(value)}") from None

    def fixed(self, schema: dict, logical: Any, value: Any, path: str) -> bytes:
        size = schema.get("size")
        if logical == "decimal":
            return self.decimal(value, path)  # fastavro's prepare_fixed_decimal sizes it
        if logical == "uuid" and size == 16:
            try:
                return uuid.UUID(value).bytes
            except (ValueError, TypeError, AttributeError):
                raise Bad(path, f"uuid wants a UUID string, got {describe(value)}") from None
        if logical == "duration" and size == 12:
            if (
                not isinstance(value, list)
                or len(value) != 3
                or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= U32_MAX for v in value)
            ):
                want = "[months, days, milliseconds] of unsigned 32-bit integers"
                raise Bad(path, f"duration wants {want}, got {describe(value)}")
            return struct.pack("<III", *value)
        data = self.base64(value, path)
        if len(data) != size:
            raise Bad(path, f"fixed {schema['name']} wants {size} bytes, got {len(data)}")
        return data

    def decimal(self, value: Any, path: str) -> decimal.Decimal:
        if isinstance(value, int) and not isinstance(value, bool):
            return decimal.Decimal(value)
        if isinstance(value, str):
            try:
                number = decimal.Decimal(value)
            except decimal.InvalidOperation:
                number = None
            if number is not None and number.is_finite():
                return number
        raise Bad(path, f'decimal wants a string such as "12.34" (or an integer), got {describe(value)}')

    def logical(self, kind: str, logical: Any, schema: dict, value: Any, path: str) -> Any:
        # Keyed on the underlying type as fastavro (and the Avro spec) do: a logical type on another type is ignored.
        if kind == "long" and logical in TIMESTAMPS:
            return self.timestamp(logical, value, path)
        if kind == "int" and logical == "date":
            if isinstance(value, str):
                try:
                    if not DATE.fullmatch(value):
                        raise ValueError
                    return datetime.date.fromisoformat(value)
                except ValueError:
                    raise Bad(path, f'date wants days since the epoch or "YYYY-MM-DD", got {describe(value)}') from None
        elif (kind, logical) in (("int", "time-millis"), ("long", "time-micros")):
            if isinstance(value, str):
                return self.time(logical, value, path)
        elif kind == "bytes" and logical == "decimal":
            return self.decimal(value, path)
        # string uuid: the string as is; the rest: the underlying type.
        return self.primitive(kind, value, path)

    def timestamp(self, logical: str, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            return self.primitive("long", value, path)
        local = logical.startswith("local-")
        m = DATETIME.fullmatch(value)
        offset = m.group(8) if m else None
        if not m or (offset is None) != local:
            want = "without an offset (2024-05-01T12:00:00)" if local else "with an offset (2024-05-01T12:00:00Z)"
            raise Bad(path, f"{logical} wants an integer or an RFC 3339 string {want}, got {describe(value)}")
        fraction = (m.group(7) or "").ljust(9, "0")
        try:
            tz = None
            if offset is not None:
                if offset in ("Z", "z"):
                    tz = datetime.timezone.utc
                else:
                    sign = -1 if offset[0] == "-" else 1
                    tz = datetime.timezone(sign * datetime.timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])))
            moment = datetime.datetime(*(int(m.group(i)) for i in range(1, 7)), int(fraction[:6]), tzinfo=tz)
        except ValueError as e:
            raise Bad(path, f"{logical}: {e}: {describe(value)}") from None
        if TIMESTAMPS[logical] != 1:
            return moment  # fastavro converts it, dropping what is finer than the unit
        # fastavro has no -nanos: count them here, exactly.
        delta = (moment if not local else moment.replace(tzinfo=datetime.timezone.utc)) - EPOCH
        micros = (delta.days * 86400 + delta.seconds) * 10**6 + delta.microseconds
        nanos = micros * 1000 + int(fraction[6:])
        return self.primitive("long", nanos, path)

    def time(self, logical: str, value: str, path: str) -> datetime.time:
        m = TIME.fullmatch(value)
        try:
            if not m:
                raise ValueError("not HH:MM:SS[.ffffff]")
            fraction = (m.group(4) or "").ljust(9, "0")
            return datetime.time(int(m.group(1)), int(m.group(2)), int(m.group(3)), int(fraction[:6]))
        except ValueError as e:
            raise Bad(path, f'{logical} wants an integer or "HH:MM:SS[.ffffff]" ({e}), got {describe(value)}') from None


# ---- producing ----------------------------------------------------------------------------------------


def read_records(convert) -> list[dict]:
    """Parses stdin's JSON lines into produce() arguments, with the value converted (or None)."""
    records = []
    for number, line in enumerate(sys.stdin, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict) or "value" not in obj:
                raise ValueError('expected an object with a "value"')
            value = obj["value"]
            record = {
                "value": None if value is None else convert(value),
                "key": None if obj.get("key") is None else obj["key"].encode("utf-8"),
                "headers": [(name, str(v).encode("utf-8")) for name, v in (obj.get("headers") or {}).items()],
            }
            if obj.get("partition") is not None:
                record["partition"] = int(obj["partition"])
            records.append(record)
        except (ValueError, TypeError, AttributeError, Bad) as e:
            raise Failure(f"stdin line {number}: {e}: {line.strip()}") from None
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--registry", required=True, help="the registry's Confluent-compatible base URL")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--format", required=True, choices=sorted(SCHEMA_TYPES))
    parser.add_argument("--schema", required=True, type=Path)
    parser.add_argument("--reference", action="append", default=[], metavar="NAME=SUBJECT=FILE")
    parser.add_argument("--strategy", choices=sorted(STRATEGIES), default="topic")
    parser.add_argument("--no-register", action="store_true")
    args = parser.parse_args()

    text, _ = load_json(args.schema, "schema")
    client = SchemaRegistryClient({"url": args.registry})
    register = not args.no_register
    references = register_references(client, args.format, args.reference, register)
    if args.format == "avro":
        # As the client does for a schema string: a bare primitive ("string") is wrapped as {"type": "string"}
        # (its AvroSerializer cannot take a bare primitive in a Schema object).
        text = _schema_loads(text).schema_str
    schema = Schema(text, SCHEMA_TYPES[args.format], references=references)
    conf = {"auto.register.schemas": register, "subject.name.strategy": STRATEGIES[args.strategy]}

    if args.format == "avro":
        # A Schema with references: the serializer fetches each referenced version from the registry and
        # hands them to fastavro as named schemas. The values are converted against the same parse.
        serializer = AvroSerializer(client, schema, conf=conf)
        parsed = parse_schema_with_repo(text, _resolve_named_schema(schema, client))
        named: dict[str, dict] = {}
        collect_named(parsed, named)
        converter = AvroConverter(named)
        records = read_records(lambda value: converter.convert(parsed, value, "$"))
    else:
        serializer = JSONSerializer(schema, client, conf=conf)
        records = read_records(lambda value: value)

    # Serialize everything before producing anything, so a registry error leaves the topic untouched.
    ctx = SerializationContext(args.topic, MessageField.VALUE)
    schema_ids = []
    for number, record in enumerate(records):
        if record["value"] is None:
            schema_ids.append(None)
            continue
        try:
            frame = serializer(record["value"], ctx)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError, SerializationError) as e:
            raise Failure(f"record {number}: cannot serialize: {type(e).__name__}: {e}") from None
        # Frame: magic byte 0, then the schema id as 4 bytes big-endian.
        schema_ids.append(int.from_bytes(frame[1:5], "big"))
        record["value"] = frame

    offsets = produce(args.bootstrap, args.topic, records)
    print(json.dumps({"offsets": offsets, "schema_ids": schema_ids}))


if __name__ == "__main__":
    try:
        main()
    except (Failure, KafkaException, ValueError) as e:
        print(f"sr_produce.py: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # registry and serialization errors: keep the type, it says what failed
        print(f"sr_produce.py: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
